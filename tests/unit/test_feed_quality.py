"""Feed quality: exact gap/duplicate/reorder counts, A/B arbitration, staleness, latency, score."""
import random
import sys
from pathlib import Path

import pytest

from hft_packetfilter.analytics.feed_quality import FeedQuality, quality_score
from hft_packetfilter.protocols.moldudp64 import encode_packet, parse_header

sys.path.insert(0, str(Path(__file__).resolve().parent))
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
MS = 1_000_000
S = 1_000_000_000

GAP_SIZES = [1, 2, 3, 5, 8, 13, 1, 1, 4, 7, 100, 2, 9]          # 13 gaps, 156 messages
DUP_PACKETS = [(10, 2), (50, 1), (51, 1), (77, 1)]              # (packet index, messages): 5 duplicates


def _mold_stream(n_packets=400, seed=11):
    """MoldUDP64 datagrams (real framing) with known gaps and duplicates; returns (datagrams, truth)."""
    rng = random.Random(seed)
    gap_at = sorted(rng.sample(range(20, n_packets - 5), len(GAP_SIZES)))
    seq = 1
    sent = []
    delivered = 0
    for i in range(n_packets):
        if gap_at and i == gap_at[0]:
            seq += GAP_SIZES[len(GAP_SIZES) - len(gap_at)]
            gap_at.pop(0)
        cnt = rng.randint(1, 4)
        sent.append(encode_packet("SESSION01", seq, [b"A" * 36] * cnt))
        delivered += cnt
        seq += cnt
    out = []
    for i, dg in enumerate(sent):
        out.append(dg)
    dups = []
    for idx, k in DUP_PACKETS:
        s, q, c = parse_header(sent[idx])
        dups.append((idx + 3, encode_packet("SESSION01", q, [b"A" * 36] * k)))
    for pos, dg in sorted(dups, reverse=True):
        out.insert(pos, dg)
    return out, {"messages": delivered, "gaps": 13, "missing": sum(GAP_SIZES), "duplicates": 5}


def _feed(fq, datagrams, stream="NASDAQ/ITCH", line="A", t0=0, step=MS):
    for i, dg in enumerate(datagrams):
        session, seq, count = parse_header(dg)
        fq.on_packet(stream, line, t0 + i * step, seq, count, session=session)


def test_mold_gaps_and_duplicates_exact():
    dgs, truth = _mold_stream()
    fq = FeedQuality()
    _feed(fq, dgs)
    snap = fq.snapshot()["streams"]["NASDAQ/ITCH"]
    line = snap["lines"]["A"]
    for k, v in truth.items():
        assert line[k] == v, k
        assert snap[k] == v, k
    assert line["out_of_order"] == 0 and line["gaps_unfilled"] == 13 and line["resets"] == 0
    assert line["packets"] == 404


def test_ab_lines_b_fills_every_gap():
    dgs, truth = _mold_stream()
    full, _ = _mold_stream()
    # line B: every packet, no gaps; rebuild B from A's sequence space without gaps
    fq = FeedQuality()
    # A: with gaps; B: complete sequence 1..N in the same packets (B arrives 50 us after A)
    seqs = [parse_header(d)[1:] for d in dgs]
    last = max(s + c for s, c in seqs)
    b_packets = [(s, 1) for s in range(1, last)]
    events = []
    for i, (s, c) in enumerate(seqs):
        events.append((i * MS, "A", s, c))
    # B delivers each message 50 us after A delivers the packet carrying it, or after the slot a gap sits in
    t_of = {}
    for i, (s, c) in enumerate(seqs):
        for q in range(s, s + c):
            t_of.setdefault(q, i * MS)
    prev = 0
    for q, _ in b_packets:
        prev = t_of.get(q, prev)
        events.append((prev + 50_000, "B", q, 1))
    events.sort(key=lambda e: (e[0], e[1]))
    for t, ln, s, c in events:
        fq.on_packet("X", ln, t, s, c, session="S1")
    snap = fq.snapshot()["streams"]["X"]
    a, b, arb = snap["lines"]["A"], snap["lines"]["B"], snap["arbitrated"]
    assert (a["gaps"], a["missing"], a["duplicates"]) == (13, 156, 5)
    assert (b["gaps"], b["missing"], b["duplicates"]) == (0, 0, 0)
    assert arb["missing"] == 0 and arb["gaps_unfilled"] == 0
    assert arb["messages"] == last - 1
    assert arb["duplicates"] == 5
    assert arb["redundant"] == (truth["messages"] + 5 + last - 1) - (last - 1) - 5
    assert arb["out_of_order"] == 0
    assert snap["score"] == round(100.0 - min(5.0, 5 * 100 * 5 / (last - 1)), 1) == 97.8   # only A's 5 duplicates


def test_ab_both_lines_lose_the_same_messages():
    fq = FeedQuality()
    for t, (s, c) in enumerate([(1, 5), (6, 5), (14, 2), (16, 4)]):   # 11-13 lost on A
        fq.on_packet("X", "A", t * MS, s, c)
    for t, (s, c) in enumerate([(1, 5), (6, 4), (14, 2), (16, 4)]):   # 10-13 lost on B
        fq.on_packet("X", "B", t * MS + 1000, s, c)
    snap = fq.snapshot()["streams"]["X"]
    assert snap["lines"]["A"]["missing"] == 3 and snap["lines"]["B"]["missing"] == 4
    arb = snap["arbitrated"]
    assert (arb["gaps"], arb["missing"], arb["gaps_unfilled"], arb["messages"]) == (1, 3, 1, 16)


def test_out_of_order_fill_single_line():
    fq = FeedQuality()
    for t, s in enumerate([1, 2, 4, 5, 3, 6]):
        fq.on_packet("X", "A", t, s, 1)
    ln = fq.snapshot()["streams"]["X"]["lines"]["A"]
    assert (ln["gaps"], ln["missing"], ln["out_of_order"], ln["gaps_unfilled"], ln["duplicates"]) == (1, 0, 1, 0, 0)
    fq.on_packet("X", "A", 10, 3, 1)    # again: now a duplicate
    ln = fq.snapshot()["streams"]["X"]["lines"]["A"]
    assert (ln["duplicates"], ln["messages"]) == (1, 6)


def test_partial_fill_keeps_gap_unfilled():
    fq = FeedQuality()
    fq.on_packet("X", "A", 0, 1, 1)
    fq.on_packet("X", "A", 1, 10, 1)    # 2..9 missing
    fq.on_packet("X", "A", 2, 3, 2)     # 3, 4 arrive late
    ln = fq.snapshot()["streams"]["X"]["lines"]["A"]
    assert (ln["missing"], ln["out_of_order"], ln["gaps_unfilled"]) == (6, 2, 1)
    fq.on_packet("X", "A", 3, 2, 1)
    fq.on_packet("X", "A", 4, 5, 5)
    ln = fq.snapshot()["streams"]["X"]["lines"]["A"]
    assert (ln["missing"], ln["out_of_order"], ln["gaps_unfilled"], ln["gaps"]) == (0, 8, 0, 1)


def test_packet_straddling_expected():
    fq = FeedQuality()
    fq.on_packet("X", "A", 0, 1, 5)     # 1..5
    fq.on_packet("X", "A", 1, 4, 4)     # 4,5 dup, 6,7 new
    ln = fq.snapshot()["streams"]["X"]["lines"]["A"]
    assert (ln["messages"], ln["duplicates"], ln["next_expected"]) == (7, 2, 8)


def test_heartbeat_reveals_gap_and_reset_and_session_change():
    fq = FeedQuality()
    fq.on_packet("X", "A", 0, 1, 30, session="S1")
    fq.on_packet("X", "A", 1, 33, 0, session="S1")     # heartbeat: next expected is 33 -> 31, 32 missing
    fq.on_packet("X", "A", 2, 33, 2, session="S1")
    fq.on_packet("X", "A", 3, 1, 2, session="S1")      # sequence reset (34 -> 1)
    fq.on_packet("X", "A", 4, 3, 1, session="S1")
    fq.on_packet("X", "A", 5, 1, 1, session="S2")      # new session
    fq.on_reset("X", "A", 6)                           # explicit reset
    fq.on_packet("X", "A", 7, 1, 1, session="S2")
    snap = fq.snapshot()["streams"]["X"]
    for ln in (snap["lines"]["A"], snap["arbitrated"]):
        assert (ln["gaps"], ln["missing"], ln["resets"], ln["session_changes"], ln["heartbeats"]) == (1, 2, 2, 1, 1)
        assert (ln["messages"], ln["duplicates"], ln["next_expected"], ln["session"]) == (37, 0, 2, "S2")


def test_small_drop_to_one_is_not_a_reset():
    fq = FeedQuality()
    for t, s in enumerate([2, 3, 4, 1, 5]):            # message 1 arrives late at the start
        fq.on_packet("X", "A", t, s, 1)
    ln = fq.snapshot()["streams"]["X"]["lines"]["A"]
    assert (ln["resets"], ln["duplicates"], ln["next_expected"]) == (0, 1, 6)


def test_ab_reset_on_both_lines_counts_once():
    fq = FeedQuality()
    for t in range(40):
        fq.on_packet("X", "A", 2 * t, t + 1, 1)
        fq.on_packet("X", "B", 2 * t + 1, t + 1, 1)
    fq.on_packet("X", "A", 100, 1, 1)
    fq.on_packet("X", "B", 101, 40, 1)                 # B still sends an old-session copy
    fq.on_packet("X", "B", 102, 1, 1)
    fq.on_packet("X", "A", 103, 2, 1)
    fq.on_packet("X", "B", 104, 2, 1)
    arb = fq.snapshot()["streams"]["X"]["arbitrated"]
    assert (arb["resets"], arb["messages"], arb["missing"], arb["next_expected"]) == (1, 42, 0, 3)


def test_stale_episode_exact_and_end_of_session():
    fq = FeedQuality(stale_after_ns=5 * S)
    for k in range(5):
        fq.on_packet("X", "A", k * S, 1, 0)            # heartbeats every second (next expected: 1)
    fq.tick(9 * S)
    assert fq.snapshot()["streams"]["X"]["arbitrated"]["stale"] is False   # exactly 5 s: not yet
    fq.tick(10 * S)
    snap = fq.snapshot()["streams"]["X"]
    assert snap["arbitrated"]["stale"] is True and snap["lines"]["A"]["stale_since_ns"] == 4 * S
    assert snap["arbitrated"]["episodes"] == [{"start_ns": 4 * S, "end_ns": None, "duration_ns": 6 * S}]
    assert snap["score"] == 100.0 - 20.0          # 6 of 10 s stale: the stale term is capped at 20
    fq.on_packet("X", "A", 11 * S, 1, 1)
    fq.tick(12 * S)
    a = fq.snapshot()["streams"]["X"]["arbitrated"]
    assert a["stale"] is False and a["stale_episodes"] == 1 and a["stale_ns"] == 7 * S
    assert a["episodes"] == [{"start_ns": 4 * S, "end_ns": 11 * S, "duration_ns": 7 * S}]
    # silence without a tick in between is still caught on the next packet
    fq.on_packet("X", "A", 20 * S, 2, 1)
    assert fq.snapshot()["streams"]["X"]["lines"]["A"]["stale_episodes"] == 2
    # after end of session, silence is expected
    fq.on_end_of_session("X", "A", 21 * S, seq=3)
    fq.tick(60 * S)
    a = fq.snapshot()["streams"]["X"]["arbitrated"]
    assert a["stale"] is False and a["stale_episodes"] == 2 and a["ended"] is True


def test_feed_latency_percentiles_exact():
    fq = FeedQuality(clock="tai")
    for i in range(100):
        fq.on_packet("X", "A", 10 * S + i * MS + (i + 1) * 1000, i + 1, 1, exchange_ts_ns=10 * S + i * MS)
        fq.on_packet("X", "B", 10 * S + i * MS + 500_000, i + 1, 1, exchange_ts_ns=10 * S + i * MS)
    s = fq.snapshot()["streams"]["X"]
    la = s["lines"]["A"]["latency_us"]
    assert (la["p50"], la["p99"], la["max"], la["clock"]) == (50.0, 99.0, 100.0, "tai")
    assert s["lines"]["B"]["latency_us"]["p50"] == 500.0
    assert s["arbitrated"]["latency_us"]["max"] == 100.0      # A always won


def test_score_formula():
    f = {"packets": 10, "messages": 9999, "missing": 1, "gaps_unfilled": 3, "out_of_order": 20,
         "duplicates": 50}
    loss = min(50, 50 * 1000 * 1 / 10000)
    order = min(10, 10 * 100 * 20 / 10000)
    dups = min(5, 5 * 100 * 50 / 10000)
    stale = min(20, 20 * 10 * 1 / 100)
    assert quality_score(f, 1, 100, False) == round(100 - loss - 3 - order - dups - stale, 1) == 85.5
    assert quality_score(dict(f, packets=0), 0, 0, False) is None
    assert quality_score({"packets": 1, "messages": 5, "missing": 0, "gaps_unfilled": 0, "out_of_order": 0,
                          "duplicates": 0}, 0, 10, True) == 90.0


def test_odd_input_never_raises():
    fq = FeedQuality()
    fq.on_packet("X", "A", 0, None, 1)
    fq.on_packet("X", "A", 0, -1, 1)
    fq.on_packet("X", "A", 5, 3, 1)
    fq.on_packet("X", "A", 1, 2, 1)     # timestamps going backwards
    assert fq.bad_input == 2
    assert fq.snapshot()["streams"]["X"]["lines"]["A"]["out_of_order"] == 0


def test_many_holes_bounded():
    fq = FeedQuality(max_holes=8)
    for i in range(100):
        fq.on_packet("X", "A", i, 1 + 2 * i, 1)
    ln = fq.snapshot()["streams"]["X"]["lines"]["A"]
    assert ln["gaps"] == 99 and ln["missing"] == 99 and ln["holes_expired"] == 91
    fq.on_packet("X", "A", 200, 2, 1)   # its hole was forgotten: counted as a duplicate-ish late copy
    assert fq.streams["X"].lines["A"].seq.holes.__len__() == 8


PITCH_FILE = CORPUS / "omi-cboe-pitch" / "Byx.Equities.DepthOfBook.Pitch.v2.41" / "AddOrderShortMessage.pcap"


@pytest.mark.skipif(not PITCH_FILE.is_file(), reason=f"corpus capture absent: {PITCH_FILE}")
def test_real_pitch_units_sequence():
    from _pcap_feeds import read_pcap
    from hft_packetfilter.protocols.pitch import PitchDecoder
    fq = FeedQuality()
    d = PitchDecoder()
    for fr in read_pcap(PITCH_FILE):
        d.feed(fr.payload, fr.ts_ns)
        u = d.last_unit
        fq.on_packet(("BYX", u.unit), "A", fr.ts_ns, u.seq, u.count)
    streams = fq.snapshot()["streams"]
    assert sorted(streams) == ["BYX/15", "BYX/17", "BYX/31"]
    s15 = streams["BYX/15"]["arbitrated"]
    # unit 15: 47690 x2, 47692 x1, 47693 x2: contiguous; unit 17: 14003 x1; unit 31: 35742 x3
    assert (s15["messages"], s15["gaps"], s15["missing"], s15["next_expected"]) == (5, 0, 0, 47695)
    assert streams["BYX/17"]["arbitrated"]["next_expected"] == 14004
    assert streams["BYX/31"]["arbitrated"]["messages"] == 3


def test_ab_late_b_fill_is_reorder_not_loss():
    fq = FeedQuality()
    fq.on_packet("X", "A", 0, 1, 5)
    fq.on_packet("X", "A", 10, 9, 2)        # A lost 6..8
    fq.on_packet("X", "B", 12, 1, 5)
    fq.on_packet("X", "B", 13, 6, 3)        # B's copy of 6..8 arrives after A's 9..10
    fq.on_packet("X", "B", 14, 9, 2)
    s = fq.snapshot()["streams"]["X"]
    arb = s["arbitrated"]
    assert (arb["gaps"], arb["missing"], arb["gaps_unfilled"], arb["out_of_order"], arb["messages"]) == (1, 0, 0, 3, 10)
    assert s["lines"]["A"]["missing"] == 3 and arb["redundant"] == 7
