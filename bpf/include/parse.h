/* SPDX-License-Identifier: Apache-2.0 */
/*
 * parse.h - bounds-checked packet parsers, cursor style.
 *
 * Contract: each parse_*() takes the cursor, checks that its whole header fits before reading a
 * byte of it, advances the cursor past the header and returns the next protocol number (host byte
 * order), or -1 when the header does not fit (the caller counts HFTPF_PKT_TRUNCATED). Extracted
 * values are in host byte order except addresses, which stay in network byte order.
 *
 * Only uapi headers are included: kernel-internal headers cost 5-7 s of BCC compile time and do not
 * match the running kernel on hosts where the distro's headers stand in for missing ones.
 */
#ifndef HFTPF_PARSE_H
#define HFTPF_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>

/* uapi/linux/in.h and uapi/linux/tcp.h pull in linux/socket.h, which resolves to the kernel-internal
 * header and adds ~0.85 s each to the compile (measured with BCC 0.26). We need only a few protocol
 * numbers and the fixed TCP header, so they are spelled out here (values from IANA / RFC 9293). */
#define HFTPF_IPPROTO_HOPOPTS   0
#define HFTPF_IPPROTO_TCP       6
#define HFTPF_IPPROTO_UDP      17
#define HFTPF_IPPROTO_ROUTING  43
#define HFTPF_IPPROTO_FRAGMENT 44
#define HFTPF_IPPROTO_AH       51
#define HFTPF_IPPROTO_DSTOPTS  60

struct tcp_hdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8   doff_res;    /* data offset in 32-bit words: high nibble */
	__u8   flags;       /* CWR ECE URG ACK PSH RST SYN FIN */
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

/* 802.1Q and 802.1ad tags peeled before the IP header: QinQ is two; more is treated as truncated. */
#define HFTPF_MAX_VLAN_DEPTH 2
/* IPv6 extension headers skipped before giving up (hop-by-hop, routing, dest opts, fragment, AH). */
#define HFTPF_MAX_IPV6_EXT 4

struct cursor {
	void *pos;
	void *end;
	void *start;        /* first byte of the frame: offsets in pkt_info are relative to it */
	__u32 frame_len;    /* whole frame: data_end - data for XDP, skb->len for TC (payload may be
			     * in non-linear fragments there, beyond data_end) */
};

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* What the parser learnt about one packet. */
struct pkt_info {
	__u8  saddr[16];    /* v4-mapped for IPv4; network order */
	__u8  daddr[16];
	__u16 sport;        /* host order; 0 when there is no L4 header */
	__u16 dport;
	__u8  l4proto;      /* HFTPF_IPPROTO_TCP / _UDP / other */
	__u8  is_fragment;  /* 1: not the first fragment, no L4 header */
	__u16 vlan_depth;
	__u16 payload_len;  /* L4 payload bytes per the IP length (Ethernet padding excluded), clamped to the frame */
	__u16 payload_off;  /* offset of the L4 payload from the start of the frame */
	__u8  tcp_flags;
	__u8  pad0;
	__u32 tcp_seq;      /* host order */
	__u32 tcp_ack;
	__u16 l3_end_off;   /* end of the IP packet per its length field, clamped to the frame */
	__u16 pad1;
};

#define HFTPF_TCP_FIN 0x01
#define HFTPF_TCP_SYN 0x02
#define HFTPF_TCP_RST 0x04
#define HFTPF_TCP_ACK 0x10

static __always_inline int parse_ethhdr(struct cursor *c, struct pkt_info *pi)
{
	struct ethhdr *eth = c->pos;
	if ((void *)(eth + 1) > c->end)
		return -1;
	c->pos = eth + 1;
	__u16 proto = bpf_ntohs(eth->h_proto);

#pragma unroll
	for (int i = 0; i < HFTPF_MAX_VLAN_DEPTH; i++) {
		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		struct vlan_hdr *vh = c->pos;
		if ((void *)(vh + 1) > c->end)
			return -1;
		c->pos = vh + 1;
		proto = bpf_ntohs(vh->encap_proto);
		pi->vlan_depth++;
	}
	if (proto == ETH_P_8021Q || proto == ETH_P_8021AD)
		return -1; /* deeper than we peel: refuse rather than misparse */
	return proto;
}

static __always_inline void v4_mapped(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

static __always_inline int parse_ipv4(struct cursor *c, struct pkt_info *pi)
{
	struct iphdr *ip = c->pos;
	if ((void *)(ip + 1) > c->end)
		return -1;
	int hlen = ip->ihl * 4;
	if (hlen < (int)sizeof(*ip))
		return -1;
	if (c->pos + hlen > c->end)
		return -1; /* options run past the frame */
	v4_mapped(pi->saddr, ip->saddr);
	v4_mapped(pi->daddr, ip->daddr);
	{
		long end = (c->pos - c->start) + bpf_ntohs(ip->tot_len);
		long frame = c->frame_len;
		pi->l3_end_off = (end > frame || end < (c->pos - c->start) + hlen) ? frame : end;
	}
	/* A non-first fragment carries no L4 header; its bytes would be misread as ports. */
	if (ip->frag_off & bpf_htons(0x1fff))
		pi->is_fragment = 1;
	c->pos += hlen;
	return ip->protocol;
}

static __always_inline int parse_ipv6(struct cursor *c, struct pkt_info *pi)
{
	struct ipv6hdr *ip6 = c->pos;
	if ((void *)(ip6 + 1) > c->end)
		return -1;
	__builtin_memcpy(pi->saddr, &ip6->saddr, 16);
	__builtin_memcpy(pi->daddr, &ip6->daddr, 16);
	c->pos = ip6 + 1;
	{
		long end = (c->pos - c->start) + bpf_ntohs(ip6->payload_len);
		long frame = c->frame_len;
		pi->l3_end_off = end > frame ? frame : end;
	}
	int nexthdr = ip6->nexthdr;

#pragma unroll
	for (int i = 0; i < HFTPF_MAX_IPV6_EXT; i++) {
		__u8 *ext = c->pos;
		int len;
		switch (nexthdr) {
		case HFTPF_IPPROTO_HOPOPTS:
		case HFTPF_IPPROTO_ROUTING:
		case HFTPF_IPPROTO_DSTOPTS:
			if ((void *)(ext + 2) > c->end)
				return -1;
			len = (ext[1] + 1) * 8;
			break;
		case HFTPF_IPPROTO_AH:
			if ((void *)(ext + 2) > c->end)
				return -1;
			len = (ext[1] + 2) * 4;
			break;
		case HFTPF_IPPROTO_FRAGMENT:
			if ((void *)(ext + 8) > c->end)
				return -1;
			/* fragment offset: 13 bits at bytes 2-3, above 3 flag bits */
			if (((ext[2] << 8) | ext[3]) & 0xfff8)
				pi->is_fragment = 1;
			len = 8;
			break;
		default:
			return nexthdr;
		}
		if (c->pos + len > c->end)
			return -1;
		nexthdr = ext[0];
		c->pos += len;
	}
	/* Still an extension header after the bound: report it as a non-L4 protocol. */
	return nexthdr;
}

static __always_inline int parse_udp(struct cursor *c, struct pkt_info *pi)
{
	struct udphdr *udp = c->pos;
	if ((void *)(udp + 1) > c->end)
		return -1;
	pi->sport = bpf_ntohs(udp->source);
	pi->dport = bpf_ntohs(udp->dest);
	c->pos = udp + 1;
	return 0;
}

static __always_inline int parse_tcp(struct cursor *c, struct pkt_info *pi)
{
	struct tcp_hdr *tcp = c->pos;
	if ((void *)(tcp + 1) > c->end)
		return -1;
	int hlen = (tcp->doff_res >> 4) * 4;
	if (hlen < (int)sizeof(*tcp) || c->pos + hlen > c->end)
		return -1;
	pi->sport = bpf_ntohs(tcp->source);
	pi->dport = bpf_ntohs(tcp->dest);
	pi->tcp_seq = bpf_ntohl(tcp->seq);
	pi->tcp_ack = bpf_ntohl(tcp->ack_seq);
	pi->tcp_flags = tcp->flags;
	c->pos += hlen;
	return 0;
}

/* Payload length and offset after the L4 header (call once the cursor is past it). */
static __always_inline void set_payload(struct cursor *c, struct pkt_info *pi)
{
	long off = c->pos - c->start;
	long len = (long)pi->l3_end_off - off;
	pi->payload_len = len > 0 ? (__u16)len : 0;
	pi->payload_off = (__u16)off;
}

#endif /* HFTPF_PARSE_H */
