"""The agent's live side under `attach`: ring buffer -> the offline pipeline (decoders, order
lifecycle, latencies) -> snapshots served on the control socket. One place wires them so attach,
the demo and tests run the same thing."""
from __future__ import annotations

import threading
import time
from typing import Optional

from . import abi
from .control import ControlServer, socket_path
from .kernel.runtime import ProbeRuntime
from .kernel.status import interface_status
from .pipeline import Pipeline
from .sources.events import CLOCK_MONO, CLOCK_TAI
from .sources.live import LivePayloads


class LiveAgent:
    def __init__(self, config, key: str, pdir: str, control: bool = True, group: Optional[str] = None,
                 risk_rules=None, alert_stream=None):
        self.key = key
        self.lock = threading.Lock()
        self.risk = None
        self.alerts = None
        self.runtime = ProbeRuntime(pdir, on_event=self._on_event)
        clock = self.runtime.maps.meta().clock
        self.payloads = LivePayloads(config.probe.payload_snaplen, clock)
        self.pipeline = Pipeline(config, clock=CLOCK_TAI if clock == abi.Clock.TAI else CLOCK_MONO)
        self.started = time.time()
        self.on_snapshot = None  # called with the kernel status document every interval (exporter)
        if risk_rules is not None:
            self._start_risk(config, risk_rules, alert_stream)
        self.control = ControlServer(socket_path(key), {"ping": lambda r: "pong", "snapshot": self._snapshot},
                                     group=group) if control else None

    # -- risk --------------------------------------------------------------------------------------
    def _start_risk(self, config, ruleset, alert_stream) -> None:
        from .risk.rules import RiskEngine
        from .sinks.alerts import from_monitoring

        self.alerts = from_monitoring(config.monitoring, log_stream=alert_stream)
        self.risk = RiskEngine(ruleset, clock=time.time_ns, config=config, kill_switch=self._kill,
                               on_alert=self.alerts.submit)

        def listener(protocol, msg, ts_ns, venue, session, to_venue):
            if protocol == "FIX/TCP":
                self.risk.on_fix(msg, time.time_ns(), venue, session, to_venue)

        self.pipeline.message_listener = listener

    def _kill(self, req) -> None:
        """A rule asked for the kill switch: engage it in the kernel now (release is by hand)."""
        from .killswitch import engage

        if req.session is None:
            engage(str(req.venue), f"rule {req.rule}: {req.reason}", by=f"rule:{req.rule}")

    def _on_event(self, etype: int, buf: bytes, off: int, length: int) -> None:
        if etype != abi.EventType.PAYLOAD:
            return
        ev = self.payloads.event(buf, off, length)
        if ev is not None:
            with self.lock:
                self.pipeline.feed(ev)

    def agent_snapshot(self) -> dict:
        with self.lock:
            rep = self.pipeline.report()
        rt = self.runtime
        return {
            "started": self.started,
            "ring": {"records": rt.ring.records, "batches": rt.ring.batches,
                     "by_type": {abi.EventType(t).name.lower(): n for t, n in rt.by_type.items()}},
            "payloads": {"records": self.payloads.records, "truncated": self.payloads.truncated,
                         "bad": self.payloads.bad},
            "recent_gaps": [{"venue": g.stream.venue, "dport": g.stream.dport, "expected": g.expected,
                             "received": g.received, "missing": g.missing} for g in list(rt.recent_gaps)[-20:]],
            "messages": rep.get("messages"), "decode_errors": rep.get("decode_errors"),
            "orders": rep.get("orders"), "latency": rep.get("latency"), "errors": rep.get("errors"),
            "alerts": [a.to_dict() for a in self.risk.alerts()][-50:] if self.risk is not None else None,
        }

    def _snapshot(self, req: dict) -> dict:
        return {"kernel": interface_status(self.key), "agent": self.agent_snapshot()}

    def publish(self) -> None:
        """Once per interval: feed the risk engine the kernel's counters, hand the latest kernel
        document to whoever exports it."""
        if self.risk is not None:
            try:
                doc = interface_status(self.key)
                with self.lock:
                    self.risk.on_status(doc)
                    self.risk.tick()
            except Exception:  # noqa: BLE001 - a rule problem never stops the agent
                pass
        if self.on_snapshot is not None:
            from .sinks.snapshot import probe_document

            try:
                self.on_snapshot(probe_document(self.key))
            except Exception:  # noqa: BLE001 - an exporter problem never stops the agent
                pass

    def close(self) -> None:
        if self.alerts is not None:
            self.alerts.close()
        if self.control is not None:
            self.control.close()
        self.runtime.close()
