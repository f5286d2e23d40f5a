"""MoldUDP64 framing (Nasdaq MoldUDP64 Protocol Specification, version 1.00) carrying ITCH 5.0.

Downstream packet (big-endian)::

    session(10, ASCII) sequence_number(u64) message_count(u16) { length(u16) message(length) } * count

* ``message_count == 0``: heartbeat; the sequence number is the next one expected.
* ``message_count == 0xFFFF``: end of session; no message blocks follow.
* Request packet (client -> re-request server): ``session(10) sequence_number(u64)
  requested_message_count(u16)`` and nothing else. A 20-byte datagram whose count is neither 0 nor
  0xFFFF can only be a request (a downstream packet with a count > 0 carries messages).

``MoldUDP64Decoder.feed(datagram)`` returns the ITCH 5.0 messages of a data packet (decoded in one
batch by the inner decoder's ``decode_buffer``) and one :class:`MoldPacket` for heartbeats, end of
session and requests. The header of the last packet is in ``decoder.last_header``; sequence gaps and
duplicates are counted in ``decoder.gaps`` / ``decoder.duplicates`` (feed quality, not decode errors).
"""
from __future__ import annotations

import collections
import struct
from typing import Optional

from . import DecodeStats, ProtocolInfo, register
from .itch50 import ITCH50Decoder

PROTOCOL = "ITCH/MoldUDP64"
SPEC = "MoldUDP64 1.00 + Nasdaq TotalView-ITCH 5.0"

HEADER = struct.Struct(">10sQH")
HEADER_LEN = HEADER.size  # 20
END_OF_SESSION = 0xFFFF


class MoldPacket:
    """A MoldUDP64 packet that carries no messages: heartbeat ("HB"), end of session ("EOS") or a
    retransmission request ("REQ")."""

    __slots__ = ("msg_type", "session", "sequence", "count")
    protocol = PROTOCOL

    def __init__(self, msg_type: str, session: str, sequence: int, count: int) -> None:
        self.msg_type = msg_type
        self.session = session
        self.sequence = sequence
        self.count = count

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "msg_type": self.msg_type, "session": self.session,
                "sequence": self.sequence, "count": self.count}

    def __repr__(self) -> str:
        return f"MoldPacket({self.msg_type}, session={self.session!r}, seq={self.sequence}, count={self.count})"

    def __eq__(self, other) -> bool:
        return isinstance(other, MoldPacket) and self.to_dict() == other.to_dict()


def _session(raw: bytes) -> str:
    return raw.rstrip(b" \x00").decode("ascii", "replace")


def parse_header(datagram) -> Optional[tuple]:
    """(session, sequence, count) of a MoldUDP64 packet, or None when it is shorter than the header."""
    if len(datagram) < HEADER_LEN:
        return None
    s, seq, cnt = HEADER.unpack_from(datagram, 0)
    return _session(s), seq, cnt


def encode_packet(session: str, sequence: int, messages=(), count: Optional[int] = None) -> bytes:
    """Build a downstream packet (tests, simulators). ``count`` overrides the message count field
    (0 heartbeat, 0xFFFF end of session)."""
    hdr = HEADER.pack(session.encode("ascii").ljust(10, b" ")[:10], sequence,
                      len(messages) if count is None else count)
    return hdr + b"".join(len(m).to_bytes(2, "big") + m for m in messages)


def encode_request(session: str, sequence: int, requested: int) -> bytes:
    return HEADER.pack(session.encode("ascii").ljust(10, b" ")[:10], sequence, requested)


class MoldUDP64Decoder:
    """Datagram decoder: one UDP payload per ``feed`` call. ``inner`` decodes the message blocks
    (ITCH 5.0 by default; anything with ``decode_buffer(buf, offset, count)`` and ``stats``)."""

    protocol = PROTOCOL
    spec = SPEC

    def __init__(self, inner=None) -> None:
        self.inner = inner if inner is not None else ITCH50Decoder()
        self.stats = DecodeStats()
        self.last_header: Optional[tuple] = None
        self.next_seq: Optional[int] = None
        self.session: Optional[str] = None
        self.gaps = 0            # messages missing between packets
        self.duplicates = 0      # messages seen again (sequence behind the expected one)
        self.packets = 0
        self._inner_seen: collections.Counter = collections.Counter()

    @property
    def symbols(self):
        return getattr(self.inner, "symbols", {})

    def feed(self, datagram, ts_ns: int = 0) -> list:
        try:
            return self._feed(datagram)
        except Exception:  # defensive: the contract says never raise on bad input
            self.stats.reject("internal_error")
            return []

    def feed_book(self, datagram, book, types) -> int:
        """``feed`` for a payload with message blocks (count 1..0xFFFE, more than the header), whose
        ITCH messages go straight into ``book`` (``ItchBook.apply_buffer``) instead of being returned;
        ``types`` (a Counter) gets their types. Same decoder state and stats as ``feed``; returns the
        number of messages. The caller routes heartbeats, end of session and re-requests to ``feed``."""
        try:
            return self._feed(datagram, book, types)
        except Exception:  # defensive, as feed
            self.stats.reject("internal_error")
            return 0

    def _feed(self, datagram, book=None, types=None):
        n = len(datagram)
        if n < HEADER_LEN:
            self.stats.reject("short_header")
            return []
        raw_session, seq, count = HEADER.unpack_from(datagram, 0)
        session = _session(raw_session)
        self.last_header = (session, seq, count)
        self.packets += 1
        if count == 0 or count == END_OF_SESSION:
            if n != HEADER_LEN:
                self.stats.reject("trailing_bytes")
            kind = "HB" if count == 0 else "EOS"
            self._track(session, seq, 0)
            self.stats.messages += 1
            self.stats.bytes += n
            return [MoldPacket(kind, session, seq, count)]
        if n == HEADER_LEN:
            # No message blocks: a retransmission request (requested message count).
            self.stats.messages += 1
            self.stats.bytes += n
            return [MoldPacket("REQ", session, seq, count)]
        inner = self.inner
        before = inner.stats.rejected
        if book is None:
            msgs = inner.decode_buffer(datagram, HEADER_LEN, count)
            good = len(msgs)
        else:
            msgs = good = book.apply_buffer(datagram, HEADER_LEN, count, decoder=inner, types=types)
        if inner.stats.rejected != before:
            # Mirror the inner decoder's new rejects (by reason) so one stats object tells the story.
            now = inner.stats.rejects
            for reason, c in now.items():
                d = c - self._inner_seen.get(reason, 0)
                if d > 0:
                    self.stats.reject("itch_" + reason, d)
            self._inner_seen = collections.Counter(now)
        if not getattr(inner, "last_truncated", False):
            if getattr(inner, "last_framed", count) != count:
                self.stats.reject("count_mismatch")
            elif getattr(inner, "last_offset", n) != n:
                self.stats.reject("trailing_bytes")
        self._track(session, seq, count)
        self.stats.messages += good
        self.stats.bytes += n
        return msgs

    def _track(self, session: str, seq: int, count: int) -> None:
        if session != self.session:
            self.session = session
            self.next_seq = None
        if self.next_seq is not None and seq != 0:
            if seq > self.next_seq:
                self.gaps += seq - self.next_seq
            elif seq < self.next_seq:
                self.duplicates += min(count, self.next_seq - seq) if count else 0
        if seq != 0:
            nxt = seq + count
            if self.next_seq is None or nxt > self.next_seq:
                self.next_seq = nxt

    def decode_buffer(self, datagram) -> list:
        """Batch API: same result as ``feed`` (one whole MoldUDP64 payload)."""
        return self.feed(datagram)


INFO = register(ProtocolInfo(
    name=PROTOCOL,
    transport="udp",
    stream_kind="market_data",
    new_decoder=MoldUDP64Decoder,
    default_ports=(),
    aliases=("MoldUDP64", "ITCH"),
    spec=SPEC,
))
