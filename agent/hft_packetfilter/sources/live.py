"""The live source: ring-buffer payload records (struct hftpf_ev_payload) -> the same Event records
the pcap source yields, so the offline pipeline runs unchanged under `attach`.

A record carries at most the probe's snap length of the segment's payload (probe.payload_snaplen);
a longer segment arrives truncated (`cap_len < orig_len`). Truncation is counted; the TCP
reassembler then sees a hole and reports it as a gap instead of guessing the missing bytes."""
from __future__ import annotations

import struct
from typing import Optional

from .. import abi
from .events import CLOCK_MONO, CLOCK_TAI, Event

_V4_PREFIX = bytes(10) + b"\xff\xff"


def _addr(raw: bytes):
    """16-byte v4-mapped/IPv6 -> (family, packed address as the pcap source gives it)."""
    if raw[:12] == _V4_PREFIX:
        return 4, raw[12:16]
    return 6, raw


_UDP = 17


class LivePayloads:
    """Turns payload records into Events; counts what it could not turn."""

    def __init__(self, snaplen: int = abi.DEFAULT_SNAPLEN, clock: int = abi.Clock.TAI):
        self.snaplen = snaplen
        self.clock = CLOCK_TAI if clock == abi.Clock.TAI else CLOCK_MONO
        # header(16) saddr(16) daddr(16) sport dport tcp_seq venue direction cap_len orig_len l4proto pad
        self._fixed = struct.Struct("=HHIQ16s16sHHIBBHHBB")
        self._data_off = self._fixed.size
        self.records = 0
        self.truncated = 0
        self.bad = 0

    def event(self, buf: bytes, off: int, length: int) -> Optional[Event]:
        if length < self._data_off:
            self.bad += 1
            return None
        (_t, _l, _cpu, ts, saddr, daddr, sport, dport, seq, _venue, _dir, cap, orig, l4, _pad) = \
            self._fixed.unpack_from(buf, off)
        if cap > self.snaplen or self._data_off + cap > length:
            self.bad += 1
            return None
        self.records += 1
        if cap < orig:
            self.truncated += 1
        fam, src = _addr(saddr)
        _, dst = _addr(daddr)
        start = off + self._data_off
        if l4 == _UDP:      # a market-data datagram (venue flagged `payloads: true`)
            return Event(ts, self.clock, fam, src, dst, sport, dport, "udp", bytes(buf[start:start + cap]),
                         frame_len=orig)
        # PSH|ACK: payload records are data segments; the kernel does not ship the flags byte
        return Event(ts, self.clock, fam, src, dst, sport, dport, "tcp", bytes(buf[start:start + cap]),
                     tcp_seq=seq, tcp_flags=0x18, frame_len=orig)
