"""SYN flood and port-scan rules on live kernel input (root): the probe reports every inbound SYN and
every handshake it saw complete; completed connections never count as half-open, a burst of SYNs
that never complete fires the SYN-flood rule, and SYNs to many ports from one source fire the
port-scan rule."""
import json
import socket
import struct
import subprocess
import time

from test_live_orders_e2e import AGENT, EXCH_IP, HOST_IP, IF_RX, IF_TX, NS_RX, NS_TX, wait_agent

RULES = """rules:
  - {name: syn-flood, kind: syn_flood, threshold: 20, window: 30s, severity: critical}
  - {name: port-scan, kind: port_scan, threshold: 15, window: 30s, severity: warning}
"""


def syn(sport: int, dport: int) -> bytes:
    # checksum 0: the host's stack drops it (so no SYN-ACK, the connection stays half-open), the
    # probe sees it first
    return struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)


def alerts(rule):
    r = subprocess.run([*AGENT, "status", IF_RX, "--netns", NS_RX, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)["interfaces"][f"{NS_RX}:{IF_RX}"]
    return [a for a in st["agent"]["alerts"] or [] if a["rule"] == rule], st


def wait_for(rule, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got, st = alerts(rule)
        if got:
            return got, st
        time.sleep(0.2)
    return alerts(rule)


def test_syn_flood_and_port_scan_fire_on_kernel_input_and_handshakes_do_not(needs_kernel, tmp_path):
    from hft_packetfilter.kernel.netlab import Lab, Link, socket_in

    from _wire import teardown_agents

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"exchanges:\n  - {{name: VENUE, host: {EXCH_IP}, ports: [9878], protocol: FIX/TCP}}\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    procs = []
    with Lab([NS_TX, NS_RX], [Link(NS_TX, IF_TX, f"{EXCH_IP}/24", NS_RX, IF_RX, f"{HOST_IP}/24")]):
        try:
            agent = subprocess.Popen([*AGENT, "attach", IF_RX, "--netns", NS_RX, "-c", str(cfg), "-q", "-i", "0.2",
                                      "--risk-rules", str(rules), "--metrics-listen", "off"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(agent)
            wait_agent(agent, f"/run/hftpf/{NS_RX}:{IF_RX}.sock")
            # 30 real connections from the peer to a listener on the host: every handshake completes
            lst = socket_in(NS_RX, socket.AF_INET, socket.SOCK_STREAM)
            lst.bind((HOST_IP, 7000))
            lst.listen(64)
            for _ in range(30):
                c = socket_in(NS_TX, socket.AF_INET, socket.SOCK_STREAM)
                c.settimeout(5)
                c.connect((HOST_IP, 7000))
                s, _ = lst.accept()
                s.close()
                c.close()
            lst.close()
            time.sleep(1.0)
            got, st = alerts("syn-flood")
            assert got == [], got        # 30 SYNs, but none left half-open
            assert st["agent"]["ring"]["by_type"].get("conn", 0) >= 60, st["agent"]["ring"]   # SYN + ACK each
            raw = socket_in(NS_TX, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
            for i in range(25):                              # 25 half-open to one port: a flood
                raw.sendto(syn(41000 + i, 7000), (HOST_IP, 0))
            got, _ = wait_for("syn-flood")
            assert len(got) == 1 and got[0]["severity"] == "critical", got
            got, _ = alerts("port-scan")
            assert got == [], got        # one port so far
            for port in range(8000, 8016):                   # 16 distinct ports from one source
                raw.sendto(syn(42000, port), (HOST_IP, 0))
            raw.close()
            got, _ = wait_for("port-scan")
            assert len(got) == 1 and EXCH_IP in got[0]["message"], got
            assert agent.poll() is None
        finally:
            teardown_agents(procs, IF_RX, NS_RX)
