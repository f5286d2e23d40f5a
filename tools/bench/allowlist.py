#!/usr/bin/env python3
"""Per-packet cost of our allow-list XDP program against Debian's xdp-filter doing the equivalent
allow-list, both under BPF_PROG_TEST_RUN on the same crafted frames in the same run (root).

The policy: N source addresses (default 1,000) may reach protected TCP port 9001; others may not.
Ours: the full ingress program (parse, venue classification, port protection, LPM allow-list,
per-CPU counters, one exit). xdp-filter: `xdp-filter load --policy deny` plus N `ip --mode src`
entries (it has no src+port rules, so the port is not part of its decision: that is in its favour).

    sudo .venv/bin/python tools/bench/allowlist.py [--rules 1000] [--repeat 1000000] [--json]

The kernel's test-run duration is the per-run average over `repeat` runs on one CPU. Each figure is
the median of --rounds rounds. Printed: ns/packet for allowed and unknown sources, and the ratio
ours / xdp-filter (target <= 1.0 at 1,000 rules).
"""
import argparse
import ctypes
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent"))

NS = "hftpf-bench-al"
IF0, IF1 = "hfb-al0", "hfb-al1"
PORT = 9001
DST = "192.0.2.100"


def frame(src: str, dport: int = PORT) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, dport, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + b"8=FIX.4.4\x01"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, socket.inet_aton(src),
                     socket.inet_aton(DST))
    return bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + tcp


def sources(n: int):
    return [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(1, n + 1)]


def measure(fd: int, frames, repeat: int, rounds: int):
    from hft_packetfilter.kernel.bpfsys import prog_test_run

    out = {}
    for name, fr in frames.items():
        runs = [prog_test_run(fd, fr, repeat=repeat) for _ in range(rounds)]
        out[name] = (statistics.median(r["duration_ns"] for r in runs), runs[0]["retval"])
    return out


def ours(srcs, frames, repeat, rounds):
    from hft_packetfilter import allowlist as al, config
    from hft_packetfilter.kernel.loader import Probe

    # The port is protected through the rules file, not through a venue: a venue packet that passes
    # would also go on to the observer program (stamps, payload samples), which tools/bench/probe_cost.py
    # measures. This benchmark isolates the allow-list decision, as xdp-filter's is.
    cfg = config.default()
    rs = al.RuleSet()
    rs.protect.append(("tcp", (PORT, PORT)))
    for s in srcs:
        rs.add("allow", s + "/32")
    p = Probe(cfg, "lo", rules=rs, filter_mode="enforce")
    p.load()
    try:
        return measure(p.fn.fd, frames, repeat, rounds)
    finally:
        p.detach()


def xdp_filter(srcs, frames, repeat, rounds):
    from hft_packetfilter.kernel import bpfsys

    exe = shutil.which("xdp-filter")
    if not exe:
        return None, "xdp-filter not installed (apt-get install xdp-tools)"
    nsenter = ["nsenter", f"--net=/var/run/netns/{NS}"]
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "-n", NS, "link", "add", IF0, "type", "veth", "peer", "name", IF1], check=True)
        subprocess.run(["ip", "-n", NS, "link", "set", IF0, "up"], check=True)
        r = subprocess.run([*nsenter, exe, "load", "--policy", "deny", "--mode", "skb", IF0], capture_output=True,
                           text=True)
        if r.returncode != 0:
            return None, f"xdp-filter load failed: {r.stderr.strip() or r.stdout.strip()}"
        link = json.loads(subprocess.run(["ip", "-n", NS, "-j", "-d", "link", "show", "dev", IF0], capture_output=True,
                                         text=True, check=True).stdout)[0]
        prog = link["xdp"]["prog"]
        fd = bpfsys.prog_fd_by_id(prog["id"])
        # Fill its source map directly (one CLI call per address would take minutes): key is the
        # IPv4 address as stored on the wire, value per CPU the mode flags (1 = match on source).
        mfd = bpfsys.obj_get("/sys/fs/bpf/xdp-filter/filter_ipv4")
        m = bpfsys.Map(mfd, ctypes.c_uint32, ctypes.c_uint64, name="filter_ipv4")
        for s in srcs:
            m.update(struct.unpack("=I", socket.inet_aton(s))[0], [ctypes.c_uint64(1)] * bpfsys.possible_cpus())
        m.close()
        try:
            return measure(fd, frames, repeat, rounds), prog["name"]
        finally:
            os.close(fd)
            subprocess.run([*nsenter, exe, "unload", "--all", IF0], capture_output=True)
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", type=int, default=1000, help="allowed source addresses (default 1000)")
    ap.add_argument("--repeat", type=int, default=1_000_000, help="test runs per measurement (default 1e6)")
    ap.add_argument("--rounds", type=int, default=5, help="measurements per figure; the median is printed")
    ap.add_argument("--quick", action="store_true", help="small run to prove the benchmark works (CI)")
    ap.add_argument("-j", "--json", action="store_true", help="one JSON object per comparison")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("allowlist bench: needs root (BPF_PROG_TEST_RUN)")
    if a.quick:
        a.repeat, a.rounds = 10_000, 1
    srcs = sources(a.rules)
    frames = {"allowed": frame(srcs[len(srcs) // 2]), "unknown": frame("198.51.100.77")}
    mine = ours(srcs, frames, a.repeat, a.rounds)
    peer, info = xdp_filter(srcs, frames, a.repeat, a.rounds)
    rows = []
    for name in frames:
        ours_ns, ours_ret = mine[name]
        row = {"bench": f"allowlist/{name}-source/{a.rules}-rules", "unit": "ns/packet", "ours": ours_ns,
               "peer": "xdp-filter", "peer_value": None, "ratio": None, "better": "lower",
               "ours_verdict": {1: "drop", 2: "pass"}.get(ours_ret, ours_ret)}
        if peer is None:
            row["reason"] = info
        else:
            pv, pret = peer[name]
            row.update(peer_value=pv, ratio=round(ours_ns / pv, 3) if pv else None, peer_program=info,
                       peer_verdict={1: "drop", 2: "pass"}.get(pret, pret))
        rows.append(row)
    for row in rows:
        if a.json:
            print(json.dumps(row))
        else:
            pv = "n/a" if row["peer_value"] is None else f"{row['peer_value']:.0f} ns"
            ratio = "" if row["ratio"] is None else f"  ratio {row['ratio']:.2f}"
            print(f"{row['bench']:<40} ours {row['ours']:.0f} ns ({row['ours_verdict']})  xdp-filter {pv}"
                  f"{ratio}{'  (' + row['reason'] + ')' if row.get('reason') else ''}")


if __name__ == "__main__":
    main()
