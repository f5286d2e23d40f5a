"""`hftpf-agent demo` end to end (root), for 20 s as the README's main command runs it: the probe's
feed counts equal what the sender sent and the receiver got, every injected event is detected (feed
gap, duplicate burst, latency spike alert, unknown source on the order port, fat-finger alert), the
order flow is decoded with latencies, the two ITCH venues' books are built live from the kernel's
payload records with cross-venue figures, and nothing is left behind (namespaces, links, pins,
processes). While it runs, the real `hftpf-agent top` is driven in tmux at 80x24 and its screen read."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from test_live_orders_e2e import wait_agent

NS, IF = "hftpf-demo-host", "hfd-host0"
SOCK = f"/run/hftpf/{NS}:{IF}.sock"
TMUX = ["tmux", "-L", "hftpf-test"]
SESSION = "hftpf-top"


def _screen() -> str:
    return subprocess.run([*TMUX, "capture-pane", "-p", "-t", SESSION], capture_output=True, text=True).stdout


def _wait_screen(pred, seconds=15.0) -> str:
    deadline = time.monotonic() + seconds
    s = ""
    while time.monotonic() < deadline:
        s = _screen()
        if pred(s):
            return s
        time.sleep(0.2)
    raise AssertionError(f"the top screen never showed what was expected; last screen:\n{s}")


def _drive_top() -> dict:
    """Run `top` on the demo's interface in a detached 80x24 tmux session; read and key it."""
    cmd = (f"{sys.executable} -m hft_packetfilter.cli top {IF} --netns {NS} -i 0.5; "
           f"echo TOP-EXITED $?; sleep 30")
    subprocess.run([*TMUX, "new-session", "-d", "-s", SESSION, "-x", "80", "-y", "24", cmd], check=True)
    seen = {}
    try:
        # rates need two samples; the FIX venue's order-to-ack needs acks
        main = _wait_screen(lambda s: re.search(r"^DEMO-ITCH-A\s+[\d,]+\s", s, re.M) is not None
                            and re.search(r"^DEMO-FIX\s.*\d", s, re.M) is not None)
        seen["main"] = main
        seen["sorted"] = None
        subprocess.run([*TMUX, "send-keys", "-t", SESSION, "s"], check=True)
        seen["sorted"] = _wait_screen(lambda s: "sort:pps" in s)
        subprocess.run([*TMUX, "send-keys", "-t", SESSION, "v"], check=True)
        seen["detail"] = _wait_screen(lambda s: "RTT us" in s)
        subprocess.run([*TMUX, "send-keys", "-t", SESSION, "Escape"], check=True)
        _wait_screen(lambda s: "v venue:all" in s)
        subprocess.run([*TMUX, "send-keys", "-t", SESSION, "q"], check=True)
        seen["exit"] = _wait_screen(lambda s: "TOP-EXITED" in s)
    finally:
        subprocess.run([*TMUX, "kill-server"], capture_output=True)
    return seen


def test_demo_json_report_top_in_tmux_and_clean_teardown(needs_kernel):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (tools/setup-host.sh installs it): the top end-to-end test needs it")
    demo = subprocess.Popen([sys.executable, "-m", "hft_packetfilter.cli", "demo", "-d", "20", "--rate", "500",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_agent(demo, SOCK, seconds=60)
        top = _drive_top()
        out, err = demo.communicate(timeout=180)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    assert demo.returncode == 0, err

    # -- what top showed --------------------------------------------------------------------------
    main = top["main"].rstrip("\n").split("\n")
    assert len(main) <= 24 and max(len(line) for line in main) <= 80, top["main"]
    text = top["main"]
    for want in ("hftpf top", f"{NS}:{IF}", "DEMO-ITCH-A", "DEMO-ITCH-B", "DEMO-MDP3", "DEMO-FIX", "ACK99",
                 "drops", "ring lost", "q quit"):
        assert want in text, (want, text)
    assert "no agent" not in text
    fix_row = next(line for line in main if line.startswith("DEMO-FIX"))
    assert re.search(r"\d+\.\d", fix_row), fix_row          # latencies in us (RTT and order-to-ack)
    assert "RTT us" in top["detail"] and "FEED" in top["detail"]
    assert "TOP-EXITED 0" in top["exit"]

    # -- the demo's report --------------------------------------------------------------------------
    rep = json.loads(out)
    assert set(rep["sent"]) == {"DEMO-ITCH-A", "DEMO-ITCH-B", "DEMO-MDP3"}
    for venue, sent in rep["sent"].items():
        assert sent >= 5000
        assert rep["received"][venue] == sent
        assert rep["probe"]["venues"][venue]["rx_packets"] == sent
    assert rep["probe"]["verdicts"]["drop"] == 0
    by_venue = {s["venue"]: s for s in rep["probe"]["streams"].values()}
    itch = by_venue["DEMO-ITCH-A"]
    assert (itch["gaps"], itch["missing"], itch["duplicates"]) == (1, 5, 3)
    assert (by_venue["DEMO-ITCH-B"]["gaps"], by_venue["DEMO-MDP3"]["gaps"]) == (0, 0)
    assert by_venue["DEMO-MDP3"]["feed_latency_us"]["count"] > 0      # SendingTime stamps
    for venue in ("DEMO-ITCH-A", "DEMO-ITCH-B"):                       # first ITCH message vs midnight
        lat = by_venue[venue]["feed_latency_us"]
        assert lat["count"] > 1000 and 0 < lat["p50"] < 50_000, (venue, lat)
    assert rep["drops"]["unknown_source"]["would_drop_packets"] >= 1
    assert any(a["rule"] == "fat-finger" for a in rep["alerts"]), rep["alerts"]
    assert any(a["rule"] == "order-ack-latency" for a in rep["alerts"]), rep["alerts"]  # the injected spike
    orders = rep["orders"]["probe"]["DEMO-FIX"]
    assert orders["orders"] > 0 and orders["acks"] > 0 and orders["fills"] > 0
    assert rep["orders"]["latency"]["DEMO-FIX"]["order_ack_us"]["p50"] >= 200
    assert rep["probe"]["venues"]["DEMO-FIX"]["rtt_us"]["count"] > 0
    # books built live from the kernel's payload records, on overlapping symbols
    for venue in ("DEMO-ITCH-A", "DEMO-ITCH-B"):
        b = rep["books"][venue]
        assert b["messages"] > 5000 and b["symbols"] == 5 and b["orders"] > 0, b
        # a side can be empty for a moment (its last order executed); most books are two-sided
        assert all(t["bid_px"] or t["ask_px"] for t in b["top"].values()), b["top"]
        assert sum(1 for t in b["top"].values() if t["bid_px"] and t["ask_px"]) >= 3, b["top"]
    assert rep["decode_errors"] in ({}, None) or not any(rep["decode_errors"].values()), rep["decode_errors"]
    # most ITCH payload records went through the compiled fast lane, the rest through Python
    pl = rep["payloads"]
    assert pl["records"] > 5000 and pl["fast_lane"] > pl["records"] // 2, pl
    cv = rep["crossvenue"]
    shared = {"AAPL", "MSFT", "NVDA", "AMZN"}
    assert shared <= set(cv["instruments"]) and all(len(cv["instruments"][s]["venues"]) == 2 for s in shared)
    assert cv["totals"]["crossed"] + cv["totals"]["locked"] > 0 and cv["totals"]["arbitrage"] > 0, cv["totals"]
    assert rep["probe"]["health"]["ringbuf_lost"] == 0
    # nothing left behind
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "hftpf-demo" not in ns
    assert "hfd-" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert not os.path.exists(f"/sys/fs/bpf/hftpf/{NS}:{IF}")
    assert not os.path.exists(SOCK)


def test_demo_on_a_terminal_shows_the_tui_then_the_summary(needs_kernel):
    """The README's main command on a terminal: the TUI while it runs, then the summary, exit 0."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (tools/setup-host.sh installs it)")
    cmd = f"{sys.executable} -m hft_packetfilter.cli demo -d 6 --rate 200; echo DEMO-EXIT $?; sleep 30"
    subprocess.run([*TMUX, "new-session", "-d", "-s", SESSION, "-x", "100", "-y", "40", cmd], check=True)
    try:
        live = _wait_screen(lambda s: "hftpf top" in s and re.search(r"^DEMO-ITCH-A\s+\d", s, re.M) is not None, 40)
        assert "q quit" in live and "DEMO-FIX" in live
        done = _wait_screen(lambda s: "DEMO-EXIT" in s, 60)
    finally:
        subprocess.run([*TMUX, "kill-server"], capture_output=True)
    assert "DEMO-EXIT 0" in done, done
    for want in ("demo: done; lab and probe removed", "cross-venue:", "book DEMO-ITCH-B", "alert critical fat-finger"):
        assert want in done, (want, done)
