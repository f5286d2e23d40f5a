/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hftpf.bpf.c - the probe: one BCC module whose programs share its maps.
 *
 * XDP ingress (hftpf_xdp): parse -> classify to a venue by (transport, address, port) -> verdict
 * (allow-list) -> per-CPU counters -> one exit that counts every verdict and packet class. The
 * verdict is final before anything that can fail for lack of room (ring-buffer reserves come after
 * it), so a full ring can never change what is dropped.
 *
 * Venue matching: a packet belongs to venue V when V's host prefix covers its source or destination
 * address AND one of V's ports equals its source or destination port. So one config entry covers
 * both directions of an order session and a feed named by its publisher or its multicast group.
 * The agent keeps both lookups as bit sets (one bit per venue) so the match is two ORs and an AND.
 */
#include "include/hftpf_abi.h"
#include "include/parse.h"
#include "include/maps.h"
#include "include/clock.h"

/* index of the lowest set bit of a non-zero mask (no ctz instruction in eBPF) */
static __always_inline __u32 lowest_bit(__u64 m)
{
	__u32 n = 0;
	m &= -m;
	if (m & 0xffffffff00000000ULL) n += 32;
	if (m & 0xffff0000ffff0000ULL) n += 16;
	if (m & 0xff00ff00ff00ff00ULL) n += 8;
	if (m & 0xf0f0f0f0f0f0f0f0ULL) n += 4;
	if (m & 0xccccccccccccccccULL) n += 2;
	if (m & 0xaaaaaaaaaaaaaaaaULL) n += 1;
	return n;
}

static __always_inline struct hftpf_port_info *port_info(__u32 transport, __u16 port)
{
	__u32 idx = (transport << 16) | port;
	return hftpf_venue_ports.lookup(&idx);
}

/* Venues whose hosts cover addr: the exact-host hash first, the prefix trie only if it holds any. */
static __always_inline __u64 host_set(__u8 *addr, __u32 cfg_flags)
{
	struct hftpf_venue_set *s = hftpf_venue_host.lookup((struct hftpf_addr *)addr);
	if (s)
		return s->mask;
	if (!(cfg_flags & HFTPF_CFG_VENUE_TRIE))
		return 0;
	struct hftpf_lpm_key k = { .prefixlen = 128 };
	__builtin_memcpy(k.addr, addr, 16);
	s = hftpf_venue_hosts.lookup(&k);
	return s ? s->mask : 0;
}

/* Allow-list decision for a packet to a protected port: HFTPF_REASON_NONE when an allow rule covers
 * it, else why it would be dropped. Counts the hit on the deciding rule. */
static __always_inline __u32 allow_decide(struct pkt_info *pi, __u8 ipproto, __u64 bytes, __u32 cfg_flags)
{
	struct hftpf_allow_list *l = hftpf_allow_host.lookup((struct hftpf_addr *)pi->saddr);
	if (!l) {
		if (!(cfg_flags & HFTPF_CFG_ALLOW_TRIE))
			return HFTPF_REASON_UNKNOWN_SOURCE;
		struct hftpf_lpm_key k = { .prefixlen = 128 };
		__builtin_memcpy(k.addr, pi->saddr, 16);
		l = hftpf_allow_src.lookup(&k);
		if (!l)
			return HFTPF_REASON_UNKNOWN_SOURCE;
	}
	__u32 n = l->n;
	/* a bounded loop (verifier-checked since 5.3); clang cannot unroll it because of the early exits */
	for (int i = 0; i < HFTPF_ALLOW_MAX_PER_PREFIX; i++) {
		if (i >= n)
			break;
		struct hftpf_allow_entry *e = &l->e[i];
		if ((e->proto && e->proto != ipproto) || pi->dport < e->port_lo || pi->dport > e->port_hi)
			continue;
		__u32 rid = e->rule_id;
		struct hftpf_rule_counter *rc = hftpf_rule_stats.lookup(&rid);
		if (rc) {
			rc->packets++;
			rc->bytes += bytes;
			/* coarse (tick) clock: ~50 ns cheaper than a full read; a last-hit time needs no more */
			rc->last_hit_ns = bpf_ktime_get_coarse_ns();
		}
		return e->action == HFTPF_ACTION_ALLOW ? HFTPF_REASON_NONE : HFTPF_REASON_DENY_RULE;
	}
	return HFTPF_REASON_UNKNOWN_SOURCE;
}

static __always_inline void count(void *map_lookup_result, __u64 bytes)
{
	struct hftpf_counter *c = map_lookup_result;
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

int hftpf_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	struct cursor c = { .pos = data, .end = data_end };
	struct pkt_info pi = {};
	__u32 verdict = HFTPF_VERDICT_PASS;
	__u32 cls = HFTPF_PKT_TRUNCATED;
	__u32 venue = 0;
	__u32 reason = HFTPF_REASON_NONE;
	int proto;

	proto = parse_ethhdr(&c, &pi);
	if (proto < 0)
		goto out;
	if (proto == ETH_P_IP)
		proto = parse_ipv4(&c, &pi);
	else if (proto == ETH_P_IPV6)
		proto = parse_ipv6(&c, &pi);
	else {
		cls = HFTPF_PKT_NON_IP;
		goto out;
	}
	if (proto < 0)
		goto out;
	if (pi.is_fragment) {
		cls = HFTPF_PKT_FRAGMENT;
		goto out;
	}

	__u32 transport;
	if (proto == HFTPF_IPPROTO_UDP) {
		transport = HFTPF_TRANSPORT_UDP;
		if (parse_udp(&c, &pi) < 0)
			goto out;
	} else if (proto == HFTPF_IPPROTO_TCP) {
		transport = HFTPF_TRANSPORT_TCP;
		if (parse_tcp(&c, &pi) < 0)
			goto out;
	} else {
		cls = HFTPF_PKT_NON_L4;
		goto out;
	}

	cls = HFTPF_PKT_OTHER_L4;
	__u32 zero = 0;
	struct hftpf_config *cfg = hftpf_config.lookup(&zero);
	__u32 cfg_flags = cfg ? cfg->flags : (HFTPF_CFG_VENUE_TRIE | HFTPF_CFG_ALLOW_TRIE);
	/* Ports first: two array lookups reject most non-venue traffic before any trie walk. */
	struct hftpf_port_info *dpi = port_info(transport, pi.dport);
	struct hftpf_port_info *spi = port_info(transport, pi.sport);
	__u64 ports = (dpi ? dpi->venue_mask : 0) | (spi ? spi->venue_mask : 0);
	if (ports) {
		__u64 match = ports & (host_set(pi.saddr, cfg_flags) | host_set(pi.daddr, cfg_flags));
		if (match) {
			venue = lowest_bit(match) + 1;
			cls = HFTPF_PKT_VENUE;
		}
	}

	/* Allow-list: only packets TO a protected port are judged; PTP always passes. */
	if (dpi && (dpi->flags & HFTPF_PORT_PROTECTED) &&
	    !(transport == HFTPF_TRANSPORT_UDP &&
	      (pi.dport == HFTPF_PTP_EVENT_PORT || pi.dport == HFTPF_PTP_GENERAL_PORT))) {
		reason = allow_decide(&pi, transport == HFTPF_TRANSPORT_UDP ? HFTPF_IPPROTO_UDP : HFTPF_IPPROTO_TCP,
				      bytes, cfg_flags);
		if (reason != HFTPF_REASON_NONE) {
			struct hftpf_drop_counter *dc = hftpf_drop_stats.lookup(&reason);
			if (cfg && cfg->mode == HFTPF_MODE_ENFORCE) {
				verdict = HFTPF_VERDICT_DROP;
				if (dc) {
					dc->dropped_packets++;
					dc->dropped_bytes += bytes;
				}
			} else if (dc) {
				dc->would_drop_packets++;
				dc->would_drop_bytes += bytes;
			}
		}
	}

out:
	/* The single exit: every packet is counted once by class, once by verdict and once by venue
	 * (venue 0 collects IP traffic of no venue as well as everything unparsed). */
	count(hftpf_pkt_stats.lookup(&cls), bytes);
	count(hftpf_verdict_stats.lookup(&verdict), bytes);
	count(hftpf_venue_stats.lookup(&venue), bytes);
	return verdict == HFTPF_VERDICT_DROP ? XDP_DROP : XDP_PASS;
}
