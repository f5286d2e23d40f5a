"""Connection-setup records (SYN flood and port-scan input) under BPF_PROG_TEST_RUN (root): every
inbound SYN is reported with its verdict, a pure ACK or RST only when it ends a handshake the probe
saw start, and reporting never changes a verdict."""
import pytest

from frames import tcp4, udp4
from hft_packetfilter import abi, allowlist as al, config

XDP_DROP, XDP_PASS = 1, 2
SYN, ACK, RST, PSH = 0x02, 0x10, 0x04, 0x08
CFG = "exchanges:\n  - {name: GW, host: 192.0.2.1, ports: [9001], protocol: FIX/TCP}\n"
ME = "192.0.2.100"


@pytest.fixture(params=["monitor", "enforce"])
def probe(request, needs_kernel):
    from hft_packetfilter.kernel.loader import Probe
    from hft_packetfilter.kernel.ringbuf import RingReader

    rs = al.RuleSet()
    rs.add("allow", "203.0.113.0/24", "tcp", "9001")
    p = Probe(config.loads(CFG), "lo", rules=rs, filter_mode=request.param)
    p.load()
    p.ring = RingReader(p.bpf.get_table(abi.MAP_EVENTS.encode()).map_fd)
    p.mode = request.param
    yield p
    p.ring.close()
    p.detach()


def conns(p):
    evs = [abi.EvConn.from_buffer_copy(buf, off) for buf, off in _records(p, abi.EventType.CONN)]
    assert all(ev.hdr.len == abi.ctypes.sizeof(abi.EvConn) for ev in evs)
    return [(abi.ConnKind(ev.kind).name, ev.sport, ev.dport, ev.tcp_flags, ev.venue, abi.Verdict(ev.verdict).name)
            for ev in evs]


def _records(p, etype):
    buf, offs = p.ring.drain_offsets()
    return [(buf, off) for off in offs if abi.EventHdr.from_buffer_copy(buf, off).type == etype]


def run(p, frame):
    return p.test_run(frame)["retval"]


def half_open(p):
    return len(list(p.maps.m[abi.MAP_HALF_OPEN].items_batch(64)))


def test_handshakes_syns_acks_and_resets(probe):
    src = "198.51.100.7"      # not on the allow-list
    assert run(probe, tcp4(src, ME, 40001, 22, flags=SYN)) == XDP_PASS              # unprotected port
    assert run(probe, tcp4(src, ME, 40001, 22, flags=SYN)) == XDP_PASS              # SYN retransmit
    assert half_open(probe) == 1
    assert run(probe, tcp4(src, ME, 40001, 22, flags=ACK)) == XDP_PASS              # completes it
    assert half_open(probe) == 0
    assert run(probe, tcp4(src, ME, 40001, 22, flags=ACK)) == XDP_PASS              # untracked now: silent
    assert run(probe, tcp4(src, ME, 40002, 23, flags=SYN)) == XDP_PASS
    assert run(probe, tcp4(src, ME, 40002, 23, b"data", flags=ACK | PSH)) == XDP_PASS   # data: not a handshake end
    assert run(probe, tcp4(src, ME, 40002, 23, flags=RST | ACK)) == XDP_PASS
    assert run(probe, tcp4(src, ME, 40003, 24, flags=RST)) == XDP_PASS             # untracked RST: silent
    assert run(probe, tcp4(src, ME, 40004, 25, flags=SYN | ACK)) == XDP_PASS       # a SYN-ACK is no attempt
    assert run(probe, udp4(src, ME, 40005, 26)) == XDP_PASS
    assert conns(probe) == [("SYN", 40001, 22, SYN, 0, "PASS"), ("SYN", 40001, 22, SYN, 0, "PASS"),
                            ("ESTABLISHED", 40001, 22, ACK, 0, "PASS"), ("SYN", 40002, 23, SYN, 0, "PASS"),
                            ("RESET", 40002, 23, RST | ACK, 0, "PASS")]
    assert half_open(probe) == 0


def test_a_syn_to_a_protected_port_is_reported_with_its_verdict_and_the_verdict_stands(probe):
    verdict = XDP_DROP if probe.mode == "enforce" else XDP_PASS
    name = "DROP" if probe.mode == "enforce" else "PASS"
    assert run(probe, tcp4("198.51.100.7", "192.0.2.1", 40010, 9001, flags=SYN)) == verdict   # unknown source
    assert run(probe, tcp4("203.0.113.5", "192.0.2.1", 40011, 9001, flags=SYN)) == XDP_PASS  # allowed
    assert run(probe, tcp4("198.51.100.7", "192.0.2.1", 40012, 9001, b"x", flags=ACK | PSH)) == verdict
    assert conns(probe) == [("SYN", 40010, 9001, SYN, 1, name), ("SYN", 40011, 9001, SYN, 1, "PASS")]
    # a port scan: one SYN per port, each reported
    for port in range(1000, 1040):
        run(probe, tcp4("198.51.100.9", ME, 50000, port, flags=SYN))
    got = conns(probe)
    assert [c[2] for c in got] == list(range(1000, 1040)) and {c[0] for c in got} == {"SYN"}
