"""`hftpf-agent demo`: the probe on a self-contained lab, for hosts with no exchange traffic.

Two namespaces joined by a veth pair: hftpf-demo-exch (the "exchanges", 198.18.0.1) publishes two
equity venues' ITCH 5.0 over MoldUDP64 (overlapping symbols on one shared random-walk mid, so
cross-venue books, crossed markets and arbitrage show up now and then) and a CME-like MDP3 book
channel, towards hftpf-demo-host (the "trading host", 198.18.0.2), where the probe is attached; a
FIX 4.4 gateway on the exchange side acks and fills a trading client's orders. Each feed is bounded
(rate <= 100k pps, for the duration given). The kernel ships the ITCH datagrams to the agent
(`payloads: true`), which builds the books live. The demo prints the probe's per-venue counters
next to what the sender sent and the receiver got, then tears everything down (also on Ctrl-C or an
error).
"""
from __future__ import annotations

import json
import os
import signal
import socket
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
probe:
  payload_snaplen: 1500       # whole ITCH datagrams reach the agent's books
exchanges:
  - name: DEMO-ITCH-A
    host: {EXCH_IP}
    ports: [26477]
    protocol: ITCH/MoldUDP64
    latency_target_us: 50
    payloads: true
    timezone: UTC             # the simulator stamps ns since UTC midnight (Nasdaq: US Eastern)
  - name: DEMO-ITCH-B
    host: {EXCH_IP}
    ports: [26478]
    protocol: ITCH/MoldUDP64
    latency_target_us: 50
    payloads: true
    timezone: UTC             # the simulator stamps ns since UTC midnight (Nasdaq: US Eastern)
  - name: DEMO-MDP3
    host: {EXCH_IP}
    ports: [14310]
    protocol: MDP3/UDP
    latency_target_us: 50
  - name: DEMO-FIX
    host: {EXCH_IP}
    ports: [9878]
    protocol: FIX/TCP
    latency_target_us: 3000   # the simulated gateway acks in ~1 ms; its 5 ms spike breaks this
"""

# Built-in risk rules of the demo: alerts only (the kill switch stays by hand in the demo).
DEMO_RULES = """
rules:
  - name: fat-finger
    kind: order_quantity
    threshold: 1000000
    severity: critical
  - name: order-ack-latency
    kind: latency
    metric: order_ack
    percentile: 99
    window: 5s
    min_samples: 10
    severity: warning
"""
UNKNOWN_IP = "198.18.0.66"   # a second address on the exchange side that no allow rule covers
FIX_PORT = 9878

FEEDS = (("DEMO-ITCH-A", 26477), ("DEMO-ITCH-B", 26478), ("DEMO-MDP3", 14310))
GAP_VENUE = "DEMO-ITCH-A"     # where the gap and the duplicate burst are injected


def _generators() -> Dict[str, object]:
    """Two equity venues on one shared mid walk (overlapping symbols), and an MDP3 book channel;
    the venues' offsets jump now and then (the simulator's default rate), so crossed markets and
    arbitrage show up within a short demo."""
    from .sim import feeds as sim

    walk = sim.MidWalk(seed=11)
    return {"DEMO-ITCH-A": sim.ItchGenerator(sim.VENUE_A_SYMBOLS, walk, seed=21, session="DEMOA00001"),
            "DEMO-ITCH-B": sim.ItchGenerator(sim.VENUE_B_SYMBOLS, walk, seed=22, session="DEMOB00001"),
            "DEMO-MDP3": sim.Mdp3Generator(seed=23)}


class _Feeds(threading.Thread):
    def __init__(self, rate: int, duration: float, stop: threading.Event):
        super().__init__(name="demo-feeds", daemon=True)
        from .kernel.netlab import socket_in

        self.rate, self.duration, self.stop = rate, duration, stop
        self.sock = socket_in(NS_EXCH)
        self.gens = _generators()
        self.sent: Dict[str, int] = {name: 0 for name, _ in FEEDS}
        self.injected = []

    def run(self) -> None:
        tick = 0.01  # send in 10 ms batches
        per_tick = max(1, int(self.rate * tick))
        end = time.monotonic() + self.duration if self.duration else None
        nxt = time.monotonic()
        t0 = time.monotonic()
        gap_done = dup_done = False
        last = b""
        try:
            while not self.stop.is_set() and (end is None or time.monotonic() < end):
                elapsed = time.monotonic() - t0
                if not gap_done and elapsed >= (self.duration or 9) / 3:
                    self.gens[GAP_VENUE].skip(5)  # injected feed gap: 5 messages never sent
                    gap_done = True
                    self.injected.append({"event": "gap", "venue": GAP_VENUE, "missing": 5,
                                          "at_s": round(elapsed, 2)})
                for _ in range(per_tick):
                    for name, port in FEEDS:
                        pkt = self.gens[name].next_packet()
                        self.sock.sendto(pkt, (HOST_IP, port))
                        if name == GAP_VENUE:
                            last = pkt
                for name, _ in FEEDS:
                    self.sent[name] += per_tick
                if not dup_done and elapsed >= 2 * (self.duration or 9) / 3:
                    for _ in range(3):            # injected duplicate burst
                        self.sock.sendto(last, (HOST_IP, dict(FEEDS)[GAP_VENUE]))
                    self.sent[GAP_VENUE] += 3
                    dup_done = True
                    self.injected.append({"event": "duplicates", "venue": GAP_VENUE, "packets": 3,
                                          "at_s": round(elapsed, 2)})
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


def _start_live(config, key, stop):
    """The agent's live side in-process: ring buffer -> decoders -> order analytics -> risk rules,
    served on the control socket so `hftpf-agent status/top` work against the demo."""
    from .kernel.loader import pin_dir
    from .live import LiveAgent
    from .risk.rules import loads as load_rules

    live = LiveAgent(config, key, pin_dir(IF_HOST, NS_HOST), risk_rules=load_rules(DEMO_RULES, "<demo rules>", config),
                     alert_stream=open(os.devnull, "w"))
    t = threading.Thread(target=live.runtime.run_for, name="demo-agent", daemon=True,
                         kwargs={"seconds": 0, "interval": 0.5, "on_interval": live.publish, "stop": stop.is_set})
    t.start()
    return live, t


def _start_orders(duration: float, log):
    """A FIX 4.4 gateway on the exchange side and a trading client on the host side: orders, cancels,
    replaces, a latency spike half way and one fat-finger order."""
    from .sim import fix

    try:
        spike_at = max(1.0, (duration or 10) / 2)
        gw = fix.FixGateway((EXCH_IP, FIX_PORT), netns=NS_EXCH, comp_id="GATEWAY", ack_delay_us=200,
                            fill_delay_us=1000, spikes=[fix.Spike(at_s=spike_at, seconds=1.0, extra_us=5000)]).start()
        n = int(max(10, min(2000, 20 * (duration or 10))))
        cl = fix.FixClient((EXCH_IP, FIX_PORT), netns=NS_HOST, sender_comp_id="CLIENT", target_comp_id="GATEWAY",
                           orders=n, rate=20, cancel_ratio=0.1, replace_ratio=0.1, fat_finger_at=n // 2).start()
        return gw, cl
    except Exception as e:  # noqa: BLE001 - the feeds still run; the report says what is missing
        log(f"demo: FIX order flow not started: {e}")
        return None, None


def _unknown_source():
    """An address no allow rule covers opens a connection to the protected order port."""
    import subprocess

    from .kernel.netlab import socket_in

    subprocess.run(["ip", "-n", NS_EXCH, "addr", "add", f"{UNKNOWN_IP}/24", "dev", IF_EXCH], capture_output=True)
    s = socket_in(NS_EXCH, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.bind((UNKNOWN_IP, 0))
        s.connect((HOST_IP, FIX_PORT))
    except OSError:
        pass  # refused or timed out: the probe saw the SYN either way
    finally:
        s.close()


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
            live, live_thread = _start_live(config, key, stop)
            gateway, client = _start_orders(duration, log)
            rx = _Receivers(stop)
            feeds = _Feeds(rate, duration, stop)
            rx.start()
            feeds.start()
            try:
                if as_json:
                    feeds.join()
                elif sys.stdout.isatty():
                    # the TUI (`hftpf-agent top`) in-process until the feeds end; q ends the demo early
                    from .sinks.snapshot import probe_document
                    from .sinks.tui import run_top

                    def provider():
                        d = probe_document(key)
                        d["agent"] = live.agent_snapshot()
                        return {"interfaces": {key: d}}

                    state = run_top(provider, interval, alerts=lambda: live.agent_snapshot().get("alerts") or [],
                                    deadline=(time.monotonic() + duration) if duration else None)
                    if state.quit:
                        stop.set()
                    feeds.join()
                else:
                    while feeds.is_alive():
                        feeds.join(interval)
                        st = interface_status(key)
                        print(time.strftime("%H:%M:%S ") + "  ".join(
                            f"{n}: sent {feeds.sent[n]} probe {v['rx_packets']}" if n in feeds.sent else
                            f"{n}: probe rx {v['rx_packets']} tx {v['tx_packets']}" for n, v in st["venues"].items()),
                            flush=True)
            except KeyboardInterrupt:
                log("demo: interrupted, tearing down")
            _unknown_source()
            if client is not None:
                client.join(5)
            time.sleep(0.5)  # last acks and events reach the agent
            stop.set()
            feeds.join(2)
            live_thread.join(3)
            time.sleep(0.2)  # let the last packets land
            rx.drain_and_close()
            rx.join(1)
            st = interface_status(key)
            agent = live.agent_snapshot()
            report = {"interface": key, "attach_mode": st["attach_mode"], "sent": feeds.sent,
                      "injected": feeds.injected + [{"event": "unknown_source", "src": UNKNOWN_IP,
                                                     "dport": FIX_PORT},
                                                    {"event": "fat_finger", "sent": bool(client and
                                                     client.stats().get("fat_finger_sent"))}],
                      "orders": {"client": client.stats() if client is not None else None,
                                 "gateway": gateway.stats() if gateway is not None else None,
                                 "probe": agent.get("orders"), "latency": agent.get("latency")},
                      "alerts": agent.get("alerts"), "drops": st["drops"],
                      "books": agent.get("books"), "crossvenue": agent.get("crossvenue"),
                      "messages": agent.get("messages"), "decode_errors": agent.get("decode_errors"),
                      "payloads": agent.get("payloads"),
                      "received": rx.received, "probe": {"venues": st["venues"], "verdicts": st["verdicts"],
                                                         "unclassified": st["unclassified"],
                                                         "packet_classes": st["packet_classes"],
                                                         "streams": st["streams"], "health": st["probe"]}}
            for x in (client, gateway):
                if x is not None:
                    x.stop()
            live.close()
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
        con = Console()
        for name, st in report["probe"]["streams"].items():
            con.print(f"feed {name}: {st['packets']:,} packets, gaps {st['gaps']} (missing {st['missing']}), "
                      f"duplicates {st['duplicates']}, out of order {st['out_of_order']}")
        for venue, o in (report["orders"]["probe"] or {}).items():
            lat = (report["orders"]["latency"] or {}).get(venue, {}).get("order_ack_us", {})
            con.print(f"orders {venue}: {o.get('orders')} orders, {o.get('acks')} acks, {o.get('fills')} fills, "
                      f"{o.get('rejects')} rejects; order->ack p50 {lat.get('p50')} us, p99 {lat.get('p99')} us")
        for venue, b in (report["books"] or {}).items():
            tops = "  ".join(f"{s} {_px(t.get('bid_px'))}/{_px(t.get('ask_px'))}" for s, t in (b.get("top") or {}).items())
            orders = b.get("orders")
            held = f"{orders:,} open orders" if orders is not None else "market by price"
            con.print(f"book {venue}: {b.get('messages'):,} messages, {held}; {tops}")
        cv = report["crossvenue"] or {}
        if cv.get("totals"):
            t = cv["totals"]
            con.print(f"cross-venue: {t['crossed']} crossed and {t['locked']} locked episodes, "
                      f"{t['arbitrage']} arbitrage opportunities")
        con.print(f"unknown sources on protected ports (would drop in enforce): "
                  f"{report['drops']['unknown_source']['would_drop_packets']}")
        for a in report["alerts"] or []:
            con.print(f"[red]alert[/red] {a['severity']} {a['rule']}: {a['message']}")
        log("demo: done; lab and probe removed")
    return 0


def _px(v) -> str:
    """An ITCH price (1e-4 dollars) as dollars; '-' when there is none."""
    return "-" if v is None else f"{v / 10_000:.2f}"
