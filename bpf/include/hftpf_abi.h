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

/* ---- map names (pins: /sys/fs/bpf/hftpf/<ifname>/<map name>) ---------------------------------- */
#define HFTPF_MAP_META          "hftpf_meta"          /* array[1] of struct hftpf_meta (agent-written) */
#define HFTPF_MAP_VENUE_HOSTS   "hftpf_venue_hosts"   /* lpm trie: hftpf_lpm_key -> hftpf_venue_set */
#define HFTPF_MAP_VENUE_PORTS   "hftpf_venue_ports"   /* array[HFTPF_PORT_INDEX_SIZE] of hftpf_venue_set */
#define HFTPF_MAP_VENUE_INFO    "hftpf_venue_info"    /* array[HFTPF_MAX_VENUES + 1] of hftpf_venue_info */
#define HFTPF_MAP_VENUE_STATS   "hftpf_venue_stats"   /* percpu array[HFTPF_MAX_VENUES + 1] of hftpf_counter */
#define HFTPF_MAP_VERDICT_STATS "hftpf_verdict_stats" /* percpu array[HFTPF_VERDICT_MAX] of hftpf_counter */
#define HFTPF_MAP_PKT_STATS     "hftpf_pkt_stats"     /* percpu array[HFTPF_PKT_MAX] of hftpf_counter */
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

struct hftpf_venue_set {
	__u64 mask;            /* bit (venue id - 1) set for each venue */
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
	__u32 flags;           /* reserved, 0 */
	char  ifname[HFTPF_IFNAME_LEN];
	char  netns[32];       /* named network namespace ("" = the agent's own) */
};                             /* 80 bytes */

/* Common header of every ring-buffer record; user space dispatches on type. */
struct hftpf_event_hdr {
	__u16 type;            /* enum hftpf_event_type */
	__u16 len;             /* whole record length in bytes, header included */
	__u32 cpu;             /* CPU that produced it */
	__u64 ts_ns;           /* kernel timestamp, ns (clock: see the record) */
};                             /* 16 bytes */

#endif /* HFTPF_ABI_H */
