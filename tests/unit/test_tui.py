"""The TUI render is a pure function of a snapshot: render into a recorded Console and read the text."""
import pytest
from rich.console import Console

import _snapshots as S
from hft_packetfilter.sinks import tui
from hft_packetfilter.sinks.snapshot import Snapshot

ALERTS = [{"severity": "warning", "message": "DEMO-ITCH gap storm: 4 gaps", "time": 1_700_000_000},
          "probe ring lost 7 events"]


def text(renderable, width, height=24):
    c = Console(record=True, width=width, height=height, file=open("/dev/null", "w"), color_system=None)
    c.print(renderable)
    return c.export_text()


@pytest.mark.parametrize("width", [80, 120])
def test_main_screen_shows_the_figures_and_fits(width):
    out = text(tui.render(S.snapshot(), width, 24, alerts=ALERTS), width)
    lines = out.rstrip("\n").split("\n")
    assert len(lines) <= 24 and max(len(line) for line in lines) <= width
    for v in ("DEMO-ITCH", "DEMO-MDP3", "NASDAQ-OUCH"):
        assert v in out
    row = next(line for line in lines if line.startswith("NASDAQ-OUCH"))
    # pps (100 packets in 1 s), Mbps (12,500 B/s), RTT p50/p99/p99.9 in us, kill switch engaged
    assert "100" in row and "0.10" in row and "18.0" in row and "90.0" in row and "2500" in row and "ON" in row
    assert "1,000" in next(line for line in lines if line.startswith("DEMO-ITCH "))
    srow = next(line for line in lines if line.startswith("DEMO-ITCH:"))
    assert " 4 " in srow and " 37 " in srow and srow.rstrip().endswith("78")   # gaps, missing, quality
    mrow = next(line for line in lines if line.startswith("DEMO-MDP3:"))
    assert "2,000" in mrow and "5.00" in mrow and "11.0" in mrow and mrow.rstrip().endswith("100")
    assert "unknown_source 0 (would 17)" in out
    assert "ring lost 7/12,352" in out and "evict 2" in out and "clock tai" in out
    assert "WARN DEMO-ITCH gap storm" in out and "probe ring lost 7 events" in out
    assert "q quit" in out


def test_wide_screen_adds_columns():
    out = text(tui.render(S.snapshot(), 120, 24), 120)
    assert "RX PKTS" in out and "TARGET" in out and "moldudp64" in out and "LT99.9" in out
    assert "RX PKTS" not in text(tui.render(S.snapshot(), 80, 24), 80)


def test_heat_strip_places_samples_by_latency():
    snap = S.snapshot()
    b = snap.doc["histograms"]["rtt"]["NASDAQ-OUCH"]["buckets"]
    cells = tui.heat_cells(b, 50)
    assert sum(cells) == len(S.RTT_NS)
    # 1us..100ms over 50 cells = 10 cells per decade: 18-25 us sit in cells 12-13, 2.5 ms in cell 33-34
    assert sum(cells[12:15]) == 90 and sum(cells[32:36]) == 1
    strip = tui.heat_strip(b, 50, target_us=50).plain
    assert len(strip) == 50 and strip[0] == "·" and "█" in strip
    assert tui.heat_strip(None, 10).plain == "·" * 10


def test_first_snapshot_has_no_rates_and_plain_docs_work():
    out = text(tui.render(S.doc(1), 80, 24), 80)
    assert "first sample" in out
    row = next(line for line in out.split("\n") if line.startswith("NASDAQ-OUCH"))
    assert row.split()[1] == "-"          # no pps without a previous document
    assert "waiting" in text(tui.render(None, 80, 24), 80)


def test_filter_and_sort():
    out = text(tui.render(S.snapshot(), 80, 24, filter="mdp3"), 80)
    assert "DEMO-MDP3" in out and "DEMO-ITCH" not in out and "NASDAQ" not in out and "filter:mdp3" in out
    out = text(tui.render(S.snapshot(), 80, 24, sort="pps"), 80)
    venues = [line.split()[0] for line in out.split("\n") if line.startswith(("DEMO-", "NASDAQ")) and ":" not in line.split()[0]]
    assert venues == ["DEMO-MDP3", "DEMO-ITCH", "NASDAQ-OUCH"]
    out = text(tui.render(S.snapshot(), 80, 24, sort="quality"), 80)
    streams = [line.split()[0] for line in out.split("\n") if line.startswith("DEMO-") and ":" in line.split()[0]]
    assert streams[0].startswith("DEMO-ITCH")   # the worst stream first


def test_venue_detail_view():
    out = text(tui.render(S.snapshot(), 80, 24, venue="NASDAQ-OUCH", alerts=ALERTS), 80)
    lines = out.rstrip("\n").split("\n")
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    assert "p99.9 2500" in out and "samples 100" in out and "kill ENGAGED" in out
    assert "1us" in out and "1ms" in out
    out = text(tui.render(S.snapshot(), 80, 24, venue="DEMO-ITCH", alerts=ALERTS), 80)
    assert "DEMO-ITCH:198.18.0.2:26477" in out and "gap storm" in out and "NASDAQ" not in out
    assert "not in this snapshot" in text(tui.render(S.snapshot(), 80, 24, venue="NOPE"), 80)


def test_many_rows_are_cut_to_the_screen():
    d = S.doc(1)
    for i in range(40):
        d["venues"][f"V{i:02d}"] = dict(d["venues"]["DEMO-ITCH"])
        d["streams"][f"V{i:02d}:10.0.0.1:{i}"] = dict(d["streams"]["DEMO-ITCH:198.18.0.2:26477"], venue=f"V{i:02d}")
    for h, w in ((24, 80), (40, 120)):
        out = text(tui.render(Snapshot(doc=d, taken=0.0), w, h, alerts=ALERTS * 5), w, h)
        lines = out.rstrip("\n").split("\n")
        assert len(lines) <= h, out
        assert "more" in out and "q quit" in lines[-1]


def test_keys_drive_the_state():
    st = tui.TopState()
    names = ["A", "B"]
    st.key("s", names)
    assert st.sort == "pps"
    for k in "/ab\x7fc\r":
        st.key(k, names)
    assert st.filter == "ac" and st.editing is None
    st.key("/", names)
    st.key("x", names)
    st.key("\x1b", names)
    assert st.filter == "ac"
    st.key("v", names)
    assert st.venue == "A"
    st.key("v", names)
    assert st.venue == "B"
    st.key("v", names)
    assert st.venue is None
    st.key("q", names)
    assert st.quit


def test_run_top_loop_is_bounded_and_reads_keys():
    docs = iter([S.doc(0), S.doc(1)] + [S.doc(1)] * 20)
    keys = iter(["s", "/", "m", "d", "p", "\r", "v", None, "q"])
    c = Console(record=True, width=80, height=24, file=open("/dev/null", "w"), color_system=None)
    st = tui.run_top(lambda: next(docs), interval=0.0, console=c, read_key=lambda timeout: next(keys))
    assert st.quit and st.sort == "pps" and st.filter == "mdp" and st.venue == "DEMO-MDP3"
    assert st.frames == 9
    out = c.export_text()
    assert "filter: m_" in out and "venue:DEMO-MDP3" in out
    st = tui.run_top(lambda: S.doc(1), interval=0.0, console=c, read_key=lambda t: None, max_frames=3)
    assert st.frames == 3 and not st.quit


def _with_agent(snap, ack_p50, ack_p99, running=True):
    import copy as _copy

    from hft_packetfilter.sinks.snapshot import interfaces

    d = _copy.deepcopy(snap.doc)
    for st in interfaces(d).values():
        st["agent_running"] = running
        st["agent"] = ({"latency": {"NASDAQ-OUCH": {"order_ack_us": {"count": 42, "p50": ack_p50, "p90": 60.0,
                                                                     "p99": ack_p99, "p99_9": ack_p99, "max": ack_p99}}}}
                       if running else None)
    return Snapshot(d, snap.taken, snap.prev, snap.interval)


@pytest.mark.parametrize("width", [80, 120])
def test_order_to_ack_from_the_agent_and_no_agent_is_said(width):
    out = text(tui.render(_with_agent(S.snapshot(), 41.5, 777.0), width, 24), width)
    assert "ACK99" in out and ("ACK50" in out) == (width >= tui.WIDE)
    row = next(line for line in out.split("\n") if line.startswith("NASDAQ-OUCH"))
    assert "777" in row and ("41.5" in row) == (width >= tui.WIDE)
    assert max(len(line) for line in out.rstrip("\n").split("\n")) <= width
    assert "no agent" not in out
    detail = text(tui.render(_with_agent(S.snapshot(), 41.5, 777.0), width, 24, venue="NASDAQ-OUCH"), width)
    assert "ACK us" in detail and "p50 41.5" in detail and "orders 42" in detail
    gone = text(tui.render(_with_agent(S.snapshot(), None, None, running=False), width, 24), width)
    assert "no agent" in gone.split("\n")[0]
