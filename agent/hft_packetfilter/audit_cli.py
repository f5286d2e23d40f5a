"""``hftpf-agent audit ...`` and ``hftpf-agent report ...``: the compliance trail and reports.

Registered by cli.py (``audit_cli.add_parser(sub)``)::

    audit verify [DIR] [--key FILE] [--json]       exit 1 naming the first bad record and the damage
    audit reconstruct (--clordid ID | --order-id ID) [--dir DIR] [--json]
    audit export --from TIME --to TIME --format csv|jsonl [--dir DIR] [-o FILE]
    report clock [--dir DIR] [--json | --html FILE]
    report best-execution (--pcap FILE [-c CONFIG] | --dir DIR) [--from --to] [--json | --html FILE]
    report reg-nms --pcap FILE [-c CONFIG] [--from --to] [--json | --html FILE]

DIR defaults to ``compliance.audit_dir`` of ``-c CONFIG`` (default /var/lib/hftpf/audit); the key to
``$HFTPF_AUDIT_KEY`` / /etc/hftpf/audit.key (root) / ~/.config/hftpf/audit.key.
:func:`write_audit_from_capture` writes the trail from a capture (``replay FILE --audit-dir DIR``).

Reconstruction reads the raw order-entry bytes kept in the trail (not the decoded copy), links FIX
ClOrdID (11) chains through OrigClOrdID (41) -- or OUCH order tokens through replacements -- and
reports every message of the order with its TAI/UTC stamps, the latency of each response from the
request it answers (the message carrying the same ClOrdID) and from the new order, plus the
summary (status, quantities, ack/fill latency) of :class:`analytics.orders.OrderTracker` fed with
the same messages. Latencies use the TAI stamps (no leap-second steps).
"""
from __future__ import annotations

import csv
import datetime as _dt
import glob
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, Optional

from .sinks import audit as _audit

RTS25_HFT_MAX_DIVERGENCE_US = 100      # RTS 25 Annex, table 2: HFT technique
RTS25_HFT_GRANULARITY_US = 1
FLICKER_NS = 1_000_000_000             # Reg NMS 611(b)(8): quotes changed within 1 s

AUDIT_EPILOG = """examples:
  hftpf-agent audit verify /var/lib/hftpf/audit --key /etc/hftpf/audit.key
  hftpf-agent audit reconstruct --clordid ORD-17 --dir ./trail --json
  hftpf-agent audit export --from 2024-03-01T13:30:00Z --to 2024-03-01T14:00:00Z --format csv -o out.csv
"""
REPORT_EPILOG = """examples:
  hftpf-agent report clock                       # chrony/PTP offset against the RTS 25 limits
  hftpf-agent report best-execution --pcap day.pcap -c prod.yaml --json
  hftpf-agent report reg-nms --pcap day.pcap -c prod.yaml --html regnms.html
"""


def _err(cmd: str, msg: str) -> int:
    print(f"hftpf-agent {cmd}: error: {msg}", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------------------------
# argparse
# --------------------------------------------------------------------------------------------

def add_parser(subparsers):
    """Add ``audit`` and ``report`` to cli.py's subparsers."""
    import argparse

    raw = argparse.RawDescriptionHelpFormatter
    help_ = "compliance audit trail: verify, reconstruct orders, export"
    a = subparsers.add_parser("audit", help=help_, description=help_, epilog=AUDIT_EPILOG, formatter_class=raw)
    asub = a.add_subparsers(dest="audit_cmd", metavar="COMMAND")
    asub.required = True

    def common(p, dir_positional=False):
        if dir_positional:
            p.add_argument("dir", nargs="?", metavar="DIR",
                           help="audit trail directory (default: compliance.audit_dir)")
        else:
            p.add_argument("--dir", metavar="DIR", help="audit trail directory (default: compliance.audit_dir)")
        p.add_argument("-c", "--config", metavar="FILE", help="YAML config (for compliance.audit_dir)")
        p.add_argument("--key", metavar="FILE", help="HMAC key file (mode 0600; default: $HFTPF_AUDIT_KEY, "
                       "/etc/hftpf/audit.key for root, else ~/.config/hftpf/audit.key)")

    p = asub.add_parser("verify", help="check the hash chain, checkpoints and completeness; exit 1 on damage")
    common(p, dir_positional=True)
    p.add_argument("-j", "--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-key", action="store_true", help="check the chain only (checkpoints not authenticated)")
    p.set_defaults(func=cmd_audit_verify)

    p = asub.add_parser("reconstruct", help="the full lifecycle of one order")
    common(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--clordid", metavar="ID", help="any ClOrdID of the order (FIX 11) or OUCH order token")
    g.add_argument("--order-id", metavar="ID", help="the venue's OrderID (FIX 37)")
    p.add_argument("-j", "--json", action="store_true", help="print the lifecycle as JSON")
    p.set_defaults(func=cmd_audit_reconstruct)

    p = asub.add_parser("export", help="records of a time window as CSV or JSON lines")
    common(p)
    p.add_argument("--from", dest="time_from", metavar="TIME", help="first record time (UTC; see replay's TIME)")
    p.add_argument("--to", dest="time_to", metavar="TIME", help="end of the window (exclusive)")
    p.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=cmd_audit_export)

    help_ = "compliance reports: clock sync (RTS 25), best execution, Reg NMS"
    r = subparsers.add_parser("report", help=help_, description=help_, epilog=REPORT_EPILOG, formatter_class=raw)
    rsub = r.add_subparsers(dest="report_cmd", metavar="REPORT")
    rsub.required = True
    for name, fn, h in (("clock", cmd_report_clock, "clock-sync state and offsets against RTS 25"),
                        ("best-execution", cmd_report_best_execution,
                         "per venue fill ratio, slippage, effective spread, latency"),
                        ("reg-nms", cmd_report_reg_nms, "locked/crossed markets and trade-throughs")):
        p = rsub.add_parser(name, help=h, description=h)
        p.add_argument("--dir", metavar="DIR", help="audit trail directory (default: compliance.audit_dir)")
        p.add_argument("-c", "--config", metavar="FILE", help="YAML config (venues, compliance limits)")
        if name != "clock":
            p.add_argument("--pcap", metavar="FILE", help="capture to replay through the pipeline")
        p.add_argument("--from", dest="time_from", metavar="TIME")
        p.add_argument("--to", dest="time_to", metavar="TIME")
        out = p.add_mutually_exclusive_group()
        out.add_argument("-j", "--json", action="store_true", help="print the report as JSON")
        out.add_argument("--html", metavar="FILE", help="write the report as an HTML page")
        p.set_defaults(func=fn)
    return a, r


def _config(args):
    from . import config as _cfg

    path = getattr(args, "config", None)
    return _cfg.load(path) if path else _cfg.default()


def _dir(args, config) -> str:
    return getattr(args, "dir", None) or config.compliance.audit_dir


def _key(args, required: bool = False) -> Optional[bytes]:
    if getattr(args, "no_key", False):
        return None
    path = getattr(args, "key", None) or _audit.default_key_path()
    if not os.path.exists(path) and not required and not getattr(args, "key", None):
        return None
    return _audit.load_key(path, create=False)


# --------------------------------------------------------------------------------------------
# audit verify
# --------------------------------------------------------------------------------------------

def cmd_audit_verify(args) -> int:
    from . import config as _cfg

    try:
        config = _config(args)
        key = _key(args)
    except (_cfg.ConfigError, _audit.KeyFileError) as e:
        return _err("audit verify", str(e))
    d = _dir(args, config)
    res = _audit.verify(d, key)
    if key is None and not getattr(args, "no_key", False):
        res.warnings.append(f"no key file at {_audit.default_key_path()}; pass --key to authenticate checkpoints")
    if args.json:
        print(json.dumps(dict(res.to_dict(), dir=d), indent=2))
    else:
        for w in res.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if res.ok:
            print(f"{d}: OK  {res.records:,} records ({res.first_n}..{res.last_n}) in {res.segments} segments, "
                  f"{res.checkpoints_verified}/{res.checkpoints} checkpoints authenticated, HEAD at {res.head_n}")
        else:
            p = res.first_problem
            print(f"{d}: FAILED at {p}", file=sys.stderr)
    return 0 if res.ok else 1


# --------------------------------------------------------------------------------------------
# reconstruction
# --------------------------------------------------------------------------------------------

_FIX_NAMES = {"D": "NewOrderSingle", "F": "OrderCancelRequest", "G": "OrderCancelReplaceRequest",
              "8": "ExecutionReport", "9": "OrderCancelReject", "3": "Reject", "j": "BusinessMessageReject"}
_EXEC_TYPES = {"0": "new", "1": "partial_fill", "2": "fill", "3": "done", "4": "canceled", "5": "replaced",
               "6": "pending_cancel", "8": "rejected", "A": "pending_new", "C": "expired", "E": "pending_replace",
               "F": "trade", "G": "trade_correct", "H": "trade_cancel", "I": "order_status"}


class _Msg:
    """Adapter so OrderTracker.on_fix can read a message rebuilt from the trail."""

    def __init__(self, fm) -> None:
        self.fm = fm
        self.msg_type = fm.msg_type

    def get(self, tag):
        return self.fm.get(tag)


def _fix_of(rec):
    from .protocols.fix import FixStreamDecoder

    raw = rec.body.get("raw") or b""
    msgs = FixStreamDecoder(checksum="report").feed(bytes(raw), rec.ts_tai_ns)
    return msgs[0] if msgs else None


def _s(fm, tag) -> Optional[str]:
    v = fm.get(tag)
    return None if v is None else bytes(v).decode("latin-1")


def _num(s):
    if s is None:
        return None
    try:
        f = float(s)
    except ValueError:
        return s
    return int(f) if f.is_integer() else f


def reconstruct(records: Iterable, clordid: Optional[str] = None, order_id: Optional[str] = None) -> List[dict]:
    """Lifecycles of the orders matching ``clordid`` (any id of the chain) or ``order_id`` (FIX 37),
    from audit records (see the module docstring). One dict per order, oldest first."""
    from .analytics.orders import OrderTracker

    chains: List[dict] = []
    index: Dict[tuple, dict] = {}          # (venue, session, id) -> chain
    for rec in records:
        if rec.kind != _audit.ORDER_ENTRY:
            continue
        b = rec.body
        venue, session = b.get("venue"), b.get("session")
        if b.get("protocol") == "FIX/TCP":
            fm = _fix_of(rec)
            if fm is None:
                continue
            mt = fm.msg_type
            cl, orig = _s(fm, 11), _s(fm, 41)
            chain = None
            if mt == "D" and cl is not None:
                chain = {"venue": venue, "session": session, "protocol": "FIX/TCP", "root": cl, "ids": [cl],
                         "order_ids": [], "msgs": []}
                chains.append(chain)
                index[(venue, session, cl)] = chain
            elif mt in ("F", "G"):
                chain = index.get((venue, session, orig))
                if chain is not None and cl is not None:
                    index[(venue, session, cl)] = chain
                    chain["ids"].append(cl)
            elif mt in ("8", "9"):
                chain = index.get((venue, session, cl)) or index.get((venue, session, orig))
                oid = _s(fm, 37)
                if chain is not None and oid and oid not in chain["order_ids"] and oid != "NONE":
                    chain["order_ids"].append(oid)
            if chain is not None:
                chain["msgs"].append((rec, fm))
        elif b.get("protocol") == "SoupBinTCP/OUCH":
            f = b.get("fields") or {}
            mt = b.get("msg_type")
            d = b.get("direction")
            tok = f.get("order_token", f.get("user_ref_num"))
            chain = None
            if d == "to_venue" and mt == "O" and tok is not None:
                chain = {"venue": venue, "session": session, "protocol": "SoupBinTCP/OUCH", "root": str(tok),
                         "ids": [str(tok)], "order_ids": [], "msgs": []}
                chains.append(chain)
                index[(venue, session, str(tok))] = chain
            else:
                if mt == "U":
                    old = f.get("existing_order_token", f.get("orig_user_ref_num"))
                    new = f.get("replacement_order_token", f.get("user_ref_num"))
                    chain = index.get((venue, session, str(old))) or index.get((venue, session, str(new)))
                    if chain is not None and new is not None and str(new) not in chain["ids"]:
                        chain["ids"].append(str(new))
                        index[(venue, session, str(new))] = chain
                else:
                    chain = index.get((venue, session, str(tok)))
                oid = f.get("order_reference_number")
                if chain is not None and oid is not None and str(oid) not in chain["order_ids"]:
                    chain["order_ids"].append(str(oid))
            if chain is not None:
                chain["msgs"].append((rec, None))
    out = []
    for ch in chains:
        if clordid is not None and clordid not in ch["ids"]:
            continue
        if order_id is not None and order_id not in ch["order_ids"]:
            continue
        out.append(_lifecycle(ch, OrderTracker))
    return out


def _lifecycle(ch: dict, tracker_cls) -> dict:
    tr = tracker_cls(clock="tai")
    venue, session = ch["venue"], ch["session"]
    t_req: Dict[str, int] = {}
    t_new = None
    events = []
    for rec, fm in ch["msgs"]:
        b = rec.body
        ts = rec.ts_tai_ns
        ev = {"n": rec.n, "ts_tai_ns": rec.ts_tai_ns, "ts_utc_ns": rec.ts_utc_ns, "utc": _iso(rec.ts_utc_ns),
              "direction": b.get("direction"), "msg_type": b.get("msg_type")}
        if fm is not None:
            tr.on_fix(_Msg(fm), ts, venue, session)
            mt = fm.msg_type
            cl = _s(fm, 11)
            ev.update({"name": _FIX_NAMES.get(mt, mt), "clordid": cl, "orig_clordid": _s(fm, 41),
                       "order_id": _s(fm, 37), "exec_id": _s(fm, 17),
                       "exec_type": _EXEC_TYPES.get(_s(fm, 150) or "", _s(fm, 150)),
                       "ord_status": _s(fm, 39), "side": _s(fm, 54), "symbol": _s(fm, 55),
                       "order_qty": _num(_s(fm, 38)), "price": _num(_s(fm, 44)), "last_qty": _num(_s(fm, 32)),
                       "last_px": _num(_s(fm, 31)), "cum_qty": _num(_s(fm, 14)), "leaves_qty": _num(_s(fm, 151)),
                       "msg_seq_num": _num(_s(fm, 34))})
            if mt in ("D", "F", "G"):
                if cl is not None:
                    t_req[cl] = ts
                if mt == "D":
                    t_new = ts
                ev["latency_us"] = None
            else:
                t0 = t_req.get(cl) if cl is not None else None
                ev["latency_us"] = (ts - t0) / 1000 if t0 is not None else None
        else:
            from types import SimpleNamespace

            f = b.get("fields") or {}
            d = "in" if b.get("direction") == "to_venue" else "out"
            tr.on_ouch(SimpleNamespace(msg_type=b.get("msg_type"), direction=d, fields=f), ts, venue, session)
            ev.update({"name": b.get("msg_type"), "fields": _audit._jsonable(f)})
            if d == "in":
                if b.get("msg_type") == "O":
                    t_new = ts
                ev["latency_us"] = None
            else:
                ev["latency_us"] = None
        ev["since_new_us"] = (ts - t_new) / 1000 if t_new is not None else None
        events.append(ev)
    o = tr.order(venue, session, ch["root"])
    summary: Dict[str, Any] = {"status": None}
    if o is not None:
        summary = {"status": o.status, "symbol": o.symbol, "side": "buy" if o.side > 0 else "sell",
                   "order_qty": o.qty, "cum_qty": o.cum, "leaves_qty": o.leaves,
                   "ack_latency_us": (o.t_ack - o.t_new) / 1000 if o.t_ack is not None else None,
                   "first_fill_latency_us": (o.t_fill - o.t_new) / 1000 if o.t_fill is not None else None}
    st = tr.venue_stats(venue).snapshot()
    summary.update({k: st[k] for k in ("fills", "cancels", "replaces", "cancel_acks", "replace_acks",
                                        "cancel_rejects", "replace_rejects")})
    return {"venue": venue, "session": session, "protocol": ch["protocol"], "clordids": ch["ids"],
            "order_ids": ch["order_ids"], "summary": summary, "events": events}


def _iso(ns: Optional[int]) -> str:
    if ns is None:
        return "-"
    d = _dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


def _existing_trail(args, what: str):
    """The trail directory of ``args`` (``--dir`` or the config's), or the exit code of the error
    printed when the config does not load or the directory does not exist."""
    from . import config as _cfg

    try:
        config = _config(args)
    except _cfg.ConfigError as e:
        return _err(what, str(e))
    d = _dir(args, config)
    if not os.path.isdir(d):
        return _err(what, f"{d}: no such audit trail directory")
    return d


def cmd_audit_reconstruct(args) -> int:
    d = _existing_trail(args, "audit reconstruct")
    if isinstance(d, int):
        return d
    orders = reconstruct(_audit.iter_records(d), clordid=args.clordid, order_id=args.order_id)
    if not orders:
        what = f"ClOrdID {args.clordid}" if args.clordid else f"OrderID {args.order_id}"
        return _err("audit reconstruct", f"no order with {what} in {d}")
    if args.json:
        print(json.dumps({"orders": orders}, indent=2, default=str))
        return 0
    for o in orders:
        s = o["summary"]
        print(f"order {' -> '.join(o['clordids'])}  venue {o['venue']}  session {o['session']}  "
              f"order ids {', '.join(o['order_ids']) or '-'}")
        print(f"  status {s.get('status')}  {s.get('side', '')} {s.get('order_qty', '')} {s.get('symbol', '')}  "
              f"filled {s.get('cum_qty')}  leaves {s.get('leaves_qty')}  ack {s.get('ack_latency_us')} us  "
              f"first fill {s.get('first_fill_latency_us')} us")
        for e in o["events"]:
            lat = "" if e.get("latency_us") is None else f"  +{e['latency_us']:,.3f} us"
            arrow = "->" if e["direction"] == "to_venue" else "<-"
            extra = " ".join(f"{k}={e[k]}" for k in ("clordid", "exec_type", "ord_status", "last_qty", "last_px",
                                                        "cum_qty", "leaves_qty") if e.get(k) is not None)
            print(f"  #{e['n']:<8} {e['utc']} {arrow} {e['name']:<26} {extra}{lat}")
    return 0


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------

def _window(args, first_ts: Optional[int]):
    from .replay import parse_time

    f = parse_time(args.time_from, first_ts) if getattr(args, "time_from", None) else None
    t = parse_time(args.time_to, first_ts) if getattr(args, "time_to", None) else None
    return f, t


CSV_COLUMNS = ("n", "kind", "ts_utc", "ts_utc_ns", "ts_tai_ns", "venue", "session", "direction", "msg_type",
               "clordid", "hash", "body")


def export(records: Iterable, out, fmt: str, from_ns: Optional[int] = None, to_ns: Optional[int] = None) -> int:
    """Write the records with ``from_ns <= ts_utc_ns < to_ns`` as CSV or JSON lines; returns how many."""
    w = csv.writer(out) if fmt == "csv" else None
    if w is not None:
        w.writerow(CSV_COLUMNS)
    count = 0
    for r in records:
        if (from_ns is not None and r.ts_utc_ns < from_ns) or (to_ns is not None and r.ts_utc_ns >= to_ns):
            continue
        count += 1
        if w is None:
            out.write(json.dumps(r.to_dict(), separators=(",", ":")) + "\n")
            continue
        b = r.body
        cl = None
        if r.kind == _audit.ORDER_ENTRY:
            for pair in b.get("fields") or ():
                if isinstance(pair, (list, tuple)) and len(pair) == 2 and pair[0] == 11:
                    cl = pair[1]
                    break
        w.writerow([r.n, r.kind, _iso(r.ts_utc_ns), r.ts_utc_ns, r.ts_tai_ns, b.get("venue", ""), b.get("session", ""),
                    b.get("direction", ""), b.get("msg_type", ""), cl or "", r.hash.hex(),
                    json.dumps(_audit._jsonable(b), separators=(",", ":"))])
    return count


def cmd_audit_export(args) -> int:
    from .replay import TimeError

    d = _existing_trail(args, "audit export")
    if isinstance(d, int):
        return d
    first = next((r.ts_utc_ns for r in _audit.iter_records(d)), None)
    try:
        f, t = _window(args, first)
    except TimeError as e:
        return _err("audit export", str(e))
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        n = export(_audit.iter_records(d), out, args.format, f, t)
    finally:
        if args.output:
            out.close()
    print(f"exported {n:,} records", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------
# writing the trail from a capture
# --------------------------------------------------------------------------------------------

def write_audit_from_capture(pcap, config, audit_dir, key_file: Optional[str] = None, *,
                             from_ns: Optional[int] = None, to_ns: Optional[int] = None,
                             mdp3_schema: Optional[str] = None, progress=None, **writer_kw) -> dict:
    """Replay ``pcap`` through the pipeline and write every decoded order-entry message (FIX, OUCH)
    to the audit trail in ``audit_dir`` (capture stamps: UTC, TAI = UTC + leap seconds), with agent
    start/stop records and a probe-loss record per TCP reassembly gap. Returns the replay report with
    ``audit``: {dir, records, first_n, last_n, order_entry}. ``config`` None or without exchanges: the
    venues are guessed as ``replay`` does."""
    from .auditlive import record_pipeline
    from .pipeline import Pipeline, run_capture

    if config is None or not config.exchanges:
        from .replay import GUESS_PACKETS, _guess
        config, _g = _guess(os.fspath(pcap), config, GUESS_PACKETS)
    writer = _audit.AuditWriter(audit_dir, key_file, **writer_kw)
    counts = {"order_entry": 0, "probe_loss": 0}
    h = hashlib.sha256()
    with open(pcap, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    try:
        start = writer.agent_event("start", mode="replay", capture=os.fspath(pcap), capture_sha256=h.hexdigest(),
                                   venues=[ex.name for ex in config.exchanges])
        pipe = Pipeline(config, mdp3_schema=mdp3_schema)
        record_pipeline(pipe, writer, lambda ts: (None, ts, "pcap"), counts)
        doc = run_capture(pcap, config, from_ns, to_ns, progress, pipeline=pipe)
        writer.agent_event("stop", mode="replay", packets=doc["packets"], events=doc["events"],
                           order_entry_records=counts["order_entry"])
    finally:
        last = writer.close()
    doc["audit"] = {"dir": os.fspath(audit_dir), "first_n": start.n, "last_n": last, **counts}
    return doc


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------

_CHRONY = {"Reference ID": "reference", "Stratum": "stratum", "Ref time (UTC)": "ref_time",
           "System time": "system_time", "Last offset": "last_offset", "RMS offset": "rms_offset",
           "Frequency": "frequency", "Root delay": "root_delay", "Root dispersion": "root_dispersion",
           "Leap status": "leap_status"}


def parse_chronyc_tracking(text: str) -> dict:
    """``chronyc tracking`` output -> dict; offsets in ns (system_time_ns: + = system clock fast)."""
    out: Dict[str, Any] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if not sep:
            continue
        name = _CHRONY.get(k.strip())
        if name is None:
            continue
        v = v.strip()
        out[name] = v
        m = re.match(r"([+-]?\d+(?:\.\d+)?)\s+seconds(?:\s+(fast|slow))?", v)
        if m:
            ns = round(float(m.group(1)) * 1e9)
            if m.group(2) == "slow":
                ns = -ns
            out[name + "_ns"] = ns
    return out


def _chrony() -> Optional[dict]:
    exe = shutil.which("chronyc")
    if exe is None:
        return None
    try:
        p = subprocess.run([exe, "-n", "tracking"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"chronyc tracking failed: {e}"}
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip() or f"chronyc exited {p.returncode}"}
    return parse_chronyc_tracking(p.stdout)


def _phcs(samples: int = 9) -> List[dict]:
    out = []
    tai_id = getattr(time, "CLOCK_TAI", None)
    for dev in sorted(glob.glob("/dev/ptp[0-9]*")):
        item: Dict[str, Any] = {"device": dev}
        try:
            fd = os.open(dev, os.O_RDONLY)
        except OSError as e:
            item["error"] = f"cannot open ({e.strerror}); run as root"
            out.append(item)
            continue
        try:
            clk = ((~fd) << 3) | 3                    # FD_TO_CLOCKID (dynamic POSIX clock)
            offs = []
            for _ in range(samples):
                t1 = time.clock_gettime_ns(tai_id) if tai_id is not None else time.time_ns()
                p = time.clock_gettime_ns(clk)
                t2 = time.clock_gettime_ns(tai_id) if tai_id is not None else time.time_ns()
                offs.append((p - (t1 + t2) // 2, t2 - t1))
            offs.sort(key=lambda x: x[1])             # the tightest sandwich reads best
            best = offs[0]
            item.update({"phc_minus_tai_ns": best[0], "read_delay_ns": best[1], "samples": samples})
        except OSError as e:
            item["error"] = f"cannot read the PHC ({e.strerror or e})"
        finally:
            os.close(fd)
        out.append(item)
    return out


def clock_report(config=None, audit_dir: Optional[str] = None, from_ns=None, to_ns=None) -> dict:
    limit_us = config.compliance.clock_max_offset_us if config is not None else RTS25_HFT_MAX_DIVERGENCE_US
    limit_us = min(limit_us, RTS25_HFT_MAX_DIVERGENCE_US) if limit_us else RTS25_HFT_MAX_DIVERGENCE_US
    res_ns = time.clock_getres(time.CLOCK_REALTIME) * 1e9
    doc: Dict[str, Any] = {"limits": {"max_divergence_us": limit_us, "granularity_us": RTS25_HFT_GRANULARITY_US,
                                      "regime": "MiFID II RTS 25, HFT technique"},
                           "granularity": {"timestamp_unit_ns": 1, "clock_resolution_ns": res_ns,
                                           "ok": res_ns <= RTS25_HFT_GRANULARITY_US * 1000},
                           "sources": {}, "trail": None}
    ch = _chrony()
    if ch is not None:
        doc["sources"]["chrony"] = ch
    phc = _phcs()
    if phc:
        doc["sources"]["phc"] = phc
    offsets = []
    if ch and "system_time_ns" in ch:
        offsets.append(("chrony system time", abs(ch["system_time_ns"])))
    for p in phc:
        if "phc_minus_tai_ns" in p:
            # a PHC runs TAI under PTP; if it was set to UTC, the offset is ~37 s: report it, do not hide it
            offsets.append((p["device"] + " vs CLOCK_TAI", abs(p["phc_minus_tai_ns"])))
    if audit_dir and os.path.isdir(audit_dir):
        vals = [r.body.get("offset_ns") for r in _audit.iter_records(audit_dir)
                if r.kind == _audit.CLOCK_SYNC and r.body.get("offset_ns") is not None
                and (from_ns is None or r.ts_utc_ns >= from_ns) and (to_ns is None or r.ts_utc_ns < to_ns)]
        if vals:
            a = sorted(abs(v) for v in vals)
            doc["trail"] = {"records": len(a), "max_abs_offset_ns": a[-1], "mean_abs_offset_ns": sum(a) / len(a),
                            "p99_abs_offset_ns": a[min(len(a) - 1, int(0.99 * len(a)))],
                            "over_limit": sum(1 for v in a if v > limit_us * 1000)}
        else:
            doc["trail"] = {"records": 0}
    if not doc["sources"]:
        doc["verdict"] = {"compliant": False, "reason": "no clock sync source exists on this host: chronyc is not "
                          "installed and there is no PTP hardware clock (/dev/ptp*); timestamps cannot be shown "
                          "traceable to UTC as RTS 25 requires"}
    elif not offsets:
        doc["verdict"] = {"compliant": False, "reason": "sync sources exist but no offset could be read: "
                          + "; ".join(str(v.get("error")) for v in ([ch] if ch else []) + phc if isinstance(v, dict)
                                      and v.get("error"))}
    else:
        worst = max(offsets, key=lambda x: x[1])
        ok = worst[1] <= limit_us * 1000 and doc["granularity"]["ok"]
        doc["verdict"] = {"compliant": ok, "worst_offset_ns": worst[1], "worst_source": worst[0],
                          "reason": f"max divergence {worst[1] / 1000:,.3f} us ({worst[0]}) "
                          f"{'within' if ok else 'EXCEEDS'} the {limit_us} us limit"}
    return doc


class _TradeThroughs:
    """Order-tracker listener: forwards to the pipeline's own listener and checks each fill against
    the best protected quote of the OTHER venues at that moment (Reg NMS Rule 611)."""

    def __init__(self, inner, cv) -> None:
        self.inner = inner
        self.cv = cv
        self.orders: Dict[tuple, tuple] = {}
        self.since: Dict[tuple, tuple] = {}      # (venue, instrument, side) -> (price, displayed since ns)
        self.events: List[dict] = []
        orig = cv.on_quote

        def on_quote(venue, symbol, ts_ns, bid_px, bid_qty, ask_px, ask_qty):
            name = cv.instrument(venue, symbol)
            for side, px in (("bid", bid_px), ("ask", ask_px)):
                k = (venue, name, side)
                cur = self.since.get(k)
                if cur is None or cur[0] != px:
                    self.since[k] = (px, ts_ns)
            return orig(venue, symbol, ts_ns, bid_px, bid_qty, ask_px, ask_qty)

        cv.on_quote = on_quote

    def on_order(self, venue, key, symbol, side, qty, ts_ns) -> None:
        self.inner.on_order(venue, key, symbol, side, qty, ts_ns)
        self.orders[(venue, key)] = (symbol, side)

    def on_fill(self, venue, key, price, qty, ts_ns) -> None:
        self.inner.on_fill(venue, key, price, qty, ts_ns)
        o = self.orders.get((venue, key))
        if o is None or price is None:
            return
        symbol, side = o
        name = self.cv.instrument(venue, symbol)
        st = self.cv.inst.get(name) if name is not None else None
        if st is None:
            return
        best = None
        for v, q in st.quotes.items():
            if v == venue:
                continue
            px = q[2] if side > 0 else q[0]
            if px is None:
                continue
            if best is None or (px < best[0] if side > 0 else px > best[0]):
                best = (px, v)
        if best is None or not (price > best[0] if side > 0 else price < best[0]):
            return
        cur = self.since.get((best[1], name, "ask" if side > 0 else "bid"))
        age = ts_ns - cur[1] if cur is not None and cur[0] == best[0] else None
        self.events.append({"ts_ns": ts_ns, "utc": _iso(ts_ns), "venue": venue, "instrument": name,
                            "side": "buy" if side > 0 else "sell", "price": price, "qty": qty,
                            "protected_px": best[0], "protected_venue": best[1],
                            "through_by": abs(price - best[0]), "protected_quote_age_ns": age,
                            "flickering_quote_possible": age is not None and age < FLICKER_NS})


def _replay(args, config, trade_throughs: bool = False):
    from .pipeline import Pipeline, capture_first_ts, run_capture

    path = args.pcap
    first = capture_first_ts(path)
    f, t = _window(args, first)
    if config is None or not config.exchanges:
        from .replay import GUESS_PACKETS, _guess
        config, _g = _guess(path, config, GUESS_PACKETS)
    pipe = Pipeline(config)
    tt = None
    if trade_throughs and pipe.crossvenue is not None:
        tt = _TradeThroughs(pipe.orders.listener, pipe.crossvenue)
        pipe.orders.listener = tt
    doc = run_capture(path, config, f, t, pipeline=pipe)
    return doc, tt


def best_execution_from_doc(doc: dict) -> dict:
    venues = {}
    ex = (doc.get("execution") or {}).get("venues") or {}
    for v, o in doc.get("orders", {}).items():
        lat = doc.get("latency", {}).get(v, {})
        e = ex.get(v, {})
        venues[v] = {"orders": o.get("orders"), "fills": o.get("fills"), "rejects": o.get("rejects"),
                     "fill_ratio": o.get("fill_ratio"), "fill_ratio_orders": o.get("fill_ratio_orders"),
                     "slippage_bps": e.get("slippage_bps"), "effective_spread_bps": e.get("effective_spread_bps"),
                     "measured_qty": e.get("measured_qty"),
                     "order_ack_us": {k: lat.get("order_ack_us", {}).get(k) for k in ("count", "p50", "p99", "max")},
                     "order_fill_us": {k: lat.get("order_fill_us", {}).get(k) for k in ("count", "p50", "p99", "max")}}
    return venues


def _best_execution_from_trail(d: str, from_ns, to_ns) -> dict:
    from .analytics.orders import OrderTracker
    from types import SimpleNamespace

    tr = OrderTracker(clock="tai")
    for r in _audit.iter_records(d):
        if r.kind != _audit.ORDER_ENTRY or (from_ns is not None and r.ts_utc_ns < from_ns) or \
                (to_ns is not None and r.ts_utc_ns >= to_ns):
            continue
        b = r.body
        if b.get("protocol") == "FIX/TCP":
            fm = _fix_of(r)
            if fm is not None:
                tr.on_fix(_Msg(fm), r.ts_tai_ns, b.get("venue"), b.get("session"))
        elif b.get("protocol") == "SoupBinTCP/OUCH":
            tr.on_ouch(SimpleNamespace(msg_type=b.get("msg_type"), fields=b.get("fields") or {},
                                       direction="in" if b.get("direction") == "to_venue" else "out"),
                       r.ts_tai_ns, b.get("venue"), b.get("session"))
    snap = tr.snapshot()["venues"]
    doc = {"orders": {}, "latency": {}}
    for v, s in snap.items():
        doc["latency"][v] = s.pop("latency")
        doc["orders"][v] = s
    return doc


def _output(args, title: str, doc: dict, lines: List[str]) -> int:
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2, default=str))
    elif getattr(args, "html", None):
        body = "\n".join(f"<p>{html.escape(x)}</p>" for x in lines)
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
                f"<h1>{html.escape(title)}</h1>{body}<h2>data</h2><pre>"
                f"{html.escape(json.dumps(doc, indent=2, default=str))}</pre></body></html>\n")
        with open(args.html, "w") as f:
            f.write(page)
        print(f"wrote {args.html}", file=sys.stderr)
    else:
        print("\n".join(lines))
    return 0


def cmd_report_clock(args) -> int:
    from . import config as _cfg
    from .replay import TimeError

    try:
        config = _config(args)
        f, t = _window(args, None) if (args.time_from or args.time_to) else (None, None)
    except (_cfg.ConfigError, TimeError) as e:
        return _err("report clock", str(e))
    d = args.dir or (config.compliance.audit_dir if os.path.isdir(config.compliance.audit_dir) else None)
    doc = clock_report(config, d, f, t)
    v = doc["verdict"]
    lines = [f"RTS 25 (HFT): max divergence {doc['limits']['max_divergence_us']} us, granularity "
             f"{doc['limits']['granularity_us']} us; clock resolution "
             f"{doc['granularity']['clock_resolution_ns']:.0f} ns"]
    ch = doc["sources"].get("chrony")
    if ch:
        lines.append("chrony: " + (ch.get("error") or f"reference {ch.get('reference')}, stratum {ch.get('stratum')}, "
                                   f"system time {ch.get('system_time')}, RMS offset {ch.get('rms_offset')}, "
                                   f"leap {ch.get('leap_status')}"))
    for p in doc["sources"].get("phc", []):
        lines.append(f"{p['device']}: " + (p.get("error") or f"PHC - CLOCK_TAI = {p['phc_minus_tai_ns']:,} ns "
                                            f"(read in {p['read_delay_ns']} ns)"))
    if doc["trail"]:
        lines.append(f"audit trail clock records: {doc['trail']}")
    lines.append(("COMPLIANT: " if v["compliant"] else "NOT COMPLIANT: ") + v["reason"])
    _output(args, "clock synchronisation (RTS 25)", doc, lines)
    return 0 if v["compliant"] else 1


def cmd_report_best_execution(args) -> int:
    from . import config as _cfg
    from .replay import TimeError
    from .sources.pcap import NotACaptureError

    try:
        config = _config(args) if args.config else None
        if args.pcap:
            doc, _ = _replay(args, config)
            venues = best_execution_from_doc(doc)
            src = {"pcap": args.pcap}
        else:
            d = args.dir or (config or _config(args)).compliance.audit_dir
            if not os.path.isdir(d):
                return _err("report best-execution", f"give --pcap FILE or --dir DIR ({d} does not exist)")
            first = next((r.ts_utc_ns for r in _audit.iter_records(d)), None)
            f, t = _window(args, first)
            venues = best_execution_from_doc(_best_execution_from_trail(d, f, t))
            src = {"audit_dir": d, "note": "slippage and effective spread need market data: use --pcap"}
    except (_cfg.ConfigError, TimeError, NotACaptureError, OSError) as e:
        return _err("report best-execution", str(e))
    doc = {"source": src, "venues": venues}
    lines = [f"best execution from {src}"]

    def f3(x):
        return "-" if x is None else f"{x:,.3f}"
    for v, e in venues.items():
        lines.append(f"{v}: orders {e['orders']} fills {e['fills']} fill ratio {f3(e['fill_ratio'])} slippage "
                     f"{f3(e['slippage_bps'])} bps eff. spread {f3(e['effective_spread_bps'])} bps ack p50/p99 "
                     f"{f3(e['order_ack_us']['p50'])}/{f3(e['order_ack_us']['p99'])} us")
    if not venues:
        lines.append("no order-entry flow found")
    return _output(args, "best execution", doc, lines)


def cmd_report_reg_nms(args) -> int:
    from . import config as _cfg
    from .replay import TimeError
    from .sources.pcap import NotACaptureError

    if not args.pcap:
        return _err("report reg-nms", "--pcap FILE is required: locked/crossed markets need the market data")
    try:
        config = _config(args) if args.config else None
        rep, tt = _replay(args, config, trade_throughs=True)
    except (_cfg.ConfigError, TimeError, NotACaptureError, OSError) as e:
        return _err("report reg-nms", str(e))
    cv = rep.get("crossvenue") or {}
    doc = {"source": {"pcap": args.pcap}, "enabled": cv.get("enabled", True) and "totals" in cv,
           "totals": cv.get("totals"), "locked_crossed": cv.get("episodes", []),
           "trade_throughs": tt.events if tt is not None else [],
           "note": None if "totals" in cv else "cross-venue view off: needs two book venues, or a book venue "
                                              "and an order-entry venue, in the config"}
    lines = [f"Reg NMS from {args.pcap}"]
    if doc["totals"]:
        tot = doc["totals"]
        lines.append(f"locked {tot['locked']} ({tot['locked_ns'] / 1e6:,.3f} ms), crossed {tot['crossed']} "
                     f"({tot['crossed_ns'] / 1e6:,.3f} ms)")
        for e in doc["locked_crossed"][:50]:
            lines.append("  " + json.dumps(e, default=str))
    else:
        lines.append(doc["note"])
    lines.append(f"trade-throughs: {len(doc['trade_throughs'])}")
    for e in doc["trade_throughs"][:50]:
        lines.append(f"  {e['utc']} {e['venue']} {e['side']} {e['qty']} {e['instrument']} @ {e['price']} through "
                     f"{e['protected_venue']} {e['protected_px']} (quote age {e['protected_quote_age_ns']} ns"
                     f"{', flickering-quote exception may apply' if e['flickering_quote_possible'] else ''})")
    return _output(args, "Reg NMS", doc, lines)
