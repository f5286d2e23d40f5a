/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hftpf_abi.h - THE contract between the kernel programs and user space.
 *
 * Mirrored by agent/hft_packetfilter/abi.py. tests/unit/test_abi_layout.py compiles a C program that
 * prints sizeof/offsetof of every struct and every enum value below and compares them with the
 * mirror; tests/bpf/test_abi_bcc.py compares with BCC's view of the loaded maps. Change both sides
 * in one commit and bump HFTPF_ABI_VERSION when a layout changes.
 *
 * Rules:
 *  - No code and no map definitions here (those are kernel-only: maps.h).
 *  - Every struct has explicit padding; every field says its unit and byte order.
 *  - Enum values are never reused. A retired value stays as *_RESERVEDn.
 *  - Map names are stable: they name the pins under /sys/fs/bpf/hftpf/<ifname>/ and, where a map
 *    exports directly, the Prometheus metric.
 */
#ifndef HFTPF_ABI_H
#define HFTPF_ABI_H

#define HFTPF_ABI_VERSION 6

/* Venue ids are 1..HFTPF_MAX_VENUES; 0 means "no venue" and indexes the unclassified counters.
 * Venue sets are u64 bit masks with bit (id - 1) set, hence at most 63 venues (bit 63 is kept free
 * so a set never looks negative to languages without unsigned 64-bit integers). */
#define HFTPF_MAX_VENUES 63

/* Address keys are IPv6; IPv4 is stored v4-mapped (::ffff:a.b.c.d), its prefix length + 96. */
#define HFTPF_V4_MAPPED_PREFIX 96

/* hftpf_venue_ports is an array indexed by (transport << 16) | port (port in host order). */
#define HFTPF_PORT_INDEX_SIZE (2 * 65536)

/* hftpf_stream_slots: array-indexed feed streams, one per UDP feed port the agent can name a single
 * stream for (one venue, its first exact host as the group, unit 0); slot 0 means "none". An array
 * lookup here is inlined, a hash lookup of the 20-byte stream key costs ~35 ns (tools/bench/probe_cost.py). */
#define HFTPF_STREAM_SLOTS 256

#define HFTPF_VENUE_NAME_LEN 32
#define HFTPF_IFNAME_LEN 16

/* Allow-list: the value for a source prefix holds every rule that applies to it, its own and those of
 * every shorter configured prefix covering it, most specific first; the program takes the first entry
 * whose proto and port range match. 16 entries bound the loop. Host prefixes (/32, /128) live in a
 * hash (one O(1) lookup: most allow-lists are lists of hosts); the trie holds the shorter prefixes
 * and is consulted only when the hash misses, so it never needs the hosts' entries. */
#define HFTPF_ALLOW_MAX_PER_PREFIX 16

/* Rule ids index hftpf_rule_stats. Ids 1..HFTPF_MAX_VENUES are the implicit "venue" rules derived
 * from the config's exchanges (venue id == rule id); user rules start at HFTPF_FIRST_USER_RULE. */
#define HFTPF_FIRST_USER_RULE 64

/* Latency histograms: log-linear buckets, 4 per power of two from 64 ns up (mirrored by
 * agent/hft_packetfilter/analytics/percentiles.py bucket_index()):
 *   v < 64 ns            -> bucket 0
 *   e = floor(log2(v))   -> bucket (e - 6) * 4 + ((v >> (e - 2)) & 3) + 1, capped at 112
 * so 64 ns .. ~17 s is covered with <= 25 % bucket width (bucket 109 holds 10 s); 113 buckets. */
#define HFTPF_HIST_BUCKETS 113

/* hftpf_config.flags: which tries hold anything. Exact hosts live in hashes (one O(1) lookup); a
 * trie walk costs 20-40 ns here, so it is skipped when no configured prefix is shorter than a host. */
#define HFTPF_CFG_VENUE_TRIE 0x1
#define HFTPF_CFG_ALLOW_TRIE 0x2
#define HFTPF_CFG_KILL_FLOWS 0x4
/* hftpf_venue_info.flags */
#define HFTPF_VENUE_PAYLOADS 0x1   /* market data: ship payload records of its UDP packets too */   /* hftpf_kill_flows holds entries: egress looks flows up */

/* hftpf_port_info.flags */
#define HFTPF_PORT_PROTECTED 0x1   /* packets TO this port need an allow rule in enforce mode */

/* PTP event/general ports: always pass, whatever the rules (a dropped PTP packet skews the clock). */
#define HFTPF_PTP_EVENT_PORT 319
#define HFTPF_PTP_GENERAL_PORT 320

/* ---- map names (pins: /sys/fs/bpf/hftpf/<ifname>/<map name>) ---------------------------------- */
#define HFTPF_MAP_META          "hftpf_meta"          /* array[1] of struct hftpf_meta (agent-written) */
#define HFTPF_MAP_VENUE_HOSTS   "hftpf_venue_hosts"   /* lpm trie: hftpf_lpm_key -> hftpf_venue_set (prefixes) */
#define HFTPF_MAP_VENUE_HOST    "hftpf_venue_host"    /* hash: hftpf_addr -> hftpf_venue_set (/32 and /128) */
#define HFTPF_MAP_VENUE_PORTS   "hftpf_venue_ports"   /* array[HFTPF_PORT_INDEX_SIZE] of hftpf_port_info */
#define HFTPF_MAP_VENUE_INFO    "hftpf_venue_info"    /* array[HFTPF_MAX_VENUES + 1] of hftpf_venue_info */
#define HFTPF_MAP_VENUE_STATS   "hftpf_venue_stats"   /* percpu array[HFTPF_MAX_VENUES + 1] of hftpf_counter */
#define HFTPF_MAP_VERDICT_STATS "hftpf_verdict_stats" /* percpu array[HFTPF_VERDICT_MAX] of hftpf_counter */
#define HFTPF_MAP_PKT_STATS     "hftpf_pkt_stats"     /* percpu array[HFTPF_PKT_MAX] of hftpf_counter */
#define HFTPF_MAP_CONFIG        "hftpf_config"        /* array[1] of hftpf_config (live mode switch) */
#define HFTPF_MAP_ALLOW_SRC     "hftpf_allow_src"     /* lpm trie: hftpf_lpm_key -> hftpf_allow_list (prefixes) */
#define HFTPF_MAP_ALLOW_HOST    "hftpf_allow_host"    /* hash: hftpf_addr -> hftpf_allow_list (/32 and /128) */
#define HFTPF_MAP_RULE_STATS    "hftpf_rule_stats"    /* percpu array[max_rules] of hftpf_rule_counter */
#define HFTPF_MAP_DROP_STATS    "hftpf_drop_stats"    /* percpu array[HFTPF_REASON_MAX] of hftpf_drop_counter */
#define HFTPF_MAP_STREAMS       "hftpf_streams"       /* hash: hftpf_stream_key -> hftpf_stream_state (spin-locked) */
#define HFTPF_MAP_STREAM_SLOTS  "hftpf_stream_slots"  /* array[HFTPF_STREAM_SLOTS] of hftpf_stream_state, key inside */
#define HFTPF_MAP_RTT_PENDING   "hftpf_rtt_pending"   /* hash: hftpf_rtt_key -> hftpf_rtt_val (egress stamps) */
#define HFTPF_MAP_RTT_HIST      "hftpf_rtt_hist"      /* percpu array[HFTPF_MAX_VENUES + 1] of hftpf_hist */
#define HFTPF_MAP_VENUE_TX      "hftpf_venue_tx"      /* percpu array[HFTPF_MAX_VENUES + 1] of hftpf_counter (egress) */
#define HFTPF_MAP_PROBE_STATS   "hftpf_probe_stats"   /* percpu array[1] of hftpf_probe_stats */
#define HFTPF_MAP_EVENTS        "hftpf_events"        /* ring buffer of records starting with hftpf_event_hdr */
#define HFTPF_MAP_AGENT_STATS   "hftpf_agent_stats"   /* array[1] of hftpf_agent_stats (agent-written) */
#define HFTPF_MAP_KILL          "hftpf_kill"          /* array[HFTPF_MAX_VENUES + 1] of hftpf_kill (per venue) */
#define HFTPF_MAP_KILL_FLOWS    "hftpf_kill_flows"    /* hash: hftpf_flow_key -> hftpf_kill (per session) */
#define HFTPF_MAP_HALF_OPEN     "hftpf_half_open"     /* lru hash: hftpf_flow_key (inbound) -> SYN time (probe clock) */
#define HFTPF_PROG_XDP          "hftpf_xdp"           /* pinned XDP ingress program */
#define HFTPF_PROG_XDP_OBSERVE  "hftpf_xdp_observe"   /* its observer, reached by tail call */
#define HFTPF_PROG_TC           "hftpf_tc_egress"     /* pinned TC clsact egress program */

/* ---- enums --------------------------------------------------------------------------------------- */

/* What the probe did with a packet. Counted in hftpf_verdict_stats at the program's single exit. */
enum hftpf_verdict {
	HFTPF_VERDICT_PASS = 0,
	HFTPF_VERDICT_DROP = 1,
	HFTPF_VERDICT_MAX  = 2,
};

/* How far the parser got and what it found (hftpf_pkt_stats). Exactly one class per packet. */
enum hftpf_pkt_class {
	HFTPF_PKT_VENUE     = 0, /* TCP/UDP packet that matched a venue */
	HFTPF_PKT_OTHER_L4  = 1, /* TCP/UDP packet that matched no venue */
	HFTPF_PKT_NON_L4    = 2, /* IP, but neither TCP nor UDP (ICMP, ...) */
	HFTPF_PKT_FRAGMENT  = 3, /* IP fragment without the L4 header (not the first fragment) */
	HFTPF_PKT_NON_IP    = 4, /* ARP, LLDP, PTP over Ethernet, ... */
	HFTPF_PKT_TRUNCATED = 5, /* a header did not fit in the frame (or bad IHL / VLAN depth) */
	HFTPF_PKT_MAX       = 6,
};

enum hftpf_transport {
	HFTPF_TRANSPORT_TCP = 0,
	HFTPF_TRANSPORT_UDP = 1,
};

enum hftpf_stream_kind {
	HFTPF_STREAM_ORDER_ENTRY = 0,
	HFTPF_STREAM_MARKET_DATA = 1,
};

enum hftpf_attach_mode {
	HFTPF_ATTACH_NONE    = 0,
	HFTPF_ATTACH_NATIVE  = 1, /* XDP_FLAGS_DRV_MODE */
	HFTPF_ATTACH_GENERIC = 2, /* XDP_FLAGS_SKB_MODE */
};

/* What the allow-list does with packets to protected ports. monitor and dry-run never drop; both
 * count what enforce would drop (would_drop_* in hftpf_drop_stats). */
enum hftpf_mode {
	HFTPF_MODE_MONITOR = 0,
	HFTPF_MODE_ENFORCE = 1,
	HFTPF_MODE_DRY_RUN = 2,
};

/* Why a packet was (or in monitor/dry-run would have been) dropped. */
enum hftpf_reason {
	HFTPF_REASON_NONE           = 0,
	HFTPF_REASON_UNKNOWN_SOURCE = 1, /* to a protected port, no allow rule covers the source */
	HFTPF_REASON_DENY_RULE      = 2, /* an explicit deny rule matched */
	HFTPF_REASON_KILL_SWITCH    = 3, /* egress to a venue (or session) whose kill switch is engaged */
	HFTPF_REASON_MAX            = 4,
};

enum hftpf_rule_action {
	HFTPF_ACTION_NONE  = 0,
	HFTPF_ACTION_ALLOW = 1,
	HFTPF_ACTION_DENY  = 2,
};

enum hftpf_clock {
	HFTPF_CLOCK_MONO = 0,    /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	HFTPF_CLOCK_TAI  = 1,    /* bpf_ktime_get_tai_ns: CLOCK_TAI (Linux >= 6.1) */
};

/* Which feed header a venue's UDP packets carry (sequence tracking in the kernel). */
enum hftpf_seq_proto {
	HFTPF_SEQ_NONE      = 0,
	HFTPF_SEQ_MOLDUDP64 = 1, /* 10-byte session, u64 BE sequence, u16 BE count (0 heartbeat, 0xFFFF end) */
	HFTPF_SEQ_MDP3      = 2, /* u32 LE MsgSeqNum, u64 LE SendingTime (ns, UTC); one sequence per packet */
	HFTPF_SEQ_PITCH     = 3, /* u16 LE length, u8 count, u8 unit, u32 LE sequence */
	HFTPF_SEQ_NYSE_XDP  = 4, /* u16 LE size, u8 delivery flag, u8 count, u32 LE seq, u32 s, u32 ns */
};

/* Ring-buffer record types (struct hftpf_event_hdr.type). */
enum hftpf_event_type {
	HFTPF_EV_RESERVED0 = 0,
	HFTPF_EV_GAP       = 1, /* struct hftpf_ev_gap */
	HFTPF_EV_RTT       = 2, /* struct hftpf_ev_rtt */
	HFTPF_EV_PAYLOAD   = 3, /* struct hftpf_ev_payload */
	HFTPF_EV_CONN      = 4, /* struct hftpf_ev_conn */
};

/* What an inbound TCP connection-setup packet was (struct hftpf_ev_conn.kind). Only SYNs are always
 * reported; an ACK or RST is reported when it ends a handshake the probe saw start (hftpf_half_open). */
enum hftpf_conn_kind {
	HFTPF_CONN_SYN         = 0, /* SYN without ACK: a connection attempt (half-open from now) */
	HFTPF_CONN_ESTABLISHED = 1, /* the pure ACK that completed a tracked handshake */
	HFTPF_CONN_RESET       = 2, /* RST on a tracked half-open connection */
};

enum hftpf_direction {
	HFTPF_DIR_INGRESS = 0,
	HFTPF_DIR_EGRESS  = 1,
};

/* ---- structs ------------------------------------------------------------------------------------- */

/* LPM trie key. prefixlen counts bits of addr; addr is network byte order. */
struct hftpf_lpm_key {
	__u32 prefixlen;       /* 0..128 (IPv4: 96 + v4 prefix) */
	__u8  addr[16];        /* IPv6, or IPv4 v4-mapped; network byte order */
};                             /* 20 bytes, no padding */

/* Exact address key (hash maps): IPv6, or IPv4 v4-mapped; network byte order. */
struct hftpf_addr {
	__u8  addr[16];
};

struct hftpf_venue_set {
	__u64 mask;            /* bit (venue id - 1) set for each venue */
};

/* Value of hftpf_venue_ports, indexed by (transport << 16) | port. */
struct hftpf_port_info {
	__u64 venue_mask;      /* venues using this port (as source or destination port) */
	__u32 flags;           /* HFTPF_PORT_* */
	__u32 stream_slot;     /* index into hftpf_stream_slots of this feed port's stream, 0 = none: the
				* slot's key is written before the index is published here */
};                             /* 16 bytes */

/* One allow-list entry; proto is an IP protocol number (6 TCP, 17 UDP) or 0 for any. */
struct hftpf_allow_entry {
	__u16 port_lo;         /* destination port range, host order, inclusive; 0-65535 = any */
	__u16 port_hi;
	__u8  proto;
	__u8  action;          /* enum hftpf_rule_action */
	__u16 pad0;
	__u32 rule_id;         /* index into hftpf_rule_stats */
};                             /* 12 bytes */

struct hftpf_allow_list {
	__u32 n;               /* entries in use, 0..HFTPF_ALLOW_MAX_PER_PREFIX */
	__u32 pad0;
	struct hftpf_allow_entry e[HFTPF_ALLOW_MAX_PER_PREFIX];
};                             /* 200 bytes */

struct hftpf_rule_counter {
	__u64 packets;
	__u64 bytes;
	__u64 last_hit_ns;     /* CLOCK_MONOTONIC (coarse: tick resolution) of the last hit on this CPU; 0 = never */
	__u64 last_hit_jiffies; /* jiffies when last_hit_ns was read (it is read once per tick) */
};

struct hftpf_drop_counter {
	__u64 dropped_packets; /* enforce mode: really dropped */
	__u64 dropped_bytes;
	__u64 would_drop_packets; /* monitor / dry-run: enforce would have dropped these */
	__u64 would_drop_bytes;
};

/* Live settings the agent may change while the program runs. */
struct hftpf_config {
	__u32 mode;            /* enum hftpf_mode */
	__u32 flags;           /* HFTPF_CFG_* */
	__s64 tai_minus_utc_ns; /* CLOCK_TAI - CLOCK_REALTIME as the kernel keeps it (0 until NTP/PTP sets it) */
	__u64 allow_gen;       /* allow-list generation: the agent adds 1 after each change to hftpf_allow_host,
				* hftpf_allow_src or HFTPF_CFG_ALLOW_TRIE; the probe's per-CPU cache of allow-list
				* decisions (maps.h hftpf_allow_memo) holds only decisions of the current one */
};

/* Latency histogram (see HFTPF_HIST_BUCKETS for the bucket layout). */
struct hftpf_hist {
	__u64 count;
	__u64 sum_ns;
	__u64 bucket[HFTPF_HIST_BUCKETS];
};                             /* 920 bytes */

/* A feed stream: one venue's packets to one destination (group) address and port, and PITCH unit.
 * A and B lines of one feed are two streams (different groups); user space arbitrates them.
 * A stream lives in exactly one place: the slot its port names in hftpf_stream_slots when the slot's
 * key is this key, else hftpf_streams. The agent moves a stream's state between the two when it
 * assigns or withdraws a slot; readers take the union. */
struct hftpf_stream_key {
	__u8  daddr[16];       /* destination address, v4-mapped for IPv4, network order */
	__u16 dport;           /* host order */
	__u8  venue;           /* venue id */
	__u8  unit;            /* PITCH unit, else 0 */
};                             /* 20 bytes */

/* Shared by all CPUs. Counters every packet touches (packets, messages, burst, peak, lat) change by
 * atomic operations; `expected` by compare-and-swap (an in-order packet moves it without the lock);
 * everything else only under the lock. */
struct hftpf_stream_state {
	struct bpf_spin_lock lock;
	__u32 flags;           /* HFTPF_STREAM_* */
	__u64 expected;        /* next expected sequence number */
	__u64 hole_lo;         /* last gap not yet filled: [hole_lo, hole_hi) */
	__u64 hole_hi;
	__u64 packets;
	__u64 messages;
	__u64 gaps;
	__u64 missing;         /* messages never seen when the gap was detected */
	__u64 duplicates;
	__u64 out_of_order;    /* late packets that fell into the last gap */
	__u64 resets;          /* session changes and sequence resets */
	__u64 heartbeats;
	__u64 first_ts_ns;     /* probe clock */
	__u64 last_ts_ns;
	__u64 burst;           /* microburst: (now >> 20) << 24 | packets in that 2^20 ns (~1.05 ms) window */
	__u64 reserved0;
	__u64 peak_ms_packets; /* most packets seen in one window */
	__u64 session_lo;      /* MoldUDP64 session of the current sequence space: bytes 0-7 ... */
	__u16 session_hi;      /* ... and 8-9, as they appear on the wire */
	__u8  seq_proto;
	__u8  pad0[5];
	__u64 lat_negative;    /* exchange timestamp later than ours (clock skew) */
	struct hftpf_hist lat; /* kernel ts - exchange send time, ns: MDP3 SendingTime and NYSE XDP send time
				* (TAI clock only), ITCH first-message timestamp (from hftpf_venue_info.midnight_ns) */
	struct hftpf_stream_key key; /* hftpf_stream_slots: the stream the agent gave the slot to (venue 0 =
				* free); written by the agent only, last in the value so its cache line stays
				* clean. Zero in hftpf_streams, whose map key says. */
	__u32 pad1;
};

#define HFTPF_STREAM_STARTED 0x1
#define HFTPF_STREAM_ENDED   0x2   /* MoldUDP64 end of session seen */

/* Egress stamp of a TCP segment of an order-entry session, keyed by its end sequence number so the
 * ACK that covers it exactly can be matched on ingress (pping's idea on seq/ack). */
struct hftpf_rtt_key {
	__u8  saddr[16];       /* as sent (egress): our address */
	__u8  daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 end_seq;         /* seq + payload length (data segments only), host order */
};                             /* 40 bytes */

struct hftpf_rtt_val {
	__u64 ts_ns;           /* probe clock at first transmission; 0 = retransmitted (Karn: no sample) */
	__u8  venue;
	__u8  pad0[7];
};

struct hftpf_probe_stats {
	__u64 ringbuf_events;  /* records submitted */
	__u64 ringbuf_lost;    /* reserve failures: the ring was full (probe loss, never feed loss) */
	__u64 rtt_samples;
	__u64 rtt_table_full;  /* egress stamps not stored: hftpf_rtt_pending full */
	__u64 stream_table_full; /* feed packets not tracked: hftpf_streams full */
	__u64 rtt_retransmits; /* segments sent twice (Karn: not sampled) */
	__u64 last_rtt_event_ns; /* rate limit for RTT events (per CPU) */
	__u64 seq_contended;   /* feed packets not sequence-judged: other CPUs kept moving the stream on */
};

struct hftpf_venue_info {
	char  name[HFTPF_VENUE_NAME_LEN]; /* NUL-terminated, from the config */
	__u8  transport;       /* enum hftpf_transport */
	__u8  stream_kind;     /* enum hftpf_stream_kind */
	__u8  seq_proto;       /* enum hftpf_seq_proto */
	__u8  flags;           /* HFTPF_VENUE_* */
	__u32 latency_target_us; /* microseconds, 0 = none */
	__s64 midnight_ns;     /* the last midnight of the venue's time zone in the probe clock (hftpf_meta.clock),
				* kept current by the agent; ITCH timestamps count from it. 0 = unknown: no
				* time-of-day feed latency */
};                             /* 48 bytes */

/* Packet/byte counter pair. Per-CPU: user space sums over possible CPUs. */
struct hftpf_counter {
	__u64 packets;
	__u64 bytes;           /* whole frame length as XDP sees it (data_end - data) */
};

/* Written by the agent at attach time, so status and detach work from the pins alone (also after
 * the agent was killed). The kernel programs never read it. */
struct hftpf_meta {
	__u32 abi_version;     /* HFTPF_ABI_VERSION of the loaded program */
	__u32 attach_mode;     /* enum hftpf_attach_mode */
	__u32 ifindex;         /* in the interface's network namespace */
	__u32 agent_pid;       /* pid of the agent that attached (may be dead: check) */
	__u64 attach_time_ns;  /* CLOCK_REALTIME, ns since the epoch */
	__u32 nvenues;         /* venues configured (ids 1..nvenues) */
	__u32 max_rules;       /* entries of hftpf_rule_stats (compile-time HFTPF_MAX_RULES) */
	char  ifname[HFTPF_IFNAME_LEN];
	char  netns[32];       /* named network namespace ("" = the agent's own) */
	__u32 clock;           /* enum hftpf_clock used for every kernel timestamp */
	__u32 flags;           /* reserved, 0 */
};                             /* 88 bytes */

/* Kill switch state: engaged by the agent (a rule or `hftpf-agent kill-switch engage`), read by the
 * TC egress program, which drops every packet to the venue (or session) while engaged. */
struct hftpf_kill {
	__u32 engaged;         /* 1 = drop egress */
	__u32 pad0;
	__u64 engaged_at_ns;   /* probe clock, written by the agent when engaging */
	__u64 first_drop_ns;   /* probe clock of the first packet dropped after engaging (0 = none yet) */
	__u64 dropped_packets; /* since engaged (atomic adds) */
	__u64 dropped_bytes;
};

/* A session's egress 5-tuple (as sent; TCP or UDP by the ports' venue). */
struct hftpf_flow_key {
	__u8  saddr[16];
	__u8  daddr[16];
	__u16 sport;
	__u16 dport;
};                             /* 36 bytes */

/* Written by the agent only (never by the programs), so status can show user-space losses too. */
struct hftpf_agent_stats {
	__u64 rtt_evictions;   /* egress stamps never acked exactly (cumulative ACKs), swept after 2 s */
	__u64 events_drained;  /* ring-buffer records read */
	__u64 events_bad;      /* records with an unknown type or a bad length */
	__u64 drain_batches;
};

/* Common header of every ring-buffer record; user space dispatches on type. */
struct hftpf_event_hdr {
	__u16 type;            /* enum hftpf_event_type */
	__u16 len;             /* whole record length in bytes, header included */
	__u32 cpu;             /* CPU that produced it */
	__u64 ts_ns;           /* probe clock (hftpf_meta.clock) */
};                             /* 16 bytes */

struct hftpf_ev_gap {
	struct hftpf_event_hdr hdr;
	struct hftpf_stream_key stream;
	__u32 pad0;
	__u64 expected;        /* sequence the stream expected */
	__u64 received;        /* sequence that arrived */
	__u64 missing;         /* received - expected */
};                             /* 64 bytes */

struct hftpf_ev_rtt {
	struct hftpf_event_hdr hdr;
	__u8  saddr[16];       /* our side (the sender of the acked segment) */
	__u8  daddr[16];
	__u16 sport;
	__u16 dport;
	__u8  venue;
	__u8  pad0[3];
	__u64 rtt_ns;
};                             /* 64 bytes */

/* An inbound TCP connection-setup packet (SYN flood and port-scan rules), whatever its verdict. */
struct hftpf_ev_conn {
	struct hftpf_event_hdr hdr;
	__u8  saddr[16];       /* the remote side (sender of the SYN) */
	__u8  daddr[16];
	__u16 sport;
	__u16 dport;
	__u8  kind;            /* enum hftpf_conn_kind */
	__u8  tcp_flags;
	__u8  venue;           /* 0 = no venue */
	__u8  verdict;         /* enum hftpf_verdict of this packet */
	__u64 pad0;
};                             /* 64 bytes */

#ifndef HFTPF_PAYLOAD_SNAPLEN
#define HFTPF_PAYLOAD_SNAPLEN 256
#endif

/* The first HFTPF_PAYLOAD_SNAPLEN bytes of an order-entry TCP segment's payload, or of a market-data
 * datagram of a venue flagged HFTPF_VENUE_PAYLOADS, for the agent's decoders. */
struct hftpf_ev_payload {
	struct hftpf_event_hdr hdr;
	__u8  saddr[16];
	__u8  daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 tcp_seq;         /* host order */
	__u8  venue;
	__u8  direction;       /* enum hftpf_direction */
	__u16 cap_len;         /* bytes of data[] that are valid */
	__u16 orig_len;        /* payload length of the segment */
	__u8  l4proto;         /* 6 TCP (order entry) or 17 UDP (market data, HFTPF_VENUE_PAYLOADS) */
	__u8  pad0;
	__u8  data[HFTPF_PAYLOAD_SNAPLEN];
};

#endif /* HFTPF_ABI_H */
