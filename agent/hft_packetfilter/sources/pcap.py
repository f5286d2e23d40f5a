"""Streaming capture-file readers: classic pcap and pcapng, plain or gzip-compressed.

:func:`open_capture` sniffs the first bytes and returns a :class:`PcapReader` or
:class:`PcapngReader`; iterating either yields ``(ts_ns, linktype, frame)`` per packet record, and
:meth:`~_Reader.records` yields ``(ts_ns, linktype, frame, wire_len)`` (``wire_len`` = the original
length on the wire, which may exceed ``len(frame)`` when the capture used a snap length).

Formats (facts from the specs, draft-ietf-opsawg-pcap and draft-ietf-opsawg-pcapng):

* classic pcap: 24-byte file header; magic ``a1b2c3d4`` (usec) or ``a1b23c4d`` (nsec) in either
  byte order; 16-byte record headers ``ts_sec, ts_frac, incl_len, orig_len``. The link type is the
  low 16 bits of the header's LinkType field (the high bits may carry an FCS length). The
  "modified" Kuznetzov format (magic ``a1b2cd34``, 24-byte record headers) is read too.
* pcapng: blocks ``type, total_len, body, total_len``; a Section Header Block (``0a0d0d0a``) sets the
  byte order (its magic ``1a2b3c4d``) and resets the interface list; Interface Description Blocks
  give each interface its link type, snap length, ``if_tsresol`` (option 9: ``10^-n`` or, with the
  high bit set, ``2^-n``; default microseconds) and ``if_tsoffset`` (option 14, seconds).
  Enhanced Packet Blocks (6), Simple Packet Blocks (3; no timestamp: they carry the previous
  packet's) and the obsolete Packet Block (2) yield packets; every other block is skipped.

Memory stays flat on multi-GB files: the file is read in ``chunk_size`` pieces (default 4 MiB) and
only the unconsumed tail of a chunk is carried over. Frames are ``bytes`` copies, so holding on to
one never pins a whole chunk.

Damage is reported, not raised: a truncated last record (a capture cut short) or a record header
that makes no sense ends the iteration and is described in ``reader.problems`` (``reader.truncated``
says whether the file ended inside a record). A file that is not a capture at all raises
:class:`NotACaptureError` (a ``ValueError`` naming the file) from :func:`open_capture`.

``progress(bytes_read, total_bytes)`` is called after every chunk read (bytes of the file on disk,
so it works for gzip files too) -- enough for a progress bar.
"""
from __future__ import annotations

import gzip
import os
import struct
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

from .. import _accel
from .events import CLOCK_PCAP, Event
from .packet import parse

__all__ = ["NotACaptureError", "PcapReader", "PcapngReader", "open_capture", "read_events",
           "CHUNK_SIZE", "MAX_RECORD"]

CHUNK_SIZE = 4 << 20
#: A record or block larger than this is treated as corruption (Wireshark's own limit for pcap
#: records is 256 KiB of packet data for most link types; we allow far more before giving up).
MAX_RECORD = 64 << 20

Progress = Callable[[int, int], None]
PathLike = Union[str, "os.PathLike[str]"]

_PCAP_MAGIC = {
    # magic bytes as stored -> (byte order, ns per fraction unit, record header size)
    b"\xd4\xc3\xb2\xa1": ("<", 1000, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1000, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1000, 24),   # "modified" pcap (Kuznetzov): 8 more header bytes
    b"\xa1\xb2\xcd\x34": (">", 1000, 24),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_GZIP = b"\x1f\x8b"


class NotACaptureError(ValueError):
    """The file is not a pcap/pcapng capture (or is empty). ``filename`` names it."""

    def __init__(self, filename: str, why: str) -> None:
        self.filename = filename
        super().__init__(f"{filename}: not a capture file: {why}; expected a pcap or pcapng file "
                         "(optionally gzip-compressed)")


class _Reader:
    """Shared plumbing: the open file, chunked reading, progress and problem reporting."""

    def __init__(self, path: PathLike, progress: Optional[Progress] = None,
                 chunk_size: int = CHUNK_SIZE) -> None:
        self.path = os.fspath(path)
        self.progress = progress
        self.chunk_size = max(int(chunk_size), 64)
        self.total_bytes = os.path.getsize(self.path)
        self.records_read = 0
        self.problems: List[str] = []
        self.truncated = False
        self._raw = open(self.path, "rb")
        head = self._raw.read(2)
        self._raw.seek(0)
        self._f = gzip.GzipFile(fileobj=self._raw, mode="rb") if head == _GZIP else self._raw

    # -- file access -----------------------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        data = self._f.read(n)
        if self.progress is not None:
            self.progress(self._raw.tell(), self.total_bytes)
        return data

    def close(self) -> None:
        if self._f is not self._raw:
            self._f.close()
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Tuple[int, int, bytes]]:
        for ts, lt, frame, _wire in self.records():
            yield ts, lt, frame

    def records(self) -> Iterator[Tuple[int, int, bytes, int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _problem(self, text: str, truncated: bool = False) -> None:
        self.problems.append(f"{self.path}: {text}")
        if truncated:
            self.truncated = True


class PcapReader(_Reader):
    """Classic pcap (usec or nsec magic, either byte order; also the 'modified' variant)."""

    def __init__(self, path: PathLike, progress: Optional[Progress] = None,
                 chunk_size: int = CHUNK_SIZE) -> None:
        super().__init__(path, progress, chunk_size)
        head = self._read(24)
        if len(head) < 24 or head[:4] not in _PCAP_MAGIC:
            self.close()
            raise NotACaptureError(self.path, "no classic pcap header")
        self.byte_order, self._mult, self._rec_len = _PCAP_MAGIC[head[:4]]
        self.nanosecond = self._mult == 1
        major, minor, _zone, _sigfigs, self.snaplen, lt = struct.unpack_from(self.byte_order + "HHiIII", head, 4)
        self.version = (major, minor)
        self.linktype = lt & 0xFFFF
        self.fcs_len = (lt >> 28) * 2 if lt & 0x04000000 else 0

    def records(self, lane=None) -> Iterator[Tuple[int, int, bytes, int]]:
        """``lane``: a ``_native.MoldLane`` (the replay fast lane, see fastlane.py) that takes the
        records it can straight from the read buffer; only the others are yielded, in file order.
        The records it took count in ``records_read`` like the yielded ones."""
        rec = struct.Struct(self.byte_order + "IIII").unpack_from
        hlen = self._rec_len
        mult = self._mult
        lt = self.linktype
        chunk = self.chunk_size
        split = _accel.NATIVE.split_pcap if _accel.NATIVE is not None else None
        run = lane.run if lane is not None else None
        little = self.byte_order == "<"
        buf = self._read(chunk)
        pos = 0
        count = 0
        while True:
            n = len(buf)
            # tight inner loop over the whole records held in this buffer (in C when built); with a
            # lane, the lane takes what it can and the loop below yields the record it stopped at
            if split is not None and run is None:
                recs, pos = split(buf, pos, hlen, mult, lt, little)
                count += len(recs)
                yield from recs
            while True:
                if run is not None:
                    pos, taken, _ts = run(buf, pos, hlen, mult, lt, little)
                    count += taken
                if pos + hlen > n:
                    break
                sec, frac, incl, orig = rec(buf, pos)
                start = pos + hlen
                stop = start + incl
                if stop > n:
                    break
                pos = stop
                count += 1
                yield sec * 1_000_000_000 + frac * mult, lt, buf[start:stop], orig
            # refill: keep the unconsumed tail, read at least what the next record needs
            need = hlen
            if pos + hlen <= n:
                incl = rec(buf, pos)[2]
                if incl > MAX_RECORD:
                    self.records_read = count
                    self._problem(f"record {count + 1} at byte {self._offset(pos, n)} claims "
                                  f"{incl} bytes (corrupt header); stopped reading")
                    return
                need = hlen + incl
            more = self._read(max(chunk, need - (n - pos)))
            if not more:
                self.records_read = count
                if pos < n:
                    self._problem(f"file ends inside record {count + 1} ({n - pos} of "
                                  f"{need} bytes present): the capture was cut short", truncated=True)
                return
            buf = buf[pos:] + more
            pos = 0

    def _offset(self, pos: int, n: int) -> int:
        # byte offset of buffer position ``pos`` in the (decompressed) stream
        return self._f.tell() - (n - pos)


class _Iface:
    __slots__ = ("linktype", "snaplen", "mul", "div", "shift", "offset_ns")

    def __init__(self, linktype: int, snaplen: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.mul, self.div, self.shift = 1000, 1, 0   # default resolution: microseconds
        self.offset_ns = 0

    def set_tsresol(self, v: int) -> None:
        if v & 0x80:                  # 2^-n seconds
            self.mul, self.div, self.shift = 1_000_000_000, 1, v & 0x7F
        else:                         # 10^-n seconds
            n = v
            self.shift = 0
            if n <= 9:
                self.mul, self.div = 10 ** (9 - n), 1
            else:
                self.mul, self.div = 1, 10 ** (n - 9)

    def ts(self, ticks: int) -> int:
        if self.shift:
            return ((ticks * 1_000_000_000) >> self.shift) + self.offset_ns
        if self.div != 1:
            return ticks // self.div + self.offset_ns
        return ticks * self.mul + self.offset_ns


class PcapngReader(_Reader):
    """pcapng: sections in either byte order, any number of interfaces, EPB/SPB/PB packets."""

    def __init__(self, path: PathLike, progress: Optional[Progress] = None,
                 chunk_size: int = CHUNK_SIZE) -> None:
        super().__init__(path, progress, chunk_size)
        head = self._read(12)
        if len(head) < 12 or head[:4] != _PCAPNG_SHB or head[8:12] not in (b"\x1a\x2b\x3c\x4d", b"\x4d\x3c\x2b\x1a"):
            self.close()
            raise NotACaptureError(self.path, "no pcapng section header block")
        self._head = head
        self.interfaces: List[_Iface] = []   # of the current section
        self.sections = 0
        self.skipped_blocks: Dict[int, int] = {}

    @property
    def linktype(self) -> Optional[int]:
        """The first interface's link type (None before the first IDB is read)."""
        return self.interfaces[0].linktype if self.interfaces else None

    def _lane_ifaces(self, lane) -> None:
        """Hand the lane the section's interfaces (one it cannot reproduce exactly as link type -1)."""
        lim = 1 << 63
        lane.set_ifaces([(f.linktype if max(f.mul, f.div, abs(f.offset_ns)) < lim else -1,
                          min(f.mul, lim - 1), min(f.div, lim - 1), f.shift, max(min(f.offset_ns, lim - 1), -lim))
                         for f in self.interfaces])

    def records(self, lane=None) -> Iterator[Tuple[int, int, bytes, int]]:
        """``lane``: as for :meth:`PcapReader.records`; it takes Enhanced Packet Blocks."""
        run = lane.run_ng if lane is not None else None
        buf = self._head + self._read(self.chunk_size)
        self._head = b""
        pos = 0
        count = 0
        bo = "<"
        blk = struct.Struct("<II").unpack_from
        epb = struct.Struct("<IIIII").unpack_from
        u32 = struct.Struct("<I").unpack_from
        last_ts = 0
        ifaces = self.interfaces
        chunk = self.chunk_size
        while True:
            n = len(buf)
            while pos + 12 <= n:
                if run is not None:
                    pos, taken, lane_ts = run(buf, pos, bo == "<")
                    if taken:
                        count += taken
                        last_ts = lane_ts
                        if pos + 12 > n:
                            break
                btype, blen = blk(buf, pos)
                if btype == 0x0A0D0D0A:     # SHB: a palindrome, so it reads the same in both orders
                    magic = buf[pos + 8:pos + 12]
                    if magic == b"\x4d\x3c\x2b\x1a":
                        bo = "<"
                    elif magic == b"\x1a\x2b\x3c\x4d":
                        bo = ">"
                    else:
                        self.records_read = count
                        self._problem(f"section header at byte {self._offset(pos, n)} has a bad "
                                      "byte-order magic; stopped reading")
                        return
                    blk = struct.Struct(bo + "II").unpack_from
                    epb = struct.Struct(bo + "IIIII").unpack_from
                    u32 = struct.Struct(bo + "I").unpack_from
                    blen = blk(buf, pos)[1]
                if blen < 12 or blen & 3 or blen > MAX_RECORD:
                    self.records_read = count
                    self._problem(f"block at byte {self._offset(pos, n)} has length {blen} "
                                  "(corrupt); stopped reading")
                    return
                end = pos + blen
                if end > n:
                    break
                body = pos + 8
                if btype == 6:                                   # Enhanced Packet Block
                    iid, hi, lo, cap, orig = epb(buf, body)
                    if iid >= len(ifaces) or body + 20 + cap > end - 4:
                        self._problem(f"packet block at byte {self._offset(pos, n)} is malformed "
                                      "(unknown interface or bad length); skipped")
                    else:
                        iface = ifaces[iid]
                        last_ts = iface.ts((hi << 32) | lo)
                        count += 1
                        pos = end
                        yield last_ts, iface.linktype, buf[body + 20:body + 20 + cap], orig
                        continue
                elif btype == 3:                                 # Simple Packet Block
                    if not ifaces:
                        self._problem("simple packet block before any interface; skipped")
                    else:
                        orig = u32(buf, body)[0]
                        cap = min(orig, end - 4 - (body + 4))
                        if ifaces[0].snaplen:
                            cap = min(cap, ifaces[0].snaplen)
                        count += 1
                        pos = end
                        yield last_ts, ifaces[0].linktype, buf[body + 4:body + 4 + cap], orig
                        continue
                elif btype == 1:                                 # Interface Description Block
                    lt, _res, snap = struct.unpack_from(bo + "HHI", buf, body)
                    iface = _Iface(lt, snap)
                    self._iface_options(iface, buf, body + 8, end - 4, bo)
                    ifaces.append(iface)
                    if lane is not None:
                        self._lane_ifaces(lane)
                elif btype == 0x0A0D0D0A:                        # Section Header Block
                    ifaces.clear()
                    self.sections += 1
                    if lane is not None:
                        self._lane_ifaces(lane)
                elif btype == 2:                                 # obsolete Packet Block
                    iid, _drops, hi, lo, cap, orig = struct.unpack_from(bo + "HHIIII", buf, body)
                    if iid < len(ifaces) and body + 20 + cap <= end - 4:
                        iface = ifaces[iid]
                        last_ts = iface.ts((hi << 32) | lo)
                        count += 1
                        pos = end
                        yield last_ts, iface.linktype, buf[body + 20:body + 20 + cap], orig
                        continue
                    self._problem(f"packet block at byte {self._offset(pos, n)} is malformed; skipped")
                else:
                    self.skipped_blocks[btype] = self.skipped_blocks.get(btype, 0) + 1
                pos = end
            need = 12
            if pos + 8 <= n:
                need = max(12, blk(buf, pos)[1])
                if need > MAX_RECORD:
                    need = 12   # reported by the loop above once the header is complete
            more = self._read(max(chunk, need - (n - pos)))
            if not more:
                self.records_read = count
                if pos < n:
                    self._problem(f"file ends inside a block ({n - pos} of {need} bytes present): "
                                  "the capture was cut short", truncated=True)
                return
            buf = buf[pos:] + more
            pos = 0

    @staticmethod
    def _iface_options(iface: _Iface, buf: bytes, pos: int, end: int, bo: str) -> None:
        opt = struct.Struct(bo + "HH").unpack_from
        while pos + 4 <= end:
            code, ln = opt(buf, pos)
            if code == 0:
                break
            val = pos + 4
            if val + ln > end:
                break
            if code == 9 and ln >= 1:
                iface.set_tsresol(buf[val])
            elif code == 14 and ln >= 8:
                iface.offset_ns = struct.unpack_from(bo + "q", buf, val)[0] * 1_000_000_000
            pos = val + ((ln + 3) & ~3)

    def _offset(self, pos: int, n: int) -> int:
        return self._f.tell() - (n - pos)


def open_capture(path: PathLike, progress: Optional[Progress] = None,
                 chunk_size: int = CHUNK_SIZE) -> _Reader:
    """Open a capture file, choosing the reader from its first bytes (gzip is unwrapped first).

    Raises :class:`NotACaptureError` for anything else (including an empty file) and the usual
    ``OSError`` subclasses when the file cannot be opened.
    """
    file = os.fspath(path)
    with open(file, "rb") as f:
        head = f.read(4)
        if head[:2] == _GZIP:
            f.seek(0)
            try:
                with gzip.GzipFile(fileobj=f, mode="rb") as g:
                    head = g.read(4)
            except (OSError, EOFError) as e:
                raise NotACaptureError(file, f"gzip data that cannot be read ({e})") from None
    if not head:
        raise NotACaptureError(file, "the file is empty")
    if head in _PCAP_MAGIC:
        return PcapReader(file, progress, chunk_size)
    if head == _PCAPNG_SHB:
        return PcapngReader(file, progress, chunk_size)
    raise NotACaptureError(file, f"unknown magic {head.hex()}")


def read_events(path: PathLike, classifier=None, reasons: Optional[Dict[str, int]] = None,
                progress: Optional[Progress] = None) -> Iterator[Event]:
    """Every UDP/TCP packet of a capture as an :class:`Event` (clock ``"pcap"``).

    ``classifier`` (a :class:`hft_packetfilter.classify.Classifier`) fills the venue fields;
    frames that give no event are counted in ``reasons`` (see :mod:`.packet`).
    """
    if reasons is None:
        reasons = {}
    classify = classifier.classify_event if classifier is not None else None
    with open_capture(path, progress) as reader:
        for ts, lt, frame, wire in reader.records():
            ev = parse(frame, lt, ts, wire, reasons, CLOCK_PCAP)
            if ev is None:
                continue
            if classify is not None:
                classify(ev)
            yield ev
