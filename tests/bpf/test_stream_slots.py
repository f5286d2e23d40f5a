"""Feed streams in array slots (hftpf_stream_slots) next to the hash (hftpf_streams), under
BPF_PROG_TEST_RUN (root): each stream lives in one place, readers see each once, the slot shortcut
of the venue classification agrees with the host tables, and a reconfiguration moves a stream's
state between the two without losing or doubling it."""
import pytest

from frames import moldudp64, udp4
from hft_packetfilter import abi, config

A, B, OTHER = "233.252.0.1", "233.252.0.9", "233.252.0.50"
PORT = 26400
ONE = f"""
exchanges:
  - {{name: ITCH, hosts: [{A}, {B}], ports: [{PORT}], protocol: ITCH/MoldUDP64}}
"""
# a second venue on the same port: no venue owns it alone, so no slot
SHARED = ONE + f"""  - {{name: ALT, host: {OTHER}, ports: [{PORT}], protocol: ITCH/MoldUDP64}}
"""
SRC = "192.0.2.9"


@pytest.fixture
def load(needs_kernel):
    from hft_packetfilter.kernel.loader import Probe

    probes = []

    def _load(text):
        p = Probe(config.loads(text), "lo")
        p.load()
        probes.append(p)
        return p

    yield _load
    for p in probes:
        p.detach()


def send(p, group, seq, sport=40000):
    assert p.test_run(udp4(SRC, group, sport, PORT, moldudp64(b"SESSION001", seq, 1)))["retval"] == 2


def where(p):
    """stream daddr (last octet) -> 'slot' or 'hash', failing on a stream in both places"""
    slot = {bytes(st.key.daddr)[-1] for _, st in p.maps.m[abi.MAP_STREAM_SLOTS].items_batch(abi.STREAM_SLOTS)
            if st.key.venue and st.packets}
    hashed = {bytes(k.daddr)[-1] for k, _ in p.maps.m[abi.MAP_STREAMS].items_batch(64)}
    assert not slot & hashed
    return {**{a: "slot" for a in slot}, **{a: "hash" for a in hashed}}


def streams(p):
    out = {}
    for k, st in p.maps.streams():
        assert bytes(k.daddr)[-1] not in out, "a stream reported twice"
        out[bytes(k.daddr)[-1]] = (k.venue, st.packets, st.messages, st.gaps, st.duplicates)
    return out


def venue_packets(p):
    return [c[0] for c in p.maps.counters(abi.MAP_VENUE_STATS, 3)]


def test_a_line_in_the_slot_b_line_in_the_hash(load):
    p = load(ONE)
    for seq in (1, 2, 3):
        send(p, A, seq)
        send(p, B, seq)
    send(p, B, 5)   # B alone has a gap
    assert where(p) == {1: "slot", 9: "hash"}
    assert streams(p) == {1: (1, 3, 3, 0, 0), 9: (1, 4, 4, 1, 0)}
    assert venue_packets(p)[1] == 7


def test_slot_shortcut_classifies_like_the_host_tables(load):
    p = load(ONE)
    send(p, OTHER, 1)            # the venue's port, not its host: no venue, no stream
    assert venue_packets(p) == [1, 0, 0] and streams(p) == {}
    p2 = load(SHARED)            # the port has two owners: no slot, the host tables decide
    send(p2, OTHER, 1)
    send(p2, A, 1)
    assert venue_packets(p2) == [0, 1, 1]
    assert where(p2) == {50: "hash", 1: "hash"}


def test_source_port_of_another_venue_takes_the_host_tables(load):
    p = load(ONE + f"""  - {{name: ALT, host: {SRC}, ports: [40000], protocol: ITCH/MoldUDP64}}
""")
    send(p, A, 1)                # ports name venues 1 and 2; A's host makes it venue 1 all the same
    assert venue_packets(p) == [0, 1, 0] and where(p) == {1: "slot"}


def test_reconfiguration_moves_a_stream_between_hash_and_slot(load):
    p = load(SHARED)
    send(p, A, 1)
    send(p, A, 2)
    assert where(p) == {1: "hash"}
    p.maps.apply(config.loads(ONE).exchanges, None, p.config.probe.max_rules)   # ITCH alone: a slot
    assert where(p) == {1: "slot"}
    send(p, A, 3)                # continues the sequence it had in the hash: no reset, no gap
    assert streams(p) == {1: (1, 3, 3, 0, 0)}
    p.maps.apply(config.loads(SHARED).exchanges, None, p.config.probe.max_rules)  # and back
    assert where(p) == {1: "hash"}
    send(p, A, 4)
    assert streams(p) == {1: (1, 4, 4, 0, 0)}
    assert not any(v.stream_slot for _, v in p.maps.m[abi.MAP_VENUE_PORTS].items_batch(16384))
