/* SPDX-License-Identifier: Apache-2.0 */
/*
 * maps.h - kernel-only map definitions (BCC macros). Names and value types come from hftpf_abi.h;
 * sizes that depend on the config arrive as -D flags from the agent (kernel/loader.py cflags_for).
 */
#ifndef HFTPF_MAPS_H
#define HFTPF_MAPS_H

#include "hftpf_abi.h"
#include "parse.h"

/* Address prefixes configured over all venues; 4096 covers hundreds of venues with many hosts. */
#ifndef HFTPF_MAX_HOST_PREFIXES
#define HFTPF_MAX_HOST_PREFIXES 4096
#endif
/* Allow-list source prefixes and rule ids. Per-CPU rule counters cost 32 B x CPUs x HFTPF_MAX_RULES. */
#ifndef HFTPF_MAX_ALLOW_PREFIXES
#define HFTPF_MAX_ALLOW_PREFIXES 16384
#endif
#ifndef HFTPF_MAX_RULES
#define HFTPF_MAX_RULES 16384
#endif
/* Feed streams tracked (venue x group x port x unit) and in-flight egress TCP stamps. */
#ifndef HFTPF_MAX_STREAMS
#define HFTPF_MAX_STREAMS 4096
#endif
#ifndef HFTPF_MAX_HALF_OPEN
#define HFTPF_MAX_HALF_OPEN 65536
#endif
#ifndef HFTPF_MAX_FLOWS
#define HFTPF_MAX_FLOWS 65536
#endif
/* Ring buffer size in pages (a power of two); config probe.ringbuf_kb sets it. */
#ifndef HFTPF_RINGBUF_PAGES
#define HFTPF_RINGBUF_PAGES 1024
#endif
#ifndef HFTPF_RTT_SAMPLES
#define HFTPF_RTT_SAMPLES 1
#endif

BPF_ARRAY(hftpf_meta, struct hftpf_meta, 1);
BPF_ARRAY(hftpf_config, struct hftpf_config, 1);
/* LPM tries must be created with BPF_F_NO_PREALLOC; BCC's BPF_LPM_TRIE sets it. */
BPF_LPM_TRIE(hftpf_venue_hosts, struct hftpf_lpm_key, struct hftpf_venue_set, HFTPF_MAX_HOST_PREFIXES);
BPF_HASH(hftpf_venue_host, struct hftpf_addr, struct hftpf_venue_set, HFTPF_MAX_HOST_PREFIXES);
BPF_ARRAY(hftpf_venue_ports, struct hftpf_port_info, HFTPF_PORT_INDEX_SIZE);
BPF_ARRAY(hftpf_venue_info, struct hftpf_venue_info, HFTPF_MAX_VENUES + 1);
BPF_PERCPU_ARRAY(hftpf_venue_stats, struct hftpf_counter, HFTPF_MAX_VENUES + 1);
BPF_PERCPU_ARRAY(hftpf_verdict_stats, struct hftpf_counter, HFTPF_VERDICT_MAX);
BPF_PERCPU_ARRAY(hftpf_pkt_stats, struct hftpf_counter, HFTPF_PKT_MAX);
BPF_LPM_TRIE(hftpf_allow_src, struct hftpf_lpm_key, struct hftpf_allow_list, HFTPF_MAX_ALLOW_PREFIXES);
BPF_HASH(hftpf_allow_host, struct hftpf_addr, struct hftpf_allow_list, HFTPF_MAX_ALLOW_PREFIXES);
BPF_PERCPU_ARRAY(hftpf_rule_stats, struct hftpf_rule_counter, HFTPF_MAX_RULES);
BPF_PERCPU_ARRAY(hftpf_drop_stats, struct hftpf_drop_counter, HFTPF_REASON_MAX);
/* The last allow-list decisions per CPU, direct-mapped by source and port (kernel only): a feed's
 * publisher or an order session's exchange sends packet after packet, and the ~30 ns host hash lookup
 * then decides nothing new. An entry holds only for the allow-list generation it was decided under
 * (hftpf_config.allow_gen), and names the deciding rule so its hits are still counted one by one. */
#define HFTPF_ALLOW_MEMO_SLOTS 16   /* a power of two */
#define HFTPF_ALLOW_MEMO_NO_RULE 0xffffffff
struct hftpf_allow_memo {
	__u8  saddr[16];
	__u64 gen;             /* hftpf_config.allow_gen read before the decision was looked up */
	__u16 dport;
	__u8  proto;
	__u8  valid;
	__u32 reason;          /* enum hftpf_drop_reason: HFTPF_REASON_NONE = allowed */
	__u32 rule_id;         /* the deciding rule, or HFTPF_ALLOW_MEMO_NO_RULE */
	__u32 pad0;
};
BPF_PERCPU_ARRAY(hftpf_allow_memo, struct hftpf_allow_memo, HFTPF_ALLOW_MEMO_SLOTS);
/* Shared (not per-CPU), atomics and a spin lock: one feed's packets can arrive on every CPU (RSS), and
 * the sequence check must see them in one order. */
BPF_HASH(hftpf_streams, struct hftpf_stream_key, struct hftpf_stream_state, HFTPF_MAX_STREAMS);
BPF_ARRAY(hftpf_stream_slots, struct hftpf_stream_state, HFTPF_STREAM_SLOTS);
/* Never written: the all-zero insert template for hftpf_streams. Raw bytes, because the verifier
 * forbids handing a helper a map value whose type holds a bpf_spin_lock. */
struct hftpf_stream_blob {
	__u8 b[sizeof(struct hftpf_stream_state)];
};
BPF_ARRAY(hftpf_zero_stream, struct hftpf_stream_blob, 1);
BPF_HASH(hftpf_rtt_pending, struct hftpf_rtt_key, struct hftpf_rtt_val, HFTPF_MAX_FLOWS);
BPF_PERCPU_ARRAY(hftpf_rtt_hist, struct hftpf_hist, HFTPF_MAX_VENUES + 1);
BPF_PERCPU_ARRAY(hftpf_venue_tx, struct hftpf_counter, HFTPF_MAX_VENUES + 1);
BPF_PERCPU_ARRAY(hftpf_probe_stats, struct hftpf_probe_stats, 1);
BPF_ARRAY(hftpf_agent_stats, struct hftpf_agent_stats, 1);
BPF_ARRAY(hftpf_kill, struct hftpf_kill, HFTPF_MAX_VENUES + 1);
BPF_HASH(hftpf_kill_flows, struct hftpf_flow_key, struct hftpf_kill, 1024);
BPF_TABLE("lru_hash", struct hftpf_flow_key, __u64, hftpf_half_open, HFTPF_MAX_HALF_OPEN);
BPF_RINGBUF_OUTPUT(hftpf_events, HFTPF_RINGBUF_PAGES);

/* The XDP verdict program hands venue packets to its observer program by tail call. */
#define HFTPF_TAIL_XDP_OBSERVE 0
BPF_PROG_ARRAY(hftpf_progs, 4);

/* Parse results handed from hftpf_xdp to hftpf_xdp_observe (same CPU, same packet). */
struct hftpf_scratch {
	struct pkt_info pi;
	__u32 venue;
	__u32 transport;
	__s64 tai_minus_utc;
	__u32 observe;         /* 1: a venue packet that passes (feed / order-entry observation) */
	__u32 conn;            /* 1 + enum hftpf_conn_kind: report a connection-setup packet; 0: none */
	__u32 verdict;         /* the verdict hftpf_xdp decided: the observer returns it */
	__u32 stream_slot;     /* hftpf_port_info.stream_slot of the destination port (0 = none) */
};
BPF_PERCPU_ARRAY(hftpf_scratch, struct hftpf_scratch, 1);

#endif /* HFTPF_MAPS_H */
