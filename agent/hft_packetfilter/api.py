"""The Python API of the seed: HFTAnalyzer, ExchangeConfig, ProductionConfig.

    from hft_packetfilter import HFTAnalyzer, ExchangeConfig, ProductionConfig
    analyzer = HFTAnalyzer()
    analyzer.add_exchange(ExchangeConfig(name="NYSE", host="10.0.0.5", ports=[4001, 9001],
                                         protocol="FIX/TCP", latency_target_us=500))
    analyzer.start_monitoring("eth0")          # root: compiles and attaches the probe
    metrics = analyzer.get_live_metrics()
    metrics.nyse.latency_us, metrics.nyse.data_quality_score
    analyzer.stop_monitoring()

Everything goes through the same code as the CLI: config validation (config.py), the probe
(kernel/loader.py), the live agent (live.py) and the offline pipeline (replay). `HFTAnalyzer.replay`
needs no root.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Dict, List, Optional, Sequence

from . import config as _config

__all__ = ["HFTAnalyzer", "ExchangeConfig", "ProductionConfig", "VenueMetrics", "LiveMetrics"]


@dataclasses.dataclass
class ExchangeConfig:
    """One venue, as in the config's `exchanges` list (validated when monitoring starts)."""

    name: str
    host: str
    ports: Sequence[int]
    protocol: str = "FIX/TCP"
    latency_target_us: Optional[int] = None

    def to_yaml(self) -> str:
        ports = ", ".join(str(p) for p in self.ports)
        lat = f", latency_target_us: {int(self.latency_target_us)}" if self.latency_target_us else ""
        return f'  - {{name: "{self.name}", host: "{self.host}", ports: [{ports}], protocol: "{self.protocol}"{lat}}}\n'


class ProductionConfig:
    """A validated config file (see configs/production.yaml); errors name the file, line and key."""

    @staticmethod
    def from_file(path: str) -> _config.Config:
        return _config.load(path)


@dataclasses.dataclass
class VenueMetrics:
    name: str
    latency_us: Optional[float]          # order->ack p50 when orders were seen, else TCP RTT p50
    rtt_p99_us: Optional[float]
    data_quality_score: Optional[float]  # 0-100 over the venue's feed streams (None: no feed)
    rx_packets: int
    tx_packets: int
    gaps: int
    missing: int
    orders: int
    clock: str


class LiveMetrics:
    """Venue metrics by attribute (`metrics.nyse`) or by item (`metrics["NYSE"]`)."""

    def __init__(self, venues: Dict[str, VenueMetrics]):
        self._venues = venues

    def __getattr__(self, name: str) -> VenueMetrics:
        for k, v in self._venues.items():
            if k.lower().replace("-", "_") == name.lower():
                return v
        raise AttributeError(f"no venue {name!r}; known: {sorted(self._venues)}")

    def __getitem__(self, name: str) -> VenueMetrics:
        return self._venues[name]

    def __iter__(self):
        return iter(self._venues.values())


def quality_score(streams: List[dict]) -> Optional[float]:
    """100 minus the share of messages missed, duplicated or reordered (in percent, x10 for misses)."""
    if not streams:
        return None
    msgs = sum(s["messages"] for s in streams) or 0
    bad = sum(10 * s["missing"] + s["duplicates"] + s["out_of_order"] for s in streams)
    if msgs + bad == 0:
        return 100.0
    return round(max(0.0, 100.0 * (1 - bad / (msgs + bad))), 2)


class HFTAnalyzer:
    def __init__(self, config: Optional[_config.Config] = None, performance_mode: Optional[str] = None,
                 logging_level: str = "INFO", metrics_export: Optional[str] = None):
        self.config = config
        self.performance_mode = performance_mode
        self.logging_level = logging_level
        self.metrics_export = metrics_export
        self.exchanges: List[ExchangeConfig] = []
        self.compliance: Dict[str, object] = {}
        self._probe = None
        self._live = None
        self._thread = None
        self._stop = threading.Event()
        self._key = None

    # -- configuration ---------------------------------------------------------------------------
    def add_exchange(self, exchange: ExchangeConfig) -> None:
        self.exchanges.append(exchange)

    def enable_compliance_monitoring(self, regulations=("MiFID_II",), audit_trail: bool = True,
                                     real_time_alerts: bool = True, audit_dir: Optional[str] = None,
                                     audit_key: Optional[str] = None) -> None:
        """Record the compliance settings; replay() writes the audit trail when audit_dir is given
        (HMAC key from audit_key, a 0600 file created when missing; default /etc/hftpf/audit.key)."""
        self.compliance = {"regulations": list(regulations), "audit_trail": audit_trail,
                           "real_time_alerts": real_time_alerts, "audit_dir": audit_dir, "audit_key": audit_key}

    def effective_config(self) -> _config.Config:
        """The config in force: the one given (every section, every exchange as written), plus the
        exchanges added with add_exchange() (validated like a config file's)."""
        base = self.config or _config.default()
        if not self.exchanges:
            return base
        added = _config.loads("exchanges:\n" + "".join(e.to_yaml() for e in self.exchanges),
                              "<HFTAnalyzer.add_exchange>").exchanges
        known = {e.name.lower(): e for e in base.exchanges}
        for e in added:
            if e.name.lower() in known:
                raise _config.ConfigError("<HFTAnalyzer.add_exchange>", None, "exchanges",
                                          f"exchange {e.name!r} is already in {base.source}; add another name")
        return dataclasses.replace(base, exchanges=base.exchanges + added)

    # -- live ------------------------------------------------------------------------------------
    def start_monitoring(self, interface: Optional[str] = None, netns: Optional[str] = None,
                         xdp_mode: Optional[str] = None) -> None:
        """Compile and attach the probe (root), and run the live agent in a background thread."""
        from .kernel.loader import Probe, ProbeError, pin_dir, pin_key
        from .live import LiveAgent

        cfg = self.effective_config()
        iface = interface or cfg.analyzer.network_interface
        if not iface:
            raise ProbeError("no interface: pass start_monitoring('eth0') or set hft_analyzer.network_interface")
        self._probe = Probe(cfg, iface, mode=xdp_mode or cfg.analyzer.xdp_mode, netns=netns)
        self._probe.load()
        self._probe.attach()
        self._key = pin_key(iface, netns)
        self._live = LiveAgent(cfg, self._key, pin_dir(iface, netns), control=False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._live.runtime.run_for, daemon=True, name="hftpf-analyzer",
                                        kwargs={"seconds": 0, "interval": 0.5, "stop": self._stop.is_set})
        self._thread.start()

    def get_live_metrics(self) -> LiveMetrics:
        from .kernel.status import interface_status

        if self._live is None:
            raise RuntimeError("monitoring is not running: call start_monitoring() first")
        st = interface_status(self._key)
        agent = self._live.agent_snapshot()
        out = {}
        for name, v in st["venues"].items():
            streams = [s for s in st["streams"].values() if s["venue"] == name]
            ack = ((agent.get("latency") or {}).get(name) or {}).get("order_ack_us") or {}
            orders = ((agent.get("orders") or {}).get(name) or {}).get("orders", 0)
            out[name] = VenueMetrics(
                name=name, latency_us=ack.get("p50") if ack.get("p50") is not None else v["rtt_us"]["p50"],
                rtt_p99_us=v["rtt_us"]["p99"], data_quality_score=quality_score(streams),
                rx_packets=v["rx_packets"], tx_packets=v["tx_packets"], gaps=sum(s["gaps"] for s in streams),
                missing=sum(s["missing"] for s in streams), orders=orders, clock=st["clock"])
        return LiveMetrics(out)

    def stop_monitoring(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._live is not None:
            self._live.close()
        if self._probe is not None:
            self._probe.detach()
        self._probe = self._live = self._thread = None

    def __enter__(self) -> "HFTAnalyzer":
        return self

    def __exit__(self, *exc) -> None:
        if self._probe is not None:
            self.stop_monitoring()

    # -- offline ---------------------------------------------------------------------------------
    def replay(self, path: str, mdp3_schema: Optional[str] = None) -> dict:
        """The `hftpf-agent replay --json` document for a capture (no root)."""
        from .pipeline import run_capture

        cfg = self.effective_config()
        if self.compliance.get("audit_trail") and self.compliance.get("audit_dir"):
            from .audit_cli import write_audit_from_capture

            return write_audit_from_capture(path, cfg, self.compliance["audit_dir"], self.compliance.get("audit_key"),
                                            mdp3_schema=mdp3_schema)
        return run_capture(path, cfg, mdp3_schema=mdp3_schema)
