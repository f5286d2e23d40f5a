"""The agent's live side under `attach`: ring buffer -> the offline pipeline (decoders, order
lifecycle, latencies) -> snapshots served on the control socket. One place wires them so attach,
the demo and tests run the same thing."""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import sys
import threading
import time
from typing import Optional

from . import abi
from .control import ControlServer, socket_path
from .fastlane import FastLane
from .kernel.probemaps import venue_timezones
from .kernel.runtime import ProbeRuntime
from .kernel.status import interface_status
from .pipeline import Pipeline
from .sources.events import CLOCK_MONO, CLOCK_TAI
from .sources.live import LivePayloads, _addr

log = logging.getLogger("hftpf.agent")
_CONN_SIZE = abi.ctypes.sizeof(abi.EvConn)
# the TCP flags the risk engine's packet input expects for each kind of connection-setup record
_CONN_FLAGS = {abi.ConnKind.SYN: 0x02, abi.ConnKind.ESTABLISHED: 0x10, abi.ConnKind.RESET: 0x04}


class LiveAgent:
    def __init__(self, config, key: str, pdir: str, control: bool = True, group: Optional[str] = None,
                 risk_rules=None, alert_stream=None, audit_dir: Optional[str] = None,
                 audit_key: Optional[str] = None, clock_watch: Optional[bool] = None):
        self.key = key
        self.config = config
        self.audit = None
        self.audit_errors = 0
        self.clock_watch = None
        self.lock = threading.Lock()
        self.risk = None
        self.alerts = None
        self.runtime = ProbeRuntime(pdir, on_event=self._on_event, timezones=venue_timezones(config.exchanges))
        clock = self.runtime.maps.meta().clock
        self.payloads = LivePayloads(config.probe.payload_snaplen, clock)
        self.pipeline = Pipeline(config, clock=CLOCK_TAI if clock == abi.Clock.TAI else CLOCK_MONO)
        self.lane = FastLane.for_live(self.pipeline)     # plain ITCH payload records in one C loop
        if self.lane is not None:
            self.runtime.lane_run = self._lane_run
        self.started = time.time()
        maps = self.runtime.maps
        self._venue_names = {vid: vi.name.decode(errors="replace")
                             for vid, vi in maps.venue_infos(maps.meta().nvenues).items()}
        self.on_snapshot = None  # called with the kernel status document every interval (exporter)
        self.snapshot_errors = 0
        if risk_rules is not None:
            self._start_risk(config, risk_rules, alert_stream)
        if audit_dir:
            from .auditlive import LiveAudit

            self.audit = LiveAudit(audit_dir, config, clock, key_file=audit_key)
            self.audit.agent("attach", interface=key, pid=os.getpid(), venues=[ex.name for ex in config.exchanges],
                             clock=abi.Clock(clock).name.lower(), config=config.source)
            self.audit.hook(self.pipeline)       # after the risk engine's listener: both are called
        if clock_watch if clock_watch is not None else (self.audit is not None or self.risk is not None):
            from .auditlive import ClockWatch

            self.clock_watch = ClockWatch(config.compliance.clock_max_offset_us)
        handlers = {"ping": lambda r: "pong", "snapshot": self._snapshot, "kill_switch": self._kill_request,
                    "allow_apply": self._allow_request}
        self.control = ControlServer(socket_path(key), handlers, group=group) if control else None

    # -- risk --------------------------------------------------------------------------------------
    def _start_risk(self, config, ruleset, alert_stream) -> None:
        from .risk.rules import RiskEngine
        from .sinks.alerts import from_monitoring

        self.alerts = from_monitoring(config.monitoring, log_stream=alert_stream)
        # emissions per (rule, severity), every configured rule from 0 (the exporter's hftpf_alerts_total)
        self.alert_counts = {(r.name, r.severity): 0 for r in ruleset}

        def on_alert(a) -> None:
            k = (a.rule, a.severity)
            self.alert_counts[k] = self.alert_counts.get(k, 0) + 1
            self.alerts.submit(a)

        self.risk = RiskEngine(ruleset, clock=time.time_ns, config=config, kill_switch=self._kill,
                               on_alert=on_alert)

        def listener(protocol, msg, ts_ns, venue, session, to_venue):
            if protocol == "FIX/TCP":
                self.risk.on_fix(msg, time.time_ns(), venue, session, to_venue)

        self.pipeline.message_listener = listener

    def _kill(self, req) -> None:
        """A rule asked for the kill switch: engage it in the kernel now (release is by hand)."""
        if req.session is None:
            self.kill_switch("engage", str(req.venue), f"rule {req.rule}: {req.reason}", by=f"rule:{req.rule}")

    # -- controls: kill switch and allow-list changes, recorded in the audit trail -------------------
    def kill_switch(self, action: str, venue: str, reason: str, by: str) -> list:
        from . import killswitch

        fn = {"engage": killswitch.engage, "release": killswitch.release}.get(action)
        if fn is None:
            raise ValueError(f"kill_switch action {action!r}: expected engage or release")
        done = fn(venue, reason, by, self.key)
        for d in done:
            d["audit_n"] = self._record(lambda a, d=d: killswitch.record(a.kill_switch, action, d))
        return done

    def _kill_request(self, req: dict) -> list:
        for k in ("action", "venue", "reason", "by"):
            if not isinstance(req.get(k), str) or not req[k]:
                raise ValueError(f"kill_switch needs a non-empty string {k!r}")
        return self.kill_switch(req["action"], req["venue"], req["reason"], req["by"])

    def _allow_request(self, req: dict) -> dict:
        """`allow` changed the rules file (it holds the file's lock while it waits for this answer):
        apply the file to this probe and record the change."""
        from . import allowlist as al
        from .kernel.probemaps import ProbeMaps

        change = req.get("change")
        path = req.get("rules_file")
        if not isinstance(change, dict) or not isinstance(path, str):
            raise ValueError("allow_apply needs 'rules_file' (string) and 'change' (object)")
        with open(path, "rb") as f:
            data = f.read()
        if change.get("rules_sha256") and hashlib.sha256(data).hexdigest() != change["rules_sha256"]:
            raise ValueError(f"{path} changed under the request (sha256 mismatch): not applied")
        rs = al.RuleSet.from_yaml(data.decode("utf-8"), path)
        with ProbeMaps.from_pins(self.runtime.pdir) as maps:
            maps.apply(self.config.exchanges, rs, maps.meta().max_rules)
        n = self._record(lambda a: a.allowlist(change, self.key))
        return {"interface": self.key, "rules": len(rs.rules), "audit_n": n}

    def _record(self, fn) -> Optional[int]:
        """Write one audit record (None when this agent keeps no trail). A failing trail is loud."""
        if self.audit is None:
            return None
        try:
            return fn(self.audit)
        except (OSError, ValueError) as e:
            self._audit_failed(e)
            raise

    def _audit_failed(self, e: Exception) -> None:
        """A trail write failed: counted, and said loudly (a compliance record is missing)."""
        self.audit_errors += 1
        print(f"hftpf-agent: AUDIT TRAIL WRITE FAILED ({self.audit.directory}): {e}", file=sys.stderr, flush=True)

    def _on_event(self, etype: int, buf: bytes, off: int, length: int) -> None:
        if etype == abi.EventType.CONN:
            if self.risk is not None and length == _CONN_SIZE:
                self._on_conn(abi.EvConn.from_buffer_copy(buf, off))
            return
        if etype != abi.EventType.PAYLOAD:
            return
        ev = self.payloads.event(buf, off, length)
        if ev is not None:
            with self.lock:
                self.pipeline.feed(ev)
                if self.lane is not None:
                    self.lane.after(ev)

    def _lane_run(self, buf, offsets, i: int) -> int:
        with self.lock:
            return self.lane.run_live(buf, offsets, i, self.payloads)

    def _on_conn(self, ev) -> None:
        """A connection-setup record: the SYN flood and port-scan rules' input."""
        flags = _CONN_FLAGS.get(ev.kind)
        if flags is None:
            return
        src = ipaddress.ip_address(_addr(bytes(ev.saddr))[1])
        dst = ipaddress.ip_address(_addr(bytes(ev.daddr))[1])
        venue = self._venue_names.get(ev.venue) if ev.venue else None
        with self.lock:
            self.risk.on_packet_meta(time.time_ns(), src, ev.dport, flags, src_port=ev.sport, dst=dst, venue=venue)

    def agent_snapshot(self) -> dict:
        with self.lock:
            rep = self.pipeline.summary()
        rt = self.runtime
        return {
            "started": self.started,
            "ring": {"records": rt.ring.records, "batches": rt.ring.batches,
                     "by_type": {abi.EventType(t).name.lower(): n for t, n in rt.by_type.items()}},
            "payloads": {"records": self.payloads.records, "truncated": self.payloads.truncated,
                         "bad": self.payloads.bad,
                         "fast_lane": self.lane.records if self.lane is not None else 0},
            "recent_gaps": [{"venue": g.stream.venue, "dport": g.stream.dport, "expected": g.expected,
                             "received": g.received, "missing": g.missing} for g in list(rt.recent_gaps)[-20:]],
            "messages": rep.get("messages"), "decode_errors": rep.get("decode_errors"),
            "orders": rep.get("orders"), "latency": rep.get("latency"), "errors": rep.get("errors"),
            "books": rep.get("books"),
            "crossvenue": _crossvenue_summary(rep.get("crossvenue") or {}),
            "alerts": [a.to_dict() for a in self.risk.alerts()][-50:] if self.risk is not None else None,
            "alert_counts": ([{"rule": r, "severity": s, "count": n} for (r, s), n in sorted(self.alert_counts.items())]
                             if self.risk is not None else None),
            "audit": dict(self.audit.snapshot(), errors=self.audit_errors) if self.audit is not None else None,
            "clock_sync": self.clock_watch.latest if self.clock_watch is not None else None,
        }

    def _snapshot(self, req: dict) -> dict:
        return {"kernel": interface_status(self.key), "agent": self.agent_snapshot()}

    def publish(self) -> None:
        """Once per interval: read the probe's document once (with the raw histograms when an
        exporter wants it), feed the audit trail and the risk engine from it, hand it to the
        exporter with the agent's section."""
        if self.risk is None and self.audit is None and self.on_snapshot is None:
            return
        from .sinks.snapshot import probe_document

        try:
            doc = probe_document(self.key) if self.on_snapshot is not None else interface_status(self.key)
        except Exception as e:  # noqa: BLE001 - a status read problem never stops the agent
            self.snapshot_errors += 1
            log.warning("status read failed (%d so far): %s", self.snapshot_errors, e)
            return
        if self.clock_watch is not None:
            doc["clock_sync"] = self.clock_watch.latest
        if self.audit is not None:
            try:
                with self.lock:
                    self.audit.interval(doc["probe"], self.payloads.bad)
                    self.audit.clock(doc.get("clock_sync"))
            except (OSError, ValueError) as e:
                self._audit_failed(e)
        if self.risk is not None:
            try:
                with self.lock:
                    self.risk.on_status(doc)
                    self.risk.tick()
            except Exception as e:  # noqa: BLE001 - a rule problem never stops the agent
                log.warning("risk rules failed on the status document: %s", e)
        if self.on_snapshot is not None:
            try:
                doc["agent"] = self.agent_snapshot()
                self.on_snapshot(doc)
            except Exception as e:  # noqa: BLE001 - an exporter problem never stops the agent
                self.snapshot_errors += 1
                log.warning("snapshot for the exporter failed (%d so far): %s", self.snapshot_errors, e)

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.clock_watch is not None:
            self.clock_watch.close()
        if self.alerts is not None:
            self.alerts.close()
        if self.audit is not None:
            try:
                with self.lock:
                    self.audit.agent("detach", interface=self.key, pid=os.getpid(), **self.audit.counts)
            finally:
                self.audit.close()
        self.runtime.close()


def _crossvenue_summary(cv: dict) -> dict:
    """What the agent serves of the cross-venue view: totals, the consolidated top per instrument,
    the newest opportunities and episodes (the full lists stay in the pipeline's report)."""
    if not cv or cv.get("enabled") is False:
        return {"enabled": False}
    return {"totals": cv.get("totals"), "instruments": cv.get("instruments"),
            "opportunities": (cv.get("opportunities") or [])[-20:], "episodes": (cv.get("episodes") or [])[-20:],
            "tick_to_trade_us": (cv.get("tick_to_trade_us") or {}).get("all")}


