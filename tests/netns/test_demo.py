"""`hftpf-agent demo` end to end (root): it runs, the probe's feed counts equal what the sender sent
and the receiver got, every injected event is detected (feed gap, duplicate burst, unknown source on
the order port, fat-finger alert), the FIX order flow is decoded with latencies, and nothing is left
behind (namespaces, links, pins, processes)."""
import json
import os
import subprocess
import sys


def test_demo_json_report_and_clean_teardown(needs_kernel):
    r = subprocess.run([sys.executable, "-m", "hft_packetfilter.cli", "demo", "-d", "6", "--rate", "500", "--json"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert set(rep["sent"]) == {"DEMO-ITCH", "DEMO-MDP3"}
    for venue, sent in rep["sent"].items():
        assert sent >= 1500
        assert rep["received"][venue] == sent
        assert rep["probe"]["venues"][venue]["rx_packets"] == sent
    assert rep["probe"]["verdicts"]["drop"] == 0
    (itch,) = [s for s in rep["probe"]["streams"].values() if s["venue"] == "DEMO-ITCH"]
    assert (itch["gaps"], itch["missing"], itch["duplicates"]) == (1, 5, 3)
    assert rep["drops"]["unknown_source"]["would_drop_packets"] >= 1
    assert any(a["rule"] == "fat-finger" for a in rep["alerts"]), rep["alerts"]
    assert any(a["rule"] == "order-ack-latency" for a in rep["alerts"]), rep["alerts"]  # the injected spike
    orders = rep["orders"]["probe"]["DEMO-FIX"]
    assert orders["orders"] > 0 and orders["acks"] > 0 and orders["fills"] > 0
    assert rep["orders"]["latency"]["DEMO-FIX"]["order_ack_us"]["p50"] >= 200
    assert rep["probe"]["venues"]["DEMO-FIX"]["rtt_us"]["count"] > 0
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "hftpf-demo" not in ns
    assert "hfd-" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert not os.path.exists("/sys/fs/bpf/hftpf/hftpf-demo-host:hfd-host0")
