"""Cross-venue: consolidated BBO, locked/crossed markets of known duration, arbitrage, tick-to-trade."""
import json

import pytest

from hft_packetfilter.analytics.crossvenue import CrossVenue

US = 1000
SYMBOLS = {"NSDQ": {"AAPL": "AAPL.US"}, "BATS": {"AAPL": "AAPL.US"}, "ARCA": {"AAPL.A": "AAPL.US"}}


def test_consolidated_bbo_and_mapping():
    cv = CrossVenue(SYMBOLS)
    cv.on_quote("NSDQ", "AAPL", 0, 1_000_000, 100, 1_000_200, 100)
    cv.on_quote("BATS", "AAPL", 1, 1_000_100, 50, 1_000_300, 10)
    cv.on_quote("ARCA", "AAPL.A", 2, 1_000_100, 80, 1_000_200, 300)
    cv.on_quote("ARCA", "MSFT", 3, 1, 1, 2, 1)                      # not in ARCA's mapping
    cv.on_quote("IEX", "AAPL.US", 4, 999_000, 1, None, None)       # no mapping: symbol is the instrument
    assert cv.bbo("AAPL.US") == ((1_000_100, 80, "ARCA"), (1_000_200, 300, "ARCA"))
    assert cv.mid2("AAPL.US") == 2_000_300 and cv.mid2_for("ARCA", "AAPL.A") == 2_000_300
    s = cv.snapshot()
    assert cv.unmapped == 1 and s["instruments"]["AAPL.US"]["state"] is None
    assert s["instruments"]["AAPL.US"]["venues"]["IEX"] == {"bid_px": 999_000, "bid_qty": 1, "ask_px": None,
                                                          "ask_qty": None}
    json.dumps(s)


def test_from_config_objects_and_dicts():
    class E:
        def __init__(self, name, symbols):
            self.name, self.symbols = name, symbols
    cv = CrossVenue.from_config([E("NSDQ", {"AAPL": "AAPL.US"}), {"name": "BATS", "symbols": {"AAPL": "AAPL.US"}},
                                 E("CME", {})])
    assert cv.instrument("NSDQ", "AAPL") == "AAPL.US" and cv.instrument("CME", "ES") == "ES"


def test_locked_then_crossed_known_durations_and_arbitrage():
    cv = CrossVenue(SYMBOLS, min_edge_bps=0.0)
    cv.on_quote("NSDQ", "AAPL", 0, 1_000_000, 100, 1_000_200, 100)
    cv.on_quote("BATS", "AAPL", 10 * US, 999_900, 100, 1_000_300, 100)
    cv.on_quote("BATS", "AAPL", 100 * US, 1_000_200, 40, 1_000_300, 100)     # locks: BATS bid = NSDQ ask
    cv.on_quote("BATS", "AAPL", 350 * US, 1_000_400, 30, 1_000_500, 100)     # crosses by 200
    cv.on_quote("NSDQ", "AAPL", 500 * US, 1_000_000, 100, 1_000_200, 60)      # still crossed, size 30
    cv.on_quote("NSDQ", "AAPL", 1350 * US, 1_000_000, 100, 1_000_450, 60)     # uncrossed
    s = cv.snapshot()
    eps = s["episodes"]
    assert [(e["kind"], e["start_ns"], e["duration_ns"]) for e in eps] == [("locked", 100 * US, 250 * US),
                                                                          ("crossed", 350 * US, 1000 * US)]
    assert eps[1]["bid_venue"] == "BATS" and eps[1]["ask_venue"] == "NSDQ"
    assert s["totals"] == {"locked": 1, "crossed": 1, "locked_ns": 250 * US, "crossed_ns": 1000 * US,
                           "arbitrage": 1}
    (opp,) = s["opportunities"]
    assert (opp["buy_venue"], opp["sell_venue"], opp["size"], opp["max_size"]) == ("NSDQ", "BATS", 30, 30)
    assert opp["max_edge_bps"] == pytest.approx(200 / 1_000_300 * 1e4)
    assert opp["duration_ns"] == 1000 * US and s["instruments"]["AAPL.US"]["state"] is None


def test_ongoing_cross_and_min_edge():
    cv = CrossVenue(SYMBOLS, min_edge_bps=5.0)
    cv.on_quote("NSDQ", "AAPL", 0, 1_000_000, 100, 1_000_200, 100)
    cv.on_quote("BATS", "AAPL", 5, 1_000_250, 10, 1_000_400, 10)       # crossed by 50: 0.5 bps < 5
    s = cv.snapshot()
    assert s["instruments"]["AAPL.US"]["state"] == "crossed" and s["instruments"]["AAPL.US"]["state_since_ns"] == 5
    assert s["totals"]["arbitrage"] == 0 and s["instruments"]["AAPL.US"]["arbitrage"] is None
    cv.on_quote("BATS", "AAPL", 9, 1_001_000, 10, 1_001_400, 10)       # 8 bps: an opportunity opens
    assert cv.snapshot()["instruments"]["AAPL.US"]["arbitrage"]["edge_bps"] == pytest.approx(800 / 1_000_600 * 1e4)


def test_same_venue_never_locks_itself():
    cv = CrossVenue()
    cv.on_quote("NSDQ", "X", 0, 100, 1, 100, 1)
    assert cv.snapshot()["instruments"]["X"]["state"] is None


def test_tick_to_trade():
    cv = CrossVenue(SYMBOLS, clock="tai")
    assert cv.on_order("NSDQ", "AAPL", 5) is None and cv.no_market_data == 1
    cv.on_quote("BATS", "AAPL", 1000 * US, 1, 1, 2, 1)
    for i in range(1, 11):
        cv.on_market_data("ARCA", "AAPL.A", (1000 + 100 * i) * US)
        assert cv.on_order("NSDQ", "AAPL", (1000 + 100 * i + i) * US) == i * US
    t = cv.snapshot()["tick_to_trade_us"]
    assert (t["venues"]["NSDQ"]["p50"], t["venues"]["NSDQ"]["max"], t["all"]["count"]) == (5.0, 10.0, 10)
    assert t["all"]["clock"] == "tai"
