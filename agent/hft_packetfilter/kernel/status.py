"""Read a pinned probe's counters into a plain, stable dict (the `status --json` document).

Works from the pins alone, without bcc and without a running agent."""
from __future__ import annotations

import os
import time
from typing import Dict, Optional

from .. import abi
from . import runstate
from .loader import (FILTER_MODE_NAME, MODE_NAME, PIN_ROOT, ProbeError, agent_alive, list_pinned, pinned_prog_id,
                     split_pin_key, xdp_state)
from .probemaps import ProbeMaps


def interface_status(key: str, with_rules: bool = False) -> Dict[str, object]:
    """Status of one pinned probe; key is the pin directory name (IF or NS:IF)."""
    pdir = os.path.join(PIN_ROOT, key)
    ifname, netns = split_pin_key(key)
    if not os.path.exists(os.path.join(pdir, abi.MAP_META)):
        raise ProbeError(f"{pdir} holds no hftpf_meta pin: not an hftpf probe, or a partial one "
                         f"(hftpf-agent detach {ifname} removes it)")
    try:
        maps = ProbeMaps.from_pins(pdir)
    except OSError as e:
        raise ProbeError(f"cannot open the pinned maps in {pdir}: {e}; the probe was built by another "
                         "version: detach and re-attach") from None
    with maps:
        meta = maps.meta()
        if meta.abi_version != abi.ABI_VERSION:
            raise ProbeError(f"the probe pinned for {key} speaks ABI {meta.abi_version}, this agent ABI "
                             f"{abi.ABI_VERSION}: detach and re-attach")
        prog_id = pinned_prog_id(pdir)
        try:
            attached = prog_id is not None and prog_id in xdp_state(ifname, netns)["prog_ids"]
        except ProbeError:
            attached = False
        vstats = maps.counters(abi.MAP_VENUE_STATS, abi.MAX_VENUES + 1)
        txstats = maps.counters(abi.MAP_VENUE_TX, abi.MAX_VENUES + 1)
        clock = abi.Clock(meta.clock).name.lower()
        rtt = maps.histograms(abi.MAP_RTT_HIST, meta.nvenues + 1)
        infos = maps.venue_infos(meta.nvenues)
        names = {vid: vi.name.decode(errors="replace") for vid, vi in infos.items()}
        venues: Dict[str, Dict[str, object]] = {}
        for vid, vi in infos.items():
            pk, by = vstats[vid]
            venues[names[vid]] = {
                "id": vid,
                "transport": abi.Transport(vi.transport).name.lower(),
                "stream_kind": abi.StreamKind(vi.stream_kind).name.lower(),
                "latency_target_us": vi.latency_target_us or None,
                "rx_packets": pk, "rx_bytes": by,
                "tx_packets": txstats[vid][0], "tx_bytes": txstats[vid][1],
                "rtt_us": _latency(rtt[vid], clock),
            }
        streams = stream_status(maps, names, clock)
        from ..killswitch import state as kill_state

        kills = kill_state(maps, key, names)
        ps = maps.counters(abi.MAP_PROBE_STATS, 1)[0]
        ag = maps.m[abi.MAP_AGENT_STATS].lookup(0)
        vs = maps.counters(abi.MAP_VERDICT_STATS, abi.Verdict.MAX)
        pcls = maps.counters(abi.MAP_PKT_STATS, abi.PktClass.MAX)
        ds = maps.counters(abi.MAP_DROP_STATS, abi.Reason.MAX)
        mode = FILTER_MODE_NAME.get(maps.mode(), "monitor")
        drops = {abi.Reason(r).name.lower(): {"dropped_packets": ds[r][0], "dropped_bytes": ds[r][1],
                                              "would_drop_packets": ds[r][2], "would_drop_bytes": ds[r][3]}
                 for r in (abi.Reason.UNKNOWN_SOURCE, abi.Reason.DENY_RULE, abi.Reason.KILL_SWITCH)}
        doc = {
            "ifname": ifname,
            "netns": netns,
            "ifindex": meta.ifindex,
            "attach_mode": MODE_NAME.get(meta.attach_mode, "none"),
            "mode": mode,
            "attached": attached,
            "program_id": prog_id,
            "attached_since": meta.attach_time_ns / 1e9,
            "clock": clock,
            "agent_pid": meta.agent_pid,
            "agent_running": agent_alive(meta.agent_pid),
            "pin_dir": pdir,
            "venues": venues,
            "unclassified": {"rx_packets": vstats[0][0], "rx_bytes": vstats[0][1]},
            "verdicts": {abi.Verdict(v).name.lower(): vs[v][0] for v in range(abi.Verdict.MAX)},
            "verdict_bytes": {abi.Verdict(v).name.lower(): vs[v][1] for v in range(abi.Verdict.MAX)},
            "drops": drops,
            "packet_classes": {abi.PktClass(c).name.lower(): pcls[c][0] for c in range(abi.PktClass.MAX)},
            "streams": streams,
            "kill_switch": kills,
            "probe": {"abi_version": meta.abi_version, "max_rules": meta.max_rules,
                      "truncated": pcls[abi.PktClass.TRUNCATED][0],
                      "ringbuf_events": ps[0], "ringbuf_lost": ps[1], "rtt_samples": ps[2],
                      "rtt_table_full": ps[3], "stream_table_full": ps[4], "rtt_retransmits": ps[5],
                      "seq_contended": ps[6],
                      "map_evictions": ag.rtt_evictions, "events_drained": ag.events_drained,
                      "events_bad": ag.events_bad},
        }
        if with_rules:
            doc["rules"] = rules_with_hits(maps, runstate.read(key))
    return doc


def _latency(h, clock: str) -> Dict[str, object]:
    """Percentiles (us) of a kernel histogram (a tuple: count, sum_ns, buckets)."""
    from ..analytics.percentiles import LatencyRecorder

    rec = LatencyRecorder(clock=clock)
    count, total, buckets = h
    if count:
        rec.add_buckets(buckets, total)
    snap = rec.snapshot()
    return {k: snap[k] for k in ("count", "p50", "p90", "p99", "p99_9", "max", "min", "mean", "clock")}


def _addr_text(raw: bytes) -> str:
    import ipaddress

    a = ipaddress.IPv6Address(bytes(raw))
    return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)


def stream_status(maps: ProbeMaps, names: Dict[int, str], clock: str) -> Dict[str, Dict[str, object]]:
    """Every feed stream the kernel tracks: `<venue>:<group>:<port>[/unit]` -> counters."""
    out: Dict[str, Dict[str, object]] = {}
    for key, st in maps.streams():
        venue = names.get(key.venue, f"venue{key.venue}")
        name = f"{venue}:{_addr_text(key.daddr)}:{key.dport}" + (f"/u{key.unit}" if key.unit else "")
        lat = (st.lat.count, st.lat.sum_ns, list(st.lat.bucket))
        out[name] = {
            "venue": venue, "protocol": abi.SeqProto(st.seq_proto).name.lower(),
            "packets": st.packets, "messages": st.messages, "gaps": st.gaps, "missing": st.missing,
            "duplicates": st.duplicates, "out_of_order": st.out_of_order, "resets": st.resets,
            "heartbeats": st.heartbeats, "expected_seq": st.expected,
            "ended": bool(st.flags & abi.STREAM_ENDED), "peak_packets_per_ms": st.peak_ms_packets,
            "feed_latency_us": _latency(lat, clock) if clock == "tai" else None,
            "feed_latency_negative": st.lat_negative,
        }
    return out


def rules_with_hits(maps: ProbeMaps, state: Optional[dict]) -> list:
    """The allow rules in force for a probe (venue rules from its config, user rules from its rules
    file) with their kernel hit counters."""
    from .. import allowlist as al
    from .. import config as cfg

    if not state:
        return []
    conf = cfg.loads(state["config_text"], state.get("config_source") or "<attach config>")
    rs = al.load_file(state["rules_file"]) if state.get("rules_file") else al.RuleSet()
    rules = [*al.venue_rules(conf.exchanges), *rs.rules]
    hits = maps.rule_hits({r.id for r in rules})
    out = []
    for r in rules:
        d = {"id": r.label, **{k: v for k, v in r.to_dict().items() if k != "id"}, "origin": r.origin}
        h = hits.get(r.id, {"packets": 0, "bytes": 0, "last_hit_ns": 0})
        d["hits"] = {"packets": h["packets"], "bytes": h["bytes"], "last_hit": _wall(h["last_hit_ns"], maps)}
        out.append(d)
    return out


def _wall(ns: int, maps: ProbeMaps) -> Optional[float]:
    """A rule's last hit (CLOCK_MONOTONIC, coarse) -> Unix time in seconds, or None for never."""
    if not ns:
        return None
    return time.time() - (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - ns) / 1e9


def status(key: Optional[str] = None, with_rules: bool = False) -> Dict[str, object]:
    """The whole status document: {"abi_version", "time", "interfaces": {key: interface_status}}."""
    keys = [key] if key else list_pinned()
    if key and key not in list_pinned():
        raise ProbeError(f"no hftpf probe is attached to {key} (nothing pinned under {PIN_ROOT}/{key}); "
                         f"attach one with: hftpf-agent attach {key}")
    return {"abi_version": abi.ABI_VERSION, "time": time.time(),
            "interfaces": {k: interface_status(k, with_rules) for k in keys}}
