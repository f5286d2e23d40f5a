#!/usr/bin/env python3
"""Benchmark: ITCH 5.0 over MoldUDP64 decode throughput (messages per second, higher is better).

One generated stream (a stock directory, then a mix of A/F/E/C/X/D/U/P in MoldUDP64 packets of up to
30 messages) is decoded in this process by:

* ours: ``MoldUDP64Decoder.feed`` per datagram (the batch API ``ITCH50Decoder.decode_buffer`` inside);
* struct-baseline: a plain full decoder written here (``unpack_from`` per message with a precompiled
  ``struct.Struct``, then a tuple with the 48-bit timestamp joined and the stock symbol decoded);
* dpkt: dpkt parses Ethernet/IPv4/UDP of a pcap holding the same datagrams, the struct baseline decodes
  the ITCH (dpkt has no ITCH); ours on the same pcap slices the headers with ``struct``;
* itch-book: its compiled C++ session over the same messages as one length-prefixed stream (it also
  builds order books, so it does more work per message than a decoder).

Notes for reading the numbers: our messages are tuples whose timestamp and alpha fields are converted
when read (lazy); the baseline converts them eagerly. The "ours+access" line reads every message's
timestamp and symbol so the comparison with the eager baseline is like for like.

Usage: ``decode_itch.py [--quick] [--json]``; ``run(quick)`` returns the result dicts.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchfmt import best_time, row  # noqa: E402

from hft_packetfilter.protocols import itch50  # noqa: E402
from hft_packetfilter.protocols.moldudp64 import MoldUDP64Decoder, encode_packet  # noqa: E402

BENCH = "decode_itch"
UNIT = "msgs/s"
MAX_PER_PACKET = 30


# ---- stream generation ---------------------------------------------------------------------------------

def generate(n_messages: int, seed: int = 1):
    """(datagrams, message count): MoldUDP64 packets holding a directory and an order-flow mix."""
    rng = random.Random(seed)
    symbols = [f"S{i:03d}" for i in range(200)]
    enc = itch50.encode_message
    msgs = [enc("R", stock_locate=i + 1, stock=s, market_category="Q", financial_status_indicator="N",
                round_lot_size=100, round_lots_only="N", issue_classification="C", authenticity="P",
                timestamp=3 * 3600 * 10**9 + i) for i, s in enumerate(symbols)]
    live = []
    ref = 1
    match = 1
    ts = 34_200 * 10**9
    while len(msgs) < n_messages:
        ts += rng.randint(100, 20_000)
        r = rng.random()
        if r < 0.40 or len(live) < 50:
            loc = rng.randrange(len(symbols)) + 1
            kw = dict(stock_locate=loc, timestamp=ts, order_reference_number=ref, side=rng.choice("BS"),
                      shares=rng.randint(1, 50) * 100, stock=symbols[loc - 1], price=rng.randint(10_000, 5_000_000))
            if rng.random() < 0.1:
                msgs.append(enc("F", attribution="MPID", **kw))
            else:
                msgs.append(enc("A", **kw))
            live.append((ref, loc))
            ref += 1
            continue
        i = rng.randrange(len(live))
        oref, loc = live[i]
        if r < 0.55:
            msgs.append(enc("E", stock_locate=loc, timestamp=ts, order_reference_number=oref,
                            executed_shares=100, match_number=match))
            match += 1
        elif r < 0.60:
            msgs.append(enc("C", stock_locate=loc, timestamp=ts, order_reference_number=oref, executed_shares=100,
                            match_number=match, printable="Y", execution_price=rng.randint(10_000, 5_000_000)))
            match += 1
        elif r < 0.72:
            msgs.append(enc("X", stock_locate=loc, timestamp=ts, order_reference_number=oref, cancelled_shares=100))
        elif r < 0.87:
            msgs.append(enc("D", stock_locate=loc, timestamp=ts, order_reference_number=oref))
            live[i] = live[-1]
            live.pop()
        elif r < 0.95:
            msgs.append(enc("U", stock_locate=loc, timestamp=ts, original_order_reference_number=oref,
                            new_order_reference_number=ref, shares=200, price=rng.randint(10_000, 5_000_000)))
            live[i] = (ref, loc)
            ref += 1
        else:
            msgs.append(enc("P", stock_locate=loc, timestamp=ts, order_reference_number=0, side="B", shares=100,
                            stock=symbols[loc - 1], price=rng.randint(10_000, 5_000_000), match_number=match))
            match += 1
    datagrams = []
    seq = 1
    i = 0
    while i < len(msgs):
        k = rng.randint(1, MAX_PER_PACKET)
        chunk = msgs[i:i + k]
        datagrams.append(encode_packet("BENCH00001", seq, chunk))
        seq += len(chunk)
        i += k
    return datagrams, len(msgs)


# ---- the plain struct baseline ------------------------------------------------------------------------

_MOLD = struct.Struct(">10sQH")


def _baseline_tables():
    tables = {}
    for t, (_name, body) in itch50.MESSAGE_SPECS.items():
        fmt = ">HHHI" + "".join(f[1] for f in body)
        alpha = tuple(i + 4 for i, f in enumerate(body) if f[2] == "a")
        tables[t.encode()] = (struct.Struct(fmt), alpha)
    return tables


def baseline_decode(datagram, tables) -> list:
    """A plain full decoder: one unpack_from per message, then a tuple of finished Python values."""
    _s, _seq, count = _MOLD.unpack_from(datagram, 0)
    out = []
    off = 20
    end = len(datagram)
    for _ in range(count if count != 0xFFFF else 0):
        if off + 2 > end:
            break
        (ln,) = struct.unpack_from(">H", datagram, off)
        t = datagram[off + 2:off + 3]
        spec = tables.get(t)
        if spec is not None:
            st, alpha = spec
            v = st.unpack_from(datagram, off + 3)
            vals = list(v)
            for i in alpha:
                vals[i] = vals[i].rstrip(b" ").decode("ascii")
            out.append((t.decode(), v[0], v[1], (v[2] << 32) | v[3], *vals[4:]))
        off += 2 + ln
    return out


# ---- pcap for the dpkt comparison ---------------------------------------------------------------------

def write_pcap(path: str, datagrams) -> None:
    parts = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    eth = b"\x01\x00\x5e\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    for i, d in enumerate(datagrams):
        udp = struct.pack(">HHHH", 40000, 26477, 8 + len(d), 0) + d
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 32, 17, 0,
                         bytes((10, 0, 0, 1)), bytes((233, 54, 12, 111)))
        frame = eth + ip + udp
        parts.append(struct.pack("<IIII", 1_700_000_000, i, len(frame), len(frame)))
        parts.append(frame)
    Path(path).write_bytes(b"".join(parts))


def _ours_pcap(path: str) -> int:
    data = Path(path).read_bytes()
    dec = MoldUDP64Decoder()
    rec = struct.Struct("<IIII")
    off = 24
    n = 0
    while off + 16 <= len(data):
        _s, _u, incl, _o = rec.unpack_from(data, off)
        off += 16
        f = data[off:off + incl]
        off += incl
        ihl = (f[14] & 0x0F) * 4
        l4 = 14 + ihl
        (ulen,) = struct.unpack_from(">H", f, l4 + 4)
        n += len(dec.feed(f[l4 + 8:l4 + ulen]))
    return n


def _dpkt_pcap(path: str, dpkt, tables) -> int:
    n = 0
    with open(path, "rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            udp = ip.data
            n += len(baseline_decode(bytes(udp.data), tables))
    return n


# ---- measurement ------------------------------------------------------------------------------------------

_best = best_time


def _row(ours: float, peer: str, peer_value, reason: str = "", note: str = "") -> dict:
    return row(BENCH, UNIT, ours, peer, peer_value, reason, note)


def run(quick: bool = False) -> list:
    n_target = 20_000 if quick else 150_000
    repeat = 1 if quick else 5
    datagrams, n = generate(n_target)
    tables = _baseline_tables()

    def ours():
        dec = MoldUDP64Decoder()
        feed = dec.feed
        for d in datagrams:
            feed(d)

    def ours_access():
        dec = MoldUDP64Decoder()
        feed = dec.feed
        for d in datagrams:
            for m in feed(d):
                m.timestamp
                m.symbol

    def base():
        for d in datagrams:
            baseline_decode(d, tables)

    # sanity: both decoders see every message
    check = MoldUDP64Decoder()
    assert sum(len(check.feed(d)) for d in datagrams) == n and check.stats.rejected == 0
    assert sum(len(baseline_decode(d, tables)) for d in datagrams) == n

    t_ours = _best(ours, repeat)
    t_access = _best(ours_access, repeat)
    t_base = _best(base, repeat)
    ours_rate = n / t_ours
    rows = [
        _row(ours_rate, "struct-baseline", n / t_base,
             note=f"{n} msgs in {len(datagrams)} MoldUDP64 datagrams; ours decodes timestamp/alpha lazily"),
        _row(n / t_access, "struct-baseline", n / t_base,
             note="ours+access: every message's timestamp and symbol read (like-for-like with the eager baseline)"),
    ]

    # dpkt peer
    try:
        import dpkt  # type: ignore
    except ImportError as e:
        rows.append(_row(ours_rate, "dpkt+struct", None, reason=f"dpkt not installed ({e}); pip install dpkt"))
    else:
        fd, path = tempfile.mkstemp(suffix=".pcap")
        os.close(fd)
        try:
            write_pcap(path, datagrams)
            assert _ours_pcap(path) == n and _dpkt_pcap(path, dpkt, tables) == n
            t_o = _best(lambda: _ours_pcap(path), repeat)
            t_d = _best(lambda: _dpkt_pcap(path, dpkt, tables), repeat)
            rows.append(_row(n / t_o, "dpkt+struct", n / t_d,
                             note=f"pcap of the same datagrams; dpkt {dpkt.__version__} eth/ip/udp + struct ITCH"))
        finally:
            os.unlink(path)

    # itch-book peer (compiled; builds books too)
    try:
        import itch_book  # type: ignore
        import numpy as np  # type: ignore
    except ImportError as e:
        rows.append(_row(ours_rate, "itch-book", None, reason=f"itch-book not installed ({e}); pip install itch-book"))
    else:
        stream = b"".join(d[20:] for d in datagrams)   # the message blocks, as one length-prefixed stream
        arr = np.frombuffer(stream, dtype=np.uint8)

        def ib():
            s = itch_book.Session(tables=["messages"], depth=0, symbols=[])
            s.reserve(n + 16)
            s.feed(arr)
            s.take_messages()
            return s

        def ours_stream():
            itch50.ITCH50Decoder().decode_buffer(stream)

        st = ib().stats()
        if st["messages"] != n:
            rows.append(_row(ours_rate, "itch-book", None, reason=f"itch-book decoded {st['messages']} of {n} messages"))
        else:
            t_i = _best(ib, repeat)
            t_s = _best(ours_stream, repeat)
            try:
                from importlib.metadata import version as _dist_version
                ver = _dist_version("itch-book")
            except Exception:  # noqa: BLE001 - only a label
                ver = "?"
            rows.append(_row(n / t_s, "itch-book", n / t_i,
                             note=f"itch-book {ver} C++ session (messages table, "
                                  "order books); ours = ITCH50Decoder.decode_buffer on the same stream"))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="examples:\n  decode_itch.py --json\n  decode_itch.py --quick",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small stream, one repetition (CI smoke run)")
    ap.add_argument("-j", "--json", action="store_true", help="one JSON object per comparison")
    args = ap.parse_args(argv)
    rows = run(quick=args.quick)
    for r in rows:
        if args.json:
            print(json.dumps(r))
        else:
            pv = "n/a" if r["peer_value"] is None else f"{r['peer_value']:,}"
            print(f"{r['peer']:>16}: [{r['backend']}] ours {r['ours']:>12,} {UNIT}  peer {pv:>12}  ratio {r['ratio']}  "
                  f"{r.get('reason') or r.get('note', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
