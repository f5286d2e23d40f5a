"""hftpf-agent: the command-line front end.

Subcommands: check, attach, detach, status, demo. Data-producing commands take -j/--json.
Exit codes: 0 success, 1 failure the message explains, 2 usage error.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from typing import List, Optional

from . import __version__

EPILOG = """examples:
  sudo hftpf-agent check eth0               # can this host run the probe? which XDP modes on eth0?
  sudo hftpf-agent attach eth0 -c configs/production.yaml
  sudo hftpf-agent attach eth0 --xdp-mode generic -i 5
  sudo hftpf-agent status --json            # counters of every attached probe, as JSON
  sudo hftpf-agent detach eth0              # remove the program and its pins (also after kill -9)
  sudo hftpf-agent demo -d 20               # self-contained lab in network namespaces
"""


def _err(msg: str) -> int:
    print(f"hftpf-agent: error: {msg}", file=sys.stderr)
    return 1


def _load_config(path: Optional[str]):
    from . import config as cfg

    return cfg.load(path) if path else cfg.default()


def _require_root(what: str) -> Optional[int]:
    if os.geteuid() != 0:
        return _err(f"{what} needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo")
    return None


# ------------------------------------------------------------------------------------------------ check

def cmd_check(args) -> int:
    from .kernel.check import FAIL, WARN, run_checks

    config = None
    if args.config:
        config = _load_config(args.config)
    items = run_checks(args.interface, args.netns, config)
    failed = any(i["state"] == FAIL for i in items)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": items}, indent=2))
    else:
        for i in items:
            if args.quiet and i["state"] != FAIL:
                continue
            tag = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]"}[i["state"]]
            print(f"{tag} {i['check']}: {i['detail']}")
            if i.get("fix") and i["state"] in (FAIL, WARN):
                print(f"       -> {i['fix']}")
        if not args.quiet:
            print("\nresult: " + ("problems found (see [FAIL] above)" if failed else "this host can run the probe"))
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ attach

def _sd_notify(msg: str) -> None:
    """Tell systemd (Type=notify) we are ready/stopping; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(msg.encode())
    except OSError:
        pass


class _Stop(Exception):
    pass


def _summary_line(st) -> str:
    parts = [f"{v}={d['rx_packets']}p/{d['rx_bytes']}B" for v, d in st["venues"].items()]
    parts.append(f"other={st['unclassified']['rx_packets']}p")
    parts.append(f"pass={st['verdicts']['pass']} drop={st['verdicts']['drop']}")
    return time.strftime("%H:%M:%S ") + " ".join(parts)


def cmd_attach(args) -> int:
    if (rc := _require_root("attach")) is not None:
        return rc
    from .kernel.loader import Probe, ProbeError, pin_key
    from .kernel.status import interface_status

    config = _load_config(args.config)
    mode = args.xdp_mode or config.analyzer.xdp_mode
    probe = Probe(config, args.interface, mode=mode, netns=args.netns)

    def stop(signum, frame):
        raise _Stop()

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        t0 = time.monotonic()
        probe.load()
        probe.attach()
        took = time.monotonic() - t0
        key = pin_key(args.interface, args.netns)
        print(f"hftpf-agent: attached to {key} ({mode} XDP, {len(config.exchanges)} venues) in {took:.2f} s "
              f"(compile+load {probe.compile_s:.2f} s); pins in {probe.pin_dir}; Ctrl-C or SIGTERM detaches",
              file=sys.stderr, flush=True)
        _sd_notify("READY=1")
        deadline = time.monotonic() + args.duration if args.duration else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())) if deadline else args.interval)
            if not args.quiet:
                st = interface_status(key)
                print(json.dumps(st) if args.json else _summary_line(st), flush=True)
    except _Stop:
        pass
    except ProbeError as e:
        return _err(str(e))
    finally:
        _sd_notify("STOPPING=1")
        for s, h in old.items():
            signal.signal(s, h)
        try:
            probe.detach()
        except ProbeError as e:
            _err(f"detach on exit: {e}")
    print(f"hftpf-agent: detached from {args.interface}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ detach

def cmd_detach(args) -> int:
    if (rc := _require_root("detach")) is not None:
        return rc
    from .kernel.loader import ProbeError, detach_interface

    try:
        rep = detach_interface(args.interface, args.netns)
    except ProbeError as e:
        return _err(str(e))
    if args.json:
        print(json.dumps(rep))
    else:
        what = []
        if rep["stopped_agent"]:
            what.append(f"stopped agent pid {rep['stopped_agent']}")
        what.append("removed the XDP program" if rep["removed_xdp"] else "no XDP program of ours was attached")
        what.append("removed the pins")
        print(f"hftpf-agent: {rep['interface']}: " + ", ".join(what))
    return 0


# ------------------------------------------------------------------------------------------------ status

def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render_status(doc, console) -> None:
    from rich.table import Table

    if not doc["interfaces"]:
        console.print("no hftpf probe is attached (nothing pinned under /sys/fs/bpf/hftpf); "
                      "start one with: sudo hftpf-agent attach IFACE")
        return
    for key, st in doc["interfaces"].items():
        state = "attached" if st["attached"] else "[red]NOT attached (stale pins: run detach)[/red]"
        agent = (f"agent pid {st['agent_pid']} running" if st["agent_running"]
                 else "[yellow]agent not running (probe keeps counting from its pins)[/yellow]")
        console.print(f"[bold]{key}[/bold]  {st['attach_mode']} XDP, {state}, prog id {st['program_id']}, {agent}")
        t = Table(show_edge=False, header_style="bold")
        for col in ("venue", "kind", "transport", "rx packets", "rx bytes"):
            t.add_column(col, justify="right" if col.startswith("rx") else "left")
        for name, v in st["venues"].items():
            t.add_row(name, v["stream_kind"], v["transport"], f"{v['rx_packets']:,}", _fmt_bytes(v["rx_bytes"]))
        u = st["unclassified"]
        t.add_row("(no venue)", "", "", f"{u['rx_packets']:,}", _fmt_bytes(u["rx_bytes"]), style="dim")
        console.print(t)
        v = st["verdicts"]
        c = st["packet_classes"]
        console.print(f"verdicts: pass {v['pass']:,}  drop {v['drop']:,}    packets: " +
                      "  ".join(f"{k} {n:,}" for k, n in c.items()))
        console.print()


def cmd_status(args) -> int:
    if (rc := _require_root("status")) is not None:
        return rc
    from .kernel.loader import ProbeError, pin_key
    from .kernel.status import status

    try:
        doc = status(pin_key(args.interface, args.netns) if args.interface else None)
    except ProbeError as e:
        return _err(str(e))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    from rich.console import Console

    render_status(doc, Console())
    return 0


# ------------------------------------------------------------------------------------------------ demo

def cmd_demo(args) -> int:
    if (rc := _require_root("demo")) is not None:
        return rc
    from .demo import run_demo

    return run_demo(duration=args.duration, rate=args.rate, as_json=args.json, xdp_mode=args.xdp_mode,
                    interval=args.interval)


# ------------------------------------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hftpf-agent",
        description="eBPF/XDP probe for trading networks: classifies exchange traffic by venue in the kernel "
                    "and counts it at line rate.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-V", "--version", action="version", version=f"hftpf-agent {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def add(name, help_, epilog=""):
        return sub.add_parser(name, help=help_, description=help_, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    def netns_opt(sp):
        sp.add_argument("--netns", metavar="NAME",
                        help="the interface lives in this named network namespace (ip netns list)")

    c = add("check", "preflight: kernel, BPF/BTF/XDP/TC support, headers, bpffs, capabilities, BCC compile",
            "examples:\n  sudo hftpf-agent check\n  sudo hftpf-agent check eth0 --json")
    c.add_argument("interface", nargs="?", help="also probe which XDP modes (native/generic) this interface supports")
    c.add_argument("-c", "--config", help="compile the probe with this config's flags")
    c.add_argument("-j", "--json", action="store_true", help="print the results as JSON")
    c.add_argument("-q", "--quiet", action="store_true", help="print only failures (exit code tells)")
    netns_opt(c)
    c.set_defaults(func=cmd_check)

    a = add("attach", "compile and attach the probe to IFACE; runs in the foreground until SIGINT/SIGTERM",
            "The XDP mode is explicit: native needs driver support and is never silently replaced by\n"
            "generic. Pins live under /sys/fs/bpf/hftpf/IFACE/ so counters survive an agent crash.\n\n"
            "examples:\n  sudo hftpf-agent attach eth0 -c /etc/hftpf/production.yaml\n"
            "  sudo hftpf-agent attach veth1 --xdp-mode generic -i 5 --json")
    a.add_argument("interface", metavar="IFACE")
    a.add_argument("-c", "--config", help="YAML config (exchanges to classify); default: no venues")
    a.add_argument("--xdp-mode", choices=("native", "generic"),
                   help="XDP attach mode (default: the config's hft_analyzer.xdp_mode, itself native by default)")
    a.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between summaries (default 1)")
    a.add_argument("-d", "--duration", type=float, default=0, help="detach after this many seconds (0 = run until stopped)")
    a.add_argument("-j", "--json", action="store_true", help="print each summary as a JSON status document")
    a.add_argument("-q", "--quiet", action="store_true", help="no periodic summaries")
    netns_opt(a)
    a.set_defaults(func=cmd_attach)

    d = add("detach", "remove the probe from IFACE: XDP program and pins (works after the agent was killed)",
            "examples:\n  sudo hftpf-agent detach eth0")
    d.add_argument("interface", metavar="IFACE")
    d.add_argument("-j", "--json", action="store_true", help="print what was removed as JSON")
    netns_opt(d)
    d.set_defaults(func=cmd_detach)

    s = add("status", "per-interface and per-venue counters read from the pinned maps (summed over CPUs)",
            "JSON document: interfaces.<iface>.venues.<venue>.{rx_packets,rx_bytes},\n"
            "interfaces.<iface>.verdicts.{pass,drop}, interfaces.<iface>.attach_mode, ...\n\n"
            "examples:\n  sudo hftpf-agent status\n  sudo hftpf-agent status eth0 --json | jq .")
    s.add_argument("interface", nargs="?", metavar="IFACE", help="only this interface (default: all attached)")
    s.add_argument("-j", "--json", action="store_true", help="print the status document as JSON")
    netns_opt(s)
    s.set_defaults(func=cmd_status)

    m = add("demo", "run a self-contained lab: namespaces, veth, a simulated feed, the probe attached, live counters",
            "Creates network namespaces hftpf-demo-exch and hftpf-demo-host joined by a veth pair\n"
            "(addresses in 198.18.0.0/15, never routed), streams a bounded UDP market-data feed and an\n"
            "order flow into the host side, attaches the probe there and prints per-venue counters.\n"
            "Everything is removed at the end, on Ctrl-C and on errors.\n\n"
            "examples:\n  sudo hftpf-agent demo\n  sudo hftpf-agent demo -d 30 --rate 5000\n"
            "  sudo hftpf-agent demo -d 5 --json")
    m.add_argument("-d", "--duration", type=float, default=10, help="seconds to run (default 10; 0 = until Ctrl-C)")
    m.add_argument("--rate", type=int, default=1000, help="feed packets per second (default 1000, max 100000)")
    m.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between live updates")
    m.add_argument("--xdp-mode", choices=("native", "generic"), default="native", help="default native (veth supports it)")
    m.add_argument("-j", "--json", action="store_true", help="print only a final JSON report")
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .config import ConfigError

    try:
        return args.func(args)
    except ConfigError as e:
        return _err(str(e))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
