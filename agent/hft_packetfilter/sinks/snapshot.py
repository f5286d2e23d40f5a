"""Snapshots for the sinks: the status document plus the raw kernel histograms, published by one
writer and read by any number of readers without a lock.

Why a holder and not a callback into the pipeline: a Prometheus scrape or a TUI frame must never
wait for the pipeline (nor the pipeline for them). The writer builds a whole new document, wraps it
in an immutable ``Snapshot`` and swaps one reference (atomic in CPython); readers take whatever
reference is current. The previous document and the time between the two are kept, so rates (pps,
Mbps) are computed by readers from two consecutive snapshots.

Document shape: ``interface_status()`` (kernel/status.py) with one extra key, ``histograms``::

    "histograms": {"rtt":          {VENUE:  {"count": N, "sum_ns": S, "buckets": [113 counts]}},
                   "feed_latency": {STREAM: {"count": N, "sum_ns": S, "buckets": [113 counts]}}}

Bucket i holds nanosecond values in ``analytics.percentiles.bucket_bounds(i)`` = [lo, hi); the last
bucket also holds everything above. ``count`` is the kernel's own counter (per-CPU sums read one
after the other, so it may differ from ``sum(buckets)`` by a packet in flight).

Feed quality from kernel counters (``kernel_quality_score``): the kernel keeps no staleness and does
not know which gaps were later filled, so the score is ``analytics.feed_quality.quality_score`` fed
with ``gaps_unfilled = gaps`` (conservative) and no stale time. It is cumulative since attach.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

from .. import abi

Doc = Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One published document, the one before it, and the seconds between them (for rates)."""

    doc: Doc
    taken: float                      # time.monotonic() when published
    prev: Optional[Doc] = None
    interval: Optional[float] = None  # seconds between prev and doc
    seq: int = 0                      # 1 for the first snapshot, +1 per publish


class SnapshotHolder:
    """Single writer (``publish``), lock-free readers (``latest``/``doc``)."""

    def __init__(self) -> None:
        self._snap: Optional[Snapshot] = None
        self._wlock = threading.Lock()   # only serialises writers; readers never take it

    def publish(self, doc: Doc, now: Optional[float] = None) -> Snapshot:
        now = time.monotonic() if now is None else now
        with self._wlock:
            old = self._snap
            snap = Snapshot(doc=doc, taken=now, prev=old.doc if old else None,
                            interval=(now - old.taken) if old else None, seq=(old.seq + 1) if old else 1)
            self._snap = snap
        return snap

    def latest(self) -> Optional[Snapshot]:
        return self._snap

    def doc(self) -> Optional[Doc]:
        """The current document (a provider for the Prometheus collector)."""
        s = self._snap
        return s.doc if s else None


def interfaces(doc: Any) -> Dict[str, Doc]:
    """Normalise what a provider returns to {interface key: interface document}.

    Accepts a ``Snapshot``, a ``status()`` document ({"interfaces": {...}}), one
    ``interface_status()`` document, a list of those, or None (nothing yet)."""
    if doc is None:
        return {}
    if isinstance(doc, Snapshot):
        doc = doc.doc
    if isinstance(doc, (list, tuple)):
        out: Dict[str, Doc] = {}
        for d in doc:
            out.update(interfaces(d))
        return out
    if "interfaces" in doc:
        return dict(doc["interfaces"])
    if "venues" in doc:
        key = doc.get("interface") or (f"{doc['netns']}:{doc['ifname']}" if doc.get("netns") else doc.get("ifname"))
        return {str(key or "unknown"): doc}
    return {}


# -- reading the kernel ---------------------------------------------------------------------------------
def _hist(count: int, sum_ns: int, buckets: Iterable[int]) -> Dict[str, Any]:
    return {"count": int(count), "sum_ns": int(sum_ns), "buckets": [int(b) for b in buckets]}


def raw_histograms(pin_dir: str) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """The kernel's latency histograms of one pinned probe, unreduced: RTT per venue (hftpf_rtt_hist)
    and feed latency per stream (the ``lat`` field of hftpf_streams), keyed like interface_status()."""
    from ..kernel.probemaps import ProbeMaps
    from ..kernel.status import _addr_text   # the stream naming of stream_status()

    with ProbeMaps.from_pins(pin_dir) as maps:
        meta = maps.meta()
        names = {vid: vi.name.decode(errors="replace") for vid, vi in maps.venue_infos(meta.nvenues).items()}
        rtt = maps.histograms(abi.MAP_RTT_HIST, meta.nvenues + 1)
        out: Dict[str, Dict[str, Dict[str, Any]]] = {
            "rtt": {names[vid]: _hist(*rtt[vid]) for vid in names}, "feed_latency": {}}
        for key, st in maps.streams():
            venue = names.get(key.venue, f"venue{key.venue}")
            name = f"{venue}:{_addr_text(key.daddr)}:{key.dport}" + (f"/u{key.unit}" if key.unit else "")
            out["feed_latency"][name] = _hist(st.lat.count, st.lat.sum_ns, st.lat.bucket)
    return out


def probe_document(key: str, with_agent: bool = False) -> Doc:
    """interface_status(key) plus the raw histograms (see the module docstring); with_agent: plus the
    running agent's snapshot from its control socket (``agent``: None when none runs, ``{"error"}``
    when it does not answer)."""
    import os

    from ..kernel.loader import PIN_ROOT
    from ..kernel.status import interface_status

    doc = interface_status(key)
    doc["interface"] = key
    doc["histograms"] = raw_histograms(os.path.join(PIN_ROOT, key))
    if with_agent:
        doc["agent"] = None
        if doc.get("agent_running"):
            from ..control import request, socket_path

            try:
                doc["agent"] = request(socket_path(key), "snapshot", timeout=1.0)["agent"]
            except (ConnectionError, OSError, ValueError) as e:
                doc["agent"] = {"error": f"the agent did not answer: {e}"}
    return doc


class PinPoller(threading.Thread):
    """Reads pinned probes every ``interval`` seconds and publishes {"interfaces": ...} documents.

    ``keys``: pin keys (IF or NS:IF), or a callable returning them (default: every pinned probe).
    A probe that cannot be read is reported under ``errors`` and skipped; the thread never dies of
    it. ``stop()`` ends it within one interval."""

    def __init__(self, holder: SnapshotHolder, keys: Optional[Iterable[str] | Callable[[], List[str]]] = None,
                 interval: float = 1.0, read: Callable[[str], Doc] = probe_document) -> None:
        super().__init__(name="hftpf-snapshot", daemon=True)
        self.holder, self.interval, self.read = holder, max(0.05, float(interval)), read
        self._keys = keys
        self._halt = threading.Event()
        self.errors: Dict[str, str] = {}

    def keys(self) -> List[str]:
        if self._keys is None:
            from ..kernel.loader import list_pinned

            return list_pinned()
        return list(self._keys()) if callable(self._keys) else list(self._keys)

    def poll_once(self) -> Snapshot:
        ifs: Dict[str, Doc] = {}
        errors: Dict[str, str] = {}
        for k in self.keys():
            try:
                ifs[k] = self.read(k)
            except Exception as e:  # noqa: BLE001 - a vanished pin must not stop the exporter
                errors[k] = f"{type(e).__name__}: {e}"
        self.errors = errors
        return self.holder.publish({"abi_version": abi.ABI_VERSION, "time": time.time(), "interfaces": ifs,
                                    "errors": errors})

    def run(self) -> None:
        while not self._halt.is_set():
            self.poll_once()
            self._halt.wait(self.interval)

    def stop(self, timeout: Optional[float] = None) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout if timeout is not None else self.interval + 1.0)


# -- derived figures ------------------------------------------------------------------------------------
def kernel_quality_score(st: Doc) -> Optional[float]:
    """0-100 feed quality of a kernel stream record (see the module docstring)."""
    from ..analytics.feed_quality import quality_score

    fig = {"packets": st.get("packets", 0), "messages": st.get("messages", 0), "missing": st.get("missing", 0),
           "gaps_unfilled": st.get("gaps", 0), "out_of_order": st.get("out_of_order", 0),
           "duplicates": st.get("duplicates", 0)}
    return quality_score(fig, 0, 0, False)


def rate(cur: Optional[Doc], prev: Optional[Doc], interval: Optional[float], *path: str) -> Optional[float]:
    """Per-second rate of the counter at ``path`` between two documents; None without a previous
    document. A counter that went down (probe re-attached) counts from zero."""
    if cur is None or prev is None or not interval or interval <= 0:
        return None

    def get(d):
        for p in path:
            if not isinstance(d, dict) or p not in d:
                return None
            d = d[p]
        return d

    c, p = get(cur), get(prev)
    if c is None:
        return None
    if p is None or c < p:
        p = 0
    return (c - p) / interval
