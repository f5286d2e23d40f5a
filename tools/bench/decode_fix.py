#!/usr/bin/env python3
"""Benchmark: FIX tag=value decoding, msgs/s, ours against named peers on the same input.

Input: a generated FIX 4.4 stream (default 100k messages: NewOrderSingle, ExecutionReport and
Heartbeat, correct BodyLength and CheckSum) cut into 1448-byte TCP-sized segments, so messages span
segments as they do on the wire.

Each contender does the work analytics needs: frame the stream, verify the checksum where the
contender can, and read the fast-path tags (35 11 41 37 17 39 150 54 55 38 44 31 32 14 151 52 60
49 56 34) of every message.

* ours: ``FixStreamDecoder.feed`` per segment (framing by BodyLength, CheckSum verified) and
  ``msg.values(FAST_TAGS)`` (every fast-path tag in one call).
* naive_split: the textbook ``split(b"\\x01")`` + ``partition(b"=")`` loop over the whole stream,
  one dict per message (no validation at all).
* simplefix: ``simplefix.FixParser`` (append_buffer/get_message; it frames by BodyLength and does
  not verify the checksum) and ``FixMessage.get(tag)``.
* quickfix: the QuickFIX C++ engine's Python binding, ``quickfix.Message(str, True)`` on the
  framed messages (it checks BodyLength and CheckSum) and ``getField(tag)`` on header and body.
* quickfix_parse: the same without field access, against our framing + CheckSum without field
  access (like for like: the binding has no stream framer, so it gets pre-framed messages).
* tshark: Wireshark's FIX dissector over a pcap of the same segments
  (``tshark -r FILE -d tcp.port==4000,fix -Y fix -T fields -e fix.MsgType``); the time of a one-packet
  run (process start, dissector registration) is subtracted.

A peer that cannot run is reported with ``"peer_value": null`` and a reason. Benchmarks are not
tests: no time is asserted anywhere.

    python tools/bench/decode_fix.py            # human-readable
    python tools/bench/decode_fix.py --json     # one JSON object per comparison
    python tools/bench/decode_fix.py --quick    # 10k messages, for CI smoke runs
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

try:
    from hft_packetfilter.protocols.fix import FAST_TAGS, FixStreamDecoder, checksum
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent"))
    from hft_packetfilter.protocols.fix import FAST_TAGS, FixStreamDecoder, checksum
from hft_packetfilter import _accel

MSS = 1448
SYMBOLS = ["AAPL", "MSFT", "ESZ4", "EUR/USD", "VOD.L", "7203.T", "BTC-USD", "NQZ4"]


# -- input ----------------------------------------------------------------------------------------

def _msg(fields: List[Tuple[int, str]]) -> bytes:
    body = "".join(f"{t}={v}\x01" for t, v in fields).encode()
    head = b"8=FIX.4.4\x019=%d\x01" % len(body)
    return head + body + b"10=" + checksum(head + body) + b"\x01"


def build_stream(n: int, seed: int = 7) -> Tuple[bytes, List[bytes]]:
    """n messages (45% NewOrderSingle, 45% ExecutionReport, 10% Heartbeat) as one byte stream."""
    rng = random.Random(seed)
    msgs = []
    for seq in range(1, n + 1):
        ts = f"20240102-09:{30 + seq // 60000 % 30:02d}:{seq // 1000 % 60:02d}.{seq % 1000:03d}"
        hdr = [(49, "CLIENT01"), (56, "EXCHANGE"), (34, str(seq)), (52, ts)]
        r = rng.random()
        sym = rng.choice(SYMBOLS)
        px = f"{rng.uniform(10, 500):.2f}"
        qty = str(rng.randrange(1, 100) * 100)
        if r < 0.45:
            msgs.append(_msg([(35, "D")] + hdr + [(11, f"C{seq}"), (1, "ACCT1"), (21, "1"), (55, sym),
                                                  (54, rng.choice("12")), (60, ts), (38, qty),
                                                  (40, "2"), (44, px), (59, "0")]))
        elif r < 0.90:
            cum = rng.randrange(0, int(qty) + 1)
            msgs.append(_msg([(35, "8")] + hdr + [(37, f"O{seq}"), (11, f"C{seq - 1}"), (17, f"E{seq}"),
                                                  (150, "F"), (39, "1" if cum < int(qty) else "2"),
                                                  (55, sym), (54, "1"), (38, qty), (44, px), (32, "100"),
                                                  (31, px), (151, str(int(qty) - cum)), (14, str(cum)),
                                                  (6, px), (60, ts)]))
        else:
            msgs.append(_msg([(35, "0")] + hdr))
    return b"".join(msgs), msgs


def segments(stream: bytes, mss: int = MSS) -> List[bytes]:
    return [stream[i:i + mss] for i in range(0, len(stream), mss)]


# -- contenders -----------------------------------------------------------------------------------

def run_ours(segs: List[bytes]) -> int:
    dec = FixStreamDecoder()
    n = 0
    for seg in segs:
        for m in dec.feed(seg):
            m.values(FAST_TAGS)  # all fast-path tags in one call (m.get(tag) reads one)
            n += 1
    assert not dec.stats.rejects, dec.stats.rejects
    return n


def run_naive_split(segs: List[bytes]) -> int:
    stream = b"".join(segs)
    n = 0
    cur: Dict[bytes, bytes] = {}
    for f in stream.split(b"\x01"):
        tag, _, value = f.partition(b"=")
        if tag == b"10":
            n += 1
            cur = {}
        elif tag:
            cur[tag] = value
    return n


def run_simplefix(segs: List[bytes]) -> int:
    import simplefix
    p = simplefix.FixParser()
    n = 0
    tags = FAST_TAGS
    for seg in segs:
        p.append_buffer(seg)
        while True:
            m = p.get_message()
            if m is None:
                break
            for t in tags:
                m.get(t)
            n += 1
    return n


def run_ours_framing(segs: List[bytes]) -> int:
    """Framing and CheckSum only (no field access): the like-for-like of quickfix_parse."""
    dec = FixStreamDecoder()
    n = 0
    for seg in segs:
        n += len(dec.feed(seg))
    return n


_QF_HEADER = frozenset((8, 9, 34, 35, 49, 52, 56))


def run_quickfix(msgs: List[bytes], fields: bool = True) -> int:
    """quickfix.Message(str, validate=True) on each framed message (it checks BodyLength and
    CheckSum), then getField(tag) (int overload: the StringField overload is far slower through
    SWIG) from the header or body, where the tag is set."""
    import quickfix as qf
    n = 0
    tags = FAST_TAGS
    for raw in msgs:
        m = qf.Message(raw.decode("latin-1"), True)
        if fields:
            h = m.getHeader()
            for t in tags:
                src = h if t in _QF_HEADER else m
                if src.isSetField(t):
                    src.getField(t)
        n += 1
    return n


def _write_pcap(path: Path, segs: List[bytes]) -> None:
    """Ethernet/IPv4/TCP pcap, one packet per segment, 10.0.0.1:40000 -> 10.0.0.2:4000."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        seq = 1000
        for k, seg in enumerate(segs):
            tcp = struct.pack("!HHIIBBHHH", 40000, 4000, seq, 1, 5 << 4, 0x18, 65535, 0, 0)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(seg), k & 0xFFFF, 0, 64, 6,
                             0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
            frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + seg
            f.write(struct.pack("<IIII", 1700000000 + k // 1000, (k % 1000) * 1000, len(frame), len(frame)))
            f.write(frame)
            seq += len(seg)


def run_tshark(segs: List[bytes], n_msgs: int) -> Tuple[Optional[float], str]:
    exe = shutil.which("tshark")
    if exe is None:
        return None, "tshark not on PATH"
    with tempfile.TemporaryDirectory() as d:
        full, tiny = Path(d) / "full.pcap", Path(d) / "tiny.pcap"
        _write_pcap(full, segs)
        _write_pcap(tiny, segs[:1])
        cmd = [exe, "-r", "", "-d", "tcp.port==4000,fix", "-Y", "fix", "-T", "fields", "-e", "fix.MsgType"]

        def timed(p: Path) -> Tuple[float, str]:
            cmd[2] = str(p)
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if res.returncode != 0:
                raise RuntimeError(res.stderr.strip()[:200])
            return time.perf_counter() - t0, res.stdout

        try:
            t_tiny, _ = timed(tiny)
            t_full, out = timed(full)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            return None, f"tshark failed: {e}"
    seen = sum(len([v for v in line.split(",") if v]) for line in out.splitlines())
    if seen != n_msgs:
        return None, f"tshark decoded {seen} of {n_msgs} messages"
    if t_full - t_tiny < 0.2:
        # tshark's startup (~1 s) dominates small inputs; the difference is noise, not a rate
        return None, (f"input too small to time tshark ({t_full - t_tiny:.3f} s after its startup); "
                      "run without --quick")
    return n_msgs / (t_full - t_tiny), "startup time (one-packet run) subtracted"


def _best_rate(fn: Callable[[], int], n_expected: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        if n != n_expected:
            raise RuntimeError(f"decoded {n} messages, expected {n_expected}")
        best = min(best, dt)
    return n_expected / best


def _peer(name: str, fn: Callable[[], int], n: int, repeat: int) -> Tuple[Optional[float], Optional[str]]:
    try:
        return _best_rate(fn, n, repeat), None
    except ImportError as e:
        return None, f"{name} not installed ({e}); pip install {name} in the venv"
    except Exception as e:  # a peer that fails is reported, not fatal
        return None, f"{name} failed: {type(e).__name__}: {e}"


FULL = "frame + checksum + the 20 fast-path tags"
FRAME = "frame + checksum, no field access"


def run(quick: bool = False) -> List[dict]:
    """Run every comparison; returns one result dict per peer (see the module docstring)."""
    n = 10_000 if quick else 100_000
    repeat = 2 if quick else 3
    stream, msgs = build_stream(n)
    segs = segments(stream)
    ours = {FULL: _best_rate(lambda: run_ours(segs), n, repeat),
            FRAME: _best_rate(lambda: run_ours_framing(segs), n, repeat)}
    peers = [
        ("naive_split", FULL, "split(SOH) + partition(=) into a dict per message, no validation",
         lambda: _peer("naive_split", lambda: run_naive_split(segs), n, repeat)),
        ("simplefix", FULL, "FixParser framing (no checksum check) + get() of the 20 tags",
         lambda: _peer("simplefix", lambda: run_simplefix(segs), n, repeat)),
        ("quickfix", FULL, "Message(str, validate=True) + getField() of the 20 tags",
         lambda: _peer("quickfix", lambda: run_quickfix(msgs), n, repeat)),
        ("quickfix_parse", FRAME, "Message(str, validate=True) only, messages pre-framed",
         lambda: _peer("quickfix", lambda: run_quickfix(msgs, fields=False), n, repeat)),
        ("tshark", FULL, "Wireshark FIX dissector over a pcap of the same segments",
         lambda: run_tshark(segs, n)),
    ]
    results = []
    for name, ours_work, peer_work, fn in peers:
        value, note = fn()
        x = ours[ours_work]
        r = {"bench": "decode_fix", "unit": "msgs/s", "ours": round(x), "peer": name,
             "peer_value": None if value is None else round(value),
             "ratio": None if value is None else round(x / value, 3), "better": "higher",
             "ours_work": ours_work, "peer_work": peer_work, "messages": n, "bytes": len(stream),
             "backend": _accel.backend()}
        if value is None:
            r["reason"] = note
        elif note:
            r["note"] = note
        results.append(r)
    return results


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n  decode_fix.py --json\n  decode_fix.py --quick")
    ap.add_argument("-j", "--json", action="store_true", help="one JSON object per comparison")
    ap.add_argument("--quick", action="store_true", help="10k messages instead of 100k")
    args = ap.parse_args(argv)
    for r in run(quick=args.quick):
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            peer = "n/a (" + r["reason"] + ")" if r["peer_value"] is None else f"{r['peer_value']:>10,}"
            ratio = "" if r["ratio"] is None else f"  ratio {r['ratio']:.2f}x"
            print(f"decode_fix  [{r['backend']}] ours {r['ours']:>10,} msgs/s  vs {r['peer']:<12} {peer}{ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
