"""FIX tag=value decoder: a streaming parser for TCP byte streams and a FIX log-file reader.

Specs implemented (framing and session layer of the classic tag=value encoding):

* FIX 4.0, 4.1, 4.2, 4.3 and 4.4 (FIX Protocol Ltd.), BeginString ``FIX.4.0`` .. ``FIX.4.4``;
* FIXT 1.1 transport (BeginString ``FIXT.1.1``) carrying FIX 5.0, 5.0 SP1 and 5.0 SP2 application
  messages (FIX Trading Community).

Every message is ``8=BeginString<SOH>9=BodyLength<SOH>35=MsgType<SOH> ... 10=CheckSum<SOH>``.
BodyLength counts the bytes from the field after ``9=`` up to and including the SOH before ``10=``;
CheckSum is the sum of every byte before ``10=`` modulo 256, written as exactly three digits. Fields
of type data (for example RawData 96 after RawDataLength 95) may contain SOH: their length comes from
the preceding length field (:data:`fix_tags.DATA_FIELDS`).

:class:`FixStreamDecoder` frames by BodyLength (as a FIX engine does), validates BeginString,
BodyLength and CheckSum, counts every rejection by reason and resynchronises on the next ``8=FIX``.
A message cut short (segments the probe never saw) is detected as soon as a complete, valid message
starts inside its declared body, so the messages behind it are not held back. Parsing is linear in
the input: whole-buffer ``bytes.find`` scans from a moving offset, no per-byte Python loop, buffer
compaction only now and then, and a bound (``max_message``, 1 MiB) on the size of a partial message.
Field access is lazy (see :class:`FixMessage`).

:func:`read_fix_log` reads engine logs, where a line holds one or more messages after free text (a
timestamp, a direction), the delimiter may be SOH, ``|`` or the two characters ``^A``, and framing
is by line and trailer because hand-edited logs often carry wrong BodyLength and CheckSum values.

Rejection reasons (``stats.rejects``): ``garbage`` (bytes or lines that are not FIX), ``bad_begin_string``,
``bad_body_length`` (missing or non-numeric 9=, or the declared length does not land on ``10=``),
``truncated_field`` (a message cut short: the next ``8=FIX`` starts before its trailer),
``bad_checksum``, ``missing_msg_type`` and ``message_too_large``.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import operator
import os
import re
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

from .. import _accel
from . import DecodeStats, ProtocolInfo, register
from .fix_tags import DATA_FIELDS, ENUMS, GROUPS, TAG_NAMES

try:  # zlib's Adler-32 gives the exact byte sum of a chunk of <= 256 bytes (see _byte_sum)
    from zlib import adler32 as _adler32
except ImportError:  # pragma: no cover - CPython is practically always built with zlib
    def _adler32(data: bytes) -> int:
        """Low half of Adler-32 only (enough for _byte_sum): (1 + sum) mod 65521."""
        return (1 + sum(data)) % 65521

__all__ = ["FixMessage", "FixStreamDecoder", "FixLogReader", "FixDecodeStats", "read_fix_log",
           "checksum", "BEGIN_STRINGS", "FAST_TAGS"]

SOH = b"\x01"
_START = b"8=FIX"

#: BeginString values accepted (bytes on the wire -> str)
BEGIN_STRINGS: Dict[bytes, str] = {b"FIX.4.0": "FIX.4.0", b"FIX.4.1": "FIX.4.1", b"FIX.4.2": "FIX.4.2",
                                   b"FIX.4.3": "FIX.4.3", b"FIX.4.4": "FIX.4.4", b"FIXT.1.1": "FIXT.1.1"}

#: tags analytics read on every message; FixMessage has a named property for each
FAST_TAGS: Tuple[int, ...] = (35, 11, 41, 37, 17, 39, 150, 54, 55, 38, 44, 31, 32, 14, 151, 52, 60,
                              49, 56, 34)

_FAST_KEYS = tuple(b"%d" % t for t in FAST_TAGS)
_FIND_PATTERNS = {k: b"\x01" + k + b"=" for k in _FAST_KEYS}

DEFAULT_MAX_MESSAGE = 1 << 20     # bytes; a (partial) message larger than this is rejected
_MAX_BEGIN = 16                   # longest BeginString value we wait for before giving up
_MAX_LEN_DIGITS = 9               # BodyLength digits (leading zeros are legal: "9=00014")
_COMPACT_AT = 64 * 1024           # compact the pending buffer once this many bytes are consumed
_CHECKSUM_MODES = ("strict", "report", "ignore")

_DATA_KEYS = frozenset(b"%d" % t for t in DATA_FIELDS)
_DATA_FIELD_RE = re.compile(b"\x01(?:" + b"|".join(sorted(_DATA_KEYS, key=lambda k: (-len(k), k))) + b")=")
_MT_CACHE: Dict[bytes, str] = {}
_LEN_CACHE: Dict[bytes, int] = {}   # BodyLength digits -> int (validated once per spelling)
_TAG_KEYS: Dict[int, bytes] = {t: b"%d" % t for t in range(1, 1200)}
_CS_DIGITS: Tuple[bytes, ...] = tuple(b"%03d" % v for v in range(256))


def _byte_sum(data: bytes) -> int:
    """Sum of the bytes of ``data``, modulo 256.

    Adler-32's low half is ``(1 + sum of bytes) mod 65521``. For a chunk of at most 256 bytes the
    sum is at most 255 * 256 = 65280 < 65520, so the low half minus one IS the exact sum: one C call
    per 256 bytes instead of a Python-level iteration over every byte (about 5x faster than
    ``sum(data)`` for a typical 200-byte order).
    """
    n = len(data)
    if n <= 256:
        return ((_adler32(data) & 0xFFFF) - 1) & 0xFF
    mv = memoryview(data)
    total = 0
    for off in range(0, n, 256):
        total += (_adler32(mv[off:off + 256]) & 0xFFFF) - 1
    return total & 0xFF


def checksum(data: bytes) -> bytes:
    """The FIX CheckSum (10=) of ``data`` (every byte before ``10=``) as three ASCII digits."""
    return b"%03d" % _byte_sum(bytes(data))


@dataclasses.dataclass
class FixDecodeStats(DecodeStats):
    """DecodeStats plus what FIX needs on top.

    ``flagged`` counts problems of messages that were still delivered (checksum or body length in
    report-only mode); ``skipped_bytes`` counts bytes dropped while resynchronising.
    """

    flagged: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped_bytes: int = 0


def _msg_type_str(mt: bytes) -> str:
    s = _MT_CACHE.get(mt)
    if s is None:
        s = mt.decode("latin-1")
        if len(_MT_CACHE) < 4096:
            _MT_CACHE[mt] = s
    return s


def _tag_key(tag: Union[int, str, bytes]) -> bytes:
    if type(tag) is int:
        key = _TAG_KEYS.get(tag)
        return key if key is not None else b"%d" % tag
    if isinstance(tag, str):
        return tag.encode("ascii")
    return bytes(tag)


_FAST_LAYOUTS: Dict[bytes, object] = {}
_MAX_LAYOUTS = 4096


def _fast_layout(layout: bytes, parts: List[bytes]):
    """An itemgetter reading FAST_TAGS from a split message with tag sequence ``layout`` (first
    occurrence wins; absent tags read the None appended after the parts), or False when the
    message has a data field (whose bytes may contain SOH or "=": use the exact parse)."""
    tags = parts[0::2]
    if not _DATA_KEYS.isdisjoint(tags):
        getter: object = False
    else:
        first: Dict[bytes, int] = {}
        for k in range(len(tags) - 1, -1, -1):
            first[tags[k]] = 2 * k + 1
        missing = len(parts)
        getter = operator.itemgetter(*(first.get(key, missing) for key in _FAST_KEYS))
    if len(_FAST_LAYOUTS) >= _MAX_LAYOUTS:
        _FAST_LAYOUTS.clear()
    _FAST_LAYOUTS[layout] = getter
    return getter


class FixMessage:
    """One FIX message.

    ``raw`` holds the message bytes from ``8=`` through the SOH after the checksum. Field access is
    lazy and never loops over fields in Python on the fast paths: :meth:`get` and the named
    properties are one ``bytes.find`` each; :meth:`values` reads many tags at once through a cached
    per-layout ``itemgetter``; a tag -> value index is built with a few C-level calls when needed;
    :meth:`fields` runs the exact sequential parse (data fields honoured) only when asked.
    """

    __slots__ = ("raw", "begin_string", "msg_type", "ts_ns", "checksum_ok", "body_length_ok", "_idx",
                 "_fields", "_plain")
    protocol = "FIX/TCP"

    def __init__(self, raw: bytes, begin_string: str, msg_type: str, ts_ns: int = 0,
                 checksum_ok: Optional[bool] = True, body_length_ok: bool = True) -> None:
        self.raw = raw
        self.begin_string = begin_string
        self.msg_type = msg_type
        self.ts_ns = ts_ns
        self.checksum_ok = checksum_ok        # None when the checksum was not verified
        self.body_length_ok = body_length_ok
        self._idx: Optional[Dict[bytes, bytes]] = None
        self._fields: Optional[List[Tuple[int, bytes]]] = None
        self._plain: Optional[bool] = None   # True: no data field, so bytes.find is exact

    # -- field access -------------------------------------------------------------------------
    def _index(self) -> Dict[bytes, bytes]:
        """Build the tag -> first value index.

        Fast path: when the message holds as many ``=`` as SOH bytes (one per field: no ``=`` inside
        a value), turning every ``=`` into SOH and splitting gives tag, value, tag, value ... in C;
        zip over the reversed halves makes the first occurrence of a repeated tag win. (Only a
        malformed message, with a field lacking ``=`` AND a value holding one, could fool the count.) A message carrying a data
        field (whose bytes may hide SOH or ``=``) takes the exact sequential parse instead.
        """
        raw = self.raw
        parts = raw.replace(b"=", SOH).split(SOH)
        if len(parts) == 2 * raw.count(b"=") + 1:  # as many "=" as SOH
            idx = dict(zip(parts[-3::-2], parts[-2::-2]))
            if idx.keys().isdisjoint(_DATA_KEYS):
                self._idx = idx
                return idx
        idx = {}
        for tag, value in reversed(self.fields()):
            idx[b"%d" % tag] = value
        self._idx = idx
        return idx

    def _value(self, key: bytes) -> Optional[bytes]:
        """First value of the tag spelled ``key`` (ASCII digits), or None.

        Before any index exists this is a single ``bytes.find`` of ``<SOH>tag=`` (exact once the
        message is known to hold no data field, which is checked once per message); after
        :meth:`values` or :meth:`fields` built the index it is a dict lookup.
        """
        idx = self._idx
        if idx is not None:
            return idx.get(key)
        plain = self._plain
        if plain is None:
            plain = self._plain = _DATA_FIELD_RE.search(self.raw) is None
        if not plain:
            return self._index().get(key)
        raw = self.raw
        pat = _FIND_PATTERNS.get(key)
        if pat is None:
            pat = b"\x01" + key + b"="
        p = raw.find(pat)
        if p < 0:
            return raw[2:raw.find(SOH)] if key == b"8" else None
        p += len(pat)
        return raw[p:raw.find(SOH, p)]

    def get(self, tag: Union[int, str, bytes], default: Optional[bytes] = None) -> Optional[bytes]:
        """Value (bytes) of the first occurrence of ``tag``, or ``default``."""
        key = _TAG_KEYS.get(tag) if type(tag) is int else None
        v = self._value(key if key is not None else _tag_key(tag))
        return default if v is None else v

    def values(self, tags: Tuple[int, ...] = FAST_TAGS) -> Tuple[Optional[bytes], ...]:
        """Values (bytes, or None when absent) of ``tags``, first occurrences, in one call.

        This is the fast path for analytics, which read the same handful of tags (default
        :data:`FAST_TAGS`) from every message. For :data:`FAST_TAGS` it uses a layout cache: a
        session sends each message type with the same field order, so the positions of the fast
        tags in the split message are computed once per distinct tag sequence and then read with
        one ``operator.itemgetter`` call (about half the cost of building the full index).
        """
        if tags is FAST_TAGS and self._idx is None:
            if _CORE is not None:
                v = _CORE.values(self.raw)     # the same split, in C; None: decide below
                if v is not None:
                    return v
            raw = self.raw
            parts = raw.replace(b"=", SOH).split(SOH)
            if len(parts) == 2 * raw.count(b"=") + 1:  # as many "=" as SOH, see _index
                layout = SOH.join(parts[0::2])
                getter = _FAST_LAYOUTS.get(layout)
                if getter is None:
                    getter = _fast_layout(layout, parts)
                if getter is not False:
                    parts.append(None)  # the position every absent tag points at
                    return getter(parts)
        idx = self._idx
        if idx is None:
            idx = self._index()
        keys = _FAST_KEYS if tags is FAST_TAGS else tuple(map(_tag_key, tags))
        return tuple(map(idx.get, keys))

    def get_str(self, tag: Union[int, str, bytes], default: Optional[str] = None) -> Optional[str]:
        v = self.get(tag)
        return default if v is None else v.decode("latin-1")

    def get_int(self, tag: Union[int, str, bytes], default: Optional[int] = None) -> Optional[int]:
        v = self.get(tag)
        if v is None or not v.isdigit():
            if v is not None and v[:1] == b"-" and v[1:].isdigit():
                return int(v)
            return default
        return int(v)

    def get_float(self, tag: Union[int, str, bytes], default: Optional[float] = None) -> Optional[float]:
        v = self.get(tag)
        if v is None:
            return default
        try:
            return float(v)
        except ValueError:
            return default

    def fields(self) -> List[Tuple[int, bytes]]:
        """All fields in wire order as (tag, value) pairs, repeating groups included, trailer last.

        Data fields take exactly the byte count given by their length field, so a SOH inside them
        does not split them. A field whose tag is not a number is returned with tag -1.
        """
        if self._fields is not None:
            return self._fields
        raw = self.raw
        n = len(raw)
        out: List[Tuple[int, bytes]] = []
        pos = 0
        data_tag = -2
        data_len = 0
        while pos < n:
            eq = raw.find(b"=", pos)
            if eq < 0:
                break
            tb = raw[pos:eq]
            tag = int(tb) if tb.isdigit() else -1
            if tag == data_tag and eq + 1 + data_len <= n:
                end = eq + 1 + data_len
            else:
                end = raw.find(SOH, eq + 1)
                if end < 0:
                    end = n
            value = raw[eq + 1:end]
            out.append((tag, value))
            data_tag = -2
            if tag in DATA_FIELDS and value.isdigit():
                data_tag, data_len = DATA_FIELDS[tag], int(value)
            pos = end + 1
        self._fields = out
        return out

    def groups(self, count_tag: int, delimiter: Optional[int] = None) -> List[List[Tuple[int, bytes]]]:
        """Instances of the repeating group counted by ``count_tag`` (e.g. 268 NoMDEntries).

        Each instance is the list of its (tag, value) pairs in wire order, nested groups included.
        The delimiter is ``delimiter`` or, as the spec requires, the first field after the count
        field. An instance ends at the next delimiter; the group ends after the counted number of
        instances, at a tag that is not a member of the group (member sets of the common groups come
        from the FIX dictionaries, :data:`fix_tags.GROUPS`), or, for groups not in that table, at the
        trailer or a tag repeated within the last instance.
        """
        fl = self.fields()
        for k, (tag, value) in enumerate(fl):
            if tag == count_tag:
                break
        else:
            return []
        if not value.isdigit() or k + 1 >= len(fl):
            return []
        count = int(value)
        if count == 0:
            return []
        delim = delimiter if delimiter is not None else fl[k + 1][0]
        members = GROUPS.get(count_tag, (None, None))[1]
        instances: List[List[Tuple[int, bytes]]] = []
        cur: List[Tuple[int, bytes]] = []
        seen: set = set()
        for tag, value in fl[k + 1:]:
            if tag == delim:
                if len(instances) == count:
                    break
                cur, seen = [], set()
                instances.append(cur)
            elif not instances:
                break  # the first instance must start with the delimiter
            elif members is not None:
                if tag not in members:
                    break
            elif tag in (10, 89, 93) or tag in seen:
                break
            cur.append((tag, value))
            seen.add(tag)
        return instances

    # -- fast-path properties (analytics) -----------------------------------------------------
    def _s(self, key: bytes) -> Optional[str]:
        v = self._value(key)
        return None if v is None else v.decode("latin-1")

    def _f(self, key: bytes) -> Optional[float]:
        v = self._value(key)
        if v is None:
            return None
        try:
            return float(v)
        except ValueError:
            return None

    cl_ord_id = property(lambda self: self._s(b"11"), doc="ClOrdID (11)")
    orig_cl_ord_id = property(lambda self: self._s(b"41"), doc="OrigClOrdID (41)")
    order_id = property(lambda self: self._s(b"37"), doc="OrderID (37)")
    exec_id = property(lambda self: self._s(b"17"), doc="ExecID (17)")
    ord_status = property(lambda self: self._s(b"39"), doc="OrdStatus (39)")
    exec_type = property(lambda self: self._s(b"150"), doc="ExecType (150)")
    side = property(lambda self: self._s(b"54"), doc="Side (54)")
    symbol = property(lambda self: self._s(b"55"), doc="Symbol (55)")
    order_qty = property(lambda self: self._f(b"38"), doc="OrderQty (38) as float")
    price = property(lambda self: self._f(b"44"), doc="Price (44) as float")
    last_px = property(lambda self: self._f(b"31"), doc="LastPx (31) as float")
    last_qty = property(lambda self: self._f(b"32"), doc="LastQty/LastShares (32) as float")
    cum_qty = property(lambda self: self._f(b"14"), doc="CumQty (14) as float")
    leaves_qty = property(lambda self: self._f(b"151"), doc="LeavesQty (151) as float")
    sending_time = property(lambda self: self._s(b"52"), doc="SendingTime (52), as sent")
    transact_time = property(lambda self: self._s(b"60"), doc="TransactTime (60), as sent")
    sender_comp_id = property(lambda self: self._s(b"49"), doc="SenderCompID (49)")
    target_comp_id = property(lambda self: self._s(b"56"), doc="TargetCompID (56)")

    @property
    def msg_seq_num(self) -> Optional[int]:
        """MsgSeqNum (34) as int."""
        return self.get_int(34)

    @property
    def msg_type_name(self) -> Optional[str]:
        return ENUMS[35].get(self.msg_type)

    # -- display ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-safe view: metadata plus every field with its name and, for known enums, meaning.

        Text values are decoded as Latin-1 (lossless); data fields are shown as hex.
        """
        data_tags = set(DATA_FIELDS.values())
        out_fields = []
        for tag, value in self.fields():
            if tag in data_tags:
                sval = value.hex()
            else:
                sval = value.decode("latin-1")
            item = {"tag": tag, "name": TAG_NAMES.get(tag, str(tag)), "value": sval}
            table = ENUMS.get(tag)
            if table is not None and sval in table:
                item["meaning"] = table[sval]
            out_fields.append(item)
        return {"protocol": self.protocol, "msg_type": self.msg_type, "msg_type_name": self.msg_type_name,
                "begin_string": self.begin_string, "checksum_ok": self.checksum_ok,
                "body_length_ok": self.body_length_ok, "ts_ns": self.ts_ns, "fields": out_fields}

    def __repr__(self) -> str:
        return (f"FixMessage({self.begin_string} 35={self.msg_type} len={len(self.raw)}"
                f" checksum_ok={self.checksum_ok})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FixMessage):
            return NotImplemented
        return (self.raw, self.ts_ns, self.checksum_ok, self.body_length_ok) == (
            other.raw, other.ts_ns, other.checksum_ok, other.body_length_ok)

    __hash__ = None  # type: ignore[assignment]


def _complete_message_at(buf, i: int, n: int, max_message: int) -> Optional[bool]:
    """Is there a complete, valid FIX message at ``buf[i:]`` (``buf[i:i+5] == b"8=FIX"``)?

    True: header, trailer position and CheckSum all check out. None: it looks right so far but
    is not complete within ``n`` bytes. False: it is not a message start.
    """
    find = buf.find
    j = find(SOH, i + 2, i + 3 + _MAX_BEGIN)
    if j < 0:
        return None if n < i + 3 + _MAX_BEGIN else False
    if bytes(buf[i + 2:j]) not in BEGIN_STRINGS:
        return False
    if n < j + 3:
        return None
    if not buf.startswith(b"9=", j + 1):
        return False
    k = find(SOH, j + 3, j + 4 + _MAX_LEN_DIGITS)
    if k < 0:
        return None if n < j + 4 + _MAX_LEN_DIGITS else False
    lb = buf[j + 3:k]
    if not lb.isdigit():
        return False
    cs = k + 1 + int(lb)
    if cs + 7 - i > max_message:
        return False
    if cs + 7 > n:
        return None
    if not buf.startswith(b"10=", cs) or buf[cs + 6] != 1 or buf[cs - 1] != 1:
        return False
    return bytes(buf[cs + 3:cs + 6]) == _CS_DIGITS[_byte_sum(bytes(buf[i:cs]))]


# The compiled straight line of FixStreamDecoder._parse (hft_packetfilter._native), or None.
_CORE = _accel.NATIVE.FixCore(FixMessage, _FAST_KEYS, sorted(_DATA_KEYS)) if _accel.NATIVE is not None else None


class FixStreamDecoder:
    """Decoder for one direction of a FIX TCP connection (see the module docstring).

    ``feed(data, ts_ns)`` returns the messages completed by ``data``; a message may span calls and
    one call may complete many. ``checksum`` is ``"strict"`` (default: a bad CheckSum rejects the
    message, as a FIX engine would), ``"report"`` (deliver it with ``checksum_ok=False`` and count
    it in ``stats.flagged``) or ``"ignore"`` (do not compute it; ``checksum_ok`` is None).
    A partial message may hold at most ``max_message`` bytes. ``native=False`` keeps the compiled
    straight line (when built) out of the parse, for comparison with this reference.
    """

    protocol = "FIX/TCP"

    def __init__(self, checksum: str = "strict", max_message: int = DEFAULT_MAX_MESSAGE,
                 native: bool = True) -> None:
        if checksum not in _CHECKSUM_MODES:
            raise ValueError(f"checksum must be one of {_CHECKSUM_MODES}, not {checksum!r}")
        self._core = _CORE if native else None
        self.checksum = checksum
        self.max_message = max_message
        self.stats = FixDecodeStats()
        self._buf = bytearray()   # pending bytes (a partial message, or a possible "8=FIX" prefix)
        self._pos = 0             # parse offset into _buf
        self._need = 0            # do not parse again before _buf holds this many bytes
        self._junk = False        # inside a run of skipped bytes (count a run once)
        self._scan_rel = 1        # see _parse: early resynchronisation while waiting for a body
        self._hdr: Tuple[bytes, str] = (b"8=FIX.4.4\x019=", "FIX.4.4")  # last good header prefix

    def reset(self) -> None:
        """Forget pending bytes, e.g. when the TCP reassembler declares a gap (``on_gap``).

        A partial message held at that point is counted as ``truncated_field``; other statistics
        are kept. (Without a reset the decoder still resynchronises by itself, at the first
        complete message after the gap.)"""
        if len(self._buf) > self._pos and self._buf.startswith(_START, self._pos):
            self.stats.rejects["truncated_field"] += 1
        self._buf = bytearray()
        self._pos = self._need = 0
        self._junk = False
        self._scan_rel = 1

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes, ts_ns: int = 0) -> List[FixMessage]:
        if not data:
            return []
        self.stats.bytes += len(data)
        buf = self._buf
        if not buf:
            # Common case: nothing pending, parse the caller's buffer in place.
            if type(data) is not bytes:
                data = bytes(data)
            out, pos, need = self._parse(data, 0, ts_ns)
            if pos < len(data):
                self._buf = bytearray(memoryview(data)[pos:])
                self._pos = 0
                self._need = need - pos
            return out
        buf += data
        if len(buf) < self._need:
            return []
        out, pos, need = self._parse(buf, self._pos, ts_ns)
        if pos >= len(buf):
            buf.clear()
            pos = need = 0
        elif pos >= _COMPACT_AT or pos * 2 >= len(buf):
            del buf[:pos]
            need -= pos
            pos = 0
        self._pos = pos
        self._need = need
        return out

    # -- internals ----------------------------------------------------------------------------
    def _skip(self, n: int) -> None:
        if n > 0:
            self.stats.skipped_bytes += n
            if not self._junk:
                self.stats.rejects["garbage"] += 1
                self._junk = True

    def _reject(self, reason: str) -> None:
        self.stats.rejects[reason] += 1
        self._junk = True  # the bytes skipped while resynchronising belong to this rejection

    def _reject_header(self, buf, i: int, limit: int, reason: str) -> int:
        """Reject the candidate at ``i`` whose header is bad up to ``limit``; returns where to resume.
        A header cut short by the next "8=FIX" is a truncation, resumed at that start."""
        nxt = buf.find(_START, i + 1, limit + 5)
        if nxt >= 0:
            self._reject("truncated_field")
            return nxt
        self._reject(reason)
        return i + 1

    def _parse(self, buf, pos: int, ts_ns: int):
        """Decode complete messages in ``buf[pos:]``.

        Returns (messages, offset of the first byte still needed, buffer length needed before it
        is worth parsing again). ``buf`` is bytes or bytearray; nothing here loops per byte. The
        common case (same BeginString as the previous message, trailer where BodyLength says) is
        a short straight line of C-level calls; anything unusual goes through the careful checks.
        """
        out: List[FixMessage] = []
        append = out.append
        n = len(buf)
        find = buf.find
        startswith = buf.startswith
        copy = type(buf) is not bytes
        mode = self.checksum
        max_message = self.max_message
        hdr, hdr_begin = self._hdr
        hlen = len(hdr)
        cs_table = _CS_DIGITS
        mt_cache = _MT_CACHE
        len_cache = _LEN_CACHE
        entry = pos
        scan_rel = self._scan_rel   # bytes after the first candidate already searched for a start
        self._scan_rel = 1
        core = self._core
        verify = mode != "ignore"
        try:
            while True:
                if core is not None and startswith(hdr, pos):
                    # The compiled straight line takes every well-formed message from here on that
                    # the code below would take unchanged, and stops at the first that needs care.
                    npos = core.scan(out, buf, pos, hdr, hdr_begin, ts_ns, verify, max_message)
                    if npos != pos:
                        self._junk = False
                        pos = npos
                if startswith(hdr, pos):
                    # Back-to-back with the previous message's header: no search, no checks.
                    i = pos
                    d0 = i + hlen
                    begin = hdr_begin
                else:
                    i = find(_START, pos)
                    d0 = -1
                if i < 0:
                    # Keep a tail that could be the beginning of "8=FIX"; drop the rest.
                    keep = n
                    k = find(b"8", max(pos, n - 4))
                    while k >= 0:
                        if _START.startswith(bytes(buf[k:n])):
                            keep = k
                            break
                        k = find(b"8", k + 1)
                    self._skip(keep - pos)
                    return out, keep, n + 1
                if i > pos:
                    self._skip(i - pos)
                if d0 >= 0:
                    pass
                elif startswith(hdr, i):
                    # "8=<BeginString><SOH>9=" exactly as in the previous good message
                    d0 = i + hlen
                    begin = hdr_begin
                else:
                    j = find(SOH, i + 2, i + 3 + _MAX_BEGIN)
                    if j < 0:
                        if n < i + 3 + _MAX_BEGIN:
                            return out, i, n + 1
                        pos = self._reject_header(buf, i, i + 3 + _MAX_BEGIN, "bad_begin_string")
                        continue
                    begin = BEGIN_STRINGS.get(bytes(buf[i + 2:j]))
                    if begin is None:
                        pos = self._reject_header(buf, i, j, "bad_begin_string")
                        continue
                    if n < j + 3:
                        return out, i, j + 3
                    if not startswith(b"9=", j + 1):
                        pos = self._reject_header(buf, i, j + 3, "bad_body_length")
                        continue
                    d0 = j + 3
                    hdr, hdr_begin = bytes(buf[i:d0]), begin
                    hlen = len(hdr)
                    self._hdr = (hdr, begin)
                # BodyLength
                k = find(SOH, d0, d0 + 1 + _MAX_LEN_DIGITS)
                if k < 0:
                    if n < d0 + 1 + _MAX_LEN_DIGITS:
                        return out, i, n + 1
                    pos = self._reject_header(buf, i, d0 + 1 + _MAX_LEN_DIGITS, "bad_body_length")
                    continue
                lb = bytes(buf[d0:k]) if copy else buf[d0:k]
                body_len = len_cache.get(lb)
                if body_len is None:
                    if not lb.isdigit():
                        pos = self._reject_header(buf, i, k, "bad_body_length")
                        continue
                    body_len = int(lb)
                    if len(len_cache) < 65536:
                        len_cache[lb] = body_len
                cs = k + 1 + body_len
                end = cs + 7
                if end - i > max_message:
                    self._reject("message_too_large")
                    pos = i + 1
                    continue
                if end > n:
                    # Waiting for the rest of the body. If a complete, valid message already
                    # starts inside the declared body, this one was cut short (e.g. segments lost
                    # before the probe saw them): resynchronise now rather than hold the messages
                    # behind it (and their timestamps) until the declared length has arrived.
                    # Only bytes not scanned by an earlier call are searched (linear).
                    rel = scan_rel if i == entry else 1
                    scan_rel = 1
                    nxt = find(_START, i + max(rel, 1))
                    inner = None
                    while nxt >= 0:
                        inner = _complete_message_at(buf, nxt, n, max_message)
                        if inner is not False:
                            break
                        nxt = find(_START, nxt + 1)
                    if inner:
                        self._reject("truncated_field")
                        pos = nxt
                        continue
                    self._scan_rel = (nxt if nxt >= 0 else max(i + 1, n - 4)) - i
                    return out, i, n + 1
                if not startswith(b"10=", cs) or buf[end - 1] != 1 or buf[cs - 1] != 1:
                    # The declared length does not land on the trailer. Name it
                    # "truncated_field" when another message starts inside it (this one was cut
                    # short) and resume there; the bytes up to cs - 4 hold no other start.
                    nxt = find(_START, i + 1, end + 4)
                    if nxt >= 0:
                        self._reject("truncated_field")
                        pos = nxt
                    else:
                        self._reject("bad_body_length")
                        pos = max(i + 1, cs - 4)
                    continue
                raw = bytes(buf[i:end]) if copy else buf[i:end]
                # MsgType: the third field by the spec; accept it later in the body too.
                bo = k + 1 - i
                if raw.startswith(b"35=", bo):
                    mt = raw[bo + 3:raw.find(SOH, bo + 3)]
                else:
                    p = raw.find(b"\x0135=", bo - 1, cs - i)
                    if p < 0:
                        nxt = raw.find(_START, 1, cs - i)
                        self._reject("missing_msg_type" if nxt < 0 else "truncated_field")
                        pos = end if nxt < 0 else i + nxt
                        continue
                    mt = raw[p + 4:raw.find(SOH, p + 4)]
                mts = mt_cache.get(mt)
                if mts is None:
                    mts = _msg_type_str(mt)
                if mode == "ignore":
                    ok = None
                else:
                    cl = cs - i
                    if cl <= 256:   # see _byte_sum: the Adler-32 low half minus 1 is the sum
                        ok = raw[-4:-1] == cs_table[(_adler32(raw[:cl]) - 1) & 0xFF]
                    else:
                        ok = raw[-4:-1] == cs_table[_byte_sum(raw[:cl])]
                    if not ok:
                        nxt = raw.find(_START, 1, cl)
                        if nxt >= 0:
                            # A message cut short whose declared length happens to land on the
                            # next message's trailer: resume at the message inside it.
                            self._reject("truncated_field")
                            pos = i + nxt
                            continue
                        if mode == "strict" or not raw[-4:-1].isdigit():
                            self._reject("bad_checksum")
                            pos = end
                            continue
                        self.stats.flagged["bad_checksum"] += 1
                append(FixMessage(raw, begin, mts, ts_ns, ok, True))
                self._junk = False
                pos = end
        finally:
            self.stats.messages += len(out)


# -- log files ----------------------------------------------------------------------------------

_LOG_START = re.compile(rb"8=FIXT?\.\d\.\d(\x01|\^A|\|)")


class FixLogReader:
    """Iterate over the FIX messages of a log file (see :func:`read_fix_log`); ``stats`` fills as
    the iteration goes.

    Per line: free text before the first ``8=FIX`` (timestamps, "incoming", ...) is ignored; the
    delimiter is detected per line (SOH, ``|`` or ``^A``) and replaced by SOH, so BodyLength and
    CheckSum are checked against the message as it was on the wire. A message runs from ``8=FIX``
    through its ``10=nnn`` field (the trailing delimiter may be missing at the end of a line).
    Lines without ``8=FIX`` are counted as ``garbage``; blank lines are ignored.
    """

    def __init__(self, source, *, checksum: str = "strict", body_length: str = "report") -> None:
        for name, mode in (("checksum", checksum), ("body_length", body_length)):
            if mode not in _CHECKSUM_MODES:
                raise ValueError(f"{name} must be one of {_CHECKSUM_MODES}, not {mode!r}")
        self.source = source
        self.checksum = checksum
        self.body_length = body_length
        self.stats = FixDecodeStats()

    def __iter__(self) -> Iterator[FixMessage]:
        for line in self._lines():
            yield from self.decode_line(line, ts_ns=0)

    def _lines(self) -> Iterator[bytes]:
        src = self.source
        if isinstance(src, (str, os.PathLike)):
            with open(src, "rb") as f:
                yield from f
        elif isinstance(src, (bytes, bytearray, memoryview)):
            yield from io.BytesIO(bytes(src))
        else:
            for line in src:
                yield line.encode("latin-1") if isinstance(line, str) else bytes(line)

    def decode_line(self, line: bytes, ts_ns: int = 0) -> List[FixMessage]:
        """Decode the messages of one log line (stats are updated)."""
        stats = self.stats
        line = line.rstrip(b"\r\n")
        if not line.strip():
            return []
        stats.bytes += len(line)
        m = _LOG_START.search(line)
        if m is None:
            stats.rejects["garbage"] += 1
            return []
        first = m.start()
        delim = m.group(1)
        if delim != SOH:
            line = line[:first] + line[first:].replace(delim, SOH)
        out: List[FixMessage] = []
        n = len(line)
        pos = first
        while pos < n:
            i = line.find(_START, pos)
            if i < 0:
                if line[pos:].strip():
                    stats.rejects["garbage"] += 1
                break
            if i > pos and pos > first and line[pos:i].strip():
                stats.rejects["garbage"] += 1
            t = line.find(b"\x0110=", i)
            nxt = line.find(_START, i + 5)
            if t < 0 or 0 <= nxt < t:
                stats.rejects["truncated_field"] += 1
                pos = nxt if nxt >= 0 else n
                continue
            ve = line.find(SOH, t + 4)
            if ve < 0:
                ve = n
            csv = line[t + 4:ve]
            pos = ve + 1
            if len(csv) != 3 or not csv.isdigit():
                stats.rejects["truncated_field" if ve == n and len(csv) < 3 and csv.isdigit()
                              else "bad_checksum"] += 1
                continue
            msg = self._message(line[i:t + 1], csv, ts_ns)
            if msg is not None:
                out.append(msg)
        return out

    def _message(self, head: bytes, csv: bytes, ts_ns: int) -> Optional[FixMessage]:
        """Validate one message (``head`` = bytes before ``10=``, ``csv`` = its three digits)."""
        stats = self.stats
        j = head.find(SOH)
        begin = BEGIN_STRINGS.get(head[2:j])
        if begin is None:
            stats.rejects["bad_begin_string"] += 1
            return None
        body_ok = False
        if head.startswith(b"9=", j + 1):
            k = head.find(SOH, j + 3)
            lb = head[j + 3:k]
            body_ok = k > 0 and lb.isdigit() and int(lb) == len(head) - k - 1
        else:
            k = j
        if not body_ok:
            if self.body_length == "strict":
                stats.rejects["bad_body_length"] += 1
                return None
            if self.body_length == "report":
                stats.flagged["bad_body_length"] += 1
        p = head.find(b"\x0135=", k if k > 0 else j)
        if p < 0:
            stats.rejects["missing_msg_type"] += 1
            return None
        mt = head[p + 4:head.find(SOH, p + 4)]
        ok: Optional[bool] = None
        if self.checksum != "ignore":
            ok = _byte_sum(head) == int(csv)
            if not ok:
                if self.checksum == "strict":
                    stats.rejects["bad_checksum"] += 1
                    return None
                stats.flagged["bad_checksum"] += 1
        stats.messages += 1
        return FixMessage(head + b"10=" + csv + SOH, begin, _msg_type_str(mt), ts_ns, ok, body_ok)


def read_fix_log(path_or_lines: Union[str, "os.PathLike[str]", bytes, Iterable[Union[bytes, str]]], *,
                 checksum: str = "strict", body_length: str = "report") -> FixLogReader:
    """Read FIX messages from a log: a path, the file's bytes, or an iterable of lines.

    Returns a :class:`FixLogReader`: iterate it for the messages, then read ``.stats``
    (``rejects`` and ``flagged`` by reason). ``checksum="strict"`` drops messages with a wrong
    CheckSum (counted as ``rejects["bad_checksum"]``); ``"report"`` yields them with
    ``checksum_ok=False`` (counted as ``flagged["bad_checksum"]``); ``"ignore"`` skips the check.
    ``body_length`` works the same way and defaults to report-only, since logs are framed by line.

    >>> reader = read_fix_log(["20230101-12:00:00.000 : 8=FIX.4.2|9=5|35=0|10=161|"])
    >>> [m.msg_type for m in reader], dict(reader.stats.rejects)
    (['0'], {})
    """
    return FixLogReader(path_or_lines, checksum=checksum, body_length=body_length)


register(ProtocolInfo(name="FIX/TCP", transport="tcp", stream_kind="order_entry",
                      new_decoder=FixStreamDecoder, aliases=("FIX", "FIXT/TCP", "FIX/FIXT"),
                      spec="FIX 4.0-4.4, FIXT.1.1 with FIX 5.0/SP1/SP2"))
