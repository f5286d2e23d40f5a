"""In-kernel feed sequence tracking under BPF_PROG_TEST_RUN (root): one scenario per feed header
with exact counters and gap events (read back from the ring buffer)."""
import os
import struct
import time

import pytest

from frames import mdp3, moldudp64, nyse_xdp, pitch, udp4
from hft_packetfilter import abi, config

CFG = """
exchanges:
  - {name: ITCH, host: 233.252.0.1, ports: [26400], protocol: ITCH/MoldUDP64}
  - {name: CME, host: 233.252.0.2, ports: [14310], protocol: MDP3/UDP}
  - {name: CBOE, host: 233.252.0.3, ports: [30001], protocol: PITCH/UDP}
  - {name: NYSE, host: 233.252.0.4, ports: [11100], protocol: XDP/UDP}
"""
SRC = "192.0.2.9"


@pytest.fixture
def probe(needs_kernel):
    from hft_packetfilter.kernel.loader import Probe
    from hft_packetfilter.kernel.ringbuf import RingReader

    p = Probe(config.loads(CFG), "lo")
    p.load()
    p.ring = RingReader(p.bpf.get_table(abi.MAP_EVENTS.encode()).map_fd)
    yield p
    p.ring.close()
    p.detach()


def send(p, group, port, payload):
    assert p.test_run(udp4(SRC, group, 40000, port, payload))["retval"] == 2


def stream(p, venue_id, port, unit=0):
    for k, st in p.maps.streams():
        if k.venue == venue_id and k.dport == port and k.unit == unit:
            return st
    raise AssertionError(f"no stream for venue {venue_id} port {port} unit {unit}")


def gaps(p):
    buf, offs = p.ring.drain_offsets()
    out = []
    for off in offs:
        ev = abi.EvGap.from_buffer_copy(buf, off)
        if ev.hdr.type == abi.EventType.GAP:
            out.append((ev.expected, ev.received, ev.missing))
    return out


def counters(st):
    return {f: getattr(st, f) for f in ("packets", "messages", "gaps", "missing", "duplicates", "out_of_order",
                                        "resets", "heartbeats")}


def test_moldudp64_in_order_gaps_dup_reorder_heartbeat_end(probe):
    s = b"SESSION001"
    g, port = "233.252.0.1", 26400
    send(probe, g, port, moldudp64(s, 1, 2))      # 1-2
    send(probe, g, port, moldudp64(s, 3, 1))      # 3
    send(probe, g, port, moldudp64(s, 5, 1))      # gap of 1 (4)
    send(probe, g, port, moldudp64(s, 4, 1))      # 4 arrives late: out of order
    send(probe, g, port, moldudp64(s, 3, 1))      # duplicate
    send(probe, g, port, moldudp64(s, 16, 3))     # gap of 10 (6..15) -> expect 19
    send(probe, g, port, moldudp64(s, 19, 0))     # heartbeat, in sync
    send(probe, g, port, moldudp64(s, 21, 0))     # heartbeat announcing 21: gap of 2 (19, 20)
    send(probe, g, port, moldudp64(s, 21, 0xFFFF))  # end of session
    st = stream(probe, 1, port)
    assert counters(st) == {"packets": 9, "messages": 2 + 1 + 1 + 1 + 3, "gaps": 3, "missing": 1 + 10 + 2,
                            "duplicates": 1, "out_of_order": 1, "resets": 0, "heartbeats": 3}
    assert st.flags & abi.STREAM_ENDED
    assert gaps(probe) == [(5 - 1, 5, 1), (6, 16, 10), (19, 21, 2)]
    assert st.seq_proto == abi.SeqProto.MOLDUDP64


def test_moldudp64_new_session_is_a_reset_not_a_gap(probe):
    g, port = "233.252.0.1", 26400
    send(probe, g, port, moldudp64(b"SESSION001", 100, 1))
    send(probe, g, port, moldudp64(b"SESSION002", 1, 1))
    send(probe, g, port, moldudp64(b"SESSION002", 2, 1))
    st = stream(probe, 1, port)
    assert (st.resets, st.gaps, st.duplicates, st.messages) == (1, 0, 0, 3)
    assert gaps(probe) == []


def test_mdp3_u32_wrap_and_reset_and_latency(probe):
    g, port = "233.252.0.2", 14310
    now_utc = time.time_ns()
    for seq in (0xFFFFFFFE, 0xFFFFFFFF, 0, 1 + 1):  # wraps through 0, then 2 skips 1: gap of 1
        send(probe, g, port, mdp3(seq, now_utc))
    st = stream(probe, 2, port)
    assert (st.packets, st.gaps, st.missing, st.duplicates) == (4, 1, 1, 0)
    assert gaps(probe) == [(1, 2, 1)]
    send(probe, g, port, mdp3(1, now_utc))  # MsgSeqNum 1: channel reset
    st = stream(probe, 2, port)
    assert st.resets == 1 and st.expected == 2
    # exchange-time latency: sending time a few ms ago in UTC, kernel TAI - offset -> small positive
    assert st.lat.count == 5 and st.lat_negative == 0
    assert st.lat.sum_ns / st.lat.count < 5e9


def test_pitch_units_are_separate_streams(probe):
    g, port = "233.252.0.3", 30001
    send(probe, g, port, pitch(1, 10, 2))   # unit 1: 10-11
    send(probe, g, port, pitch(2, 500, 1))  # unit 2 starts independently
    send(probe, g, port, pitch(1, 12, 1))
    send(probe, g, port, pitch(1, 14, 1))   # unit 1 gap of 1
    send(probe, g, port, pitch(1, 0, 1))    # sequence 0: unsequenced, counted only
    u1, u2 = stream(probe, 3, port, 1), stream(probe, 3, port, 2)
    assert (u1.packets, u1.messages, u1.gaps, u1.missing) == (4, 4, 1, 1)  # seq 0: a packet, not messages
    assert (u2.packets, u2.messages, u2.gaps) == (1, 1, 0)


def test_nyse_xdp_heartbeat_and_reset(probe):
    g, port = "233.252.0.4", 11100
    send(probe, g, port, nyse_xdp(1, 2))
    send(probe, g, port, nyse_xdp(3, 0, flag=1))   # heartbeat at the next expected seq
    send(probe, g, port, nyse_xdp(3, 1))
    send(probe, g, port, nyse_xdp(1, 1, flag=12))  # sequence number reset
    st = stream(probe, 4, port)
    assert (st.packets, st.messages, st.heartbeats, st.resets, st.gaps, st.duplicates) == (4, 4, 1, 1, 0, 0)


def test_truncated_feed_header_counted_not_tracked(probe):
    send(probe, "233.252.0.1", 26400, b"SHORT")
    assert not any(k.dport == 26400 for k, _ in probe.maps.streams())


def itch_msg(ts_ns: int, length: int = 12) -> bytes:
    """An ITCH 5.0 message of `length` bytes: type 'S' (system event), stock locate, tracking number,
    the 6-byte big-endian timestamp (ns since midnight), then the rest ('O' start of messages)."""
    return (b"S" + struct.pack("!HH", 0, 7) + ts_ns.to_bytes(6, "big") + b"O")[:length]


def set_midnight(p, venue_id, ns):
    vi = p.maps.m[abi.MAP_VENUE_INFO].lookup(venue_id)
    vi.midnight_ns = ns
    p.maps.m[abi.MAP_VENUE_INFO].update(venue_id, vi)


def test_itch_first_message_feed_latency(probe):
    """kernel ts - (venue midnight + the first ITCH message's timestamp), into the stream's histogram;
    heartbeats, end of session, short or cut messages and an unknown midnight give no sample."""
    from hft_packetfilter.analytics.percentiles import bucket_index

    clock_id = time.CLOCK_TAI if probe.clock == abi.Clock.TAI else time.CLOCK_MONOTONIC
    g, port, s = "233.252.0.1", 26400, b"SESSION001"
    midnight = time.clock_gettime_ns(clock_id) - 3600 * 10**9  # an hour ago: exact control of the latency
    set_midnight(probe, 1, midnight)
    seq = 1

    def send_lat(latency_ns):
        """A packet whose first message was sent latency_ns before now; returns the latency's bucket,
        checked to hold for any kernel stamp between the reads around the test run."""
        nonlocal seq
        t0 = time.clock_gettime_ns(clock_id)
        send(probe, g, port, moldudp64(s, seq, 2, [itch_msg(t0 - midnight - latency_ns), itch_msg(0)]))
        t1 = time.clock_gettime_ns(clock_id)
        seq += 2
        assert bucket_index(latency_ns) == bucket_index(latency_ns + t1 - t0), "test run too slow for the bucket"
        return bucket_index(latency_ns)

    b1 = send_lat(5_300_000)     # bucket [5.24, 6.29) ms
    b2 = send_lat(85_000_000)    # bucket [83.9, 100.7) ms
    send(probe, g, port, moldudp64(s, seq, 0))                          # heartbeat: no message
    send(probe, g, port, moldudp64(s, seq, 1, [itch_msg(10**9, 10)]))   # 10 bytes: no timestamp
    send(probe, g, port, moldudp64(s, seq + 1, 1, [itch_msg(10**9)])[:20 + 2 + 10])  # cut in the timestamp
    now = time.clock_gettime_ns(clock_id)
    send(probe, g, port, moldudp64(s, seq + 2, 1, [itch_msg(now - midnight + 10**9)]))  # 1 s ahead of us
    set_midnight(probe, 1, 0)                                             # midnight unknown
    send(probe, g, port, moldudp64(s, seq + 3, 1, [itch_msg(10**9)]))
    send(probe, g, port, moldudp64(s, seq + 4, 0xFFFF))                  # end of session
    st = stream(probe, 1, port)
    assert (st.lat.count, st.lat_negative, st.packets) == (2, 1, 8)
    assert {i: st.lat.bucket[i] for i in range(abi.HIST_BUCKETS) if st.lat.bucket[i]} == (
        {b1: 1, b2: 1} if b1 != b2 else {b1: 2})
    assert 90_300_000 <= st.lat.sum_ns < 90_300_000 + 10**9 // 100


def test_itch_midnight_is_written_at_load(probe):
    """The agent writes the venue's local midnight (config timezone, America/New_York by default for
    ITCH) in the probe clock; venues without a time-of-day feed keep 0."""
    from hft_packetfilter.kernel.probemaps import probe_midnight_ns

    vi = probe.maps.m[abi.MAP_VENUE_INFO]
    assert probe.config.exchanges[0].timezone == "America/New_York"
    assert abs(vi.lookup(1).midnight_ns - probe_midnight_ns("America/New_York", probe.clock)) < 10**6
    assert [vi.lookup(v).midnight_ns for v in (2, 3, 4)] == [0, 0, 0]
    set_midnight(probe, 1, 12345)
    assert probe.maps.refresh_midnights({1: "America/New_York"}, probe.clock) == 1
    assert probe.maps.refresh_midnights({1: "America/New_York"}, probe.clock) == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_one_stream_on_two_cpus_stays_consistent(probe):
    """In-order packets move the stream by compare-and-swap without the lock, the rest under it: with
    two CPUs taking one stream's packets in turns (races between them make gaps that the late packet
    then fills), every packet is counted once, as messages or a duplicate, and `expected` ends right."""
    import threading

    from hft_packetfilter.kernel.bpfsys import prog_test_run

    n = 20000
    frames = [udp4(SRC, "233.252.0.1", 40000, 26400, moldudp64(b"SESSION001", i, 1)) for i in range(1, n + 1)]
    nxt, lock = [0], threading.Lock()

    def worker(cpu):
        os.sched_setaffinity(0, {cpu})
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= n:
                return
            prog_test_run(probe.fn.fd, frames[i])

    cpus = sorted(os.sched_getaffinity(0))[:2]
    threads = [threading.Thread(target=worker, args=(c,)) for c in cpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    st = stream(probe, 1, 26400)
    assert (st.packets, st.messages + st.duplicates, st.expected) == (n, n, n + 1)
    # one packet in flight per CPU: each gap is one packet, which then arrives late
    assert st.missing == st.gaps and st.out_of_order <= st.missing
