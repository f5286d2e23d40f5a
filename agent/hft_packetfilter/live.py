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
    def __init__(self, config, key: str, pdir: str, control: bool = True, group: Optional[str] = None):
        self.key = key
        self.lock = threading.Lock()
        self.runtime = ProbeRuntime(pdir, on_event=self._on_event)
        clock = self.runtime.maps.meta().clock
        self.payloads = LivePayloads(config.probe.payload_snaplen, clock)
        self.pipeline = Pipeline(config, clock=CLOCK_TAI if clock == abi.Clock.TAI else CLOCK_MONO)
        self.started = time.time()
        self.on_snapshot = None  # called with the kernel status document every interval (exporter)
        self.control = ControlServer(socket_path(key), {"ping": lambda r: "pong", "snapshot": self._snapshot},
                                     group=group) if control else None

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
        }

    def _snapshot(self, req: dict) -> dict:
        return {"kernel": interface_status(self.key), "agent": self.agent_snapshot()}

    def publish(self) -> None:
        """Once per interval: hand the latest kernel document to whoever exports it."""
        if self.on_snapshot is not None:
            from .sinks.snapshot import probe_document

            try:
                self.on_snapshot(probe_document(self.key))
            except Exception:  # noqa: BLE001 - an exporter problem never stops the agent
                pass

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
        self.runtime.close()
