"""`hftpf-agent demo` end to end (root): it runs, the probe's counts equal what the sender sent
and the receiver got, and nothing is left behind (namespaces, links, pins, processes)."""
import json
import os
import subprocess
import sys


def test_demo_json_report_and_clean_teardown(needs_kernel):
    r = subprocess.run([sys.executable, "-m", "hft_packetfilter.cli", "demo", "-d", "2", "--rate", "500", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert set(rep["sent"]) == {"DEMO-ITCH", "DEMO-MDP3"}
    for venue, sent in rep["sent"].items():
        assert sent >= 500  # ~1000 over 2 s at 500 pps
        assert rep["received"][venue] == sent
        assert rep["probe"]["venues"][venue]["rx_packets"] == sent
    assert rep["probe"]["verdicts"]["drop"] == 0
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "hftpf-demo" not in ns
    assert "hfd-" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert not os.path.exists("/sys/fs/bpf/hftpf/hftpf-demo-host:hfd-host0")
