"""`hftpf-agent demo`: the probe on a self-contained lab, for hosts with no exchange traffic.

Two namespaces joined by a veth pair: hftpf-demo-exch (the "exchange", 198.18.0.1) publishes two
market-data feeds, MoldUDP64 and an MDP3-style channel, each with real sequence headers, towards
hftpf-demo-host (the "trading host", 198.18.0.2), where the probe is attached. Each feed is bounded
(rate <= 100k pps, for the duration given). The demo prints the probe's per-venue counters next to
what the sender sent and the receiver got, then tears everything down (also on Ctrl-C or an error).
"""
from __future__ import annotations

import json
import signal
import socket
import struct
import sys
import threading
import time
from typing import Dict

NS_EXCH, NS_HOST = "hftpf-demo-exch", "hftpf-demo-host"
IF_EXCH, IF_HOST = "hfd-exch0", "hfd-host0"
EXCH_IP, HOST_IP = "198.18.0.1", "198.18.0.2"
MAX_RATE = 100_000

DEMO_CONFIG = f"""
hft_analyzer:
  xdp_mode: native
exchanges:
  - name: DEMO-ITCH
    host: {EXCH_IP}
    ports: [26477]
    protocol: ITCH/MoldUDP64
    latency_target_us: 50
  - name: DEMO-MDP3
    host: {EXCH_IP}
    ports: [14310]
    protocol: MDP3/UDP
    latency_target_us: 50
"""

FEEDS = (("DEMO-ITCH", 26477), ("DEMO-MDP3", 14310))


def _moldudp64(session: bytes, seq: int) -> bytes:
    # MoldUDP64 header (session, sequence, count) + one ITCH 5.0 system event 'S' (start of messages)
    msg = b"S" + struct.pack(">HH", 0, 0) + (0).to_bytes(6, "big") + b"O"
    return session + struct.pack(">QH", seq, 1) + struct.pack(">H", len(msg)) + msg


def _mdp3(seq: int) -> bytes:
    # MDP3 binary packet header: MsgSeqNum u32 LE, SendingTime u64 LE (no messages: a heartbeat)
    return struct.pack("<IQ", seq & 0xFFFFFFFF, time.time_ns())


class _Feeds(threading.Thread):
    def __init__(self, rate: int, duration: float, stop: threading.Event):
        super().__init__(name="demo-feeds", daemon=True)
        from .kernel.netlab import socket_in

        self.rate, self.duration, self.stop = rate, duration, stop
        self.sock = socket_in(NS_EXCH)
        self.sent: Dict[str, int] = {name: 0 for name, _ in FEEDS}

    def run(self) -> None:
        session = b"DEMO000001"
        tick = 0.01  # send in 10 ms batches
        per_tick = max(1, int(self.rate * tick))
        end = time.monotonic() + self.duration if self.duration else None
        nxt = time.monotonic()
        seq = 1
        try:
            while not self.stop.is_set() and (end is None or time.monotonic() < end):
                for _ in range(per_tick):
                    self.sock.sendto(_moldudp64(session, seq), (HOST_IP, FEEDS[0][1]))
                    self.sock.sendto(_mdp3(seq), (HOST_IP, FEEDS[1][1]))
                    seq += 1
                self.sent["DEMO-ITCH"] += per_tick
                self.sent["DEMO-MDP3"] += per_tick
                nxt += tick
                delay = nxt - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
        finally:
            self.sock.close()


class _Receivers(threading.Thread):
    """Counts what arrives on the host side, to show next to the probe's kernel counters."""

    def __init__(self, stop: threading.Event):
        super().__init__(name="demo-receivers", daemon=True)
        from .kernel.netlab import socket_in

        self.stop = stop
        self.socks = {}
        for name, port in FEEDS:
            s = socket_in(NS_HOST)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((HOST_IP, port))
            s.settimeout(0.05)
            self.socks[name] = s
        self.received: Dict[str, int] = {name: 0 for name in self.socks}

    def run(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        for name, s in self.socks.items():
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, name)
        while not self.stop.is_set():
            for key, _ in sel.select(0.05):
                while True:
                    try:
                        key.fileobj.recv(2048)
                    except BlockingIOError:
                        break
                    self.received[key.data] += 1

    def drain_and_close(self) -> None:
        for name, s in self.socks.items():
            while True:
                try:
                    s.recv(2048)
                except (BlockingIOError, socket.timeout, OSError):
                    break
                self.received[name] += 1
            s.close()


def _table(st, sent, received):
    from rich.table import Table

    t = Table(title=f"hftpf demo: probe on {IF_HOST} ({st['attach_mode']} XDP)", header_style="bold")
    for col in ("venue", "sent", "received", "probe rx packets", "probe rx bytes"):
        t.add_column(col, justify="left" if col == "venue" else "right")
    for name, v in st["venues"].items():
        t.add_row(name, f"{sent.get(name, 0):,}", f"{received.get(name, 0):,}", f"{v['rx_packets']:,}",
                  f"{v['rx_bytes']:,}")
    u = st["unclassified"]
    t.add_row("(no venue)", "", "", f"{u['rx_packets']:,}", f"{u['rx_bytes']:,}", style="dim")
    t.caption = f"verdicts pass {st['verdicts']['pass']:,} drop {st['verdicts']['drop']:,}"
    return t


def run_demo(duration: float = 10, rate: int = 1000, as_json: bool = False, xdp_mode: str = "native",
             interval: float = 1.0) -> int:
    from . import config as cfg
    from .kernel.loader import Probe, ProbeError, pin_key
    from .kernel.netlab import Lab, Link
    from .kernel.status import interface_status

    rate = max(1, min(rate, MAX_RATE))
    config = cfg.loads(DEMO_CONFIG, filename="<demo config>")
    stop = threading.Event()
    probe = None
    key = pin_key(IF_HOST, NS_HOST)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True))

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    lab = Lab([NS_EXCH, NS_HOST], [Link(NS_EXCH, IF_EXCH, f"{EXCH_IP}/24", NS_HOST, IF_HOST, f"{HOST_IP}/24")])
    report = {}
    try:
        with lab:
            log(f"demo: lab up: {NS_EXCH} ({EXCH_IP}) <-> {NS_HOST} ({HOST_IP}) over veth {IF_EXCH}/{IF_HOST}")
            probe = Probe(config, IF_HOST, mode=xdp_mode, netns=NS_HOST)
            t0 = time.monotonic()
            probe.load()
            probe.attach()
            log(f"demo: probe attached to {key} in {time.monotonic() - t0:.2f} s; "
                f"streaming {rate} pps per feed for {duration or 'unlimited'} s (Ctrl-C stops)")
            rx = _Receivers(stop)
            feeds = _Feeds(rate, duration, stop)
            rx.start()
            feeds.start()
            try:
                if as_json:
                    feeds.join()
                elif sys.stdout.isatty():
                    from rich.live import Live

                    with Live(_table(interface_status(key), feeds.sent, rx.received), refresh_per_second=4) as live:
                        while feeds.is_alive():
                            feeds.join(interval)
                            live.update(_table(interface_status(key), feeds.sent, rx.received))
                else:
                    while feeds.is_alive():
                        feeds.join(interval)
                        st = interface_status(key)
                        print(time.strftime("%H:%M:%S ") + "  ".join(
                            f"{n}: sent {feeds.sent[n]} probe {v['rx_packets']}" for n, v in st["venues"].items()),
                            flush=True)
            except KeyboardInterrupt:
                log("demo: interrupted, tearing down")
            stop.set()
            feeds.join(2)
            time.sleep(0.2)  # let the last packets land
            rx.drain_and_close()
            rx.join(1)
            st = interface_status(key)
            report = {"interface": key, "attach_mode": st["attach_mode"], "sent": feeds.sent,
                      "received": rx.received, "probe": {"venues": st["venues"], "verdicts": st["verdicts"],
                                                         "unclassified": st["unclassified"],
                                                         "packet_classes": st["packet_classes"],
                                                         "streams": st["streams"], "health": st["probe"]}}
            probe.detach()
            probe = None
    except ProbeError as e:
        print(f"hftpf-agent: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        log("demo: interrupted")
    finally:
        stop.set()
        if probe is not None:
            try:
                probe.detach()
            except ProbeError as e:
                log(f"demo: detach: {e}")
        signal.signal(signal.SIGTERM, old_term)
    if not report:
        return 130
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        from rich.console import Console

        Console().print(_table({"attach_mode": report["attach_mode"], "venues": report["probe"]["venues"],
                                "unclassified": report["probe"]["unclassified"],
                                "verdicts": report["probe"]["verdicts"]}, report["sent"], report["received"]))
        log("demo: done; lab and probe removed")
    return 0
