"""Writing the audit trail from the running agent (``attach`` with ``compliance.audit_dir``) and
from the commands that change the controls around it (``allow``, ``kill-switch``).

What goes in (see sinks/audit.py for the format):

* every decoded order-entry message (FIX, OUCH) with the kernel's stamp converted to TAI and UTC
  (the probe stamps with CLOCK_TAI, or CLOCK_MONOTONIC where TAI is not available; ``clock`` in the
  record says which), its direction and session;
* agent attach/detach; allow-list changes and kill-switch actions with who made them and why;
* probe-loss windows: ring-buffer records the kernel could not reserve, payload records the agent
  could not read, holes in reassembled TCP streams, so a gap in the order record is explained;
* clock-sync state changes (chrony / PTP hardware clock / none), sampled in the background.

One trail has one writer (the writer holds a flock). While an agent runs, ``allow`` and
``kill-switch`` send their change to it over the control socket and the agent records it; with no
agent running they record it themselves when the probe's config turns the trail on.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Tuple

from . import abi
from .sinks import audit as _audit

log = logging.getLogger("hftpf.audit")

CLOCK_SAMPLE_S = 10.0


# --------------------------------------------------------------------------------------------
# order-entry messages and stream holes, from a pipeline
# --------------------------------------------------------------------------------------------

def _fix_fields(m) -> list:
    return [[t, v.decode("latin-1")] for t, v in m.fields()]


def _ouch_raw(m) -> bytes:
    """The OUCH message's bytes, re-encoded from its fields (the decoder keeps no copy of them);
    empty when they cannot be re-encoded (the decoded fields are recorded regardless)."""
    from .protocols.ouch import encode_message
    try:
        return encode_message(m.version, m.direction, m.msg_type, **m.fields)
    except Exception:  # noqa: BLE001
        return b""


def order_fields(protocol: str, m) -> Optional[Tuple[object, bytes]]:
    """(fields, raw bytes) of an order-entry message; None for anything else (market data)."""
    if protocol == "FIX/TCP":
        return _fix_fields(m), m.raw
    if hasattr(m, "direction"):            # OUCH (SoupBinTCP sequenced/unsequenced data)
        return dict(m.fields), _ouch_raw(m)
    return None


Stamp = Callable[[int], Tuple[Optional[int], Optional[int], str]]


def record_pipeline(pipe, writer: "_audit.AuditWriter", stamp: Stamp, counts: dict) -> None:
    """Hook ``pipe`` so every order-entry message and every TCP stream hole lands in ``writer``.
    ``stamp(ts)`` turns the pipeline's timestamp into (TAI ns, UTC ns, clock name). A listener that
    was already set (the risk engine) keeps being called first."""
    counts.setdefault("order_entry", 0)
    counts.setdefault("probe_loss", 0)
    before = pipe.message_listener

    def on_message(protocol, m, ts, venue, session, to_venue):
        if before is not None:
            before(protocol, m, ts, venue, session, to_venue)
        got = order_fields(protocol, m)
        if got is None:
            return
        tai, utc, clock = stamp(ts)
        writer.order_entry(venue=venue, session=session, direction="to_venue" if to_venue else "from_venue",
                           protocol=protocol, msg_type=m.msg_type, raw=got[1], fields=got[0], ts_tai_ns=tai,
                           ts_utc_ns=utc, clock=clock)
        counts["order_entry"] += 1

    def on_gap(venue, session, to_venue, ts, size, reason):
        tai, utc, _clock = stamp(ts)
        t = utc if utc is not None else ts
        writer.probe_loss(t, t, size, f"tcp:{venue}", unit="bytes", session=session, reason=reason)
        counts["probe_loss"] += 1

    pipe.message_listener = on_message
    pipe.gap_listener = on_gap


# --------------------------------------------------------------------------------------------
# clock sync state
# --------------------------------------------------------------------------------------------

def clock_sync_sample(limit_us: float) -> dict:
    """{state: synced|unsynced|unknown, source, offset_ns}: chrony's view when chronyc exists, else
    a PTP hardware clock against CLOCK_TAI, else unknown (no sync source on this host)."""
    from .audit_cli import _chrony, _phcs

    ch = _chrony()
    if ch is not None:
        if "error" in ch:
            return {"state": "unknown", "source": "chrony", "offset_ns": None, "detail": ch["error"]}
        off = ch.get("system_time_ns")
        leap = str(ch.get("leap_status", "")).lower()
        synced = off is not None and "not synchronised" not in leap and abs(off) <= limit_us * 1000
        return {"state": "synced" if synced else "unsynced", "source": "chrony", "offset_ns": off,
                "detail": ch.get("leap_status")}
    for p in _phcs(samples=5):
        if "phc_minus_tai_ns" in p:
            off = p["phc_minus_tai_ns"]
            return {"state": "synced" if abs(off) <= limit_us * 1000 else "unsynced",
                    "source": "phc:" + p["device"], "offset_ns": off}
    return {"state": "unknown", "source": "none", "offset_ns": None,
            "detail": "no chronyc and no PTP hardware clock on this host"}


class ClockWatch:
    """Samples the clock-sync state every ``every`` s on a thread (chronyc can take a while; the
    drain loop must not wait for it). ``latest`` is the newest sample."""

    def __init__(self, limit_us: float, every: float = CLOCK_SAMPLE_S,
                 sample: Callable[[float], dict] = clock_sync_sample) -> None:
        self.limit_us = limit_us
        self.every = every
        self._sample = sample
        self.latest: Optional[dict] = None
        self.samples = 0
        self._stop = threading.Event()
        self._take()
        self.thread = threading.Thread(target=self._loop, name="hftpf-clock", daemon=True)
        self.thread.start()

    def _take(self) -> None:
        try:
            s = self._sample(self.limit_us)
        except Exception as e:  # noqa: BLE001 - a broken sync tool is "unknown", never a crash
            s = {"state": "unknown", "source": "error", "offset_ns": None, "detail": f"{type(e).__name__}: {e}"}
        s["sampled_at"] = time.time()
        self.latest = s
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._take()

    def close(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------------------------
# the live trail
# --------------------------------------------------------------------------------------------

class LiveAudit:
    """The agent's audit trail: one writer, records stamped from the probe's clock."""

    def __init__(self, directory: str, config, kernel_clock: int, key_file: Optional[str] = None,
                 **writer_kw) -> None:
        comp = config.compliance
        writer_kw.setdefault("retention_days", comp.audit_retention_days)
        self.writer = _audit.AuditWriter(directory, key_file or comp.audit_key_file, **writer_kw)
        self.kernel_clock = kernel_clock
        self.counts: dict = {"order_entry": 0, "probe_loss": 0, "allowlist_change": 0, "kill_switch": 0,
                             "clock_sync": 0}
        self._clock_name = "kernel_tai" if kernel_clock == abi.Clock.TAI else "kernel_mono"
        self._to_utc = 0
        self._ring_lost: Optional[int] = None
        self._payload_bad = 0
        self._window_start_utc = time.time_ns()
        self._clock_state: Optional[Tuple[str, str]] = None
        self.refresh_offset()
        try:
            for t in self.writer.recovered:
                log.warning("audit trail %s: torn tail cut at open: %s", directory, t)
            self.writer.prune()
        except _audit.AuditError as e:
            log.error("audit trail %s: retention: %s", directory, e)

    @property
    def directory(self) -> str:
        return self.writer.directory

    def refresh_offset(self) -> None:
        """UTC - probe clock, read back to back (the kernel stamps with the same clocks)."""
        cid = time.CLOCK_TAI if self.kernel_clock == abi.Clock.TAI else time.CLOCK_MONOTONIC
        a = time.time_ns()
        k = time.clock_gettime_ns(cid)
        b = time.time_ns()
        self._to_utc = (a + b) // 2 - k

    def stamp(self, ts: int) -> Tuple[int, int, str]:
        utc = ts + self._to_utc
        return utc + _audit.tai_minus_utc(utc), utc, self._clock_name

    def hook(self, pipeline) -> None:
        record_pipeline(pipeline, self.writer, self.stamp, self.counts)

    def interval(self, probe: dict, payload_bad: int) -> None:
        """Once per agent interval, with the status document's ``probe`` section: a probe-loss record
        for every window in which the kernel failed ring reservations or payload records were bad."""
        self.refresh_offset()
        now = time.time_ns()
        lost = int(probe.get("ringbuf_lost", 0))
        if self._ring_lost is None:
            self._ring_lost = lost      # losses before this agent started are in the kernel's total
        elif lost > self._ring_lost:
            self.writer.probe_loss(self._window_start_utc, now, lost - self._ring_lost, "ringbuf",
                                   unit="records", total=lost)
            self.counts["probe_loss"] += 1
            self._ring_lost = lost
        if payload_bad > self._payload_bad:
            self.writer.probe_loss(self._window_start_utc, now, payload_bad - self._payload_bad, "payload_decode",
                                   unit="records", total=payload_bad)
            self.counts["probe_loss"] += 1
            self._payload_bad = payload_bad
        self._window_start_utc = now

    def clock(self, sample: Optional[dict]) -> bool:
        """Record the clock-sync state when it changed (state or source). True when recorded."""
        if not sample:
            return False
        key = (sample.get("state"), sample.get("source"))
        if key == self._clock_state:
            return False
        self._clock_state = key
        self.writer.clock_sync(str(sample.get("state")), str(sample.get("source")), sample.get("offset_ns"),
                               detail=sample.get("detail"))
        self.counts["clock_sync"] += 1
        return True

    def allowlist(self, change: dict, interface: str) -> int:
        self.counts["allowlist_change"] += 1
        return record_allowlist(self.writer, change, interface).n

    def kill_switch(self, action: str, reason: str, **detail) -> int:
        self.counts["kill_switch"] += 1
        return self.writer.kill_switch(action, reason, **detail).n

    def agent(self, action: str, **detail) -> int:
        return self.writer.agent_event(action, **detail).n

    def snapshot(self) -> dict:
        w = self.writer
        return {"dir": w.directory, "next_n": w.next_n, "durable_n": w.durable_n, **self.counts}

    def close(self) -> int:
        return self.writer.close()


def record_allowlist(writer: "_audit.AuditWriter", change: dict, interface: str):
    """One allow-list change (as ``allow`` describes it) as an ``allowlist_change`` record."""
    rules = change.get("rules") or []
    return writer.allowlist_change(str(change.get("action")), rules[0] if len(rules) == 1 else {"rules": rules},
                                   detail=change.get("detail"), by=change.get("by"),
                                   rules_file=change.get("rules_file"), rules_sha256=change.get("rules_sha256"),
                                   interface=interface)


def record_direct(config, what: Callable[["_audit.AuditWriter"], object]) -> Optional[str]:
    """With no agent running: open the probe's trail (when its config turns it on), record, close.
    Returns the trail directory, or None when the config keeps no trail."""
    comp = config.compliance
    if not comp.audit_trail:
        return None
    with _audit.AuditWriter(comp.audit_dir, comp.audit_key_file, retention_days=comp.audit_retention_days,
                            background_flush=False, flush_policy="always") as w:
        what(w)
    return comp.audit_dir
