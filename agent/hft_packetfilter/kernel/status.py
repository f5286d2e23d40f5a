"""Read a pinned probe's counters into a plain, stable dict (the `status --json` document).

Works from the pins alone, without bcc and without a running agent."""
from __future__ import annotations

import os
import time
from typing import Dict, Optional

from .. import abi
from . import bpfsys
from .loader import (MODE_NAME, PIN_ROOT, ProbeError, agent_alive, list_pinned, pinned_prog_id, read_meta,
                     split_pin_key, xdp_state)


def _open(pdir: str, name: str) -> bpfsys.Map:
    return bpfsys.Map.pinned(os.path.join(pdir, name), *abi.MAP_TYPES[name])


def _counter(packets: int, nbytes: int, prefix: str = "") -> Dict[str, int]:
    return {f"{prefix}packets": packets, f"{prefix}bytes": nbytes}


def interface_status(key: str) -> Dict[str, object]:
    """Status of one pinned probe; key is the pin directory name (IF or NS:IF)."""
    pdir = os.path.join(PIN_ROOT, key)
    ifname, netns = split_pin_key(key)
    meta = read_meta(pdir)
    if meta is None:
        raise ProbeError(f"{pdir} holds no hftpf_meta pin: not an hftpf probe, or a partial one "
                         f"(hftpf-agent detach {ifname} removes it)")
    if meta.abi_version != abi.ABI_VERSION:
        raise ProbeError(f"the probe pinned for {key} speaks ABI {meta.abi_version}, this agent ABI "
                         f"{abi.ABI_VERSION}: detach it with the agent that attached it, or detach and re-attach")
    prog_id = pinned_prog_id(pdir)
    try:
        attached = prog_id is not None and prog_id in xdp_state(ifname, netns)["prog_ids"]
    except ProbeError:
        attached = False
    venues: Dict[str, Dict[str, object]] = {}
    with _open(pdir, abi.MAP_VENUE_INFO) as info, _open(pdir, abi.MAP_VENUE_STATS) as stats:
        for vid in range(1, meta.nvenues + 1):
            vi = info.lookup(vid)
            pk, by = stats.sum_counters(vid)
            venues[vi.name.decode(errors="replace")] = {
                "id": vid,
                "transport": abi.Transport(vi.transport).name.lower(),
                "stream_kind": abi.StreamKind(vi.stream_kind).name.lower(),
                "latency_target_us": vi.latency_target_us or None,
                "rx_packets": pk, "rx_bytes": by,
            }
        unclassified = _counter(*stats.sum_counters(0), prefix="rx_")
    with _open(pdir, abi.MAP_VERDICT_STATS) as vs:
        verdicts = {abi.Verdict(v).name.lower(): vs.sum_counters(v)[0] for v in range(abi.Verdict.MAX)}
        verdict_bytes = {abi.Verdict(v).name.lower(): vs.sum_counters(v)[1] for v in range(abi.Verdict.MAX)}
    with _open(pdir, abi.MAP_PKT_STATS) as ps:
        classes = {abi.PktClass(c).name.lower(): ps.sum_counters(c)[0] for c in range(abi.PktClass.MAX)}
    return {
        "ifname": ifname,
        "netns": netns,
        "ifindex": meta.ifindex,
        "attach_mode": MODE_NAME.get(meta.attach_mode, "none"),
        "attached": attached,
        "program_id": prog_id,
        "attached_since": meta.attach_time_ns / 1e9,
        "agent_pid": meta.agent_pid,
        "agent_running": agent_alive(meta.agent_pid),
        "pin_dir": pdir,
        "venues": venues,
        "unclassified": unclassified,
        "verdicts": verdicts,
        "verdict_bytes": verdict_bytes,
        "packet_classes": classes,
        "probe": {"abi_version": meta.abi_version,
                  "truncated": classes["truncated"]},
    }


def status(key: Optional[str] = None) -> Dict[str, object]:
    """The whole status document: {"abi_version", "time", "interfaces": {key: interface_status}}."""
    keys = [key] if key else list_pinned()
    if key and key not in list_pinned():
        raise ProbeError(f"no hftpf probe is attached to {key} (nothing pinned under {PIN_ROOT}/{key}); "
                         f"attach one with: hftpf-agent attach {key}")
    return {"abi_version": abi.ABI_VERSION, "time": time.time(),
            "interfaces": {k: interface_status(k) for k in keys}}
