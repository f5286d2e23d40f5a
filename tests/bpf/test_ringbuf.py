"""RingReader against a real BPF ring buffer (root): a tiny XDP program, driven by
BPF_PROG_TEST_RUN, reserves records of odd sizes (28, 37, 53 bytes: 40, 48 and 64 bytes in the ring
with header and padding), discards some, submits the rest and counts every attempt, reserve failure,
submit, discard and the sum of submitted sequence numbers in a per-CPU array. The ring is one page,
so a stalled consumer fills it within one run and records wrap around the end of the data area."""
import ctypes
import struct
import threading
import time

import pytest

from hft_packetfilter.kernel import bpfsys
from hft_packetfilter.kernel.ringbuf import PAGE_SIZE, RingBufError, RingReader

PROG = r"""
#include <uapi/linux/bpf.h>

#ifndef RB_PAGES
#define RB_PAGES 1
#endif
#ifndef MAX_PER_RUN
#define MAX_PER_RUN 64
#endif

BPF_RINGBUF_OUTPUT(events, RB_PAGES);
/* 0 attempts, 1 reserve failures, 2 submitted, 3 discarded, 4 sum of submitted seqs */
BPF_PERCPU_ARRAY(stats, u64, 5);
BPF_ARRAY(seqctr, u64, 1);

struct rec {            /* the common event header, then our fields; 28 bytes used */
	u16 type;
	u16 len;
	u32 cpu;
	u64 ts_ns;
	u64 seq;
	u32 pkt_len;
};

struct cmd {
	u32 count;          /* records to attempt in this run (<= MAX_PER_RUN) */
	u32 discard_every;  /* 0: none; k: discard seq % k == k - 1 */
};

static __always_inline void bump(int idx, u64 v)
{
	u64 *p = stats.lookup(&idx);
	if (p)
		*p += v;
}

static __always_inline void emit(u64 seq, u32 pkt_len, int discard, const u32 sz, u16 type)
{
	struct rec *r = events.ringbuf_reserve(sz);
	if (!r) {
		bump(1, 1);
		return;
	}
	r->type = type;
	r->len = sz;
	r->cpu = bpf_get_smp_processor_id();
	r->ts_ns = bpf_ktime_get_ns();
	r->seq = seq;
	r->pkt_len = pkt_len;
	u8 *b = (u8 *)r;
#pragma unroll
	for (u32 j = 28; j < sz; j++)
		b[j] = (u8)(seq + j);
	if (discard) {
		events.ringbuf_discard(r, 0);
		bump(3, 1);
	} else {
		events.ringbuf_submit(r, 0);
		bump(2, 1);
		bump(4, seq);
	}
}

int rb_test(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct cmd *c = data;
	if ((void *)(c + 1) > data_end)
		return XDP_ABORTED;
	u32 count = c->count, every = c->discard_every;
	u32 pkt_len = data_end - data;
	int zero = 0;
	u64 *ctr = seqctr.lookup(&zero);
	if (!ctr)
		return XDP_ABORTED;
#pragma clang loop unroll(disable)
	for (u32 i = 0; i < MAX_PER_RUN; i++) {
		if (i >= count)
			break;
		u64 seq = *ctr;
		*ctr = seq + 1;
		bump(0, 1);
		int discard = every && (seq % every) == every - 1;
		switch (seq % 3) {
		case 0: emit(seq, pkt_len, discard, 28, 1); break;
		case 1: emit(seq, pkt_len, discard, 37, 2); break;
		default: emit(seq, pkt_len, discard, 53, 3); break;
		}
	}
	return XDP_PASS;
}
"""

RB_PAGES = 1
MAX_PER_RUN = 64
SIZES = {0: 28, 1: 37, 2: 53}   # by seq % 3, as the program picks them
TYPES = {0: 1, 1: 2, 2: 3}
ATTEMPTS, FAILS, SUBMITTED, DISCARDED, SEQ_SUM = range(5)
HDR = struct.Struct("<HHIQ")      # the common event header: type, len, cpu, ts_ns
BODY = struct.Struct("<QI")       # seq, packet length


def total(n: int) -> int:
    return (n + 8 + 7) & ~7


class Harness:
    def __init__(self, b, fn):
        self.b, self.fn = b, fn
        self.ring_fd = b.get_table(b"events").map_fd
        self.stats = bpfsys.Map(b.get_table(b"stats").map_fd, ctypes.c_uint32, ctypes.c_uint64, "stats",
                                owns_fd=False)
        self.seqctr = bpfsys.Map(b.get_table(b"seqctr").map_fd, ctypes.c_uint32, ctypes.c_uint64, "seqctr",
                                 owns_fd=False)

    def packet(self, count: int, discard_every: int) -> bytes:
        return struct.pack("<II", count, discard_every) + bytes(56)

    def run(self, count: int, discard_every: int = 0, repeat: int = 1) -> None:
        assert count <= MAX_PER_RUN
        r = bpfsys.prog_test_run(self.fn.fd, self.packet(count, discard_every), repeat=repeat)
        assert r["retval"] == 2  # XDP_PASS

    def counters(self):
        return [sum(v.value for v in self.stats.lookup(i)) for i in range(5)]

    def next_seq(self) -> int:
        return self.seqctr.lookup(0).value


def decode(buf, recs, pkt_len=64):
    """Check every record's bytes; return the sequence numbers in delivery order."""
    seqs = []
    for off, n in recs:
        typ, ln, cpu, ts = HDR.unpack_from(buf, off)
        seq, plen = BODY.unpack_from(buf, off + 16)
        assert n == ln == SIZES[seq % 3] and typ == TYPES[seq % 3] and plen == pkt_len, (off, n, seq)
        assert ts > 0
        assert bytes(buf[off + 28:off + n]) == bytes((seq + j) & 0xFF for j in range(28, n)), seq
        seqs.append(seq)
    return seqs


def delta(before, after):
    return [a - b for a, b in zip(after, before)]


def discarded(seq: int, every: int) -> bool:
    return bool(every) and seq % every == every - 1


def simulate(first_seq: int, attempts: int, every: int, prod: int, cons: int, size: int):
    """The kernel's reserve rule with a consumer that does not move: a record of `t` bytes fits when
    the producer stays within size - 1 bytes of the consumer. Returns the seqs that get delivered."""
    out = []
    for seq in range(first_seq, first_seq + attempts):
        t = total(SIZES[seq % 3])
        if prod + t - cons > size - 1:
            continue  # reserve fails
        prod += t
        if not discarded(seq, every):
            out.append(seq)
    return out


@pytest.fixture(scope="module")
def rb(needs_kernel):
    from bcc import BPF

    b = BPF(text=PROG.encode(), cflags=[f"-DRB_PAGES={RB_PAGES}", f"-DMAX_PER_RUN={MAX_PER_RUN}"])
    try:
        yield Harness(b, b.load_func(b"rb_test", BPF.XDP))
    finally:
        b.cleanup()


@pytest.fixture
def reader(rb):
    r = RingReader(rb.ring_fd)
    r.drain()  # whatever an earlier test left behind
    assert r.pending() == 0
    yield r
    r.close()


def test_reader_sees_the_map(rb, reader):
    assert reader.size == RB_PAGES * PAGE_SIZE and reader.mask == reader.size - 1


def test_every_submitted_record_once_in_order_discarded_never(rb, reader):
    before, s0 = rb.counters(), rb.next_seq()
    rb.run(20, discard_every=4, repeat=3)
    buf, recs = reader.drain()
    d = delta(before, rb.counters())
    want = [s for s in range(s0, s0 + 60) if not discarded(s, 4)]
    assert decode(buf, recs) == want
    assert d[ATTEMPTS] == 60 and d[FAILS] == 0 and d[DISCARDED] == 15 and d[SUBMITTED] == 45
    assert d[SEQ_SUM] == sum(want)
    assert (reader.records, reader.discarded) == (45, 15)
    assert reader.pending() == 0 and reader.drain() == (b"", [])


def test_stalled_consumer_every_loss_counted(rb, reader):
    """Attempts far beyond the ring's capacity while nobody drains, then a drain, then more: the
    delivered records are exactly those the kernel could reserve, and delivered + discarded +
    reserve failures == attempts."""
    delivered = []
    attempts = 0
    before = rb.counters()
    for _ in range(3):
        s0, prod, cons = rb.next_seq(), reader.pos + reader.pending(), reader.pos
        rb.run(MAX_PER_RUN, discard_every=7, repeat=10)
        attempts += 10 * MAX_PER_RUN
        want = simulate(s0, 10 * MAX_PER_RUN, 7, prod, cons, reader.size)
        assert reader.pending() > reader.size - 64  # the ring is (nearly) full
        buf, recs = reader.drain()
        got = decode(buf, recs)
        assert got == want
        delivered += got
    d = delta(before, rb.counters())
    assert d[ATTEMPTS] == attempts
    assert d[FAILS] > 2 * attempts // 3  # most attempts found the ring full
    assert len(delivered) == d[SUBMITTED] and sum(delivered) == d[SEQ_SUM]
    assert len(delivered) + d[DISCARDED] + d[FAILS] == attempts
    assert delivered == sorted(set(delivered))


def test_records_wrapping_the_data_area_decode(rb, reader):
    """Small batches of odd-sized records, drained after each run, for several laps of the ring:
    many records straddle the end of the data area and still read back byte for byte."""
    s0 = rb.next_seq()
    got, straddled = [], 0
    while reader.consumed < 8 * reader.size:
        start = reader.pos
        rb.run(7, discard_every=5)
        buf, recs = reader.drain()
        got += decode(buf, recs)
        for off, n in recs:
            at = (start + off - 8) & reader.mask
            straddled += at + total(n) > reader.size
    assert got == [s for s in range(s0, rb.next_seq()) if not discarded(s, 5)]
    assert straddled >= 3  # about one per lap (a lap may end exactly on the boundary)


def test_max_records_leaves_the_rest(rb, reader):
    s0 = rb.next_seq()
    rb.run(10)
    buf, recs = reader.drain(max_records=3)
    assert decode(buf, recs) == [s0, s0 + 1, s0 + 2] and reader.pending() > 0
    buf, recs = reader.drain()
    assert decode(buf, recs) == list(range(s0 + 3, s0 + 10))


def test_wait_times_out_when_empty_and_wakes_on_submit(rb, reader):
    t = time.monotonic()
    assert reader.wait(30) is False
    assert time.monotonic() - t >= 0.02
    th = threading.Timer(0.05, rb.run, args=(3,))
    th.start()
    try:
        t = time.monotonic()
        assert reader.wait(5000) is True
        assert time.monotonic() - t < 2.0  # woken by the kernel, not by the timeout
    finally:
        th.join()
    assert len(reader.drain()[1]) == 3
    assert reader.wait(0) is False


def test_not_a_ring_buffer(rb):
    with pytest.raises(RingBufError):
        RingReader(rb.stats.fd)
