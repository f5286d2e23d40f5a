"""NYSE XDP / Pillar market data decoder (Integrated, BBO, Imbalances feeds) and OpenBook Ultra
framing.

Implements the public NYSE specifications "XDP Common Client Specification" (v2.x), "XDP
Integrated Feed Client Specification" v2.1 and "NYSE Pillar Integrated Feed / BBO Feed Client
Specification" v2.5 (the Pillar feeds keep the XDP packet framing):

* Packet header, little-endian: ``u16 PktSize``, ``u8 DeliveryFlag``, ``u8 NumberMsgs``,
  ``u32 SeqNum`` (of the first message), ``u32 SendTime`` (s), ``u32 SendTimeNS``; then messages,
  each ``u16 MsgSize`` (counting the 4-byte message header) + ``u16 MsgType`` + body.
* Message types 1 Sequence Number Reset, 2 Source Time Reference, 3 Symbol Index Mapping,
  34 Security Status, 100 Add Order, 101 Modify Order, 102 Delete Order, 103 Order Execution,
  104 Replace Order, 105 Imbalance, 140 Quote (BBO), 220 Trade, 223 Stock Summary. Other types
  are counted ``unknown_type:<n>`` and skipped. Fields are read in order while the message size
  allows, so versions that append fields (Pillar's longer Imbalance) still decode.
* Prices are u32 integers scaled by the symbol's PriceScaleCode from the Symbol Index Mapping;
  the raw integer is always kept and, once the mapping has been seen, an exact Decimal is added.

OpenBook Ultra (NYSE OpenBook Ultra Client Specification v2.1, big-endian) is framed only:
``u16 MsgSize`` (excluding itself), ``u16 MsgType``, ``u32 MsgSeqNum``, ``u32 SendTime``,
``u8 ProductID``, ``u8 RetransFlag``, ``u8 NumBodyEntries``, ``u8 LinkFlag``; its body entries
are counted, not decoded.
"""
from __future__ import annotations

import dataclasses
import struct
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

from . import DecodeStats, ProtocolInfo, register
from .sbe import json_safe

PROTOCOL = "XDP/UDP"
PACKET_HEADER = struct.Struct("<HBBIII")
MSG_HEADER = struct.Struct("<HH")
OPENBOOK_HEADER = struct.Struct(">HHIIBBBB")

_TS = ("source_time", "I")
_TNS = ("source_time_ns", "I")
_SYM = ("symbol_index", "I")
_SSEQ = ("symbol_seq_num", "I")
_OID = ("order_id", "Q")

# type -> list of layouts (name, fields, mandatory count); a layout whose full size equals the body
# wins, else the first whose mandatory part fits.
Layout = Tuple[str, List[Tuple[str, str]], int]
MESSAGES: Dict[int, List[Layout]] = {
    1: [("SequenceNumberReset", [_TS, _TNS, ("product_id", "B"), ("channel_id", "B")], 4)],
    2: [("SourceTimeReference", [("id", "I"), _SSEQ, _TS], 3)],
    3: [("SymbolIndexMapping", [_SYM, ("symbol", "a11"), ("reserved1", "B"), ("market_id", "H"),
                                ("system_id", "B"), ("exchange_code", "a1"), ("price_scale_code", "B"),
                                ("security_type", "a1"), ("lot_size", "H"), ("prev_close_price", "I"),
                                ("prev_close_volume", "I"), ("price_resolution", "B"), ("round_lot", "a1"),
                                ("mpv", "H"), ("unit_of_trade", "H"), ("reserved2", "H")], 7)],
    34: [("SecurityStatus", [_TS, _TNS, _SYM, _SSEQ, ("security_status", "a1"), ("halt_condition", "a1"),
                             ("reserved", "I"), ("price1", "P"), ("price2", "P"),
                             ("ssr_triggering_exchange_id", "a1"), ("ssr_triggering_volume", "I"),
                             ("time", "I"), ("ssr_state", "a1"), ("market_state", "a1"),
                             ("session_state", "a1")], 6)],
    100: [("AddOrder", [_TNS, _SYM, _SSEQ, _OID, ("price", "P"), ("volume", "I"), ("side", "a1"),
                        ("firm_id", "a5"), ("reserved", "B")], 7)],
    101: [("ModifyOrder", [_TNS, _SYM, _SSEQ, _OID, ("price", "P"), ("volume", "I"),
                           ("position_change", "B"), ("side", "a1"), ("reserved", "B")], 6)],
    102: [("DeleteOrder", [_TNS, _SYM, _SSEQ, _OID, ("reserved", "B")], 4)],
    103: [("OrderExecution", [_TNS, _SYM, _SSEQ, _OID, ("trade_id", "I"), ("price", "P"),
                              ("volume", "I"), ("printable_flag", "B")], 8)],
    104: [("ReplaceOrder", [_TNS, _SYM, _SSEQ, _OID, ("new_order_id", "Q"), ("price", "P"),
                           ("volume", "I"), ("side", "a1"), ("reserved", "B")], 7)],
    105: [("Imbalance", [_TS, _TNS, _SYM, _SSEQ, ("reference_price", "P"), ("paired_qty", "I"),
                        ("total_imbalance_qty", "I"), ("market_imbalance_qty", "I"), ("auction_time", "H"),
                        ("auction_type", "a1"), ("imbalance_side", "a1"),
                        ("continuous_book_clearing_price", "P"), ("auction_interest_clearing_price", "P"),
                        ("ssr_filing_price", "P"), ("indicative_match_price", "P"), ("upper_collar", "P"),
                        ("lower_collar", "P"), ("auction_status", "B"), ("freeze_status", "B"),
                        ("num_extensions", "B"), ("unpaired_qty", "I"), ("unpaired_side", "a1"),
                        ("significant_imbalance", "a1")], 10)],
    140: [("Quote", [_TNS, _SYM, _SSEQ, ("ask_price", "P"), ("ask_volume", "I"), ("bid_price", "P"),
                     ("bid_volume", "I"), ("quote_condition", "a1"), ("rpi_indicator", "a1")], 7)],
    220: [("Trade", [_TNS, _SYM, _SSEQ, ("trade_id", "I"), ("price", "P"), ("volume", "I"),
                     ("trade_cond1", "a1"), ("trade_cond2", "a1"), ("trade_cond3", "a1"),
                     ("trade_cond4", "a1")], 6)],
    223: [("StockSummary", [_TS, _TNS, _SYM, ("high_price", "P"), ("low_price", "P"), ("open", "P"),
                            ("close", "P"), ("total_volume", "I")], 8)],
}


def _code(kind: str) -> str:
    if kind[0] == "a":
        return f"{int(kind[1:])}s"
    return "I" if kind == "P" else kind


def _compile(layouts: List[Layout]):
    out = []
    for name, fields, mand in layouts:
        full = struct.Struct("<" + "".join(_code(k) for _, k in fields))
        prefixes = []
        for k in range(len(fields), mand - 1, -1):
            prefixes.append((struct.Struct("<" + "".join(_code(kk) for _, kk in fields[:k])), k))
        out.append((name, [f for f, _ in fields], [k for _, k in fields], full.size, prefixes))
    return out


_COMPILED = {t: _compile(ls) for t, ls in MESSAGES.items()}


@dataclasses.dataclass
class XdpMessage:
    msg_type: str          # decimal type number as a string, e.g. "100"
    name: str
    seq: int               # packet SeqNum + index in packet
    send_time_ns: int      # packet send time, ns since the Unix epoch
    fields: Dict[str, Any]
    ts_ns: int = 0
    protocol: str = PROTOCOL

    def to_dict(self) -> Dict[str, Any]:
        return {"protocol": self.protocol, "msg_type": self.msg_type, "name": self.name,
                "seq": self.seq, "send_time_ns": self.send_time_ns, **json_safe(self.fields)}


@dataclasses.dataclass
class PacketInfo:
    framing: str           # "xdp" or "openbook"
    size: int
    delivery_flag: int
    count: int
    seq: int
    send_time_ns: int
    types: List[int]
    num_body_entries: int = 0


class XdpDecoder:
    """``framing``: "auto" (XDP when the LE size matches the datagram, else OpenBook Ultra when the
    BE size + 2 matches), "xdp" or "openbook"."""

    def __init__(self, framing: str = "auto") -> None:
        self.framing = framing
        self.stats = DecodeStats()
        self.last_packet: Optional[PacketInfo] = None
        self.symbols: Dict[int, Tuple[str, int]] = {}     # symbol index -> (symbol, price scale)

    def feed(self, data: bytes, ts_ns: int = 0) -> List[XdpMessage]:
        try:
            return self._feed(bytes(data), ts_ns)
        except Exception as e:  # noqa: BLE001 - never raise on input
            self.stats.reject(f"internal:{type(e).__name__}")
            return []

    def _feed(self, data: bytes, ts_ns: int) -> List[XdpMessage]:
        n = len(data)
        self.stats.bytes += n
        if n < 4:
            self.stats.reject("truncated_header")
            return []
        framing = self.framing
        if framing == "auto":
            le = data[0] | data[1] << 8
            be = data[0] << 8 | data[1]
            if le == n and n >= PACKET_HEADER.size:
                framing = "xdp"
            elif be + 2 == n and n >= OPENBOOK_HEADER.size:
                framing = "openbook"
            else:
                framing = "xdp"
        if framing == "openbook":
            return self._openbook(data)
        return self._xdp(data, ts_ns)

    def _openbook(self, data: bytes) -> List[XdpMessage]:
        if len(data) < OPENBOOK_HEADER.size:
            self.stats.reject("truncated_header")
            return []
        size, mtype, seq, send, _prod, _retr, entries, _link = OPENBOOK_HEADER.unpack_from(data, 0)
        self.last_packet = PacketInfo("openbook", size, 0, 1, seq, send * 1_000_000_000, [mtype], entries)
        if size + 2 != len(data):
            self.stats.reject("bad_openbook_size")
            return []
        self.stats.reject(f"openbook_framed_only:{mtype}")
        return []

    def _xdp(self, data: bytes, ts_ns: int) -> List[XdpMessage]:
        out: List[XdpMessage] = []
        n = len(data)
        if n < PACKET_HEADER.size:
            self.stats.reject("truncated_header")
            return out
        size, flag, count, seq, send_s, send_ns = PACKET_HEADER.unpack_from(data, 0)
        send = send_s * 1_000_000_000 + send_ns
        info = PacketInfo("xdp", size, flag, count, seq, send, [])
        self.last_packet = info
        if size < PACKET_HEADER.size or size > n:
            self.stats.reject("bad_packet_size")
            return out
        off = PACKET_HEADER.size
        for i in range(count):
            if size - off < MSG_HEADER.size:
                self.stats.reject("truncated_message")
                return out
            msize, mtype = MSG_HEADER.unpack_from(data, off)
            if msize < MSG_HEADER.size or off + msize > size:
                self.stats.reject("bad_message_size")
                return out
            info.types.append(mtype)
            body, blen = off + MSG_HEADER.size, msize - MSG_HEADER.size
            off += msize
            layouts = _COMPILED.get(mtype)
            if layouts is None:
                self.stats.reject(f"unknown_type:{mtype}")
                continue
            chosen = None
            for lay in layouts:
                if lay[3] == blen:
                    chosen = (lay, lay[4][0])
                    break
            if chosen is None:
                for lay in layouts:
                    for st, k in lay[4]:
                        if st.size <= blen:
                            chosen = (lay, (st, k))
                            break
                    if chosen:
                        break
            if chosen is None:
                self.stats.reject(f"short:{mtype}")
                continue
            (name, names, kinds, _full, _p), (st, k) = chosen
            vals = st.unpack_from(data, body)
            fields: Dict[str, Any] = {}
            for j in range(k):
                v = vals[j]
                if kinds[j][0] == "a":
                    v = v.decode("latin-1").rstrip(" \x00")
                fields[names[j]] = v
            self._prices(mtype, fields, kinds[:k], names[:k])
            self.stats.messages += 1
            out.append(XdpMessage(str(mtype), name, seq + i, send, fields, ts_ns))
        if off != size:
            self.stats.reject("trailing_bytes")
        return out

    def _prices(self, mtype: int, fields: Dict[str, Any], kinds: List[str], names: List[str]) -> None:
        if mtype == 3:
            scale = fields.get("price_scale_code")
            if scale is not None and scale <= 18:
                if len(self.symbols) > 200_000:
                    self.symbols.clear()
                self.symbols[fields["symbol_index"]] = (fields.get("symbol", ""), scale)
            return
        sym = self.symbols.get(fields.get("symbol_index", -1))
        if sym is None:
            return
        fields["symbol"] = sym[0]
        scale = Decimal(1).scaleb(-sym[1])
        for name, kind in zip(names, kinds):
            if kind == "P":
                fields[name + "_decimal"] = Decimal(fields[name]) * scale


def new_decoder() -> XdpDecoder:
    return XdpDecoder()


INFO = register(ProtocolInfo(
    name=PROTOCOL, transport="udp", stream_kind="market_data", new_decoder=new_decoder,
    aliases=("XDP", "Pillar/UDP", "NYSE/XDP"),
    spec="NYSE XDP Integrated Feed v2.1 / BBO v2.3; NYSE Pillar Integrated & BBO feeds v2.5; "
         "OpenBook Ultra v2.1 (framing)",
))
