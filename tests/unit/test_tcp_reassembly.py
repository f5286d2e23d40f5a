"""sources/tcp.py: scenario tests with known answers, a randomised exactly-once property, and the
ndpi FIX capture reassembled per direction (compared with tshark)."""
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from hft_packetfilter.sources import pcap
from hft_packetfilter.sources.events import Event
from hft_packetfilter.sources.tcp import ACK, FIN, RST, SYN, Collector, TcpReassembler

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
FIX_PCAP = CORPUS / "ndpi-fix-pcap" / "fix.pcap"

C, S = b"\x0a\0\0\x01", b"\x0a\0\0\x02"     # client, server (packed IPv4)
CP, SP = 40000, 4000
M32 = 1 << 32


class Harness:
    def __init__(self, **kw):
        self.cols = {}
        self.r = TcpReassembler(self._factory, **kw)

    def _factory(self, stream):
        c = Collector(stream)
        self.cols.setdefault(stream.key, []).append(c)
        return c

    def c2s(self, seq, data=b"", flags=ACK, ack=0, ts=0):
        self.r.segment(C, S, CP, SP, seq % M32, ack % M32, flags, data, ts)

    def s2c(self, seq, data=b"", flags=ACK, ack=0, ts=0):
        self.r.segment(S, C, SP, CP, seq % M32, ack % M32, flags, data, ts)

    def up(self, i=-1):
        return self.cols[(C, S, CP, SP)][i]

    def down(self, i=-1):
        return self.cols[(S, C, SP, CP)][i]


def test_in_order_with_handshake():
    h = Harness()
    h.c2s(1000, flags=SYN)
    h.s2c(5000, flags=SYN | ACK, ack=1001)
    h.c2s(1001, b"abc", ack=5001)
    h.c2s(1004, b"defg", ack=5001)
    h.s2c(5001, b"XY", ack=1008)
    assert h.up().chunks == [(0, b"abc"), (3, b"defg")]
    assert h.down().chunks == [(0, b"XY")]
    st = h.r.stats
    assert (st.segments, st.bytes, st.out_of_order, st.retrans_bytes, st.gaps) == (5, 9, 0, 0, 0)


def test_out_of_order_is_delivered_in_order():
    h = Harness()
    h.c2s(100, b"1111")            # mid-stream start: offset 0 = seq 100
    h.c2s(112, b"3333")
    h.c2s(108, b"2222")
    h.c2s(104, b"xxxx")
    assert h.up().data == b"1111xxxx22223333"
    assert h.r.stats.out_of_order == 2 and h.r.stats.gaps == 0


def test_retransmission_and_partial_overlap_never_deliver_twice():
    h = Harness()
    h.c2s(0, b"0123456789")
    h.c2s(0, b"0123456789")              # full retransmission
    h.c2s(5, b"56789ABCDE")              # overlaps 5 bytes
    h.c2s(20, b"KLMNO")                  # out of order ...
    h.c2s(18, b"IJKLMNOPQR")             # ... overlapped by a later, longer buffered segment
    h.c2s(15, b"FGHIJ")                  # fills the hole
    assert h.up().data == b"0123456789ABCDEFGHIJKLMNOPQR"
    assert [o for o, _ in h.up().chunks] == [0, 10, 15, 20]
    st = h.r.stats
    assert st.bytes == 28
    assert st.retrans_bytes == 10 + 5 + 2 + 5      # full, overlap, IJ re-sent, KLMNO superseded


def test_permanent_gap_reported_on_flush_with_exact_size():
    h = Harness()
    h.c2s(0, b"aaaa")
    h.c2s(14, b"bbbb")                   # bytes 4..13 never arrive
    h.c2s(18, b"cc")
    assert h.up().data == b"aaaa"
    h.r.flush()
    assert h.up().gaps == [(4, 10, "flush")]
    assert h.up().chunks == [(0, b"aaaa"), (14, b"bbbb"), (18, b"cc")]
    assert h.up().ended == "flush"
    assert (h.r.stats.gaps, h.r.stats.gap_bytes) == (1, 10)


def test_gap_proven_by_the_peers_ack():
    h = Harness()
    h.c2s(1000, flags=SYN)
    h.s2c(9000, flags=SYN | ACK, ack=1001)
    h.c2s(1001, b"hello")
    h.c2s(1016, b"world")                # 10 bytes lost by the capture, not by the network
    assert h.up().gaps == []
    h.s2c(9001, ack=1021)                # the server has everything up to 1021
    assert h.up().gaps == [(5, 10, "acked")]
    assert h.up().data == b"helloworld"
    h.c2s(1006, b"0123456789")           # a late copy is a retransmission now
    assert h.up().data == b"helloworld" and h.r.stats.retrans_bytes == 10


def test_gap_at_the_tail_is_sized_by_the_next_data():
    h = Harness()
    h.c2s(1000, flags=SYN)
    h.s2c(9000, flags=SYN | ACK, ack=1001)
    h.c2s(1001, b"ab")
    h.s2c(9001, ack=1013)                # acks 10 bytes we never saw; nothing after them yet
    assert h.up().gaps == []
    h.c2s(1013, b"cd")                   # next data: the hole is exactly 10 bytes
    assert h.up().gaps == [(2, 10, "acked")] and h.up().data == b"abcd"


def test_gap_timeout_and_overflow():
    h = Harness(gap_timeout_ns=1000)
    h.c2s(0, b"a", ts=0)
    h.c2s(5, b"b", ts=10)
    h.c2s(7, b"c", ts=900)
    assert h.up().gaps == []
    h.c2s(9, b"d", ts=2000)
    assert h.up().gaps[0] == (1, 4, "timeout")
    h2 = Harness(max_buffer=10)
    h2.c2s(0, b"x")
    h2.c2s(10, b"12345")
    h2.c2s(20, b"678901")                # 11 bytes would be buffered: over the limit
    assert h2.up().gaps == [(1, 9, "overflow")] and h2.up().data == b"x12345"
    assert h2.r.stats.overflows == 1


@pytest.mark.parametrize("isn", [M32 - 5, M32 - 1, M32 - 3000])
def test_sequence_wraparound(isn):
    h = Harness()
    h.c2s(isn, flags=SYN)
    data = bytes(range(256)) * 20
    segs = [(i, data[i:i + 100]) for i in range(0, len(data), 100)]
    order = segs[:3] + [segs[4], segs[3]] + segs[5:]
    for off, chunk in order:
        h.c2s(isn + 1 + off, chunk)
    assert h.up().data == data and h.r.stats.gaps == 0
    assert h.up().chunks[-1][0] == segs[-1][0]        # offsets keep growing past 2^32


def test_mid_stream_start_ignores_earlier_bytes():
    h = Harness()
    h.c2s(123456, b"second")
    h.c2s(123450, b"first!")            # before the first byte we saw: not part of the stream
    h.c2s(123462, b"third")
    assert h.up().data == b"secondthird" and h.up().chunks[0][0] == 0
    assert h.r.stats.retrans_bytes == 6


def test_fin_ends_after_the_hole_fills_and_rst_ends_both():
    h = Harness()
    h.c2s(0, b"aa")
    h.c2s(4, b"cc", flags=ACK | FIN)
    assert h.up().ended is None
    h.c2s(2, b"bb")
    assert h.up().data == b"aabbcc" and h.up().ended == "fin"
    h.c2s(4, b"cc", flags=ACK | FIN)       # retransmitted FIN after the end
    assert h.up().data == b"aabbcc" and h.r.stats.retrans_bytes == 2
    h2 = Harness()
    h2.c2s(0, b"x")
    h2.s2c(0, b"y")
    h2.s2c(1, flags=RST)
    assert h2.up().ended == "rst" and h2.down().ended == "rst"


def test_syn_with_a_new_isn_starts_a_new_stream():
    h = Harness()
    h.c2s(100, flags=SYN)
    h.c2s(101, b"old")
    h.c2s(7000, flags=SYN)
    h.c2s(7001, b"new")
    assert h.up(0).data == b"old" and h.up(0).ended == "reused"
    assert h.up(1).data == b"new" and h.up(1).chunks[0][0] == 0


def test_idle_and_max_flow_eviction():
    h = Harness(idle_timeout_ns=1000, max_flows=2)
    h.c2s(0, b"a", ts=0)
    h.r.segment(C, S, 1, 2, 0, 0, ACK, b"b", 10)
    h.r.segment(C, S, 3, 4, 0, 0, ACK, b"c", 20)         # third flow: evicts the least recent
    assert h.up().ended == "evicted" and h.r.stats.evictions == 1 and len(h.r) == 2
    h.r.segment(C, S, 5, 6, 0, 0, ACK, b"d", 5000)        # everything else is idle by now
    assert len(h.r) == 1 and h.r.stats.evictions == 3
    assert all(c[-1].ended in ("evicted", "idle") for k, c in h.cols.items() if k[2] != 5)


def test_event_feed_sets_stream_offset():
    r = TcpReassembler()
    evs = [Event(0, "pcap", 4, C, S, CP, SP, "tcp", p, seq, 0, ACK) for seq, p in
           [(10, b"abc"), (16, b"ghi"), (13, b"def")]]
    for ev in evs:
        r.feed(ev)
    assert [e.stream_offset for e in evs] == [0, 6, 3] and r.stats.bytes == 9


def test_random_segmentation_is_exactly_once():
    rnd = random.Random(11)
    for trial in range(60):
        data = rnd.randbytes(rnd.randint(1, 5000))
        isn = rnd.randrange(M32)
        segs = []
        pos = 0
        while pos < len(data):
            n = rnd.randint(1, 300)
            segs.append((pos, data[pos:pos + n]))
            pos += n
        extra = []
        for _ in range(rnd.randint(0, 10)):          # duplicates and overlapping re-sends
            a = rnd.randrange(len(data))
            extra.append((a, data[a:a + rnd.randint(1, 400)]))
        allsegs = segs + extra
        rnd.shuffle(allsegs)
        h = Harness(gap_timeout_ns=0)
        h.c2s(isn, flags=SYN)
        for off, chunk in allsegs:
            h.c2s(isn + 1 + off, chunk)
        got = h.up()
        assert got.data == data, trial
        offs = [o for o, _ in got.chunks]
        assert offs == sorted(offs) and got.gaps == []
        assert h.r.stats.bytes == len(data)


@pytest.mark.skipif(not FIX_PCAP.exists(), reason=f"corpus capture {FIX_PCAP} is absent")
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not on PATH")
def test_ndpi_fix_capture_reassembles_to_tsharks_fix_messages():
    """Wireshark dissects 596 frames of this capture as "fix", but most of them are the binary
    look-alike ("8=O\\x01...") shown as continuation data; the real FIX messages are the ones with a
    BeginString: tshark's count of fix.BeginString values is the meaningful number to match. (The
    capture also holds 33 "8=FIXCOMP" compressed messages that Wireshark does not dissect.)
    Our per-direction streams must hold exactly that many "8=FIX." starts, every payload byte once
    (tshark's sum of tcp.len) and no gap."""
    out = subprocess.run(["tshark", "-r", str(FIX_PCAP), "-T", "fields", "-e", "fix.BeginString",
                          "-e", "tcp.len"], capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    tshark_fix = sum(len([v for v in r[0].split(",") if v.startswith("FIX.")]) for r in rows)
    tshark_bytes = sum(int(r[1] or 0) for r in rows)
    assert tshark_fix == 34

    cols = []
    r = TcpReassembler(lambda s: cols.append(Collector(s)) or cols[-1])
    for ev in pcap.read_events(FIX_PCAP):
        r.feed(ev)
    r.flush()
    streams = [c.data for c in cols]
    assert sum(s.count(b"8=FIX.") for s in streams) == tshark_fix
    assert sum(s.count(b"8=FIXCOMP") for s in streams) == 33
    assert r.stats.bytes == tshark_bytes and r.stats.gaps == 0 and r.stats.retrans_bytes == 0
    assert r.stats.flows == 12 and len(cols) == 24
