"""`hftpf-agent top`: a Rich view of an exchange link, like top/htop.

``render(snapshot, width, height, ...)`` is a pure function of a snapshot (``snapshot.Snapshot``,
or a bare status document: then rates show as "-"); ``run_top`` only fetches snapshots, reads keys
and displays frames. Nothing here touches BPF.

Screen (80x24 and wider; more columns appear from 110 columns)::

    hftpf top  IFACE native monitor  clock tai  2 venues 2 streams  every 1.0s  sort:pps
    VENUE        PPS   MBPS  RTT50  RTT99 RT99.9  ACK99  KILL  LATENCY 1us..100ms
    DEMO-ITCH  1,000   0.61      -      -      -      -     -  ·····▂█▃·····
    STREAM                      PPS  GAPS  MISS  DUP  OOO  LAT50  LAT99  QUAL
    DEMO-MDP3:198.18.0.2:14310 1,000    0     0    0    0   5.63   22.5   100
    drops  unknown_source 0 (would 0)  deny_rule 0 (would 0)
    probe  ring lost 0/0  evictions 0  rtt-full 0  stream-full 0  trunc 0  bad 0
    alerts (none)
    q quit  s sort  / filter  v venue

Latency heat strip: one cell per slice of a log scale from 1 us to 100 ms (values outside go to
the end cells); a cell's glyph grows with the number of samples in it (log scale, relative to the
fullest cell), its colour says where it lies against the venue's latency target (green below,
yellow up to twice, red beyond). Its data is the venue's RTT histogram when that has samples,
else the venue's feed-latency histograms merged (market-data-only venues have no RTT); the detail
view (``v``) shows both, wider.

Order-to-ack (ACK50/ACK99, and every percentile in the detail view) comes from the running agent
(the ``agent`` section a status document gets from its control socket); the title says
``no agent`` for an interface whose agent is not running (kernel counters only).

Quality score: ``snapshot.kernel_quality_score`` (analytics.feed_quality's documented formula on
the kernel's cumulative counters).
"""
from __future__ import annotations

import dataclasses
import math
import os
import select
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..analytics.percentiles import NUM_BUCKETS, bucket_bounds
from . import snapshot as snapmod
from .snapshot import Snapshot, kernel_quality_score, rate

SORTS = ("venue", "pps", "p99", "gaps", "quality")
HEAT_LO_NS, HEAT_HI_NS = 1_000, 100_000_000          # strip range: 1 us .. 100 ms
_GLYPHS = "▁▂▃▄▅▆▇█"
WIDE = 110


# -- formatting -----------------------------------------------------------------------------------------
def fmt_us(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if v < 10:
        return f"{v:.2f}"
    if v < 100:
        return f"{v:.1f}"
    if v < 100_000:
        return f"{v:.0f}"
    return f"{v / 1e6:.1f}s"


def fmt_n(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if v < 100_000:
        return f"{v:,.0f}"
    if v < 100_000_000:
        return f"{v / 1e3:,.0f}k"
    return f"{v / 1e6:,.0f}M"


def fmt_mbps(bytes_per_s: Optional[float]) -> str:
    if bytes_per_s is None:
        return "-"
    m = bytes_per_s * 8 / 1e6
    return f"{m:.2f}" if m < 100 else f"{m:.0f}"


# -- heat strip -----------------------------------------------------------------------------------------
def heat_cells(buckets: Sequence[int], cells: int) -> List[int]:
    """Kernel bucket counts -> sample counts per strip cell (log scale HEAT_LO_NS..HEAT_HI_NS)."""
    out = [0] * max(1, cells)
    lo_l, span = math.log10(HEAT_LO_NS), math.log10(HEAT_HI_NS) - math.log10(HEAT_LO_NS)
    for i, c in enumerate(buckets[:NUM_BUCKETS]):
        if not c:
            continue
        lo, hi = bucket_bounds(i)
        mid = max(1.0, (lo + hi) / 2)
        x = (math.log10(mid) - lo_l) / span
        out[min(len(out) - 1, max(0, int(x * len(out))))] += c
    return out


def _cell_edge_ns(j: int, cells: int) -> float:
    lo_l, span = math.log10(HEAT_LO_NS), math.log10(HEAT_HI_NS) - math.log10(HEAT_LO_NS)
    return 10 ** (lo_l + span * j / cells)


def heat_strip(buckets: Optional[Sequence[int]], cells: int, target_us: Optional[float] = None) -> Text:
    """The strip as styled text (see the module docstring); '·' marks an empty cell."""
    t = Text(no_wrap=True)
    if not buckets or not any(buckets):
        t.append("·" * cells, style="dim")
        return t
    counts = heat_cells(buckets, cells)
    top = max(counts)
    for j, c in enumerate(counts):
        if not c:
            t.append("·", style="dim")
            continue
        level = min(len(_GLYPHS) - 1, int(len(_GLYPHS) * math.log1p(c) / math.log1p(top) - 1e-9))
        style = "green"
        if target_us:
            lo_us = _cell_edge_ns(j, cells) / 1e3
            style = "green" if lo_us < target_us else ("yellow" if lo_us < 2 * target_us else "red")
        t.append(_GLYPHS[max(0, level)], style=style)
    return t


def heat_axis(cells: int) -> str:
    """Decade labels under a strip of ``cells`` cells."""
    line = [" "] * (cells + 6)
    labels = ("1us", "10us", "100us", "1ms", "10ms", "100ms")
    decades = len(labels) - 1
    for d, lab in enumerate(labels):
        pos = min(round(cells * d / decades), cells + 6 - len(lab))
        if d and pos - 1 >= 0 and line[pos - 1] != " ":
            continue      # too narrow for this label
        line[pos:pos + len(lab)] = lab
    return "".join(line[:cells + 6]).rstrip()


def _merge(hists: Iterable[Optional[Dict[str, Any]]]) -> Optional[List[int]]:
    out: Optional[List[int]] = None
    for h in hists:
        if not h or not h.get("count") and not any(h.get("buckets", ())):
            continue
        b = h["buckets"]
        out = list(b) if out is None else [x + y for x, y in zip(out, b)]
    return out


# -- rows -----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class VenueRow:
    name: str
    iface: str
    pps: Optional[float]
    bps: Optional[float]
    tx_pps: Optional[float]
    rx_packets: int
    rtt: Dict[str, Any]
    target_us: Optional[float]
    kill: Optional[bool]
    heat: Optional[List[int]]
    heat_src: str
    rtt_buckets: Optional[List[int]]
    feed_buckets: Optional[List[int]]
    ack: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StreamRow:
    name: str
    venue: str
    iface: str
    pps: Optional[float]
    st: Dict[str, Any]
    quality: Optional[float]


def _rows(snap: Snapshot) -> Tuple[List[VenueRow], List[StreamRow]]:
    cur = snapmod.interfaces(snap.doc)
    prev = snapmod.interfaces(snap.prev) if snap.prev is not None else {}
    multi = len(cur) > 1
    venues: List[VenueRow] = []
    streams: List[StreamRow] = []
    for key, d in sorted(cur.items()):
        p = prev.get(key)
        hists = d.get("histograms") or {}
        kills = d.get("kill_switch") if isinstance(d.get("kill_switch"), dict) else {}
        agent = d.get("agent") if isinstance(d.get("agent"), dict) else {}
        lat = agent.get("latency") if isinstance(agent.get("latency"), dict) else {}
        for sname, st in sorted((d.get("streams") or {}).items()):
            streams.append(StreamRow(name=(f"{key}/{sname}" if multi else sname), venue=st.get("venue", ""),
                                     iface=key, pps=rate(d, p, snap.interval, "streams", sname, "packets"),
                                     st=st, quality=kernel_quality_score(st)))
        for vname, v in sorted((d.get("venues") or {}).items()):
            rtt_b = _merge([(hists.get("rtt") or {}).get(vname)])
            feed_b = _merge((hists.get("feed_latency") or {}).get(s)
                            for s, st in (d.get("streams") or {}).items() if st.get("venue") == vname)
            k = kills.get(vname) if "engaged" not in kills else kills
            venues.append(VenueRow(
                name=(f"{key}/{vname}" if multi else vname), iface=key,
                pps=rate(d, p, snap.interval, "venues", vname, "rx_packets"),
                bps=rate(d, p, snap.interval, "venues", vname, "rx_bytes"),
                tx_pps=rate(d, p, snap.interval, "venues", vname, "tx_packets"),
                rx_packets=v.get("rx_packets", 0), rtt=v.get("rtt_us") or {},
                target_us=v.get("latency_target_us"), kill=(k or {}).get("engaged") if k else None,
                heat=rtt_b or feed_b, heat_src="rtt" if rtt_b else ("feed" if feed_b else "-"),
                rtt_buckets=rtt_b, feed_buckets=feed_b,
                ack=((lat.get(vname) or {}).get("order_ack_us") or {}) if isinstance(lat.get(vname), dict) else {}))
    return venues, streams


def _sort_venues(rows: List[VenueRow], sort: str, streams: List[StreamRow]) -> List[VenueRow]:
    if sort == "pps":
        return sorted(rows, key=lambda r: -(r.pps or 0))
    if sort == "p99":
        return sorted(rows, key=lambda r: -(r.rtt.get("p99") or 0))
    if sort in ("gaps", "quality"):
        bad: Dict[str, float] = {}
        for s in streams:
            score = s.st.get("gaps", 0) + s.st.get("missing", 0) if sort == "gaps" else 100 - (s.quality or 100)
            bad[s.venue] = bad.get(s.venue, 0) + score
        return sorted(rows, key=lambda r: (-bad.get(r.name.rsplit("/", 1)[-1], 0), r.name))
    return sorted(rows, key=lambda r: r.name)


def _sort_streams(rows: List[StreamRow], sort: str) -> List[StreamRow]:
    if sort == "pps":
        return sorted(rows, key=lambda r: -(r.pps or 0))
    if sort == "p99":
        return sorted(rows, key=lambda r: -((r.st.get("feed_latency_us") or {}).get("p99") or 0))
    if sort == "gaps":
        return sorted(rows, key=lambda r: (-(r.st.get("gaps", 0) + r.st.get("missing", 0)), r.name))
    if sort == "quality":
        return sorted(rows, key=lambda r: (r.quality if r.quality is not None else 101, r.name))
    return sorted(rows, key=lambda r: r.name)


# -- panes ----------------------------------------------------------------------------------------------
def _table(wide: bool) -> Table:
    return Table(box=None, padding=(0, 1), pad_edge=False, show_header=True, header_style="bold",
                 expand=False, collapse_padding=True)


def _title(snap: Snapshot, ifs: Dict[str, Dict[str, Any]], nv: int, ns: int, sort: str, filt: str,
           venue: Optional[str], width: int = 80) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("hftpf top", style="bold")
    for key, d in sorted(ifs.items()):
        t.append(f"  {key} ", style="cyan")
        t.append(f"{d.get('attach_mode', '?')}/{d.get('mode', '?')}")
        if d.get("attached") is False:
            t.append(" DETACHED", style="bold red")
        if d.get("agent_running") is False:
            t.append(" no agent", style="yellow")
        elif isinstance(d.get("agent"), dict) and "error" in d["agent"]:
            t.append(" agent?", style="yellow")
    clocks = sorted({str(d.get("clock")) for d in ifs.values()}) or ["?"]
    t.append(f"  clock {','.join(clocks)}")
    if width >= WIDE:
        t.append(f"  {nv} venues {ns} streams")
    t.append(f"  every {snap.interval:.1f}s" if snap.interval else "  first sample")
    if width >= WIDE:
        t.append(f"  sort:{sort}")
    if filt:
        t.append(f"  filter:{filt}", style="yellow")
    return t


def _venue_table(rows: List[VenueRow], width: int, limit: int, more: int) -> Table:
    wide = width >= WIDE
    t = _table(wide)
    t.add_column("VENUE", no_wrap=True, overflow="ellipsis", min_width=6, max_width=24 if wide else 14)
    t.add_column("PPS", justify="right", no_wrap=True)
    t.add_column("MBPS", justify="right", no_wrap=True)
    if wide:
        t.add_column("RX PKTS", justify="right", no_wrap=True)
        t.add_column("TX PPS", justify="right", no_wrap=True)
    t.add_column("RTT50", justify="right", no_wrap=True)
    t.add_column("RTT99", justify="right", no_wrap=True)
    t.add_column("RT99.9", justify="right", no_wrap=True)
    if wide:
        t.add_column("ACK50", justify="right", no_wrap=True)
    t.add_column("ACK99", justify="right", no_wrap=True)
    if wide:
        t.add_column("TARGET", justify="right", no_wrap=True)
    t.add_column("KILL", justify="center", no_wrap=True)
    # the strip takes what the other columns leave (their widest: 59 columns narrow, 98 wide)
    cells = max(12, width - (99 if wide else 60))
    t.add_column("LATENCY 1us..100ms", no_wrap=True, overflow="crop", width=cells)
    for r in rows[:limit]:
        kill = Text("-", style="dim") if r.kill is None else (Text("ON", style="bold red") if r.kill
                                                              else Text("off", style="green"))
        p99 = r.rtt.get("p99")
        p99_style = "red" if (p99 is not None and r.target_us and p99 > r.target_us) else ""
        cols: List[Any] = [r.name, fmt_n(r.pps), fmt_mbps(r.bps)]
        if wide:
            cols += [fmt_n(r.rx_packets), fmt_n(r.tx_pps)]
        cols += [fmt_us(r.rtt.get("p50")), Text(fmt_us(p99), style=p99_style), fmt_us(r.rtt.get("p99_9"))]
        a99 = r.ack.get("p99")
        if wide:
            cols.append(fmt_us(r.ack.get("p50")))
        cols.append(Text(fmt_us(a99), style="red" if (a99 is not None and r.target_us and a99 > r.target_us) else ""))
        if wide:
            cols.append(fmt_us(r.target_us))
        strip = heat_strip(r.heat, cells - 2, r.target_us)
        strip.append(" " + {"rtt": "R", "feed": "F"}.get(r.heat_src, " "), style="dim")
        cols += [kill, strip]
        t.add_row(*cols)
    if more:
        t.add_row(Text(f"+{more} more", style="dim"))
    return t


def _stream_table(rows: List[StreamRow], width: int, limit: int, more: int) -> Table:
    wide = width >= WIDE
    t = _table(wide)
    t.add_column("STREAM", no_wrap=True, overflow="ellipsis", min_width=10, max_width=34 if wide else 26)
    t.add_column("PPS", justify="right", no_wrap=True)
    if wide:
        t.add_column("MSGS", justify="right", no_wrap=True)
    t.add_column("GAPS", justify="right", no_wrap=True)
    t.add_column("MISS", justify="right", no_wrap=True)
    t.add_column("DUP", justify="right", no_wrap=True)
    t.add_column("OOO", justify="right", no_wrap=True)
    t.add_column("LAT50", justify="right", no_wrap=True)
    t.add_column("LAT99", justify="right", no_wrap=True)
    if wide:
        t.add_column("LT99.9", justify="right", no_wrap=True)
        t.add_column("PROTO", no_wrap=True)
    t.add_column("QUAL", justify="right", no_wrap=True)
    for r in rows[:limit]:
        st = r.st
        lat = st.get("feed_latency_us") or {}
        bad = lambda n: Text(fmt_n(n), style="bold red" if n else "")  # noqa: E731
        q = r.quality
        qs = "-" if q is None else f"{q:.0f}"
        cols: List[Any] = [r.name, fmt_n(r.pps)]
        if wide:
            cols.append(fmt_n(st.get("messages", 0)))
        cols += [bad(st.get("gaps", 0)), bad(st.get("missing", 0)), fmt_n(st.get("duplicates", 0)),
                 fmt_n(st.get("out_of_order", 0)), fmt_us(lat.get("p50")), fmt_us(lat.get("p99"))]
        if wide:
            cols += [fmt_us(lat.get("p99_9")), st.get("protocol", "")]
        cols.append(Text(qs, style="green" if q is not None and q >= 99 else ("yellow" if q and q >= 90 else "red")))
        t.add_row(*cols)
    if more:
        t.add_row(Text(f"+{more} more", style="dim"))
    return t


def _drops_line(ifs: Dict[str, Dict[str, Any]]) -> Text:
    t = Text("drops ", style="bold", no_wrap=True, overflow="ellipsis")
    tot: Dict[str, List[int]] = {}
    for d in ifs.values():
        for reason, dr in (d.get("drops") or {}).items():
            a = tot.setdefault(reason, [0, 0])
            a[0] += dr.get("dropped_packets", 0)
            a[1] += dr.get("would_drop_packets", 0)
    if not tot:
        t.append(" -", style="dim")
    for reason, (dp, wp) in sorted(tot.items()):
        t.append(f" {reason} ")
        t.append(fmt_n(dp), style="bold red" if dp else "")
        t.append(f" (would {fmt_n(wp)})", style="yellow" if wp else "dim")
    return t


def _health_line(ifs: Dict[str, Dict[str, Any]]) -> Text:
    t = Text("probe ", style="bold", no_wrap=True, overflow="ellipsis")
    agg: Dict[str, int] = {}
    for d in ifs.values():
        for k, v in (d.get("probe") or d.get("health") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                agg[k] = agg.get(k, 0) + v
    lost, ev = agg.get("ringbuf_lost", 0), agg.get("ringbuf_events", 0)
    t.append(" ring lost ")
    t.append(f"{fmt_n(lost)}/{fmt_n(lost + ev)}", style="bold red" if lost else "")
    for label, key in (("evict", "map_evictions"), ("rtt-full", "rtt_table_full"),
                       ("stream-full", "stream_table_full"), ("trunc", "truncated"), ("bad", "events_bad")):
        n = agg.get(key, 0)
        t.append(f"  {label} ")
        t.append(fmt_n(n), style="bold red" if n else "")
    offs = [d.get("clock_offset_us") for d in ifs.values() if d.get("clock_offset_us") is not None]
    if offs:
        t.append(f"  clock off {max(offs, key=abs):+.1f}us")
    return t


_SEV = {"critical": "CRIT", "warning": "WARN", "info": "INFO"}


def _alert_text(a: Any) -> Text:
    if isinstance(a, dict):
        sev = str(a.get("severity", "info"))
        when = a.get("time")
        stamp = time.strftime("%H:%M:%S ", time.localtime(when)) if isinstance(when, (int, float)) else ""
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(stamp, style="dim")
        t.append(f"{_SEV.get(sev, sev.upper()[:4]):4} ", style={"critical": "bold red", "warning": "yellow"}.get(sev, "cyan"))
        t.append(str(a.get("message") or a.get("summary") or a))
        return t
    return Text(str(a), no_wrap=True, overflow="ellipsis")


def _footer(sort: str, filt: str, venue: Optional[str], editing: Optional[str] = None) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis", style="reverse")
    if editing is not None:
        t.append(f" filter: {editing}_  (Enter apply, Esc cancel) ")
        return t
    t.append(f" q quit  s sort:{sort}  / filter{':' + filt if filt else ''}  v venue:{venue or 'all'} ")
    return t


# -- render ---------------------------------------------------------------------------------------------
def render(snapshot: Union[Snapshot, Dict[str, Any], None], width: int = 80, height: int = 24, sort: str = "venue",
           filter: str = "", venue: Optional[str] = None, alerts: Sequence[Any] = (),
           editing: Optional[str] = None) -> RenderableType:
    """One frame for a ``width`` x ``height`` screen (never taller). ``filter``: case-insensitive
    substring of venue/stream names; ``venue``: show that venue's detail view; ``alerts``: newest
    last (strings or {"severity", "message", "time"} dicts); ``editing``: the filter being typed."""
    if snapshot is None:
        return Group(Text("hftpf top: waiting for the first snapshot ...", style="dim"),
                     _footer(sort, filter, venue, editing))
    snap = snapshot if isinstance(snapshot, Snapshot) else Snapshot(doc=snapshot, taken=0.0)
    ifs = snapmod.interfaces(snap.doc)
    venues, streams = _rows(snap)
    f = (filter or "").lower()
    if f:
        venues = [r for r in venues if f in r.name.lower()]
        streams = [r for r in streams if f in r.name.lower() or f in r.venue.lower()]
    if venue is not None:
        return _render_venue(snap, ifs, venues, streams, venue, width, height, sort, filter, alerts, editing)
    venues = _sort_venues(venues, sort, streams)
    streams = _sort_streams(streams, sort)

    fixed = 1 + 1 + 1 + 1 + 1 + 1 + 1    # title, 2 table headers, drops, health, alerts title, footer
    avail = max(2, height - fixed)
    n_alerts = min(len(alerts), max(1, avail // 5)) if alerts else 0
    avail -= n_alerts
    v_lim, s_lim = _split(len(venues), len(streams), avail)
    parts: List[RenderableType] = [_title(snap, ifs, len(venues), len(streams), sort, filter, venue, width)]
    parts.append(_venue_table(venues, width, v_lim, len(venues) - v_lim if v_lim < len(venues) else 0))
    parts.append(_stream_table(streams, width, s_lim, len(streams) - s_lim if s_lim < len(streams) else 0))
    parts += [_drops_line(ifs), _health_line(ifs)]
    parts += _alerts_pane(alerts, n_alerts)
    parts.append(_footer(sort, filter, venue, editing))
    return Group(*parts)


def _split(nv: int, ns: int, avail: int) -> Tuple[int, int]:
    """Rows for venues and streams (a '+N more' row counts) within ``avail`` lines."""
    if nv + ns <= avail:
        return nv, ns
    v = min(nv, max(1, avail // 2))
    s = avail - v
    if s > ns:
        v = min(nv, v + s - ns)
        s = ns
    # reserve a line for "+N more" where a table is cut
    if v < nv and v > 1:
        v -= 1
    if s < ns and s > 1:
        s -= 1
    return v, max(0, s)


def _alerts_pane(alerts: Sequence[Any], n: int) -> List[RenderableType]:
    if not alerts:
        return [Text("alerts (none)", style="dim")]
    head = Text(f"alerts ({len(alerts)})", style="bold yellow")
    return [head, *[_alert_text(a) for a in list(alerts)[-n:]]] if n else [head]


def _render_venue(snap: Snapshot, ifs, venues: List[VenueRow], streams: List[StreamRow], venue: str, width: int,
                  height: int, sort: str, filt: str, alerts: Sequence[Any], editing: Optional[str]) -> RenderableType:
    row = next((r for r in venues if r.name == venue), None)
    parts: List[RenderableType] = [_title(snap, ifs, len(venues), len(streams), sort, filt, venue, width)]
    if row is None:
        parts += [Text(f"venue {venue!r}: not in this snapshot", style="red"), _footer(sort, filt, venue, editing)]
        return Group(*parts)
    base = row.name.rsplit("/", 1)[-1]
    mine = _sort_streams([s for s in streams if s.venue == base and s.iface == row.iface], sort)
    kv = Text(no_wrap=True, overflow="ellipsis")
    kv.append(f"{row.name}", style="bold cyan")
    if row.kill is not None:   # first, so a narrow screen never cuts it off
        kv.append("  kill ")
        kv.append("ENGAGED" if row.kill else "off", style="bold red" if row.kill else "green")
    kv.append(f"  rx {fmt_n(row.pps)} pps {fmt_mbps(row.bps)} Mbps  tx {fmt_n(row.tx_pps)} pps"
              f"  pkts {fmt_n(row.rx_packets)}  tgt {fmt_us(row.target_us)}us")
    parts.append(kv)
    parts.append(_percentile_line("RTT", row.rtt, "samples"))
    if row.ack:
        parts.append(_percentile_line("ACK", row.ack, "orders"))
    cells = max(20, width - 14)
    for label, b in (("RTT ", row.rtt_buckets), ("FEED", row.feed_buckets)):
        line = Text(f"{label}    ", no_wrap=True)
        line.append_text(heat_strip(b, cells, row.target_us))
        parts.append(line)
    parts.append(Text(" " * 8 + heat_axis(cells), style="dim", no_wrap=True))
    fixed = len(parts) + 1 + 1 + 1 + 1   # stream header, health, alerts head, footer
    avail = max(1, height - fixed)
    mine_alerts = [a for a in alerts if base in (a.get("message", "") if isinstance(a, dict) else str(a))]
    n_alerts = min(len(mine_alerts), max(1, avail // 4)) if mine_alerts else 0
    s_lim = max(0, avail - n_alerts)
    more = len(mine) - s_lim if s_lim < len(mine) else 0
    parts.append(_stream_table(mine, width, s_lim - (1 if more and s_lim > 1 else 0), more))
    parts.append(_health_line({row.iface: ifs.get(row.iface, {})}))
    parts += _alerts_pane(mine_alerts, n_alerts)
    parts.append(_footer(sort, filt, venue, editing))
    return Group(*parts)


def _percentile_line(label: str, pct: Dict[str, Any], count_label: str) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{label} us ")
    for k in ("p50", "p90", "p99", "p99_9", "max"):
        t.append(f" {k.replace('_', '.')} {fmt_us(pct.get(k))}")
    t.append(f"  {count_label} {fmt_n(pct.get('count') or 0)}")
    return t


def venue_names(snapshot: Union[Snapshot, Dict[str, Any], None], filter: str = "") -> List[str]:
    """Venue names as ``render`` shows them under ``filter`` (the order ``v`` cycles through)."""
    if snapshot is None:
        return []
    snap = snapshot if isinstance(snapshot, Snapshot) else Snapshot(doc=snapshot, taken=0.0)
    f = (filter or "").lower()
    return sorted(r.name for r in _rows(snap)[0] if f in r.name.lower())


# -- interactive loop -----------------------------------------------------------------------------------
@dataclasses.dataclass
class TopState:
    sort: str = "venue"
    filter: str = ""
    venue: Optional[str] = None
    editing: Optional[str] = None     # the filter being typed after '/'
    quit: bool = False
    frames: int = 0

    def key(self, k: str, venues: Sequence[str]) -> None:
        """Apply one key press."""
        if self.editing is not None:
            if k in ("\r", "\n"):
                self.filter, self.editing = self.editing, None
            elif k == "\x1b":
                self.editing = None
            elif k in ("\x7f", "\b"):
                self.editing = self.editing[:-1]
            elif k.isprintable():
                self.editing += k
            return
        if k in ("q", "Q", "\x03"):
            self.quit = True
        elif k == "s":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)] if self.sort in SORTS else SORTS[0]
        elif k == "/":
            self.editing = self.filter
        elif k == "v":
            names = list(venues)
            if not names:
                self.venue = None
            elif self.venue not in names:
                self.venue = names[0]
            else:
                i = names.index(self.venue) + 1
                self.venue = names[i] if i < len(names) else None
        elif k == "\x1b":
            self.venue = None


class TerminalKeys:
    """Reads single key presses from a tty in cbreak mode (restored on close)."""

    def __init__(self, stream=None) -> None:
        import termios
        import tty

        self.stream = stream or sys.stdin
        self.fd = self.stream.fileno()
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def __call__(self, timeout: float) -> Optional[str]:
        r, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not r:
            return None
        b = os.read(self.fd, 1)
        return b.decode(errors="replace") if b else "q"    # EOF: quit

    def close(self) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


def run_top(provider: Callable[[], Any], interval: float = 1.0, *, console: Optional[Console] = None,
            read_key: Optional[Callable[[float], Optional[str]]] = None, max_frames: Optional[int] = None,
            alerts: Union[Sequence[Any], Callable[[], Sequence[Any]], None] = None, sort: str = "venue",
            screen: bool = True, deadline: Optional[float] = None) -> TopState:
    """Show ``provider()`` (a status document or a ``Snapshot``) every ``interval`` seconds until
    'q' (or ``max_frames`` frames). Keys: q quit, s sort, / filter (Enter/Esc), v venue detail
    (cycles; Esc back). ``read_key(timeout)`` returns a key or None; default: the terminal in cbreak
    mode. On a terminal the frame is redrawn in place (alternate screen); otherwise every frame is
    printed, one after the other. ``deadline``: stop at this time.monotonic() as well. Returns the
    final state."""
    console = console or Console()
    state = TopState(sort=sort)
    holder = snapmod.SnapshotHolder()
    own_keys = None
    if read_key is None:
        own_keys = TerminalKeys()
        read_key = own_keys
    live = None
    try:
        if console.is_terminal:
            from rich.live import Live

            live = Live(console=console, screen=screen, auto_refresh=False, transient=not screen)
            live.start()
        cur: Optional[Snapshot] = None
        next_fetch = 0.0
        while (not state.quit and (max_frames is None or state.frames < max_frames)
               and (deadline is None or time.monotonic() < deadline)):
            now = time.monotonic()
            if now >= next_fetch:
                got = provider()
                cur = got if isinstance(got, Snapshot) else (holder.publish(got, now) if got is not None else cur)
                next_fetch = now + interval
            al = alerts() if callable(alerts) else (alerts or ())
            w, h = console.size
            frame = render(cur, w, h, sort=state.sort, filter=state.filter, venue=state.venue, alerts=al,
                           editing=state.editing)
            state.frames += 1
            if live is not None:
                live.update(frame, refresh=True)
            else:
                console.print(frame)
            wait = next_fetch - time.monotonic()
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
            k = read_key(max(0.0, wait))
            if k is not None:
                state.key(k, venue_names(cur, state.filter))
    finally:
        if live is not None:
            live.stop()
        if own_keys is not None:
            own_keys.close()
    return state
