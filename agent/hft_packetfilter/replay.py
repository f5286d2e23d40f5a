"""``hftpf-agent replay FILE``: the offline pipeline over a pcap/pcapng capture, no root needed.

Registered by cli.py (``replay.add_parser(sub)``). Without a config (or with one that has no
exchanges) the venues are guessed from the first ``--guess-packets`` packets with
:func:`hft_packetfilter.classify.guess` and what was guessed is printed on stderr (and reported
under ``guessed`` in the JSON document).

JSON document (``--json``; keys always present, in this order)::

    packets                       frames replayed (inside the --from/--to window)
    events, frames_rejected, unclassified, outside_window, clock, first_ts_ns, last_ts_ns
    venues.<venue>                {protocol, transport, stream_kind, packets, payload_bytes}
    messages.<protocol>.<type>    decoded messages by type
    decode_errors.<protocol>.<reason>
    errors.<stage>.<ExceptionType>
    tcp                           reassembly counters, gaps per venue
    feeds.<stream>                {messages, gaps, missing, duplicates, out_of_order, score, lines, arbitrated}
    orders.<venue>                {orders, acks, fills, cancels, rejects, ...}
    latency.<venue>.<kind>_us     {count, p50, p90, p99, p99_9, max, min, mean, clock}, kind in
                                  order_ack, order_fill, cancel_ack, replace_ack
    books.<venue>, crossvenue, execution
    guessed                       {packets_examined, notes, exchanges} (only when guessing)
    capture                       {file, format, gzip, resolution, records, first_ts_ns, last_ts_ns,
                                   duration_s, truncated, problems, window, fast_lane_records (how
                                   many records the compiled fast lane took; the rest went through
                                   the Python pipeline; the other figures do not depend on it)}
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
from typing import Optional

EPILOG = """TIME is an ISO 8601 date-time (UTC unless it carries an offset), a time of day (HH:MM[:SS[.f]],
on the capture's first day, UTC), seconds since the epoch, or an offset from the first packet:
+SECONDS, +250ms, +1.5s, +2m. The window is [--from, --to).

Without -c, common protocols are recognised on their usual ports from the payloads (FIX,
MoldUDP64/ITCH, SoupBinTCP/OUCH, MDP3, PITCH, XDP) and what was guessed is printed on stderr.

examples:
  hftpf-agent replay capture.pcap                      # guess the venues, print the report
  hftpf-agent replay capture.pcapng -c configs/production.yaml --json | jq .feeds
  hftpf-agent replay day.pcap.gz --from 13:30 --to 13:35
  hftpf-agent replay fix.pcap --from +10s --to +20s -j
  hftpf-agent replay cme.pcap --mdp3-schema templates_FixBinary.xml
"""

GUESS_PACKETS = 200_000


class TimeError(ValueError):
    pass


_REL = re.compile(r"^\+\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|ms|s|m|h)?$")
_TOD = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$")
_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, None: 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_time(text: str, first_ts_ns: Optional[int]) -> int:
    """TIME (see EPILOG) -> ns since the epoch. ``first_ts_ns`` anchors relative times and times of day."""
    t = text.strip()
    m = _REL.match(t)
    if m:
        if first_ts_ns is None:
            raise TimeError(f"{text!r}: a relative time needs a capture with at least one packet")
        num = m.group(1)
        whole, _, frac = num.partition(".")
        unit = _UNITS[m.group(2)]
        ns = int(whole or 0) * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)
        return first_ts_ns + ns
    m = _TOD.match(t)
    if m:
        if first_ts_ns is None:
            raise TimeError(f"{text!r}: a time of day needs a capture with at least one packet")
        h, mi, s, frac = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), m.group(4) or ""
        if h > 23 or mi > 59 or s > 60:
            raise TimeError(f"{text!r}: not a time of day")
        day = first_ts_ns // 86_400_000_000_000 * 86_400_000_000_000
        return day + ((h * 60 + mi) * 60 + s) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)
    if re.fullmatch(r"\d+(\.\d*)?", t):
        whole, _, frac = t.partition(".")
        return int(whole) * 1_000_000_000 + (int(frac.ljust(9, "0")[:9]) if frac else 0)
    iso = t.replace("Z", "+00:00").replace("z", "+00:00")
    frac_ns = 0
    mf = re.search(r"\.(\d+)", iso)
    if mf:                                   # keep nanoseconds that datetime would drop
        frac_ns = int(mf.group(1).ljust(9, "0")[:9])
        iso = iso[:mf.start()] + iso[mf.end():]
    try:
        d = _dt.datetime.fromisoformat(iso)
    except ValueError:
        raise TimeError(f"{text!r}: not a time; expected ISO 8601 (2024-03-01T13:30:00Z), HH:MM[:SS], "
                        "epoch seconds or +OFFSET (+10s, +250ms)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return int(d.replace(microsecond=0).timestamp()) * 1_000_000_000 + frac_ns


def add_parser(subparsers):
    """Add the ``replay`` subcommand to cli.py's subparsers."""
    import argparse

    help_ = "replay a pcap/pcapng capture offline through the decoders and analytics (no root needed)"
    r = subparsers.add_parser("replay", help=help_, description=help_, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("file", metavar="FILE", help="capture file: pcap or pcapng, optionally gzip-compressed")
    r.add_argument("-c", "--config", metavar="FILE", help="YAML config with the exchanges (default: guess them)")
    r.add_argument("-j", "--json", action="store_true", help="print the report as a JSON document")
    r.add_argument("--from", dest="time_from", metavar="TIME", help="replay packets at or after TIME")
    r.add_argument("--to", dest="time_to", metavar="TIME", help="replay packets before TIME")
    r.add_argument("--mdp3-schema", metavar="XML", help="CME MDP3 SBE schema (templates_FixBinary.xml) "
                   "for MDP3 venues (default: $HFTPF_MDP3_SCHEMA)")
    r.add_argument("--guess-packets", type=int, default=GUESS_PACKETS, metavar="N",
                   help=f"packets examined when guessing venues (default {GUESS_PACKETS:,})")
    r.add_argument("--audit-dir", metavar="DIR",
                   help="also write the compliance audit trail of the capture's order flow to DIR")
    r.add_argument("--audit-key", metavar="FILE",
                   help="HMAC key file for the audit trail (mode 0600; created if missing)")
    r.set_defaults(func=cmd_replay)
    return r


def _err(msg: str) -> int:
    print(f"hftpf-agent replay: error: {msg}", file=sys.stderr)
    return 1


def _note(msg: str) -> None:
    print(f"hftpf-agent replay: {msg}", file=sys.stderr)


def _guess(path: str, config, limit: int):
    from itertools import islice

    from .classify import guess
    from .sources.pcap import read_events

    seen = 0

    def counted():
        nonlocal seen
        for ev in islice(read_events(path), max(limit, 1)):
            seen += 1
            yield ev

    cfg, notes = guess(counted(), config, max_events=max(limit, 1))
    exchanges = [{"name": ex.name, "protocol": ex.protocol, "transport": ex.transport,
                  "hosts": [str(h) for h in ex.hosts], "ports": list(ex.ports)} for ex in cfg.exchanges]
    return cfg, {"packets_examined": seen, "notes": notes, "exchanges": exchanges}


def cmd_replay(args) -> int:
    from . import config as _config
    from .pipeline import capture_first_ts, run_capture
    from .sources.pcap import NotACaptureError

    path = args.file
    if not os.path.exists(path):
        return _err(f"{path}: no such file; expected a pcap or pcapng capture")
    if os.path.isdir(path):
        return _err(f"{path}: is a directory; expected a pcap or pcapng capture")
    try:
        first = capture_first_ts(path)
    except NotACaptureError as e:
        return _err(str(e))
    except OSError as e:
        return _err(f"{path}: cannot read ({e.strerror or e})")
    try:
        from_ns = parse_time(args.time_from, first) if args.time_from else None
        to_ns = parse_time(args.time_to, first) if args.time_to else None
    except TimeError as e:
        return _err(str(e))
    if from_ns is not None and to_ns is not None and to_ns <= from_ns:
        return _err("--to must be after --from")
    schema = getattr(args, "mdp3_schema", None)
    if schema:
        from .protocols import mdp3
        from .protocols.sbe import SchemaError
        try:
            mdp3.load_schema(schema)
        except (OSError, SchemaError) as e:
            return _err(f"--mdp3-schema {schema}: cannot load ({e})")
    try:
        config = _config.load(args.config) if args.config else None
    except _config.ConfigError as e:
        return _err(str(e))
    guessed = None
    if config is None or not config.exchanges:
        try:
            config, guessed = _guess(path, config, getattr(args, "guess_packets", GUESS_PACKETS))
        except (NotACaptureError, OSError) as e:
            return _err(str(e))
        for n in guessed["notes"]:
            _note(n)

    progress, bar = _progress_bar(path)
    from .sinks.audit import AuditError

    try:
        if getattr(args, "audit_dir", None):
            from .audit_cli import write_audit_from_capture

            doc = write_audit_from_capture(path, config, args.audit_dir, args.audit_key, from_ns=from_ns,
                                           to_ns=to_ns, mdp3_schema=schema, progress=progress)
        else:
            doc = run_capture(path, config, from_ns, to_ns, progress, mdp3_schema=schema)
    except AuditError as e:
        return _err(str(e))
    except NotACaptureError as e:
        return _err(str(e))
    except OSError as e:
        return _err(f"{path}: cannot read ({e.strerror or e})")
    finally:
        if bar is not None:
            bar.stop()
    if guessed is not None:
        doc["guessed"] = guessed
    cap = doc["capture"]
    for p in cap["problems"]:
        _note(f"warning: {p}")
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        from rich.console import Console

        render(doc, Console())
    return 0


def _progress_bar(path: str):
    """(progress callback, Progress) drawing on stderr when it is a terminal; (None, None) otherwise."""
    if not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("replay"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("replay", total=os.path.getsize(path))
    bar.start()

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return progress, bar


# --------------------------------------------------------------------------------------------
# Human report: a pure render of the document
# --------------------------------------------------------------------------------------------

def _ts(ns: Optional[int]) -> str:
    if ns is None:
        return "-"
    d = _dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%d %H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


def _us(v) -> str:
    return "-" if v is None else f"{v:,.1f}"


def render(doc: dict, console) -> None:
    """Print the report as Rich tables (tests render into Console(record=True))."""
    from rich.table import Table

    def table(title, *cols):
        t = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
        for c in cols:
            t.add_column(c, justify="left" if c in cols[:1] else "right")
        return t

    cap = doc.get("capture", {})
    console.print(f"[bold]{cap.get('file', 'replay')}[/bold]  {cap.get('format', '')}"
                  f"{' (gzip)' if cap.get('gzip') else ''}  {doc['packets']:,} packets  "
                  f"{_ts(cap.get('first_ts_ns'))} .. {_ts(cap.get('last_ts_ns'))}")
    if cap.get("truncated"):
        console.print("[yellow]capture truncated: " + "; ".join(cap.get("problems", [])) + "[/yellow]")
    rej = doc.get("frames_rejected") or {}
    lane = cap.get("fast_lane_records") or 0
    console.print(f"events {doc['events']:,}  unclassified {doc['unclassified']:,}  outside window "
                  f"{doc['outside_window']:,}  not UDP/TCP {sum(rej.values()):,}"
                  + (f" ({', '.join(f'{k} {v}' for k, v in rej.items())})" if rej else "")
                  + (f"  [dim]fast lane {lane:,} records[/dim]" if lane else ""))
    g = doc.get("guessed")
    if g:
        console.print(f"[dim]guessed from {g['packets_examined']:,} packets: " + "; ".join(g["notes"]) + "[/dim]")
    console.print()

    t = table("venues", "venue", "protocol", "kind", "packets", "bytes")
    for name, v in doc["venues"].items():
        t.add_row(name, v["protocol"], v["stream_kind"], f"{v['packets']:,}", f"{v['payload_bytes']:,}")
    console.print(t)

    if doc["messages"]:
        t = table("messages", "protocol", "type", "count")
        for proto, types in doc["messages"].items():
            for mt, n in types.items():
                t.add_row(proto, mt, f"{n:,}")
        console.print(t)
    if doc["decode_errors"] or doc["errors"] or doc["tcp"]["gaps"]:
        t = table("losses and errors", "where", "reason", "count")
        for proto, reasons in doc["decode_errors"].items():
            for r, n in reasons.items():
                t.add_row(proto, r, f"{n:,}")
        for stage, types in doc["errors"].items():
            for r, n in types.items():
                t.add_row(f"pipeline:{stage}", r, f"{n:,}", style="red")
        for v, gg in doc["tcp"]["venues"].items():
            t.add_row(f"tcp:{v}", "reassembly gaps", f"{gg['gaps']:,} ({gg['gap_bytes']:,} bytes)")
        console.print(t)

    if doc["feeds"]:
        t = table("feed quality", "stream", "messages", "gaps", "missing", "dups", "out of order",
                  "lines", "score")
        for s, f in doc["feeds"].items():
            t.add_row(s, f"{f['messages']:,}", f"{f['gaps']:,}", f"{f['missing']:,}", f"{f['duplicates']:,}",
                      f"{f['out_of_order']:,}", str(len(f.get("lines", {}))),
                      "-" if f.get("score") is None else f"{f['score']:.1f}")
        console.print(t)

    if doc["orders"]:
        t = table("orders (latency in us)", "venue", "orders", "acks", "fills", "cancels", "rejects",
                  "ack p50", "ack p99", "ack max", "fill p50")
        for v, o in doc["orders"].items():
            lat = doc["latency"].get(v, {})
            a = lat.get("order_ack_us", {})
            f = lat.get("order_fill_us", {})
            t.add_row(v, f"{o['orders']:,}", f"{o['acks']:,}", f"{o['fills']:,}", f"{o['cancels']:,}",
                      f"{o['rejects']:,}", _us(a.get("p50")), _us(a.get("p99")), _us(a.get("max")),
                      _us(f.get("p50")))
        console.print(t)

    for venue, b in doc["books"].items():
        top = b.get("top") or {s: v for s, v in (b.get("securities") or {}).items()}
        t = table(f"book {venue}: {b.get('messages', 0):,} messages, {len(top):,} symbols "
                  f"(price unit 1e{b.get('price_exponent')})", "symbol", "bid qty", "bid", "ask", "ask qty")
        for sym, q in list(top.items())[:15]:
            t.add_row(sym, _n(q.get("bid_qty")), _n(q.get("bid_px")), _n(q.get("ask_px")), _n(q.get("ask_qty")))
        if len(top) > 15:
            t.add_row(f"... {len(top) - 15:,} more", "", "", "", "")
        console.print(t)

    cv = doc.get("crossvenue") or {}
    if cv.get("totals"):
        tot = cv["totals"]
        console.print(f"cross-venue: {len(cv['instruments']):,} instruments, locked {tot['locked']} "
                      f"({tot['locked_ns'] / 1e6:,.3f} ms), crossed {tot['crossed']} "
                      f"({tot['crossed_ns'] / 1e6:,.3f} ms), arbitrage {tot['arbitrage']}; tick-to-trade p50 "
                      f"{_us(cv['tick_to_trade_us']['all'].get('p50'))} us")
    ex = (doc.get("execution") or {}).get("venues") or {}
    if ex:
        t = table("execution quality", "venue", "orders", "fills", "fill ratio", "slippage bps", "eff. spread bps")
        for v, e in ex.items():
            t.add_row(v, f"{e['orders']:,}", f"{e['fills']:,}", _f(e["fill_ratio"]), _f(e["slippage_bps"]),
                      _f(e["effective_spread_bps"]))
        console.print(t)


def _n(v) -> str:
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"
