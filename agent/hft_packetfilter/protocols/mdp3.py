"""CME MDP 3.0 market data (SBE) decoder.

Implements the public CME Globex "MDP 3.0 Market Data" framing:

* UDP packets (incremental, snapshot and instrument feeds): a Binary Packet Header
  ``u32 LE MsgSeqNum`` + ``u64 LE SendingTime`` (ns since the Unix epoch), then messages, each a
  ``u16 LE MsgSize`` (counting itself) followed by the SBE message header (blockLength,
  templateId, schemaId, version) and the body;
* the TCP framing of MDP 3.0 v12/v13 TCP recovery as it appears on the wire in the public OMI
  captures: a 2-byte ``0xCAFE`` encoding marker (SBE 1.0 little-endian, as in the Simple Open
  Framing Header) in front of the same binary packet header and messages. Packets are
  self-delimiting by their message sizes; the stream decoder buffers partial packets.

Message bodies are decoded through :mod:`.sbe` with a schema XML loaded at run time (the CME
``templates_FixBinary.xml``, schema id 1; version 9 was used for the tests). Templates the schema
lacks (for example 64/65 "LongQty" books/trades from MDP3 schema v12+, or the TCP recovery
schema id 2 templates 208-210) are counted as ``unknown_template:<id>`` while framing continues.
Without a schema every message is counted as ``no_schema`` and framing still works.

Prices stay exact: SBE decimal composites (PRICE, PRICE9, PRICENULL9 ...) decode to
:class:`decimal.Decimal` whose digits and exponent are the wire mantissa and exponent
(``price.as_tuple()``); :func:`mantissa_exponent` gives the integer pair back.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from . import DecodeStats, ProtocolInfo, register
from .sbe import Schema, SchemaError, json_safe

PROTOCOL = "MDP3/UDP"
SCHEMA_ENV = "HFTPF_MDP3_SCHEMA"
TCP_MARKER = b"\xfe\xca"          # 0xCAFE little-endian: SBE 1.0 LE encoding type
PACKET_HEADER = struct.Struct("<IQ")
MSG_SIZE = struct.Struct("<H")
SBE_HEADER = struct.Struct("<HHHH")
_MIN_MSG = 2 + SBE_HEADER.size

_default_schema_path: Optional[str] = None
_schema_cache: Dict[str, Schema] = {}


def set_default_schema(path: Optional[Union[str, Path]]) -> None:
    """Schema XML that :func:`new_decoder` (the registry factory) uses; None clears it."""
    global _default_schema_path
    _default_schema_path = None if path is None else str(path)


def load_schema(path: Union[str, Path]) -> Schema:
    """Load (once per path) an MDP3 SBE schema."""
    key = str(Path(path).resolve())
    s = _schema_cache.get(key)
    if s is None:
        s = Schema.from_file(key)
        _schema_cache[key] = s
    return s


def mantissa_exponent(price: Optional[Decimal]) -> Optional[Tuple[int, int]]:
    """The exact integer (mantissa, exponent) pair of a decoded SBE decimal."""
    if price is None:
        return None
    sign, digits, exp = price.as_tuple()
    m = int("".join(map(str, digits)) or "0")
    return (-m if sign else m), int(exp)


_TRAILING_ID = re.compile(r"\d+$")


@dataclasses.dataclass
class Mdp3Message:
    """One decoded MDP3 message with the packet it came in."""

    msg_type: str              # template name without its id suffix, e.g. "MDIncrementalRefreshBook"
    template_id: int
    name: str                  # schema name, e.g. "MDIncrementalRefreshBook46"
    schema_id: int
    version: int
    seq: int                   # packet MsgSeqNum
    sending_time: int          # packet SendingTime, ns since the Unix epoch
    fields: Dict[str, Any]
    ts_ns: int = 0
    protocol: str = PROTOCOL

    def to_dict(self) -> Dict[str, Any]:
        return {"protocol": self.protocol, "msg_type": self.msg_type, "template_id": self.template_id,
                "name": self.name, "schema_id": self.schema_id, "version": self.version,
                "seq": self.seq, "sending_time": self.sending_time, **json_safe(self.fields)}


@dataclasses.dataclass
class PacketInfo:
    seq: int
    sending_time: int
    messages: int                              # messages framed (decoded or not)
    templates: List[Tuple[int, int, int]]      # (templateId, schemaId, version) per message
    framing: str                               # "udp" or "tcp"


class Mdp3Decoder:
    """MDP3 decoder. ``transport`` is "udp" (one datagram per feed; a datagram that starts with the
    0xCAFE marker is framed as the TCP form), or "tcp" (a byte stream, buffered across feeds)."""

    def __init__(self, schema: Optional[Schema] = None, transport: str = "udp") -> None:
        self.schema = schema
        self.transport = transport
        self.stats = DecodeStats()
        self.unknown_templates: collections.Counter = collections.Counter()  # (templateId, schemaId, version)
        self.packets: List[PacketInfo] = []     # last packets seen (bounded)
        self.last_seq: Optional[int] = None
        self._buf = bytearray()
        self._cur: Optional[PacketInfo] = None

    # -- public

    def feed(self, data: bytes, ts_ns: int = 0) -> List[Mdp3Message]:
        try:
            if self.transport == "tcp":
                return self._feed_stream(data, ts_ns)
            return self._feed_datagram(bytes(data), ts_ns)
        except Exception as e:  # noqa: BLE001 - the contract: never raise on input
            self.stats.reject(f"internal:{type(e).__name__}")
            self._buf.clear()
            self._cur = None
            return []

    # -- framing

    def _feed_datagram(self, data: bytes, ts_ns: int) -> List[Mdp3Message]:
        out: List[Mdp3Message] = []
        if data[:2] == TCP_MARKER:
            off = 2
            framing = "tcp"
        else:
            off = 0
            framing = "udp"
        if len(data) < off + PACKET_HEADER.size:
            self.stats.reject("truncated_packet_header")
            return out
        end = self._packet(data, off, len(data), framing, ts_ns, out, stream=False)
        if end < len(data):
            self.stats.reject("trailing_bytes")
        self.stats.bytes += len(data)
        return out

    def _feed_stream(self, data: bytes, ts_ns: int) -> List[Mdp3Message]:
        """TCP: packets are not length-prefixed, so messages are decoded as they complete and a
        0xCAFE marker where a message size is expected starts the next packet."""
        out: List[Mdp3Message] = []
        buf = self._buf
        buf += data
        self.stats.bytes += len(data)
        if len(buf) > 1 << 22:          # a stream that never frames must not grow memory
            self.stats.reject("buffer_overflow")
            buf.clear()
            self._cur = None
            return out
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            if buf[pos:pos + 2] == TCP_MARKER:
                if n - pos < 2 + PACKET_HEADER.size:
                    break
                seq, sending = PACKET_HEADER.unpack_from(buf, pos + 2)
                self._cur = PacketInfo(seq, sending, 0, [], "tcp")
                self.last_seq = seq
                self._remember(self._cur)
                pos += 2 + PACKET_HEADER.size
                continue
            size = MSG_SIZE.unpack_from(buf, pos)[0]
            if self._cur is None or size < _MIN_MSG:
                self.stats.reject("resync")
                self._cur = None
                nxt = buf.find(TCP_MARKER, pos + 1)
                pos = n - 1 if nxt < 0 else nxt
                continue
            if n - pos < size:
                break
            chunk = bytes(buf[pos:pos + size])
            self._message(chunk, 0, size, self._cur, ts_ns, out)
            pos += size
        del buf[:pos]
        return out

    def _remember(self, info: PacketInfo) -> None:
        self.packets.append(info)
        if len(self.packets) > 64:
            del self.packets[:32]

    def _packet(self, data: bytes, off: int, end: int, framing: str, ts_ns: int,
                out: List[Mdp3Message], stream: bool) -> int:
        seq, sending = PACKET_HEADER.unpack_from(data, off)
        off += PACKET_HEADER.size
        info = PacketInfo(seq, sending, 0, [], framing)
        self.last_seq = seq
        self._remember(info)
        while off < end:
            if end - off < 2:
                self.stats.reject("truncated_message_size")
                return off
            size = MSG_SIZE.unpack_from(data, off)[0]
            if size < _MIN_MSG:
                self.stats.reject("bad_message_size")
                return off
            if off + size > end:
                self.stats.reject("truncated_message")
                return off
            self._message(data, off, off + size, info, ts_ns, out)
            off += size
        return off

    def _message(self, data: bytes, off: int, mend: int, info: PacketInfo, ts_ns: int,
                 out: List[Mdp3Message]) -> None:
        bl, tid, sid, ver = SBE_HEADER.unpack_from(data, off + 2)
        info.messages += 1
        info.templates.append((tid, sid, ver))
        schema = self.schema
        if schema is None:
            self.stats.reject("no_schema")
            return
        if sid != schema.id or tid not in schema.messages:
            self.unknown_templates[(tid, sid, ver)] += 1
            self.stats.reject(f"unknown_template:{tid}")
            return
        msg, reason = schema.decode(data, off + 2 + SBE_HEADER.size, mend, tid, bl, ver, sid)
        if msg is None:
            self.stats.reject(f"{reason}:{tid}" if reason == "truncated" else reason)
            return
        self.stats.messages += 1
        out.append(Mdp3Message(_TRAILING_ID.sub("", msg.name) or msg.name, tid, msg.name, sid, ver,
                               info.seq, info.sending_time, msg.fields, ts_ns))


def new_decoder(schema_path: Optional[Union[str, Path]] = None, transport: str = "udp") -> Mdp3Decoder:
    """Registry factory. Schema from the argument, else ``set_default_schema``, else the
    ``HFTPF_MDP3_SCHEMA`` environment variable; with none (or an unreadable one, counted as
    ``schema_error``) the decoder frames packets and counts messages as ``no_schema``."""
    path = schema_path or _default_schema_path or os.environ.get(SCHEMA_ENV) or None
    schema = None
    error = None
    if path:
        try:
            schema = load_schema(path)
        except (OSError, SchemaError) as e:
            error = e
    d = Mdp3Decoder(schema, transport)
    if error is not None:
        d.stats.reject("schema_error")
    return d


INFO = register(ProtocolInfo(
    name=PROTOCOL, transport="udp", stream_kind="market_data", new_decoder=new_decoder,
    aliases=("MDP3", "CME/MDP3"),
    spec="CME MDP 3.0 (SBE 1.0, templates_FixBinary schema id 1 v9; v12/v13 TCP framing)",
))
