"""A BPF ring buffer (BPF_MAP_TYPE_RINGBUF) consumer that mmaps the map and drains it in batches.

Why not BCC's ring_buffer_poll: it calls a Python function through ctypes for every record, which
caps a Python consumer at roughly 0.35-1.1 M records/s here, depending on the callback (issue 4
asks for >= 1 M/s per core, batched). This reader walks the
record headers in place, copies every committed record of a batch with ONE slice of the mapping and
hands the caller that bytes object plus a list of (offset, length) pairs (drain()) or of offsets
(drain_offsets(), for records that carry their own length), so a decoder runs
struct.Struct.unpack_from over one buffer and nothing is allocated per record besides its entry.
Measured by tools/bench/ringbuf.py.
It needs only the map fd (no bcc import): from BCC (`b.get_table(name).map_fd`), or from a pin.

Kernel layout (kernel/bpf/ringbuf.c, Documentation/bpf/ringbuf.rst), for a ring of `size` bytes
(max_entries: a power of two, a multiple of the page size):
  mmap offset 0,        1 page, read-write: consumer position, u64 at offset 0 (written by us)
  mmap offset 1 page,   1 page, read-only:  producer position, u64 at offset 0 (written by the kernel)
  mmap offset 2 pages,  2*size, read-only:  the data area, mapped twice back to back, so a record
                                            that wraps past the end is still contiguous in memory.
The two read-only parts are one mapping (offset 1 page, length 1 page + 2*size): the kernel only
lets the consumer page be mapped writable, and only exactly that page.
Positions are free-running u64 byte counters; a position's place in the data area is pos & (size-1).
Each record starts with an 8-byte header at an 8-byte-aligned position:
  u32 len   bits 0..29 the sample length (excluding the header); bit 31 BUSY: reserved, not yet
            submitted or discarded; bit 30 DISCARD: the producer gave it back; skip it
  u32 pgoff kernel-internal (the page offset of the header from the ring's start); ignored here
and occupies round_up(len + 8, 8) bytes. The producer advances producer_pos at reserve time, so
records between consumer_pos and producer_pos may still be BUSY: the consumer stops at the first
BUSY record (records are consumed in order; a later, already committed record waits for it) and
looks at it again on the next drain.
The space of every record before consumer_pos is free for the producer again, so consumer_pos must
only move past records whose bytes have been copied out.

Memory ordering. The kernel publishes producer_pos and each header's len with store-release and
reads consumer_pos with load-acquire. We need: (1) producer_pos read before any header; (2) each
header read before that record's data; (3) the data copied before consumer_pos is stored. Each
8-byte position is read and written with one aligned 8-byte access through a memoryview cast to
'Q' (CPython's memoryview packs/unpacks a 'Q' item with an 8-byte memcpy: a single load or store,
never torn). On x86-64 (and i386) the hardware model (TSO) already gives plain loads acquire and
plain stores release semantics, so no fence is needed. On weakly ordered CPUs (arm64, ...) a fence
runs between the steps (_Fence: release then re-acquire of a lock private to the reader; pure
Python has no fence instruction). Because we walk all headers of a batch first and copy the batch
afterwards, three fences per batch suffice, not one per record. The consumer_pos store is a plain
store once per batch (release on x86-64; preceded by a fence elsewhere). Only x86-64 is tested.

Loss: the kernel does not count records it could not reserve; the BPF program must count its
reserve failures (ARCHITECTURE: every loss is counted). This reader counts what it consumed.
"""
from __future__ import annotations

import errno
import mmap
import platform
import select
import threading
from typing import List, Optional, Tuple

from . import bpfsys

BPF_MAP_TYPE_RINGBUF = 27
BPF_F_NUMA_NODE = 1 << 2          # the only create flag that keeps the classic consumer protocol
BUSY = 1 << 31                    # BPF_RINGBUF_BUSY_BIT
DISCARD = 1 << 30                 # BPF_RINGBUF_DISCARD_BIT
LEN_MASK = DISCARD - 1            # sample length bits
HDR_SIZE = 8                      # BPF_RINGBUF_HDR_SZ

PAGE_SIZE = mmap.PAGESIZE

_TSO = platform.machine() in ("x86_64", "AMD64", "i386", "i686")


class _Fence:
    """A memory barrier for weakly ordered CPUs from what Python offers: releasing and re-acquiring a
    lock private to one reader (held between calls). A release followed by an acquire keeps every
    access before it before every access after it (release/acquire is RCsc on arm64); an acquire
    followed by a release would not. On x86 (TSO) it does nothing."""

    def __init__(self):
        self._lock = threading.Lock()
        self._lock.acquire()

    def __call__(self) -> None:
        if not _TSO:
            self._lock.release()
            self._lock.acquire()


class RingBufError(OSError):
    """A map that is not a usable ring buffer, or a ring whose headers make no sense."""


Records = List[Tuple[int, int]]


def scan(words, avail: int, limit: int = 0) -> Tuple[int, Records, int, bool]:
    """Walk the record headers of one batch in place.

    words: a memoryview cast to 'I' (native u32) whose item 0 is the header at the consumer's place
    and that spans at least `avail` bytes (producer - consumer position). `limit` > 0 stops after
    that many delivered records.
    Returns (used, records, discarded, busy): `used` bytes may be consumed (every record before the
    first BUSY one, or up to the limit), `records` holds (offset, length) of each committed sample
    relative to the consumer's place (the offset points past the 8-byte header), `discarded` counts
    skipped DISCARD records and `busy` tells whether the walk stopped at an uncommitted record.
    Raises RingBufError when a record would extend past `avail` (a corrupt or misread ring)."""
    if limit > 0:
        return _scan_limited(words, avail, limit)
    recs: Records = []
    append = recs.append
    off = ndisc = 0
    busy = False
    # The hot loop: literals instead of module globals, one comparison for "neither flag set"
    # (BUSY and DISCARD are the top two bits), the record size as round_up(len + 8, 8).
    while off < avail:
        h = words[off >> 2]
        if h < 0x40000000:                 # committed
            append((off + 8, h))
            off += (h + 15) & -8
        elif h & 0x80000000:               # BUSY: stop here, in order
            busy = True
            break
        else:                              # DISCARD
            ndisc += 1
            off += ((h & 0x3FFFFFFF) + 15) & -8
    if off > avail:
        raise _corrupt(off, avail)
    return off, recs, ndisc, busy


def scan_offsets(words, avail: int) -> Tuple[int, List[int], int, bool]:
    """scan() for records that carry their own length (every hftpf event does, in its common
    header): the same walk, returning only the sample offsets, which saves a tuple per record."""
    offs: List[int] = []
    append = offs.append
    off = ndisc = 0
    busy = False
    while off < avail:
        h = words[off >> 2]
        if h < 0x40000000:
            append(off + 8)
            off += (h + 15) & -8
        elif h & 0x80000000:
            busy = True
            break
        else:
            ndisc += 1
            off += ((h & 0x3FFFFFFF) + 15) & -8
    if off > avail:
        raise _corrupt(off, avail)
    return off, offs, ndisc, busy


def _scan_limited(words, avail: int, limit: int) -> Tuple[int, Records, int, bool]:
    recs: Records = []
    off = ndisc = 0
    while off < avail and len(recs) < limit:
        h = words[off >> 2]
        if h & BUSY:
            return off, recs, ndisc, True
        n = h & LEN_MASK
        if h & DISCARD:
            ndisc += 1
        else:
            recs.append((off + HDR_SIZE, n))
        off += (n + HDR_SIZE + 7) & ~7
    if off > avail:
        raise _corrupt(off, avail)
    return off, recs, ndisc, False


def _corrupt(off: int, avail: int) -> RingBufError:
    return RingBufError(errno.EIO, f"ring buffer record ending at +{off} runs past the producer position "
                                   f"(+{avail}): corrupt header")


class RingReader:
    """Consumer of one BPF ring buffer map, by fd (the fd stays the caller's).

        r = RingReader(fd)
        while running:
            if r.wait(100):
                buf, recs = r.drain()
                for off, n in recs:
                    typ, ln, cpu, ts = HDR.unpack_from(buf, off)

    drain_offsets() is the cheaper variant for records that carry their own length (hftpf events do).

    Counters: `records` delivered, `discarded` skipped, `consumed` bytes released to the producer
    (headers and padding included), `batches` non-empty drains, `busy_stops` drains that stopped at a
    not-yet-committed record. `pos` is the consumer position (free-running byte counter).
    Not thread-safe: one consumer per ring (the kernel's protocol has a single consumer).

    `size` is for tests only: a regular file laid out like the ring (consumer page, producer page,
    the data area written twice) stands in for the map; the size is then not read from the kernel.
    """

    def __init__(self, map_fd: int, size: Optional[int] = None):
        if size is None:
            info = bpfsys.map_info(map_fd)
            if info.type != BPF_MAP_TYPE_RINGBUF:
                raise RingBufError(errno.EINVAL, f"map {info.name.decode(errors='replace')!r} is of type "
                                                 f"{info.type}, not a ring buffer ({BPF_MAP_TYPE_RINGBUF})")
            if info.map_flags & ~BPF_F_NUMA_NODE:
                # e.g. overwrite mode: the producer may overwrite unconsumed records, another protocol
                raise RingBufError(errno.EOPNOTSUPP, f"ring buffer with map_flags {info.map_flags:#x} "
                                                     "is not supported (only the classic mode)")
            size = info.max_entries
        if size <= 0 or size & (size - 1) or size % PAGE_SIZE:
            raise RingBufError(errno.EINVAL, f"ring buffer size {size} is not a power-of-two number of pages")
        self.fd = map_fd
        self.size = size
        self.mask = size - 1
        self.records = self.discarded = self.consumed = self.batches = self.busy_stops = 0
        self._ep: Optional[select.epoll] = None
        self._fence = _Fence()
        self._cons_mm = mmap.mmap(map_fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._mm = mmap.mmap(map_fd, PAGE_SIZE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                 offset=PAGE_SIZE)
        except BaseException:
            self._cons_mm.close()
            raise
        self._cons = memoryview(self._cons_mm).cast("Q")   # [0]: consumer_pos
        self._prod = memoryview(self._mm)[:8].cast("Q")    # [0]: producer_pos
        self._words = memoryview(self._mm).cast("I")       # record headers, read in place
        self.pos = self._cons[0]

    # -- state ------------------------------------------------------------------------------------
    def pending(self) -> int:
        """Bytes between the consumer and the producer (committed or not): the ring's fill level."""
        return self._prod[0] - self.pos

    def fileno(self) -> int:
        return self.fd

    # -- draining -----------------------------------------------------------------------------------
    def drain(self, max_records: Optional[int] = None) -> Tuple[bytes, Records]:
        """Take every committed record from the consumer position up to the first BUSY one (or the
        first `max_records`), release their space to the producer with one consumer_pos store, and
        return (buf, records): buf is one bytes copy of the batch, records a list of (offset, length)
        of each sample within buf. Discarded records are skipped. Never blocks."""
        return self._take(scan, max_records or 0)

    def drain_offsets(self) -> Tuple[bytes, List[int]]:
        """drain() for records that carry their own length (hftpf events: the common header's len):
        (buf, offsets), each offset pointing at a sample in buf. About a third cheaper per record."""
        return self._take(scan_offsets, None)

    def _take(self, walk, limit):
        _fence = self._fence
        prod = self._prod[0]           # (1) acquire on x86 (TSO) ...
        _fence()                       #     ... and here elsewhere
        cons = self.pos
        avail = prod - cons
        if avail <= 0:
            return b"", []
        start = PAGE_SIZE + (cons & self.mask)
        words = self._words[start >> 2:(start + avail + 3) >> 2]
        try:
            used, recs, ndisc, busy = walk(words, avail) if limit is None else walk(words, avail, limit)
        finally:
            words.release()
        if busy:
            self.busy_stops += 1
        if not used:
            return b"", []
        _fence()                       # (2) headers read before the data they cover
        buf = self._mm[start:start + used]   # one copy; contiguous thanks to the double mapping
        _fence()                       # (3) data copied before the space is handed back
        cons += used
        self._cons[0] = cons           # single aligned 8-byte store: release on x86-64
        self.pos = cons
        self.records += len(recs)
        self.discarded += ndisc
        self.consumed += used
        self.batches += 1
        return buf, recs

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until the ring holds data (epoll on the map fd; level-triggered) or the timeout
        (ms, -1 = forever) passes. True when there is something to drain; that may be a record still
        BUSY (reserved, not yet submitted: microseconds), so a drain after True can come back empty.
        The kernel wakes a sleeping consumer on submit unless the program passes BPF_RB_NO_WAKEUP;
        a program that does must be drained on a timer (wait(timeout) then drain)."""
        if self.pending() > 0:
            return True
        if self._ep is None:
            self._ep = select.epoll(1)
            self._ep.register(self.fd, select.EPOLLIN)
        try:
            self._ep.poll(timeout_ms / 1000.0 if timeout_ms >= 0 else -1)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for old interpreters
            pass
        return self.pending() > 0

    # -- lifetime -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap and drop the epoll instance; the map fd is left to its owner."""
        for v in ("_cons", "_prod", "_words"):
            mv = getattr(self, v, None)
            if mv is not None:
                mv.release()
                setattr(self, v, None)
        for m in ("_mm", "_cons_mm"):
            mm = getattr(self, m, None)
            if mm is not None:
                mm.close()
                setattr(self, m, None)
        ep = getattr(self, "_ep", None)
        if ep is not None:
            ep.close()
            self._ep = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

