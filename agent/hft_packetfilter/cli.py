"""hftpf-agent: the command-line front end.

Subcommands: check, attach, detach, status, demo. Data-producing commands take -j/--json.
Exit codes: 0 success, 1 failure the message explains, 2 usage error.
"""
from __future__ import annotations

import argparse
import hashlib
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
  sudo hftpf-agent attach eth0 --mode enforce --rules /etc/hftpf/allow.yaml
  sudo hftpf-agent allow add 203.0.113.0/24 --port 9001 --proto tcp
  sudo hftpf-agent demo -d 20               # self-contained lab in network namespaces
  hftpf-agent replay day.pcap -c prod.yaml --json   # offline: decode, feeds, orders, books (no root)
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


class _Stop(BaseException):
    """Raised by the SIGINT/SIGTERM handler. A BaseException, like KeyboardInterrupt, so the
    `except Exception` guards that keep the agent alive on bad traffic can never swallow a stop."""


def _summary_line(st) -> str:
    parts = [f"{v}={d['rx_packets']}p/{d['rx_bytes']}B" for v, d in st["venues"].items()]
    parts.append(f"other={st['unclassified']['rx_packets']}p")
    parts.append(f"pass={st['verdicts']['pass']} drop={st['verdicts']['drop']}")
    gaps = sum(s["gaps"] for s in st["streams"].values())
    if st["streams"]:
        parts.append(f"gaps={gaps}")
    if st["probe"]["ringbuf_lost"]:
        parts.append(f"RING_LOST={st['probe']['ringbuf_lost']}")
    would = sum(d["would_drop_packets"] for d in st["drops"].values())
    if would:
        parts.append(f"would_drop={would}")
    return time.strftime("%H:%M:%S ") + " ".join(parts)


def _start_metrics(args, config, live):
    """The Prometheus exporter over the agent's snapshots (never blocks the drain loop: a scrape
    reads the last published document). A port already in use is a warning, not a failure."""
    listen = args.metrics_listen
    if listen == "off" or (listen is None and config.monitoring.metrics_export != "prometheus"):
        return None
    from .sinks import prometheus as prom

    holder = prom.snap.SnapshotHolder()
    live.on_snapshot = holder.publish
    live.publish()
    try:
        if listen:
            srv = prom.start_exporter(holder.doc, listen)
        else:
            srv = prom.start_from_config(config.monitoring, holder.doc)
    except OSError as e:
        print(f"hftpf-agent: warning: Prometheus exporter not started ({e}); use --metrics-listen ADDR:PORT "
              f"or 'off'", file=sys.stderr)
        return None
    print(f"hftpf-agent: Prometheus metrics on {srv.url}", file=sys.stderr, flush=True)
    return srv


def _filter_mode(args, config) -> str:
    mode = args.mode or config.analyzer.mode
    if args.dry_run or (config.analyzer.dry_run and not args.mode):
        return "dry-run"
    return mode


def _rules_path(args, config=None) -> str:
    from .allowlist import DEFAULT_RULES_FILE

    path = getattr(args, "rules", None) or (config.analyzer.rules_file if config is not None else None)
    return os.path.abspath(path or DEFAULT_RULES_FILE)


def _audit_dir(args, config) -> Optional[str]:
    d = getattr(args, "audit_dir", None)
    if d == "off":
        return None
    if d:
        return os.path.abspath(d)
    return config.compliance.audit_dir if config.compliance.audit_trail else None


def cmd_attach(args) -> int:
    if (rc := _require_root("attach")) is not None:
        return rc
    from . import allowlist as al
    from .kernel import runstate
    from .kernel.loader import (Probe, ProbeError, adopt, agent_alive, detach_interface, pin_dir, pin_key,
                                pinned_status_alive, read_meta)
    from .live import LiveAgent
    from .kernel.status import interface_status

    config = _load_config(args.config)
    config_text = open(args.config, encoding="utf-8").read() if args.config else ""
    mode = args.xdp_mode or config.analyzer.xdp_mode
    fmode = _filter_mode(args, config)
    rules_file = _rules_path(args, config)
    key = pin_key(args.interface, args.netns)
    try:
        rules = al.load_file(rules_file, max_rules=config.probe.max_rules)
    except al.RuleError as e:
        return _err(f"rules file: {e}")
    probe = None
    adopted = None

    def stop(signum, frame):
        raise _Stop()

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        t0 = time.monotonic()
        if pinned_status_alive(args.interface, args.netns):
            meta = read_meta(pin_dir(args.interface, args.netns))
            if meta is not None and agent_alive(meta.agent_pid):
                raise ProbeError(f"{key} already has an hftpf probe attached by a running agent (pid "
                                 f"{meta.agent_pid}); stop it, or run 'hftpf-agent detach {args.interface}'")
            adopted = adopt(config, args.interface, args.netns, rules, fmode)
            how = (f"re-adopted the pinned probe on {key} (its agent had died; the program kept filtering, "
                   f"no detach)")
        else:
            runstate.remove(key)  # a new program starts with every switch open: drop stale reasons/sockets
            probe = Probe(config, args.interface, mode=mode, netns=args.netns, rules=rules, filter_mode=fmode)
            probe.load()
            probe.attach()
            how = (f"attached to {key} ({mode} XDP, compile+load {probe.compile_s:.2f} s)")
        runstate.write(key, config_text, os.path.abspath(args.config) if args.config else None, rules_file,
                       os.getpid())
        print(f"hftpf-agent: {how} in {time.monotonic() - t0:.2f} s; mode {fmode}, {len(config.exchanges)} venues, "
              f"{len(rules.rules)} allow rules from {rules_file}; pins in {pin_dir(args.interface, args.netns)}; "
              f"Ctrl-C or SIGTERM detaches", file=sys.stderr, flush=True)
        _sd_notify("READY=1")

        def summary():
            live.publish()
            if not args.quiet:
                st = interface_status(key)
                print(json.dumps(st) if args.json else _summary_line(st), flush=True)

        risk = None
        if args.risk_rules:
            from .risk.rules import load as load_rules

            risk = load_rules(args.risk_rules, config)
        audit_dir = _audit_dir(args, config)
        try:
            live = LiveAgent(config, key, pin_dir(args.interface, args.netns), risk_rules=risk,
                             alert_stream=sys.stderr, audit_dir=audit_dir, audit_key=args.audit_key)
        except (OSError, ValueError) as e:   # AuditError included: no trail, no attach when one was asked for
            raise ProbeError(f"audit trail {audit_dir}: {e}") from None
        if audit_dir:
            print(f"hftpf-agent: audit trail {audit_dir} (record {live.audit.writer.next_n - 1} written at attach)",
                  file=sys.stderr, flush=True)
        metrics = _start_metrics(args, config, live)
        try:
            live.runtime.run_for(args.duration, args.interval, on_interval=summary)
        finally:
            if metrics is not None:
                metrics.close()
            live.close()
    except _Stop:
        pass
    except (ProbeError, al.RuleError) as e:
        if probe is not None:
            probe.detach()
        return _err(str(e))
    finally:
        _sd_notify("STOPPING=1")
        for s, h in old.items():
            signal.signal(s, h)
    try:
        if adopted is not None:
            adopted.close()
            detach_interface(args.interface, args.netns)
        elif probe is not None:
            probe.detach()
    except ProbeError as e:
        return _err(f"detach on exit: {e}")
    print(f"hftpf-agent: detached from {key}", file=sys.stderr)
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


def _add_agents(interfaces: dict, timeout: float = 2.0) -> None:
    """Each interface document gets ``agent``: its running agent's snapshot (control socket), an
    ``error`` when the agent does not answer, or None when no agent runs for it."""
    from .control import request, socket_path

    for key, st in interfaces.items():
        if st.get("agent_running"):
            try:
                st["agent"] = request(socket_path(key), "snapshot", timeout=timeout)["agent"]
            except (ConnectionError, ValueError) as e:
                st["agent"] = {"error": f"the agent (pid {st.get('agent_pid')}) did not answer: {e}"}
        else:
            st["agent"] = None


def cmd_status(args) -> int:
    if (rc := _require_root("status")) is not None:
        return rc
    from .kernel.loader import ProbeError, pin_key
    from .kernel.status import status

    try:
        doc = status(pin_key(args.interface, args.netns) if args.interface else None)
    except ProbeError as e:
        return _err(str(e))
    _add_agents(doc["interfaces"])
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    from rich.console import Console

    render_status(doc, Console())
    return 0


# ------------------------------------------------------------------------------------------------ allow

def _live_probes_for(rules_file: str):
    """Pinned probes (attached, with or without a running agent) that enforce this rules file."""
    from .kernel import runstate
    from .kernel.loader import list_pinned, pinned_status_alive, split_pin_key

    out = []
    for key in list_pinned():
        st = runstate.read(key)
        if st and st.get("rules_file") and os.path.abspath(st["rules_file"]) == rules_file:
            ifname, netns = split_pin_key(key)
            if pinned_status_alive(ifname, netns):
                out.append((key, st))
    return out


def _apply_live(rules_file: str, rs, change: dict) -> list:
    """Apply a rule set to every live probe using this file. Validates against each probe's venue
    rules first, so a rule set that cannot be applied changes nothing. A probe whose agent runs gets
    it through the agent (which records ``change`` in its audit trail); otherwise the pinned maps are
    written here and the change goes to the trail the probe's config keeps, if any. Returns one
    {interface, via, audit} per probe."""
    from . import allowlist as al
    from . import config as cfg
    from .auditlive import record_allowlist
    from .control import request, socket_path
    from .kernel.loader import PIN_ROOT, agent_alive
    from .kernel.probemaps import ProbeMaps
    from .killswitch import _record_direct

    probes = _live_probes_for(rules_file)
    plans = []
    for key, st in probes:
        conf = cfg.loads(st["config_text"], st.get("config_source") or "<attach config>")
        al.compile_rules([*al.venue_rules(conf.exchanges), *rs.rules])  # raises RuleError, nothing applied
        plans.append((key, conf, st.get("pid") or 0))
    with open(rules_file, "rb") as f:
        change = dict(change, rules_file=rules_file, rules_sha256=hashlib.sha256(f.read()).hexdigest())
    done = []
    for key, conf, pid in plans:
        if agent_alive(pid):
            try:
                r = request(socket_path(key), "allow_apply", timeout=10.0, rules_file=rules_file, change=change)
                done.append({"interface": key, "via": f"agent pid {pid}",
                             "audit": f"record {r['audit_n']}" if r.get("audit_n") is not None
                             else "the agent keeps no audit trail"})
                continue
            except ConnectionError as e:
                print(f"hftpf-agent: {key}: the running agent (pid {pid}) did not apply the change ({e}); "
                      f"writing the pinned maps directly", file=sys.stderr, flush=True)
        else:
            print(f"hftpf-agent: {key}: no agent is running for this probe; writing its pinned maps directly",
                  file=sys.stderr, flush=True)
        with ProbeMaps.from_pins(os.path.join(PIN_ROOT, key)) as maps:
            maps.apply(conf.exchanges, rs, maps.meta().max_rules)
        done.append({"interface": key, "via": "pinned maps",
                     "audit": _record_direct(key, lambda w, key=key: record_allowlist(w, change, key))})
    return done


def _log_change(action: str, detail: str, done: list) -> None:
    """Every allow-list change is logged (syslog-style line on stderr) with where it was recorded."""
    from .killswitch import _who

    user = _who()
    where = "; ".join(f"{d['interface']} via {d['via']}, audit: {d['audit']}" for d in done)
    print(f"hftpf-agent: allow-list {action} by {user}: {detail}" + (f" [{where}]" if where else ""),
          file=sys.stderr, flush=True)


def _changed_rules(act: str, old, new) -> list:
    """The rules a change added or removed, as dicts (the audit record keeps them)."""
    before = {r.id: r for r in old.rules}
    after = {r.id: r for r in new.rules}
    if act in ("add", "deny"):
        return [after[i].to_dict() for i in after if i not in before]
    if act in ("del", "flush"):
        return [before[i].to_dict() for i in before if i not in after]
    return []


def cmd_allow(args) -> int:
    from . import allowlist as al
    from .killswitch import _who
    from .kernel.bpfsys import BpfError
    from .kernel.loader import ProbeError

    rules_file = _rules_path(args)
    act = args.allow_cmd
    if act in ("list", "export"):
        return _allow_show(args, rules_file)
    if (rc := _require_root(f"allow {act}")) is not None:
        return rc
    try:
        with al.locked(rules_file):
            old = al.load_file(rules_file)
            new = al.load_file(rules_file)
            if act in ("add", "deny"):
                rule = new.add("allow" if act == "add" else "deny", args.cidr, args.proto, args.port, args.venue,
                               args.comment)
                detail = f"{rule.action} {rule.src} {rule.proto} port {rule.ports_text()} (id {rule.id})"
            elif act == "del":
                gone = new.delete(args.what)
                detail = "deleted " + ", ".join(f"{r.id} ({r.action} {r.src} port {r.ports_text()})" for r in gone)
            elif act == "flush":
                if not args.yes:
                    return _err("allow flush removes every rule: add --yes to confirm")
                detail = f"flushed {len(new.rules)} rules"
                new.rules = []
            elif act == "import":
                with open(args.file, encoding="utf-8") as f:
                    new = al.RuleSet.from_yaml(f.read(), args.file)
                detail = f"imported {len(new.rules)} rules from {args.file}"
            elif act == "protect":
                proto, rng = al.parse_protect(args.spec)
                if (proto, rng) in new.protect:
                    raise al.RuleError(f"{args.spec} is already protected")
                new.protect.append((proto, rng))
                detail = f"protected {args.spec}"
            elif act == "unprotect":
                proto, rng = al.parse_protect(args.spec)
                if (proto, rng) not in new.protect:
                    raise al.RuleError(f"{args.spec} is not in the protect list")
                new.protect.remove((proto, rng))
                detail = f"unprotected {args.spec}"
            else:  # pragma: no cover - argparse restricts
                return _err(f"unknown allow command {act}")
            al.compile_rules(new.rules)  # the whole set must compile before anything is written
            al.save_file(rules_file, new)
            change = {"action": act, "detail": detail, "by": _who(), "rules": _changed_rules(act, old, new)}
            try:
                done = _apply_live(rules_file, new, change)
            except (al.RuleError, BpfError, ProbeError, OSError, ValueError) as e:
                al.save_file(rules_file, old)  # the old rules stay in force
                _apply_live(rules_file, old, {"action": "rollback", "by": _who(), "rules": [],
                                              "detail": f"{act} failed ({e}); the previous rules were restored"})
                raise al.RuleError(f"not applied, old rules kept: {e}") from None
    except al.RuleError as e:
        return _err(str(e))
    except FileNotFoundError as e:
        return _err(f"{e.filename}: no such file")
    _log_change(act, detail, done)
    applied = [d["interface"] for d in done]
    where = f"; applied live to {', '.join(applied)}" if applied else "; no running probe uses this file"
    if args.json:
        print(json.dumps({"rules_file": rules_file, "change": detail, "applied_to": applied, "probes": done}))
    else:
        print(f"{detail} [{rules_file}{where}]")
    return 0


def _allow_show(args, rules_file: str) -> int:
    from . import allowlist as al

    try:
        rs = al.load_file(rules_file)
    except al.RuleError as e:
        return _err(str(e))
    if args.allow_cmd == "export":
        text = rs.to_yaml()
        if args.output:
            al.save_file(args.output, rs)
        else:
            sys.stdout.write(text)
        return 0
    probes = {}
    if os.geteuid() == 0:
        from .kernel.loader import PIN_ROOT
        from .kernel.probemaps import ProbeMaps
        from .kernel.status import rules_with_hits

        for key, st in _live_probes_for(rules_file):
            with ProbeMaps.from_pins(os.path.join(PIN_ROOT, key)) as maps:
                probes[key] = {"mode": _mode_name(maps), "rules": rules_with_hits(maps, st)}
    doc = {"rules_file": rules_file,
           "protect": [f"{p}/{lo}" if lo == hi else f"{p}/{lo}-{hi}" for p, (lo, hi) in rs.protect],
           "rules": [r.to_dict() for r in rs.rules], "probes": probes}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"rules file {rules_file}: {len(rs.rules)} rules; protected beyond the config: "
              f"{', '.join(doc['protect']) or 'none'}")
    if not probes:
        t = Table(header_style="bold")
        for c in ("id", "action", "src", "proto", "ports", "venue", "comment"):
            t.add_column(c)
        for r in rs.rules:
            t.add_row(str(r.id), r.action, str(r.src), r.proto, r.ports_text(), r.venue or "", r.comment or "")
        con.print(t)
        con.print("(no running probe uses this file: no hit counters)")
    for key, p in probes.items():
        t = Table(title=f"{key} ({p['mode']})", header_style="bold")
        for c in ("id", "action", "src", "proto", "ports", "venue", "hits", "bytes", "last hit", "comment"):
            t.add_column(c, justify="right" if c in ("hits", "bytes") else "left")
        for r in p["rules"]:
            h = r["hits"]
            last = time.strftime("%H:%M:%S", time.localtime(h["last_hit"])) if h["last_hit"] else "never"
            t.add_row(r["id"], r["action"], r["src"], r["proto"], r["ports"], r.get("venue", ""), f"{h['packets']:,}",
                      f"{h['bytes']:,}", last, r.get("comment", ""))
        con.print(t)
    return 0


def _mode_name(maps) -> str:
    from .kernel.loader import FILTER_MODE_NAME

    return FILTER_MODE_NAME.get(maps.mode(), "monitor")


# ------------------------------------------------------------------------------------------------ top

def cmd_top(args) -> int:
    if (rc := _require_root("top")) is not None:
        return rc
    from .kernel.loader import ProbeError, list_pinned, pin_key
    from .kernel.status import status
    from .sinks.tui import run_top

    key = pin_key(args.interface, args.netns) if args.interface else None
    if key and key not in list_pinned():
        return _err(f"no hftpf probe is attached to {key}; attach one with: sudo hftpf-agent attach {args.interface}")
    if not list_pinned():
        return _err("no hftpf probe is attached (nothing pinned under /sys/fs/bpf/hftpf); "
                    "start one with: sudo hftpf-agent attach IFACE, or run the demo")

    from .sinks.snapshot import probe_document

    latest = {"alerts": []}

    def provider():
        try:
            keys = [key] if key else list_pinned()
            ifs = {k: probe_document(k) for k in keys}
        except (ProbeError, OSError):
            return None
        _add_agents(ifs, timeout=1.0)
        latest["alerts"] = [a for st in ifs.values() for a in ((st.get("agent") or {}).get("alerts") or [])]
        return {"interfaces": ifs}

    if not any(status(k)["interfaces"][k]["agent_running"] for k in ([key] if key else list_pinned())):
        print("hftpf-agent: no agent is running for this probe: top shows the kernel's counters only "
              "(no order-to-ack latency, no alerts)", file=sys.stderr, flush=True)
    run_top(provider, args.interval, max_frames=args.frames or None, screen=sys.stdout.isatty(),
            alerts=lambda: latest["alerts"])
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
    a.add_argument("--mode", choices=("monitor", "enforce"),
                   help="allow-list mode: monitor counts what enforce would drop and passes everything "
                        "(default: the config's hft_analyzer.mode, itself monitor)")
    a.add_argument("--dry-run", action="store_true",
                   help="report enforce's decisions (would_drop counters), drop nothing")
    a.add_argument("--rules", metavar="FILE", help="allow-list rules file (default: the config's "
                   "hft_analyzer.rules_file, else /etc/hftpf/allow.yaml)")
    a.add_argument("--risk-rules", metavar="FILE",
                   help="risk rules YAML (configs/rules.yaml): alerts to the log/webhooks, kill switch actions")
    a.add_argument("--metrics-listen", metavar="ADDR:PORT|off",
                   help="Prometheus exporter address (default: the config's monitoring.metrics_listen, "
                        "127.0.0.1:9464; 'off' disables it)")
    a.add_argument("--audit-dir", metavar="DIR",
                   help="write the tamper-evident audit trail here (default: the config's compliance.audit_dir "
                        "when compliance.audit_trail is true; 'off' disables it)")
    a.add_argument("--audit-key", metavar="FILE",
                   help="HMAC key file for the trail's checkpoints (default: compliance.audit_key_file, else "
                        "$HFTPF_AUDIT_KEY, else /etc/hftpf/audit.key, created 0600 when missing)")
    netns_opt(a)
    a.set_defaults(func=cmd_attach)

    al = add("allow", "firewall-style allow-list for protected venue ports (applied live to running probes)",
             "Protected ports: the ports of every unicast exchange in the config (its hosts are allowed\n"
             "implicitly, shown as venue:NAME) plus those added with 'allow protect'. In enforce mode a\n"
             "packet to a protected port passes only if an allow rule covers its source. ARP, NDP, PTP,\n"
             "LLDP, LACP and traffic to unprotected ports (ssh!) always pass.\n\n"
             "examples:\n  sudo hftpf-agent allow add 203.0.113.0/24 --port 9001 --proto tcp --venue NYSE\n"
             "  sudo hftpf-agent allow deny 203.0.113.66 --comment 'compromised host'\n"
             "  sudo hftpf-agent allow list --json\n  sudo hftpf-agent allow del 65\n"
             "  sudo hftpf-agent allow protect udp/26400-26410\n"
             "  hftpf-agent allow export > rules.yaml; sudo hftpf-agent allow import rules.yaml")
    alsub = al.add_subparsers(dest="allow_cmd", metavar="ACTION", required=True)

    def rules_opt(sp):
        sp.add_argument("--rules", metavar="FILE", help="rules file (default /etc/hftpf/allow.yaml)")
        sp.add_argument("-j", "--json", action="store_true", help="machine-readable output")

    for name, help_ in (("add", "allow a source CIDR to protected ports"), ("deny", "deny a source CIDR explicitly")):
        sp = alsub.add_parser(name, help=help_, description=help_)
        sp.add_argument("cidr", metavar="CIDR", help="source address or prefix, IPv4 or IPv6")
        sp.add_argument("--port", help="destination port P or range P-Q (default: any)")
        sp.add_argument("--proto", default="any", help="tcp, udp or any (default any)")
        sp.add_argument("--venue", help="venue label for reports")
        sp.add_argument("--comment", help="free text kept with the rule")
        rules_opt(sp)
    sp = alsub.add_parser("del", help="delete a rule by id, or every rule with this exact source CIDR")
    sp.add_argument("what", metavar="ID|CIDR")
    rules_opt(sp)
    sp = alsub.add_parser("list", help="the rules, with per-rule hits from running probes")
    rules_opt(sp)
    sp = alsub.add_parser("export", help="print the rules file (YAML; 'allow import' takes it back unchanged)")
    sp.add_argument("-o", "--output", help="write to this file (atomically) instead of stdout")
    rules_opt(sp)
    sp = alsub.add_parser("import", help="replace every rule with those of FILE (validated first)")
    sp.add_argument("file", metavar="FILE")
    rules_opt(sp)
    sp = alsub.add_parser("flush", help="remove every user rule (venue rules from the config stay)")
    sp.add_argument("--yes", action="store_true", help="confirm")
    rules_opt(sp)
    for name, help_ in (("protect", "protect a port or range beyond the config's: tcp/P or udp/P-Q"),
                        ("unprotect", "remove a port from the protect list")):
        sp = alsub.add_parser(name, help=help_, description=help_)
        sp.add_argument("spec", metavar="PROTO/PORTS")
        rules_opt(sp)
    al.set_defaults(func=cmd_allow)

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
    m.add_argument("-d", "--duration", type=float, default=60, help="seconds to run (default 60; 0 = until Ctrl-C)")
    m.add_argument("--rate", type=int, default=1000, help="feed packets per second (default 1000, max 100000)")
    m.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between live updates")
    m.add_argument("--xdp-mode", choices=("native", "generic"), default="native", help="default native (veth supports it)")
    m.add_argument("-j", "--json", action="store_true", help="print only a final JSON report")
    m.set_defaults(func=cmd_demo)

    t = add("top", "live view of attached probes, like top for an exchange link (q quit, s sort, / filter, "
               "v venue detail)", "examples:\n  sudo hftpf-agent top\n  sudo hftpf-agent top eth0 -i 0.5")
    t.add_argument("interface", nargs="?", metavar="IFACE", help="only this interface (default: all attached)")
    t.add_argument("-i", "--interval", type=float, default=1.0, help="refresh interval in seconds (default 1)")
    t.add_argument("--frames", type=int, default=0, help=argparse.SUPPRESS)  # bounded runs for tests
    netns_opt(t)
    t.set_defaults(func=cmd_top)

    from . import killswitch as _killswitch
    from . import replay as _replay

    _replay.add_parser(sub)
    _killswitch.add_parser(sub)
    from . import audit_cli as _audit_cli

    _audit_cli.add_parser(sub)
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
