"""Unit tests for hft_packetfilter.risk.rules: every rule kind fires on its scenario and stays quiet
on a near miss (exact counts), YAML validation errors are located (file:line: key), and the kill
switch hook is called once per target.

Pure Python, no root, an injected clock: nothing here reads the wall clock.
"""
from __future__ import annotations

import pathlib
import textwrap

import pytest

from hft_packetfilter import config
from hft_packetfilter.config import ConfigError
from hft_packetfilter.risk import rules
from hft_packetfilter.risk.rules import RiskEngine

REPO = pathlib.Path(__file__).resolve().parents[2]
MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S

CONFIG = config.loads(textwrap.dedent("""
    exchanges:
      - name: VEN-FIX
        host: 192.0.2.10
        ports: [9001]
        protocol: FIX/TCP
        latency_target_us: 250
        session: "ME/VEN"
      - name: VEN-MD
        host: 233.252.0.16
        ports: [26400]
        protocol: ITCH/MoldUDP64
        latency_target_us: 100
      - name: VEN2-MD
        host: 233.252.0.17
        ports: [26401]
        protocol: ITCH/MoldUDP64
    compliance:
      clock_max_offset_us: 100
"""), "cfg.yaml")


class Clock:
    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def engine(rule_yaml: str, **kw):
    """An engine with one rule (YAML of one list item, without the dash), and the kill requests."""
    text = "rules:\n  - " + textwrap.indent(textwrap.dedent(rule_yaml).strip(), "    ")[4:] + "\n"
    rs = rules.loads(text, "r.yaml", CONFIG)
    kills = []
    eng = RiskEngine(rs, Clock(), config=CONFIG, kill_switch=kills.append, **kw)
    return eng, kills


def order(eng, kind, ts, venue="VEN-FIX", session="S1", **kw):
    return eng.on_order_event(kind, venue, session, ts, **kw)


# --------------------------------------------------------------------------------------------
# Order flow
# --------------------------------------------------------------------------------------------

RATE = """
name: rate-100ms
kind: message_rate
threshold: 10
window: 100ms
severity: critical
actions: [alert, kill_switch]
kill_scope: session
"""


def test_message_rate_fires_once_with_exact_count_and_kill_switch():
    eng, kills = engine(RATE)
    alerts = []
    for i in range(15):                      # 15 messages 1 ms apart: #11..#15 exceed 10 / 100 ms
        alerts += order(eng, "new", T0 + i * MS, cl_ord_id=f"o{i}")
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.rule, a.severity, a.dedupe_key, a.venue, a.session) == \
        ("rate-100ms", "critical", "VEN-FIX/S1", "VEN-FIX", "S1")
    assert a.first_seen_ns == T0 + 10 * MS and a.count == 1
    held = eng.alerts()[0]
    assert held.count == 5 and held.last_seen_ns == T0 + 14 * MS
    assert eng.stats["alerts_suppressed"] == 4
    assert len(kills) == 1
    k = kills[0]
    assert (k.venue, k.session, k.rule) == ("VEN-FIX", "S1", "rate-100ms")
    assert "rate-100ms" in k.reason


def test_message_rate_near_miss_and_inbound_not_counted():
    eng, kills = engine(RATE)
    alerts = []
    for i in range(30):                      # 10 per 100 ms exactly: never above
        alerts += order(eng, "new", T0 + i * 10 * MS, cl_ord_id=f"o{i}")
        alerts += order(eng, "ack", T0 + i * 10 * MS + 1, cl_ord_id=f"o{i}")   # inbound: ignored
    assert alerts == [] and kills == []
    other = order(eng, "new", T0 + 30 * 10 * MS, session="S2")
    assert other == []                       # separate session, separate window


def test_message_rate_per_second_scope_and_renotify():
    eng, _ = engine("""
        name: rate-1s
        kind: message_rate
        scope: {venue: VEN-FIX, session: [S1]}
        threshold: 100
        window: 1s
        renotify: 1900ms
    """)
    alerts = []
    for i in range(400):                     # 200 msg/s for 2 s
        alerts += order(eng, "message", T0 + i * 5 * MS)
        alerts += order(eng, "message", T0 + i * 5 * MS, session="S9")   # out of scope
    # violations from message 101 (0.5 s) on; emitted then, and again only 1.9 s later
    assert len(alerts) == 1
    alerts = order(eng, "message", T0 + 2 * S + 499 * MS)   # window (1.499 s, 2.499 s]: 101
    assert len(alerts) == 1 and alerts[0].count == 400 - 100 + 1 and alerts[0].emitted == 2


def test_order_quantity_fat_finger():
    eng, _ = engine("name: qty\nkind: order_quantity\nthreshold: 1000")
    assert order(eng, "new", T0, qty=1000, symbol="AAPL", cl_ord_id="a") == []          # near miss
    assert order(eng, "cancel", T0 + 1, qty=999999, symbol="AAPL", cl_ord_id="b") == []  # not an order
    out = order(eng, "replace", T0 + 2, qty=1001, symbol="AAPL", cl_ord_id="c")
    assert len(out) == 1 and out[0].context["qty"] == 1001 and out[0].dedupe_key == "VEN-FIX/S1/AAPL"


def test_order_notional_with_multiplier_and_missing_price():
    eng, _ = engine("name: notional\nkind: order_notional\nthreshold: 1000000\nprice_multiplier: 0.0001")
    assert order(eng, "new", T0, qty=1000, price=10_000_000, symbol="X") == []   # 1000 * 1000.0 = 1e6
    assert order(eng, "new", T0 + 1, qty=1000, symbol="X") == []
    assert eng.stats["notional_no_price"] == 1
    out = order(eng, "new", T0 + 2, qty=1000, price=10_000_100, symbol="X")
    assert len(out) == 1 and out[0].context["notional"] == pytest.approx(1_000_010.0)


def test_price_collar_against_top_of_book():
    eng, _ = engine("""
        name: collar
        kind: price_collar
        threshold: 100
        max_quote_age: 1s
        scope: {symbol: AAPL}
    """)
    # no reference yet: counted, never guessed
    assert order(eng, "new", T0, side=1, price=200.0, symbol="AAPL") == []
    assert eng.stats["collar_no_reference"] == 1
    eng.on_market_data("VEN-MD", T0 + 1, "AAPL", bid_px=99.0, ask_px=100.0)
    assert order(eng, "new", T0 + 2, side=1, price=101.0, symbol="AAPL") == []    # exactly 100 bps
    assert order(eng, "new", T0 + 3, side=-1, price=98.01, symbol="AAPL") == []   # 100 bps under bid
    assert order(eng, "new", T0 + 4, side=1, price=101.5, symbol="MSFT") == []    # out of scope
    out = order(eng, "new", T0 + 5, side=1, price=101.02, symbol="AAPL")
    assert len(out) == 1 and out[0].context["reference"] == 100.0
    assert out[0].context["deviation_bps"] == pytest.approx(102.0)
    out = order(eng, "new", T0 + 2 * S, side=-1, price=50.0, symbol="AAPL")       # quote too old
    assert out == [] and eng.stats["collar_no_reference"] == 2


def test_price_collar_mid_reference():
    eng, _ = engine("name: collar\nkind: price_collar\nthreshold: 50\nreference: mid\n"
                    "reference_venue: VEN-MD")
    eng.on_market_data("VEN2-MD", T0, "X", bid_px=10.0, ask_px=30.0)   # not the reference venue
    eng.on_market_data("VEN-MD", T0, "X", bid_px=99.0, ask_px=101.0)   # mid 100
    assert order(eng, "new", T0 + 1, side=-1, price=100.5, symbol="X") == []
    assert len(order(eng, "new", T0 + 2, side=-1, price=100.51, symbol="X")) == 1


def test_duplicate_clordid():
    eng, _ = engine("name: dup\nkind: duplicate_clordid\nwindow: 1s")
    assert order(eng, "new", T0, cl_ord_id="A") == []
    assert order(eng, "new", T0 + 1, cl_ord_id="A", session="S2") == []     # other session
    assert order(eng, "new", T0 + S, cl_ord_id="A") == []                   # 1 s later: window over
    out = order(eng, "cancel", T0 + S + 10, cl_ord_id="A")
    assert len(out) == 1 and out[0].context["cl_ord_id"] == "A"
    assert order(eng, "new", T0 + S + 20, cl_ord_id="B") == []


def test_duplicate_clordid_threshold():
    eng, _ = engine("name: dup\nkind: duplicate_clordid\nwindow: 10s\nthreshold: 2")
    out = []
    for i in range(3):
        out += order(eng, "new", T0 + i, cl_ord_id="A")     # two duplicates: not above 2
    assert out == []
    assert len(order(eng, "new", T0 + 3, cl_ord_id="A")) == 1


def test_cancel_to_order_ratio():
    eng, _ = engine("name: c2o\nkind: cancel_to_order_ratio\nthreshold: 2\nwindow: 1m\nmin_orders: 5")
    out = []
    for i in range(5):
        out += order(eng, "new", T0 + i * MS, cl_ord_id=f"n{i}")
    for i in range(10):
        out += order(eng, "cancel", T0 + 10 * MS + i * MS, cl_ord_id=f"c{i}")
    assert out == []                                          # 10 / 5 = 2.0: not above
    out = order(eng, "cancel", T0 + 30 * MS, cl_ord_id="c10")
    assert len(out) == 1 and out[0].context["ratio"] == pytest.approx(2.2)


def test_cancel_to_order_ratio_min_orders():
    eng, _ = engine("name: c2o\nkind: cancel_to_order_ratio\nthreshold: 2\nwindow: 1m\nmin_orders: 5")
    out = []
    for i in range(4):
        out += order(eng, "new", T0 + i, cl_ord_id=f"n{i}")
    for i in range(50):
        out += order(eng, "cancel", T0 + 10 + i, cl_ord_id=f"c{i}")
    assert out == []                                          # only 4 orders: no verdict


def test_order_to_trade_ratio():
    eng, _ = engine("name: otr\nkind: order_to_trade_ratio\nthreshold: 10\nwindow: 1m\nmin_orders: 5")
    out = order(eng, "fill", T0, cl_ord_id="x")
    for i in range(10):
        out += order(eng, "new", T0 + 1 + i, cl_ord_id=f"n{i}")
    assert out == []                                          # 10 / 1 = 10
    out = order(eng, "replace", T0 + 100, cl_ord_id="r")
    assert len(out) == 1 and out[0].context["order_messages"] == 11 and out[0].context["fills"] == 1


def test_reject_burst():
    eng, _ = engine("name: rej\nkind: reject_burst\nthreshold: 3\nwindow: 1s")
    out = []
    for i in range(3):
        out += order(eng, "reject", T0 + i * 400 * MS, reason="bad px")
    out += order(eng, "cancel_reject", T0 + 1300 * MS)        # not counted
    out += order(eng, "business_reject", T0 + 1300 * MS)      # window holds 2 of the 3 + this
    assert out == []
    out = order(eng, "session_reject", T0 + 1400 * MS) + order(eng, "reject", T0 + 1500 * MS)
    assert len(out) == 1 and out[0].context["rejects"] == 4


def test_unexpected_logon():
    eng, _ = engine('name: logon\nkind: unexpected_logon\nallowed: ["ME2/VEN"]')
    ok = [order(eng, "logon", T0, sender_comp_id="ME", target_comp_id="VEN"),
          order(eng, "logon", T0, sender_comp_id="VEN", target_comp_id="ME", outbound=False),
          order(eng, "logon", T0, sender_comp_id="ME2", target_comp_id="VEN")]
    assert ok == [[], [], []]
    out = order(eng, "logon", T0 + 1, sender_comp_id="EVIL", target_comp_id="VEN")
    assert len(out) == 1 and out[0].context["sender_comp_id"] == "EVIL"
    assert order(eng, "logon", T0 + 2, venue="VEN-MD", sender_comp_id="ME", target_comp_id="VEN")[0] \
        .dedupe_key == "VEN-MD/S1/ME/VEN"               # ME/VEN is VEN-FIX's session, not VEN-MD's


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------

def test_order_ack_latency_p99_against_venue_target():
    eng, _ = engine("name: ack\nkind: latency\nmetric: order_ack\npercentile: 90\nwindow: 10s\n"
                    "min_samples: 10")
    out = []
    for i in range(10):                      # 1 of 10 slow: p90 (rank 9) is still fast
        t = T0 + i * MS
        out += order(eng, "new", t, cl_ord_id=f"o{i}")
        out += order(eng, "ack", t + (400_000 if i == 0 else 100_000), cl_ord_id=f"o{i}")
    assert out == []
    assert eng.stats["latency_samples"] == 10
    t = T0 + 20 * MS
    out = order(eng, "new", t, cl_ord_id="late") + order(eng, "ack", t + 250_001, cl_ord_id="late")
    assert len(out) == 1 and out[0].context["target_us"] == 250.0
    assert out[0].context["above_target"] == 2 and out[0].context["samples"] == 11


def test_rtt_latency_threshold_and_window():
    eng, _ = engine("name: rtt\nkind: latency\nmetric: rtt\nthreshold: 50\nwindow: 1s\nmin_samples: 3")
    out = eng.on_latency("rtt", "VEN-FIX", T0, 60_000) + eng.on_latency("rtt", "VEN-FIX", T0 + 1, 60_000)
    assert out == []                                          # min_samples not reached
    out = eng.on_latency("order_ack", "VEN-FIX", T0 + 2, 60_000)   # other metric
    out += eng.on_latency("rtt", "VEN-FIX", T0 + 2 * S, 60_000)    # first two left the window
    assert out == []
    out = eng.on_latency("rtt", "VEN-FIX", T0 + 2 * S + 1, 50_000)  # exactly the target: not above
    out += eng.on_latency("rtt", "VEN-FIX", T0 + 2 * S + 2, 50_001)
    assert len(out) == 1


# --------------------------------------------------------------------------------------------
# Market data
# --------------------------------------------------------------------------------------------

def test_gap_storm_agent_source():
    eng, _ = engine("name: gaps\nkind: gap_storm\nthreshold: 5\nwindow: 1m")
    out = eng.on_market_data("VEN-MD", T0, gaps=3) + eng.on_market_data("VEN-MD", T0 + 30 * S, gaps=2)
    out += eng.on_market_data("VEN-MD", T0 + 61 * S, gaps=3)      # the first 3 left the window
    assert out == []
    out = eng.on_market_data("VEN-MD", T0 + 62 * S, gaps=1)
    assert len(out) == 1 and out[0].context["gaps"] == 6


def _iface(gaps=0, unknown=0, would=0, lost=0, evict=0, full=0, clock_sync=None):
    doc = {"ifname": "eth0", "mode": "enforce",
           "drops": {"unknown_source": {"dropped_packets": unknown, "dropped_bytes": unknown * 60,
                                        "would_drop_packets": would, "would_drop_bytes": 0},
                     "deny_rule": {"dropped_packets": 0, "dropped_bytes": 0, "would_drop_packets": 0,
                                   "would_drop_bytes": 0}},
           "probe": {"ringbuf_lost": lost, "map_evictions": evict, "rtt_table_full": full,
                     "stream_table_full": 0, "ringbuf_events": 1000},
           "streams": {"VEN-MD:233.252.0.16:26400": {"venue": "VEN-MD", "gaps": gaps}}}
    if clock_sync is not None:
        doc["clock_sync"] = clock_sync
    return {"abi_version": 1, "time": 0.0, "interfaces": {"eth0": doc}}


def test_gap_storm_kernel_source_from_status_deltas():
    eng, _ = engine("name: gaps\nkind: gap_storm\nthreshold: 5\nwindow: 1m\nsource: kernel")
    out = eng.on_status(_iface(gaps=100), T0)                   # baseline: no delta
    out += eng.on_status(_iface(gaps=105), T0 + S)
    out += eng.on_market_data("VEN-MD", T0 + S, gaps=50)        # agent gaps: not this rule's source
    assert out == []
    out = eng.on_status(_iface(gaps=106), T0 + 2 * S)
    assert len(out) == 1 and out[0].venue == "VEN-MD"


def test_stale_feed():
    eng, _ = engine("name: stale\nkind: stale_feed\nmax_silence: 5s\nscope: {venue: VEN-MD}")
    assert eng.tick(T0) == []                                   # never seen: not watched
    eng.on_market_data("VEN-MD", T0)
    eng.on_market_data("VEN2-MD", T0)                           # out of scope
    assert eng.tick(T0 + 5 * S) == []                           # exactly 5 s: not longer
    eng.on_market_data("VEN-MD", T0 + 5 * S)
    assert eng.tick(T0 + 10 * S) == []
    out = eng.tick(T0 + 10 * S + 1)
    assert len(out) == 1 and out[0].dedupe_key == "VEN-MD"
    assert eng.tick(T0 + 20 * S) == []                          # once per silence
    eng.on_market_data("VEN-MD", T0 + 100 * S)
    assert len(eng.tick(T0 + 200 * S)) == 1                     # a new silence, past renotify


def test_feed_latency():
    eng, _ = engine("name: fl\nkind: feed_latency\nwindow: 1s\nmin_samples: 4\npercentile: 50\n"
                    "scope: {venue: VEN-MD}")
    out = []
    for i, lat_us in enumerate((50, 150, 150, 80)):             # p50 of 4 = rank 2 = 80 us
        out += eng.on_market_data("VEN-MD", T0 + i * MS, exchange_ts_ns=T0 + i * MS - lat_us * 1000)
    assert out == []
    out = eng.on_market_data("VEN-MD", T0 + 5 * MS, exchange_ts_ns=T0 + 5 * MS - 101_000)
    assert len(out) == 1 and out[0].context["target_us"] == 100.0


def test_crossed_market_per_venue():
    eng, _ = engine("name: cross\nkind: crossed_market\nmax_duration: 50ms")
    out = eng.on_market_data("VEN-MD", T0, "X", bid_px=101, ask_px=100)
    out += eng.on_market_data("VEN-MD", T0 + 50 * MS, "X", bid_px=101, ask_px=100)   # 50 ms: not longer
    out += eng.tick(T0 + 50 * MS)
    out += eng.on_market_data("VEN-MD", T0 + 50 * MS + 1, "X", bid_px=100, ask_px=100)  # locked: ends it
    out += eng.tick(T0 + S)
    assert out == []
    eng.on_market_data("VEN-MD", T0 + 2 * S, "X", bid_px=101, ask_px=100)
    out = eng.tick(T0 + 2 * S + 50 * MS + 1)
    assert len(out) == 1 and out[0].dedupe_key == "VEN-MD/X"
    assert eng.tick(T0 + 3 * S) == []                                                 # once per episode


def test_crossed_market_consolidated_and_locked():
    eng, _ = engine("name: cross\nkind: crossed_market\nmax_duration: 10ms\nconsolidated: true\n"
                    "locked: true")
    eng.on_market_data("VEN-MD", T0, "X", bid_px=100, ask_px=101)
    eng.on_market_data("VEN2-MD", T0, "X", bid_px=99, ask_px=102)
    assert eng.tick(T0 + S) == []
    eng.on_market_data("VEN2-MD", T0 + S, "X", bid_px=101, ask_px=102)   # locked across venues
    out = eng.tick(T0 + S + 10 * MS + 1)
    assert len(out) == 1 and out[0].context["bid_venue"] == "VEN2-MD" and \
        out[0].context["ask_venue"] == "VEN-MD"


# --------------------------------------------------------------------------------------------
# Network / security
# --------------------------------------------------------------------------------------------

def test_unknown_source_from_drop_deltas():
    eng, _ = engine("name: unk\nkind: unknown_source\nthreshold: 10\nwindow: 10s")
    out = eng.on_status(_iface(unknown=1000, would=5), T0)        # baseline
    out += eng.on_status(_iface(unknown=1006, would=9), T0 + S)   # 6 + 4 = 10: not above
    out += eng.on_status(_iface(unknown=1006, would=9), T0 + 2 * S)
    assert out == []
    out = eng.on_status(_iface(unknown=1, would=9), T0 + 3 * S)   # counter restarted: +1
    assert len(out) == 1 and out[0].context["total"] == 11


def test_unknown_source_without_would_drop():
    eng, _ = engine("name: unk\nkind: unknown_source\nthreshold: 10\nwindow: 10s\n"
                    "include_would_drop: false")
    eng.on_status(_iface(), T0)
    assert eng.on_status(_iface(would=500, unknown=10), T0 + S) == []


def test_syn_flood_half_open():
    eng, _ = engine("name: syn\nkind: syn_flood\nthreshold: 5\nwindow: 1s")
    out = []
    for i in range(10):                           # 10 handshakes that complete: never half-open > 5
        out += eng.on_packet_meta(T0 + i, f"198.51.100.{i}", 9001, 0x02, src_port=40000)
        out += eng.on_packet_meta(T0 + i, f"198.51.100.{i}", 9001, 0x10, src_port=40000)
    for i in range(5):                            # 5 half-open (+ retransmits): not above 5
        out += eng.on_packet_meta(T0 + 100 + i, "203.0.113.9", 9001, 0x02, src_port=50000 + i)
        out += eng.on_packet_meta(T0 + 200 + i, "203.0.113.9", 9001, 0x02, src_port=50000 + i)
    assert out == []
    out = eng.on_packet_meta(T0 + S + 104, "203.0.113.9", 9001, 0x02, src_port=60000)  # earlier 5 expired
    assert out == []
    out = []
    for i in range(6):
        out += eng.on_packet_meta(T0 + 3 * S + i, "203.0.113.10", 9001, 0x02, src_port=1000 + i)
    assert len(out) == 1 and out[0].context["half_open"] == 6


def test_port_scan():
    eng, _ = engine("name: scan\nkind: port_scan\nthreshold: 5\nwindow: 1s")
    out = []
    for p in range(5):
        out += eng.on_packet_meta(T0 + p, "203.0.113.7", 1000 + p)
        out += eng.on_packet_meta(T0 + p, "203.0.113.8", 1000 + p)
    out += eng.on_packet_meta(T0 + 10, "203.0.113.7", 1000)       # a repeat port
    out += eng.on_packet_meta(T0 + S + 5, "203.0.113.8", 2000)     # old ports expired
    assert out == []
    out = eng.on_packet_meta(T0 + 20, "203.0.113.7", 2000)
    assert len(out) == 1 and out[0].dedupe_key == "203.0.113.7" and out[0].context["ports"] == 6


# --------------------------------------------------------------------------------------------
# Probe health
# --------------------------------------------------------------------------------------------

def test_ringbuf_loss():
    eng, _ = engine("name: rb\nkind: ringbuf_loss\nthreshold: 0\nwindow: 1m")
    assert eng.on_status(_iface(lost=7), T0) == []                 # baseline
    assert eng.on_status(_iface(lost=7), T0 + S) == []
    out = eng.on_status(_iface(lost=8), T0 + 2 * S)
    assert len(out) == 1 and out[0].context["last_deltas"] == {"probe.ringbuf_lost": 1}


def test_map_evictions():
    eng, _ = engine("name: ev\nkind: map_evictions\nthreshold: 10\nwindow: 1m\n"
                    "counters: [map_evictions, rtt_table_full]")
    eng.on_status(_iface(), T0)
    assert eng.on_status(_iface(evict=6, full=4), T0 + S) == []
    assert len(eng.on_status(_iface(evict=7, full=4), T0 + 2 * S)) == 1


def test_clock_offset_and_unknown_state():
    eng, _ = engine("name: clk\nkind: clock_offset\nseverity: critical")
    assert eng.rules[0].threshold == 100.0                       # from compliance.clock_max_offset_us
    assert eng.on_clock_sync(T0, "synced", -100_000) == []       # exactly 100 us
    out = eng.on_clock_sync(T0 + 1, "synced", 100_001)
    assert len(out) == 1 and out[0].severity == "critical"
    eng2, _ = engine("name: clk\nkind: clock_offset\nthreshold: 50")
    out = eng2.on_status(_iface(), T0)                            # no clock_sync in the document
    assert len(out) == 1 and out[0].context["state"] == "unknown"
    eng3, _ = engine("name: clk\nkind: clock_offset\nthreshold: 50\nunknown_state: ignore")
    assert eng3.on_status(_iface(clock_sync={"state": "unknown"}), T0) == []
    assert len(eng3.on_status(_iface(clock_sync={"state": "synced", "offset_ns": 51_000}), T0)) == 1


# --------------------------------------------------------------------------------------------
# Engine: kill switch, FIX adapter, bounds
# --------------------------------------------------------------------------------------------

def test_kill_switch_once_until_released_and_callback_errors_counted():
    eng, kills = engine("name: qty\nkind: order_quantity\nthreshold: 10\nactions: [kill_switch]")
    for i in range(3):
        order(eng, "new", T0 + i, qty=11)
    assert len(kills) == 1 and (kills[0].venue, kills[0].session) == ("VEN-FIX", None)
    assert [k.venue for k in eng.engaged()] == ["VEN-FIX"]
    assert eng.release_kill_switch("VEN-FIX") is True
    order(eng, "new", T0 + 10, qty=11)
    assert len(kills) == 2

    def broken(req):
        raise RuntimeError("bpf map update failed")
    rs = rules.loads("rules:\n  - {name: q, kind: order_quantity, threshold: 1, actions: [alert, kill_switch]}\n")
    eng2 = RiskEngine(rs, Clock(), kill_switch=broken)
    assert len(eng2.on_order_event("new", "V", "S", T0, qty=5)) == 1
    assert eng2.kill_switch_errors == 1 and "bpf map update failed" in eng2.last_kill_switch_error


def test_network_rule_kill_switch_targets_scope_venue():
    eng, kills = engine("name: scan\nkind: port_scan\nthreshold: 1\nwindow: 1s\n"
                        "scope: {venue: VEN-FIX}\nactions: [alert, kill_switch]")
    eng.on_packet_meta(T0, "203.0.113.7", 1)
    eng.on_packet_meta(T0 + 1, "203.0.113.7", 2)
    assert [k.venue for k in kills] == ["VEN-FIX"]


def test_on_fix_adapter():
    from hft_packetfilter.protocols.fix import FixMessage

    def fix(mt, **tags):
        body = "".join(f"{t}={v}\x01" for t, v in tags.items())
        raw = f"8=FIX.4.4\x019=10\x0135={mt}\x01{body}10=000\x01".encode()
        return FixMessage(raw, "FIX.4.4", mt)

    eng, _ = engine("name: qty\nkind: order_quantity\nthreshold: 100")
    assert eng.on_fix(fix("D", **{"11": "A1", "55": "AAPL", "54": "2", "38": "100", "44": "10.5"}),
                      T0, "VEN-FIX", "S1", True) == []
    out = eng.on_fix(fix("D", **{"11": "A2", "55": "AAPL", "54": "1", "38": "101"}), T0, "VEN-FIX", "S1", True)
    assert len(out) == 1 and out[0].context["side"] == 1
    assert rules.fix_order_event(fix("8", **{"11": "A2", "150": "8", "58": "no"}), False)["kind"] == "reject"
    assert rules.fix_order_event(fix("A", **{"49": "ME", "56": "VEN"}), True)["sender_comp_id"] == "ME"
    assert rules.fix_order_event(fix("0"), True) == {"kind": "message"}
    assert rules.fix_order_event(fix("0"), False) is None


def test_state_is_bounded():
    rs = rules.loads("rules:\n  - {name: r, kind: message_rate, threshold: 1000, window: 1s}\n")
    eng = RiskEngine(rs, Clock(), max_keys=100)
    for i in range(1000):
        eng.on_order_event("new", "V", f"S{i}", T0 + i)
    assert eng.stats["state_evictions"] == 900


def test_example_rules_file_has_every_kind():
    cfg = config.load(REPO / "configs" / "example.yaml")
    rs = rules.load(REPO / "configs" / "rules.yaml", cfg)
    assert {r.kind for r in rs} == set(rules.KINDS)
    eng = RiskEngine(rs, Clock(), config=cfg)
    assert eng.tick(T0) == []
    assert rs.rule("fix-msg-rate-100ms").kill_scope == "session"


def test_alert_to_dict_is_json_safe():
    import json
    eng, _ = engine("name: qty\nkind: order_quantity\nthreshold: 1")
    a = order(eng, "new", T0, qty=2, symbol=("odd", 1))[0]
    d = json.loads(json.dumps(a.to_dict()))
    assert d["rule"] == "qty" and d["created_ns"] == T0 and d["count"] == 1


# --------------------------------------------------------------------------------------------
# YAML validation: (id, yaml, line, key, substrings)
# --------------------------------------------------------------------------------------------

OK_RULE = "  - name: r1\n    kind: message_rate\n    threshold: 10\n    window: 1s\n"
BAD = [
    ("syntax", "rules:\n  - name: a\n   kind: b\n", 3, "", ["invalid YAML"]),
    ("empty", "", 1, "", ["file is empty"]),
    ("no-rules", "defaults: {severity: info}\n", 1, "", ["missing key 'rules'"]),
    ("unknown-top", "rules: []\nrule: []\n", 2, "rule", ["unknown key 'rule'", "did you mean 'rules'?"]),
    ("unknown-rule-key", "rules:\n" + OK_RULE + "    treshold: 5\n", 6, "rules[0].treshold",
     ["unknown key 'treshold'", "did you mean 'threshold'?"]),
    ("param-of-other-kind", "rules:\n" + OK_RULE + "    min_orders: 5\n", 6, "rules[0].min_orders",
     ["unknown key 'min_orders' for kind 'message_rate'"]),
    ("duplicate-key", "rules:\n" + OK_RULE + "    window: 2s\n", 6, "rules[0].window",
     ["duplicate key (first at line 5)"]),
    ("duplicate-name", "rules:\n" + OK_RULE + OK_RULE, 6, "rules[1].name",
     ["'r1' is already used by the rule at line 2"]),
    ("unknown-kind", "rules:\n  - name: a\n    kind: message_rat\n", 3, "rules[0].kind",
     ["'message_rat' is not a valid value", "did you mean 'message_rate'?"]),
    ("missing-kind", "rules:\n  - name: a\n", 2, "rules[0]", ["missing key 'kind'"]),
    ("missing-threshold", "rules:\n  - name: a\n    kind: reject_burst\n    window: 1s\n", 2, "rules[0]",
     ["missing key 'threshold'", "'reject_burst' needs one"]),
    ("missing-window", "rules:\n  - name: a\n    kind: reject_burst\n    threshold: 1\n", 2, "rules[0]",
     ["missing key 'window'"]),
    ("threshold-string", "rules:\n  - name: a\n    kind: order_quantity\n    threshold: ten\n", 4,
     "rules[0].threshold", ["'ten' is a string", "expected a number >= 0"]),
    ("threshold-quoted", "rules:\n  - name: a\n    kind: order_quantity\n    threshold: '10'\n", 4,
     "rules[0].threshold", ["remove the quotes"]),
    ("threshold-negative", "rules:\n  - name: a\n    kind: order_quantity\n    threshold: -1\n", 4,
     "rules[0].threshold", ["-1 is out of range"]),
    ("threshold-not-taken", "rules:\n  - name: a\n    kind: stale_feed\n    max_silence: 1s\n"
     "    threshold: 3\n", 5, "rules[0].threshold", ["takes no threshold"]),
    ("window-no-unit", "rules:\n" + OK_RULE.replace("1s", "100"), 5, "rules[0].window",
     ["expected a duration", "add a unit"]),
    ("window-bad", "rules:\n" + OK_RULE.replace("1s", "1 fortnight"), 5, "rules[0].window",
     ["'1 fortnight' is not a duration"]),
    ("window-zero", "rules:\n" + OK_RULE.replace("1s", "0ms"), 5, "rules[0].window", ["is zero"]),
    ("bad-severity", "rules:\n" + OK_RULE + "    severity: crit\n", 6, "rules[0].severity",
     ["did you mean 'critical'?"]),
    ("bad-action", "rules:\n" + OK_RULE + "    actions: [alert, page]\n", 6, "rules[0].actions[1]",
     ["'page' is not a valid value", "alert, kill_switch"]),
    ("scope-unknown-venue", "rules:\n" + OK_RULE + "    scope: {venue: VEN-FX}\n", 6,
     "rules[0].scope.venue", ["'VEN-FX' is not a venue of cfg.yaml", "did you mean 'VEN-FIX'?"]),
    ("scope-field-not-applicable", "rules:\n" + OK_RULE + "    scope:\n      symbol: AAPL\n", 7,
     "rules[0].scope.symbol", ["kind 'message_rate' has no symbol"]),
    ("scope-unknown-key", "rules:\n" + OK_RULE + "    scope: {venu: X}\n", 6, "rules[0].scope.venu",
     ["did you mean 'venue'?"]),
    ("network-kill-no-venue", "rules:\n  - name: a\n    kind: port_scan\n    threshold: 1\n"
     "    window: 1s\n    actions: [kill_switch]\n", 6, "rules[0].actions", ["needs exactly one scope.venue"]),
    ("kill-scope-session-no-session", "rules:\n  - name: a\n    kind: gap_storm\n    threshold: 1\n"
     "    window: 1s\n    kill_scope: session\n", 6, "rules[0].kill_scope", ["has no session"]),
    ("bad-percentile", "rules:\n  - name: a\n    kind: latency\n    threshold: 1\n    window: 1s\n"
     "    percentile: 101\n", 6, "rules[0].percentile", ["out of range"]),
    ("bad-comp-pair", "rules:\n  - name: a\n    kind: unexpected_logon\n    allowed: [ME]\n", 4,
     "rules[0].allowed[0]", ["'ME' is not a CompID pair"]),
    ("missing-max-silence", "rules:\n  - name: a\n    kind: stale_feed\n", 2, "rules[0]",
     ["missing key 'max_silence'"]),
    ("bad-name", "rules:\n  - name: 'a b'\n    kind: stale_feed\n", 2, "rules[0].name",
     ["not a valid rule name"]),
    ("bad-default", "defaults:\n  renotify: soon\nrules: []\n", 2, "defaults.renotify",
     ["'soon' is not a duration"]),
    ("latency-no-target", "rules:\n  - name: a\n    kind: latency\n    window: 1s\n"
     "    scope: {venue: VEN2-MD}\n", 3, "rules[0]", ["no threshold and no latency_target_us"]),
]


@pytest.mark.parametrize("text,line,key,subs", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_validation_errors_are_located(text, line, key, subs):
    with pytest.raises(ConfigError) as info:
        rules.loads(text, "bad.yaml", CONFIG)
    e = info.value
    assert (e.file, e.line, e.key) == ("bad.yaml", line, key), str(e)
    for s in subs:
        assert s in str(e), str(e)
    assert str(e).startswith(f"bad.yaml:{line}: ")


def test_load_missing_file_and_defaults_and_disabled(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        rules.load(tmp_path / "nope.yaml")
    p = tmp_path / "r.yaml"
    p.write_text("defaults: {severity: critical, actions: [alert, kill_switch], renotify: 5s}\n"
                 "rules:\n" + OK_RULE +
                 "  - {name: not-loaded, kind: stale_feed, max_silence: 1s, enabled: false}\n")
    rs = rules.load(p)
    assert [r.name for r in rs] == ["r1"]
    r = rs.rule("r1")
    assert (r.severity, r.actions, r.renotify_ns, r.window_ns, r.threshold) == \
        ("critical", ("alert", "kill_switch"), 5 * S, S, 10.0)
