"""Cboe PITCH multicast depth-of-book decoder.

Implements the Sequenced Unit Header and the message layouts of the public Cboe US Equities
(BZX/BYX/EDGX/EDGA) Multicast PITCH Specification 2.x (checked against v2.41), which the Cboe
Options (v2.39) and Cboe Futures (CFE PITCH v1.1) feeds share for their common messages:

* Sequenced Unit Header, little-endian: ``u16 HdrLength`` (whole datagram), ``u8 HdrCount``,
  ``u8 HdrUnit``, ``u32 HdrSequence`` (0 for unsequenced); then HdrCount messages, each
  ``u8 Length`` (counting itself) + ``u8 MessageType`` + body.
* Prices: "long" prices are u64 with 4 implied decimals, "short" prices u16 with 2; both are kept
  as integers and exposed exactly as :class:`decimal.Decimal`.

Fields are read in order for as long as the message length allows, so venue variants that omit
trailing fields (CFE's Add Order Short has no Add Flags) or append new ones still decode; a message
shorter than its mandatory part is rejected ``short:<type>``. Unknown types are counted as
``unknown_type:0xNN`` and skipped by their length.
"""
from __future__ import annotations

import dataclasses
import struct
from decimal import Decimal
from typing import Any, Dict, List, Tuple

from . import DecodeStats, ProtocolInfo, register
from .sbe import json_safe

PROTOCOL = "PITCH/UDP"
UNIT_HEADER = struct.Struct("<HBBI")

# field kinds: struct code or "aN" (alphanumeric of N bytes), "lp" long price, "sp" short price
_LP, _SP = "lp", "sp"


def _f(*spec: Tuple[str, str]) -> List[Tuple[str, str]]:
    return list(spec)


_TO = ("time_offset", "I")
_OID = ("order_id", "Q")
_EXE = ("execution_id", "Q")

# type -> (name, fields, number of mandatory fields)
MESSAGES: Dict[int, Tuple[str, List[Tuple[str, str]], int]] = {
    0x20: ("Time", _f(("time", "I"), ("epoch_time", "I")), 1),
    0x21: ("AddOrderLong", _f(_TO, _OID, ("side", "a1"), ("quantity", "I"), ("symbol", "a6"),
                              ("price", _LP), ("add_flags", "B"), ("participant_id", "a4")), 6),
    0x22: ("AddOrderShort", _f(_TO, _OID, ("side", "a1"), ("quantity", "H"), ("symbol", "a6"),
                               ("price", _SP), ("add_flags", "B"), ("participant_id", "a4")), 6),
    0x23: ("OrderExecuted", _f(_TO, _OID, ("executed_quantity", "I"), _EXE,
                               ("trade_condition", "a1")), 4),
    0x24: ("OrderExecutedAtPriceSize", _f(_TO, _OID, ("executed_quantity", "I"),
                                          ("remaining_quantity", "I"), _EXE, ("price", _LP),
                                          ("trade_condition", "a1")), 6),
    0x25: ("ReduceSizeLong", _f(_TO, _OID, ("canceled_quantity", "I")), 3),
    0x26: ("ReduceSizeShort", _f(_TO, _OID, ("canceled_quantity", "H")), 3),
    0x27: ("ModifyOrderLong", _f(_TO, _OID, ("quantity", "I"), ("price", _LP), ("modify_flags", "B")), 4),
    0x28: ("ModifyOrderShort", _f(_TO, _OID, ("quantity", "H"), ("price", _SP), ("modify_flags", "B")), 4),
    0x29: ("DeleteOrder", _f(_TO, _OID), 2),
    0x2A: ("TradeLong", _f(_TO, _OID, ("side", "a1"), ("quantity", "I"), ("symbol", "a6"),
                           ("price", _LP), _EXE, ("trade_condition", "a1")), 7),
    0x2B: ("TradeShort", _f(_TO, _OID, ("side", "a1"), ("quantity", "H"), ("symbol", "a6"),
                            ("price", _SP), _EXE, ("trade_condition", "a1")), 7),
    0x2C: ("TradeBreak", _f(_TO, _EXE), 2),
    0x2D: ("EndOfSession", _f(_TO), 1),
    0x2E: ("SymbolMapping", _f(("feed_symbol", "a6"), ("osi_symbol", "a21"), ("symbol_condition", "a1"),
                               ("underlying", "a8")), 1),
    0x2F: ("AddOrderExpanded", _f(_TO, _OID, ("side", "a1"), ("quantity", "I"), ("symbol", "a8"),
                                  ("price", _LP), ("add_flags", "B"), ("participant_id", "a4")), 6),
    0x30: ("TradeExpanded", _f(_TO, _OID, ("side", "a1"), ("quantity", "I"), ("symbol", "a8"),
                               ("price", _LP), _EXE, ("trade_condition", "a1")), 7),
    0x31: ("TradingStatus", _f(_TO, ("symbol", "a8"), ("trading_status", "a1"), ("reg_sho_action", "a1"),
                               ("reserved1", "a1"), ("reserved2", "a1")), 3),
    0x95: ("AuctionUpdate", _f(_TO, ("symbol", "a8"), ("auction_type", "a1"), ("reference_price", _LP),
                               ("buy_shares", "I"), ("sell_shares", "I"), ("indicative_price", _LP),
                               ("auction_only_price", _LP)), 7),
    0x96: ("AuctionSummary", _f(_TO, ("symbol", "a8"), ("auction_type", "a1"), ("price", _LP),
                                ("shares", "I")), 5),
    0x97: ("UnitClear", _f(_TO), 1),
    0x98: ("RetailPriceImprovement", _f(_TO, ("symbol", "a8"), ("retail_price_improvement", "a1")), 3),
    0xBC: ("TransactionBegin", _f(_TO), 1),
    0xBD: ("TransactionEnd", _f(_TO), 1),
}

_SIZES = {"B": 1, "H": 2, "I": 4, "Q": 8, _LP: 8, _SP: 2}
_LP4 = Decimal("0.0001")
_SP2 = Decimal("0.01")


def _compile(fields: List[Tuple[str, str]], mandatory: int):
    """For each prefix length k (k >= mandatory) a struct over the first k fields, plus kinds."""
    codes, kinds, names = [], [], []
    for name, kind in fields:
        if kind.startswith("a"):
            codes.append(f"{int(kind[1:])}s")
        elif kind == _LP:
            codes.append("Q")
        elif kind == _SP:
            codes.append("H")
        else:
            codes.append(kind)
        kinds.append(kind)
        names.append(name)
    prefixes = []
    for k in range(mandatory, len(fields) + 1):
        st = struct.Struct("<" + "".join(codes[:k]))
        prefixes.append((st.size, st, k))
    prefixes.sort(key=lambda p: -p[0])
    return names, kinds, prefixes


_COMPILED = {t: (name, *_compile(fields, mand)) for t, (name, fields, mand) in MESSAGES.items()}


@dataclasses.dataclass
class PitchMessage:
    msg_type: str          # "0x21" style type code
    name: str              # "AddOrderLong"
    unit: int
    seq: int               # sequence number of this message within its unit (header seq + index)
    fields: Dict[str, Any]
    ts_ns: int = 0
    protocol: str = PROTOCOL

    def to_dict(self) -> Dict[str, Any]:
        return {"protocol": self.protocol, "msg_type": self.msg_type, "name": self.name,
                "unit": self.unit, "seq": self.seq, **json_safe(self.fields)}


@dataclasses.dataclass
class UnitInfo:
    length: int
    count: int
    unit: int
    seq: int
    types: List[int]


class PitchDecoder:
    """One decoder per multicast stream; ``feed`` takes one UDP payload."""

    def __init__(self) -> None:
        self.stats = DecodeStats()
        self.last_unit: UnitInfo = UnitInfo(0, 0, 0, 0, [])

    def feed(self, data: bytes, ts_ns: int = 0) -> List[PitchMessage]:
        try:
            return self._feed(bytes(data), ts_ns)
        except Exception as e:  # noqa: BLE001 - never raise on input
            self.stats.reject(f"internal:{type(e).__name__}")
            return []

    def _feed(self, data: bytes, ts_ns: int) -> List[PitchMessage]:
        out: List[PitchMessage] = []
        n = len(data)
        if n < UNIT_HEADER.size:
            self.stats.reject("truncated_header")
            return out
        length, count, unit, seq = UNIT_HEADER.unpack_from(data, 0)
        info = UnitInfo(length, count, unit, seq, [])
        self.last_unit = info
        self.stats.bytes += n
        if length < UNIT_HEADER.size or length > n:
            self.stats.reject("bad_header_length")
            return out
        end = length
        off = UNIT_HEADER.size
        for i in range(count):
            if end - off < 2:
                self.stats.reject("truncated_message")
                return out
            mlen, mtype = data[off], data[off + 1]
            if mlen < 2 or off + mlen > end:
                self.stats.reject("bad_message_length")
                return out
            info.types.append(mtype)
            body, mend = off + 2, off + mlen
            off = mend
            spec = _COMPILED.get(mtype)
            if spec is None:
                self.stats.reject(f"unknown_type:0x{mtype:02X}")
                continue
            name, names, kinds, prefixes = spec
            avail = mlen - 2
            for size, st, k in prefixes:
                if size <= avail:
                    break
            else:
                self.stats.reject(f"short:0x{mtype:02X}")
                continue
            vals = st.unpack_from(data, body)
            fields: Dict[str, Any] = {}
            for j in range(k):
                v = vals[j]
                kind = kinds[j]
                if kind[0] == "a":
                    v = v.decode("latin-1").rstrip(" \x00")
                elif kind == _LP:
                    fields[names[j] + "_raw"] = v
                    v = Decimal(v) * _LP4
                elif kind == _SP:
                    fields[names[j] + "_raw"] = v
                    v = Decimal(v) * _SP2
                fields[names[j]] = v
            self.stats.messages += 1
            out.append(PitchMessage(f"0x{mtype:02X}", name, unit, (seq + i) if seq else 0, fields, ts_ns))
        if off != end or n > end:
            self.stats.reject("trailing_bytes")
        return out


def new_decoder() -> PitchDecoder:
    return PitchDecoder()


INFO = register(ProtocolInfo(
    name=PROTOCOL, transport="udp", stream_kind="market_data", new_decoder=new_decoder,
    aliases=("PITCH",),
    spec="Cboe US Equities Multicast PITCH 2.x (v2.41); Cboe Options PITCH 2.39; CFE PITCH 1.1",
))
