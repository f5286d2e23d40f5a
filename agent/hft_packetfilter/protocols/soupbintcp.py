"""SoupBinTCP 3.0 framing (Nasdaq "SoupBinTCP" specification, version 3.00) carrying OUCH 4.2 / 5.0.

Every packet is ``length(u16, big-endian, counts the type byte and payload) type(1) payload``:

==== ========================= ========= ============================================================
type packet                    direction payload
==== ========================= ========= ============================================================
``+`` Debug                    both      free text
``A`` Login Accepted           out       session(10) sequence_number(20, ASCII, space padded left)
``J`` Login Rejected           out       reject_reason_code(1): A not authorised, S session unavailable
``S`` Sequenced Data           out       one OUCH outbound message
``H`` Server Heartbeat         out       none
``Z`` End of Session           out       none
``L`` Login Request            in        username(6) password(10) requested_session(10)
                                         requested_sequence_number(20)
``U`` Unsequenced Data         in        one OUCH inbound message
``R`` Client Heartbeat         in        none
``O`` Logout Request           in        none
==== ========================= ========= ============================================================

:class:`SoupBinTCPDecoder` is a stream decoder: ``feed()`` takes the next bytes of one TCP direction,
keeps a partial packet for the next call and returns every complete packet. The OUCH payload of ``S``
packets is decoded as outbound, of ``U`` packets as inbound (the packet type fixes the direction; a
decoder built with ``direction=`` rejects packets of the other direction). Session packets come back as
:class:`SoupPacket`; data packets as :class:`~.ouch.OuchMessage` with ``soup_type`` and, for ``S``
packets after a Login Accepted, the session ``sequence`` number. A header that cannot be a packet
(length 0 or above ``max_packet``, unknown type) is counted and the stream resynchronises at the next
plausible header. Passwords are never kept.
"""
from __future__ import annotations

import re
from typing import Optional

from . import DecodeStats, ProtocolInfo, register
from .ouch import IN, OUT, OuchDecoder

PROTOCOL = "SoupBinTCP/OUCH"
SPEC = "SoupBinTCP 3.00 + Nasdaq OUCH 4.2 / 5.0"

PACKET_TYPES = {
    "+": ("Debug", None), "A": ("LoginAccepted", OUT), "J": ("LoginRejected", OUT),
    "S": ("SequencedData", OUT), "H": ("ServerHeartbeat", OUT), "Z": ("EndOfSession", OUT),
    "L": ("LoginRequest", IN), "U": ("UnsequencedData", IN), "R": ("ClientHeartbeat", IN),
    "O": ("LogoutRequest", IN),
}
# Exact packet lengths (type byte included) for the fixed-size packet types.
FIXED_LENGTHS = {"A": 31, "J": 2, "H": 1, "Z": 1, "L": 47, "R": 1, "O": 1}
_TYPE_BYTES = frozenset(ord(t) for t in PACKET_TYPES)
DEFAULT_MAX_PACKET = 4096
# A plausible header: a length below 4096 followed by a known packet type byte.
_HEADER_RE = re.compile(rb"(?=[\x00-\x0f][\x00-\xff][+AJSHZLURO])", re.DOTALL)


class SoupPacket:
    """A SoupBinTCP session packet (anything but sequenced / unsequenced data)."""

    __slots__ = ("msg_type", "name", "fields")
    protocol = PROTOCOL

    def __init__(self, msg_type: str, fields: Optional[dict] = None) -> None:
        self.msg_type = msg_type
        self.name = PACKET_TYPES[msg_type][0]
        self.fields = fields or {}

    def __getattr__(self, item):
        try:
            return self.fields[item]
        except KeyError:
            raise AttributeError(item) from None

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "msg_type": self.msg_type, "name": self.name, **self.fields}

    def __repr__(self) -> str:
        return f"SoupPacket({self.msg_type}, {self.fields!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, SoupPacket) and self.to_dict() == other.to_dict()


def _alpha(b) -> str:
    return bytes(b).decode("ascii", "replace").strip(" \x00")


def encode_packet(packet_type: str, payload: bytes = b"") -> bytes:
    return (len(payload) + 1).to_bytes(2, "big") + packet_type.encode("latin-1") + payload


def encode_login_request(username: str, password: str, session: str = "", sequence: int = 0) -> bytes:
    body = (username.encode().ljust(6)[:6] + password.encode().ljust(10)[:10]
            + session.encode().ljust(10)[:10] + str(sequence).encode().rjust(20)[:20])
    return encode_packet("L", body)


def encode_login_accepted(session: str, sequence: int) -> bytes:
    return encode_packet("A", session.encode().ljust(10)[:10] + str(sequence).encode().rjust(20)[:20])


class SoupBinTCPDecoder:
    """Stream decoder for one TCP direction of a SoupBinTCP session (see the module docstring)."""

    protocol = PROTOCOL
    spec = SPEC

    def __init__(self, direction: Optional[str] = None, ouch_version: Optional[str] = None,
                 max_packet: int = DEFAULT_MAX_PACKET) -> None:
        if direction not in (None, IN, OUT):
            raise ValueError(f"direction must be 'in', 'out' or None, not {direction!r}")
        self.direction = direction
        self.max_packet = max_packet
        self.stats = DecodeStats()
        self.ouch = {IN: OuchDecoder(IN, ouch_version), OUT: OuchDecoder(OUT, ouch_version)}
        self._buf = bytearray()
        self.next_sequence: Optional[int] = None   # sequence number of the next S packet, once known
        self.session: Optional[str] = None
        self.resyncs = 0

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a packet."""
        return len(self._buf)

    def feed(self, data, ts_ns: int = 0) -> list:
        try:
            return self._feed(data)
        except Exception:  # defensive: never raise on bad input
            self.stats.reject("internal_error")
            self._buf.clear()
            return []

    def _feed(self, data) -> list:
        buf = self._buf
        buf += data
        out: list = []
        pos = 0
        end = len(buf)
        max_packet = self.max_packet
        while end - pos >= 3:
            ln = (buf[pos] << 8) | buf[pos + 1]
            t = buf[pos + 2]
            if ln == 0 or ln > max_packet or t not in _TYPE_BYTES:
                pos = self._resync(buf, pos)
                continue
            if end - pos < 2 + ln:
                break
            self._packet(chr(t), buf, pos + 3, ln - 1, out)
            self.stats.bytes += 2 + ln
            pos += 2 + ln
        if pos:
            del buf[:pos]
        return out

    def _resync(self, buf: bytearray, pos: int) -> int:
        self.stats.reject("bad_header")
        self.resyncs += 1
        end = len(buf)
        m = _HEADER_RE.search(buf, pos + 1)
        while m is not None:
            p = m.start()
            if p + 3 <= end and ((buf[p] << 8) | buf[p + 1]) >= 1:
                return p
            m = _HEADER_RE.search(buf, p + 1)
        # Nothing plausible: keep the last two bytes, they may start a header split across feeds.
        return max(pos + 1, end - 2)

    def _packet(self, t: str, buf: bytearray, start: int, n: int, out: list) -> None:
        kind = PACKET_TYPES[t][1]
        if self.direction is not None and kind is not None and kind != self.direction:
            self.stats.reject("wrong_direction")
            return
        fixed = FIXED_LENGTHS.get(t)
        if fixed is not None and n + 1 != fixed:
            self.stats.reject("bad_length")
            return
        if t == "S" or t == "U":
            dec = self.ouch[OUT if t == "S" else IN]
            msg = dec.decode_message(buf, start, n)
            if msg is None:
                self.stats.reject("ouch_" + dec.last_reject)
                if t == "S" and self.next_sequence is not None:
                    self.next_sequence += 1   # the packet still consumed a sequence number
                return
            msg.soup_type = t
            if t == "S" and self.next_sequence is not None:
                msg.sequence = self.next_sequence
                self.next_sequence += 1
            self.stats.messages += 1
            out.append(msg)
            return
        fields: dict = {}
        if t == "+":
            fields["text"] = bytes(buf[start:start + n]).decode("latin-1")
        elif t == "A":
            self.session = _alpha(buf[start:start + 10])
            seq_txt = _alpha(buf[start + 10:start + 30])
            fields["session"] = self.session
            try:
                seq = int(seq_txt)
            except ValueError:
                self.stats.reject("bad_sequence_number")
                return
            fields["sequence_number"] = seq
            self.next_sequence = seq
        elif t == "J":
            fields["reject_reason_code"] = chr(buf[start])
        elif t == "L":
            fields["username"] = _alpha(buf[start:start + 6])
            fields["requested_session"] = _alpha(buf[start + 16:start + 26])
            seq_txt = _alpha(buf[start + 26:start + 46])
            try:
                fields["requested_sequence_number"] = int(seq_txt) if seq_txt else 0
            except ValueError:
                self.stats.reject("bad_sequence_number")
                return
        self.stats.messages += 1
        out.append(SoupPacket(t, fields))

INFO = register(ProtocolInfo(
    name=PROTOCOL,
    transport="tcp",
    stream_kind="order_entry",
    new_decoder=SoupBinTCPDecoder,
    default_ports=(),
    aliases=("OUCH/SoupBinTCP", "OUCH", "SoupBinTCP"),
    spec=SPEC,
))
