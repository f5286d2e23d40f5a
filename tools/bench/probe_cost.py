#!/usr/bin/env python3
"""Per-packet cost of the full ingress probe on market-data frames, against xdp-filter's allow-list
on the same frames, both under BPF_PROG_TEST_RUN in the same run (root).

Ours, per frame: parse + venue classification + allow-list (the feed port protected, the publisher
allowed) + per-CPU counters + tail call to the observer + one clock read + sequence check + (MDP3)
the exchange-time latency histogram. xdp-filter: `load --policy deny` with the publisher allowed by
source address (tools/bench/allowlist.py sets it up the same way).

Two figures per feed. `<feed>`: every packet in sequence, the common case on a live feed. A test run
repeats one frame, so a tiny driver program (DRIVER below) adds one to the frame's sequence number in
place and tail-calls ours: the frame persists across the repeats, so each run sees the next sequence
number. The driver's own cost (~5 ns: a load, a store, a tail call) is left in our figure, and the
bench checks afterwards that the stream saw no duplicate and no gap. `<feed>-dup`: the same frame
unchanged, a duplicate after the first, the sequence check's slow (locked) path.

    sudo .venv/bin/python tools/bench/probe_cost.py [--repeat 1000000] [--json]

Also prints the ring-buffer drain rate of our mmap consumer against BCC's ring_buffer_poll
(tools/bench/ringbuf.py) when --with-ringbuf is given. Target: full probe <= 1.5x xdp-filter.
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "agent"))
sys.path.insert(0, str(HERE))

PUBLISHER = "198.51.100.7"
GROUPS = {"moldudp64": ("233.252.0.1", 26400), "mdp3": ("233.252.0.2", 14310)}


def frame(dst: str, dport: int, payload: bytes) -> bytes:
    import socket

    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(PUBLISHER),
                     socket.inet_aton(dst))
    return bytes.fromhex("01005e000001020000000001") + b"\x08\x00" + ip + udp


def frames():
    mold = b"BENCHSESS1" + struct.pack("!QH", 1, 1) + struct.pack("!H", 12) + b"S" + bytes(11)
    mdp3 = struct.pack("<IQ", 2, time.time_ns()) + bytes(40)  # MsgSeqNum 1 would be a channel reset
    return {"moldudp64": frame(*GROUPS["moldudp64"], mold), "mdp3": frame(*GROUPS["mdp3"], mdp3)}


# Offsets in the frames above: Ethernet 14 + IPv4 20 + UDP 8 = 42, then the feed header.
DRIVER = r"""
BPF_PROG_ARRAY(bench_next, 1);

static __always_inline int bump(struct xdp_md *ctx, int off, int wide)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *p = data + off;
	if ((void *)(p + 8) > end)
		return XDP_ABORTED;
	if (wide) { /* MoldUDP64: u64 big-endian */
		__u64 v;
		__builtin_memcpy(&v, p, 8);
		v = __builtin_bswap64(__builtin_bswap64(v) + 1);
		__builtin_memcpy(p, &v, 8);
	} else {    /* MDP3: u32 little-endian */
		__u32 v;
		__builtin_memcpy(&v, p, 4);
		v += 1;
		__builtin_memcpy(p, &v, 4);
	}
	bench_next.call(ctx, 0);
	return XDP_ABORTED;
}
int bench_moldudp64(struct xdp_md *ctx) { return bump(ctx, 42 + 10, 1); }
int bench_mdp3(struct xdp_md *ctx) { return bump(ctx, 42, 0); }
"""


def with_seq(name, f, seq):
    """The frame with its sequence number set: the driver adds one before each run, so the first run
    sees seq + 1."""
    if name == "moldudp64":
        return f[:52] + struct.pack("!Q", seq - 1) + f[60:]
    return f[:42] + struct.pack("<I", seq - 1) + f[46:]


def in_order_driver(target_fd):
    """The driver programs, their tail call pointed at target_fd: (bpf object, {feed: prog fd})."""
    import ctypes

    from bcc import BPF

    b = BPF(text=DRIVER)
    fds = {name: b.load_func(f"bench_{name}".encode(), BPF.XDP).fd for name in GROUPS}
    b.get_table(b"bench_next")[ctypes.c_int(0)] = ctypes.c_int(target_fd)
    return b, fds


def ours(fr, repeat, rounds):
    from hft_packetfilter import allowlist as al, config
    from hft_packetfilter.kernel.bpfsys import prog_test_run
    from hft_packetfilter.kernel.loader import Probe

    cfg = config.loads(f"""
exchanges:
  - {{name: ITCH, host: {GROUPS['moldudp64'][0]}, ports: [{GROUPS['moldudp64'][1]}], protocol: ITCH/MoldUDP64}}
  - {{name: CME, host: {GROUPS['mdp3'][0]}, ports: [{GROUPS['mdp3'][1]}], protocol: MDP3/UDP}}
""")
    rs = al.RuleSet()
    rs.add("allow", PUBLISHER + "/32", "udp")
    rs.protect += [("udp", (GROUPS["moldudp64"][1],) * 2), ("udp", (GROUPS["mdp3"][1],) * 2)]
    p = Probe(cfg, "lo", rules=rs, filter_mode="enforce")
    p.load()
    drv, drv_fds = in_order_driver(p.fn.fd)
    try:
        out = {}
        for name, f in fr.items():
            # each test run starts from the frame as given: round r starts where round r - 1 stopped
            runs = [prog_test_run(drv_fds[name], with_seq(name, f, 2 + r * repeat), repeat=repeat)
                    for r in range(rounds)]
            st = stream_state(p, GROUPS[name][1])
            if st.duplicates or st.gaps or st.messages != st.packets:
                sys.exit(f"probe_cost bench: the {name} driver did not feed in order ({st.packets} packets, "
                         f"{st.messages} messages, {st.duplicates} duplicates, {st.gaps} gaps)")
            out[name] = (statistics.median(r["duration_ns"] for r in runs), runs[0]["retval"])
            # the same frame repeated: a duplicate after the first
            runs = [prog_test_run(p.fn.fd, f, repeat=repeat) for _ in range(rounds)]
            out[name + "-dup"] = (statistics.median(r["duration_ns"] for r in runs), runs[0]["retval"])
        return out
    finally:
        drv.cleanup()
        p.detach()


def stream_state(p, port):
    from hft_packetfilter import abi

    for k, st in p.maps.streams():
        if k.dport == port:
            return st
    sys.exit(f"probe_cost bench: no stream for port {port}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small run to prove the benchmark works (CI)")
    ap.add_argument("--with-ringbuf", action="store_true", help="also run tools/bench/ringbuf.py")
    ap.add_argument("-j", "--json", action="store_true")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("probe_cost bench: needs root (BPF_PROG_TEST_RUN)")
    if a.quick:
        a.repeat, a.rounds = 10_000, 1
    import allowlist as al_bench  # tools/bench/allowlist.py: the xdp-filter setup

    fr = frames()
    mine = ours(fr, a.repeat, a.rounds)
    peer, info = al_bench.xdp_filter([PUBLISHER], fr, a.repeat, a.rounds)
    for name in mine:
        ns, ret = mine[name]
        base = name.split("-")[0]
        row = {"bench": f"probe_cost/{name}", "unit": "ns/packet", "ours": ns, "peer": "xdp-filter",
               "peer_value": None, "ratio": None, "better": "lower", "ours_verdict": {1: "drop", 2: "pass"}.get(ret)}
        if peer is None:
            row["reason"] = info
        else:
            row.update(peer_value=peer[base][0], ratio=round(ns / peer[base][0], 3) if peer[base][0] else None,
                       peer_program=info)
        print(json.dumps(row) if a.json else
              f"{row['bench']:<24} ours {ns:.0f} ns  xdp-filter "
              f"{'n/a (' + row['reason'] + ')' if row['peer_value'] is None else str(round(row['peer_value'])) + ' ns'}"
              f"{'' if row['ratio'] is None else '  ratio %.2f' % row['ratio']}")
    if a.with_ringbuf:
        cmd = [sys.executable, str(HERE / "ringbuf.py")] + (["--json"] if a.json else []) + (["--quick"] if a.quick else [])
        subprocess.run(cmd, check=False)


if __name__ == "__main__":
    main()
