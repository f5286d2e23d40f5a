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


def test_orders_decoded_live_and_served_on_the_control_socket(needs_kernel, tmp_path):
    from hft_packetfilter.kernel.netlab import Lab, Link, socket_in

    from _wire import teardown_agents

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"exchanges:\n  - {{name: VENUE, host: {EXCH_IP}, ports: [9878], protocol: FIX/TCP}}\n")
    with Lab([NS_TX, NS_RX], [Link(NS_TX, IF_TX, f"{EXCH_IP}/24", NS_RX, IF_RX, f"{HOST_IP}/24")]):
        procs = []
        try:
            agent = subprocess.Popen([*AGENT, "attach", IF_RX, "--netns", NS_RX, "-c", str(cfg), "-q"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(agent)
            sock = f"/run/hftpf/{NS_RX}:{IF_RX}.sock"
            deadline = time.monotonic() + 15
            while not os.path.exists(sock) and time.monotonic() < deadline:
                assert agent.poll() is None, agent.stderr.read()
                time.sleep(0.05)
            exch = subprocess.Popen(["ip", "netns", "exec", NS_TX, sys.executable, EXCH, EXCH_IP, "9878", "300"],
                                    stdout=subprocess.PIPE, text=True)
            procs.append(exch)
            assert exch.stdout.readline().strip() == "ready"
            c = socket_in(NS_RX, socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(5)
            c.connect((EXCH_IP, 9878))
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
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
            teardown_agents([], IF_RX, NS_RX)
