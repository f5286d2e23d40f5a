"""Allow-list rules without the kernel: parsing, the rules file, and compilation order."""
import ipaddress
import os
import threading

import pytest

from hft_packetfilter import abi, allowlist as al, config


@pytest.mark.parametrize("bad,msg", [
    ("10.0.0.300", "not an IPv4/IPv6 address"),
    ("10.0.0.5/24", "did you mean 10.0.0.0/24"),
    ("2001:db8::1/33", "did you mean 2001:db8::/33"),
])
def test_bad_cidr(bad, msg):
    with pytest.raises(al.RuleError, match=msg):
        al.parse_cidr(bad)


@pytest.mark.parametrize("bad,msg", [("0", "out of range"), ("65536", "out of range"), ("9000-8000", "reversed"),
                                     ("abc", "not a number")])
def test_bad_ports(bad, msg):
    with pytest.raises(al.RuleError, match=msg):
        al.parse_ports(bad)


def test_ports_forms():
    assert al.parse_ports("any") is None
    assert al.parse_ports("9001") == (9001, 9001)
    assert al.parse_ports("26400-26410") == (26400, 26410)


def test_duplicate_rule_refused_and_ids_increase():
    rs = al.RuleSet()
    a = rs.add("allow", "203.0.113.0/24", "tcp", "9001")
    b = rs.add("allow", "203.0.113.0/24", "udp", "9001")
    assert (a.id, b.id) == (64, 65)
    with pytest.raises(al.RuleError, match="duplicate rule"):
        rs.add("allow", "203.0.113.0/24", "tcp", "9001")
    with pytest.raises(al.RuleError, match="reserved"):
        rs.add("allow", "10.0.0.0/8", rule_id=5)


def test_yaml_round_trip_is_exact():
    rs = al.RuleSet()
    rs.add("allow", "203.0.113.0/24", "tcp", "9001", venue="NYSE", comment="gateways")
    rs.add("deny", "203.0.113.66/32")
    rs.add("allow", "2001:db8::/32", "any", "26400-26410")
    rs.protect.append(("udp", (30001, 30010)))
    text = rs.to_yaml()
    again = al.RuleSet.from_yaml(text)
    assert again.to_yaml() == text
    assert [r.to_dict() for r in again.rules] == [r.to_dict() for r in rs.rules]


@pytest.mark.parametrize("text,where", [
    ("rules:\n  - {action: allow, src: 10.0.0.0/33}\n", "f.yaml:2: rules[0]"),
    ("rules:\n  - {action: permit, src: 10.0.0.0/8}\n", "f.yaml:2"),
    ("rules:\n  - {action: allow}\n", "'src' is required"),
    ("rules:\n  - {action: allow, src: 10.0.0.0/8, colour: red}\n", "unknown key"),
    ("rulez: []\n", "f.yaml:1: unknown key 'rulez'"),
    ("protect: [icmp/1]\n", "f.yaml:1: protect entry"),
    ("rules: [\n", "not valid YAML"),
])
def test_bad_rules_file_says_where(text, where):
    with pytest.raises(al.RuleError, match=where.replace("[", r"\[").replace("]", r"\]")):
        al.RuleSet.from_yaml(text, "f.yaml")


def test_atomic_save_and_lock(tmp_path):
    path = str(tmp_path / "allow.yaml")
    errors = []

    def writer(i):
        try:
            with al.locked(path):
                rs = al.load_file(path)
                rs.add("allow", f"10.{i}.0.0/16")
                al.save_file(path, rs)
        except Exception as e:  # pragma: no cover - would fail the test
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(al.load_file(path).rules) == 20  # no lost update
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_compile_orders_specific_first_deny_first():
    rs = al.RuleSet()
    wide = rs.add("allow", "10.0.0.0/8", "tcp", "9001")
    mid_allow = rs.add("allow", "10.1.0.0/16", "any", None)
    mid_deny = rs.add("deny", "10.1.0.0/16", "udp", None)
    host = rs.add("deny", "10.1.2.3/32", "tcp", "9001")
    out = al.compile_rules(rs.rules)
    ids = [e[4] for e in out[ipaddress.ip_network("10.1.2.3/32")]]
    assert ids == [host.id, mid_deny.id, mid_allow.id, wide.id]
    assert al.decide(out, "10.1.2.3", "tcp", 9001) == ("deny", host.id)
    assert al.decide(out, "10.1.2.3", "tcp", 9002) == ("allow", mid_allow.id)
    assert al.decide(out, "10.1.2.3", "udp", 9001) == ("deny", mid_deny.id)
    assert al.decide(out, "10.9.9.9", "tcp", 9001) == ("allow", wide.id)
    assert al.decide(out, "11.0.0.1", "tcp", 9001) == ("unknown", None)


def test_too_many_overlapping_rules_is_a_clear_error():
    rs = al.RuleSet()
    for p in range(1, 18):
        rs.add("allow", "10.0.0.0/8", "tcp", str(p))
    with pytest.raises(al.RuleError, match="at most 16"):
        al.compile_rules(rs.rules)


def test_venue_rules_and_protection_skip_multicast():
    cfg = config.loads("""
exchanges:
  - {name: GW, host: 192.0.2.1, ports: [9001, 9002, 9005], protocol: FIX/TCP}
  - {name: FEED, host: 233.252.0.1, ports: [30001], protocol: PITCH/UDP}
""")
    rules = al.venue_rules(cfg.exchanges)
    assert [(r.id, r.ports, r.label) for r in rules] == [(1, (9001, 9002), "venue:GW"), (1, (9005, 9005), "venue:GW")]
    prot = al.protected_ports(cfg.exchanges, [("udp", (30001, 30001))])
    assert set(prot) == {abi.port_index(abi.Transport.TCP, p) for p in (9001, 9002, 9005)} | \
        {abi.port_index(abi.Transport.UDP, 30001)}
