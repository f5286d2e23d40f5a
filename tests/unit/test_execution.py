"""Execution quality: fill ratio, slippage against the arrival mid, effective spread (signs)."""
import pytest

from hft_packetfilter.analytics.crossvenue import CrossVenue
from hft_packetfilter.analytics.execution import ExecutionQuality
from hft_packetfilter.analytics.orders import OrderTracker


def test_slippage_and_effective_spread_signs():
    ex = ExecutionQuality()
    # arrival mid 100.00 (mid2 = 200.00 in 1e-4 units)
    ex.on_order("V", "b1", "X", +1, 100, 0, mid2=2_000_000)
    ex.on_order("V", "s1", "X", -1, 100, 0, mid2=2_000_000)
    ex.on_fill("V", "b1", 1_000_500, 100)        # buy 5 cents above mid: +5 bps cost
    ex.on_fill("V", "s1", 1_000_200, 50)         # sell 2 cents above mid: -2 bps (improvement)
    v = ex.snapshot()["venues"]["V"]
    slip = (100 * 5.0 + 50 * -2.0) / 150
    spread = (100 * 10.0 + 50 * 4.0) / 150
    assert v["slippage_bps"] == pytest.approx(slip) and v["effective_spread_bps"] == pytest.approx(spread)
    assert (v["orders"], v["ordered_qty"], v["filled_qty"], v["fills"]) == (2, 200, 150, 2)
    assert v["fill_ratio"] == 0.75 and v["fill_ratio_orders"] == 1.0


def test_missing_mid_and_unknown_fill():
    ex = ExecutionQuality(mid_source=lambda venue, inst: None)
    ex.on_order("V", 1, "X", 1, 10)
    ex.on_fill("V", 1, 100, 10)
    ex.on_fill("V", 2, 100, 10)
    v = ex.snapshot()["venues"]["V"]
    assert (v["no_arrival_mid"], v["unknown_fills"], v["slippage_bps"], v["fill_ratio"]) == (1, 1, None, 1.0)


def test_wired_through_order_tracker_and_consolidated_mid():
    cv = CrossVenue({"NSDQ": {"AAPL": "AAPL.US"}, "BATS": {"AAPL": "AAPL.US"}})
    cv.on_quote("NSDQ", "AAPL", 0, 1_000_000, 100, 1_000_400, 100)
    cv.on_quote("BATS", "AAPL", 1, 1_000_100, 100, 1_000_500, 100)    # NBBO 100.01 x 100.04 -> mid 100.025
    ex = ExecutionQuality(mid_source=cv.mid2_for)
    tr = OrderTracker(listener=ex)
    from test_orders import decode, er, new
    tr.on_fix(decode(new("A1", qty=200, side=1, sym="AAPL")), 10, "NSDQ", "S")
    tr.on_fix(decode(er("A1", "F", "1", last_qty=100, last_px="100.04")), 20, "NSDQ", "S")
    tr.on_fix(decode(new("B1", qty=100, side=2, sym="AAPL")), 30, "NSDQ", "S")
    tr.on_fix(decode(er("B1", "F", "2", last_qty=100, last_px="100.01")), 40, "NSDQ", "S")
    v = ex.snapshot()["venues"]["NSDQ"]
    mid = 1_000_250
    buy = (1_000_400 - mid) / mid * 1e4
    sell = -(1_000_100 - mid) / mid * 1e4
    assert v["slippage_bps"] == pytest.approx((buy + sell) / 2)
    assert v["effective_spread_bps"] == pytest.approx(2 * (buy + sell) / 2)
    assert v["fill_ratio"] == pytest.approx(200 / 300) and v["filled_orders"] == 2


def test_bounded():
    ex = ExecutionQuality(max_orders=5)
    for i in range(10):
        ex.on_order("V", i, "X", 1, 1, mid2=2)
    ex.on_done("V", 9)
    assert ex.snapshot()["open_orders"] == 4 and ex.evicted == 5
