"""Market-data simulators (sim/feeds.py): what they generate decodes with our own decoders with zero
rejects, books stay consistent, venues cross now and then, and injected gaps / duplicate bursts /
stalls show up in analytics/feed_quality.py exactly as injected (sent over loopback UDP)."""
import collections
import socket
import struct
import time
from pathlib import Path

import pytest

from hft_packetfilter.analytics.feed_quality import FeedQuality
from hft_packetfilter.protocols import mdp3, moldudp64, pitch
from hft_packetfilter.sim import feeds

from _pcap import build_frame, write_pcap

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
V9 = CORPUS / "sbe-schemas-cme" / "templates_FixBinary.v9.xml"
needs_schema = pytest.mark.skipif(not V9.is_file(), reason=f"CME MDP3 schema (corpus) not present at {V9}")


# ---------------------------------------------------------------------------- ITCH / MoldUDP64

def test_itch_moldudp64_decodes_with_zero_rejects_and_a_consistent_book():
    gen = feeds.ItchGenerator(seed=4, max_batch=5)
    dec = moldudp64.MoldUDP64Decoder()
    types = collections.Counter()
    live = {}                                  # ref -> (locate, side, shares, price)
    expect_seq = 1
    for _ in range(4000):
        pkt = gen.next_packet()
        session, seq, count = moldudp64.parse_header(pkt)
        assert session == "HFTSIM0001" and seq == expect_seq and count == gen.last_count >= 1
        assert len(pkt) <= feeds.MAX_DATAGRAM
        expect_seq += count
        msgs = dec.feed(pkt)
        assert len(msgs) == count
        for m in msgs:
            types[m.msg_type] += 1
            t = m.msg_type
            if t == "A":
                assert m.order_reference_number not in live
                assert m.price % feeds.EQUITY_TICK == 0 and m.shares % 100 == 0 and m.side in "BS"
                assert dec.symbols[m.stock_locate] == m.stock
                live[m.order_reference_number] = [m.stock_locate, m.side, m.shares, m.price]
            elif t == "E":
                o = live[m.order_reference_number]
                assert o[0] == m.stock_locate and 0 < m.executed_shares <= o[2]
                o[2] -= m.executed_shares
                if o[2] == 0:
                    del live[m.order_reference_number]
            elif t == "X":
                o = live[m.order_reference_number]
                assert 0 < m.cancelled_shares < o[2]
                o[2] -= m.cancelled_shares
            elif t == "D":
                assert live.pop(m.order_reference_number)[0] == m.stock_locate
            elif t == "U":
                o = live.pop(m.original_order_reference_number)
                assert m.new_order_reference_number not in live
                live[m.new_order_reference_number] = [o[0], o[1], m.shares, m.price]
    assert dec.stats.rejected == 0 and dec.inner.stats.rejected == 0, (dec.stats.rejects, dec.inner.stats.rejects)
    assert dec.gaps == 0 and dec.duplicates == 0
    assert set(types) == {"S", "R", "A", "E", "X", "D", "U"}
    assert types["R"] == len(feeds.VENUE_A_SYMBOLS) and types["S"] == 3
    assert sorted(dec.symbols.values()) == sorted(feeds.VENUE_A_SYMBOLS)
    # the venue's own book is never crossed: every bid below every offer, per symbol
    for loc in dec.symbols:
        bids = [o[3] for o in live.values() if o[0] == loc and o[1] == "B"]
        asks = [o[3] for o in live.values() if o[0] == loc and o[1] == "S"]
        if bids and asks:
            assert max(bids) < min(asks)


def test_two_venues_overlap_and_cross_now_and_then():
    walk = feeds.MidWalk(seed=3)
    a = feeds.ItchGenerator(feeds.VENUE_A_SYMBOLS, walk=walk, seed=1, session="VENUEA")
    b = feeds.ItchGenerator(feeds.VENUE_B_SYMBOLS, walk=walk, seed=2, session="VENUEB")
    common = sorted(set(feeds.VENUE_A_SYMBOLS) & set(feeds.VENUE_B_SYMBOLS))
    assert len(common) >= 3 and set(feeds.VENUE_A_SYMBOLS) != set(feeds.VENUE_B_SYMBOLS)
    samples = crossed = 0
    for _ in range(15000):
        a.next_packet()
        b.next_packet()
        for s in common:
            (bid_a, ask_a), (bid_b, ask_b) = a.top(s), b.top(s)
            if None in (bid_a, ask_a, bid_b, ask_b):
                continue
            assert bid_a < ask_a and bid_b < ask_b          # each venue's own book is sane
            samples += 1
            crossed += bid_a > ask_b or bid_b > ask_a
    assert samples > 10000
    assert 0.001 < crossed / samples < 0.10, (crossed, samples)   # now and then, not all the time


# ---------------------------------------------------------------------------- PITCH

def test_pitch_decodes_with_zero_rejects():
    gen = feeds.PitchGenerator(seed=9, unit=7)
    dec = pitch.PitchDecoder()
    names = collections.Counter()
    expect = 1
    live = set()
    for _ in range(3000):
        pkt = gen.next_packet()
        length, count, unit, seq = feeds.PITCH_UNIT_HEADER.unpack_from(pkt)
        assert length == len(pkt) and unit == 7 and seq == expect and count == gen.last_count
        expect += count
        msgs = dec.feed(pkt)
        assert len(msgs) == count
        for m in msgs:
            names[m.name] += 1
            f = m.fields
            if m.name == "AddOrderLong":
                assert f["order_id"] not in live and f["symbol"] in feeds.VENUE_B_SYMBOLS
                assert f["price_raw"] % feeds.EQUITY_TICK == 0
                live.add(f["order_id"])
            elif m.name in ("ModifyOrderLong", "ReduceSizeLong"):
                assert f["order_id"] in live
            elif m.name == "DeleteOrder":
                live.remove(f["order_id"])
            elif m.name == "OrderExecuted":
                assert f["order_id"] in live
    assert dec.stats.rejected == 0, dec.stats.rejects
    assert {"Time", "AddOrderLong", "OrderExecuted", "ReduceSizeLong", "ModifyOrderLong", "DeleteOrder"} <= set(names)
    hb = gen.heartbeat()
    assert dec.feed(hb) == [] and dec.stats.rejected == 0


# ---------------------------------------------------------------------------- MDP3

@needs_schema
def test_mdp3_layout_matches_the_cme_schema_and_decodes_with_zero_rejects():
    dec = mdp3.new_decoder(V9)
    assert feeds.check_mdp3_layout(dec.schema) == []
    gen = feeds.Mdp3Generator(seed=2, depth=5)
    types = collections.Counter()
    books = {sec: {"0": {}, "1": {}} for sec, _px, _t in feeds.MDP3_INSTRUMENTS.values()}
    for i in range(3000):
        pkt = gen.next_packet()
        msgs = dec.feed(pkt)
        assert msgs and all(m.seq == i + 1 for m in msgs)
        for m in msgs:
            types[m.msg_type] += 1
            assert m.schema_id == 1 and m.version == 9
            if m.template_id != 46:
                continue
            for e in m.fields["NoMDEntries"]:
                side = books[e["SecurityID"]]["0" if e["MDEntryType"] == "Bid" else "1"]
                lvl = e["MDPriceLevel"]
                act = e["MDUpdateAction"]
                # aggregated book by level (CME semantics: New inserts and shifts down, Delete shifts up)
                levels = [side.get(k) for k in range(1, 6)]
                if act == "New":
                    levels.insert(lvl - 1, e["MDEntryPx"])
                elif act == "Delete":
                    levels.pop(lvl - 1)
                    levels.append(None)
                else:
                    levels[lvl - 1] = e["MDEntryPx"]
                side.clear()
                side.update({k + 1: p for k, p in enumerate(levels[:5]) if p is not None})
    assert dec.stats.rejected == 0, dec.stats.rejects
    assert types["MDIncrementalRefreshBook"] == 3000 and types["MDIncrementalRefreshTradeSummary"] > 100
    for sec, b in books.items():
        if len(b["0"]) == 5 and len(b["1"]) == 5:
            assert b["0"][1] < b["1"][1]                               # not crossed
            assert [b["0"][k] for k in range(1, 6)] == sorted(b["0"].values(), reverse=True)
            assert [b["1"][k] for k in range(1, 6)] == sorted(b["1"].values())


def test_mdp3_framing_without_a_schema():
    gen = feeds.Mdp3Generator(seed=1)
    dec = mdp3.Mdp3Decoder(schema=None)
    for i in range(50):
        dec.feed(gen.next_packet())
        info = dec.packets[-1]
        assert info.seq == i + 1 and info.framing == "udp"
        assert {t for t, _s, _v in info.templates} <= {46, 48} and (46, 1, 9) in info.templates
    assert set(dec.stats.rejects) == {"no_schema"}


# ---------------------------------------------------------------------------- sender + feed quality

def _receiver():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.5)
    return s


def _drain(s):
    out = []
    try:
        while True:
            out.append(s.recv(65535))
    except socket.timeout:
        pass
    s.close()
    return out


def _seq_of(kind, pkt):
    if kind == "itch":
        session, seq, count = moldudp64.parse_header(pkt)
        return seq, count, session
    if kind == "pitch":
        _l, count, unit, seq = feeds.PITCH_UNIT_HEADER.unpack_from(pkt)
        return seq, count, str(unit)
    seq, _t = struct.unpack_from("<IQ", pkt)
    return seq, 1, None


@pytest.mark.parametrize("kind", ["itch", "pitch", "mdp3"])
def test_sender_injections_show_up_in_feed_quality(kind):
    gen = {"itch": lambda: feeds.ItchGenerator(seed=5), "pitch": lambda: feeds.PitchGenerator(seed=5),
           "mdp3": lambda: feeds.Mdp3Generator(seed=5)}[kind]()
    rx = _receiver()
    inj = [feeds.Injection("gap", at_packet=100, n=7), feeds.Injection("duplicate", at_packet=200, n=3),
           feeds.Injection("gap", at_packet=300, n=2)]
    sender = feeds.FeedSender(gen, rx.getsockname(), rate=20000, duration=10, count=400, injections=inj)
    sender.run()
    st = sender.stats()
    assert st["error"] is None and st["send_errors"] == 0
    assert st["packets"] == 403 and st["gap_seqs"] == 9 and st["dup_packets"] == 3
    assert [e["kind"] for e in st["events"]] == ["gap", "duplicate", "gap"]
    got = _drain(rx)
    assert len(got) == 403
    fq = FeedQuality()
    t = time.time_ns()
    for i, pkt in enumerate(got):
        seq, count, session = _seq_of(kind, pkt)
        fq.on_packet("sim", "A", t + i * 1000, seq, count, session=session)
    f = fq.stream_figures("sim")
    assert f["gaps"] == 2 and f["missing"] == 9
    assert f["duplicates"] == st["dup_seqs"] > 0
    if kind == "mdp3":
        assert st["dup_seqs"] == 3
    assert f["messages"] == st["messages"]


def test_stall_is_silence_and_shows_as_stale():
    rx = _receiver()
    sender = feeds.FeedSender(feeds.ItchGenerator(seed=1), rx.getsockname(), rate=2000, count=200,
                              injections=[feeds.Injection("stall", at_packet=100, seconds=0.4)],
                              on_packet=None)
    stamps = []
    sender.on_packet = lambda pkt: stamps.append((time.monotonic_ns(), pkt))
    sender.run()
    assert sender.stats()["stalled_s"] >= 0.39 and sender.packets == 200
    _drain(rx)
    fq = FeedQuality(stale_after_ns=200_000_000)
    for ts, pkt in stamps:
        seq, count, session = _seq_of("itch", pkt)
        fq.on_packet("sim", "A", ts, seq, count, session=session)
    arb = fq.stream_figures("sim")["arbitrated"]
    assert arb["stale_episodes"] == 1 and arb["gaps"] == 0
    assert arb["episodes"][0]["duration_ns"] >= 390_000_000


def test_sender_bounds_and_rate():
    with pytest.raises(ValueError):
        feeds.FeedSender(feeds.ItchGenerator(), ("127.0.0.1", 9), rate=feeds.MAX_RATE + 1)
    with pytest.raises(ValueError):
        feeds.FeedSender(feeds.ItchGenerator(), ("127.0.0.1", 9), count=feeds.MAX_PACKETS + 1)
    with pytest.raises(ValueError):
        feeds.Injection("duplicate", at_s=1, n=feeds.MAX_DUP_BURST + 1)
    with pytest.raises(ValueError):
        feeds.Injection("flood", at_s=1)
    assert feeds.Injection.parse("gap", "#1000:10") == feeds.Injection("gap", at_packet=1000, n=10)
    assert feeds.Injection.parse("stall", "5s:2.5") == feeds.Injection("stall", at_s=5.0, seconds=2.5)
    rx = _receiver()
    sender = feeds.FeedSender(feeds.Mdp3Generator(), rx.getsockname(), rate=500, duration=0.4)
    t0 = time.monotonic()
    sender.run()
    dt = time.monotonic() - t0
    assert 0.35 < dt < 1.0
    assert 150 <= sender.packets <= 215          # ~200 at 500 pps over 0.4 s
    _drain(rx)


def test_sender_thread_stops_cleanly():
    rx = _receiver()
    sender = feeds.FeedSender(feeds.PitchGenerator(), rx.getsockname(), rate=1000, duration=0)
    sender.start()
    time.sleep(0.2)
    sender.stop()
    sender.join(2)
    assert not sender.is_alive() and sender.packets > 50 and sender.error is None
    _drain(rx)


def test_replay_pcap_sends_udp_payloads(tmp_path):
    gen = feeds.ItchGenerator(seed=8)
    payloads = [gen.next_packet() for _ in range(60)]
    frames = [build_frame("udp", p, 40000, 26477) for p in payloads]
    frames.insert(10, build_frame("tcp", b"8=FIX.4.4\x01", 40001, 9001))        # not UDP: skipped
    frames.insert(20, build_frame("udp", b"other", 40000, 5353))                # other port: skipped
    cap = tmp_path / "feed.pcap"
    write_pcap(cap, frames)
    rx = _receiver()
    st = feeds.replay_pcap(cap, rate=5000, dst=rx.getsockname(), dport=26477, duration=10)
    assert st["packets"] == 60 and st["frames_skipped"] == 2 and st["exhausted"] and st["error"] is None
    assert _drain(rx) == payloads
    rx = _receiver()
    st = feeds.replay_pcap(cap, rate=5000, dst=rx.getsockname(), count=25)
    assert st["packets"] == 25 and not st["exhausted"]
    assert len(_drain(rx)) == 25


@pytest.mark.skipif(not (CORPUS / "omi-nasdaq-itch50").is_dir(), reason="OMI ITCH captures (corpus) not present")
def test_replay_a_real_capture():
    caps = sorted((CORPUS / "omi-nasdaq-itch50").rglob("*.pcap"))
    assert caps
    rx = _receiver()
    st = feeds.replay_pcap(caps[0], rate=1000, dst=rx.getsockname(), duration=5)
    got = _drain(rx)
    assert st["error"] is None and st["packets"] == len(got) >= 1
