"""Nasdaq OUCH order-entry messages, versions 4.2 and 5.0 (the payload of SoupBinTCP packets).

Specs: Nasdaq "OUCH Version 4.2" (OUCH4.2.pdf, 2019 revision: Trade Now, Executed with Reference
Price, AIQ Canceled) and Nasdaq "OUCH Version 5.0" (Ouch5.0.pdf, 2021+ revisions: UserRefNum,
ClOrdID, 8-byte prices and TLV appendages, Order Restated, Account Query, Mass Cancel and order entry
disable/enable).

Type letters overlap between the two directions (``U`` is Replace Order inbound and Order Replaced
outbound), so an :class:`OuchDecoder` is built for one ``direction``: ``"in"`` (client -> exchange) or
``"out"`` (exchange -> client). With ``version=None`` the version is detected per message from its
length (5.0 is tried first; 4.2 and 5.0 layouts of the same type never share a valid length, and the
5.0 appendage length must account for the rest of the message exactly).

Units: 4.2 prices are u32 in 1e-4 dollars; 5.0 prices are signed 64-bit in 1e-4 dollars (negative
values are legal for peg offsets); peg offsets (appendage) are signed 32-bit in 1e-4; timestamps are
nanoseconds since midnight (u64). Prices stay integers.

5.0 appendages are a u16 total length followed by option fields ``length(1) tag(1) value(length-1)``
where ``length`` counts the tag byte; known tags decode to named fields, unknown ones are kept as hex
under ``tag_<n>``.
"""
from __future__ import annotations

import struct
from typing import Dict, Optional, Sequence, Tuple

from . import DecodeStats

PROTOCOL = "SoupBinTCP/OUCH"
SPEC = "Nasdaq OUCH 4.2 and OUCH 5.0"

IN = "in"
OUT = "out"

# Field formats: struct codes; kinds: "u" int, "px" price in 1e-4 (int), "a" alpha, "c" char.
_TS = ("timestamp", "Q", "u")
_TOKEN = ("order_token", "14s", "a")
_URN = ("user_ref_num", "I", "u")
_CLORD = ("cl_ord_id", "14s", "a")
_APP = ("appendage_length", "H", "u")

Layout = Tuple[str, Tuple[Tuple[str, str, str], ...]]

V42: Dict[str, Dict[str, Layout]] = {
    IN: {
        "O": ("EnterOrder", (_TOKEN, ("side", "c", "c"), ("shares", "I", "u"), ("stock", "8s", "a"),
                             ("price", "I", "px"), ("time_in_force", "I", "u"), ("firm", "4s", "a"),
                             ("display", "c", "c"), ("capacity", "c", "c"),
                             ("intermarket_sweep_eligibility", "c", "c"), ("minimum_quantity", "I", "u"),
                             ("cross_type", "c", "c"), ("customer_type", "c", "c"))),
        "U": ("ReplaceOrder", (("existing_order_token", "14s", "a"), ("replacement_order_token", "14s", "a"),
                               ("shares", "I", "u"), ("price", "I", "px"), ("time_in_force", "I", "u"),
                               ("display", "c", "c"), ("intermarket_sweep_eligibility", "c", "c"),
                               ("minimum_quantity", "I", "u"))),
        "X": ("CancelOrder", (_TOKEN, ("shares", "I", "u"))),
        "M": ("ModifyOrder", (_TOKEN, ("side", "c", "c"), ("shares", "I", "u"))),
        "N": ("TradeNow", (_TOKEN,)),
    },
    OUT: {
        "S": ("SystemEvent", (_TS, ("event_code", "c", "c"))),
        "A": ("Accepted", (_TS, _TOKEN, ("side", "c", "c"), ("shares", "I", "u"), ("stock", "8s", "a"),
                           ("price", "I", "px"), ("time_in_force", "I", "u"), ("firm", "4s", "a"),
                           ("display", "c", "c"), ("order_reference_number", "Q", "u"), ("capacity", "c", "c"),
                           ("intermarket_sweep_eligibility", "c", "c"), ("minimum_quantity", "I", "u"),
                           ("cross_type", "c", "c"), ("order_state", "c", "c"),
                           ("bbo_weight_indicator", "c", "c"))),
        "U": ("Replaced", (_TS, ("replacement_order_token", "14s", "a"), ("side", "c", "c"),
                           ("shares", "I", "u"), ("stock", "8s", "a"), ("price", "I", "px"),
                           ("time_in_force", "I", "u"), ("firm", "4s", "a"), ("display", "c", "c"),
                           ("order_reference_number", "Q", "u"), ("capacity", "c", "c"),
                           ("intermarket_sweep_eligibility", "c", "c"), ("minimum_quantity", "I", "u"),
                           ("cross_type", "c", "c"), ("order_state", "c", "c"),
                           ("previous_order_token", "14s", "a"), ("bbo_weight_indicator", "c", "c"))),
        "C": ("Canceled", (_TS, _TOKEN, ("decrement_shares", "I", "u"), ("reason", "c", "c"))),
        "D": ("AIQCanceled", (_TS, _TOKEN, ("decrement_shares", "I", "u"), ("reason", "c", "c"),
                              ("quantity_prevented_from_trading", "I", "u"), ("execution_price", "I", "px"),
                              ("liquidity_flag", "c", "c"))),
        "E": ("Executed", (_TS, _TOKEN, ("executed_shares", "I", "u"), ("execution_price", "I", "px"),
                           ("liquidity_flag", "c", "c"), ("match_number", "Q", "u"))),
        "B": ("BrokenTrade", (_TS, _TOKEN, ("match_number", "Q", "u"), ("reason", "c", "c"))),
        "G": ("ExecutedWithReferencePrice", (_TS, _TOKEN, ("executed_shares", "I", "u"),
                                             ("execution_price", "I", "px"), ("liquidity_flag", "c", "c"),
                                             ("match_number", "Q", "u"), ("reference_price", "I", "px"),
                                             ("reference_price_type", "c", "c"))),
        "F": ("TradeCorrection", (_TS, _TOKEN, ("executed_shares", "I", "u"), ("execution_price", "I", "px"),
                                  ("liquidity_flag", "c", "c"), ("match_number", "Q", "u"),
                                  ("reason", "c", "c"))),
        "J": ("Rejected", (_TS, _TOKEN, ("reason", "c", "c"))),
        "P": ("CancelPending", (_TS, _TOKEN)),
        "I": ("CancelReject", (_TS, _TOKEN)),
        "T": ("OrderPriorityUpdate", (_TS, _TOKEN, ("price", "I", "px"), ("display", "c", "c"),
                                      ("order_reference_number", "Q", "u"))),
        "M": ("OrderModified", (_TS, _TOKEN, ("side", "c", "c"), ("shares", "I", "u"))),
    },
}

V50: Dict[str, Dict[str, Layout]] = {
    IN: {
        "O": ("EnterOrder", (_URN, ("side", "c", "c"), ("quantity", "I", "u"), ("symbol", "8s", "a"),
                             ("price", "q", "px"), ("time_in_force", "c", "c"), ("display", "c", "c"),
                             ("capacity", "c", "c"), ("intermarket_sweep_eligibility", "c", "c"),
                             ("cross_type", "c", "c"), _CLORD, _APP)),
        "U": ("ReplaceOrder", (("orig_user_ref_num", "I", "u"), _URN, ("quantity", "I", "u"),
                               ("price", "q", "px"), ("time_in_force", "c", "c"), ("display", "c", "c"),
                               ("intermarket_sweep_eligibility", "c", "c"), _CLORD, _APP)),
        "X": ("CancelOrder", (_URN, ("quantity", "I", "u"))),
        "M": ("ModifyOrder", (_URN, ("side", "c", "c"), ("quantity", "I", "u"))),
        "Q": ("AccountQuery", ()),
        "C": ("MassCancel", (_URN, ("firm", "4s", "a"), ("symbol", "8s", "a"))),
        "D": ("DisableOrderEntry", (_URN, ("firm", "4s", "a"))),
        "E": ("EnableOrderEntry", (_URN, ("firm", "4s", "a"))),
    },
    OUT: {
        "S": ("SystemEvent", (_TS, ("event_code", "c", "c"))),
        "A": ("OrderAccepted", (_TS, _URN, ("side", "c", "c"), ("quantity", "I", "u"), ("symbol", "8s", "a"),
                                ("price", "q", "px"), ("time_in_force", "c", "c"), ("display", "c", "c"),
                                ("order_reference_number", "Q", "u"), ("capacity", "c", "c"),
                                ("intermarket_sweep_eligibility", "c", "c"), ("cross_type", "c", "c"),
                                ("order_state", "c", "c"), _CLORD, _APP)),
        "U": ("OrderReplaced", (_TS, ("orig_user_ref_num", "I", "u"), _URN, ("side", "c", "c"),
                                ("quantity", "I", "u"), ("symbol", "8s", "a"), ("price", "q", "px"),
                                ("time_in_force", "c", "c"), ("display", "c", "c"),
                                ("order_reference_number", "Q", "u"), ("capacity", "c", "c"),
                                ("intermarket_sweep_eligibility", "c", "c"), ("cross_type", "c", "c"),
                                ("order_state", "c", "c"), _CLORD, _APP)),
        "C": ("OrderCanceled", (_TS, _URN, ("quantity", "I", "u"), ("reason", "c", "c"))),
        "D": ("AIQCanceled", (_TS, _URN, ("decrement_shares", "I", "u"), ("reason", "c", "c"),
                              ("quantity_prevented_from_trading", "I", "u"), ("execution_price", "q", "px"),
                              ("liquidity_flag", "c", "c"))),
        "E": ("OrderExecuted", (_TS, _URN, ("quantity", "I", "u"), ("price", "q", "px"),
                                ("liquidity_flag", "c", "c"), ("match_number", "Q", "u"), _APP)),
        "B": ("BrokenTrade", (_TS, _URN, ("match_number", "Q", "u"), ("reason", "c", "c"), _CLORD)),
        "F": ("TradeCorrection", (_TS, _URN, ("quantity", "I", "u"), ("price", "q", "px"),
                                  ("liquidity_flag", "c", "c"), ("match_number", "Q", "u"),
                                  ("reason", "c", "c"), _CLORD)),
        "J": ("Rejected", (_TS, _URN, ("reason", "H", "u"), _CLORD)),
        "P": ("CancelPending", (_TS, _URN)),
        "I": ("CancelReject", (_TS, _URN)),
        "T": ("OrderPriorityUpdate", (_TS, _URN, ("price", "q", "px"), ("display", "c", "c"),
                                      ("order_reference_number", "Q", "u"))),
        "M": ("OrderModified", (_TS, _URN, ("side", "c", "c"), ("quantity", "I", "u"))),
        "R": ("OrderRestated", (_TS, _URN, ("reason", "c", "c"), _APP)),
        "Q": ("AccountQueryResponse", (_TS, ("next_user_ref_num", "I", "u"))),
        "X": ("MassCancelResponse", (_TS, _URN, ("firm", "4s", "a"), ("symbol", "8s", "a"))),
        "G": ("DisableOrderEntryResponse", (_TS, _URN, ("firm", "4s", "a"))),
        "K": ("EnableOrderEntryResponse", (_TS, _URN, ("firm", "4s", "a"))),
    },
}

# Message lengths from the specs (type byte included; 5.0 appendage types: the fixed part).
LENGTHS = {
    ("4.2", IN): {"O": 49, "U": 47, "X": 19, "M": 20, "N": 15},
    ("4.2", OUT): {"S": 10, "A": 66, "U": 80, "C": 28, "D": 37, "E": 40, "B": 32, "G": 45, "F": 41,
                   "J": 24, "P": 23, "I": 23, "T": 36, "M": 28},
    ("5.0", IN): {"O": 47, "U": 40, "X": 9, "M": 10, "Q": 1, "C": 17, "D": 9, "E": 9},
    ("5.0", OUT): {"S": 10, "A": 64, "U": 68, "C": 18, "D": 31, "E": 36, "B": 36, "F": 49, "J": 29,
                   "P": 13, "I": 13, "T": 30, "M": 18, "R": 16, "Q": 13, "X": 25, "G": 17, "K": 17},
}

# 5.0 option tags: tag -> (name, struct code or None for raw, kind)
APPENDAGE_TAGS: Dict[int, Tuple[str, str, str]] = {
    1: ("secondary_ord_ref_num", "Q", "u"),
    2: ("firm", "4s", "a"),
    3: ("min_qty", "I", "u"),
    4: ("customer_type", "c", "c"),
    5: ("max_floor", "I", "u"),
    6: ("price_type", "c", "c"),
    7: ("peg_offset", "i", "px"),
    9: ("discretion_price", "q", "px"),
    10: ("discretion_price_type", "c", "c"),
    11: ("discretion_peg_offset", "i", "px"),
    12: ("post_only", "c", "c"),
    13: ("random_reserves", "I", "u"),
    14: ("route", "4s", "a"),
    15: ("expire_time", "I", "u"),
    16: ("trade_now", "c", "c"),
    17: ("handle_inst", "c", "c"),
    18: ("bbo_weight_indicator", "c", "c"),
    19: ("reference_price", "q", "px"),
    20: ("reference_price_type", "c", "c"),
    22: ("display_quantity", "I", "u"),
    23: ("display_price", "q", "px"),
    24: ("group_id", "H", "u"),
    25: ("shares_located", "c", "c"),
    26: ("locate_broker", "4s", "a"),
    27: ("side", "c", "c"),
    28: ("user_ref_idx", "B", "u"),
}
_TAG_STRUCTS = {t: (n, struct.Struct(">" + f), k) for t, (n, f, k) in APPENDAGE_TAGS.items()}


def _conv(v, kind: str):
    if kind == "a":
        return v.rstrip(b" \x00").decode("ascii", "replace")
    if kind == "c":
        return v.decode("latin-1")
    return v


class _Layout:
    __slots__ = ("version", "direction", "msg_type", "name", "names", "kinds", "struct", "size", "appendage")

    def __init__(self, version: str, direction: str, msg_type: str, name: str, fields) -> None:
        self.version = version
        self.direction = direction
        self.msg_type = msg_type
        self.name = name
        self.names = tuple(f[0] for f in fields)
        self.kinds = tuple(f[2] for f in fields)
        self.struct = struct.Struct(">x" + "".join(f[1] for f in fields))
        self.size = self.struct.size
        self.appendage = bool(fields) and fields[-1][0] == "appendage_length"
        want = LENGTHS[(version, direction)][msg_type]
        if self.size != want:
            raise AssertionError(f"OUCH {version} {direction} {msg_type!r}: layout {self.size} != spec {want}")


LAYOUTS: Dict[Tuple[str, str], Dict[int, _Layout]] = {}
for _ver, _table in (("4.2", V42), ("5.0", V50)):
    for _dir, _msgs in _table.items():
        LAYOUTS[(_ver, _dir)] = {ord(t): _Layout(_ver, _dir, t, n, f) for t, (n, f) in _msgs.items()}


class OuchMessage:
    """One decoded OUCH message. ``fields`` holds JSON-safe values (prices are integers in 1e-4)."""

    __slots__ = ("msg_type", "name", "version", "direction", "fields", "appendages", "soup_type", "sequence")
    protocol = PROTOCOL

    def __init__(self, msg_type: str, name: str, version: str, direction: str, fields: dict,
                 appendages: Optional[dict] = None) -> None:
        self.msg_type = msg_type
        self.name = name
        self.version = version
        self.direction = direction
        self.fields = fields
        self.appendages = appendages or {}
        self.soup_type: Optional[str] = None    # "S" or "U" when it came through SoupBinTCP
        self.sequence: Optional[int] = None     # SoupBinTCP sequence number of an "S" packet, if known

    def __getattr__(self, item):
        # Only reached for names that are not slots: expose message fields as attributes.
        try:
            return self.fields[item]
        except KeyError:
            try:
                return self.appendages[item]
            except KeyError:
                raise AttributeError(item) from None

    def to_dict(self) -> dict:
        d = {"protocol": self.protocol, "msg_type": self.msg_type, "name": self.name,
             "ouch_version": self.version, "direction": self.direction}
        if self.soup_type is not None:
            d["soup_type"] = self.soup_type
        if self.sequence is not None:
            d["sequence"] = self.sequence
        d.update(self.fields)
        if self.appendages:
            d["appendages"] = dict(self.appendages)
        return d

    def __repr__(self) -> str:
        return f"Ouch{self.version}.{self.name}({self.fields!r}{', ' + repr(self.appendages) if self.appendages else ''})"

    def __eq__(self, other) -> bool:
        return isinstance(other, OuchMessage) and self.to_dict() == other.to_dict()


def parse_appendages(buf, start: int, end: int) -> Optional[dict]:
    """Option fields in ``buf[start:end]``; None when the TLV chain does not tile the range exactly."""
    out: dict = {}
    off = start
    while off < end:
        ln = buf[off]
        if ln < 1 or off + 1 + ln > end:
            return None
        tag = buf[off + 1]
        vstart, vend = off + 2, off + 1 + ln
        spec = _TAG_STRUCTS.get(tag)
        if spec is not None and spec[1].size == vend - vstart:
            name, st, kind = spec
            out[name] = _conv(st.unpack_from(buf, vstart)[0], kind)
        else:
            key = spec[0] if spec is not None else f"tag_{tag}"
            out[key] = bytes(buf[vstart:vend]).hex()
        off = vend
    return out


def encode_appendages(items: Sequence[Tuple[int, bytes]]) -> bytes:
    """TLV option fields from (tag, value bytes) pairs."""
    return b"".join(bytes((len(v) + 1, tag)) + v for tag, v in items)


class OuchDecoder:
    """Decodes one OUCH message per call, for one direction (``"in"`` or ``"out"``).

    ``version``: ``"4.2"``, ``"5.0"`` or None (detect per message; the last version seen is tried
    first). ``feed(data)`` takes exactly one message (SoupBinTCP supplies the framing).
    """

    protocol = PROTOCOL
    spec = SPEC

    def __init__(self, direction: str = OUT, version: Optional[str] = None) -> None:
        if direction not in (IN, OUT):
            raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
        if version not in (None, "4.2", "5.0"):
            raise ValueError(f"OUCH version must be '4.2', '5.0' or None, not {version!r}")
        self.direction = direction
        self.version = version
        self.stats = DecodeStats()
        self.last_reject = ""
        self._order = [version] if version else ["5.0", "4.2"]

    def feed(self, data, ts_ns: int = 0) -> list:
        m = self.decode_message(data)
        return [m] if m is not None else []

    def decode_message(self, buf, offset: int = 0, length: Optional[int] = None) -> Optional[OuchMessage]:
        try:
            return self._decode(buf, offset, (len(buf) - offset) if length is None else length)
        except Exception:  # defensive: never raise on bad input
            self._reject("internal_error")
            return None

    def _reject(self, reason: str) -> None:
        self.last_reject = reason
        self.stats.reject(reason)

    def _decode(self, buf, offset: int, n: int) -> Optional[OuchMessage]:
        if n <= 0 or offset + n > len(buf):
            self._reject("empty_message" if n == 0 else "truncated_message")
            return None
        t = buf[offset]
        known = False
        for ver in self._order:
            lay = LAYOUTS[(ver, self.direction)].get(t)
            if lay is None:
                continue
            known = True
            m = self._try(lay, buf, offset, n)
            if m is not None:
                if self.version is None and self._order[0] != ver:
                    self._order.reverse()
                self.stats.messages += 1
                self.stats.bytes += n
                return m
        self._reject("bad_length" if known else "unknown_type")
        return None

    def _try(self, lay: _Layout, buf, offset: int, n: int) -> Optional[OuchMessage]:
        size = lay.size
        extra = None
        if lay.appendage:
            if n < size:
                return None
        elif n != size:
            # 5.0 AIQ Canceled: later revisions append a one-byte AIQ strategy.
            if not (lay.version == "5.0" and lay.direction == OUT and lay.msg_type == "D" and n == size + 1):
                return None
            extra = ("aiq_strategy", bytes(buf[offset + size:offset + n]).decode("latin-1"))
        values = lay.struct.unpack_from(buf, offset)
        fields = {name: _conv(v, kind) for name, v, kind in zip(lay.names, values, lay.kinds)}
        if extra:
            fields[extra[0]] = extra[1]
        apps = None
        if lay.appendage:
            alen = values[-1]
            if size + alen != n:
                return None
            apps = parse_appendages(buf, offset + size, offset + n)
            if apps is None:
                return None
        return OuchMessage(lay.msg_type, lay.name, lay.version, lay.direction, fields, apps)


def encode_message(version: str, direction: str, msg_type: str, appendages: bytes = b"", **fields) -> bytes:
    """Build one OUCH message (tests, simulators). Missing fields are zero / spaces; str alpha and char
    values are space-padded; ``appendage_length`` is computed."""
    lay = LAYOUTS[(version, direction)][ord(msg_type)]
    fmts = [f for f in (V42 if version == "4.2" else V50)[direction][msg_type][1]]
    vals = []
    for name, fmt, kind in fmts:
        if name == "appendage_length":
            vals.append(len(appendages))
            continue
        v = fields.pop(name, None)
        if kind in ("a", "c"):
            width = 1 if fmt == "c" else int(fmt[:-1])
            v = b" " * width if v is None else (v.encode("ascii") if isinstance(v, str) else v)
            v = v.ljust(width, b" ")[:width]
        elif v is None:
            v = 0
        vals.append(v)
    if fields:
        raise TypeError(f"unknown fields for {lay.name}: {sorted(fields)}")
    body = struct.pack(">" + "".join(f[1] for f in fmts), *vals)
    return msg_type.encode("latin-1") + body + appendages
