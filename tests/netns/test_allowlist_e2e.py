"""The allow-list on a real veth in a namespace (root): the exact matrix of issue 3, live edits,
and kill -9 / re-adoption in enforce mode.

Frames are injected raw from the peer namespace with three source addresses (allowed, unknown,
denied) to a protected TCP port, a protected UDP port and an unprotected port; the receiver's packet
tap counts what XDP let through, and `status --json` must agree."""
import ipaddress
import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from _wire import Counter, mac_bytes, raw_socket, teardown_agents, with_macs
from frames import tcp4, udp4

NS_TX, NS_RX = "hftpf-a-tx", "hftpf-a-rx"
IF_TX, IF_RX = "hft-a-tx0", "hft-a-rx0"
TX_IP, RX_IP = "198.18.6.1", "198.18.6.2"
ALLOWED, UNKNOWN, DENIED = "198.18.6.10", "198.18.6.20", "198.18.6.30"
TCP_PORT, UDP_PORT, OPEN_PORT = 9001, 26400, 2222
N = 23
KEY = f"{NS_RX}:{IF_RX}"
AGENT = [sys.executable, "-m", "hft_packetfilter.cli"]

CFG = f"""
exchanges:
  - {{name: ORDERS, host: {RX_IP}, ports: [{TCP_PORT}], protocol: FIX/TCP}}
  - {{name: FEED, host: {RX_IP}, ports: [{UDP_PORT}], protocol: ITCH/MoldUDP64}}
"""
RULES = f"""
version: 1
rules:
  - {{id: 64, action: allow, src: {ALLOWED}/32, proto: any, ports: any, comment: counterparty}}
  - {{id: 65, action: deny, src: {DENIED}/32, proto: any, ports: any, comment: blocked}}
"""


def agent(*args):
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=60)


def status():
    r = agent("status", IF_RX, "--netns", NS_RX, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["interfaces"][KEY]


def frame_key(data: bytes):
    """(source ip, dest port) of an IPv4 TCP/UDP frame."""
    if len(data) < 38 or data[12:14] != b"\x08\x00" or data[23] not in (6, 17):
        return None
    ihl = (data[14] & 0x0F) * 4
    return str(ipaddress.IPv4Address(data[26:30])), struct.unpack_from("!H", data, 14 + ihl + 2)[0]


@pytest.fixture
def lab(needs_kernel, tmp_path):
    from hft_packetfilter.kernel.netlab import Lab, Link

    (tmp_path / "cfg.yaml").write_text(CFG)
    (tmp_path / "allow.yaml").write_text(RULES)
    with Lab([NS_TX, NS_RX], [Link(NS_TX, IF_TX, f"{TX_IP}/24", NS_RX, IF_RX, f"{RX_IP}/24")]) as lab:
        lab.cfg, lab.rules, lab.procs = str(tmp_path / "cfg.yaml"), str(tmp_path / "allow.yaml"), []
        lab.tx = raw_socket(NS_TX, IF_TX)
        lab.rx = raw_socket(NS_RX, IF_RX)
        lab.macs = (mac_bytes(lab.mac(NS_RX, IF_RX)), mac_bytes(lab.mac(NS_TX, IF_TX)))
        try:
            yield lab
        finally:
            lab.tx.close()
            lab.rx.close()
            teardown_agents(lab.procs, IF_RX, NS_RX)


def start(lab, *extra):
    from hft_packetfilter.kernel.loader import pin_dir

    p = subprocess.Popen([*AGENT, "attach", IF_RX, "--netns", NS_RX, "-c", lab.cfg, "--rules", lab.rules, "-q", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lab.procs.append(p)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise AssertionError(f"agent exited {p.returncode}: {p.stderr.read()}")
        if os.path.exists(os.path.join(pin_dir(IF_RX, NS_RX), "hftpf_meta")):
            st = agent("status", IF_RX, "--netns", NS_RX, "--json")
            doc = json.loads(st.stdout)["interfaces"][KEY] if st.returncode == 0 else {}
            if doc.get("attached") and doc.get("agent_pid") == p.pid:
                return p
        time.sleep(0.05)
    raise AssertionError("agent did not attach")


def stop(p):
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0, p.stderr.read()


def blast(lab, src, dport, proto, n=N):
    build = tcp4 if proto == "tcp" else udp4
    frame = with_macs(build(src, RX_IP, 40000, dport, b"hftpf-test"), *lab.macs)
    for _ in range(n):
        lab.tx.send(frame)


MATRIX_SENDS = [(src, port, proto) for src in (ALLOWED, UNKNOWN, DENIED)
                for port, proto in ((TCP_PORT, "tcp"), (UDP_PORT, "udp"), (OPEN_PORT, "tcp"))]


@pytest.mark.parametrize("mode", ["monitor", "enforce", "dry-run"])
def test_exact_matrix(lab, mode):
    args = ["--mode", "enforce"] if mode == "enforce" else (["--dry-run"] if mode == "dry-run" else ["--mode", "monitor"])
    p = start(lab, *args)
    counter = Counter(lab.rx, frame_key)
    for src, port, proto in MATRIX_SENDS:
        blast(lab, src, port, proto)
    got = counter.drain()
    st = status()
    stop(p)

    protected = {TCP_PORT, UDP_PORT}
    expect_rx, dropped, would = {}, {"unknown_source": 0, "deny_rule": 0}, {"unknown_source": 0, "deny_rule": 0}
    for src, port, proto in MATRIX_SENDS:
        reason = None
        if port in protected and src != ALLOWED:
            reason = "deny_rule" if src == DENIED else "unknown_source"
        if reason and mode == "enforce":
            dropped[reason] += N
            continue
        if reason:
            would[reason] += N
        expect_rx[(src, port)] = N
    assert {k: v for k, v in got.items() if k[0] in (ALLOWED, UNKNOWN, DENIED)} == expect_rx
    assert st["mode"] == mode
    assert st["verdicts"]["drop"] == sum(dropped.values())
    for reason in dropped:
        assert st["drops"][reason]["dropped_packets"] == dropped[reason], reason
        assert st["drops"][reason]["would_drop_packets"] == would[reason], reason
    assert st["venues"]["ORDERS"]["rx_packets"] == 3 * N
    assert st["venues"]["FEED"]["rx_packets"] == 3 * N


def test_enforce_empty_allow_list_keeps_ssh_and_arp(lab, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("version: 1\nrules: []\n")
    lab.rules = str(empty)
    p = start(lab, "--mode", "enforce")
    # a real ARP exchange and a real TCP handshake attempt to an unprotected port from the peer
    subprocess.run(["ip", "-n", NS_TX, "neigh", "del", RX_IP, "dev", IF_TX], check=True)  # force a real ARP
    r = subprocess.run(["ip", "netns", "exec", NS_TX, "ping", "-c", "3", "-i", "0.2", "-W", "1", RX_IP],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    listener = subprocess.Popen(["ip", "netns", "exec", NS_RX, sys.executable, "-c",
                                 "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                                 f"s.bind(('{RX_IP}',22));s.listen();c,_=s.accept();c.sendall(c.recv(64));c.close()"])
    try:
        time.sleep(0.3)
        r = subprocess.run(["ip", "netns", "exec", NS_TX, sys.executable, "-c",
                            f"import socket;s=socket.create_connection(('{RX_IP}',22),timeout=3);s.sendall(b'SSH-2.0-x');"
                            "print(s.recv(64).decode())"], capture_output=True, text=True, timeout=10)
        assert r.stdout.strip() == "SSH-2.0-x", r.stderr
    finally:
        listener.kill()
        listener.wait()
    st = status()
    assert st["packet_classes"]["non_ip"] >= 1  # the ARP went through XDP and was passed
    stop(p)


def test_live_allow_add_and_del_in_enforce(lab):
    p = start(lab, "--mode", "enforce")
    counter = Counter(lab.rx, frame_key)
    blast(lab, UNKNOWN, TCP_PORT, "tcp", 5)
    assert counter.drain().get((UNKNOWN, TCP_PORT), 0) == 0

    r = agent("allow", "add", f"{UNKNOWN}/32", "--port", str(TCP_PORT), "--proto", "tcp", "--rules", lab.rules,
              "--comment", "added live")
    assert r.returncode == 0, r.stderr
    assert "applied live" in r.stdout and KEY in r.stdout
    blast(lab, UNKNOWN, TCP_PORT, "tcp", 7)
    assert counter.drain()[(UNKNOWN, TCP_PORT)] == 7

    lst = json.loads(agent("allow", "list", "--rules", lab.rules, "--json").stdout)
    live = {r["id"]: r for r in lst["probes"][KEY]["rules"]}
    added = [r for r in live.values() if r.get("comment") == "added live"][0]
    assert added["hits"]["packets"] == 7 and added["hits"]["last_hit"] is not None
    assert live["venue:ORDERS"]["origin"] == "config"

    r = agent("allow", "del", str(added["id"]), "--rules", lab.rules)
    assert r.returncode == 0, r.stderr
    blast(lab, UNKNOWN, TCP_PORT, "tcp", 4)
    assert counter.drain()[(UNKNOWN, TCP_PORT)] == 7  # no more got through
    st = status()
    assert st["drops"]["unknown_source"]["dropped_packets"] == 9
    stop(p)


def test_bad_rules_change_nothing(lab):
    p = start(lab, "--mode", "enforce")
    before = open(lab.rules).read()
    for args in (["add", "10.0.0.300"], ["add", "10.0.0.0/8", "--port", "0"], ["add", "10.0.0.0/8", "--port", "9000-8000"],
                 ["add", f"{ALLOWED}/32"], ["add", "10.0.0.1/8"]):
        r = agent("allow", *args, "--rules", lab.rules)
        assert r.returncode == 1 and "error" in r.stderr, args
    bad = os.path.join(os.path.dirname(lab.rules), "bad.yaml")
    open(bad, "w").write("rules:\n  - {action: allow, src: 10.0.0.0/33}\n")
    r = agent("allow", "import", bad, "--rules", lab.rules)
    assert r.returncode == 1 and "bad.yaml:2" in r.stderr
    assert open(lab.rules).read() == before
    counter = Counter(lab.rx, frame_key)
    blast(lab, ALLOWED, TCP_PORT, "tcp", 3)
    blast(lab, UNKNOWN, TCP_PORT, "tcp", 3)
    got = counter.drain()
    assert got.get((ALLOWED, TCP_PORT)) == 3 and got.get((UNKNOWN, TCP_PORT), 0) == 0
    stop(p)


def test_kill9_keeps_filtering_restart_readopts_detach_cleans(lab):
    from hft_packetfilter.kernel.loader import pin_dir

    p = start(lab, "--mode", "enforce")
    prog = status()["program_id"]
    p.send_signal(signal.SIGKILL)
    p.wait(5)
    counter = Counter(lab.rx, frame_key)
    blast(lab, UNKNOWN, TCP_PORT, "tcp", 5)
    blast(lab, ALLOWED, TCP_PORT, "tcp", 5)
    got = counter.drain()
    assert got.get((UNKNOWN, TCP_PORT), 0) == 0 and got[(ALLOWED, TCP_PORT)] == 5

    p2 = start(lab, "--mode", "enforce")
    st = status()
    assert st["program_id"] == prog and st["agent_pid"] == p2.pid  # same program: re-adopted, not re-attached
    blast(lab, UNKNOWN, TCP_PORT, "tcp", 5)
    assert counter.drain().get((UNKNOWN, TCP_PORT), 0) == 0
    p2.send_signal(signal.SIGKILL)
    p2.wait(5)
    r = agent("detach", IF_RX, "--netns", NS_RX)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(pin_dir(IF_RX, NS_RX))
    out = subprocess.run(["ip", "-n", NS_RX, "-j", "-d", "link", "show", "dev", IF_RX], capture_output=True,
                         text=True).stdout
    assert not json.loads(out)[0].get("xdp")
