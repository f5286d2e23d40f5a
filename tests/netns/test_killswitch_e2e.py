"""Kill switch on a real veth (root): while a sender streams orders to two venues, engaging one
venue's switch stops every packet to it that is sent after the engage returned (counted on the
receiving side), the other venue is unaffected, and release restores the flow. Engage-to-effect is
measured by the kernel: first drop time minus engage time."""
import json
import socket
import struct
import subprocess
import sys
import threading
import time


NS_TX, NS_RX = "hftpf-k-exch", "hftpf-k-host"
IF_TX, IF_RX = "hft-k-exch0", "hft-k-host0"
EXCH_IP, HOST_IP = "198.18.8.1", "198.18.8.2"
AGENT = [sys.executable, "-m", "hft_packetfilter.cli"]
CFG = f"""
exchanges:
  - {{name: VENUE-A, host: {EXCH_IP}, ports: [9001], protocol: UDP}}
  - {{name: VENUE-B, host: {EXCH_IP}, ports: [9002], protocol: UDP}}
"""


def test_engage_stops_the_venue_release_restores(needs_kernel):
    from hft_packetfilter import config
    from hft_packetfilter.kernel.loader import Probe
    from hft_packetfilter.kernel.netlab import Lab, Link, socket_in

    with Lab([NS_TX, NS_RX], [Link(NS_TX, IF_TX, f"{EXCH_IP}/24", NS_RX, IF_RX, f"{HOST_IP}/24")]):
        p = Probe(config.loads(CFG), IF_RX, netns=NS_RX)
        p.load()
        p.attach()
        got = {9001: [], 9002: []}
        stop = threading.Event()
        rx = {port: socket_in(NS_TX) for port in got}
        for port, s in rx.items():
            s.bind((EXCH_IP, port))
            s.settimeout(0.2)

        def receive(port):
            while not stop.is_set():
                try:
                    data = rx[port].recv(64)
                except socket.timeout:
                    continue
                got[port].append(struct.unpack("!I", data[:4])[0])

        threads = [threading.Thread(target=receive, args=(port,), daemon=True) for port in got]
        for t in threads:
            t.start()
        tx = socket_in(NS_RX)
        seq = 0
        marks = {}
        try:
            def burst(n):
                nonlocal seq
                for _ in range(n):
                    seq += 1
                    for port in got:
                        tx.sendto(struct.pack("!I", seq), (EXCH_IP, port))
                    if seq % 50 == 0:
                        time.sleep(0.001)

            burst(500)
            r = subprocess.run([*AGENT, "kill-switch", "engage", "VENUE-A", "--reason", "test: runaway", "--json"],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            marks["engaged"] = seq          # everything after this was sent with the switch engaged
            burst(500)
            st = json.loads(subprocess.run([*AGENT, "status", IF_RX, "--netns", NS_RX, "--json"], capture_output=True,
                                           text=True).stdout)["interfaces"][f"{NS_RX}:{IF_RX}"]
            ks = st["kill_switch"]["VENUE-A"]
            assert ks["engaged"] and ks["reason"] == "test: runaway"
            assert ks["dropped_packets"] == 500
            # here the first packet after the engage is sent only once the CLI has exited, so this gap is
            # the CLI's exit time, not the kernel's (engage-to-effect with traffic flowing: the test below)
            assert ks["engage_to_first_drop_us"] is not None and ks["engage_to_first_drop_us"] < 1000 * 1000
            assert not st["kill_switch"]["VENUE-B"]["engaged"]
            assert st["drops"]["kill_switch"]["dropped_packets"] == 500
            r = subprocess.run([*AGENT, "kill-switch", "release", "VENUE-A", "--reason", "test: fixed", "--json"],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            rel = json.loads(r.stdout)[0]
            assert rel["was_engaged"] and rel["dropped_packets"] == 500
            marks["released"] = seq
            burst(500)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(2)
            tx.close()
            for s in rx.values():
                s.close()
            p.detach()
        a, b = set(got[9001]), set(got[9002])
        engaged_window = set(range(marks["engaged"] + 1, marks["released"] + 1))
        assert not (a & engaged_window), "a packet to the killed venue left after the engage"
        assert set(range(1, marks["engaged"] + 1)) <= a                 # before: all arrived
        assert set(range(marks["released"] + 1, seq + 1)) <= a         # after release: all arrived
        assert b == set(range(1, seq + 1))                             # the other venue: untouched


def test_engage_to_effect_under_1ms_with_traffic_flowing(needs_kernel):
    """Engage while a sender streams: the kernel's first drop follows the engage within 1 ms.

    The sender is its own process (a thread here would wait for this test's GIL, up to the 5 ms
    switch interval, and that wait is not the kernel's). What is measured is engage -> the next
    packet the sender emits; on a loaded 2-core VM the sender itself can be descheduled for a few
    ms now and then, so the median of 5 engages must be under 1 ms and every one under 20 ms."""
    from hft_packetfilter import config
    from hft_packetfilter.kernel.loader import Probe
    from hft_packetfilter.kernel.netlab import Lab, Link

    with Lab([NS_TX, NS_RX], [Link(NS_TX, IF_TX, f"{EXCH_IP}/24", NS_RX, IF_RX, f"{HOST_IP}/24")]):
        p = Probe(config.loads(CFG), IF_RX, netns=NS_RX)
        p.load()
        p.attach()
        sender = subprocess.Popen(
            ["ip", "netns", "exec", NS_RX, sys.executable, "-c",
             "import socket, time\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "end = time.monotonic() + 5\n"                      # bounded in time
             "while time.monotonic() < end:\n"
             f"    s.sendto(b'order', ('{EXCH_IP}', 9001))\n"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.2)
            results = []
            for _ in range(5):
                p.maps.kill_engage(1)
                time.sleep(0.02)
                old = p.maps.kill_release(1)
                results.append((old.first_drop_ns - old.engaged_at_ns) / 1000)
                time.sleep(0.02)
        finally:
            sender.kill()
            sender.wait(5)
            p.detach()
        assert all(0 <= us < 20_000 for us in results), results
        assert sorted(results)[len(results) // 2] < 1000, results
