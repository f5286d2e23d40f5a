"""Generic Simple Binary Encoding (SBE) 1.0 decoder driven by a schema XML read at run time.

Implements the FIX Trading Community "Simple Binary Encoding Technical Specification 1.0"
(the RC2 / 2016 XML namespaces both work: element names are matched without their namespace):

* ``<type>`` primitives (char, int8..uint64, float, double), fixed arrays, ``presence`` required /
  optional (``nullValue`` or the spec's default null) / constant;
* ``<composite>`` (members with explicit ``offset`` or packed in order, nested composites, ``<ref>``),
  with decimals (``mantissa`` + ``exponent``) kept exact as :class:`Decimal` values;
* ``<enum>`` and ``<set>`` over a primitive or a named encoding type;
* ``<message>`` root blocks with field ``offset``\\ s, repeating ``<group>``\\ s whose dimension
  composite may place ``numInGroup`` anywhere (``groupSize``, ``groupSize8Byte``,
  ``groupSizeEncoding``), nested groups and ``<data>`` (var data: a length prefix plus bytes).

Schema evolution (spec section "Schema evolution" / message versioning): a message is decoded with
its *acting* version and blockLength from its header. Fields, groups and data whose
``sinceVersion`` exceeds the acting version are absent; a root or group block longer than the
schema's is skipped using the wire blockLength; a shorter one (an older producer) yields only the
fields that fit.

Every block is precompiled into ``struct.Struct`` plans when the schema loads (one per message
root and group entry at the schema's own version and blockLength); plans for other
(blockLength, version) pairs are compiled once on first sight and cached.

Decoding never raises to the caller: :meth:`Schema.decode` returns ``(None, reason)`` for
truncated or inconsistent input.
"""
from __future__ import annotations

import dataclasses
import struct
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

# primitive -> (struct code, size, spec default null for optional presence)
_PRIMS: Dict[str, Tuple[str, int, Any]] = {
    "char": ("s", 1, 0),
    "int8": ("b", 1, -(2 ** 7)),
    "uint8": ("B", 1, 2 ** 8 - 1),
    "int16": ("h", 2, -(2 ** 15)),
    "uint16": ("H", 2, 2 ** 16 - 1),
    "int32": ("i", 4, -(2 ** 31)),
    "uint32": ("I", 4, 2 ** 32 - 1),
    "int64": ("q", 8, -(2 ** 63)),
    "uint64": ("Q", 8, 2 ** 64 - 1),
    "float": ("f", 4, float("nan")),
    "double": ("d", 8, float("nan")),
}

# Protects decode time on garbage: a group may not claim more entries than this.
MAX_GROUP_ENTRIES = 65535


class SchemaError(ValueError):
    """The schema XML is malformed or refers to an undefined type."""


class _Truncated(Exception):
    pass


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _int(text: Optional[str], default: int = 0) -> int:
    if text is None or text.strip() == "":
        return default
    return int(text.strip(), 0) if text.strip().lower().startswith("0x") else int(text.strip())


# ----------------------------------------------------------------------------- type model

@dataclasses.dataclass
class PrimType:
    name: str
    prim: str
    length: int = 1
    presence: str = "required"
    null_value: Any = None
    const: Any = None
    since_version: int = 0

    @property
    def size(self) -> int:
        return 0 if self.presence == "constant" else _PRIMS[self.prim][1] * self.length


@dataclasses.dataclass
class EnumType:
    name: str
    encoding: PrimType
    values: Dict[Any, str]            # raw value (int or 1-char str) -> name
    since_version: int = 0

    @property
    def size(self) -> int:
        return self.encoding.size


@dataclasses.dataclass
class SetType:
    name: str
    encoding: PrimType
    choices: List[Tuple[int, str]]    # (bit, name)
    since_version: int = 0

    @property
    def size(self) -> int:
        return self.encoding.size


@dataclasses.dataclass
class CompositeType:
    name: str
    members: List[Tuple[str, int, Any]]   # (name, offset, type); constants have size 0
    size: int
    since_version: int = 0

    @property
    def is_decimal(self) -> bool:
        names = [m[0] for m in self.members]
        return names[:2] == ["mantissa", "exponent"] and len(names) == 2


SbeType = Union[PrimType, EnumType, SetType, CompositeType]


@dataclasses.dataclass
class FieldDef:
    name: str
    id: int
    type: SbeType
    offset: int
    since_version: int = 0
    const: Any = None          # value for presence="constant" fields (valueRef or type constant)


@dataclasses.dataclass
class GroupDef:
    name: str
    id: int
    block_length: int
    dimension: "Dimension"
    fields: List[FieldDef]
    groups: List["GroupDef"]
    data: List["DataDef"]
    since_version: int = 0
    plan: Optional["_BlockPlan"] = None


@dataclasses.dataclass
class DataDef:
    name: str
    id: int
    length_struct: struct.Struct
    length_offset: int
    header_size: int
    since_version: int = 0


@dataclasses.dataclass
class MessageDef:
    name: str
    id: int
    block_length: int
    fields: List[FieldDef]
    groups: List[GroupDef]
    data: List[DataDef]
    since_version: int = 0
    semantic_type: str = ""
    plan: Optional["_BlockPlan"] = None


@dataclasses.dataclass
class Dimension:
    size: int
    block_length: Tuple[struct.Struct, int]   # (struct, offset)
    num_in_group: Tuple[struct.Struct, int]


@dataclasses.dataclass
class SbeMessage:
    """One decoded SBE message: header values plus named fields (groups as lists of dicts)."""

    template_id: int
    name: str
    schema_id: int
    version: int
    block_length: int
    fields: Dict[str, Any]
    size: int                  # bytes consumed after the message header

    def to_dict(self) -> Dict[str, Any]:
        return {"template_id": self.template_id, "name": self.name, "schema_id": self.schema_id,
                "version": self.version, "block_length": self.block_length,
                **json_safe(self.fields)}


def json_safe(v: Any) -> Any:
    """Decimals become strings (exact), bytes become hex, containers recurse."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, float) and v != v:
        return None
    return v


# ----------------------------------------------------------------------------- block plans

@dataclasses.dataclass
class _BlockPlan:
    """A compiled block: one struct over the block plus converters that consume its values."""

    struct: struct.Struct
    convs: List[Tuple[str, int, Callable[[tuple], Any]]]   # (field name, n values, converter)
    consts: List[Tuple[str, Any]]


def _decode_char(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("latin-1").rstrip(" ") if len(raw) > 1 else raw.decode("latin-1")


def _prim_conv(t: PrimType) -> Tuple[str, int, Callable[[tuple], Any]]:
    code, _size, default_null = _PRIMS[t.prim]
    if t.prim == "char":
        fmt = f"{t.length}s"
        null = t.null_value
        if t.length == 1:
            nb = bytes([null]) if isinstance(null, int) else (null.encode("latin-1") if null else b"\x00")
            opt = t.presence == "optional"

            def conv(v, nb=nb, opt=opt):
                raw = v[0]
                if opt and raw == nb:
                    return None
                return raw.decode("latin-1")
            return fmt, 1, conv
        return fmt, 1, lambda v: _decode_char(v[0])
    if t.length > 1:
        return f"{t.length}{code}", t.length, lambda v: list(v)
    if t.presence == "optional":
        null = t.null_value if t.null_value is not None else default_null
        if t.prim in ("float", "double"):
            return code, 1, lambda v: None if v[0] != v[0] else v[0]
        return code, 1, lambda v, n=null: None if v[0] == n else v[0]
    return code, 1, lambda v: v[0]


def _enum_conv(t: EnumType) -> Tuple[str, int, Callable[[tuple], Any]]:
    fmt, n, base = _prim_conv(t.encoding)
    values = t.values

    def conv(v):
        raw = base(v)
        if raw is None:
            return None
        return values.get(raw, raw)
    return fmt, n, conv


def _set_conv(t: SetType) -> Tuple[str, int, Callable[[tuple], Any]]:
    code = _PRIMS[t.encoding.prim][0]
    if t.encoding.prim == "char":
        code = "B"
    choices = t.choices

    def conv(v):
        bits = v[0]
        return [name for bit, name in choices if bits >> bit & 1]
    return code, 1, conv


def _composite_conv(t: CompositeType, byte_order: str) -> Tuple[str, int, Callable[[tuple], Any]]:
    """Flatten a composite into a struct fragment (pad bytes where offsets leave gaps)."""
    parts: List[str] = []
    convs: List[Tuple[str, int, Callable]] = []
    consts: List[Tuple[str, Any]] = []
    pos = 0
    for name, off, mt in t.members:
        if _is_const(mt):
            consts.append((name, _const_value(mt)))
            continue
        if off > pos:
            parts.append(f"{off - pos}x")
            pos = off
        fmt, n, c = _type_conv(mt, byte_order)
        parts.append(fmt)
        convs.append((name, n, c))
        pos += mt.size
    if t.size > pos:
        parts.append(f"{t.size - pos}x")
    total = sum(n for _, n, _ in convs)
    if t.is_decimal:
        mant = convs[0][2] if convs else None
        exp_const = dict(consts).get("exponent")
        exp_conv = convs[1][2] if len(convs) > 1 else None

        def dec(v):
            m = mant(v[:1])
            if m is None:
                return None
            e = exp_const if exp_conv is None else exp_conv(v[1:2])
            if e is None:
                return None
            return Decimal(m).scaleb(int(e))
        return "".join(parts), total, dec

    def conv(v):
        out: Dict[str, Any] = {}
        i = 0
        for name, n, c in convs:
            out[name] = c(v[i:i + n])
            i += n
        for name, val in consts:
            out[name] = val
        return out
    return "".join(parts), total, conv


def _type_conv(t: SbeType, byte_order: str):
    if isinstance(t, PrimType):
        return _prim_conv(t)
    if isinstance(t, EnumType):
        return _enum_conv(t)
    if isinstance(t, SetType):
        return _set_conv(t)
    return _composite_conv(t, byte_order)


def _is_const(t: SbeType) -> bool:
    if isinstance(t, PrimType):
        return t.presence == "constant"
    if isinstance(t, EnumType):
        return t.encoding.presence == "constant"
    return False


def _const_value(t: SbeType) -> Any:
    if isinstance(t, EnumType):
        raw = _const_value(t.encoding)
        return t.values.get(raw, raw)
    c = t.const
    if t.prim == "char":
        return c
    try:
        return int(c)
    except (TypeError, ValueError):
        return c


def _compile_block(fields: List[FieldDef], limit: int, version: int, byte_order: str) -> _BlockPlan:
    """Plan for the fields of one block that fit in ``limit`` bytes and exist at ``version``."""
    parts = [byte_order]
    convs: List[Tuple[str, int, Callable]] = []
    consts: List[Tuple[str, Any]] = []
    pos = 0
    for f in sorted(fields, key=lambda f: f.offset):
        if f.since_version > version:
            continue
        if f.const is not None or _is_const(f.type):
            consts.append((f.name, f.const if f.const is not None else _const_value(f.type)))
            continue
        size = f.type.size
        if f.offset + size > limit or f.offset < pos:
            continue
        if f.offset > pos:
            parts.append(f"{f.offset - pos}x")
        fmt, n, c = _type_conv(f.type, byte_order)
        parts.append(fmt)
        convs.append((f.name, n, c))
        pos = f.offset + size
    return _BlockPlan(struct.Struct("".join(parts)), convs, consts)


def _run_plan(plan: _BlockPlan, buf, off: int, out: Dict[str, Any]) -> None:
    vals = plan.struct.unpack_from(buf, off)
    i = 0
    for name, n, c in plan.convs:
        out[name] = c(vals[i:i + n])
        i += n
    for name, val in plan.consts:
        out[name] = val


# ----------------------------------------------------------------------------- schema

class Schema:
    """A loaded SBE schema. Build with :meth:`from_file` or :meth:`from_string`."""

    def __init__(self, root: ET.Element, source: str = "<string>") -> None:
        if _local(root.tag) != "messageSchema":
            raise SchemaError(f"{source}: root element is {_local(root.tag)!r}, not messageSchema")
        self.source = source
        self.package = root.get("package", "")
        self.id = _int(root.get("id"), 0)
        self.version = _int(root.get("version"), 0)
        self.description = root.get("description", "")
        bo = root.get("byteOrder", "littleEndian")
        self.byte_order = ">" if bo == "bigEndian" else "<"
        self.types: Dict[str, SbeType] = {}
        self._raw: Dict[str, ET.Element] = {}
        for types in root.iter():
            if _local(types.tag) == "types":
                for el in types:
                    name = el.get("name")
                    if name:
                        self._raw[name] = el
        for name in list(self._raw):
            self._resolve(name)
        header_name = root.get("headerType", "messageHeader")
        header = self.types.get(header_name)
        if not isinstance(header, CompositeType):
            raise SchemaError(f"{source}: no {header_name!r} composite")
        self.header = header
        self._header_struct, self._header_fields = self._member_structs(header, (
            "blockLength", "templateId", "schemaId", "version"))
        self.header_size = header.size
        self.messages: Dict[int, MessageDef] = {}
        for el in root:
            if _local(el.tag) == "message":
                m = self._parse_message(el)
                self.messages[m.id] = m
        self._plans: Dict[Tuple[int, int, int], _BlockPlan] = {}

    # -- construction

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "Schema":
        p = Path(path)
        try:
            root = ET.parse(str(p)).getroot()
        except ET.ParseError as e:
            raise SchemaError(f"{p}: {e}") from None
        return cls(root, str(p))

    @classmethod
    def from_string(cls, text: Union[str, bytes]) -> "Schema":
        try:
            root = ET.fromstring(text)
        except ET.ParseError as e:
            raise SchemaError(f"<string>: {e}") from None
        return cls(root)

    def _resolve(self, name: str) -> SbeType:
        if name in self.types:
            return self.types[name]
        if name in _PRIMS:
            return PrimType(name, name)
        el = self._raw.get(name)
        if el is None:
            raise SchemaError(f"{self.source}: undefined type {name!r}")
        t = self._parse_type_el(el)
        self.types[name] = t
        return t

    def _parse_type_el(self, el: ET.Element) -> SbeType:
        kind = _local(el.tag)
        name = el.get("name", "")
        since = _int(el.get("sinceVersion"), 0)
        if kind == "type":
            prim = el.get("primitiveType", "")
            if prim not in _PRIMS:
                raise SchemaError(f"{self.source}: type {name!r} has unknown primitiveType {prim!r}")
            presence = el.get("presence", "required")
            length = _int(el.get("length"), 1)
            null = el.get("nullValue")
            null_v: Any = None
            if null is not None:
                null_v = (null if prim == "char" and not null.lstrip("-").isdigit()
                          else (float(null) if prim in ("float", "double") else int(null)))
            const = (el.text or "").strip() if presence == "constant" else None
            return PrimType(name, prim, length, presence, null_v, const, since)
        if kind == "enum":
            enc = self._encoding(el.get("encodingType", "uint8"))
            values: Dict[Any, str] = {}
            for vv in el:
                if _local(vv.tag) != "validValue":
                    continue
                text = (vv.text or "").strip()
                raw: Any = text if enc.prim == "char" else _int(text)
                values[raw] = vv.get("name", text)
            return EnumType(name, enc, values, since)
        if kind == "set":
            enc = self._encoding(el.get("encodingType", "uint8"))
            choices = [(_int(c.text), c.get("name", "")) for c in el if _local(c.tag) == "choice"]
            return SetType(name, enc, choices, since)
        if kind == "composite":
            members: List[Tuple[str, int, Any]] = []
            pos = 0
            for m in el:
                mk = _local(m.tag)
                if mk == "ref":
                    mt = self._resolve(m.get("type", ""))
                elif mk in ("type", "enum", "set", "composite"):
                    mt = self._parse_type_el(m)
                else:
                    continue
                off = m.get("offset")
                if off is not None:
                    pos = _int(off)
                members.append((m.get("name", ""), pos, mt))
                pos += mt.size
            return CompositeType(name, members, pos, since)
        raise SchemaError(f"{self.source}: unsupported type element {kind!r}")

    def _encoding(self, enc_name: str) -> PrimType:
        if enc_name in _PRIMS:
            return PrimType(enc_name, enc_name)
        t = self._resolve(enc_name)
        if not isinstance(t, PrimType):
            raise SchemaError(f"{self.source}: encodingType {enc_name!r} is not a primitive type")
        return t

    def _member_structs(self, comp: CompositeType, names) -> Tuple[struct.Struct, List[str]]:
        parts, pos, found = [self.byte_order], 0, []
        for name, off, mt in sorted(comp.members, key=lambda m: m[1]):
            if name not in names or not isinstance(mt, PrimType) or mt.size == 0:
                continue
            if off > pos:
                parts.append(f"{off - pos}x")
            parts.append(_PRIMS[mt.prim][0])
            found.append(name)
            pos = off + mt.size
        return struct.Struct("".join(parts)), found

    def _field_type(self, el: ET.Element) -> SbeType:
        return self._resolve(el.get("type", ""))

    def _parse_fields(self, el: ET.Element) -> Tuple[List[FieldDef], List[GroupDef], List[DataDef]]:
        fields: List[FieldDef] = []
        groups: List[GroupDef] = []
        data: List[DataDef] = []
        pos = 0
        for f in el:
            k = _local(f.tag)
            since = _int(f.get("sinceVersion"), 0)
            if k == "field":
                t = self._field_type(f)
                off = f.get("offset")
                const = None
                if f.get("presence") == "constant":
                    ref = f.get("valueRef", "")
                    const = ref.split(".", 1)[-1] if ref else (f.text or "").strip() or None
                    if const is None and _is_const(t):
                        const = _const_value(t)
                if off is not None:
                    pos = _int(off)
                fields.append(FieldDef(f.get("name", ""), _int(f.get("id")), t, pos, since, const))
                if const is None and not _is_const(t):
                    pos += t.size
            elif k == "group":
                dim_t = self._resolve(f.get("dimensionType", "groupSizeEncoding"))
                if not isinstance(dim_t, CompositeType):
                    raise SchemaError(f"{self.source}: dimensionType of {f.get('name')!r} is not a composite")
                dim = self._dimension(dim_t)
                gf, gg, gd = self._parse_fields(f)
                bl = f.get("blockLength")
                block = _int(bl) if bl is not None else _block_size(gf)
                g = GroupDef(f.get("name", ""), _int(f.get("id")), block, dim, gf, gg, gd, since)
                g.plan = _compile_block(gf, block, 1 << 30, self.byte_order)
                groups.append(g)
            elif k == "data":
                t = self._resolve(f.get("type", ""))
                if not isinstance(t, CompositeType):
                    raise SchemaError(f"{self.source}: data {f.get('name')!r} type is not a composite")
                ln = [(off, mt) for name, off, mt in t.members if name == "length"]
                if not ln or not isinstance(ln[0][1], PrimType):
                    raise SchemaError(f"{self.source}: data type {t.name!r} has no length member")
                off, mt = ln[0]
                vd = [o for name, o, _ in t.members if name == "varData"]
                hdr = vd[0] if vd else off + mt.size
                data.append(DataDef(f.get("name", ""), _int(f.get("id")),
                                    struct.Struct(self.byte_order + _PRIMS[mt.prim][0]), off, hdr, since))
        return fields, groups, data

    def _dimension(self, comp: CompositeType) -> Dimension:
        bl = nig = None
        for name, off, mt in comp.members:
            if isinstance(mt, PrimType) and mt.size:
                s = (struct.Struct(self.byte_order + _PRIMS[mt.prim][0]), off)
                if name == "blockLength":
                    bl = s
                elif name == "numInGroup":
                    nig = s
        if bl is None or nig is None:
            raise SchemaError(f"{self.source}: dimension {comp.name!r} lacks blockLength/numInGroup")
        return Dimension(comp.size, bl, nig)

    def _parse_message(self, el: ET.Element) -> MessageDef:
        fields, groups, data = self._parse_fields(el)
        bl = el.get("blockLength")
        block = _int(bl) if bl is not None else _block_size(fields)
        m = MessageDef(el.get("name", ""), _int(el.get("id")), block, fields, groups, data,
                       _int(el.get("sinceVersion"), 0), el.get("semanticType", ""))
        m.plan = _compile_block(fields, block, 1 << 30, self.byte_order)
        return m

    # -- decoding

    def decode_header(self, buf, off: int = 0) -> Optional[Dict[str, int]]:
        """The message header at ``off`` as a dict, or None when it does not fit."""
        if off < 0 or off + self.header_size > len(buf):
            return None
        vals = self._header_struct.unpack_from(buf, off)
        return dict(zip(self._header_fields, vals))

    def _plan(self, key_obj, fields: List[FieldDef], full: _BlockPlan, schema_block: int,
              block: int, version: int) -> _BlockPlan:
        if block >= schema_block and version >= self.version:
            return full
        key = (id(key_obj), block, version)
        p = self._plans.get(key)
        if p is None:
            if len(self._plans) > 4096:    # garbage headers must not grow the cache without bound
                self._plans.clear()
            p = _compile_block(fields, block, version, self.byte_order)
            self._plans[key] = p
        return p

    def decode(self, buf, off: int, end: int, template_id: int, block_length: int,
               version: int, schema_id: Optional[int] = None):
        """Decode one message body starting at ``off`` (just after the header), bounded by ``end``.

        Returns ``(SbeMessage, "")`` or ``(None, reason)``; never raises on bad input.
        """
        m = self.messages.get(template_id)
        if m is None:
            return None, f"unknown_template:{template_id}"
        if end > len(buf):
            end = len(buf)
        try:
            out: Dict[str, Any] = {}
            if off + block_length > end:
                raise _Truncated()
            plan = self._plan(m, m.fields, m.plan, m.block_length, block_length, version)
            _run_plan(plan, buf, off, out)
            pos = self._tail(buf, off + block_length, end, m.groups, m.data, version, out)
        except _Truncated:
            return None, "truncated"
        except (struct.error, ValueError, OverflowError):
            return None, "malformed"
        return SbeMessage(template_id, m.name, self.id if schema_id is None else schema_id, version,
                          block_length, out, pos - off), ""

    def _tail(self, buf, pos: int, end: int, groups: List[GroupDef], data: List[DataDef],
              version: int, out: Dict[str, Any]) -> int:
        for g in groups:
            if g.since_version > version:
                continue
            d = g.dimension
            if pos + d.size > end:
                raise _Truncated()
            bl = d.block_length[0].unpack_from(buf, pos + d.block_length[1])[0]
            n = d.num_in_group[0].unpack_from(buf, pos + d.num_in_group[1])[0]
            pos += d.size
            if n > MAX_GROUP_ENTRIES or pos + bl * n > end:
                raise _Truncated()
            plan = self._plan(g, g.fields, g.plan, g.block_length, bl, version)
            entries = []
            for _ in range(n):
                e: Dict[str, Any] = {}
                if pos + bl > end:
                    raise _Truncated()
                if plan.struct.size <= bl:
                    _run_plan(plan, buf, pos, e)
                pos += bl
                if g.groups or g.data:
                    pos = self._tail(buf, pos, end, g.groups, g.data, version, e)
                entries.append(e)
            out[g.name] = entries
        for dd in data:
            if dd.since_version > version:
                continue
            if pos + dd.header_size > end:
                raise _Truncated()
            ln = dd.length_struct.unpack_from(buf, pos + dd.length_offset)[0]
            pos += dd.header_size
            if pos + ln > end:
                raise _Truncated()
            out[dd.name] = bytes(buf[pos:pos + ln])
            pos += ln
        return pos


def _block_size(fields: List[FieldDef]) -> int:
    end = 0
    for f in fields:
        if f.const is None and not _is_const(f.type):
            end = max(end, f.offset + f.type.size)
    return end


def load_schema(path: Union[str, Path]) -> Schema:
    """Load a schema XML from ``path`` (raises :class:`SchemaError` or OSError)."""
    return Schema.from_file(path)
