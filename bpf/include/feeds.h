/* SPDX-License-Identifier: Apache-2.0 */
/*
 * feeds.h - peeks at market-data sequence headers at the start of a UDP payload.
 *
 * Each peek_*() bounds-checks its header and fills struct feed_hdr; it returns 0, or -1 when the
 * payload is too short (the packet is then counted but not sequence-tracked). Layouts (public specs):
 *   MoldUDP64 1.00:        session[10] | seq u64 BE | count u16 BE (0 heartbeat, 0xFFFF end of session),
 *                          then messages, each u16 BE length | message. An ITCH 5.0 message starts
 *                          type u8 | stock locate u16 | tracking number u16 | timestamp u48 BE (ns
 *                          since midnight, the exchange's local time): the first one's is the time.
 *   CME MDP 3.0 packet:    MsgSeqNum u32 LE | SendingTime u64 LE (ns since the Unix epoch, UTC)
 *   Cboe PITCH seq unit:   length u16 LE | count u8 | unit u8 | sequence u32 LE (0 = unsequenced)
 *   NYSE XDP / Pillar:     size u16 LE | delivery flag u8 | count u8 | seq u32 LE | time s u32 LE | ns u32 LE
 */
#ifndef HFTPF_FEEDS_H
#define HFTPF_FEEDS_H

#include "hftpf_abi.h"

enum feed_kind {
	FEED_DATA      = 0,
	FEED_HEARTBEAT = 1,  /* carries the next expected sequence, advances nothing */
	FEED_END       = 2,  /* MoldUDP64 end of session */
	FEED_RESET     = 3,  /* sequence space restarts at seq */
	FEED_SKIP      = 4,  /* unsequenced (PITCH seq 0): counted, not tracked */
};

struct feed_hdr {
	__u64 seq;
	__u64 exch_ts_ns;      /* exchange send time, UTC ns since the epoch (or since midnight: tod); 0 = none */
	__u32 count;
	__u8  kind;            /* enum feed_kind */
	__u8  unit;
	__u8  wide;            /* 1: 64-bit sequence space, 0: 32-bit (wraps) */
	__u8  tod;             /* 1: exch_ts_ns is ns since the venue's local midnight (ITCH), not UTC */
	__u8  session[10];
};

static __always_inline __u64 be64(const __u8 *p)
{
	return ((__u64)p[0] << 56) | ((__u64)p[1] << 48) | ((__u64)p[2] << 40) | ((__u64)p[3] << 32) |
	       ((__u64)p[4] << 24) | ((__u64)p[5] << 16) | ((__u64)p[6] << 8) | (__u64)p[7];
}

/* An ITCH 5.0 message holds its timestamp when it is at least this long (type, locate, tracking, ts). */
#define ITCH_TS_END 11

static __always_inline __u64 be48(const __u8 *p)
{
	return ((__u64)p[0] << 40) | ((__u64)p[1] << 32) | ((__u64)p[2] << 24) | ((__u64)p[3] << 16) |
	       ((__u64)p[4] << 8) | (__u64)p[5];
}

static __always_inline __u32 le32(const __u8 *p)
{
	return (__u32)p[0] | ((__u32)p[1] << 8) | ((__u32)p[2] << 16) | ((__u32)p[3] << 24);
}

static __always_inline __u64 le64(const __u8 *p)
{
	return (__u64)le32(p) | ((__u64)le32(p + 4) << 32);
}

static __always_inline int peek_feed(struct cursor *c, __u8 proto, struct feed_hdr *f)
{
	__u8 *p = c->pos;
	switch (proto) {
	case HFTPF_SEQ_MOLDUDP64: {
		if ((void *)(p + 20) > c->end)
			return -1;
		__builtin_memcpy(f->session, p, 10);
		f->seq = be64(p + 10);
		__u16 n = ((__u16)p[18] << 8) | p[19];
		f->wide = 1;
		if (n == 0) {
			f->kind = FEED_HEARTBEAT;
		} else if (n == 0xFFFF) {
			f->kind = FEED_END;
		} else {
			f->kind = FEED_DATA;
			f->count = n;
			/* first message: length u16 at 20, ITCH timestamp at 20 + 2 + 5, 6 bytes */
			if ((void *)(p + 33) <= c->end && (((__u16)p[20] << 8) | p[21]) >= ITCH_TS_END) {
				f->exch_ts_ns = be48(p + 27);
				f->tod = 1;
			}
		}
		return 0;
	}
	case HFTPF_SEQ_MDP3:
		if ((void *)(p + 12) > c->end)
			return -1;
		f->seq = le32(p);
		f->exch_ts_ns = le64(p + 4);
		f->count = 1;
		/* MsgSeqNum restarts at 1 after a channel reset (and every week) */
		f->kind = f->seq == 1 ? FEED_RESET : FEED_DATA;
		return 0;
	case HFTPF_SEQ_PITCH:
		if ((void *)(p + 8) > c->end)
			return -1;
		f->count = p[2];
		f->unit = p[3];
		f->seq = le32(p + 4);
		f->kind = f->seq == 0 ? FEED_SKIP : (f->count ? FEED_DATA : FEED_HEARTBEAT);
		return 0;
	case HFTPF_SEQ_NYSE_XDP:
		if ((void *)(p + 16) > c->end)
			return -1;
		f->count = p[3];
		f->seq = le32(p + 4);
		f->exch_ts_ns = (__u64)le32(p + 8) * 1000000000ULL + le32(p + 12);
		/* delivery flags: 1 heartbeat, 12 sequence number reset (NYSE XDP common client spec) */
		if (p[2] == 1 || f->count == 0)
			f->kind = FEED_HEARTBEAT;
		else if (p[2] == 12)
			f->kind = FEED_RESET;
		else
			f->kind = FEED_DATA;
		return 0;
	}
	return -1;
}

#endif /* HFTPF_FEEDS_H */
