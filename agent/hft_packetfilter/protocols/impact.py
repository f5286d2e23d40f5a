"""ICE iMpact multicast market data decoder.

Implements the framing and common messages of the public "ICE iMpact Multicast Feed Message
Specification" (checked against versions 1.1.24 and 1.1.33). All integers are big-endian:

* Packet header (16 bytes): ``u16 SessionNumber``, ``u32 SequenceNumber`` (of the first message),
  ``u16 NumberOfMessages``, ``u64 SentDateTime`` (ms since the Unix epoch). A packet with no
  messages is a heartbeat.
* Each message: ``char MessageType``, ``u16 BodyLength`` (excluding these 3 bytes), body.
* Decoded types: C Market Snapshot, D Market Snapshot Order, E Add/Modify Order, F Delete Order,
  G Trade, H Investigated Trade, I Cancelled Trade, J Market Statistics, K Market State Change,
  L System Text, M Open Interest, N Open Price, O Settlement Price, c Close Price, f Market Event,
  g Pre-Open Price Indicator, m/t/s/r price-level snapshot/add/change/delete, T Message Bundle
  Marker, U New Options Strategy Definition and b Special Field (leading fields only; their
  repeating legs are skipped by length). Other types are counted ``unknown_type:<c>``.
* Fields are read in order while the body length allows, so older spec versions with fewer
  trailing fields (1.1.24's shorter Add/Modify Order) decode too.
* Prices are signed 64-bit integers to which the market's DealPriceDenominator (sent in the
  market definition messages) applies; they are kept as exact integers.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Any, Dict, List, Tuple

from . import DecodeStats, ProtocolInfo, register
from .sbe import json_safe

PROTOCOL = "iMpact/UDP"
PACKET_HEADER = struct.Struct(">HIHQ")
MSG_HEADER = struct.Struct(">cH")

_MID = ("market_id", "i")
_OID = ("order_id", "q")
_MDT = ("message_date_time", "q")

MESSAGES: Dict[str, Tuple[str, List[Tuple[str, str]], int]] = {
    "C": ("MarketSnapshot", [_MID, ("market_type", "h"), ("trading_status", "a1"), ("volume", "i"),
                             ("block_volume", "i"), ("efs_volume", "i"), ("efp_volume", "i"),
                             ("open_interest", "i"), ("opening_price", "q"),
                             ("settlement_price_with_deal_price_precision", "q"), ("high", "q"),
                             ("low", "q"), ("vwap", "q"), ("num_of_book_entries", "i"),
                             ("last_trade_price", "q"), ("last_trade_quantity", "i"),
                             ("last_trade_date_time", "q"), ("settle_price_date_time", "q"),
                             ("last_message_sequence_id", "i"), ("reserved", "a2"),
                             ("open_interest_date", "a10"), ("is_settle_price_official", "a1"),
                             ("settlement_price", "q"), ("has_previous_day_settlement_price", "a1"),
                             ("previous_day_settlement_price", "q")], 14),
    "D": ("MarketSnapshotOrder", [_MID, _OID, ("order_sequence_id", "h"), ("side", "a1"), ("price", "q"),
                                  ("quantity", "i"), ("is_implied", "a1"), ("is_rfq", "a1"),
                                  ("order_entry_date_time", "q"), ("sequence_within_millis", "i")], 9),
    "E": ("AddOrModifyOrder", [_MID, _OID, ("order_sequence_id", "h"), ("side", "a1"), ("price", "q"),
                               ("quantity", "i"), ("is_implied", "a1"), ("is_rfq", "a1"),
                               ("order_entry_date_time", "q"), ("extra_flags", "b"),
                               ("sequence_within_millis", "i"), ("modification_timestamp_ns", "q")], 9),
    "F": ("DeleteOrder", [_MID, _OID, _MDT, ("sequence_within_millis", "i")], 3),
    "G": ("Trade", [_MID, ("trade_id", "q"), ("is_system_priced_leg", "a1"), ("price", "q"),
                    ("quantity", "i"), ("off_market_trade_indicator", "a1"), ("transact_date_time", "q"),
                    ("system_priced_leg_type", "a1"), ("is_implied_spread_at_market_open", "a1"),
                    ("is_adjusted_trade", "a1"), ("aggressor_side", "a1"), ("extra_flags", "b"),
                    ("off_market_trade_type", "a3"), ("sequence_within_millis", "i")], 7),
    "H": ("InvestigatedTrade", [_MID, ("trade_id", "q"), ("price", "q"), ("quantity", "i"),
                                ("off_market_trade_indicator", "a1"), _MDT, ("investigation_status", "a1"),
                                ("off_market_trade_type", "a3")], 6),
    "I": ("CancelledTrade", [_MID, ("trade_id", "q"), ("price", "q"), ("quantity", "i"),
                             ("off_market_trade_indicator", "a1"), _MDT, ("off_market_trade_type", "a3")], 6),
    "J": ("MarketStatistics", [_MID, ("volume", "i"), ("block_volume", "i"), ("efs_volume", "i"),
                               ("efp_volume", "i"), ("high", "q"), ("low", "q"), ("vwap", "q"), _MDT], 9),
    "K": ("MarketStateChange", [_MID, ("trading_status", "a1"), _MDT], 3),
    "L": ("SystemText", [("text", "a200"), _MDT, ("text_extra", "a800")], 2),
    "M": ("OpenInterest", [_MID, ("open_interest", "i"), ("open_interest_change", "i"), _MDT,
                           ("open_interest_date", "a10")], 4),
    "N": ("OpenPrice", [_MID, ("open_price", "q"), _MDT], 3),
    "O": ("SettlementPrice", [_MID, ("settlement_price_with_deal_price_precision", "q"), _MDT,
                              ("is_official", "a1"), ("valuation_date_time", "q"), ("settlement_price", "q")], 3),
    "c": ("ClosePrice", [_MID, ("close_price", "q"), _MDT], 3),
    "f": ("MarketEvent", [_MID, ("event_type", "a1"), _MDT], 3),
    "g": ("PreOpenPriceIndicator", [_MID, ("pre_open_price", "q"), _MDT, ("has_pre_open_volume", "a1"),
                                    ("pre_open_volume", "i")], 3),
    "m": ("MarketSnapshotPriceLevel", [_MID, ("side", "a1"), ("price_level_position", "b"), ("price", "q"),
                                       ("quantity", "i"), ("order_count", "h"), ("implied_quantity", "i"),
                                       ("implied_order_count", "h")], 8),
    "t": ("AddPriceLevel", [_MID, ("side", "a1"), ("price_level_position", "b"), ("price", "q"),
                            ("quantity", "i"), ("order_count", "h"), ("implied_quantity", "i"),
                            ("implied_order_count", "h"), ("timestamp_ns", "q")], 8),
    "s": ("ChangePriceLevel", [_MID, ("side", "a1"), ("price_level_position", "b"), ("price", "q"),
                               ("quantity", "i"), ("order_count", "h"), ("implied_quantity", "i"),
                               ("implied_order_count", "h"), ("timestamp_ns", "q")], 8),
    "r": ("DeletePriceLevel", [_MID, ("side", "a1"), ("price_level_position", "b"), ("timestamp_ns", "q")], 3),
    "T": ("MessageBundleMarker", [("start_or_end", "a1")], 1),
    "U": ("NewOptionsStrategyDefinition", [_MID, ("underlying_market_id", "i"), ("contract_symbol", "a35"),
                                           ("trading_status", "a1"), ("order_price_denominator", "a1"),
                                           ("increment_price", "i"), ("increment_qty", "i"),
                                           ("min_qty", "i")], 8),
    "b": ("SpecialField", [("num_special_field", "b")], 1),
}


def _code(kind: str) -> str:
    return f"{int(kind[1:])}s" if kind[0] == "a" else kind


def _compile(fields: List[Tuple[str, str]], mand: int):
    prefixes = [(struct.Struct(">" + "".join(_code(k) for _, k in fields[:n])), n)
                for n in range(len(fields), mand - 1, -1)]
    return [f for f, _ in fields], [k for _, k in fields], prefixes


_COMPILED = {t: (name, *_compile(f, m)) for t, (name, f, m) in MESSAGES.items()}


@dataclasses.dataclass
class ImpactMessage:
    msg_type: str          # the one-letter type, e.g. "E"
    name: str
    session: int
    seq: int               # packet sequence number + index in packet
    sent_ms: int           # packet SentDateTime, ms since the Unix epoch
    fields: Dict[str, Any]
    ts_ns: int = 0
    protocol: str = PROTOCOL

    def to_dict(self) -> Dict[str, Any]:
        return {"protocol": self.protocol, "msg_type": self.msg_type, "name": self.name,
                "session": self.session, "seq": self.seq, "sent_ms": self.sent_ms,
                **json_safe(self.fields)}


@dataclasses.dataclass
class PacketInfo:
    session: int
    seq: int
    count: int
    sent_ms: int
    types: List[str]


class ImpactDecoder:
    def __init__(self) -> None:
        self.stats = DecodeStats()
        self.last_packet: PacketInfo = PacketInfo(0, 0, 0, 0, [])

    def feed(self, data: bytes, ts_ns: int = 0) -> List[ImpactMessage]:
        try:
            return self._feed(bytes(data), ts_ns)
        except Exception as e:  # noqa: BLE001 - never raise on input
            self.stats.reject(f"internal:{type(e).__name__}")
            return []

    def _feed(self, data: bytes, ts_ns: int) -> List[ImpactMessage]:
        out: List[ImpactMessage] = []
        n = len(data)
        self.stats.bytes += n
        if n < PACKET_HEADER.size:
            self.stats.reject("truncated_header")
            return out
        session, seq, count, sent = PACKET_HEADER.unpack_from(data, 0)
        info = PacketInfo(session, seq, count, sent, [])
        self.last_packet = info
        off = PACKET_HEADER.size
        for i in range(count):
            if n - off < MSG_HEADER.size:
                self.stats.reject("truncated_message")
                return out
            t, blen = MSG_HEADER.unpack_from(data, off)
            body = off + MSG_HEADER.size
            if body + blen > n:
                self.stats.reject("bad_message_length")
                return out
            off = body + blen
            mtype = t.decode("latin-1")
            info.types.append(mtype)
            spec = _COMPILED.get(mtype)
            if spec is None:
                self.stats.reject(f"unknown_type:{mtype}")
                continue
            name, names, kinds, prefixes = spec
            for st, k in prefixes:
                if st.size <= blen:
                    break
            else:
                self.stats.reject(f"short:{mtype}")
                continue
            vals = st.unpack_from(data, body)
            fields: Dict[str, Any] = {}
            for j in range(k):
                v = vals[j]
                if kinds[j][0] == "a":
                    v = v.decode("latin-1").rstrip(" \x00")
                fields[names[j]] = v
            self.stats.messages += 1
            out.append(ImpactMessage(mtype, name, session, seq + i, sent, fields, ts_ns))
        if off != n:
            self.stats.reject("trailing_bytes")
        return out


def new_decoder() -> ImpactDecoder:
    return ImpactDecoder()


INFO = register(ProtocolInfo(
    name=PROTOCOL, transport="udp", stream_kind="market_data", new_decoder=new_decoder,
    aliases=("IMPACT",),
    spec="ICE iMpact Multicast Feed Message Specification 1.1.24 / 1.1.33",
))
