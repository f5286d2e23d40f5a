/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hftpf.bpf.c - the probe: one BCC module whose programs share its maps.
 *
 * XDP ingress (hftpf_xdp): parse -> classify to a venue by (transport, address, port) -> verdict ->
 * per-CPU counters -> one exit that counts every verdict and packet class.
 *
 * Venue matching: a packet belongs to venue V when V's host prefix covers its source or destination
 * address AND one of V's ports equals its source or destination port. So one config entry covers
 * both directions of an order session and a feed named by its publisher or its multicast group.
 * The agent keeps both lookups as bit sets (one bit per venue) so the match is two ORs and an AND.
 */
#include "include/hftpf_abi.h"
#include "include/parse.h"
#include "include/maps.h"

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

static __always_inline __u64 port_set(__u32 transport, __u16 port)
{
	__u32 idx = (transport << 16) | port;
	struct hftpf_venue_set *s = hftpf_venue_ports.lookup(&idx);
	return s ? s->mask : 0;
}

static __always_inline __u64 host_set(__u8 *addr)
{
	struct hftpf_lpm_key k = { .prefixlen = 128 };
	__builtin_memcpy(k.addr, addr, 16);
	struct hftpf_venue_set *s = hftpf_venue_hosts.lookup(&k);
	return s ? s->mask : 0;
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
	/* Ports first: two array lookups reject most non-venue traffic before any trie walk. */
	__u64 ports = port_set(transport, pi.sport) | port_set(transport, pi.dport);
	if (!ports)
		goto out;
	__u64 match = ports & (host_set(pi.saddr) | host_set(pi.daddr));
	if (!match)
		goto out;
	venue = lowest_bit(match) + 1;
	cls = HFTPF_PKT_VENUE;

out:
	/* The single exit: every packet is counted once by class, once by verdict and once by venue
	 * (venue 0 collects IP traffic of no venue as well as everything unparsed). */
	count(hftpf_pkt_stats.lookup(&cls), bytes);
	count(hftpf_verdict_stats.lookup(&verdict), bytes);
	count(hftpf_venue_stats.lookup(&venue), bytes);
	return verdict == HFTPF_VERDICT_DROP ? XDP_DROP : XDP_PASS;
}
