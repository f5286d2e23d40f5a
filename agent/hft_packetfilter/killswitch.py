"""`hftpf-agent kill-switch engage|release|status`: cut a venue off at the wire, on egress.

The TC egress program drops every packet to the venue while its switch is engaged (one map
update: the next packet is dropped). A switch is engaged by hand here, or by a risk rule through
`engage()`; it is released only by hand. Every action is logged with its reason and kept beside
the pins (/run/hftpf/<iface>.kill.json) so status shows why a venue is cut off.

Scope, stated plainly: this is a network kill switch and a detective control. It is not a SEC
15c3-5 pre-trade risk gateway: it does not inspect or hold individual orders before they leave.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, List, Optional


EPILOG = """examples:
  sudo hftpf-agent kill-switch engage NYSE --reason "runaway algo 42"
  sudo hftpf-agent kill-switch status --json
  sudo hftpf-agent kill-switch release NYSE --reason "algo 42 stopped, checked"
"""


def _reasons_path(key: str) -> str:
    from .kernel.runstate import RUN_DIR

    return os.path.join(RUN_DIR, key + ".kill.json")


def _read_reasons(key: str) -> Dict[str, dict]:
    try:
        with open(_reasons_path(key)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_reasons(key: str, doc: Dict[str, dict]) -> None:
    from .kernel.runstate import RUN_DIR

    os.makedirs(RUN_DIR, mode=0o750, exist_ok=True)
    tmp = _reasons_path(key) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, _reasons_path(key))


def _venue_ids(maps, venue: str) -> Optional[int]:
    meta = maps.meta()
    for vid, vi in maps.venue_infos(meta.nvenues).items():
        if vi.name.decode(errors="replace").lower() == venue.lower():
            return vid
    return None


def _targets(venue: str, iface: Optional[str]):
    """(pin key, ProbeMaps, venue id) for every attached probe that knows the venue."""
    from .kernel.loader import PIN_ROOT, ProbeError, list_pinned
    from .kernel.probemaps import ProbeMaps

    keys = [k for k in list_pinned() if iface is None or k == iface or k.endswith(":" + iface)]
    if not keys:
        raise ProbeError("no hftpf probe is attached" + (f" to {iface}" if iface else "") +
                         "; the kill switch acts through an attached probe")
    out = []
    for key in keys:
        maps = ProbeMaps.from_pins(os.path.join(PIN_ROOT, key))
        vid = _venue_ids(maps, venue)
        if vid is None:
            maps.close()
            continue
        out.append((key, maps, vid))
    if not out:
        raise ProbeError(f"no attached probe has a venue named {venue!r} (see hftpf-agent status)")
    return out


def engage(venue: str, reason: str, by: str, iface: Optional[str] = None) -> List[dict]:
    """Engage the venue's switch on every probe that has it. Returns one record per probe."""
    done = []
    for key, maps, vid in _targets(venue, iface):
        with maps:
            k = maps.kill_engage(vid)
        reasons = _read_reasons(key)
        reasons[venue.upper()] = {"reason": reason, "by": by, "engaged_at": time.time()}
        _write_reasons(key, reasons)
        done.append({"interface": key, "venue": venue, "venue_id": vid, "engaged_at_ns": k.engaged_at_ns,
                     "reason": reason, "by": by})
    return done


def release(venue: str, reason: str, by: str, iface: Optional[str] = None) -> List[dict]:
    done = []
    for key, maps, vid in _targets(venue, iface):
        with maps:
            old = maps.kill_release(vid)
        reasons = _read_reasons(key)
        reasons.pop(venue.upper(), None)
        _write_reasons(key, reasons)
        done.append({"interface": key, "venue": venue, "was_engaged": bool(old.engaged),
                     "dropped_packets": old.dropped_packets, "dropped_bytes": old.dropped_bytes,
                     "engage_to_first_drop_us": ((old.first_drop_ns - old.engaged_at_ns) / 1000
                                                 if old.engaged and old.first_drop_ns else None),
                     "reason": reason, "by": by})
    return done


def act(action: str, venue: str, reason: str, by: str, iface: Optional[str] = None,
        warn=None) -> List[dict]:
    """engage/release from the command line. Each probe's running agent does it (and records it in
    its audit trail); where no agent runs, or it does not answer, the pinned maps are written here
    (an engage must work even when the agent is wedged) and the change is recorded in the trail the
    probe's config keeps, if any. Each returned record says ``via`` and ``audit``."""
    from .control import request, socket_path
    from .kernel.loader import agent_alive

    warn = warn or (lambda msg: print(f"hftpf-agent: {msg}", file=sys.stderr, flush=True))
    fn = {"engage": engage, "release": release}[action]
    out: List[dict] = []
    for key, maps, _vid in _targets(venue, iface):
        pid = maps.meta().agent_pid
        maps.close()
        if agent_alive(pid):
            try:
                recs = request(socket_path(key), "kill_switch", timeout=5.0, action=action, venue=venue,
                               reason=reason, by=by)
                for r in recs:
                    r["via"] = f"agent pid {pid}"
                    r["audit"] = (f"record {r['audit_n']}" if r.get("audit_n") is not None
                                  else "the agent keeps no audit trail")
                out.extend(recs)
                continue
            except (ConnectionError, ValueError) as e:
                warn(f"{key}: the running agent (pid {pid}) did not take the {action} ({e}); writing the "
                     f"pinned maps directly")
        else:
            warn(f"{key}: no agent is running for this probe; writing its pinned maps directly")
        for r in fn(venue, reason, by, key):
            r["audit"] = _record_direct(key, lambda w, r=r: record(w.kill_switch, action, r))
            r["via"] = "pinned maps"
            out.append(r)
    return out


def record(write, action: str, done: dict):
    """One engage/release record (as ``engage``/``release`` return them) into an audit trail:
    ``write`` is ``AuditWriter.kill_switch`` or ``LiveAudit.kill_switch``."""
    detail = {k: v for k, v in done.items() if k not in ("reason", "audit", "audit_n", "via")}
    return write(action, done["reason"], **detail)


def _record_direct(key: str, what) -> str:
    """Record a change made without an agent in the trail of the probe's config; say what happened."""
    from . import config as cfg
    from .kernel import runstate

    st = runstate.read(key) or {}
    try:
        conf = cfg.loads(st.get("config_text") or "", st.get("config_source") or "<attach config>")
    except ValueError as e:
        return f"NOT recorded: the probe's config does not load: {e}"
    if not conf.compliance.audit_trail:
        return "the probe's config keeps no audit trail"
    from .auditlive import record_direct     # the trail's modules only when there is a trail
    from .sinks.audit import AuditError

    try:
        d = record_direct(conf, what)
    except (AuditError, OSError, ValueError) as e:
        return f"NOT recorded: {e}"
    return f"recorded in {d}" if d else "the probe's config keeps no audit trail"


def state(maps, key: str, names: Dict[int, str]) -> Dict[str, dict]:
    """Per venue: engaged, since, reason, drops (for the status document)."""
    reasons = _read_reasons(key)
    out = {}
    for vid, k in maps.kill_state(len(names)).items():
        name = names.get(vid, f"venue{vid}")
        why = reasons.get(name.upper(), {})
        out[name] = {"engaged": bool(k.engaged), "reason": why.get("reason"), "by": why.get("by"),
                     "engaged_at": why.get("engaged_at"), "dropped_packets": k.dropped_packets,
                     "dropped_bytes": k.dropped_bytes,
                     "engage_to_first_drop_us": ((k.first_drop_ns - k.engaged_at_ns) / 1000
                                                 if k.engaged and k.first_drop_ns else None)}
    return out


def _who() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())


def add_parser(sub) -> None:
    import argparse

    k = sub.add_parser("kill-switch", help="cut a venue off at the wire (TC egress drops) or restore it",
                       description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2],
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ks = k.add_subparsers(dest="ks_cmd", metavar="ACTION", required=True)
    for name, help_ in (("engage", "drop every egress packet to VENUE from now on"),
                        ("release", "let traffic to VENUE flow again (only ever by hand)")):
        sp = ks.add_parser(name, help=help_, description=help_)
        sp.add_argument("venue", metavar="VENUE")
        sp.add_argument("--reason", required=True, help="why (kept with the switch, logged)")
        sp.add_argument("--iface", help="only on this interface (default: every probe that has VENUE)")
        sp.add_argument("-j", "--json", action="store_true")
    sp = ks.add_parser("status", help="which switches are engaged, why, and what they dropped")
    sp.add_argument("-j", "--json", action="store_true")
    k.set_defaults(func=cmd_kill_switch)


def cmd_kill_switch(args) -> int:
    from .kernel.loader import PIN_ROOT, ProbeError, list_pinned
    from .kernel.probemaps import ProbeMaps

    if os.geteuid() != 0:
        print("hftpf-agent: error: kill-switch needs root (it writes the probe's maps)", file=sys.stderr)
        return 1
    try:
        if args.ks_cmd in ("engage", "release"):
            done = act(args.ks_cmd, args.venue, args.reason, _who(), args.iface)
            for d in done:
                print(f"hftpf-agent: kill switch {args.ks_cmd}d for {d['venue']} on {d['interface']} by {d['by']} "
                      f"via {d['via']}: {args.reason} (audit: {d['audit']})", file=sys.stderr, flush=True)
            if args.json:
                print(json.dumps(done))
            return 0
        doc = {}
        for key in list_pinned():
            with ProbeMaps.from_pins(os.path.join(PIN_ROOT, key)) as maps:
                names = {vid: vi.name.decode(errors="replace")
                         for vid, vi in maps.venue_infos(maps.meta().nvenues).items()}
                doc[key] = state(maps, key, names)
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            for key, venues in doc.items():
                for name, s in venues.items():
                    mark = f"ENGAGED ({s['reason']}, by {s['by']}), dropped {s['dropped_packets']}" if s["engaged"] \
                        else "open"
                    print(f"{key:<30} {name:<20} {mark}")
            if not doc:
                print("no hftpf probe is attached")
        return 0
    except ProbeError as e:
        print(f"hftpf-agent: error: {e}", file=sys.stderr)
        return 1
