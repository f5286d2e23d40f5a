#!/usr/bin/env python3
"""Per-packet cost of the full ingress probe on market-data frames, against xdp-filter's allow-list
on the same frames, both under BPF_PROG_TEST_RUN in the same run (root).

Ours, per frame: parse + venue classification + allow-list (the feed port protected, the publisher
allowed) + per-CPU counters + tail call to the observer + one clock read + sequence check under the
stream's spin lock + (MDP3) the exchange-time latency histogram. xdp-filter: `load --policy deny`
with the publisher allowed by source address (tools/bench/allowlist.py sets it up the same way).

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
    mdp3 = struct.pack("<IQ", 1, time.time_ns()) + bytes(40)
    return {"moldudp64": frame(*GROUPS["moldudp64"], mold), "mdp3": frame(*GROUPS["mdp3"], mdp3)}


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
    try:
        out = {}
        for name, f in fr.items():
            # the same frame repeated: the sequence check sees duplicates after the first, which
            # takes the same locked path as in-order packets (one compare, one increment)
            runs = [prog_test_run(p.fn.fd, f, repeat=repeat) for _ in range(rounds)]
            out[name] = (statistics.median(r["duration_ns"] for r in runs), runs[0]["retval"])
        return out
    finally:
        p.detach()


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
    for name in fr:
        ns, ret = mine[name]
        row = {"bench": f"probe_cost/{name}", "unit": "ns/packet", "ours": ns, "peer": "xdp-filter",
               "peer_value": None, "ratio": None, "better": "lower", "ours_verdict": {1: "drop", 2: "pass"}.get(ret)}
        if peer is None:
            row["reason"] = info
        else:
            row.update(peer_value=peer[name][0], ratio=round(ns / peer[name][0], 3) if peer[name][0] else None,
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
