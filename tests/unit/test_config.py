"""Unit tests for hft_packetfilter.config: YAML -> typed config, and located error messages.

Pure Python, no root. Every bad input asserts the exact file, line and key of the error.
"""
from __future__ import annotations

import ipaddress
import pathlib
import textwrap

import pytest

from hft_packetfilter import config, protocols
from hft_packetfilter.config import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[2]
FILE = "bad.yaml"


def y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def err(text: str, filename: str = FILE) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.loads(y(text), filename=filename)
    return info.value


def one_exchange(**overrides: str) -> str:
    """A valid one-exchange config (the entry starts on line 2); overrides replace whole key lines."""
    keys = {"name": "NYSE", "host": "198.51.100.10", "ports": "[4001, 9001]", "protocol": "FIX/TCP"}
    keys.update(overrides)
    lines = ["exchanges:"]
    for i, (k, v) in enumerate((k, v) for k, v in keys.items() if v is not None):
        lines.append(f"  {'-' if i == 0 else ' '} {k}: {v}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Shipped configs
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["example.yaml", "production.yaml"])
def test_shipped_configs_load(name):
    path = REPO / "configs" / name
    cfg = config.load(path)
    assert cfg.source == str(path)
    assert cfg.exchanges
    for ex in cfg.exchanges:
        assert protocols.transport_and_kind(ex.protocol) == (ex.transport, ex.stream_kind)
        assert ex.ports == tuple(sorted(set(ex.ports)))
        assert ex.line > 0


def test_example_config_contents():
    cfg = config.load(REPO / "configs" / "example.yaml")
    kinds = {ex.name: (ex.protocol, ex.stream_kind) for ex in cfg.exchanges}
    assert sorted(p for p, _ in kinds.values()) == ["FIX/TCP", "ITCH/MoldUDP64", "ITCH/MoldUDP64", "MDP3/UDP"]
    doc_ranges = [ipaddress.ip_network(n) for n in
                  ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "233.252.0.0/24")]
    for ex in cfg.exchanges:
        for h in ex.hosts:
            assert any(h.subnet_of(r) for r in doc_ranges), (ex.name, h)
            if ex.stream_kind == "market_data":
                assert h.is_multicast
    assert cfg.exchange("eqty-b").ports == (26410, 26411)


def test_production_config_contents():
    cfg = config.load(REPO / "configs" / "production.yaml")
    nyse = cfg.exchange("nyse")
    assert nyse.hosts == (ipaddress.ip_network("198.51.100.10/32"),)
    assert nyse.ports == (4001, 9001)
    assert (nyse.protocol, nyse.transport, nyse.stream_kind) == ("FIX/TCP", "tcp", "order_entry")
    assert nyse.latency_target_us == 500
    protos = {ex.protocol for ex in cfg.exchanges}
    assert {"FIX/TCP", "SoupBinTCP/OUCH", "ITCH/MoldUDP64", "MDP3/UDP", "PITCH/UDP"} <= protos
    assert all(h.is_multicast for h in cfg.exchange("CME-MDP3-ES").hosts)
    assert cfg.compliance.audit_trail and "MiFID_II" in cfg.compliance.regulations
    assert cfg.monitoring.listen == ("0.0.0.0", 9464)


# --------------------------------------------------------------------------------------------
# Bad inputs: (id, yaml, line, key, substrings of the message)
# --------------------------------------------------------------------------------------------

BAD = [
    ("yaml-syntax", "probe:\n  max_flows: 1024\n   ringbuf_kb: 64\n", 3, "", ["invalid YAML"]),
    ("yaml-unclosed-flow", one_exchange(ports="[4001, 9001"), 5, "", ["invalid YAML"]),
    ("top-level-list", "- a\n- b\n", 1, "", ["a list given", "hft_analyzer"]),
    ("unknown-top-key", "probe: {}\nhft_analyser:\n  mode: monitor\n", 2, "hft_analyser",
     ["unknown key 'hft_analyser'", "did you mean 'hft_analyzer'?", "expected one of:"]),
    ("unknown-exchange-key", one_exchange(prots="[1]"), 6, "exchanges[0].prots",
     ["unknown key 'prots'", "did you mean 'ports'?"]),
    ("unknown-key-no-suggestion", "probe:\n  zzzzzz: 1\n", 2, "probe.zzzzzz",
     ["unknown key 'zzzzzz';", "expected one of: max_flows"]),
    ("duplicate-top-key", "probe: {}\nmonitoring: {}\nprobe: {}\n", 3, "probe",
     ["duplicate key (first at line 1)"]),
    ("duplicate-exchange-key", one_exchange() + "    ports: [1]\n", 6, "exchanges[0].ports",
     ["duplicate key (first at line 4)"]),
    ("duplicate-symbol", one_exchange(symbols="{AAPL: AAPL.US, AAPL: X}"), 6, "exchanges[0].symbols.AAPL",
     ["duplicate key"]),
    ("bad-cidr", one_exchange(host="10.0.0.300/24"), 3, "exchanges[0].host",
     ["'10.0.0.300/24' is not an IP address or CIDR"]),
    ("host-name-not-address", one_exchange(host="nyse.example.com"), 3, "exchanges[0].host",
     ["is not an IP address or CIDR"]),
    ("host-bits-set", one_exchange(host="10.0.0.5/24"), 3, "exchanges[0].host",
     ["'10.0.0.5/24' has host bits set", "'10.0.0.0/24'", "'10.0.0.5/32'"]),
    ("host-bits-set-in-list", one_exchange(host=None, hosts="[10.0.0.0/24, 10.1.0.1/16]"), 5,
     "exchanges[0].hosts[1]", ["has host bits set", "'10.1.0.0/16'"]),
    ("host-and-hosts", one_exchange(hosts="[10.0.0.1]"), 2, "exchanges[0]",
     ["both 'host' and 'hosts' given", "exactly one"]),
    ("no-host", one_exchange(host=None), 2, "exchanges[0]", ["missing 'host' or 'hosts'"]),
    ("empty-hosts", one_exchange(host=None, hosts="[]"), 5, "exchanges[0].hosts", ["empty list"]),
    ("port-zero", one_exchange(ports="[4001, 0]"), 4, "exchanges[0].ports[1]",
     ["0 is not a port; expected an integer 1-65535 or a range 'P-Q'"]),
    ("port-70000", one_exchange(ports="[70000]"), 4, "exchanges[0].ports[0]",
     ["70000 is not a port; expected an integer 1-65535 or a range 'P-Q'"]),
    ("port-abc", one_exchange(ports="[abc]"), 4, "exchanges[0].ports[0]",
     ["'abc' is not a port; expected an integer 1-65535 or a range 'P-Q'"]),
    ("port-quoted-number", one_exchange(ports='["4001"]'), 4, "exchanges[0].ports[0]",
     ["'4001' is not a port", "without quotes"]),
    ("port-reversed-range", one_exchange(ports='["9000-8000"]'), 4, "exchanges[0].ports[0]",
     ["'9000-8000' is a reversed range", "P <= Q"]),
    ("port-range-too-wide", one_exchange(ports='["1-65535"]'), 4, "exchanges[0].ports[0]",
     ["covers 65535 ports", "at most 4096"]),
    ("port-range-end-out-of-range", one_exchange(ports='["65000-65536"]'), 4, "exchanges[0].ports[0]",
     ["65536 is not a port"]),
    ("port-bool", one_exchange(ports="[true]"), 4, "exchanges[0].ports[0]", ["true is a boolean"]),
    ("ports-not-a-list", one_exchange(ports="4001"), 4, "exchanges[0].ports",
     ["4001 is an integer; expected a list of ports"]),
    ("ports-on-later-line", one_exchange(ports="\n      - 4001\n      - 99999"), 6,
     "exchanges[0].ports[1]", ["99999 is not a port"]),
    ("missing-ports", one_exchange(ports=None), 2, "exchanges[0]", ["missing key 'ports'"]),
    ("unknown-protocol", one_exchange(protocol="FIX/UDP"), 5, "exchanges[0].protocol",
     ["'FIX/UDP' is not a known protocol", "did you mean 'FIX/TCP'?",
      "expected one of: " + ", ".join(protocols.names())]),
    ("unknown-protocol-layer-only", one_exchange(protocol="ITCH/UDP"), 5, "exchanges[0].protocol",
     ["did you mean 'ITCH/MoldUDP64'?"]),
    ("unknown-protocol-version", one_exchange(protocol="FIX4.4"), 5, "exchanges[0].protocol",
     ["did you mean 'FIX/TCP'?"]),
    ("protocol-not-string", one_exchange(protocol="42"), 5, "exchanges[0].protocol",
     ["42 is an integer"]),
    ("bad-stream", one_exchange(stream="orders"), 6, "exchanges[0].stream",
     ["'orders' is not a valid value", "expected one of: order_entry, market_data"]),
    ("duplicate-exchange-name",
     one_exchange() + "  - name: nyse\n    host: 198.51.100.11\n    ports: [1]\n    protocol: TCP\n",
     6, "exchanges[1].name", ["'nyse' is already used by exchanges[0] (line 2)", "case-insensitive"]),
    ("bad-exchange-name", one_exchange(name='"NY SE"'), 2, "exchanges[0].name", ["not a valid name"]),
    ("exchange-name-too-long", one_exchange(name="A" * 32), 2, "exchanges[0].name", ["not a valid name"]),
    ("string-for-int", "probe:\n  max_flows: '65536'\n", 2, "probe.max_flows",
     ["'65536' is a string; expected an integer 1024-4194304", "remove the quotes"]),
    ("bool-for-int", "probe:\n  payload_snaplen: true\n", 2, "probe.payload_snaplen",
     ["true is a boolean; expected an integer 0-1500"]),
    ("bool-for-int-yes", "compliance:\n  audit_retention_days: yes\n", 2, "compliance.audit_retention_days",
     ["yes is a boolean"]),
    ("int-for-bool", "hft_analyzer:\n  dry_run: 1\n", 2, "hft_analyzer.dry_run",
     ["1 is an integer; expected true or false"]),
    ("int-out-of-range", "probe:\n  max_flows: 100\n", 2, "probe.max_flows",
     ["100 is out of range; expected an integer 1024-4194304"]),
    ("latency-not-positive", one_exchange(latency_target_us="0"), 6, "exchanges[0].latency_target_us",
     ["0 is out of range"]),
    ("bad-enum", "hft_analyzer:\n  log_level: INFO\n  mode: enforced\n", 3, "hft_analyzer.mode",
     ["'enforced' is not a valid value", "did you mean 'enforce'?", "expected one of: monitor, enforce"]),
    ("list-for-enum", "hft_analyzer:\n  mode: [monitor]\n", 2, "hft_analyzer.mode",
     ["a list given; expected one of: monitor, enforce"]),
    ("bad-xdp-mode", "hft_analyzer:\n  xdp_mode: offload\n", 2, "hft_analyzer.xdp_mode",
     ["expected one of: native, generic"]),
    ("bad-ifname-slash", "hft_analyzer:\n  network_interface: eth0/1\n", 2, "hft_analyzer.network_interface",
     ["'eth0/1' is not a valid interface name", "1-15 characters"]),
    ("bad-ifname-long", "hft_analyzer:\n  network_interface: abcdefghijklmnop\n", 2,
     "hft_analyzer.network_interface", ["not a valid interface name"]),
    ("bad-ifname-colon", "hft_analyzer:\n  network_interface: 'eth0:1'\n", 2,
     "hft_analyzer.network_interface", ["not a valid interface name"]),
    ("ringbuf-not-power-of-two", "probe:\n  ringbuf_kb: 3000\n", 2, "probe.ringbuf_kb",
     ["3000 is not a power of two", "e.g. 2048 or 4096"]),
    ("ringbuf-too-small", "probe:\n  ringbuf_kb: 32\n", 2, "probe.ringbuf_kb", ["out of range"]),
    ("section-not-mapping", "probe: [1, 2]\n", 1, "probe", ["a list given; expected a mapping"]),
    ("exchanges-not-list", "exchanges: {name: x}\n", 1, "exchanges", ["a mapping given; expected a list"]),
    ("symbol-bool-key", one_exchange(symbols="\n      ON: ON.US"), 7, "exchanges[0].symbols",
     ["key 'ON' is a boolean", "quote it"]),
    ("symbol-value-not-string", one_exchange(symbols="{ES: 5}"), 6, "exchanges[0].symbols.ES",
     ["5 is an integer"]),
    ("metrics-listen-no-port", "monitoring:\n  metrics_listen: localhost\n", 2, "monitoring.metrics_listen",
     ["no port"]),
    ("metrics-listen-bad-port", "monitoring:\n  metrics_listen: '127.0.0.1:70000'\n", 2,
     "monitoring.metrics_listen", ["'70000' is not a port"]),
    ("metrics-listen-v6-no-brackets", "monitoring:\n  metrics_listen: '::1:9464'\n", 2,
     "monitoring.metrics_listen", ["need brackets"]),
    ("interval-zero", "monitoring:\n  interval_s: 0\n", 2, "monitoring.interval_s", ["expected a number of seconds > 0"]),
    ("dashboard-port", "monitoring:\n  dashboard_port: 0\n", 2, "monitoring.dashboard_port", ["out of range"]),
    ("metrics-export", "monitoring:\n  metrics_export: statsd\n", 2, "monitoring.metrics_export",
     ["expected one of: prometheus, none"]),
    ("bad-regulation", "compliance:\n  regulations: [MiFID_II, MIFID2]\n", 2, "compliance.regulations[1]",
     ["'MIFID2' is not a valid value", "did you mean 'MiFID_II'?"]),
    ("bad-timezone", one_exchange(timezone="America/Nowhere"), 6, "exchanges[0].timezone",
     ["'America/Nowhere' is not a known time zone"]),
    ("python-tag-refused", "probe: !!python/object/apply:os.system ['true']\n", 1, "probe",
     ["expected a mapping"]),
]


@pytest.mark.parametrize("text,line,key,parts", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config(text, line, key, parts):
    e = err(text)
    assert (e.file, e.line, e.key) == (FILE, line, key), str(e)
    prefix = f"{FILE}:{line}: " + (f"{key}: " if key else "")
    assert str(e) == prefix + e.message
    for part in parts:
        assert part in e.message, (part, str(e))
    assert ";" in e.message and "expected" in e.message, str(e)  # what is wrong; what is expected
    assert isinstance(e, ValueError)


def test_documented_error_example():
    text = one_exchange() + "  - name: CME\n    host: 233.252.0.1\n    ports:\n      - 70000\n    protocol: MDP3/UDP\n"
    e = err(text, filename="prod.yaml")
    assert str(e) == ("prod.yaml:9: exchanges[1].ports[0]: 70000 is not a port; "
                      "expected an integer 1-65535 or a range 'P-Q'")


def test_too_many_exchanges():
    entries = "".join(f"  - {{name: V{i}, host: 203.0.113.{i}, ports: [{1000 + i}], protocol: UDP}}\n"
                      for i in range(64))
    e = err("exchanges:\n" + entries)
    assert (e.line, e.key) == (65, "exchanges[63]")
    assert "too many exchanges (64)" in e.message and "at most 63" in e.message
    cfg = config.loads("exchanges:\n" + entries.rsplit("  - ", 1)[0])  # 63 is fine
    assert len(cfg.exchanges) == 63


def test_webhook_value_never_printed():
    secret = "hxxps://hooks.example.com/T000/SECRET-TOKEN"
    e = err(f"monitoring:\n  alert_webhook: '{secret}'\n")
    assert (e.line, e.key) == (2, "monitoring.alert_webhook")
    assert "SECRET" not in str(e)
    cfg = config.loads("monitoring:\n  alert_webhook: 'https://hooks.example.com/T000/SECRET-TOKEN'\n")
    assert cfg.monitoring.alert_webhook.endswith("SECRET-TOKEN")
    assert "SECRET" not in repr(cfg.monitoring) and "hooks.example.com" in repr(cfg.monitoring)
    for ref in ("env:HFTPF_WEBHOOK", "file:/etc/hftpf/webhook.url"):
        assert config.loads(f"monitoring:\n  alert_webhook: {ref}\n").monitoring.alert_webhook == ref
    assert err("monitoring:\n  alert_webhook: 'env:1BAD'\n").key == "monitoring.alert_webhook"
    assert err("monitoring:\n  alert_webhook: 'file:relative'\n").key == "monitoring.alert_webhook"


# --------------------------------------------------------------------------------------------
# Files: empty, syntax, missing
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path, content):
    p = tmp_path / "empty.yaml"
    p.write_text(content)
    with pytest.raises(ConfigError) as info:
        config.load(p)
    e = info.value
    assert (e.file, e.line, e.key) == (str(p), 1, "")
    assert str(e).startswith(f"{p}:1: file is empty; expected")


def test_syntax_error_in_file(tmp_path):
    p = tmp_path / "prod.yaml"
    p.write_text("hft_analyzer:\n  mode: monitor\nexchanges:\n  - name: 'NYSE\n    host: 198.51.100.10\n")
    with pytest.raises(ConfigError) as info:
        config.load(p)
    assert info.value.file == str(p)
    assert info.value.line is not None and info.value.line >= 4
    assert "invalid YAML" in str(info.value)


def test_tab_indentation_is_a_syntax_error():
    e = err("probe:\n\tmax_flows: 1024\n")
    assert (e.line, e.key) == (2, "")
    assert "invalid YAML" in e.message


def test_missing_file(tmp_path):
    p = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        config.load(p)
    e = info.value
    assert (e.file, e.line, e.key) == (str(p), None, "")
    assert str(e).startswith(f"{p}: no such file; expected")


def test_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        config.load(tmp_path)


# --------------------------------------------------------------------------------------------
# Positive cases
# --------------------------------------------------------------------------------------------

def test_defaults():
    d = config.default()
    assert d.exchanges == () and d.source == "<default>"
    assert d.analyzer == config.Analyzer()
    assert (d.analyzer.performance_mode, d.analyzer.xdp_mode, d.analyzer.mode, d.analyzer.dry_run,
            d.analyzer.log_level, d.analyzer.network_interface, d.analyzer.rules_file) == (
        "balanced", "native", "monitor", False, "INFO", None, None)
    assert (d.probe.max_flows, d.probe.ringbuf_kb, d.probe.payload_snaplen, d.probe.rtt_samples) == (
        65536, 4096, 256, True)
    assert (d.monitoring.metrics_export, d.monitoring.metrics_listen, d.monitoring.dashboard_port,
            d.monitoring.alert_webhook, d.monitoring.interval_s) == ("prometheus", "127.0.0.1:9464", None, None, 1.0)
    assert (d.compliance.regulations, d.compliance.audit_trail, d.compliance.audit_dir,
            d.compliance.audit_retention_days, d.compliance.clock_max_offset_us) == (
        (), False, "/var/lib/hftpf/audit", 2555, 100)


def test_sections_present_but_empty_take_defaults():
    cfg = config.loads("hft_analyzer:\nprobe: {}\nexchanges: []\nmonitoring:\ncompliance:\n")
    assert cfg == config.Config(source="<string>")
    assert config.loads("exchanges:\n").exchanges == ()


def test_frozen():
    cfg = config.default()
    with pytest.raises(Exception):
        cfg.probe.max_flows = 1  # type: ignore[misc]


def test_exchange_fields_and_lookup():
    cfg = config.loads(one_exchange(latency_target_us="500", session='"HFT1/NYSE"',
                                    symbols="{AAPL: AAPL.US, 'ON': ON.US}"))
    ex = cfg.exchange("nYsE")
    assert ex == cfg.exchanges[0]
    assert ex.name == "NYSE" and ex.line == 2
    assert ex.hosts == (ipaddress.IPv4Network("198.51.100.10/32"),)
    assert ex.ports == (4001, 9001)
    assert (ex.protocol, ex.transport, ex.stream_kind) == ("FIX/TCP", "tcp", "order_entry")
    assert ex.latency_target_us == 500 and ex.session == "HFT1/NYSE"
    assert ex.symbols == {"AAPL": "AAPL.US", "ON": "ON.US"}
    with pytest.raises(KeyError) as info:
        cfg.exchange("CME")
    assert "unknown exchange 'CME'" in str(info.value) and "NYSE" in str(info.value)


def test_ipv6_host():
    cfg = config.loads(one_exchange(host="2001:db8::10"))
    assert cfg.exchanges[0].hosts == (ipaddress.IPv6Network("2001:db8::10/128"),)
    cfg = config.loads(one_exchange(host="'2001:db8:1::/48'"))
    assert cfg.exchanges[0].hosts == (ipaddress.IPv6Network("2001:db8:1::/48"),)
    assert err(one_exchange(host="'2001:db8::1/48'")).key == "exchanges[0].host"


def test_hosts_list():
    cfg = config.loads(one_exchange(host=None, hosts="[198.51.100.10, 198.51.100.10, 233.252.0.0/24, '2001:db8::1']"))
    assert cfg.exchanges[0].hosts == (
        ipaddress.ip_network("198.51.100.10/32"), ipaddress.ip_network("233.252.0.0/24"),
        ipaddress.ip_network("2001:db8::1/128"))


def test_port_ranges_expanded_sorted_unique():
    cfg = config.loads(one_exchange(ports="[9003, '9000-9002', 9001, 80, '443-443', ' 5000 - 5001 ', 4000-4001]"))
    assert cfg.exchanges[0].ports == (80, 443, 4000, 4001, 5000, 5001, 9000, 9001, 9002, 9003)
    cfg = config.loads(one_exchange(ports='["1-4096"]'))
    assert len(cfg.exchanges[0].ports) == 4096


def test_stream_override_and_protocol_case():
    cfg = config.loads(one_exchange(protocol="pillar/udp", stream="order_entry"))
    ex = cfg.exchanges[0]
    assert (ex.protocol, ex.transport, ex.stream_kind) == ("XDP/UDP", "udp", "order_entry")
    cfg = config.loads(one_exchange(protocol="itch/moldudp64"))
    assert cfg.exchanges[0].protocol == "ITCH/MoldUDP64"
    assert cfg.exchanges[0].stream_kind == "market_data"


def test_enums_case_insensitive_canonicalised():
    cfg = config.loads("hft_analyzer:\n  mode: Enforce\n  log_level: debug\n  xdp_mode: GENERIC\n"
                       "compliance:\n  regulations: [mifid_ii, CAT, CAT]\n")
    assert (cfg.analyzer.mode, cfg.analyzer.log_level, cfg.analyzer.xdp_mode) == ("enforce", "DEBUG", "generic")
    assert cfg.compliance.regulations == ("MiFID_II", "CAT")


def test_full_sections():
    cfg = config.loads(y("""
        hft_analyzer:
          performance_mode: low_latency
          network_interface: ens1f0.100
          dry_run: true
          rules_file: /etc/hftpf/allow.rules
        probe:
          max_flows: 1024
          ringbuf_kb: 262144
          payload_snaplen: 0
          rtt_samples: false
        monitoring:
          metrics_export: none
          metrics_listen: '[::1]:9100'
          dashboard_port: 8080
          interval_s: 2
        compliance:
          audit_trail: true
          audit_retention_days: 1
          clock_max_offset_us: 1000
    """))
    assert cfg.analyzer.network_interface == "ens1f0.100" and cfg.analyzer.dry_run is True
    assert cfg.probe == config.Probe(1024, 262144, 0, False)
    assert cfg.monitoring.listen == ("::1", 9100)
    assert cfg.monitoring.interval_s == 2.0 and isinstance(cfg.monitoring.interval_s, float)
    assert cfg.compliance.clock_max_offset_us == 1000


def test_merge_keys():
    cfg = config.loads(y("""
        exchanges:
          - &base {name: A, host: 233.252.0.1, ports: [1000], protocol: MDP3/UDP, latency_target_us: 80}
          - <<: *base
            name: B
            host: 233.252.0.2
    """))
    a, b = cfg.exchanges
    assert (b.name, b.hosts[0], b.ports, b.protocol, b.latency_target_us, b.line) == (
        "B", ipaddress.ip_network("233.252.0.2/32"), (1000,), "MDP3/UDP", 80, 3)


def test_probe_cflags():
    flags = config.Probe(max_flows=2048, ringbuf_kb=64, payload_snaplen=128, rtt_samples=False,
                         max_rules=1024, max_allow_prefixes=512).cflags(page_size=4096)
    assert flags == ["-DHFTPF_MAX_FLOWS=2048", "-DHFTPF_RINGBUF_BYTES=65536", "-DHFTPF_RINGBUF_PAGES=16",
                     "-DHFTPF_PAYLOAD_SNAPLEN=128", "-DHFTPF_RTT_SAMPLES=0", "-DHFTPF_MAX_RULES=1024",
                     "-DHFTPF_MAX_ALLOW_PREFIXES=512"]
    assert "-DHFTPF_RINGBUF_PAGES=1" in config.Probe(ringbuf_kb=64).cflags(page_size=65536)


def test_load_accepts_str_path():
    path = str(REPO / "configs" / "example.yaml")
    assert config.load(path).source == path


def test_timezone_default_for_itch_and_override():
    itch = one_exchange(name="NASDAQ", host="233.54.12.111", ports="[26477]", protocol="ITCH/MoldUDP64")
    assert config.loads(y(itch)).exchanges[0].timezone == "America/New_York"
    assert config.loads(y(one_exchange())).exchanges[0].timezone is None  # FIX: no time-of-day stamps
    eu = one_exchange(protocol="ITCH/MoldUDP64", timezone="Europe/Stockholm")
    assert config.loads(y(eu)).exchanges[0].timezone == "Europe/Stockholm"


@pytest.mark.parametrize("utc,tz,midnight_utc", [
    ("2024-07-01T12:00:00", "America/New_York", "2024-07-01T04:00:00"),   # EDT, UTC-4
    ("2024-01-15T03:59:59", "America/New_York", "2024-01-14T05:00:00"),   # EST, before local midnight
    ("2024-01-15T05:00:00", "America/New_York", "2024-01-15T05:00:00"),   # exactly local midnight
    ("2024-03-10T12:00:00", "America/New_York", "2024-03-10T05:00:00"),   # DST starts 02:00 that day
    ("2024-11-03T23:00:00", "America/New_York", "2024-11-03T04:00:00"),   # DST ended 02:00 that day
    ("2024-07-01T23:30:00", "Europe/Stockholm", "2024-07-01T22:00:00"),   # already the next local day
])
def test_local_midnight(utc, tz, midnight_utc):
    import datetime

    from hft_packetfilter.kernel.probemaps import local_midnight_utc_ns

    def ns(t):
        return int(datetime.datetime.fromisoformat(t).replace(tzinfo=datetime.timezone.utc).timestamp()) * 10**9

    assert local_midnight_utc_ns(tz, ns(utc) + 123) == ns(midnight_utc)
