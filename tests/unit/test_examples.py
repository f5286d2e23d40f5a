"""The examples in examples/ run as written (the live one in tests/netns/test_examples_live.py)."""
import runpy
from pathlib import Path

from frames import moldudp64, udp4

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    return runpy.run_path(str(ROOT / "examples" / name))


def _capture(tmp_path):
    from _pcap import write_pcap

    cap = tmp_path / "feed.pcap"
    write_pcap(cap, [udp4("198.51.100.7", "233.252.0.1", 40000, 26400, moldudp64(b"EXAMPLE001", s, 1))
                     for s in (1, 2, 5)])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("exchanges:\n  - {name: ITCH, host: 233.252.0.1, ports: [26400], protocol: ITCH/MoldUDP64}\n")
    return str(cap), str(cfg)


def test_production_setup():
    analyzer = _load("production_setup.py")["main"]([str(ROOT / "configs" / "production.yaml")])
    assert any(e.name == "NYSE" for e in analyzer.effective_config().exchanges)


def test_advanced_analytics(tmp_path, capsys):
    cap, cfg = _capture(tmp_path)
    doc = _load("advanced_analytics.py")["main"]([cap, "-c", cfg])
    assert doc["packets"] == 3
    assert "1 gaps, 2 missing" in capsys.readouterr().out


def test_compliance_reporting(tmp_path):
    cap, cfg = _capture(tmp_path)
    doc, result = _load("compliance_reporting.py")["main"]([cap, "-c", cfg, "--audit-dir", str(tmp_path / "audit"),
                                                           "--key", str(tmp_path / "audit.key")])
    assert result.ok and result.records > 0
    assert (tmp_path / "audit.key").stat().st_mode & 0o077 == 0
