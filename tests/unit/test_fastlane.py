"""The replay fast lane (fastlane.py, native/lane.c) gives the report the Python pipeline gives.

Every test replays a capture with ``Pipeline.fast_lane`` on and off and compares the whole report
(feeds, books, decoders' stats and rejects, counters, capture summary); it also checks that the
lane really took records where it should (a lane that refuses everything would pass the equality
trivially) and left the ones it must not take to Python.
"""
from __future__ import annotations

import random
import struct
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hft_packetfilter import _accel
from hft_packetfilter import config as cfgmod
from hft_packetfilter import fastlane
from hft_packetfilter.pipeline import Pipeline, run_capture
from hft_packetfilter.protocols import itch50
from hft_packetfilter.protocols.moldudp64 import encode_packet

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
T0 = 1_700_000_000 * 10**9
US = 1_000

pytestmark = pytest.mark.skipif(_accel.NATIVE is None, reason=f"native backend inactive: {_accel.reason()}")

CONFIG = textwrap.dedent("""\
    exchanges:
      - name: NSDQ
        hosts: [233.54.12.1, 233.54.12.2, "ff15::1"]
        ports: [26477]
        protocol: ITCH/MoldUDP64
    """)


# ---- capture writing ------------------------------------------------------------------------------

def _ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def frame(dst: str, payload: bytes, src: str = "10.2.0.1", sport: int = 50000, dport: int = 26477,
          vlans=(), frag: int = 0x4000, ip_total_extra: int = 0) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    if ":" in dst:
        import ipaddress
        ip = (struct.pack(">IHBB", 6 << 28, len(udp), 17, 64) + ipaddress.ip_address("fd00::1").packed
              + ipaddress.ip_address(dst).packed)
        ethertype = 0x86DD
    else:
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + ip_total_extra, 0, frag, 32, 17, 0,
                         _ip4(src), _ip4(dst))
        ethertype = 0x0800
    tags = b"".join(struct.pack(">HH", tpid, vid) for tpid, vid in vlans)
    return b"\x01\x00\x5e\x00\x00\x01\x02\x00\x00\x00\x00\x01" + tags + struct.pack(">H", ethertype) + ip + udp


def write_pcap(path: Path, records, nsec: bool = True, big_endian: bool = False, snap: int = 0) -> Path:
    o = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    parts = [struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, 262144, 1)]
    for ts, f in records:
        frac = ts % 10**9 if nsec else (ts % 10**9) // 1000
        incl = f[:snap] if snap and len(f) > snap else f
        parts.append(struct.pack(o + "IIII", ts // 10**9, frac, len(incl), len(f)))
        parts.append(incl)
    path.write_bytes(b"".join(parts))
    return path


def _add(ref, loc=1, side="B", qty=100, px=1_000_000):
    return itch50.encode_message("A", stock_locate=loc, timestamp=1, order_reference_number=ref, side=side,
                                 shares=qty, stock=f"S{loc}", price=px)


def _directory(locs):
    return [itch50.encode_message("R", stock_locate=loc, stock=f"S{loc}", market_category="Q") for loc in locs]


def order_flow(n_packets: int, seed: int, session: str = "NSDQTEST01", start_seq: int = 1, symbols: int = 5):
    """(seq, [messages]) packets: a directory, then adds, executions, cancels, deletes, replaces."""
    rng = random.Random(seed)
    out = [(start_seq, _directory(range(1, symbols + 1)))]
    seq = start_seq + symbols
    live, ref = [], 1
    for _ in range(n_packets - 1):
        msgs = []
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            if len(live) < 5 or r < 0.45:
                loc = rng.randint(1, symbols)
                msgs.append(_add(ref, loc, rng.choice("BS"), rng.randint(1, 9) * 100,
                                 rng.randint(990, 1010) * 1000))
                live.append((ref, loc))
                ref += 1
                continue
            k = rng.randrange(len(live))
            oref, loc = live[k]
            if r < 0.6:
                msgs.append(itch50.encode_message("E", stock_locate=loc, order_reference_number=oref,
                                                  executed_shares=100, match_number=ref))
            elif r < 0.7:
                msgs.append(itch50.encode_message("X", stock_locate=loc, order_reference_number=oref,
                                                  cancelled_shares=50))
            elif r < 0.9:
                msgs.append(itch50.encode_message("D", stock_locate=loc, order_reference_number=oref))
                live[k] = live[-1]
                live.pop()
            else:
                msgs.append(itch50.encode_message("U", stock_locate=loc, original_order_reference_number=oref,
                                                  new_order_reference_number=ref, shares=300, price=1_001_000))
                live[k] = (ref, loc)
                ref += 1
        out.append((seq, msgs))
        seq += len(msgs)
    return out, session


# ---- the comparison ---------------------------------------------------------------------------------

def same_report(pcap, cfg, **kw):
    """Replay with the lane on and off; the reports must be equal but for the count of records the
    lane took (``capture.fast_lane_records``, 0 with it off). Returns (that count, the report)."""
    window = {k: kw.pop(k) for k in ("from_ns", "to_ns") if k in kw}
    docs, states = [], []
    for on in (True, False):
        p = Pipeline(cfg, **kw)
        p.fast_lane = on
        docs.append(run_capture(pcap, cfg, pipeline=p, **window))
        states.append(_state(p))
    on, off = docs
    taken = on["capture"].pop("fast_lane_records")
    assert off["capture"].pop("fast_lane_records") == 0
    assert on == off, _first_difference(on, off)
    assert states[0] == states[1], _first_difference(states[0], states[1], "state")
    return taken, on


def _slots(obj) -> dict:
    return {k: getattr(obj, k) for k in type(obj).__slots__ if hasattr(obj, k)}


def _state(p: Pipeline) -> dict:
    """What the report does not show but the next packet would read: the decoders' and the feed
    quality objects' state, the books' counts."""
    out = {}
    for key, u in p._udp.items():
        dec = u.decoder
        d = {k: v for k, v in vars(dec).items() if k != "inner"} if dec is not None else {}
        if getattr(dec, "inner", None) is not None:
            inner = dec.inner
            d["inner"] = {k: getattr(inner, k, None) for k in ("last_offset", "last_framed", "last_truncated")}
            d["inner_stats"] = (inner.stats.messages, inner.stats.bytes, dict(inner.stats.rejects))
        d["stats"] = (dec.stats.messages, dec.stats.bytes, dict(dec.stats.rejects)) if dec is not None else None
        d["book_messages"] = getattr(u.book, "messages", None)
        out[str(key)] = d
    for name, s in p.feeds.streams.items():
        out[f"fq:{name}"] = {"arb": _slots(s.arb), "live": _slots(s.live), "epoch": s.arb_epoch,
                             "lines": {ln: (_slots(x.seq), _slots(x.live)) for ln, x in s.lines.items()}}
    return out


def _first_difference(a, b, path="report"):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}")
            if d:
                return d
        return ""
    return "" if a == b else f"{path}: lane on {a!r} != lane off {b!r}"


def packets_to_records(packets, session, lines=("233.54.12.1",), gap_ns=20 * US):
    recs, ts = [], T0
    for seq, msgs in packets:
        payload = encode_packet(session, seq, msgs)
        for k, dst in enumerate(lines):
            recs.append((ts + k * 3 * US, frame(dst, payload)))
        ts += gap_ns
    return recs


# ---- tests --------------------------------------------------------------------------------------------

def test_a_clean_feed_goes_through_the_lane(tmp_path):
    packets, session = order_flow(2_000, seed=1)
    pcap = write_pcap(tmp_path / "clean.pcap", packets_to_records(packets, session))
    taken, doc = same_report(pcap, cfgmod.loads(CONFIG))
    # the directory packet, the first add of each symbol's packet... go through Python; the rest not
    assert taken >= 1_900, taken
    f = doc["feeds"]["NSDQ"]
    assert (f["arbitrated"]["packets"], f["gaps"], f["duplicates"]) == (2_000, 0, 0)
    assert doc["books"]["NSDQ"]["messages"] == f["messages"] and doc["errors"] == {}


def test_ab_lines_first_copies_and_copies(tmp_path):
    packets, session = order_flow(500, seed=2)
    pcap = write_pcap(tmp_path / "ab.pcap", packets_to_records(packets, session, ("233.54.12.1", "233.54.12.2")))
    taken, doc = same_report(pcap, cfgmod.loads(CONFIG))
    assert taken >= 990, taken               # A's first copies and B's copies
    assert doc["books"]["NSDQ"]["skipped_copies"] == doc["feeds"]["NSDQ"]["messages"]
    assert doc["feeds"]["NSDQ"]["arbitrated"]["redundant"] == doc["feeds"]["NSDQ"]["messages"]


def _damaged_records(seed: int, n: int = 3_000, b_lag: int = 5 * US):
    """Two lines with drops, repeats, late copies, truncated and padded payloads, count mismatches,
    VLAN tags (one, two, three), fragments, an IPv6 copy, heartbeats, session changes (one
    restarting the sequence, one not), B packets that carry two of A's, silences longer than the
    stale limit, snapped frames, time going backwards and noise. ``b_lag``: how far
    B trails A (past a packet's spacing, B's copies fill A's holes; the records are then in time
    order)."""
    rng = random.Random(seed)
    packets, session = order_flow(n, seed=seed)
    recs, ts, sent, skip_b = [], T0, [], False
    for i, (seq, msgs) in enumerate(packets):
        if i == n // 2:
            session = "NSDQTEST02"                      # a new session restarts the sequence
        if i >= n // 2:
            seq -= packets[n // 2][0] - 1
        if i == 3 * n // 4:
            session = "NSDQTEST03"                      # ... and one that does not
        p = encode_packet(session, seq, msgs)
        merged = None
        if i + 1 < n and i != n // 2 - 1 and i != 3 * n // 4 - 1 and rng.random() < 0.03:
            merged = encode_packet(session, seq, msgs + packets[i + 1][1])   # B's repacking
        r = rng.random()
        if r < 0.02:
            p = p[:rng.randint(0, len(p))]
        elif r < 0.035:
            p = p + b"\x00\x07junk"
        elif r < 0.045:
            p = p[:18] + b"\x00\x01" + p[20:]
        elif r < 0.05:
            p = p[:22] + b"H" + p[23:]                  # a block retyped (wrong length now, or an H)
        sent.append(p)
        for k, dst in enumerate(("233.54.12.1", "233.54.12.2")):
            if rng.random() < 0.05 or (k == 1 and skip_b):
                continue                                # dropped on this line
            q = rng.random()
            vlans = (((0x8100, 7),) if q < 0.1 else ((0x88A8, 1), (0x8100, 2)) if q < 0.15
                     else ((0x8100, 1), (0x8100, 2), (0x8100, 3)) if q < 0.16 else ())
            frag = 0x2000 | 5 if q > 0.995 else 0x4000
            q_p = merged if k == 1 and merged is not None else p
            recs.append((ts + k * b_lag, frame(dst, q_p, vlans=vlans, frag=frag)))
        skip_b = merged is not None
        if rng.random() < 0.01:
            recs.append((ts + US, frame("ff15::1", p)))                    # an IPv6 copy
        if rng.random() < 0.02 and i > 10:
            recs.append((ts + 2 * US, frame("233.54.12.1", sent[i - 7])))  # a late repeat
        if rng.random() < 0.01:
            hb = encode_packet(session, seq + len(msgs), [], count=0)
            recs.append((ts + 3 * US, frame("233.54.12.1", hb)))
        if rng.random() < 0.01:
            recs.append((ts + 4 * US, frame("10.9.9.9", b"noise", src="10.9.9.8", dport=5000)))
        if rng.random() < 0.004:                       # an end of session the feed carries on after
            eos = encode_packet(session, seq + len(msgs), [], count=0xFFFF)
            recs.append((ts + 4 * US, frame("233.54.12.1", eos)))
        if rng.random() < 0.005:
            recs.append((ts - 50 * US, frame("233.54.12.2", p)))           # capture time going back
        ts += 20 * US if rng.random() > 0.003 else 3 * 10**9               # a silence past the limit
    recs.append((ts, frame("233.54.12.1", encode_packet(session, 0, [], count=0xFFFF))))   # end of session
    recs.append((ts + US, frame("233.54.12.1", encode_packet(session, 99, [_add(10**6)]))))
    return sorted(recs, key=lambda r: r[0]) if b_lag > 20 * US else recs


@pytest.mark.parametrize("seed, b_lag", [(3, 5 * US), (4, 5 * US), (8, 50 * US)])
def test_a_damaged_ab_feed(tmp_path, seed, b_lag):
    pcap = write_pcap(tmp_path / "damaged.pcap", _damaged_records(seed, b_lag=b_lag))
    taken, doc = same_report(pcap, cfgmod.loads(CONFIG), stale_after_ns=10**9)
    assert taken > 3_500, taken
    f = doc["feeds"]["NSDQ"]
    arb = f["arbitrated"]
    assert f["gaps"] > 0 and arb["session_changes"] >= 2 and arb["stale_episodes"] > 0
    assert doc["decode_errors"]["ITCH/MoldUDP64"] and doc["frames_rejected"]


def test_capture_formats_window_and_snap(tmp_path):
    recs = _damaged_records(5, 800)
    cfg = cfgmod.loads(CONFIG)
    for name, kw in (("us.pcap", {"nsec": False}), ("be.pcap", {"big_endian": True}),
                     ("snap.pcap", {"snap": 90})):
        pcap = write_pcap(tmp_path / name, recs, **kw)
        taken, _doc = same_report(pcap, cfg, stale_after_ns=10**9)
        assert taken > (0 if name == "snap.pcap" else 300), (name, taken)
    pcap = write_pcap(tmp_path / "w.pcap", recs)
    mid = recs[len(recs) // 3][0]
    taken, doc = same_report(pcap, cfg, from_ns=mid, to_ns=mid + 5 * 10**9)
    assert doc["outside_window"] > 0 and taken > 100


def test_small_chunks_split_records_across_reads(tmp_path, monkeypatch):
    """Records cut by the reader's chunk boundary: the lane stops there and the reader refills."""
    from hft_packetfilter.sources import pcap as pcapmod

    monkeypatch.setattr(pcapmod.open_capture, "__defaults__", (None, 700))
    packets, session = order_flow(400, seed=6)
    pcap = write_pcap(tmp_path / "c.pcap", packets_to_records(packets, session))
    taken, doc = same_report(pcap, cfgmod.loads(CONFIG))
    assert taken > 350 and doc["capture"]["records"] == 400


def test_no_lane_where_it_cannot_serve(tmp_path):
    packets, session = order_flow(50, seed=7)
    recs = packets_to_records(packets, session)
    cfg = cfgmod.loads(CONFIG)
    # a classic pcap of another link type (raw IPv4): the Python reader and parser
    raw = [(ts, f[14:]) for ts, f in recs]
    pcap = tmp_path / "raw.pcap"
    write_pcap(pcap, raw)
    data = bytearray(pcap.read_bytes())
    data[20:24] = struct.pack("<I", 228)                     # LINKTYPE_IPV4
    pcap.write_bytes(bytes(data))
    taken, doc = same_report(pcap, cfg)
    assert taken == 0 and doc["feeds"]["NSDQ"]["arbitrated"]["packets"] == 50


TWO_VENUES = CONFIG + """\
  - name: BX
    hosts: [233.54.13.1]
    ports: [26477]
    protocol: ITCH/MoldUDP64
"""


def test_a_cross_venue_view_gets_the_same_quotes(tmp_path):
    """Two ITCH venues trading the same symbols (a cross-venue view: consolidated tops, crossed and
    locked markets, arbitrage): the lane hands the view every touched book's top as it was right
    after each packet, in the pipeline's order."""
    a, sa = order_flow(1_500, seed=12)
    b, sb = order_flow(1_500, seed=13, session="BXTEST0001")
    recs = packets_to_records(a, sa, ("233.54.12.1", "233.54.12.2"))
    for ts, f in packets_to_records(b, sb, ("233.54.13.1",)):
        recs.append((ts + 7 * US, f))
    recs.sort(key=lambda r: r[0])
    pcap = write_pcap(tmp_path / "two.pcap", recs)
    taken, doc = same_report(pcap, cfgmod.loads(TWO_VENUES))
    cv = doc["crossvenue"]
    assert cv["totals"]["crossed"] > 0 and cv["totals"]["arbitrage"] > 0, cv["totals"]
    assert taken > 4_000, taken
    # and the damaged A/B feed with the view forced on (one venue: quotes without crossings)
    pcap = write_pcap(tmp_path / "damaged.pcap", _damaged_records(14, 1_500, b_lag=50 * US))
    taken, doc = same_report(pcap, cfgmod.loads(CONFIG), crossvenue=True, stale_after_ns=10**9)
    assert taken > 1_500 and doc["crossvenue"] != {"enabled": False}


def _block(t: int, body: bytes, bo: str = "<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack(bo + "II", t, len(body) + 12) + body + struct.pack(bo + "I", len(body) + 12)


def _shb(bo: str = "<") -> bytes:
    return _block(0x0A0D0D0A, struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1), bo)


def _idb(linktype: int = 1, tsresol=None, offset_s=None, bo: str = "<") -> bytes:
    opts = b""
    if tsresol is not None:
        opts += struct.pack(bo + "HHB3x", 9, 1, tsresol)
    if offset_s is not None:
        opts += struct.pack(bo + "HHq", 14, 8, offset_s)
    if opts:
        opts += b"\x00" * 4
    return _block(1, struct.pack(bo + "HHI", linktype, 0, 0) + opts, bo)


def _epb(ticks: int, f: bytes, iid: int = 0, bo: str = "<") -> bytes:
    return _block(6, struct.pack(bo + "IIIII", iid, ticks >> 32, ticks & 0xFFFFFFFF, len(f), len(f)) + f, bo)


def _write_pcapng(path: Path, recs, bo: str = "<", tsresol=9, offset_s=None) -> Path:
    """One section, one Ethernet interface; ticks from ``tsresol`` (as if_tsresol; None: the
    default microseconds) and ``offset_s`` (if_tsoffset)."""
    def ticks(ts):
        ts -= (offset_s or 0) * 10**9
        if tsresol is None:
            return ts // 1000
        if tsresol & 0x80:
            return (ts << (tsresol & 0x7F)) // 10**9
        return ts * 10**tsresol // 10**9

    out = [_shb(bo), _idb(1, tsresol, offset_s, bo)]
    out += [_epb(ticks(ts), f, bo=bo) for ts, f in recs]
    path.write_bytes(b"".join(out))
    return path


@pytest.mark.parametrize("bo, tsresol, offset_s", [("<", 9, None), (">", 9, None), ("<", None, None),
                                                    ("<", 0x80 | 30, None), ("<", 12, 1_699_999_000)])
def test_pcapng(tmp_path, bo, tsresol, offset_s):
    recs = _damaged_records(9, 600)
    pcap = _write_pcapng(tmp_path / "f.pcapng", recs, bo, tsresol, offset_s)
    taken, doc = same_report(pcap, cfgmod.loads(CONFIG), stale_after_ns=10**9)
    assert taken > 500 and doc["capture"]["format"] == "pcapng", taken


def _multi_pcapng(tmp_path):
    """Two interfaces (one not Ethernet), a second section in the other byte order, Simple Packet
    Blocks (they carry the previous packet's time, which the lane's last packet sets) and other
    block types."""
    packets, session = order_flow(300, seed=10)
    recs = packets_to_records(packets, session, ("233.54.12.1", "233.54.12.2"))
    out = [_shb(), _idb(1, 9), _idb(228, 9)]
    for k, (ts, f) in enumerate(recs[:300]):
        if k % 50 == 7:
            out.append(_block(3, struct.pack("<I", len(f)) + f))          # SPB: interface 0, time of the last
        elif k % 40 == 3:
            out.append(_epb(ts, f[14:], iid=1))                           # raw IPv4 interface
        else:
            out.append(_epb(ts, f))
        if k % 60 == 5:
            out.append(_block(5, b"\x00" * 8))                           # an interface statistics block
    out += [_shb(">"), _idb(1, 6, None, ">")]
    out += [_epb(ts // 1000, f, bo=">") for ts, f in recs[300:]]
    pcap = tmp_path / "multi.pcapng"
    pcap.write_bytes(b"".join(out))
    return pcap, recs


def test_pcapng_interfaces_sections_and_simple_blocks(tmp_path):
    """The lane takes only Ethernet interfaces' Enhanced Packet Blocks."""
    pcap, recs = _multi_pcapng(tmp_path)
    taken, doc = same_report(pcap, cfgmod.loads(CONFIG))
    raw = sum(1 for k in range(300) if k % 50 != 7 and k % 40 == 3)
    assert doc["capture"]["linktypes"] == {"1": len(recs) - raw, "228": raw}
    assert taken > 500, taken


@pytest.mark.skipif(not (CORPUS / "omi-nasdaq-itch50").is_dir(), reason=f"ITCH corpus absent: {CORPUS}")
def test_the_corpus():
    from hft_packetfilter.classify import guess
    from hft_packetfilter.sources.pcap import read_events

    for f in sorted((CORPUS / "omi-nasdaq-itch50").rglob("*.pcap")):
        cfg, _notes = guess(read_events(f))
        same_report(f, cfg)


def test_the_bench_capture(tmp_path):
    sys.path.insert(0, str(ROOT / "tools" / "bench"))
    import replay

    pcap = tmp_path / "bench.pcap"
    n_msgs = replay.write_itch_capture(pcap, 5_000, seed=3, symbols=40, max_live=400)
    taken, doc = same_report(pcap, cfgmod.loads(replay.CONFIG))
    assert taken >= 4_900 and doc["feeds"]["BENCH"]["messages"] == n_msgs


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_the_reader_yields_what_the_lane_leaves_as_it_would_without(tmp_path, kind):
    """records(lane) yields exactly the records the lane did not take, in order and unchanged
    (times included: a Simple Packet Block after a taken packet has that packet's time)."""
    from hft_packetfilter.sources.packet import parse
    from hft_packetfilter.sources.pcap import open_capture

    if kind == "pcap":
        pcap = write_pcap(tmp_path / "d.pcap", _damaged_records(11, 400))
    else:
        pcap, _ = _multi_pcapng(tmp_path)
    cfg = cfgmod.loads(CONFIG)
    with open_capture(pcap) as r:
        plain = list(r.records())
    pipe = Pipeline(cfg)
    got = []
    with open_capture(pcap) as r:
        lane = fastlane.FastLane.for_capture(pipe, r)
        for rec in r.records(lane.core):
            lane.sync()
            got.append(rec)
            ev = parse(rec[2], rec[1], rec[0], rec[3], {}, pipe.clock)
            if ev is not None:
                pipe.feed(ev)
                lane.after(ev)
        lane.sync()
        assert r.records_read == len(plain)
    assert lane.records > 100 and len(got) + lane.records == len(plain)
    it = iter(plain)
    assert all(any(g == p for p in it) for g in got)        # an ordered sub-sequence of the plain records


# ---- the compiled loop on bytes it was not built for -------------------------------------------------

def _lane_with_a_line():
    from hft_packetfilter.analytics.books import ItchBook

    dec = itch50.ITCH50Decoder()
    book = ItchBook("F")
    lane = _accel.NATIVE.MoldLane(10**9)
    s = lane.add_stream()
    i = lane.add_line(s, book._core, dec._core, book._book_index, book._apply_other)
    lane.add_flow(_ip4("10.2.0.1"), _ip4("233.54.12.1"), 50000, 26477, i)
    lane.set_line(i, True, b"NSDQTEST01", 1, T0, T0)
    lane.set_stream(s, True, 0, 1, T0, T0)
    book._book_index(1, b"S1      ")      # locate 1 has a book: adds for it are taken
    return lane, book


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300), pos=st.integers(0, 40), hlen=st.sampled_from([16, 24]),
       little=st.booleans(), damage=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6))
def test_run_fuzz(body, pos, hlen, little, damage):
    """Random bytes, and a well-formed record with random byte damage: run never crashes, never reads
    past the buffer, and returns a position on a record boundary it reached."""
    lane, _book = _lane_with_a_line()
    good = frame("233.54.12.1", encode_packet("NSDQTEST01", 1, [_add(1)]))
    o = "<" if little else ">"
    rec = bytearray(struct.pack(o + "IIII", T0 // 10**9, T0 % 10**9, len(good), len(good)) + b"\x00" * (hlen - 16)
                    + good)
    for at, v in damage:
        rec[at % len(rec)] = v
    for buf in (body, bytes(rec) + body):
        p, taken, last = lane.run(buf, pos, hlen, 1, 1, little)
        assert pos <= p <= max(pos, len(buf)) and taken >= 0
        assert (p == pos) == (taken == 0) and (last is None) == (taken == 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300), pos=st.integers(0, 40), little=st.booleans(),
       iface=st.tuples(st.sampled_from([1, 1, 228]), st.sampled_from([1, 1000]), st.sampled_from([1, 1000]),
                       st.sampled_from([0, 30, 63]), st.integers(-2**40, 2**40)),
       damage=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6))
def test_run_ng_fuzz(body, pos, little, iface, damage):
    """run_ng on random bytes and on a damaged Enhanced Packet Block: no crash, no read past the
    buffer, a position on a block boundary it reached."""
    lane, _book = _lane_with_a_line()
    lane.set_ifaces([iface])
    bo = "<" if little else ">"
    good = bytearray(_epb(T0, frame("233.54.12.1", encode_packet("NSDQTEST01", 1, [_add(1)])), bo=bo))
    for at, v in damage:
        good[at % len(good)] = v
    for buf in (body, bytes(good) + body):
        p, taken, last = lane.run_ng(buf, pos, little)
        assert pos <= p <= max(pos, len(buf)) and taken >= 0
        assert (p == pos) == (taken == 0) and (last is None) == (taken == 0)


# ---- the live agent's payload records -----------------------------------------------------------------

_PAYLOAD = struct.Struct("=HHIQ16s16sHHIBBHHBB")     # struct hftpf_ev_payload without data[]
_V4 = bytes(10) + b"\xff\xff"


def _payload_records(recs, snaplen: int = 1500):
    """The probe's ring-buffer records for the UDP datagrams of ``recs`` (Ethernet frames), as one
    drained batch (buf, offsets): IPv4 and IPv6, some truncated to the snap length, with connection
    records in between."""
    from hft_packetfilter.sources.packet import parse

    parts, offsets, pos = [], [], 0
    for k, (ts, f) in enumerate(recs):
        ev = parse(f, 1, ts)
        if ev is None or ev.transport != "udp":
            continue
        p = ev.payload
        cap = min(len(p), snaplen if k % 97 else 40)          # now and then a truncated record
        src = _V4 + ev.src if ev.family == 4 else ev.src
        dst = _V4 + ev.dst if ev.family == 4 else ev.dst
        rec = _PAYLOAD.pack(3, _PAYLOAD.size + cap, 0, ts, src, dst, ev.sport, ev.dport, 0, 1, 0, cap, len(p), 17, 0)
        rec += p[:cap]
        if k % 50 == 9:                                       # a connection record (type 4) first
            conn = struct.pack("=HHIQ", 4, 56, 0, ts) + bytes(40)
            parts.append(conn + bytes(-len(conn) % 8))
            offsets.append(pos)
            pos += len(parts[-1])
        parts.append(rec + bytes(-len(rec) % 8))
        offsets.append(pos)
        pos += len(parts[-1])
    return b"".join(parts), offsets


class _Ring:
    """Stands for the ring reader: hands out one batch."""

    def __init__(self, buf, offsets):
        self.batch = (buf, offsets)

    def drain_offsets(self):
        batch, self.batch = self.batch, (b"", [])
        return batch


@pytest.mark.parametrize("crossvenue", [False, True])
def test_live_payload_records(crossvenue):
    """ProbeRuntime.drain with the live agent's lane: the same pipeline report, payload counters and
    record counts as every record through LivePayloads and Pipeline.feed."""
    import collections

    from hft_packetfilter.kernel.runtime import ProbeRuntime
    from hft_packetfilter.sources.live import LivePayloads

    buf, offsets = _payload_records(_damaged_records(15, 1_500, b_lag=50 * US))
    cfg = cfgmod.loads(CONFIG)
    out = []
    for on in (True, False):
        pipe = Pipeline(cfg, clock="tai", crossvenue=crossvenue, stale_after_ns=10**9)
        pipe.fast_lane = on
        payloads = LivePayloads(1500)
        lane = fastlane.FastLane.for_live(pipe)
        assert (lane is not None) == on

        def on_event(etype, b, off, length):          # LiveAgent._on_event, payload records
            if etype == 3:
                ev = payloads.event(b, off, length)
                if ev is not None:
                    pipe.feed(ev)
                    if lane is not None:
                        lane.after(ev)

        rt = object.__new__(ProbeRuntime)
        rt.ring, rt.on_event, rt.by_type = _Ring(buf, offsets), on_event, collections.Counter()
        rt.recent_gaps, rt.stats = collections.deque(), _stats()
        rt.lane_run = (lambda b, offs, i: lane.run_live(b, offs, i, payloads)) if lane is not None else None
        assert rt.drain() == len(offsets)
        pipe.close()
        out.append((pipe.report(), _state(pipe), (payloads.records, payloads.truncated, payloads.bad),
                    dict(rt.by_type), lane.records if lane is not None else 0))
    on, off = out
    assert on[0] == off[0], _first_difference(on[0], off[0])
    assert on[1:4] == off[1:4]
    assert on[4] > 2_000 and on[2][1] > 10, (on[4], on[2])   # the lane took most; truncated ones were not


def _stats():
    from hft_packetfilter import abi

    return abi.AgentStats()
