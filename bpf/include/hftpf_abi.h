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

#define HFTPF_ABI_VERSION 1

/* Venue ids are 1..HFTPF_MAX_VENUES; 0 means "no venue" and indexes the unclassified counters.
 * Venue sets are u64 bit masks with bit (id - 1) set, hence at most 63 venues (bit 63 is kept free
 * so a set never looks negative to languages without unsigned 64-bit integers). */
#define HFTPF_MAX_VENUES 63

/* Address keys are IPv6; IPv4 is stored v4-mapped (::ffff:a.b.c.d), its prefix length + 96. */
#define HFTPF_V4_MAPPED_PREFIX 96

/* hftpf_venue_ports is an array indexed by (transport << 16) | port (port in host order). */
#define HFTPF_PORT_INDEX_SIZE (2 * 65536)

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

/* hftpf_config.flags: which tries hold anything. Exact hosts live in hashes (one O(1) lookup); a
 * trie walk costs 20-40 ns here, so it is skipped when no configured prefix is shorter than a host. */
#define HFTPF_CFG_VENUE_TRIE 0x1
#define HFTPF_CFG_ALLOW_TRIE 0x2

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
#define HFTPF_PROG_XDP          "hftpf_xdp"           /* pinned XDP ingress program */

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
	HFTPF_REASON_RESERVED3      = 3, /* kept for the kill switch (egress) */
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

/* Ring-buffer record types (struct hftpf_event_hdr.type). Records arrive with a later issue; the
 * numbering is fixed now so nothing is ever renumbered. */
enum hftpf_event_type {
	HFTPF_EV_RESERVED0 = 0,
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
	__u32 pad0;
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
};

struct hftpf_venue_info {
	char  name[HFTPF_VENUE_NAME_LEN]; /* NUL-terminated, from the config */
	__u8  transport;       /* enum hftpf_transport */
	__u8  stream_kind;     /* enum hftpf_stream_kind */
	__u8  flags;           /* reserved, 0 */
	__u8  pad0;
	__u32 latency_target_us; /* microseconds, 0 = none */
};                             /* 40 bytes */

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

/* Common header of every ring-buffer record; user space dispatches on type. */
struct hftpf_event_hdr {
	__u16 type;            /* enum hftpf_event_type */
	__u16 len;             /* whole record length in bytes, header included */
	__u32 cpu;             /* CPU that produced it */
	__u64 ts_ns;           /* kernel timestamp, ns (clock: see the record) */
};                             /* 16 bytes */

#endif /* HFTPF_ABI_H */
