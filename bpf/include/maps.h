/* SPDX-License-Identifier: Apache-2.0 */
/*
 * maps.h - kernel-only map definitions (BCC macros). Names and value types come from hftpf_abi.h;
 * sizes that depend on the config arrive as -D flags from the agent (kernel/loader.py cflags_for).
 */
#ifndef HFTPF_MAPS_H
#define HFTPF_MAPS_H

#include "hftpf_abi.h"

/* Address prefixes configured over all venues; 4096 covers hundreds of venues with many hosts. */
#ifndef HFTPF_MAX_HOST_PREFIXES
#define HFTPF_MAX_HOST_PREFIXES 4096
#endif
/* Allow-list source prefixes and rule ids. Per-CPU rule counters cost 24 B x CPUs x HFTPF_MAX_RULES. */
#ifndef HFTPF_MAX_ALLOW_PREFIXES
#define HFTPF_MAX_ALLOW_PREFIXES 16384
#endif
#ifndef HFTPF_MAX_RULES
#define HFTPF_MAX_RULES 16384
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

#endif /* HFTPF_MAPS_H */
