#!/usr/bin/env python3
"""Benchmark: offline replay of an ITCH 5.0 / MoldUDP64 capture, against tshark and itch-book.

Input: a generated capture (default 1 M packets, ``--quick`` 20 k) of one MoldUDP64 multicast feed
(233.54.12.111:26477): a stock directory, then an order-flow mix (A/F add, E/C execute, X cancel,
D delete, U replace) of 1-3 messages per packet (2 on average), with a bounded number of live
orders (as a real book is), written by :func:`write_itch_capture` straight to disk.

Comparisons (each a line; with ``--json`` one JSON object per line, ARCHITECTURE.md "Benchmarks"):

* ``replay`` packets/s: ours = ``pipeline.run_capture`` with the venue configured, so the whole
  offline pipeline runs: pcap reading, L2-L4 parsing, classification, MoldUDP64/ITCH decoding,
  feed quality (sequence tracking) and full-depth books; peer = tshark decoding only the MoldUDP64
  framing of the same file (``tshark -r FILE -d udp.port==26477,moldudp64 -T fields -e
  moldudp64.sequence``), process start included. The row also carries ``ours_msgs_per_s`` and
  ``lane_packets`` (how many packets the compiled fast lane took, the report's
  ``capture.fast_lane_records``: with the native backend, all but the directory's). ``replay_python_path`` is the same replay with
  ``Pipeline.fast_lane = False`` (every packet through the Python pipeline), for the lane's share;
  ``replay_crossvenue`` the replay with the cross-venue view on (the configured default as soon as
  there are two book venues, or a book and an order-entry venue), whose per-packet quotes are Python.
* ``books`` msgs/s: ours = ``ITCH50Decoder.decode_buffer`` + ``ItchBook.apply_many`` over the
  message blocks of the capture's first packets (at most 500 k messages); peer = the itch-book
  package (PyPI, C++ core) building its books (``Session(tables=["bbo"])``, BBO output) from the
  same messages as one length-prefixed stream. A second row times ``ItchBook.apply_many`` alone on
  the already decoded messages.
* ``books_fused`` msgs/s ("fused decode+book"): ours = ``ItchBook.apply_buffer`` on the same stream,
  which decodes it straight into the compiled book (no message objects for the order flow; the
  same book and decoder state as the ``books`` row, checked here); same peer run.

A peer that cannot run is reported with ``"peer_value": null`` and a reason. Benchmarks are not
tests: nothing here asserts a time.

    python tools/bench/replay.py            # 1 M packets
    python tools/bench/replay.py --json
    python tools/bench/replay.py --quick    # 20 k packets, for CI smoke runs
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchfmt import best_time, row  # noqa: E402

from hft_packetfilter.protocols import itch50  # noqa: E402

PORT = 26477
GROUP = "233.54.12.111"
CONFIG = (f"exchanges:\n  - name: BENCH\n    host: {GROUP}\n    ports: [{PORT}]\n"
          "    protocol: ITCH/MoldUDP64\n")
BOOK_MESSAGES = 500_000

_A = struct.Struct(">cHHHIQcI8sI")          # add order (36 bytes)
_F = struct.Struct(">cHHHIQcI8sI4s")        # add order with MPID (40)
_E = struct.Struct(">cHHHIQIQ")             # executed (31)
_C = struct.Struct(">cHHHIQIQcI")           # executed with price (36)
_X = struct.Struct(">cHHHIQI")              # cancel (23)
_D = struct.Struct(">cHHHIQ")               # delete (19)
_U = struct.Struct(">cHHHIQQII")            # replace (35)
_MOLD = struct.Struct(">10sQH")
_REC = struct.Struct("<IIII")


def write_itch_capture(path, n_packets: int, seed: int = 1, symbols: int = 500, max_live: int = 20_000) -> int:
    """Write ``n_packets`` MoldUDP64 packets (ITCH 5.0) to a nanosecond pcap; returns the message
    count. Memory stays flat: packets are written as they are made."""
    rng = random.Random(seed)
    rand = rng.random
    randint = rng.randint
    names = [f"S{i:04d}".encode().ljust(8) for i in range(symbols)]
    eth = b"\x01\x00\x5e\x36\x0c\x6f\x02\x00\x00\x00\x00\x01\x08\x00"
    src = bytes((10, 0, 0, 1))
    dst = bytes(int(x) for x in GROUP.split("."))
    ip_h = struct.Struct(">BBHHHBBH4s4s")
    udp_h = struct.Struct(">HHHH")
    live: list = []
    ref = 1
    match = 1
    seq = 1
    ts = 34_200 * 10**9
    pcap_ts = 1_700_000_000 * 10**9
    n_msgs = 0
    session = b"BENCH00001"
    with open(path, "wb", buffering=1 << 20) as out:
        out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))

        def emit(msgs):
            nonlocal seq, pcap_ts, n_msgs
            body = b"".join(len(m).to_bytes(2, "big") + m for m in msgs)
            payload = _MOLD.pack(session, seq, len(msgs)) + body
            seq += len(msgs)
            n_msgs += len(msgs)
            udp = udp_h.pack(40000, PORT, 8 + len(payload), 0) + payload
            frame = eth + ip_h.pack(0x45, 0, 20 + len(udp), 0, 0x4000, 32, 17, 0, src, dst) + udp
            pcap_ts += 2_000 + (seq & 0x3FF)
            out.write(_REC.pack(pcap_ts // 10**9, pcap_ts % 10**9, len(frame), len(frame)))
            out.write(frame)

        directory = [itch50.encode_message("R", stock_locate=i + 1, stock=names[i].decode().strip(),
                                           market_category="Q", financial_status_indicator="N",
                                           round_lot_size=100, round_lots_only="N", issue_classification="C",
                                           authenticity="P", timestamp=3 * 3600 * 10**9 + i)
                     for i in range(symbols)]
        packets = 0
        for i in range(0, len(directory), 3):
            emit(directory[i:i + 3])
            packets += 1
        while packets < n_packets:
            msgs = []
            for _ in range(randint(1, 3)):
                ts += randint(100, 20_000)
                hi, lo = ts >> 32, ts & 0xFFFFFFFF
                r = rand()
                if len(live) < 100 or (r < 0.45 and len(live) < max_live):
                    loc = randint(1, symbols)
                    side = b"B" if rand() < 0.5 else b"S"
                    px = randint(900, 1100) * 100 + loc * 10_000
                    if rand() < 0.1:
                        msgs.append(_F.pack(b"F", loc, 0, hi, lo, ref, side, randint(1, 20) * 100,
                                            names[loc - 1], px, b"MPID"))
                    else:
                        msgs.append(_A.pack(b"A", loc, 0, hi, lo, ref, side, randint(1, 20) * 100,
                                            names[loc - 1], px))
                    live.append((ref, loc))
                    ref += 1
                    continue
                k = randint(0, len(live) - 1)
                oref, loc = live[k]
                if r < 0.55:
                    msgs.append(_E.pack(b"E", loc, 0, hi, lo, oref, 100, match))
                    match += 1
                elif r < 0.60:
                    msgs.append(_C.pack(b"C", loc, 0, hi, lo, oref, 100, match, b"Y", 1_000_000))
                    match += 1
                elif r < 0.70:
                    msgs.append(_X.pack(b"X", loc, 0, hi, lo, oref, 100))
                elif r < 0.92:
                    msgs.append(_D.pack(b"D", loc, 0, hi, lo, oref))
                    live[k] = live[-1]
                    live.pop()
                else:
                    msgs.append(_U.pack(b"U", loc, 0, hi, lo, oref, ref, 200,
                                        randint(900, 1100) * 100 + loc * 10_000))
                    live[k] = (ref, loc)
                    ref += 1
            emit(msgs)
            packets += 1
    return n_msgs


_row = row


def _tshark(path: str, packets: int):
    exe = shutil.which("tshark")
    if exe is None:
        return None, "tshark not installed (apt-get install tshark)"
    t0 = time.perf_counter()
    out = subprocess.run([exe, "-r", path, "-d", f"udp.port=={PORT},moldudp64", "-T", "fields",
                          "-e", "moldudp64.sequence"], capture_output=True)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        return None, f"tshark failed: {out.stderr.decode(errors='replace').strip()[:200]}"
    lines = out.stdout.count(b"\n")
    if lines != packets:
        return None, f"tshark printed {lines} lines for {packets} packets"
    return packets / dt, ""


def _book_inputs(path: str, limit: int):
    """The message blocks of the capture's first packets (at most ``limit`` messages)."""
    from hft_packetfilter.sources.pcap import read_events

    blocks = []
    n = 0
    for ev in read_events(path):
        p = ev.payload
        blocks.append(p[20:])
        n += _MOLD.unpack_from(p, 0)[2]
        if n >= limit:
            break
    return b"".join(blocks), n


def run(quick: bool = False, packets: int = 0) -> list:
    from hft_packetfilter import config, pipeline
    from hft_packetfilter.analytics.books import ItchBook

    n_packets = packets or (20_000 if quick else 1_000_000)
    rows = []
    fd, path = tempfile.mkstemp(suffix=".pcap")
    os.close(fd)
    try:
        n_msgs = write_itch_capture(path, n_packets)
        size = os.path.getsize(path)
        cfg = config.loads(CONFIG)
        docs, times = [], []
        for lane_on in (True, False):
            pipe = pipeline.Pipeline(cfg)
            pipe.fast_lane = lane_on
            t0 = time.perf_counter()
            docs.append(pipeline.run_capture(path, cfg, pipeline=pipe))
            times.append(time.perf_counter() - t0)
        taken = docs[0]["capture"].pop("fast_lane_records")
        docs[1]["capture"].pop("fast_lane_records")
        doc = docs[0]
        feed = doc["feeds"]["BENCH"]
        assert doc["packets"] == n_packets and feed["messages"] == n_msgs and doc["errors"] == {}, \
            (doc["packets"], feed["messages"], n_msgs, doc["errors"])
        assert docs[0] == docs[1], "the fast lane changed the report"
        peer, reason = _tshark(path, n_packets)
        rows.append(_row("replay", "packets/s", n_packets / times[0], "tshark", peer, reason,
                         f"{n_packets:,} packets, {n_msgs:,} ITCH msgs, {size / 2**20:.0f} MiB; ours: books + "
                         f"feed quality on, {taken:,} packets through the fast lane; tshark: MoldUDP64 framing only",
                         ours_msgs_per_s=round(n_msgs / times[0]), lane_packets=taken))
        rows.append(_row("replay_python_path", "packets/s", n_packets / times[1], "tshark", peer, reason,
                         "the same replay with Pipeline.fast_lane = False (every packet through the Python "
                         "pipeline; same report)", ours_msgs_per_s=round(n_msgs / times[1])))
        t0 = time.perf_counter()
        cv_doc = pipeline.run_capture(path, cfg, pipeline=pipeline.Pipeline(cfg, crossvenue=True))
        dt = time.perf_counter() - t0
        assert cv_doc["feeds"]["BENCH"]["messages"] == n_msgs
        rows.append(_row("replay_crossvenue", "packets/s", n_packets / dt, "tshark", peer, reason,
                         "the same replay with the cross-venue view on (as with two book venues, or a book "
                         "and an order-entry venue): every touched book's top goes to the view after each packet",
                         ours_msgs_per_s=round(n_msgs / dt),
                         lane_packets=cv_doc["capture"]["fast_lane_records"]))

        stream, n_book = _book_inputs(path, BOOK_MESSAGES if not quick else 50_000)

        def ours_books():
            b = ItchBook("bench")
            b.apply_many(itch50.ITCH50Decoder().decode_buffer(stream))
            return b

        def ours_fused():
            b = ItchBook("bench")
            b.apply_buffer(stream)
            return b

        msgs = itch50.ITCH50Decoder().decode_buffer(stream)
        assert len(msgs) == n_book
        fused, split = ours_fused(), ours_books()
        assert fused.messages == split.messages == n_book and fused.snapshot() == split.snapshot()

        def ours_apply():
            ItchBook("bench").apply_many(msgs)

        t_ours = _best(ours_books, 1 if quick else 3)
        t_apply = _best(ours_apply, 1 if quick else 3)
        t_fused = _best(ours_fused, 1 if quick else 3)
        try:
            import itch_book  # type: ignore
            import numpy as np  # type: ignore
        except ImportError as e:
            reason = f"itch-book not installed ({e}); pip install itch-book"
            rows.append(_row("books", "msgs/s", n_book / t_ours, "itch-book", None, reason))
            rows.append(_row("books_apply_only", "msgs/s", n_book / t_apply, "itch-book", None, reason))
            rows.append(_row("books_fused", "msgs/s", n_book / t_fused, "itch-book", None, reason))
            return rows
        arr = np.frombuffer(stream, dtype=np.uint8)

        def peer_books():
            s = itch_book.Session(tables=["bbo"], depth=0, symbols=[])
            s.reserve(n_book + 16)
            s.feed(arr)
            s.take_bbo()
            return s

        st = peer_books().stats()
        if st.get("messages", n_book) != n_book:
            reason = f"itch-book read {st.get('messages')} of {n_book} messages"
            rows.append(_row("books", "msgs/s", n_book / t_ours, "itch-book", None, reason))
            return rows
        t_peer = _best(peer_books, 1 if quick else 3)
        try:
            from importlib.metadata import version as _version
            ver = _version("itch-book")
        except Exception:  # noqa: BLE001 - a label only
            ver = "?"
        rows.append(_row("books", "msgs/s", n_book / t_ours, "itch-book", n_book / t_peer,
                         note=f"{n_book:,} msgs; ours: ITCH50Decoder.decode_buffer + ItchBook.apply_many; "
                              f"itch-book {ver} C++ Session(tables=['bbo']) on the same length-prefixed stream"))
        rows.append(_row("books_apply_only", "msgs/s", n_book / t_apply, "itch-book", n_book / t_peer,
                         note="ours: ItchBook.apply_many on already decoded messages"))
        rows.append(_row("books_fused", "msgs/s", n_book / t_fused, "itch-book", n_book / t_peer,
                         note="fused decode+book: ItchBook.apply_buffer on the same stream (no message objects "
                              "for the order flow)"))
    finally:
        os.unlink(path)
    return rows


_best = best_time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="examples:\n  replay.py --json\n  replay.py --quick\n  replay.py --packets 200000",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 k packets, one repetition (CI smoke run)")
    ap.add_argument("--packets", type=int, default=0, help="capture size in packets (default 1 M)")
    ap.add_argument("-j", "--json", action="store_true", help="one JSON object per comparison")
    args = ap.parse_args(argv)
    for r in run(quick=args.quick, packets=args.packets):
        if args.json:
            print(json.dumps(r))
        else:
            pv = "n/a" if r["peer_value"] is None else f"{r['peer_value']:,}"
            print(f"{r['bench']:>16} vs {r['peer']:<9}: [{r['backend']}] ours {r['ours']:>11,} {r['unit']:<9} peer {pv:>11}  "
                  f"ratio {r['ratio']}  {r.get('reason') or r.get('note', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
