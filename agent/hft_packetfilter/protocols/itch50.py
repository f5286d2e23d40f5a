"""Nasdaq TotalView-ITCH 5.0 message decoder (pure Python, no per-byte work).

Spec: Nasdaq TotalView-ITCH 5.0 (``NQTVITCHspecification.pdf``, version 5.0, the 2020+ revision that
adds the DLCR message 'O'); BX and PSX TotalView-ITCH 5.0 share the same layouts.

Every message starts with ``type(1) stock_locate(2) tracking_number(2) timestamp(6)`` followed by a
fixed body per type; all integers are big-endian and unsigned. Units, as the spec states them:

* ``price(4)`` fields are integers in 1e-4 dollars (``price == 1234500`` means $123.45);
* ``price(8)`` fields (MWCB levels 'V') are integers in 1e-8 dollars;
* timestamps are nanoseconds since midnight (the 6-byte field);
* alpha fields are left-justified and padded with spaces.

Prices are never converted to floats. Messages are tuples (one ``struct.unpack_from`` per message with a
precompiled ``struct.Struct``) with properties on top, so decoding a buffer costs one C call and one
tuple per message; the 6-byte timestamp and the alpha fields are converted only when read
(``msg.timestamp``, ``msg.symbol``, ``msg.to_dict()``). ``decode_buffer`` is the batch entry point the
MoldUDP64 framing uses; when the optional compiled module is built (``hft_packetfilter._native``, see
``hft_packetfilter._accel``) its loop runs in C and builds the very same message objects.

Stock locate codes are resolved to symbols through the directory message 'R': each decoder keeps a
``locate -> symbol`` map (``decoder.symbols``) and its messages read ``msg.symbol`` from it when the
message itself has no stock field.
"""
from __future__ import annotations

import struct
from itertools import compress
from operator import itemgetter
from typing import Dict, List, Optional, Sequence, Tuple

from .. import _accel
from . import DecodeStats

PROTOCOL = "ITCH/MoldUDP64"
SPEC = "Nasdaq TotalView-ITCH 5.0"

# Field kinds: "u" unsigned integer, "px4" price in 1e-4 units, "px8" price in 1e-8 units,
# "c" one ASCII character, "a" space-padded ASCII alpha. The common header is added to every type.
_HEADER: Tuple[Tuple[str, str, str], ...] = (
    ("stock_locate", "H", "u"),
    ("tracking_number", "H", "u"),
    ("_ts_hi", "H", "u"),   # timestamp, upper 16 of 48 bits
    ("_ts_lo", "I", "u"),   # timestamp, lower 32 of 48 bits
)

# type -> (class name, body fields). Lengths below include the type byte and are checked at import.
MESSAGE_SPECS: Dict[str, Tuple[str, Tuple[Tuple[str, str, str], ...]]] = {
    "S": ("SystemEvent", (("event_code", "c", "c"),)),
    "R": ("StockDirectory", (
        ("stock", "8s", "a"), ("market_category", "c", "c"), ("financial_status_indicator", "c", "c"),
        ("round_lot_size", "I", "u"), ("round_lots_only", "c", "c"), ("issue_classification", "c", "c"),
        ("issue_sub_type", "2s", "a"), ("authenticity", "c", "c"), ("short_sale_threshold_indicator", "c", "c"),
        ("ipo_flag", "c", "c"), ("luld_reference_price_tier", "c", "c"), ("etp_flag", "c", "c"),
        ("etp_leverage_factor", "I", "u"), ("inverse_indicator", "c", "c"))),
    "H": ("StockTradingAction", (
        ("stock", "8s", "a"), ("trading_state", "c", "c"), ("reserved", "c", "c"), ("reason", "4s", "a"))),
    "Y": ("RegSHORestriction", (("stock", "8s", "a"), ("reg_sho_action", "c", "c"))),
    "L": ("MarketParticipantPosition", (
        ("mpid", "4s", "a"), ("stock", "8s", "a"), ("primary_market_maker", "c", "c"),
        ("market_maker_mode", "c", "c"), ("market_participant_state", "c", "c"))),
    "V": ("MWCBDeclineLevel", (("level1", "Q", "px8"), ("level2", "Q", "px8"), ("level3", "Q", "px8"))),
    "W": ("MWCBStatus", (("breached_level", "c", "c"),)),
    "K": ("IPOQuotingPeriodUpdate", (
        ("stock", "8s", "a"), ("ipo_quotation_release_time", "I", "u"),
        ("ipo_quotation_release_qualifier", "c", "c"), ("ipo_price", "I", "px4"))),
    "h": ("OperationalHalt", (("stock", "8s", "a"), ("market_code", "c", "c"), ("operational_halt_action", "c", "c"))),
    "J": ("LULDAuctionCollar", (
        ("stock", "8s", "a"), ("auction_collar_reference_price", "I", "px4"),
        ("upper_auction_collar_price", "I", "px4"), ("lower_auction_collar_price", "I", "px4"),
        ("auction_collar_extension", "I", "u"))),
    "A": ("AddOrder", (
        ("order_reference_number", "Q", "u"), ("side", "c", "c"), ("shares", "I", "u"),
        ("stock", "8s", "a"), ("price", "I", "px4"))),
    "F": ("AddOrderMPID", (
        ("order_reference_number", "Q", "u"), ("side", "c", "c"), ("shares", "I", "u"),
        ("stock", "8s", "a"), ("price", "I", "px4"), ("attribution", "4s", "a"))),
    "E": ("OrderExecuted", (
        ("order_reference_number", "Q", "u"), ("executed_shares", "I", "u"), ("match_number", "Q", "u"))),
    "C": ("OrderExecutedWithPrice", (
        ("order_reference_number", "Q", "u"), ("executed_shares", "I", "u"), ("match_number", "Q", "u"),
        ("printable", "c", "c"), ("execution_price", "I", "px4"))),
    "X": ("OrderCancel", (("order_reference_number", "Q", "u"), ("cancelled_shares", "I", "u"))),
    "D": ("OrderDelete", (("order_reference_number", "Q", "u"),)),
    "U": ("OrderReplace", (
        ("original_order_reference_number", "Q", "u"), ("new_order_reference_number", "Q", "u"),
        ("shares", "I", "u"), ("price", "I", "px4"))),
    "P": ("Trade", (
        ("order_reference_number", "Q", "u"), ("side", "c", "c"), ("shares", "I", "u"),
        ("stock", "8s", "a"), ("price", "I", "px4"), ("match_number", "Q", "u"))),
    "Q": ("CrossTrade", (
        ("shares", "Q", "u"), ("stock", "8s", "a"), ("cross_price", "I", "px4"),
        ("match_number", "Q", "u"), ("cross_type", "c", "c"))),
    "B": ("BrokenTrade", (("match_number", "Q", "u"),)),
    "I": ("NOII", (
        ("paired_shares", "Q", "u"), ("imbalance_shares", "Q", "u"), ("imbalance_direction", "c", "c"),
        ("stock", "8s", "a"), ("far_price", "I", "px4"), ("near_price", "I", "px4"),
        ("current_reference_price", "I", "px4"), ("cross_type", "c", "c"),
        ("price_variation_indicator", "c", "c"))),
    "N": ("RetailPriceImprovementIndicator", (("stock", "8s", "a"), ("interest_flag", "c", "c"))),
    "O": ("DirectListingCapitalRaise", (
        ("stock", "8s", "a"), ("open_eligibility_status", "c", "c"), ("minimum_allowable_price", "I", "px4"),
        ("maximum_allowable_price", "I", "px4"), ("near_execution_price", "I", "px4"),
        ("near_execution_time", "Q", "u"), ("lower_price_range_collar", "I", "px4"),
        ("upper_price_range_collar", "I", "px4"))),
}

# Message lengths from the spec (type byte included); a layout typo above fails at import.
MESSAGE_LENGTHS: Dict[str, int] = {
    "S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "h": 21, "J": 35,
    "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19,
    "I": 50, "N": 20, "O": 48,
}


def _alpha(raw: bytes) -> str:
    return raw.rstrip(b" \x00").decode("ascii", "replace")


def _char(raw: bytes) -> str:
    return raw.decode("latin-1")


def py_getter(kind: str, i: int = 0):
    """The reference getter of a lazily converted field, ``kind`` one of "ts48" (the 48-bit timestamp
    of items 2 and 3), "alpha" / "char" (item ``i``) or "symbol" (item 0 looked up in the directory).
    The expressions are spelled out in each lambda: one Python frame per read, not two."""
    if kind == "ts48":
        return lambda self: (self[2] << 32) | self[3]
    if kind == "alpha":
        return lambda self: self[i].rstrip(b" \x00").decode("ascii", "replace")
    if kind == "char":
        return lambda self: self[i].decode("latin-1")
    if kind == "symbol":
        return lambda self: self._symbols.get(self[0])
    raise ValueError(f"unknown getter kind {kind!r}")


def _getter(kind: str, i: int = 0):
    """The getter the message classes use: the compiled ``ItchField`` (same results, no Python frame:
    about 30 ns a read instead of about 140 ns) when the native module is active, else the reference."""
    if _accel.NATIVE is not None:
        return _accel.NATIVE.ItchField(kind, i)
    return py_getter(kind, i)


class ItchMessage(tuple):
    """Base of every ITCH 5.0 message class: a tuple of the raw unpacked fields (after the type byte).

    ``msg_type`` and ``protocol`` are class attributes; ``_symbols`` is bound per decoder so ``symbol``
    can resolve the stock locate for messages that carry no stock field.
    """

    __slots__ = ()
    protocol = PROTOCOL
    msg_type = "?"
    name = "ItchMessage"
    _fields: Tuple[str, ...] = ()
    _kinds: Tuple[str, ...] = ()
    _symbols: Dict[int, str] = {}

    stock_locate = property(itemgetter(0))
    tracking_number = property(itemgetter(1))
    timestamp = property(_getter("ts48"), doc="Nanoseconds since midnight (the 48-bit field).")
    symbol = property(_getter("symbol"), doc="The stock symbol: the message's own stock field, else the "
                                              "directory entry for its locate (None when unknown).")

    def to_dict(self) -> dict:
        d = {"protocol": self.protocol, "msg_type": self.msg_type, "name": self.name,
             "stock_locate": self[0], "tracking_number": self[1], "timestamp": self.timestamp}
        for i in range(4, len(self._fields)):
            v = self[i]
            k = self._kinds[i]
            if k == "a":
                v = _alpha(v)
            elif k == "c":
                v = _char(v)
            d[self._fields[i]] = v
        if "stock" not in d:
            d["symbol"] = self.symbol
        return d

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k not in ("protocol", "name"))
        return f"{self.name}({body})"

    def __reduce__(self):  # tuples of a per-decoder subclass pickle as their base class
        return (_rebuild, (self.msg_type, tuple(self)))


def _rebuild(msg_type: str, values: tuple) -> "ItchMessage":
    return tuple.__new__(MESSAGE_CLASSES[msg_type], values)


_GETTER_KINDS = {"a": "alpha", "c": "char"}


def _make_class(msg_type: str, cls_name: str, body: Sequence[Tuple[str, str, str]]):
    fields = _HEADER + tuple(body)
    names = tuple(f[0] for f in fields)
    kinds = tuple(f[2] for f in fields)
    ns: dict = {"__slots__": (), "msg_type": msg_type, "name": cls_name, "_fields": names, "_kinds": kinds}
    for i, (fname, _fmt, kind) in enumerate(fields):
        if i < 4:
            continue
        if kind in _GETTER_KINDS:
            ns[fname] = property(_getter(_GETTER_KINDS[kind], i))
        else:
            ns[fname] = property(itemgetter(i))
        if kind == "a":
            ns[fname + "_raw"] = property(itemgetter(i))
    if "stock" in names:
        ns["symbol"] = ns["stock"]
    cls = type(cls_name, (ItchMessage,), ns)
    fmt = ">x" + "".join(f[1] for f in fields)
    st = struct.Struct(fmt)
    if st.size != MESSAGE_LENGTHS[msg_type]:
        raise AssertionError(f"ITCH layout {msg_type!r}: struct size {st.size} != spec {MESSAGE_LENGTHS[msg_type]}")
    return cls, st


MESSAGE_CLASSES: Dict[str, type] = {}
STRUCTS: Dict[str, struct.Struct] = {}
_PACKERS: Dict[str, struct.Struct] = {}
for _t, (_name, _body) in MESSAGE_SPECS.items():
    MESSAGE_CLASSES[_t], STRUCTS[_t] = _make_class(_t, _name, _body)
    _PACKERS[_t] = struct.Struct(">" + "".join(f[1] for f in _HEADER + _body))
del _t, _name, _body

MAX_MESSAGE_LENGTH = max(MESSAGE_LENGTHS.values())
_DIR_MARK = MESSAGE_LENGTHS["R"].to_bytes(2, "big") + b"R"


class ITCH50Decoder:
    """Decodes ITCH 5.0 messages: one at a time (``decode_message``) or a whole block of u16
    length-prefixed messages at once (``decode_buffer``, the MoldUDP64 message block format).

    ``feed(data)`` treats ``data`` as such a block. Bad input never raises: it is counted in
    ``stats.rejects`` by reason and the remaining well-framed messages still decode.
    """

    protocol = PROTOCOL
    spec = SPEC

    def __init__(self, resolve_symbols: bool = True, native: bool = True) -> None:
        self.stats = DecodeStats()
        self.symbols: Dict[int, str] = {}
        self.resolve_symbols = resolve_symbols
        # Per-decoder subclasses carry this decoder's locate map (a class attribute, so a message costs
        # nothing extra to build). Built once per decoder: about 23 small classes.
        self.classes: Dict[str, type] = {}
        table: List[Optional[tuple]] = [None] * 256
        for t, base in MESSAGE_CLASSES.items():
            cls = type(base.__name__, (base,), {"__slots__": (), "_symbols": self.symbols})
            self.classes[t] = cls
            st = STRUCTS[t]
            table[ord(t)] = (st.size, st.unpack_from, cls)
        self._table = table
        self._dir_cls = self.classes["R"]
        # The compiled loop (hft_packetfilter._native), fed the same classes and struct layouts; None
        # runs the Python loop below (``native=False``, HFTPF_NO_NATIVE=1, or not built).
        self._core = None
        if native and _accel.NATIVE is not None:
            self._core = _accel.NATIVE.ItchCore(
                {ord(t): (cls, STRUCTS[t].format[2:], STRUCTS[t].size) for t, cls in self.classes.items()},
                ord("R"))

    # -- single message -------------------------------------------------------------------------
    def decode_message(self, msg, offset: int = 0, length: Optional[int] = None):
        """Decode one message (no length prefix) starting at ``offset``; None (and a counted reject)
        when it is malformed."""
        n = (len(msg) - offset) if length is None else length
        if n <= 0 or offset + n > len(msg):
            self.stats.reject("empty_message" if n == 0 else "truncated_message")
            return None
        t = msg[offset]
        e = self._table[t]
        if e is None:
            self.stats.reject("unknown_type")
            return None
        if e[0] != n:
            self.stats.reject("bad_length")
            return None
        m = tuple.__new__(e[2], e[1](msg, offset))
        self.stats.messages += 1
        self.stats.bytes += n
        if e[2] is self._dir_cls and self.resolve_symbols:
            self.symbols[m[0]] = _alpha(m[4])
        return m

    # -- batch ----------------------------------------------------------------------------------
    def decode_buffer(self, buf, offset: int = 0, count: int = -1) -> list:
        """Decode u16 length-prefixed messages from ``buf[offset:]`` (at most ``count`` of them when
        ``count >= 0``) and return them as a list.

        Malformed messages are skipped by their length prefix and counted; a length that runs past the
        end of the buffer stops the loop (``truncated``). The compiled core runs it when present; any
        buffer it cannot read directly goes through :meth:`_decode_buffer_py`, the reference.
        """
        core = self._core
        if core is None or offset < 0:
            return self._decode_buffer_py(buf, offset, count)
        try:
            out, off, n, truncated, empty, unknown, bad_len = core.decode(
                buf, offset, count, self.symbols if self.resolve_symbols else None)
        except (TypeError, BufferError, OverflowError):   # not a byte buffer, or a count past C's range
            return self._decode_buffer_py(buf, offset, count)
        self._account_scan(offset, len(out), off, n, truncated, empty, unknown, bad_len)
        return out

    def _account_scan(self, offset: int, good: int, off: int, n: int, truncated: bool, empty: int,
                      unknown: int, bad_len: int) -> None:
        """Stats and ``last_*`` after a compiled scan of ``buf[offset:off]`` (decode_buffer, and
        ItchBook.apply_buffer, which decodes into the book with the same scan)."""
        stats = self.stats
        if empty or unknown or bad_len or truncated:
            # Same counts as the Python loop, which adds them in order of occurrence (a Counter's
            # equality does not depend on order).
            for reason, c in (("empty_message", empty), ("unknown_type", unknown), ("bad_length", bad_len),
                              ("truncated_message", int(truncated))):
                if c:
                    stats.reject(reason, c)
        if good:
            stats.messages += good
            stats.bytes += off - offset
        self.last_offset = off
        self.last_framed = n
        self.last_truncated = truncated

    def _decode_buffer_py(self, buf, offset: int = 0, count: int = -1) -> list:
        """The reference loop of :meth:`decode_buffer`.

        This is the hot loop: one length read, one table lookup, one ``unpack_from`` and one tuple per
        message. Malformed messages are skipped by their length prefix and counted; a length that runs
        past the end of the buffer stops the loop (``truncated``).
        """
        out: list = []
        append = out.append
        table = self._table
        tnew = tuple.__new__
        end = len(buf)
        off = offset
        n = 0
        truncated = False
        if count < 0:
            count = 1 << 30
        while n < count and off + 2 <= end:
            ln = (buf[off] << 8) | buf[off + 1]
            nxt = off + 2 + ln
            if nxt > end:
                self.stats.reject("truncated_message")
                truncated = True
                break
            e = table[buf[off + 2]] if ln else None
            if e is not None and e[0] == ln:
                append(tnew(e[2], e[1](buf, off + 2)))
            else:
                self._reject_framed(buf, off, ln)
            off = nxt
            n += 1
        good = len(out)
        if good:
            self.stats.messages += good
            self.stats.bytes += off - offset
            # Directory messages come in a burst at start of day: look for their framing (length 39,
            # type 'R') with one C-level search before scanning the decoded list for them.
            if self.resolve_symbols and (not isinstance(buf, (bytes, bytearray))
                                         or buf.find(_DIR_MARK, offset, off) >= 0):
                self._learn_directory(out)
        self.last_offset = off        # where framing stopped
        self.last_framed = n          # length-prefixed messages framed (good or rejected)
        self.last_truncated = truncated
        return out

    def _reject_framed(self, buf, off: int, ln: int) -> None:
        if ln == 0:
            self.stats.reject("empty_message")
        elif self._table[buf[off + 2]] is None:
            self.stats.reject("unknown_type")
        else:
            self.stats.reject("bad_length")

    def _learn_directory(self, msgs: list) -> None:
        # C-level filter (no Python bytecode per message): only directory messages reach the loop body.
        symbols = self.symbols
        for m in compress(msgs, map(self._dir_cls.__instancecheck__, msgs)):
            symbols[m[0]] = _alpha(m[4])

    def feed(self, data, ts_ns: int = 0) -> list:
        """Contract entry point: ``data`` is a block of u16 length-prefixed ITCH messages."""
        try:
            return self.decode_buffer(data)
        except Exception:  # defensive: the contract says never raise on bad input
            self.stats.reject("internal_error")
            return []

    def symbol_for(self, locate: int) -> Optional[str]:
        return self.symbols.get(locate)


def encode_message(msg_type: str, **fields) -> bytes:
    """Build one ITCH 5.0 message from field values (tests and simulators). Missing fields are zero /
    spaces; ``timestamp`` may be given instead of the split halves; str alpha fields are space-padded."""
    cls = MESSAGE_CLASSES[msg_type]
    fmt_parts = _HEADER + MESSAGE_SPECS[msg_type][1]
    ts = int(fields.pop("timestamp", 0))
    fields.setdefault("_ts_hi", ts >> 32)
    fields.setdefault("_ts_lo", ts & 0xFFFFFFFF)
    values = []
    for name, fmt, kind in fmt_parts:
        v = fields.pop(name, None)
        if kind in ("a", "c"):
            width = 1 if fmt == "c" else int(fmt[:-1])
            if v is None:
                v = b" " * width
            elif isinstance(v, str):
                v = v.encode("ascii")
            v = v.ljust(width, b" ")[:width]
        elif v is None:
            v = 0
        values.append(v)
    if fields:
        raise TypeError(f"unknown fields for {cls.__name__}: {sorted(fields)}")
    return msg_type.encode("latin-1") + _PACKERS[msg_type].pack(*values)


def frame(messages: Sequence[bytes]) -> bytes:
    """Concatenate messages with u16 big-endian length prefixes (a MoldUDP64 message block)."""
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)
