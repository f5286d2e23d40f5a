"""The seed's Python API without root: configuration and offline replay."""

import pytest

from frames import moldudp64, udp4
from hft_packetfilter import ExchangeConfig, HFTAnalyzer, ProductionConfig
from hft_packetfilter.api import LiveMetrics, VenueMetrics, quality_score
from hft_packetfilter.config import ConfigError


def test_exchanges_become_a_validated_config():
    a = HFTAnalyzer()
    a.add_exchange(ExchangeConfig(name="NYSE", host="10.0.0.5", ports=[4001, 9001], protocol="FIX/TCP",
                                  latency_target_us=500))
    cfg = a.effective_config()
    (ex,) = cfg.exchanges
    assert (ex.name, ex.ports, ex.transport, ex.latency_target_us) == ("NYSE", (4001, 9001), "tcp", 500)
    a.add_exchange(ExchangeConfig(name="BAD", host="10.0.0.300", ports=[1]))
    with pytest.raises(ConfigError, match="host"):
        a.effective_config()


def test_production_config_from_file():
    from pathlib import Path

    cfg = ProductionConfig.from_file(str(Path(__file__).resolve().parents[2] / "configs" / "production.yaml"))
    assert any(e.name == "NYSE" for e in cfg.exchanges)
    a = HFTAnalyzer(config=cfg, performance_mode="ultra_low_latency", logging_level="INFO",
                    metrics_export="prometheus")
    assert a.effective_config() is cfg


def test_replay_offline(tmp_path):
    from _pcap import write_pcap

    frames = [udp4("198.51.100.7", "233.252.0.1", 40000, 26400, moldudp64(b"APISESS001", s, 1))
              for s in (1, 2, 3, 6, 7)]
    cap = tmp_path / "feed.pcap"
    write_pcap(cap, frames)
    a = HFTAnalyzer()
    a.add_exchange(ExchangeConfig(name="ITCH", host="233.252.0.1", ports=[26400], protocol="ITCH/MoldUDP64"))
    doc = a.replay(str(cap))
    assert doc["packets"] == 5
    (feed,) = doc["feeds"].values()
    assert (feed["gaps"], feed["missing"]) == (1, 2)


def test_live_metrics_by_attribute_and_quality_score():
    m = LiveMetrics({"NYSE": VenueMetrics("NYSE", 120.0, 300.0, 99.5, 10, 10, 0, 0, 3, "tai")})
    assert m.nyse.latency_us == 120.0 and m["NYSE"].data_quality_score == 99.5
    with pytest.raises(AttributeError, match="known"):
        m.nasdaq
    assert quality_score([]) is None
    assert quality_score([{"messages": 1000, "missing": 0, "duplicates": 0, "out_of_order": 0}]) == 100.0
    assert quality_score([{"messages": 990, "missing": 1, "duplicates": 0, "out_of_order": 0}]) == 99.0


def test_start_monitoring_without_interface_is_a_clear_error():
    from hft_packetfilter.kernel.loader import ProbeError

    with pytest.raises(ProbeError, match="no interface"):
        HFTAnalyzer().start_monitoring()


def test_added_exchanges_keep_every_section_and_exchange_of_the_given_config():
    from hft_packetfilter import config as C

    cfg = C.loads("hft_analyzer: {network_interface: eth9, mode: enforce}\n"
                  "probe: {payload_snaplen: 512}\n"
                  "exchanges:\n"
                  "  - {name: EQ, hosts: [233.252.0.1, 233.252.0.2], ports: [26400], protocol: ITCH/MoldUDP64,\n"
                  "     symbols: {AAPL: AAPL.US}, payloads: true}\n"
                  "monitoring: {metrics_listen: '127.0.0.1:9999'}\n"
                  "compliance: {audit_trail: true, audit_dir: /tmp/x, clock_max_offset_us: 50}\n", "base.yaml")
    a = HFTAnalyzer(config=cfg)
    a.add_exchange(ExchangeConfig(name="NYSE", host="10.0.0.5", ports=[4001], protocol="FIX/TCP"))
    eff = a.effective_config()
    assert [e.name for e in eff.exchanges] == ["EQ", "NYSE"]
    eq = eff.exchanges[0]
    assert len(eq.hosts) == 2 and eq.symbols == {"AAPL": "AAPL.US"} and eq.payloads
    assert eff.analyzer.network_interface == "eth9" and eff.analyzer.mode == "enforce"
    assert eff.probe.payload_snaplen == 512 and eff.monitoring.metrics_listen == "127.0.0.1:9999"
    assert eff.compliance.audit_trail and eff.compliance.clock_max_offset_us == 50
    a.add_exchange(ExchangeConfig(name="eq", host="10.0.0.6", ports=[1], protocol="FIX/TCP"))
    with pytest.raises(ConfigError, match="already in base.yaml"):
        a.effective_config()
