/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hftpf.bpf.c - the probe: one BCC module whose programs share its maps.
 *
 * XDP ingress (hftpf_xdp): parse -> classify to a venue by (transport, address, port) -> verdict
 * (allow-list) -> per-CPU counters -> stamp (one clock read) -> sequence tracking, RTT match,
 * latency histograms, ring-buffer events -> one exit that counts every verdict and packet class.
 * The verdict is final before anything that can fail for lack of room (ring-buffer reserves come
 * after it), so a full ring can never change what is dropped.
 *
 * TC egress (hftpf_tc_egress): parse -> classify -> kill switch (drop while engaged) -> stamp ->
 * remember order-entry TCP segments for RTT, payload samples -> per-venue tx counters. Same clock, same maps, so an outbound order and the
 * inbound ack are measured against each other.
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
#include "include/feeds.h"

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

/* floor(log2(v)) for v > 0 */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;
	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8)  { v >>= 8;  r += 8; }
	if (v >> 4)  { v >>= 4;  r += 4; }
	if (v >> 2)  { v >>= 2;  r += 2; }
	if (v >> 1)  { r += 1; }
	return r;
}

/* Bucket of a latency in ns: see HFTPF_HIST_BUCKETS in hftpf_abi.h. */
static __always_inline __u32 hist_bucket(__u64 v)
{
	if (v < 64)
		return 0;
	__u32 e = log2_u64(v);
	__u32 idx = (e - 6) * 4 + ((v >> (e - 2)) & 3) + 1;
	return idx >= HFTPF_HIST_BUCKETS ? HFTPF_HIST_BUCKETS - 1 : idx;
}

static __always_inline void hist_add(struct hftpf_hist *h, __u64 v)
{
	__u32 b = hist_bucket(v);
	h->count++;
	h->sum_ns += v;
	if (b < HFTPF_HIST_BUCKETS)
		h->bucket[b]++;
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

static __always_inline int addr_eq(const __u8 *a, const __u8 *b)
{
	__u64 a0, a1, b0, b1;
	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

/* The allow-list's answer for a packet to a protected port, from the tables: HFTPF_REASON_NONE when
 * an allow rule covers it, else why it would be dropped; *rid the deciding rule or
 * HFTPF_ALLOW_MEMO_NO_RULE. */
static __always_inline __u32 allow_lookup(struct pkt_info *pi, __u8 ipproto, __u32 cfg_flags, __u32 *rid)
{
	*rid = HFTPF_ALLOW_MEMO_NO_RULE;
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
		*rid = e->rule_id;
		return e->action == HFTPF_ACTION_ALLOW ? HFTPF_REASON_NONE : HFTPF_REASON_DENY_RULE;
	}
	return HFTPF_REASON_UNKNOWN_SOURCE;
}

/* Allow-list decision for a packet to a protected port (see allow_lookup), remembered per CPU for the
 * allow-list generation `gen` (hftpf_allow_memo). Counts the hit on the deciding rule. */
static __always_inline __u32 allow_decide(struct pkt_info *pi, __u8 ipproto, __u64 bytes, __u32 cfg_flags, __u64 gen)
{
	__u32 slot = (pi->saddr[15] ^ pi->dport) & (HFTPF_ALLOW_MEMO_SLOTS - 1);
	struct hftpf_allow_memo *m = hftpf_allow_memo.lookup(&slot);
	__u32 reason, rid;
	if (m && m->valid && m->gen == gen && m->dport == pi->dport && m->proto == ipproto &&
	    addr_eq(m->saddr, pi->saddr)) {
		reason = m->reason;
		rid = m->rule_id;
	} else {
		reason = allow_lookup(pi, ipproto, cfg_flags, &rid);
		if (m) {
			__builtin_memcpy(m->saddr, pi->saddr, 16);
			m->gen = gen;
			m->dport = pi->dport;
			m->proto = ipproto;
			m->valid = 1;
			m->reason = reason;
			m->rule_id = rid;
		}
	}
	struct hftpf_rule_counter *rc = rid == HFTPF_ALLOW_MEMO_NO_RULE ? 0 : hftpf_rule_stats.lookup(&rid);
	if (rc) {
		rc->packets++;
		rc->bytes += bytes;
		/* The coarse (tick) clock changes once per tick, so read it once per tick: jiffies is
		 * inlined by the verifier (a load), the coarse clock is a ~28 ns helper call here. At most
		 * one tick late, when a packet lands between the jiffies update and the clock's. */
		__u64 j = bpf_jiffies64();
		if (rc->last_hit_jiffies != j) {
			rc->last_hit_jiffies = j;
			rc->last_hit_ns = bpf_ktime_get_coarse_ns();
		}
	}
	return reason;
}

static __always_inline void count(void *map_lookup_result, __u64 bytes)
{
	struct hftpf_counter *c = map_lookup_result;
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline struct hftpf_probe_stats *probe_stats(void)
{
	__u32 zero = 0;
	return hftpf_probe_stats.lookup(&zero);
}

static __always_inline void ring_submitted(struct hftpf_probe_stats *ps, int ok)
{
	if (!ps)
		return;
	if (ok)
		ps->ringbuf_events++;
	else
		ps->ringbuf_lost++;
}

/* ---- feed sequence tracking --------------------------------------------------------------------- */

/* Signed distance seq - expected in the feed's sequence space (32-bit spaces wrap). */
/* Every ring-buffer record starts with this header. */
static __always_inline void event_hdr(struct hftpf_event_hdr *h, __u16 type, __u16 len, __u64 now)
{
	h->type = type;
	h->len = len;
	h->cpu = bpf_get_smp_processor_id();
	h->ts_ns = now;
}

/* The 4-tuple of a packet as received (remote side first for inbound packets). */
static __always_inline void flow_key_of(struct pkt_info *pi, struct hftpf_flow_key *key)
{
	__builtin_memcpy(key->saddr, pi->saddr, 16);
	__builtin_memcpy(key->daddr, pi->daddr, 16);
	key->sport = pi->sport;
	key->dport = pi->dport;
}

/* Compare-and-swap rounds the slow path gives `expected` before it gives up on a packet (counted in
 * hftpf_probe_stats.seq_contended): each failed round means another CPU's in-order packet got in. */
#define SEQ_RETRIES 4

/* Microburst: count the packet in its window of 2^20 ns (1.048576 ms; a shift, not a division) and
 * raise the stream's peak. burst = window << 24 | packets in it, one word so a compare-and-swap moves
 * window and count together. */
#define BURST_COUNT_BITS 24
static __always_inline void burst_count(struct hftpf_stream_state *st, __u64 now)
{
	__u64 cnt_mask = (1ULL << BURST_COUNT_BITS) - 1;
	__u64 win = (now >> 20) << BURST_COUNT_BITS;
	__u64 n = 0;
	for (int i = 0; i < 4; i++) {
		__u64 old = *(volatile __u64 *)&st->burst;
		__u64 cnt = (old & ~cnt_mask) == win ? (old & cnt_mask) + 1 : 1;
		if (cnt > cnt_mask)
			cnt = cnt_mask;
		if (__sync_val_compare_and_swap(&st->burst, old, win | cnt) == old) {
			n = cnt;
			break;
		}
	}
	for (int i = 0; i < 4 && n; i++) {
		__u64 p = *(volatile __u64 *)&st->peak_ms_packets;
		if (n <= p || __sync_val_compare_and_swap(&st->peak_ms_packets, p, n) == p)
			break;
	}
}

static __always_inline __s64 seq_delta(__u64 seq, __u64 expected, __u8 wide)
{
	if (wide)
		return (__s64)(seq - expected);
	return (__s64)(__s32)((__u32)seq - (__u32)expected);
}

/* The state of a feed stream: the slot its port names when the slot holds this very stream (one
 * inlined array lookup), else the hash (a port carrying several groups, sessions or units). */
static __always_inline struct hftpf_stream_state *stream_of(struct hftpf_stream_key *key, __u32 slot)
{
	if (slot) {
		struct hftpf_stream_state *ss = hftpf_stream_slots.lookup(&slot);
		if (ss && ss->key.dport == key->dport && ss->key.venue == key->venue && ss->key.unit == key->unit &&
		    addr_eq(ss->key.daddr, key->daddr))
			return ss;
	}
	return hftpf_streams.lookup(key);
}

static __always_inline void track_feed(struct pkt_info *pi, struct cursor *c, __u32 venue, __u8 proto, __u32 slot,
				       __u64 now, __s64 tai_minus_utc, __s64 midnight_ns, struct hftpf_probe_stats *ps)
{
	struct feed_hdr f = {};
	if (peek_feed(c, proto, &f) < 0)
		return;
	struct hftpf_stream_key key __attribute__((aligned(8))) = {};
	__builtin_memcpy(key.daddr, pi->daddr, 16);
	key.dport = pi->dport;
	key.venue = venue;
	key.unit = f.unit;
	struct hftpf_stream_state *st = stream_of(&key, slot);
	if (!st) {
		/* the state is ~1 KiB, more than the BPF stack: insert from an all-zero map value */
		__u32 zero = 0;
		struct hftpf_stream_blob *init = hftpf_zero_stream.lookup(&zero);
		if (!init)
			return;
		hftpf_streams.insert(&key, (struct hftpf_stream_state *)init); /* EEXIST (another CPU won) or full: the lookup tells */
		st = hftpf_streams.lookup(&key);
		if (!st) {
			if (ps)
				ps->stream_table_full++;
			return;
		}
	}
	/* Exchange-time latency into the stream's histogram. */
	/* The exchange's send time in the probe clock: UTC + (TAI - UTC) under TAI; a time of day (ITCH)
	 * from the venue's local midnight, which the agent writes in the probe clock (either clock). */
	__u64 exch = 0;
	if (f.tod)
		exch = midnight_ns ? midnight_ns + f.exch_ts_ns : 0;
	else if (f.exch_ts_ns && HFTPF_USE_TAI)
		exch = f.exch_ts_ns + tai_minus_utc;
	__u64 lat = 0;
	__u32 lat_state = 0; /* 0 none, 1 a sample, 2 negative (exchange clock ahead of ours) */
	if (exch) {
		lat = now - exch;
		lat_state = (__s64)lat < 0 ? 2 : 1;
	}
	__u32 lat_b = lat_state == 1 ? hist_bucket(lat) : 0;
	__u64 sess_lo = 0;
	__u16 sess_hi = 0;
	__builtin_memcpy(&sess_lo, f.session, 8);
	__builtin_memcpy(&sess_hi, f.session + 8, 2);
	/* Shared counters: atomic adds, no lock (one stream's packets may arrive on several CPUs). */
	__sync_fetch_and_add(&st->packets, 1);
	st->seq_proto = proto;
	st->last_ts_ns = now; /* a plain store: with CPUs racing, one of their stamps wins */
	burst_count(st, now);
	if (lat_state == 1) {
		__sync_fetch_and_add(&st->lat.count, 1);
		__sync_fetch_and_add(&st->lat.sum_ns, lat);
		if (lat_b < HFTPF_HIST_BUCKETS)
			__sync_fetch_and_add(&st->lat.bucket[lat_b], 1);
	} else if (lat_state == 2) {
		__sync_fetch_and_add(&st->lat_negative, 1);
	}

	/* Fast path, the in-order data packet: one compare-and-swap moves `expected` past it. A bpf_spin_lock
	 * round trip costs ~50 ns here (two helper calls, interrupts off), a cmpxchg a few. */
	__u64 mask = f.wide ? ~0ULL : 0xffffffffULL;
	__u64 next = (f.seq + f.count) & mask;
	if (f.kind == FEED_DATA && (st->flags & HFTPF_STREAM_STARTED) && st->session_lo == sess_lo &&
	    st->session_hi == sess_hi && __sync_val_compare_and_swap(&st->expected, f.seq, next) == f.seq) {
		__sync_fetch_and_add(&st->messages, f.count);
		return;
	}

	/* Slow path, under the lock: start, reset, gap, late packet, heartbeat, end. Only this path writes
	 * the hole, the flags, the session and the anomaly counters; `expected` it also moves only by
	 * compare-and-swap, since the fast path moves it without the lock: a failed swap means an in-order
	 * packet got in between, and the packet is judged again against the new value. */
	__u64 gap_expected = 0, gap_missing = 0;
	int judged = 0;
	bpf_spin_lock(&st->lock);
	for (int i = 0; i < SEQ_RETRIES; i++) {
		__u64 e = *(volatile __u64 *)&st->expected;
		int session_changed = (st->flags & HFTPF_STREAM_STARTED) &&
				      (st->session_lo != sess_lo || st->session_hi != sess_hi);
		judged = 1;
		if (f.kind == FEED_SKIP)
			break; /* unsequenced: counted only */
		if (!(st->flags & HFTPF_STREAM_STARTED) || session_changed || f.kind == FEED_RESET) {
			if (__sync_val_compare_and_swap(&st->expected, e, next) != e) {
				judged = 0;
				continue;
			}
			if (st->flags & HFTPF_STREAM_STARTED)
				st->resets++;
			else
				st->first_ts_ns = now;
			st->flags = HFTPF_STREAM_STARTED;
			st->session_lo = sess_lo;
			st->session_hi = sess_hi;
			st->hole_lo = st->hole_hi = 0;
			__sync_fetch_and_add(&st->messages, f.count);
			if (f.kind == FEED_HEARTBEAT)
				st->heartbeats++;
			break;
		}
		__s64 d = seq_delta(f.seq, e, f.wide);
		if (d > 0) {
			if (__sync_val_compare_and_swap(&st->expected, e, next) != e) {
				judged = 0;
				continue;
			}
			st->gaps++;
			st->missing += d;
			gap_expected = e;
			gap_missing = d;
			st->hole_lo = e;
			st->hole_hi = f.seq;
			__sync_fetch_and_add(&st->messages, f.count);
		} else if (d == 0 && f.count) {
			if (__sync_val_compare_and_swap(&st->expected, e, next) != e) {
				judged = 0;
				continue;
			}
			__sync_fetch_and_add(&st->messages, f.count);
		} else if (d < 0 && f.kind == FEED_DATA) {
			/* behind: a late packet inside the last gap is reordering, anything else a duplicate */
			if (seq_delta(f.seq, st->hole_lo, f.wide) >= 0 && seq_delta(f.seq, st->hole_hi, f.wide) < 0) {
				st->out_of_order++;
				__sync_fetch_and_add(&st->messages, f.count);
				if (f.seq == st->hole_lo)
					st->hole_lo = (st->hole_lo + f.count) & mask;
			} else {
				st->duplicates++;
			}
		}
		if (f.kind == FEED_HEARTBEAT || f.kind == FEED_END) {
			st->heartbeats++;
			if (f.kind == FEED_END)
				st->flags |= HFTPF_STREAM_ENDED;
		}
		break;
	}
	bpf_spin_unlock(&st->lock);
	if (!judged && ps)
		ps->seq_contended++;

	if (gap_missing) {
		struct hftpf_ev_gap *ev = hftpf_events.ringbuf_reserve(sizeof(*ev));
		ring_submitted(ps, ev != 0);
		if (ev) {
			event_hdr(&ev->hdr, HFTPF_EV_GAP, sizeof(*ev), now);
			ev->stream = key;
			ev->pad0 = 0;
			ev->expected = gap_expected;
			ev->received = f.seq;
			ev->missing = gap_missing;
			hftpf_events.ringbuf_submit(ev, 0);
		}
	}
}

/* ---- order entry: payload samples and RTT -------------------------------------------------------- */

static __always_inline void payload_event(void *ctx, int is_xdp, struct pkt_info *pi, __u32 venue, __u8 dir,
					  __u64 now, struct hftpf_probe_stats *ps)
{
	if (HFTPF_PAYLOAD_SNAPLEN == 0 || pi->payload_len == 0)
		return;
	struct hftpf_ev_payload *ev = hftpf_events.ringbuf_reserve(sizeof(*ev));
	ring_submitted(ps, ev != 0);
	if (!ev)
		return;
	event_hdr(&ev->hdr, HFTPF_EV_PAYLOAD, sizeof(*ev), now);
	__builtin_memcpy(ev->saddr, pi->saddr, 16);
	__builtin_memcpy(ev->daddr, pi->daddr, 16);
	ev->sport = pi->sport;
	ev->dport = pi->dport;
	ev->tcp_seq = pi->tcp_seq;
	ev->venue = venue;
	ev->direction = dir;
	ev->orig_len = pi->payload_len;
	ev->l4proto = pi->l4proto;
	ev->pad0 = 0;
	__u32 n = pi->payload_len;
	if (n > HFTPF_PAYLOAD_SNAPLEN)
		n = HFTPF_PAYLOAD_SNAPLEN;
	ev->cap_len = 0;
	if (n > 0 && n <= HFTPF_PAYLOAD_SNAPLEN) {
		int err = is_xdp ? bpf_xdp_load_bytes(ctx, pi->payload_off, ev->data, n)
				 : bpf_skb_load_bytes(ctx, pi->payload_off, ev->data, n);
		if (!err)
			ev->cap_len = n;
	}
	hftpf_events.ringbuf_submit(ev, 0);
}

/* Egress: remember when a segment was first sent, keyed by the sequence number that will ACK it. */
static __always_inline void rtt_stamp(struct pkt_info *pi, __u32 venue, __u64 now, struct hftpf_probe_stats *ps)
{
	/* data segments only: a handshake RTT (SYN) says nothing about the venue's order path */
	__u32 span = pi->payload_len;
	if (!span)
		return;
	struct hftpf_rtt_key k = {};
	__builtin_memcpy(k.saddr, pi->saddr, 16);
	__builtin_memcpy(k.daddr, pi->daddr, 16);
	k.sport = pi->sport;
	k.dport = pi->dport;
	k.end_seq = pi->tcp_seq + span;
	struct hftpf_rtt_val *old = hftpf_rtt_pending.lookup(&k);
	if (old) {
		old->ts_ns = 0; /* sent twice: Karn's rule, no sample */
		if (ps)
			ps->rtt_retransmits++;
		return;
	}
	struct hftpf_rtt_val v = { .ts_ns = now, .venue = venue };
	if (hftpf_rtt_pending.insert(&k, &v) && ps)
		ps->rtt_table_full++;
}

/* Ingress: an ACK that covers a stamped segment exactly yields one RTT sample. */
static __always_inline void rtt_match(struct pkt_info *pi, __u32 venue, __u64 now, struct hftpf_probe_stats *ps)
{
	if (!(pi->tcp_flags & HFTPF_TCP_ACK))
		return;
	struct hftpf_rtt_key k = {};
	__builtin_memcpy(k.saddr, pi->daddr, 16);
	__builtin_memcpy(k.daddr, pi->saddr, 16);
	k.sport = pi->dport;
	k.dport = pi->sport;
	k.end_seq = pi->tcp_ack;
	struct hftpf_rtt_val *v = hftpf_rtt_pending.lookup(&k);
	if (!v)
		return;
	__u64 sent = v->ts_ns;
	hftpf_rtt_pending.delete(&k);
	if (!sent || now < sent)
		return;
	__u64 rtt = now - sent;
	struct hftpf_hist *h = hftpf_rtt_hist.lookup(&venue);
	if (h)
		hist_add(h, rtt);
	if (ps)
		ps->rtt_samples++;
#if HFTPF_RTT_SAMPLES
	/* at most one RTT event per CPU per 10 us: the histogram has every sample */
	if (ps && now - ps->last_rtt_event_ns < 10000)
		return;
	if (ps)
		ps->last_rtt_event_ns = now;
	struct hftpf_ev_rtt *ev = hftpf_events.ringbuf_reserve(sizeof(*ev));
	ring_submitted(ps, ev != 0);
	if (!ev)
		return;
	event_hdr(&ev->hdr, HFTPF_EV_RTT, sizeof(*ev), now);
	__builtin_memcpy(ev->saddr, k.saddr, 16);
	__builtin_memcpy(ev->daddr, k.daddr, 16);
	ev->sport = k.sport;
	ev->dport = k.dport;
	ev->venue = venue;
	ev->pad0[0] = ev->pad0[1] = ev->pad0[2] = 0;
	ev->rtt_ns = rtt;
	hftpf_events.ringbuf_submit(ev, 0);
#endif
}

/* ---- shared parse + classify ----------------------------------------------------------------------- */

struct classified {
	__u32 cls;
	__u32 venue;
	__u32 transport;
	__u32 cfg_flags;
	__u32 mode;
	__s64 tai_minus_utc;
	__u64 allow_gen;
	struct hftpf_port_info *dport_info;
	__u32 stream_slot;
};

/* Parse and classify one frame. Leaves the cursor at the L4 payload for TCP/UDP. */
static __always_inline void classify(struct cursor *c, void *data, struct pkt_info *pi, struct classified *k)
{
	int proto;
	k->cls = HFTPF_PKT_TRUNCATED;
	proto = parse_ethhdr(c, pi);
	if (proto < 0)
		return;
	if (proto == ETH_P_IP)
		proto = parse_ipv4(c, pi);
	else if (proto == ETH_P_IPV6)
		proto = parse_ipv6(c, pi);
	else {
		k->cls = HFTPF_PKT_NON_IP;
		return;
	}
	if (proto < 0)
		return;
	if (pi->is_fragment) {
		k->cls = HFTPF_PKT_FRAGMENT;
		return;
	}
	if (proto == HFTPF_IPPROTO_UDP) {
		k->transport = HFTPF_TRANSPORT_UDP;
		if (parse_udp(c, pi) < 0)
			return;
	} else if (proto == HFTPF_IPPROTO_TCP) {
		k->transport = HFTPF_TRANSPORT_TCP;
		if (parse_tcp(c, pi) < 0)
			return;
	} else {
		k->cls = HFTPF_PKT_NON_L4;
		return;
	}
	pi->l4proto = proto;
	set_payload(c, pi);
	k->cls = HFTPF_PKT_OTHER_L4;
	__u32 zero = 0;
	struct hftpf_config *cfg = hftpf_config.lookup(&zero);
	k->cfg_flags = cfg ? cfg->flags : (HFTPF_CFG_VENUE_TRIE | HFTPF_CFG_ALLOW_TRIE);
	k->mode = cfg ? cfg->mode : HFTPF_MODE_MONITOR;
	k->tai_minus_utc = cfg ? cfg->tai_minus_utc_ns : 0;
	k->allow_gen = cfg ? cfg->allow_gen : 0;
	/* Ports first: two array lookups reject most non-venue traffic before any host lookup. */
	struct hftpf_port_info *dpi = port_info(k->transport, pi->dport);
	struct hftpf_port_info *spi = port_info(k->transport, pi->sport);
	k->dport_info = dpi;
	__u64 dports = dpi ? dpi->venue_mask : 0;
	__u64 ports = dports | (spi ? spi->venue_mask : 0);
	k->stream_slot = dpi ? dpi->stream_slot : 0;
	if (k->stream_slot && !(ports & (ports - 1))) {
		/* A feed port with a stream slot whose key names the venue's own host: when the packet goes
		 * to that host and the ports name no other venue, that venue is the answer whatever the host
		 * tables say (the agent writes a slot's key only with one of its venue's exact hosts), so
		 * the ~30 ns host lookup is not needed. */
		__u32 slot = k->stream_slot;
		struct hftpf_stream_state *ss = hftpf_stream_slots.lookup(&slot);
		__u32 v = ss ? ss->key.venue : 0;
		if (v && v <= HFTPF_MAX_VENUES && ports == 1ULL << (v - 1) && addr_eq(ss->key.daddr, pi->daddr)) {
			k->venue = v;
			k->cls = HFTPF_PKT_VENUE;
			return;
		}
	}
	if (ports) {
		/* The venue is the lowest bit of ports & (hosts of saddr | hosts of daddr). Each host lookup
		 * costs ~30 ns, so look up first the address beside the venue port (a feed's group, the
		 * exchange of an order session) and skip the other when the first already holds the lowest
		 * bit ports allow: no answer from the second could then change the result. */
		__u8 *first = dports ? pi->daddr : pi->saddr;
		__u8 *second = dports ? pi->saddr : pi->daddr;
		__u64 match = ports & host_set(first, k->cfg_flags);
		if (!(match & ports & -ports))
			match |= ports & host_set(second, k->cfg_flags);
		if (match) {
			k->venue = lowest_bit(match) + 1;
			k->cls = HFTPF_PKT_VENUE;
		}
	}
}

/* Connection setup (SYN flood / port scan input): 1 + enum hftpf_conn_kind, or 0. A SYN is always
 * reported; a pure ACK or an RST only when its 4-tuple is a half-open connection the probe saw
 * start (one hash lookup, and only for packets with no payload or with RST set). */
static __always_inline __u32 conn_kind(struct pkt_info *pi)
{
	__u8 f = pi->tcp_flags;
	if ((f & (HFTPF_TCP_SYN | HFTPF_TCP_ACK)) == HFTPF_TCP_SYN)
		return 1 + HFTPF_CONN_SYN;
	int rst = f & HFTPF_TCP_RST;
	if (!rst && !(f == HFTPF_TCP_ACK && pi->payload_len == 0))
		return 0;
	struct hftpf_flow_key key;
	flow_key_of(pi, &key);
	if (!hftpf_half_open.lookup(&key))
		return 0;
	return 1 + (rst ? HFTPF_CONN_RESET : HFTPF_CONN_ESTABLISHED);
}

static __always_inline void conn_event(struct pkt_info *pi, __u32 conn, __u32 venue, __u32 verdict, __u64 now,
				       struct hftpf_probe_stats *ps)
{
	struct hftpf_flow_key key;
	flow_key_of(pi, &key);
	if (conn == 1 + HFTPF_CONN_SYN)
		hftpf_half_open.update(&key, &now);
	else
		hftpf_half_open.delete(&key);
	struct hftpf_ev_conn *ev = hftpf_events.ringbuf_reserve(sizeof(*ev));
	ring_submitted(ps, ev != 0);
	if (!ev)
		return;
	event_hdr(&ev->hdr, HFTPF_EV_CONN, sizeof(*ev), now);
	__builtin_memcpy(ev->saddr, pi->saddr, 16);
	__builtin_memcpy(ev->daddr, pi->daddr, 16);
	ev->sport = pi->sport;
	ev->dport = pi->dport;
	ev->kind = conn - 1;
	ev->tcp_flags = pi->tcp_flags;
	ev->venue = venue;
	ev->verdict = verdict;
	ev->pad0 = 0;
	hftpf_events.ringbuf_submit(ev, 0);
}

int hftpf_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	struct cursor c = { .pos = data, .end = data_end, .start = data, .frame_len = bytes };
	struct pkt_info pi = {};
	struct classified k = {};
	__u32 verdict = HFTPF_VERDICT_PASS;
	__u32 reason = HFTPF_REASON_NONE;
	int observe = 0;

	classify(&c, data, &pi, &k);
	if (k.cls != HFTPF_PKT_VENUE && k.cls != HFTPF_PKT_OTHER_L4)
		goto out;

	/* Allow-list: only packets TO a protected port are judged; PTP always passes. */
	struct hftpf_port_info *dpi = k.dport_info;
	if (dpi && (dpi->flags & HFTPF_PORT_PROTECTED) &&
	    !(k.transport == HFTPF_TRANSPORT_UDP &&
	      (pi.dport == HFTPF_PTP_EVENT_PORT || pi.dport == HFTPF_PTP_GENERAL_PORT))) {
		reason = allow_decide(&pi, pi.l4proto, bytes, k.cfg_flags, k.allow_gen);
		if (reason != HFTPF_REASON_NONE) {
			struct hftpf_drop_counter *dc = hftpf_drop_stats.lookup(&reason);
			if (k.mode == HFTPF_MODE_ENFORCE) {
				verdict = HFTPF_VERDICT_DROP;
				if (dc) {
					dc->dropped_packets++;
					dc->dropped_bytes += bytes;
				}
				goto out;
			} else if (dc) {
				dc->would_drop_packets++;
				dc->would_drop_bytes += bytes;
			}
		}
	}

	/* The verdict is final. What follows only observes, in a second program reached by a tail call:
	 * verified on its own, it keeps each program inside the kernel's complexity limit. */
	if (k.cls == HFTPF_PKT_VENUE)
		observe = 1;

out:
	/* The single exit: every packet is counted once by class, once by verdict and once by venue
	 * (venue 0 collects IP traffic of no venue as well as everything unparsed). */
	count(hftpf_pkt_stats.lookup(&k.cls), bytes);
	count(hftpf_verdict_stats.lookup(&verdict), bytes);
	count(hftpf_venue_stats.lookup(&k.venue), bytes);
	__u32 conn = 0;
	if (k.transport == HFTPF_TRANSPORT_TCP && (k.cls == HFTPF_PKT_VENUE || k.cls == HFTPF_PKT_OTHER_L4))
		conn = conn_kind(&pi);
	if ((observe && verdict == HFTPF_VERDICT_PASS) || conn) {
		__u32 zero = 0;
		struct hftpf_scratch *sc = hftpf_scratch.lookup(&zero);
		if (sc) {
			sc->pi = pi;
			sc->venue = k.venue;
			sc->transport = k.transport;
			sc->tai_minus_utc = k.tai_minus_utc;
			sc->observe = observe && verdict == HFTPF_VERDICT_PASS;
			sc->conn = conn;
			sc->verdict = verdict;
			sc->stream_slot = k.stream_slot;
			hftpf_progs.call(ctx, HFTPF_TAIL_XDP_OBSERVE);
		}
	}
	return verdict == HFTPF_VERDICT_DROP ? XDP_DROP : XDP_PASS;
}

/* Reached by tail call from hftpf_xdp for venue packets that pass and for connection-setup packets
 * (any verdict), on the same CPU, with the parse results in hftpf_scratch. Returns the verdict
 * hftpf_xdp decided; nothing here changes it. */
int hftpf_xdp_observe(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct hftpf_scratch *sc = hftpf_scratch.lookup(&zero);
	if (!sc)
		return XDP_PASS;
	int ret = sc->verdict == HFTPF_VERDICT_DROP ? XDP_DROP : XDP_PASS;
	struct pkt_info pi = sc->pi;
	__u32 venue = sc->venue;
	__u64 now = hftpf_now();
	struct hftpf_probe_stats *ps = probe_stats();
	if (sc->conn)
		conn_event(&pi, sc->conn, venue, sc->verdict, now, ps);
	if (!sc->observe)
		return ret;
	struct hftpf_venue_info *vi = hftpf_venue_info.lookup(&venue);
	if (!vi)
		return ret;
	if (sc->transport == HFTPF_TRANSPORT_UDP) {
		if (vi->seq_proto) {
			/* bound the variable offset well below MAX_PACKET_OFF (0xffff) so the verifier can
			 * track the header reads after it; no frame here has headers past 16 KiB */
			__u32 off = pi.payload_off & 0x3fff;
			struct cursor c = { .pos = data + off, .end = data_end, .start = data,
					    .frame_len = data_end - data };
			if (c.pos <= c.end)
				track_feed(&pi, &c, venue, vi->seq_proto, sc->stream_slot, now, sc->tai_minus_utc, vi->midnight_ns, ps);
		}
		if (vi->flags & HFTPF_VENUE_PAYLOADS)
			payload_event(ctx, 1, &pi, venue, HFTPF_DIR_INGRESS, now, ps);
	} else if (vi->stream_kind == HFTPF_STREAM_ORDER_ENTRY) {
		rtt_match(&pi, venue, now, ps);
		payload_event(ctx, 1, &pi, venue, HFTPF_DIR_INGRESS, now, ps);
	}
	return XDP_PASS;
}

int hftpf_tc_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct cursor c = { .pos = data, .end = data_end, .start = data, .frame_len = skb->len };
	struct pkt_info pi = {};
	struct classified k = {};

	classify(&c, data, &pi, &k);
	if (k.cls == HFTPF_PKT_VENUE) {
		__u32 venue = k.venue;
		/* Kill switch: decided first, before any stamp or event, like the ingress verdict. */
		struct hftpf_kill *ks = hftpf_kill.lookup(&venue);
		if (!(ks && ks->engaged) && (k.cfg_flags & HFTPF_CFG_KILL_FLOWS)) {
			struct hftpf_flow_key fk = {};
			flow_key_of(&pi, &fk);
			ks = hftpf_kill_flows.lookup(&fk);
		}
		if (ks && ks->engaged) {
			if (!ks->first_drop_ns)
				ks->first_drop_ns = hftpf_now();
			__sync_fetch_and_add(&ks->dropped_packets, 1);
			__sync_fetch_and_add(&ks->dropped_bytes, skb->len);
			__u32 r = HFTPF_REASON_KILL_SWITCH;
			struct hftpf_drop_counter *dc = hftpf_drop_stats.lookup(&r);
			if (dc) {
				dc->dropped_packets++;
				dc->dropped_bytes += skb->len;
			}
			return 2; /* TC_ACT_SHOT */
		}
		count(hftpf_venue_tx.lookup(&venue), skb->len);
		struct hftpf_venue_info *vi = hftpf_venue_info.lookup(&venue);
		if (vi && k.transport == HFTPF_TRANSPORT_TCP && vi->stream_kind == HFTPF_STREAM_ORDER_ENTRY) {
			__u64 now = hftpf_now();
			struct hftpf_probe_stats *ps = probe_stats();
			rtt_stamp(&pi, venue, now, ps);
			payload_event(skb, 0, &pi, venue, HFTPF_DIR_EGRESS, now, ps);
		}
	} else {
		__u32 none = 0;
		count(hftpf_venue_tx.lookup(&none), skb->len);
	}
	return 0; /* TC_ACT_OK */
}
