"""RingReader's record walk on synthetic rings (no root, no BPF).

scan() is fed hand-built headers (committed, DISCARD, BUSY, a corrupt length); RingReader itself runs
over a regular file laid out like the kernel's mapping (consumer page, producer page, the data area
written twice, as the kernel's double mapping shows it), so wrap-around, BUSY stops and the
consumer-position store are checked byte for byte."""
import mmap
import os
import struct
import tempfile

import pytest

from hft_packetfilter.kernel.ringbuf import (BUSY, DISCARD, PAGE_SIZE, RingBufError, RingReader, scan,
                                             scan_offsets)


def rec(payload: bytes, flags: int = 0) -> bytes:
    """One record as the kernel lays it out: header, sample, padding to 8."""
    body = struct.pack("<II", len(payload) | flags, 0) + payload
    return body + bytes(-len(body) % 8)


def words(b: bytes) -> memoryview:
    return memoryview(bytearray(b + bytes(-len(b) % 8))).cast("I")


def test_scan_committed_discarded_busy():
    data = rec(b"A" * 5) + rec(b"B" * 16, DISCARD) + rec(b"C" * 9) + rec(b"D" * 3, BUSY) + rec(b"E" * 8)
    w = words(data)
    used, recs, ndisc, busy = scan(w, len(data))
    assert busy and ndisc == 1
    assert recs == [(8, 5), (16 + 24 + 8, 9)]
    assert used == 16 + 24 + 24  # everything before the BUSY record, which stays for the next drain
    assert bytes(data[48:57]) == b"C" * 9


def test_scan_offsets_matches_scan():
    data = rec(b"A" * 5) + rec(b"B" * 16, DISCARD) + rec(b"C" * 9) + rec(b"D" * 3, BUSY) + rec(b"E" * 8)
    used, recs, ndisc, busy = scan(words(data), len(data))
    assert scan_offsets(words(data), len(data)) == (used, [o for o, _ in recs], ndisc, busy)
    with pytest.raises(RingBufError):
        scan_offsets(words(struct.pack("<II", 1000, 0) + bytes(24)), 32)


def test_scan_busy_first_consumes_nothing():
    data = rec(b"x" * 8, BUSY) + rec(b"y" * 8)
    assert scan(words(data), len(data)) == (0, [], 0, True)


def test_scan_busy_and_discard_both_set_is_busy():
    data = rec(b"x" * 8, BUSY | DISCARD)
    assert scan(words(data), len(data))[3] is True


def test_scan_stops_at_producer_position():
    data = rec(b"a" * 8) + rec(b"b" * 8)
    # only the first record is below the producer position; the second's header is not looked at
    assert scan(words(data + bytes(8)), 16) == (16, [(8, 8)], 0, False)


def test_scan_limit_counts_delivered_records_only():
    data = rec(b"a") + rec(b"b", DISCARD) + rec(b"c") + rec(b"d")
    used, recs, ndisc, busy = scan(words(data), len(data), limit=2)
    assert [n for _, n in recs] == [1, 1] and ndisc == 1 and used == 48 and not busy


def test_scan_zero_length_and_exact_multiple_of_eight():
    data = rec(b"") + rec(b"12345678")
    assert scan(words(data), len(data)) == (24, [(8, 0), (16, 8)], 0, False)


def test_scan_corrupt_length_raises():
    data = struct.pack("<II", 1000, 0) + bytes(24)
    with pytest.raises(RingBufError):
        scan(words(data), len(data))


def test_scan_large_length_bits():
    # length uses bits 0..29; bit 30/31 are flags, never part of the length
    data = struct.pack("<II", (1 << 29) | DISCARD, 0)
    with pytest.raises(RingBufError):
        scan(words(data), 8)  # 512 MiB discarded record cannot fit in 8 bytes: corrupt


class FakeRing:
    """A file with the kernel's layout: page 0 consumer_pos, page 1 producer_pos, data twice."""

    def __init__(self, size: int):
        self.size = size
        self.f = tempfile.TemporaryFile()
        self.f.truncate(2 * PAGE_SIZE + 2 * size)
        self.mm = mmap.mmap(self.f.fileno(), 2 * PAGE_SIZE + 2 * size)
        self.prod = 0

    @property
    def cons(self) -> int:
        return struct.unpack_from("<Q", self.mm, 0)[0]

    def _write_data(self, pos: int, b: bytes) -> None:
        for i, byte in enumerate(b):  # both copies, as the double mapping shows the same page twice
            p = (pos + i) % self.size
            self.mm[2 * PAGE_SIZE + p] = byte
            self.mm[2 * PAGE_SIZE + self.size + p] = byte

    def produce(self, payload: bytes, flags: int = 0) -> int:
        r = rec(payload, flags)
        assert self.prod + len(r) - self.cons <= self.size - 8, "fake ring full"
        at = self.prod
        self._write_data(at, r)
        self.prod += len(r)
        struct.pack_into("<Q", self.mm, PAGE_SIZE, self.prod)
        return at

    def set_flags(self, at: int, payload_len: int, flags: int) -> None:
        self._write_data(at, struct.pack("<I", payload_len | flags))

    def reader(self) -> RingReader:
        return RingReader(self.f.fileno(), size=self.size)

    def close(self):
        self.mm.close()
        self.f.close()


@pytest.fixture
def ring():
    r = FakeRing(PAGE_SIZE)
    yield r
    r.close()


def test_reader_drains_and_stores_consumer_position(ring):
    with ring.reader() as rd:
        assert rd.drain() == (b"", [])
        ring.produce(b"hello")
        ring.produce(b"gone", DISCARD)
        ring.produce(b"world!!!!")
        assert rd.pending() == 16 + 16 + 24
        buf, recs = rd.drain()
        assert [bytes(buf[o:o + n]) for o, n in recs] == [b"hello", b"world!!!!"]
        assert ring.cons == rd.pos == rd.consumed == 56
        assert (rd.records, rd.discarded, rd.batches) == (2, 1, 1)
        assert rd.drain() == (b"", [])


def test_reader_starts_at_existing_consumer_position(ring):
    with ring.reader() as rd:
        ring.produce(b"one")
        rd.drain()
    ring.produce(b"two")
    with ring.reader() as rd2:  # a restarted agent continues where the last consumer stopped
        assert rd2.pos == 16
        buf, recs = rd2.drain()
        assert [bytes(buf[o:o + n]) for o, n in recs] == [b"two"]


def test_reader_busy_stop_then_commit(ring):
    with ring.reader() as rd:
        ring.produce(b"first")
        at = ring.produce(b"pending!", BUSY)
        ring.produce(b"third")  # committed, but behind a BUSY record: must wait
        buf, recs = rd.drain()
        assert [bytes(buf[o:o + n]) for o, n in recs] == [b"first"] and rd.busy_stops == 1
        assert ring.cons == 16 and rd.pending() == 16 + 16
        assert rd.drain() == (b"", [])  # still busy: nothing consumed
        ring.set_flags(at, 8, 0)        # the producer commits
        buf, recs = rd.drain()
        assert [bytes(buf[o:o + n]) for o, n in recs] == [b"pending!", b"third"]
        assert ring.cons == ring.prod


def test_reader_busy_then_discarded(ring):
    with ring.reader() as rd:
        at = ring.produce(b"maybe", BUSY)
        ring.produce(b"after")
        assert rd.drain()[1] == []
        ring.set_flags(at, 5, DISCARD)
        buf, recs = rd.drain()
        assert [bytes(buf[o:o + n]) for o, n in recs] == [b"after"] and rd.discarded == 1


def test_reader_wraps_around_the_data_area(ring):
    with ring.reader() as rd:
        got, want = [], []
        k = 0
        while ring.prod < 3 * ring.size:  # three laps with odd sizes: records straddle the end
            for _ in range(5):
                p = bytes((k + j) & 0xFF for j in range(11 + k % 29))
                want.append(p)
                ring.produce(p)
                k += 1
            buf, recs = rd.drain()
            got += [bytes(buf[o:o + n]) for o, n in recs]
        assert got == want
        assert ring.cons == ring.prod == rd.pos


def test_reader_drain_offsets(ring):
    with ring.reader() as rd:
        for i in range(1, 6):
            ring.produce(struct.pack("<HH", 7, 4 + i) + bytes([i]) * i)  # records carrying their length
        ring.produce(b"zz", DISCARD)
        buf, offs = rd.drain_offsets()
        got = []
        for o in offs:
            typ, ln = struct.unpack_from("<HH", buf, o)
            got.append(bytes(buf[o + 4:o + ln]))
        assert got == [bytes([i]) * i for i in range(1, 6)]
        assert ring.cons == ring.prod and (rd.records, rd.discarded) == (5, 1)


def test_reader_max_records(ring):
    with ring.reader() as rd:
        for i in range(10):
            ring.produce(bytes([i]) * 3)
        buf, recs = rd.drain(max_records=4)
        assert [buf[o] for o, _ in recs] == [0, 1, 2, 3] and ring.cons == 64
        buf, recs = rd.drain()
        assert [buf[o] for o, _ in recs] == list(range(4, 10))


def test_reader_rejects_bad_size(ring):
    with pytest.raises(RingBufError):
        RingReader(ring.f.fileno(), size=3 * PAGE_SIZE)


def test_reader_close_is_idempotent(ring):
    rd = ring.reader()
    rd.close()
    rd.close()
    assert rd.fd == ring.f.fileno()  # the fd stays the caller's
    os.fstat(ring.f.fileno())


def test_weakly_ordered_path_runs(ring, monkeypatch):
    """The fence used on arm64 & co (release, then re-acquire a private lock) must not deadlock."""
    from hft_packetfilter.kernel import ringbuf

    monkeypatch.setattr(ringbuf, "_TSO", False)
    with ring.reader() as rd:
        for _ in range(3):
            ring.produce(b"abc")
            buf, recs = rd.drain()
            assert [bytes(buf[o:o + n]) for o, n in recs] == [b"abc"]
