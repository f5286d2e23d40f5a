"""Order lifecycle and latency: FIX chains and OUCH tokens with known latencies give exact answers."""
import sys
from pathlib import Path

import pytest

from hft_packetfilter.analytics.execution import ExecutionQuality
from hft_packetfilter.analytics.orders import OrderTracker
from hft_packetfilter.protocols.fix import FixStreamDecoder, checksum
from hft_packetfilter.protocols.ouch import IN, OUT, OuchDecoder, encode_message

sys.path.insert(0, str(Path(__file__).resolve().parent))
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
US = 1000


def fix(mt, *fields):
    body = b"35=" + mt.encode() + b"\x01" + b"".join(b"%d=%s\x01" % (t, str(v).encode()) for t, v in fields)
    head = b"8=FIX.4.4\x019=%d\x01" % len(body)
    return head + body + b"10=" + checksum(head + body) + b"\x01"


def decode(raw, ts=0):
    msgs = FixStreamDecoder().feed(raw, ts)
    assert len(msgs) == 1
    return msgs[0]


def er(cl, et, os_, orig=None, last_qty=None, last_px=None, qty=None):
    f = [(11, cl), (17, "E" + cl + et), (150, et), (39, os_)]
    if orig:
        f.append((41, orig))
    if last_qty is not None:
        f += [(32, last_qty), (31, last_px)]
    if qty is not None:
        f.append((38, qty))
    return fix("8", *f)


def new(cl, qty=100, side=1, px="10.25", sym="AAPL"):
    return fix("D", (11, cl), (55, sym), (54, side), (38, qty), (44, px), (40, 2))


def run(tr, seq, venue="XNAS", session="S1"):
    for ts, raw in seq:
        tr.on_fix(decode(raw), ts, venue, session)


def test_fix_known_ack_latencies_exact_percentiles():
    tr = OrderTracker(clock="tai")
    seq = []
    for i in range(1, 101):       # 100 orders, ack latency i microseconds
        t0 = i * 1_000_000
        seq.append((t0, new(f"O{i}")))
        seq.append((t0 + i * US, er(f"O{i}", "0", "0")))
    run(tr, seq)
    v = tr.snapshot()["venues"]["XNAS"]
    lat = v["latency"]["order_ack_us"]
    assert (lat["p50"], lat["p90"], lat["p99"], lat["p99_9"], lat["max"]) == (50.0, 90.0, 99.0, 100.0, 100.0)
    assert lat["clock"] == "tai" and lat["exact"]
    assert (v["orders"], v["acks"], v["fills"], v["rejects"], v["unmatched_acks"]) == (100, 100, 0, 0, 0)
    assert v["sessions"]["S1"]["acks"] == 100


def test_fix_chain_replace_cancel_fill_and_rejects():
    tr = OrderTracker()
    run(tr, [
        (0, new("A1", qty=300)),
        (10 * US, er("A1", "0", "0")),                                  # ack 10 us
        (20 * US, er("A1", "F", "1", last_qty=100, last_px="10.25")),   # first fill at 20 us
        (30 * US, fix("G", (11, "A2"), (41, "A1"), (38, 200), (44, "10.30"), (55, "AAPL"), (54, 1))),
        (37 * US, er("A2", "5", "1", orig="A1", qty=200)),              # replace ack 7 us
        (40 * US, fix("F", (11, "A3"), (41, "A2"), (55, "AAPL"), (54, 1))),
        (45 * US, er("A3", "6", "6", orig="A2")),                       # pending cancel: cancel ack 5 us
        (50 * US, er("A3", "4", "4", orig="A2")),                       # canceled: terminal
        (60 * US, new("B1")),
        (61 * US, er("B1", "8", "8")),                                  # order reject
        (70 * US, new("C1", qty=50)),
        (72 * US, er("C1", "F", "2", last_qty=50, last_px="10.20")),    # IOC filled at once
        (80 * US, fix("F", (11, "C2"), (41, "C1"))),
        (81 * US, fix("9", (11, "C2"), (41, "C1"), (39, "2"), (434, 1))),   # too late to cancel
        (90 * US, fix("F", (11, "Z2"), (41, "NOPE"))),                  # orphan
        (91 * US, er("GHOST", "0", "0")),                               # unmatched ack
        (92 * US, fix("3", (45, 7), (373, 1))),
        (93 * US, fix("j", (45, 8), (380, 3))),
        (94 * US, fix("0")),                                            # heartbeat: ignored
    ])
    v = tr.snapshot()["venues"]["XNAS"]
    assert (v["orders"], v["acks"], v["fills"], v["filled_orders"], v["rejects"]) == (3, 2, 2, 2, 1)
    assert (v["cancels"], v["cancel_acks"], v["cancel_rejects"], v["replaces"], v["replace_acks"]) == (3, 1, 1, 1, 1)
    assert (v["orphans"], v["unmatched_acks"], v["session_rejects"], v["business_rejects"]) == (1, 1, 1, 1)
    lat = v["latency"]
    assert (lat["order_ack_us"]["count"], lat["order_ack_us"]["min"], lat["order_ack_us"]["max"]) == (2, 2.0, 10.0)
    assert lat["order_fill_us"]["max"] == 20.0 and lat["order_fill_us"]["min"] == 2.0
    assert lat["replace_ack_us"]["max"] == 7.0 and lat["cancel_ack_us"]["max"] == 5.0
    assert v["reject_rate"] == pytest.approx(1 / 3)
    assert v["fill_ratio"] == pytest.approx(150 / 450) and v["fill_ratio_orders"] == pytest.approx(2 / 3)
    o = tr.order("XNAS", "S1", "A3")
    assert o is tr.order("XNAS", "S1", "A1") and o.status == "canceled" and o.qty == 200 and o.cum == 100
    assert tr.order("XNAS", "S1", "B1").status == "rejected"
    snap = tr.snapshot()
    assert snap["live_orders"] == 0 and snap["completed_orders"] == 3 and snap["ignored"] == 1


def test_per_session_and_venue_split():
    tr = OrderTracker()
    run(tr, [(0, new("X1")), (5 * US, er("X1", "0", "0"))], session="S1")
    run(tr, [(0, new("X1")), (9 * US, er("X1", "0", "0"))], session="S2")    # same id, other session
    run(tr, [(0, new("X1")), (3 * US, er("X1", "0", "0"))], venue="ARCA", session="S1")
    s = tr.snapshot()["venues"]
    assert s["XNAS"]["orders"] == 2 and s["XNAS"]["latency"]["order_ack_us"]["max"] == 9.0
    assert s["XNAS"]["sessions"]["S1"]["latency"]["order_ack_us"]["max"] == 5.0
    assert s["ARCA"]["latency"]["order_ack_us"]["p50"] == 3.0


def test_bounded_memory_evicts_completed():
    tr = OrderTracker(max_completed=10, max_live=1000)
    seq = []
    for i in range(50):
        seq += [(i * 100, new(f"K{i}")), (i * 100 + 1, er(f"K{i}", "4", "4"))]   # unsolicited cancel
    seq += [(9999, new("LIVE"))]
    run(tr, seq)
    snap = tr.snapshot()
    assert snap["evicted_completed"] == 40 and snap["completed_orders"] == 10 and snap["live_orders"] == 1
    assert len(tr._ids) == 11
    assert snap["venues"]["XNAS"]["unsolicited_cancels"] == 50
    run(tr, [(10_000, er("K0", "F", "2", last_qty=1, last_px="1"))])   # evicted order: unmatched
    assert tr.snapshot()["venues"]["XNAS"]["unmatched_acks"] == 1


def test_odd_input_counted_not_raised():
    tr = OrderTracker()
    tr.on_fix(object(), 0, "V")
    run(tr, [(0, new("D1")), (1, new("D1"))])
    assert tr.errors == 1 and tr.snapshot()["venues"]["XNAS"]["duplicate_ids"] == 1


def _ouch(direction, mt, **f):
    d = OuchDecoder(direction, "4.2")
    m = d.decode_message(encode_message("4.2", direction, mt, **f))
    assert m is not None, (mt, f)
    return m


ENTER = dict(side="B", shares=100, stock="AAPL", price=1_000_000, time_in_force=0, firm="FIRM", display="Y",
             capacity="A", intermarket_sweep_eligibility="N", minimum_quantity=0, cross_type="N", customer_type="R")
ACC = dict(timestamp=0, side="B", shares=100, stock="AAPL", price=1_000_000, time_in_force=0, firm="FIRM",
           display="Y", order_reference_number=1, capacity="A", intermarket_sweep_eligibility="N",
           minimum_quantity=0, cross_type="N", order_state="L", bbo_weight_indicator=" ")


def test_ouch_tokens_latency_and_fills():
    ex = ExecutionQuality()
    tr = OrderTracker(clock="pcap", listener=ex)
    ev = [
        (0, _ouch(IN, "O", order_token="T1", **ENTER)),
        (15 * US, _ouch(OUT, "A", order_token="T1", **ACC)),
        (20 * US, _ouch(OUT, "E", timestamp=0, order_token="T1", executed_shares=40, execution_price=1_000_100,
                        liquidity_flag="A", match_number=9)),
        (30 * US, _ouch(IN, "U", existing_order_token="T1", replacement_order_token="T2", shares=60,
                        price=1_000_200, time_in_force=0, display="Y", intermarket_sweep_eligibility="N",
                        minimum_quantity=0)),
        (42 * US, _ouch(OUT, "U", timestamp=0, replacement_order_token="T2", previous_order_token="T1",
                        **{k: v for k, v in ACC.items() if k not in ("timestamp",)} | {"shares": 60})),
        (50 * US, _ouch(IN, "X", order_token="T2", shares=0)),
        (53 * US, _ouch(OUT, "C", timestamp=0, order_token="T2", decrement_shares=60, reason="U")),
        (60 * US, _ouch(IN, "O", order_token="T3", **ENTER)),
        (62 * US, _ouch(OUT, "J", timestamp=0, order_token="T3", reason="X")),
        (70 * US, _ouch(OUT, "A", order_token="T9", **ACC)),             # unmatched
        (71 * US, _ouch(IN, "X", order_token="T8", shares=0)),           # orphan
    ]
    for ts, m in ev:
        tr.on_ouch(m, ts, "NSDQ", "OUCH1")
    v = tr.snapshot()["venues"]["NSDQ"]
    assert (v["orders"], v["acks"], v["fills"], v["rejects"], v["replaces"], v["replace_acks"]) == (2, 1, 1, 1, 1, 1)
    assert (v["cancels"], v["cancel_acks"], v["unmatched_acks"], v["orphans"]) == (2, 1, 1, 1)
    lat = v["latency"]
    assert lat["order_ack_us"]["max"] == 15.0 and lat["order_fill_us"]["max"] == 20.0
    assert lat["replace_ack_us"]["max"] == 12.0 and lat["cancel_ack_us"]["max"] == 3.0
    assert lat["order_ack_us"]["clock"] == "pcap"
    assert tr.order("NSDQ", "OUCH1", "T2").status == "canceled"
    e = ex.snapshot()["venues"]["NSDQ"]
    assert (e["orders"], e["fills"], e["filled_qty"], e["no_arrival_mid"]) == (2, 1, 40, 1)


OUCH_DIR = CORPUS / "omi-nasdaq-ouch50" / "Nasdaq.Nsm.Ouch.v5.0"


@pytest.mark.skipif(not OUCH_DIR.is_dir(), reason=f"corpus captures absent: {OUCH_DIR}")
def test_real_ouch50_captures_never_raise():
    from _pcap_feeds import read_pcap
    from hft_packetfilter.protocols.soupbintcp import SoupBinTCPDecoder
    tr = OrderTracker()
    n = 0
    for f in sorted(OUCH_DIR.glob("*.pcap")):
        for fr in read_pcap(f):
            for m in SoupBinTCPDecoder().feed(fr.payload, fr.ts_ns):
                if hasattr(m, "direction"):
                    tr.on_ouch(m, fr.ts_ns, "NSDQ", "S")
                    n += 1
    assert n >= 4 and tr.errors == 0
    v = tr.snapshot()["venues"]["NSDQ"]
    # separate captures: the Enter Order is seen, its responses belong to other orders
    assert v["orders"] == 1 and v["unmatched_acks"] >= 1
