"""Live order flow under `attach` (root): the probe's payload samples go through the decoders and
the order tracker in the running agent; `status --json` (via the control socket) shows the orders,
acks and fills the client sent and got, with ack latencies no lower than the venue's reply delay."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from _fixexch import fix

NS_TX, NS_RX = "hftpf-o-exch", "hftpf-o-host"
IF_TX, IF_RX = "hft-o-exch0", "hft-o-host0"
EXCH_IP, HOST_IP = "198.18.9.1", "198.18.9.2"
AGENT = [sys.executable, "-m", "hft_packetfilter.cli"]
EXCH = str(Path(__file__).with_name("_fixexch.py"))


def wait_agent(agent, sock, seconds=15):
    """Until this agent answers on its control socket (a stale socket file proves nothing)."""
    from hft_packetfilter.control import request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert agent.poll() is None, agent.stderr.read()
        try:
            if request(sock, "ping", timeout=0.5) == "pong":
                return
        except (ConnectionError, OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError("the agent never answered on its control socket")


def start_session(procs, cfg, delay_us, *attach_args):
    """The agent attached on the host side, the test venue answering after delay_us, and a connected
    client socket in the host namespace. Processes go into `procs` for the caller's cleanup."""
    from hft_packetfilter.kernel.netlab import socket_in

    agent = subprocess.Popen([*AGENT, "attach", IF_RX, "--netns", NS_RX, "-c", str(cfg), "-q", *attach_args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(agent)
    sock = f"/run/hftpf/{NS_RX}:{IF_RX}.sock"
    wait_agent(agent, sock)
    exch = subprocess.Popen(["ip", "netns", "exec", NS_TX, sys.executable, EXCH, EXCH_IP, "9878", str(delay_us)],
                            stdout=subprocess.PIPE, text=True)
    procs.append(exch)
    assert exch.stdout.readline().strip() == "ready"
    c = socket_in(NS_RX, socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect((EXCH_IP, 9878))
    return agent, sock, c


def test_orders_decoded_live_and_served_on_the_control_socket(needs_kernel, tmp_path):
    from hft_packetfilter.kernel.netlab import Lab, Link

    from _wire import teardown_agents

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"exchanges:\n  - {{name: VENUE, host: {EXCH_IP}, ports: [9878], protocol: FIX/TCP}}\n")
    with Lab([NS_TX, NS_RX], [Link(NS_TX, IF_TX, f"{EXCH_IP}/24", NS_RX, IF_RX, f"{HOST_IP}/24")]):
        procs = []
        try:
            agent, sock, c = start_session(procs, cfg, 300)
            n = 23
            for i in range(1, n + 1):
                c.sendall(fix([(35, "D"), (49, "CLIENT"), (56, "VENUE"), (34, i), (11, f"ORD{i:04d}"), (55, "ACME"),
                               (54, 1), (38, 100), (40, 2), (44, "10.5")]))
                got = b""
                while got.count(b"\x0110=") < 2:
                    got += c.recv(65536)
            c.close()
            time.sleep(1.5)  # the agent drains and decodes
            r = subprocess.run([*AGENT, "status", IF_RX, "--netns", NS_RX, "--json"], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            st = json.loads(r.stdout)["interfaces"][f"{NS_RX}:{IF_RX}"]
            orders = st["agent"]["orders"]["VENUE"]
            assert (orders["orders"], orders["acks"], orders["fills"]) == (n, n, n), orders
            ack = st["agent"]["latency"]["VENUE"]["order_ack_us"]
            assert ack["p50"] >= 300 and ack["max"] < 300 + 50_000, ack
            assert st["agent"]["payloads"]["truncated"] == 0
            # the control socket refuses garbage without dying
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.sendall(b"this is not json\n")
            reply = json.loads(s.recv(4096))
            s.close()
            assert reply["ok"] is False and "malformed" in reply["error"]
            assert agent.poll() is None
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(10) == 0
            assert not os.path.exists(sock)
        finally:
            teardown_agents(procs, IF_RX, NS_RX)


def test_fat_finger_rule_alerts_and_engages_the_kill_switch(needs_kernel, tmp_path):
    """attach --risk-rules: a fat-finger order seen on the wire raises a critical alert and the rule's
    kill_switch action cuts the venue off in the kernel; later orders never reach the venue."""
    from hft_packetfilter.kernel.netlab import Lab, Link

    from _wire import teardown_agents

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"exchanges:\n  - {{name: VENUE, host: {EXCH_IP}, ports: [9878], protocol: FIX/TCP}}\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: fat-finger\n    kind: order_quantity\n    threshold: 50000\n"
                     "    severity: critical\n    actions: [alert, kill_switch]\n")
    with Lab([NS_TX, NS_RX], [Link(NS_TX, IF_TX, f"{EXCH_IP}/24", NS_RX, IF_RX, f"{HOST_IP}/24")]):
        procs = []
        try:
            agent, sock, c = start_session(procs, cfg, 0, "-i", "0.2", "--risk-rules", str(rules),
                                           "--metrics-listen", "off")

            def order(i, qty):
                c.sendall(fix([(35, "D"), (49, "CLIENT"), (56, "VENUE"), (34, i), (11, f"FF{i:04d}"), (55, "ACME"),
                               (54, 1), (38, qty), (40, 2), (44, "10.5")]))

            order(1, 100)
            got = b""
            while got.count(b"\x0110=") < 2:
                got += c.recv(65536)
            order(2, 1_000_000)  # the fat finger
            deadline = time.monotonic() + 5
            st = None
            while time.monotonic() < deadline:
                r = subprocess.run([*AGENT, "status", IF_RX, "--netns", NS_RX, "--json"], capture_output=True, text=True)
                st = json.loads(r.stdout)["interfaces"][f"{NS_RX}:{IF_RX}"]
                if st["kill_switch"]["VENUE"]["engaged"]:
                    break
                time.sleep(0.1)
            assert st["kill_switch"]["VENUE"]["engaged"], st["kill_switch"]
            assert "fat-finger" in st["kill_switch"]["VENUE"]["reason"]
            alerts = st["agent"]["alerts"]
            assert any(a["rule"] == "fat-finger" and a["severity"] == "critical" for a in alerts), alerts
            order(3, 100)  # cut off at the wire: the venue never sees it, so never answers it
            c.settimeout(1.0)
            replies = b""
            try:
                while True:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    replies += chunk
            except socket.timeout:
                pass
            c.close()
            assert b"11=FF0003" not in replies
            subprocess.run([*AGENT, "kill-switch", "release", "VENUE", "--reason", "test done"], check=True,
                           capture_output=True)
        finally:
            teardown_agents(procs, IF_RX, NS_RX)
