"""venue_tables(): the config -> kernel-map translation, checked against a direct Python model of
the matching rule (host covers src or dst AND a port equals sport or dport)."""
import ipaddress
import random

from hft_packetfilter import abi, config
from hft_packetfilter.kernel.loader import venue_tables

CFG = """
exchanges:
  - {name: WIDE, host: 10.0.0.0/8, ports: [5000], protocol: ITCH/MoldUDP64}
  - {name: NARROW, host: 10.1.0.0/16, ports: [5000, 6000], protocol: ITCH/MoldUDP64}
  - {name: HOST, host: 10.1.2.3, ports: ["7000-7002"], protocol: FIX/TCP}
  - {name: V6, host: "2001:db8::/32", ports: [5000], protocol: MDP3/UDP}
"""


def kernel_model(hosts, ports, transport, src, dst, sport, dport):
    """What the XDP program computes: LPM lookup of src and dst (longest prefix wins), port arrays."""
    def lpm(addr):
        a = ipaddress.ip_address(addr)
        best = None
        for net, mask in hosts.items():
            if net.version == a.version and a in net and (best is None or net.prefixlen > best[0].prefixlen):
                best = (net, mask)
        return best[1] if best else 0

    pm = ports.get(abi.port_index(transport, sport), 0) | ports.get(abi.port_index(transport, dport), 0)
    m = pm & (lpm(src) | lpm(dst))
    return (m & -m).bit_length() if m else 0


def direct_rule(exchanges, transport, src, dst, sport, dport):
    for vid, ex in enumerate(exchanges, 1):
        if (ex.transport == "udp") != (transport == abi.Transport.UDP):
            continue
        if not any(ipaddress.ip_address(a) in n for n in ex.hosts for a in (src, dst)
                   if ipaddress.ip_address(a).version == n.version):
            continue
        if sport in ex.ports or dport in ex.ports:
            return vid
    return 0


def test_covering_prefixes_carry_outer_bits():
    cfg = config.loads(CFG)
    hosts, ports, infos = venue_tables(cfg.exchanges)
    assert hosts[ipaddress.ip_network("10.1.0.0/16")] == 0b011
    assert hosts[ipaddress.ip_network("10.1.2.3/32")] == 0b111
    assert hosts[ipaddress.ip_network("10.0.0.0/8")] == 0b001
    assert ports[abi.port_index(abi.Transport.TCP, 7001)] == 0b100
    assert infos[4].name == b"V6" and infos[4].transport == abi.Transport.UDP


def test_random_packets_match_the_rule():
    cfg = config.loads(CFG)
    hosts, ports, _ = venue_tables(cfg.exchanges)
    rnd = random.Random(23)
    addrs = ["10.1.2.3", "10.1.9.9", "10.200.0.1", "192.0.2.1", "2001:db8::1", "2001:db9::1"]
    port_pool = [5000, 6000, 7000, 7002, 7003, 22, 443]
    for _ in range(3000):
        v6 = rnd.random() < 0.3
        pool = [a for a in addrs if (":" in a) == v6]
        src, dst = rnd.choice(pool), rnd.choice(pool)
        sport, dport = rnd.choice(port_pool), rnd.choice(port_pool)
        tr = rnd.choice([abi.Transport.TCP, abi.Transport.UDP])
        assert kernel_model(hosts, ports, tr, src, dst, sport, dport) == \
            direct_rule(cfg.exchanges, tr, src, dst, sport, dport), (tr, src, dst, sport, dport)


def test_stream_slot_keys_one_per_port_owned_by_one_tracked_venue():
    from hft_packetfilter.kernel.loader import stream_slot_keys

    cfg = config.loads("""
exchanges:
  - {name: AB, hosts: [233.252.0.1, 233.252.0.9], ports: [26400, 26401], protocol: ITCH/MoldUDP64}
  - {name: SHARE, host: 233.252.0.2, ports: [26401], protocol: ITCH/MoldUDP64}
  - {name: PFX, host: 233.252.1.0/24, ports: [26402], protocol: ITCH/MoldUDP64}
  - {name: V6, host: "ff3e::1234", ports: [14310], protocol: MDP3/UDP}
  - {name: FIX, host: 10.1.2.3, ports: [26403], protocol: FIX/TCP}
""")
    keys = stream_slot_keys(cfg.exchanges)
    got = {idx: (k.venue, k.dport, k.unit, ipaddress.IPv6Address(bytes(k.daddr))) for idx, k in keys.items()}
    assert got == {
        abi.port_index(abi.Transport.UDP, 26400): (1, 26400, 0, ipaddress.IPv6Address("::ffff:233.252.0.1")),
        abi.port_index(abi.Transport.UDP, 14310): (4, 14310, 0, ipaddress.IPv6Address("ff3e::1234")),
    }
