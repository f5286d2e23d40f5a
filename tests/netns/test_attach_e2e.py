"""End to end on real veth pairs in network namespaces the test creates (root).

The agent runs as a real process (`hftpf-agent attach`), traffic is real UDP sent from the peer
namespace, and counts are read back with the real `hftpf-agent status --json`."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from _wire import teardown_agents

NS_TX, NS_RX = "hftpf-t-tx", "hftpf-t-rx"
IF_TX, IF_RX = "hft-t-tx0", "hft-t-rx0"
TX_IP, RX_IP = "198.18.5.1", "198.18.5.2"
KEY = f"{NS_RX}:{IF_RX}"

CFG = f"""
exchanges:
  - name: VENUE-A
    host: {TX_IP}
    ports: [26400]
    protocol: ITCH/MoldUDP64
  - name: VENUE-B
    host: {TX_IP}
    ports: [14310]
    protocol: MDP3/UDP
"""

AGENT = [sys.executable, "-m", "hft_packetfilter.cli"]


def agent(*args, **kw):
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=60, **kw)


def status_json():
    r = agent("status", IF_RX, "--netns", NS_RX, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["interfaces"][KEY]


def xdp_attached() -> bool:
    out = subprocess.run(["ip", "-n", NS_RX, "-j", "-d", "link", "show", "dev", IF_RX],
                         capture_output=True, text=True, check=True).stdout
    return bool(json.loads(out)[0].get("xdp"))


def wait_for(pred, timeout=10.0, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def lab(needs_kernel, tmp_path):
    from hft_packetfilter.kernel.netlab import Lab, Link

    cfg = tmp_path / "venues.yaml"
    cfg.write_text(CFG)
    procs = []
    with Lab([NS_TX, NS_RX], [Link(NS_TX, IF_TX, f"{TX_IP}/24", NS_RX, IF_RX, f"{RX_IP}/24")]) as lab:
        lab.cfg = str(cfg)
        lab.procs = procs
        try:
            yield lab
        finally:
            teardown_agents(procs, IF_RX, NS_RX)


def start_agent(lab, *extra):
    p = subprocess.Popen([*AGENT, "attach", IF_RX, "--netns", NS_RX, "-c", lab.cfg, "-q", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lab.procs.append(p)
    from hft_packetfilter.kernel.loader import pin_dir

    def ready():
        if p.poll() is not None:
            raise AssertionError(f"agent exited {p.returncode}: {p.stderr.read()}")
        return os.path.exists(os.path.join(pin_dir(IF_RX, NS_RX), "hftpf_meta")) and xdp_attached()

    wait_for(ready, 15, "the agent to attach")
    return p


def send(n, port):
    from hft_packetfilter.kernel.netlab import socket_in

    s = socket_in(NS_TX)
    try:
        for i in range(n):
            s.sendto(b"seq%05d" % i, (RX_IP, port))
    finally:
        s.close()


def test_exact_counts_then_kill9_then_detach(lab):
    p = start_agent(lab)
    send(23, 26400)
    send(7, 14310)
    wait_for(lambda: status_json()["venues"]["VENUE-B"]["rx_packets"] >= 7
             and status_json()["venues"]["VENUE-A"]["rx_packets"] >= 23, 5, "the probe to count the packets")
    time.sleep(0.3)  # anything extra would land now
    st = status_json()
    assert st["venues"]["VENUE-A"]["rx_packets"] == 23
    assert st["venues"]["VENUE-B"]["rx_packets"] == 7
    # 14 (eth) + 20 (ip) + 8 (udp) + 8 payload bytes per packet
    assert st["venues"]["VENUE-A"]["rx_bytes"] == 23 * 50
    assert st["venues"]["VENUE-B"]["rx_bytes"] == 7 * 50
    assert st["attach_mode"] == "native"
    assert st["attached"] and st["agent_running"]
    assert st["verdicts"]["drop"] == 0
    assert st["verdicts"]["pass"] >= 30
    assert st["packet_classes"]["venue"] == 30

    p.send_signal(signal.SIGKILL)
    p.wait(5)
    # the program keeps running from its pins: counters still read, still counting
    send(5, 26400)
    wait_for(lambda: status_json()["venues"]["VENUE-A"]["rx_packets"] == 28, 5, "counting after kill -9")
    st = status_json()
    assert st["attached"] and not st["agent_running"]

    r = agent("detach", IF_RX, "--netns", NS_RX)
    assert r.returncode == 0, r.stderr
    assert "removed the XDP program" in r.stdout
    assert not xdp_attached()
    from hft_packetfilter.kernel.loader import pin_dir

    assert not os.path.exists(pin_dir(IF_RX, NS_RX))
    r = agent("status", IF_RX, "--netns", NS_RX, "--json")
    assert r.returncode == 1 and "no hftpf probe is attached" in r.stderr


def test_sigterm_detaches_cleanly(lab):
    p = start_agent(lab)
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0
    from hft_packetfilter.kernel.loader import pin_dir

    assert not xdp_attached()
    assert not os.path.exists(pin_dir(IF_RX, NS_RX))


def test_second_attach_refused_while_first_runs(lab):
    start_agent(lab)
    r = agent("attach", IF_RX, "--netns", NS_RX, "-c", lab.cfg, "-q", "-d", "1")
    assert r.returncode == 1
    assert "already has an hftpf probe attached" in r.stderr


def test_detach_stops_a_running_agent(lab):
    p = start_agent(lab)
    r = agent("detach", IF_RX, "--netns", NS_RX, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["stopped_agent"] == p.pid
    assert p.wait(10) == 0
    assert not xdp_attached()


def test_native_mode_is_never_silently_generic(needs_kernel):
    """ifb has no native XDP: native must fail with advice, generic must work."""
    ns = "hftpf-t-ifb"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "hft-ifb0", "type", "ifb"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "hft-ifb0", "up"], check=True)
        r = agent("attach", "hft-ifb0", "--netns", ns, "--xdp-mode", "native", "-q", "-d", "0.5")
        assert r.returncode == 1
        assert "native XDP is not supported on hft-ifb0" in r.stderr and "--xdp-mode generic" in r.stderr
        r = agent("attach", "hft-ifb0", "--netns", ns, "--xdp-mode", "generic", "-q", "-d", "0.5")
        assert r.returncode == 0, r.stderr
        assert "generic XDP" in r.stderr
        r = agent("check", "hft-ifb0", "--netns", ns, "--json")
        modes = [c for c in json.loads(r.stdout)["checks"] if c["check"].startswith("xdp modes")][0]
        assert modes["state"] == "warn" and "generic only" in modes["detail"]
    finally:
        subprocess.run(["ip", "netns", "del", ns])
