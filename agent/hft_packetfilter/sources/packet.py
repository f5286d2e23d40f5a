"""Fast L2-L4 parsing of one captured frame into an :class:`~.events.Event`.

Link types: Ethernet (1), Linux cooked capture SLL (113) and SLL2 (276), raw IP (101, and the
platform DLT values 12 and 14 some files carry), IPv4-only (228), IPv6-only (229), BSD loopback
NULL (0) and LOOP (108). Then 802.1Q / 802.1ad tags (at most 2), IPv4 (with options; non-first
fragments carry no ports), IPv6 (extension headers up to a bound), UDP and TCP (with options).

:func:`parse` never raises on frame content: a frame that yields no UDP/TCP event returns ``None``
and counts one *reason* in the ``reasons`` dict you pass. The reasons are the kernel's packet
classes (``abi.PktClass``) in lower case, decided by the **same rules as bpf/include/parse.h and
hftpf_xdp()**, so an offline replay and the live probe agree packet for packet:

``truncated``
    a header does not fit in the captured bytes: Ethernet < 14 bytes; a VLAN tag cut short; **a
    third VLAN tag** (the kernel peels 2 and refuses deeper stacks rather than misparse -- it counts
    them as truncated, and so do we); IPv4 < 20 bytes, IHL < 5 or options past the end; IPv6 < 40
    bytes or an extension header (2 bytes to read its length, 8 for a fragment header, then its
    whole length) past the end; UDP < 8 bytes; TCP < 20 bytes, data offset < 5 or past the end.
    The IPv4 total length and UDP length are NOT checked (neither does the kernel): they only bound
    the payload.
``fragment``
    IPv4 with a non-zero fragment offset, or IPv6 with a fragment header whose offset is non-zero
    (checked after truncation, before the L4 protocol, as the kernel does). First fragments carry
    ports and are parsed normally.
``non_ip``
    not IPv4/IPv6 (ARP, LLDP, PTP over Ethernet ...).
``non_l4``
    IP but neither UDP nor TCP (ICMP, ESP, an IPv6 chain longer than 4 extension headers ...).
``linktype``
    a capture link type we do not parse (never happens in the kernel: XDP always sees Ethernet).

Evaluation order matches the kernel: L2 -> L3 (truncated) -> fragment -> L4 protocol -> L4 header.

Speed: one function, precompiled ``struct.Struct`` unpackers reading the frame in place, slices
only for the two addresses and the payload, one Event per accepted frame; no per-byte loops. When the
optional compiled module is built (``hft_packetfilter._native``), Ethernet frames carrying IPv4
UDP/TCP with at most two VLAN tags are parsed in C into the same Event; every other frame, and every
frame that yields a reason, goes through the Python code below, the reference.
"""
from __future__ import annotations

import struct
from typing import Dict, Optional

from .. import _accel
from .events import CLOCK_PCAP, Event

__all__ = ["parse", "FrameParser", "REASONS", "LINKTYPE_ETHERNET", "LINKTYPE_LINUX_SLL",
           "LINKTYPE_LINUX_SLL2", "LINKTYPE_RAW", "LINKTYPE_IPV4", "LINKTYPE_IPV6", "LINKTYPE_NULL",
           "LINKTYPE_LOOP", "MAX_VLAN_DEPTH", "MAX_IPV6_EXT"]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_DLT12 = 12     # DLT_RAW on most BSDs; some files store it verbatim
LINKTYPE_RAW_DLT14 = 14     # DLT_RAW on OpenBSD
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

#: mirrors HFTPF_MAX_VLAN_DEPTH in bpf/include/parse.h
MAX_VLAN_DEPTH = 2
#: mirrors HFTPF_MAX_IPV6_EXT in bpf/include/parse.h
MAX_IPV6_EXT = 4

TRUNCATED = "truncated"
FRAGMENT = "fragment"
NON_IP = "non_ip"
NON_L4 = "non_l4"
LINKTYPE = "linktype"
REASONS = (TRUNCATED, FRAGMENT, NON_IP, NON_L4, LINKTYPE)

_ETH_IP = 0x0800
_ETH_IPV6 = 0x86DD
_VLAN_Q = 0x8100
_VLAN_AD = 0x88A8

_u16 = struct.Struct("!H").unpack_from
_tag = struct.Struct("!HH").unpack_from               # VLAN: tci, encapsulated ethertype
_ip4 = struct.Struct("!2xH2xHxB").unpack_from          # total length, flags|frag offset, protocol
_ip6 = struct.Struct("!HB").unpack_from                # payload length, next header (at +4)
_udp = struct.Struct("!HHH").unpack_from               # sport, dport, length
_tcp = struct.Struct("!HHIIBB").unpack_from            # sport, dport, seq, ack, doff<<4, flags
_u32le = struct.Struct("<I").unpack_from
_u32be = struct.Struct(">I").unpack_from

_AF_INET6 = (10, 24, 28, 30)   # Linux, BSDs, FreeBSD, Darwin


# the compiled common case (see the module docstring), or None
_parse_eth = _accel.NATIVE.FrameCore(Event).parse_eth if _accel.NATIVE is not None else None


def _count(reasons: Optional[Dict[str, int]], reason: str) -> None:
    if reasons is not None:
        reasons[reason] = reasons.get(reason, 0) + 1


def parse(frame: bytes, linktype: int = LINKTYPE_ETHERNET, ts_ns: int = 0, frame_len: int = 0,
          reasons: Optional[Dict[str, int]] = None, clock: str = CLOCK_PCAP) -> Optional[Event]:
    """Parse one frame; an :class:`Event` for UDP/TCP, else ``None`` with one reason counted.

    ``frame`` should be ``bytes`` (other buffers are copied once so the event never pins a large
    read buffer). ``frame_len`` is the on-wire length (pcap ``orig_len``); 0 means ``len(frame)``.
    """
    if linktype == LINKTYPE_ETHERNET and _parse_eth is not None:
        ev = _parse_eth(frame, ts_ns, frame_len, clock)
        if ev is not None:
            return ev
    if type(frame) is not bytes:
        frame = bytes(frame)
    n = len(frame)
    vlans = ()
    # ---- L2 ------------------------------------------------------------------------------------
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            _count(reasons, TRUNCATED)
            return None
        proto = _u16(frame, 12)[0]
        off = 14
    elif linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            _count(reasons, TRUNCATED)
            return None
        proto = _u16(frame, 14)[0]
        off = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            _count(reasons, TRUNCATED)
            return None
        proto = _u16(frame, 0)[0]
        off = 20
    elif linktype in (LINKTYPE_RAW, LINKTYPE_RAW_DLT12, LINKTYPE_RAW_DLT14, LINKTYPE_IPV4,
                      LINKTYPE_IPV6):
        if n < 1:
            _count(reasons, TRUNCATED)
            return None
        version = frame[0] >> 4
        proto = _ETH_IP if version == 4 else _ETH_IPV6 if version == 6 else 0
        off = 0
    elif linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
        if n < 4:
            _count(reasons, TRUNCATED)
            return None
        # NULL stores the address family in the writer's byte order, LOOP in network order
        fams = (_u32be(frame, 0)[0],) if linktype == LINKTYPE_LOOP else (_u32le(frame, 0)[0], _u32be(frame, 0)[0])
        proto = _ETH_IP if 2 in fams else _ETH_IPV6 if any(f in _AF_INET6 for f in fams) else 0
        off = 4
    else:
        _count(reasons, LINKTYPE)
        return None

    if proto == _VLAN_Q or proto == _VLAN_AD:
        if off + 4 > n:
            _count(reasons, TRUNCATED)
            return None
        tci, proto = _tag(frame, off)
        off += 4
        if proto == _VLAN_Q or proto == _VLAN_AD:
            if off + 4 > n:
                _count(reasons, TRUNCATED)
                return None
            tci2, proto = _tag(frame, off)
            off += 4
            if proto == _VLAN_Q or proto == _VLAN_AD:   # deeper than the kernel peels
                _count(reasons, TRUNCATED)
                return None
            vlans = (tci & 0xFFF, tci2 & 0xFFF)
        else:
            vlans = (tci & 0xFFF,)

    # ---- L3 ------------------------------------------------------------------------------------
    if proto == _ETH_IP:
        if off + 20 > n:
            _count(reasons, TRUNCATED)
            return None
        hl = (frame[off] & 0x0F) << 2
        if hl < 20 or off + hl > n:
            _count(reasons, TRUNCATED)
            return None
        total, frag, l4proto = _ip4(frame, off)
        if frag & 0x1FFF:
            _count(reasons, FRAGMENT)
            return None
        family = 4
        src = frame[off + 12:off + 16]
        dst = frame[off + 16:off + 20]
        end = off + total
        if total < hl or end > n:       # 0 (TSO) / bogus / snapped: the frame bounds it
            end = n
        l4 = off + hl
    elif proto == _ETH_IPV6:
        if off + 40 > n:
            _count(reasons, TRUNCATED)
            return None
        plen, l4proto = _ip6(frame, off + 4)
        family = 6
        src = frame[off + 8:off + 24]
        dst = frame[off + 24:off + 40]
        l4 = off + 40
        if l4proto != 17 and l4proto != 6:
            is_fragment = False
            for _ in range(MAX_IPV6_EXT):
                if l4proto == 0 or l4proto == 43 or l4proto == 60:     # hop-by-hop, routing, dst opts
                    if l4 + 2 > n:
                        _count(reasons, TRUNCATED)
                        return None
                    ln = (frame[l4 + 1] + 1) << 3
                elif l4proto == 51:                                     # AH
                    if l4 + 2 > n:
                        _count(reasons, TRUNCATED)
                        return None
                    ln = (frame[l4 + 1] + 2) << 2
                elif l4proto == 44:                                     # fragment
                    if l4 + 8 > n:
                        _count(reasons, TRUNCATED)
                        return None
                    if _u16(frame, l4 + 2)[0] & 0xFFF8:
                        is_fragment = True
                    ln = 8
                else:
                    break
                if l4 + ln > n:
                    _count(reasons, TRUNCATED)
                    return None
                l4proto = frame[l4]
                l4 += ln
            if is_fragment:
                _count(reasons, FRAGMENT)
                return None
        end = off + 40 + plen
        if plen == 0 or end > n:        # 0: jumbogram; snapped: the frame bounds it
            end = n
    else:
        _count(reasons, NON_IP)
        return None

    # ---- L4 ------------------------------------------------------------------------------------
    if l4proto == 17:
        if l4 + 8 > n:
            _count(reasons, TRUNCATED)
            return None
        sport, dport, ulen = _udp(frame, l4)
        if ulen >= 8 and l4 + ulen < end:
            end = l4 + ulen
        return Event(ts_ns, clock, family, src, dst, sport, dport, "udp", frame[l4 + 8:end],
                     0, 0, 0, vlans, frame_len or n)
    if l4proto == 6:
        if l4 + 20 > n:
            _count(reasons, TRUNCATED)
            return None
        sport, dport, seq, ack, doff, flags = _tcp(frame, l4)
        hl = (doff >> 4) << 2
        if hl < 20 or l4 + hl > n:
            _count(reasons, TRUNCATED)
            return None
        return Event(ts_ns, clock, family, src, dst, sport, dport, "tcp", frame[l4 + hl:end],
                     seq, ack, flags, vlans, frame_len or n)
    _count(reasons, NON_L4)
    return None


class FrameParser:
    """:func:`parse` with its own counters: ``parsed`` events and ``reasons`` (reason -> frames)."""

    __slots__ = ("reasons", "parsed", "clock")

    def __init__(self, clock: str = CLOCK_PCAP) -> None:
        self.reasons: Dict[str, int] = {}
        self.parsed = 0
        self.clock = clock

    def parse(self, frame: bytes, linktype: int = LINKTYPE_ETHERNET, ts_ns: int = 0,
              frame_len: int = 0) -> Optional[Event]:
        ev = parse(frame, linktype, ts_ns, frame_len, self.reasons, self.clock)
        if ev is not None:
            self.parsed += 1
        return ev

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())
