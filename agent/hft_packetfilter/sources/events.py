"""The record every source yields: one :class:`Event` per parsed L4 packet.

Both sources produce it -- the pcap source now (:mod:`.pcap`), the live kernel source later -- so
everything downstream (classification, TCP reassembly, decoders, analytics) sees one shape.

Representation choices (made for speed: the pcap path builds one Event per frame at >300k/s):

* ``src``/``dst`` are the **packed** addresses as ``bytes``: 4 bytes for IPv4, 16 for IPv6, exactly
  as on the wire (network order); ``family`` is 4 or 6. They are cheap to slice, hash and compare.
  Use :attr:`Event.src_ip` / :attr:`Event.dst_ip` for ``ipaddress`` objects (built on demand).
* ``payload`` is ``bytes`` (the L4 payload, bounded by the IP total length and UDP length so
  Ethernet padding and capture-device trailers never leak into it; shorter than the datagram when
  the capture snap length cut it).
* ``transport`` is the string ``"tcp"`` or ``"udp"`` (the same strings as ``Exchange.transport``).
* Venue fields start empty (``venue=None``, ``venue_id=0``) and are filled by
  :class:`hft_packetfilter.classify.Classifier`.
* ``direction``: ``"to_venue"`` when the destination address is covered by the venue's hosts,
  ``"from_venue"`` otherwise (see :mod:`hft_packetfilter.classify` for the two refinements:
  both ends covered, and multicast destinations). ``None`` when there is no venue.
* ``stream_offset``: for TCP after :class:`.tcp.TcpReassembler` has seen the segment, the offset of
  the payload's first byte in its direction's byte stream (0 = first byte after the SYN, or the
  first byte seen when the capture starts mid-stream); ``None`` before reassembly and for UDP.
"""
from __future__ import annotations

import ipaddress
from typing import Optional, Tuple

__all__ = ["Event", "CLOCK_PCAP", "CLOCK_TAI", "CLOCK_MONO", "TO_VENUE", "FROM_VENUE"]

#: ``ts_ns`` came from the capture file's record header (ns since the Unix epoch, capture clock)
CLOCK_PCAP = "pcap"
#: ``ts_ns`` came from ``bpf_ktime_get_tai_ns()`` (TAI ns since epoch)
CLOCK_TAI = "tai"
#: ``ts_ns`` came from ``bpf_ktime_get_ns()`` (monotonic since boot, not since epoch)
CLOCK_MONO = "mono"

TO_VENUE = "to_venue"
FROM_VENUE = "from_venue"


class Event:
    """One L4 packet (a UDP datagram or a TCP segment) with what we know about it.

    Fields (all plain attributes; ``__slots__`` keeps it small and fast to build):

    ================  ==============================================================================
    ts_ns             int, ns since the epoch on ``clock`` (monotonic clock: ns since boot)
    clock             ``"pcap"`` | ``"tai"`` | ``"mono"``
    family            4 or 6
    src, dst          packed addresses (bytes of 4 or 16)
    sport, dport      ints
    transport         ``"tcp"`` | ``"udp"``
    payload           bytes: the L4 payload
    tcp_seq           int (TCP only; else 0)
    tcp_ack           int (TCP only; else 0)
    tcp_flags         int, the TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 ...)
    vlans             tuple of VLAN ids, outermost first (``()`` when untagged)
    frame_len         int, the frame length on the wire (pcap ``orig_len``; may exceed what was captured)
    venue             str or None (the exchange name from the config)
    venue_id          int, 1..63 in config order; 0 = no venue (the kernel's numbering)
    stream_kind       ``"order_entry"`` | ``"market_data"`` | None
    direction         ``"to_venue"`` | ``"from_venue"`` | None
    stream_offset     int or None (TCP after reassembly; see the module docstring)
    ================  ==============================================================================
    """

    __slots__ = ("ts_ns", "clock", "family", "src", "dst", "sport", "dport", "transport", "payload",
                 "tcp_seq", "tcp_ack", "tcp_flags", "vlans", "frame_len",
                 "venue", "venue_id", "stream_kind", "direction", "stream_offset")

    def __init__(self, ts_ns: int, clock: str, family: int, src: bytes, dst: bytes, sport: int,
                 dport: int, transport: str, payload: bytes, tcp_seq: int = 0, tcp_ack: int = 0,
                 tcp_flags: int = 0, vlans: Tuple[int, ...] = (), frame_len: int = 0) -> None:
        self.ts_ns = ts_ns
        self.clock = clock
        self.family = family
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.transport = transport
        self.payload = payload
        self.tcp_seq = tcp_seq
        self.tcp_ack = tcp_ack
        self.tcp_flags = tcp_flags
        self.vlans = vlans
        self.frame_len = frame_len
        self.venue: Optional[str] = None
        self.venue_id = 0
        self.stream_kind: Optional[str] = None
        self.direction: Optional[str] = None
        self.stream_offset: Optional[int] = None

    # -- conveniences (not on the hot path) ------------------------------------------------------
    @property
    def src_ip(self):
        """``src`` as an ``ipaddress`` object."""
        return ipaddress.ip_address(self.src)

    @property
    def dst_ip(self):
        """``dst`` as an ``ipaddress`` object."""
        return ipaddress.ip_address(self.dst)

    @property
    def flow(self) -> tuple:
        """``(transport, src, dst, sport, dport)``: this direction's flow key."""
        return (self.transport, self.src, self.dst, self.sport, self.dport)

    def to_dict(self) -> dict:
        """JSON-safe view (addresses as text, payload as hex)."""
        return {
            "ts_ns": self.ts_ns, "clock": self.clock, "src": str(self.src_ip), "dst": str(self.dst_ip),
            "sport": self.sport, "dport": self.dport, "transport": self.transport,
            "payload_len": len(self.payload), "payload": bytes(self.payload).hex(),
            "tcp_seq": self.tcp_seq, "tcp_ack": self.tcp_ack, "tcp_flags": self.tcp_flags,
            "vlans": list(self.vlans), "frame_len": self.frame_len, "venue": self.venue,
            "venue_id": self.venue_id, "stream_kind": self.stream_kind, "direction": self.direction,
            "stream_offset": self.stream_offset,
        }

    def __repr__(self) -> str:
        return (f"Event({self.transport} {self.src_ip}:{self.sport} -> {self.dst_ip}:{self.dport} "
                f"len={len(self.payload)} ts={self.ts_ns} venue={self.venue!r} dir={self.direction})")
