#!/usr/bin/env python3
"""Drain rate of our mmap RingReader against BCC's ring_buffer_poll with a Python callback, on the
same BPF ring buffer, the same program and the same number of events in the same run (root).

A tiny XDP program, run by BPF_PROG_TEST_RUN with `repeat`, submits 64 fixed-size events per run
(the 16-byte common header {u16 type, u16 len, u32 cpu, u64 ts_ns} + a sequence number + a value)
into a BPF_RINGBUF_OUTPUT map while nobody drains, so the ring holds --events records. Then one
consumer drains it all and is timed; the ring is refilled and the other consumer drains it. Both
decode the common header of every record with one struct.Struct (ours: unpack_from over the batch
buffer; BCC: unpack_from over ctypes.string_at(data, size) inside its callback, the cheapest
honest callback). Every timed drain must return exactly the number of events the program submitted
(reserve failures are counted by the program and must be zero), and one untimed drain per mode
checks that our batches carry every sequence number sent.
Comparisons printed: "ringbuf_drain" (RingReader.drain(): (offset, length) pairs, + header decode),
"ringbuf_drain_offsets" (RingReader.drain_offsets(): offsets only, the length being in each event's
header, + header decode), both against the decoding BCC callback, and "ringbuf_drain_nodecode"
(draining alone: our drain() against a BCC callback that only counts).

    sudo .venv/bin/python tools/bench/ringbuf.py [--events 300000] [--rounds 5] [--json]

Each figure is the median over --rounds rounds, in events/s (higher is better).
"""
import argparse
import ctypes
import json
import os
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent"))

PER_RUN = 64
PROG = r"""
#include <uapi/linux/bpf.h>

BPF_RINGBUF_OUTPUT(events, RB_PAGES);
BPF_PERCPU_ARRAY(stats, u64, 3);   /* 0 submitted, 1 reserve failures, 2 sum of seqs submitted */
BPF_ARRAY(seqctr, u64, 1);

struct ev {
	u16 type;
	u16 len;
	u32 cpu;
	u64 ts_ns;
	u64 seq;
	u64 value;
	u8 pad[REC_SIZE - 32];
};

static __always_inline void bump(int idx, u64 v)
{
	u64 *p = stats.lookup(&idx);
	if (p)
		*p += v;
}

int rb_bench(struct xdp_md *ctx)
{
	int zero = 0;
	u64 *ctr = seqctr.lookup(&zero);
	if (!ctr)
		return XDP_ABORTED;
	u32 plen = ctx->data_end - ctx->data;
#pragma clang loop unroll(disable)
	for (u32 i = 0; i < PER_RUN; i++) {
		u64 seq = *ctr;
		*ctr = seq + 1;
		struct ev *e = events.ringbuf_reserve(sizeof(struct ev));
		if (!e) {
			bump(1, 1);
			continue;
		}
		e->type = 1;
		e->len = sizeof(struct ev);
		e->cpu = bpf_get_smp_processor_id();
		e->ts_ns = bpf_ktime_get_ns();
		e->seq = seq;
		e->value = plen;
		events.ringbuf_submit(e, 0);  /* adaptive wakeup, as the probe does */
		bump(0, 1);
		bump(2, seq);
	}
	return XDP_PASS;
}
"""
HDR = struct.Struct("<HHIQ")
SEQ = struct.Struct("<Q")


class Bench:
    """One loaded program + ring; `decode` picks the BCC callback (decode the header, or count)."""

    def __init__(self, ring_pages: int, rec_size: int, decode: bool):
        from bcc import BPF

        from hft_packetfilter.kernel import bpfsys

        self.bpfsys, self.decode = bpfsys, decode
        self.b = BPF(text=PROG.encode(), cflags=[f"-DRB_PAGES={ring_pages}", f"-DREC_SIZE={rec_size}",
                                                 f"-DPER_RUN={PER_RUN}"])
        self.fn = self.b.load_func(b"rb_bench", BPF.XDP)
        self.table = table = self.b.get_table(b"events")  # holds the ctypes callback: keep it alive
        self.ring_fd = table.map_fd
        self.stats = bpfsys.Map(self.b.get_table(b"stats").map_fd, ctypes.c_uint32, ctypes.c_uint64, "stats",
                                owns_fd=False)
        self.pkt = bytes(64)
        self.bcc_count = 0
        unpack = HDR.unpack_from

        if decode:
            def cb(ctx, data, size):
                typ, ln, cpu, ts = unpack(ctypes.string_at(data, size), 0)
                self.bcc_count += 1
                return 0
        else:
            def cb(ctx, data, size):
                self.bcc_count += 1
                return 0
        table.open_ring_buffer(cb)

    def counters(self):
        return [sum(v.value for v in self.stats.lookup(i)) for i in range(3)]

    def fill(self, runs: int):
        """Submit runs * PER_RUN events with nobody draining; returns (events, seq sum)."""
        before = self.counters()
        self.bpfsys.prog_test_run(self.fn.fd, self.pkt, repeat=runs)
        after = self.counters()
        if after[1] != before[1]:
            raise RuntimeError(f"{after[1] - before[1]} reserve failures while filling: ring too small")
        return after[0] - before[0], after[2] - before[2]

    def ours(self, api: str):
        """Drain everything with RingReader, timed; returns (events, seconds). api: "drain" (pairs of
        offset and length) or "drain_offsets" (offsets; the length is in each event's header)."""
        from hft_packetfilter.kernel.ringbuf import RingReader

        # A fresh reader per round: it starts at the consumer position BCC's consumer left behind.
        with RingReader(self.ring_fd) as r:
            n = 0
            unpack = HDR.unpack_from
            decode = self.decode
            t0 = time.perf_counter()
            if api == "drain":
                while True:
                    buf, recs = r.drain()
                    if not recs:
                        break
                    if decode:
                        for off, _ in recs:
                            typ, ln, cpu, ts = unpack(buf, off)
                    n += len(recs)
            else:
                while True:
                    buf, offs = r.drain_offsets()
                    if not offs:
                        break
                    if decode:
                        for off in offs:
                            typ, ln, cpu, ts = unpack(buf, off)
                    n += len(offs)
            return n, time.perf_counter() - t0

    def ours_checked(self):
        """An untimed drain that sums the sequence numbers: proves the batches carry what was sent."""
        from hft_packetfilter.kernel.ringbuf import RingReader

        with RingReader(self.ring_fd) as r:
            n = s = 0
            while True:
                buf, recs = r.drain()
                if not recs:
                    return n, s
                for off, ln in recs:
                    if HDR.unpack_from(buf, off)[1] != ln:
                        raise RuntimeError(f"record length {ln} != header len {HDR.unpack_from(buf, off)[1]}")
                    s += SEQ.unpack_from(buf, off + 16)[0]
                n += len(recs)

    def peer(self, expect: int):
        """Drain everything with BCC's ring_buffer_poll, timed; returns (events, seconds)."""
        self.bcc_count = 0
        t0 = time.perf_counter()
        while self.bcc_count < expect:
            before = self.bcc_count
            self.b.ring_buffer_poll(0)   # epoll_wait(0) + drain every ready ring (returns None in 0.26)
            if self.bcc_count == before:
                break
        return self.bcc_count, time.perf_counter() - t0

    def close(self):
        self.b.cleanup()


def run_mode(bench: Bench, apis, runs: int, rounds: int, log):
    """Median events/s of each of our APIs and of BCC, alternating consumers round by round."""
    n, ssum = bench.fill(runs)
    got = bench.ours_checked()
    if got != (n, ssum):
        raise RuntimeError(f"ours delivered {got[0]} events (seq sum {got[1]}), expected {n} ({ssum})")
    rates = {api: [] for api in apis}
    rates["bcc"] = []
    for rnd in range(rounds):
        for api in apis:
            n, _ = bench.fill(runs)
            got, dt = bench.ours(api)
            if got != n:
                raise RuntimeError(f"ours ({api}) drained {got} of {n} events")
            rates[api].append(n / dt)
        n, _ = bench.fill(runs)
        got, dt = bench.peer(n)
        if got != n:
            raise RuntimeError(f"bcc drained {got} of {n} events")
        rates["bcc"].append(n / dt)
        log(f"  round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} ev/s" for k, v in rates.items()))
    return {k: statistics.median(v) for k, v in rates.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000, help="events per drain (default 300,000)")
    ap.add_argument("--record-size", type=int, default=32,
                    help="bytes per event incl. the 16-byte common header, multiple of 8, >= 32 (default 32)")
    ap.add_argument("--rounds", type=int, default=5, help="drains per figure and consumer; the median is printed")
    ap.add_argument("--quick", action="store_true", help="small run to prove the benchmark works (CI)")
    ap.add_argument("-j", "--json", action="store_true", help="one JSON object per comparison")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("ringbuf bench: needs root (BPF_PROG_TEST_RUN)")
    if a.record_size < 32 or a.record_size % 8:
        sys.exit("ringbuf bench: --record-size must be a multiple of 8 and at least 32")
    try:
        import bcc  # noqa: F401
    except ImportError:
        sys.exit("ringbuf bench: the bcc module is needed to load the test program (python3-bpfcc)")
    if a.quick:
        a.events, a.rounds = 20_000, 1
    runs = max(1, a.events // PER_RUN)
    events = runs * PER_RUN
    need = events * (a.record_size + 8) + 8   # each record: 8-byte ring header + the event
    pages = 1
    while pages * 4096 < need:
        pages *= 2
    log = (lambda s: print(s, file=sys.stderr)) if a.json else print

    rows = []
    modes = [("ringbuf_drain", True, "drain"), ("ringbuf_drain_offsets", True, "drain_offsets"),
             ("ringbuf_drain_nodecode", False, "drain")]
    for decode in (True, False):
        log(f"{'drain + header decode' if decode else 'drain only'}: {events:,} events of {a.record_size} "
            f"bytes, ring {pages * 4 // 1024 if pages >= 256 else pages * 4} {'MiB' if pages >= 256 else 'KiB'}")
        apis = [api for _, d, api in modes if d == decode]
        bench = Bench(pages, a.record_size, decode)
        try:
            med = run_mode(bench, apis, runs, a.rounds, log)
        finally:
            bench.close()
        for name, d, api in modes:
            if d != decode:
                continue
            rows.append({"bench": name, "unit": "events/s", "ours": round(med[api]), "peer": "bcc ring_buffer_poll",
                         "peer_value": round(med["bcc"]), "ratio": round(med[api] / med["bcc"], 2),
                         "better": "higher", "api": f"RingReader.{api}", "events": events,
                         "record_bytes": a.record_size,
                         "decode": "16-byte common header, struct.Struct.unpack_from" if decode else "none"})
    for row in rows:
        if a.json:
            print(json.dumps(row))
        else:
            print(f"{row['bench']:<24} ours {row['ours']:>12,} ev/s  bcc {row['peer_value']:>12,} ev/s  "
                  f"ratio {row['ratio']:.2f}")


if __name__ == "__main__":
    main()
