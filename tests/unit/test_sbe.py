"""Generic SBE decoder: schema model, groups, var data, version rules, robustness."""
import random
import struct
import time
from decimal import Decimal
from pathlib import Path

import pytest

from hft_packetfilter.protocols import sbe

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
SCHEMAS = CORPUS / "sbe-schemas-cme"

# A small schema of our own, version 3, exercising every construct the decoder supports.
XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<sbe:messageSchema xmlns:sbe="http://fixprotocol.io/2016/sbe" package="t" id="7" version="3"
                   byteOrder="littleEndian">
  <types>
    <composite name="messageHeader">
      <type name="blockLength" primitiveType="uint16"/>
      <type name="templateId" primitiveType="uint16"/>
      <type name="schemaId" primitiveType="uint16"/>
      <type name="version" primitiveType="uint16"/>
    </composite>
    <composite name="groupSize">
      <type name="blockLength" primitiveType="uint16"/>
      <type name="numInGroup" primitiveType="uint8"/>
    </composite>
    <composite name="groupSize8Byte">
      <type name="blockLength" primitiveType="uint16"/>
      <type name="numInGroup" offset="7" primitiveType="uint8"/>
    </composite>
    <composite name="varString">
      <type name="length" primitiveType="uint16"/>
      <type name="varData" length="0" primitiveType="char"/>
    </composite>
    <composite name="PRICE9">
      <type name="mantissa" primitiveType="int64"/>
      <type name="exponent" presence="constant" primitiveType="int8">-9</type>
    </composite>
    <composite name="PRICENULL">
      <type name="mantissa" presence="optional" nullValue="9223372036854775807" primitiveType="int64"/>
      <type name="exponent" presence="constant" primitiveType="int8">-7</type>
    </composite>
    <composite name="Dec32">
      <type name="mantissa" primitiveType="int32"/>
      <type name="exponent" primitiveType="int8"/>
    </composite>
    <composite name="MonthYear">
      <type name="year" presence="optional" nullValue="65535" primitiveType="uint16"/>
      <type name="month" primitiveType="uint8"/>
    </composite>
    <type name="Int32NULL" presence="optional" nullValue="2147483647" primitiveType="int32"/>
    <type name="uInt8NULL" presence="optional" nullValue="255" primitiveType="uint8"/>
    <type name="Sym" length="6" primitiveType="char"/>
    <type name="Kind" presence="constant" primitiveType="char">J</type>
    <enum name="Side" encodingType="char">
      <validValue name="Buy">1</validValue>
      <validValue name="Sell">2</validValue>
    </enum>
    <enum name="Agg" encodingType="uInt8NULL">
      <validValue name="None">0</validValue>
      <validValue name="Buy">1</validValue>
    </enum>
    <set name="Flags" encodingType="uint8">
      <choice name="A">0</choice>
      <choice name="B">1</choice>
      <choice name="Last">7</choice>
    </set>
  </types>
  <sbe:message name="Order" id="1" blockLength="33">
    <field name="Px" id="1" type="PRICE9" offset="0"/>
    <field name="Qty" id="2" type="Int32NULL" offset="8"/>
    <field name="Side" id="3" type="Side" offset="12"/>
    <field name="Symbol" id="4" type="Sym" offset="13"/>
    <field name="Flags" id="5" type="Flags" offset="19"/>
    <field name="Agg" id="6" type="Agg" offset="20"/>
    <field name="Kind" id="7" type="Kind"/>
    <field name="Mat" id="8" type="MonthYear" offset="21"/>
    <field name="Extra" id="9" type="uint32" offset="24" sinceVersion="2"/>
    <field name="D" id="10" type="Dec32" offset="28" sinceVersion="3"/>
  </sbe:message>
  <sbe:message name="Book" id="2" blockLength="8">
    <field name="Time" id="1" type="uint64" offset="0"/>
    <group name="Entries" id="10" blockLength="12" dimensionType="groupSize">
      <field name="Px" id="1" type="PRICENULL" offset="0"/>
      <field name="Lvl" id="2" type="uint8" offset="8"/>
      <field name="New" id="3" type="uint16" offset="10" sinceVersion="2"/>
      <group name="Legs" id="11" blockLength="4" dimensionType="groupSize">
        <field name="LegId" id="1" type="int32" offset="0"/>
      </group>
    </group>
    <group name="Orders" id="20" blockLength="8" dimensionType="groupSize8Byte" sinceVersion="2">
      <field name="OrderId" id="1" type="uint64" offset="0"/>
    </group>
    <data name="Text" id="30" type="varString" sinceVersion="3"/>
  </sbe:message>
</sbe:messageSchema>
"""


@pytest.fixture(scope="module")
def schema():
    return sbe.Schema.from_string(XML)


def order_block(version=3, extra=b""):
    b = struct.pack("<qi", 1234567891234, 7) + b"2" + b"ESZ4\x00\x00" + bytes([0b10000011, 1])
    b += struct.pack("<HB", 2024, 12)
    if version >= 2:
        b += struct.pack("<I", 99)
    if version >= 3:
        b += struct.pack("<ib", 12345, -2)
    return b + extra


def test_schema_model(schema):
    assert schema.id == 7 and schema.version == 3 and schema.header_size == 8
    assert set(schema.messages) == {1, 2}
    assert schema.messages[1].block_length == 33


def test_root_fields_all_kinds(schema):
    blk = order_block()
    m, why = schema.decode(blk, 0, len(blk), 1, 33, 3)
    assert why == ""
    f = m.fields
    assert f["Px"] == Decimal("1234.567891234") and f["Px"].as_tuple().exponent == -9
    assert f["Qty"] == 7 and f["Side"] == "Sell" and f["Symbol"] == "ESZ4"
    assert f["Flags"] == ["A", "B", "Last"] and f["Agg"] == "Buy" and f["Kind"] == "J"
    assert f["Mat"] == {"year": 2024, "month": 12}
    assert f["Extra"] == 99 and f["D"] == Decimal("123.45")
    assert m.to_dict()["Px"] == "1234.567891234"


def test_optional_nulls(schema):
    blk = bytearray(order_block())
    struct.pack_into("<i", blk, 8, 2147483647)
    blk[20] = 255
    struct.pack_into("<H", blk, 21, 65535)
    m, _ = schema.decode(bytes(blk), 0, len(blk), 1, 33, 3)
    assert m.fields["Qty"] is None and m.fields["Agg"] is None and m.fields["Mat"]["year"] is None


def test_older_version_shorter_block(schema):
    """Acting version 1, blockLength 24: fields with sinceVersion > 1 are absent."""
    blk = order_block(version=1)
    assert len(blk) == 24
    m, why = schema.decode(blk, 0, len(blk), 1, 24, 1)
    assert why == "" and m.version == 1
    assert "Extra" not in m.fields and "D" not in m.fields and m.fields["Qty"] == 7


def test_newer_version_longer_block_skipped(schema):
    """A producer at version 5 with 8 extra bytes in the root block: still decodes; the extra
    bytes are skipped by blockLength and the group after them is found."""
    body = order_block(extra=b"\xAA" * 8)
    m, why = schema.decode(body, 0, len(body), 1, 41, 5)
    assert why == "" and m.fields["D"] == Decimal("123.45") and m.size == 41


def book(version=3, entry_bl=12, extra_entry=b"", legs=1, orders=2, text=b"hi"):
    b = struct.pack("<Q", 42)
    b += struct.pack("<HB", entry_bl, 2)
    for i in range(2):
        px = 9223372036854775807 if i else 1500000000
        e = struct.pack("<qBx", px, i + 1)
        e += struct.pack("<H", 77) if entry_bl >= 12 else b""
        b += e + extra_entry
        b += struct.pack("<HB", 4, legs) + b"".join(struct.pack("<i", -j) for j in range(legs))
    if version >= 2:
        b += struct.pack("<H5xB", 8, orders) + b"".join(struct.pack("<Q", 1000 + j) for j in range(orders))
    if version >= 3:
        b += struct.pack("<H", len(text)) + text
    return b


def test_groups_nested_and_var_data(schema):
    b = book()
    m, why = schema.decode(b, 0, len(b), 2, 8, 3)
    assert why == "", why
    e = m.fields["Entries"]
    assert [x["Px"] for x in e] == [Decimal("150.0000000"), None]
    assert e[0]["Legs"] == [{"LegId": 0}] and e[0]["New"] == 77
    assert [o["OrderId"] for o in m.fields["Orders"]] == [1000, 1001]
    assert m.fields["Text"] == b"hi" and m.size == len(b)


def test_group_version_rules(schema):
    """Version 1: group entries 10 bytes without 'New', no Orders group, no var data."""
    b = book(version=1, entry_bl=10)
    m, why = schema.decode(b, 0, len(b), 2, 8, 1)
    assert why == ""
    assert "Orders" not in m.fields and "Text" not in m.fields
    assert "New" not in m.fields["Entries"][0] and m.fields["Entries"][0]["Lvl"] == 1


def test_group_longer_entries_skipped(schema):
    b = book(entry_bl=16, extra_entry=b"\x01\x02\x03\x04")
    m, why = schema.decode(b, 0, len(b), 2, 8, 4)
    assert why == "" and len(m.fields["Entries"]) == 2 and m.fields["Text"] == b"hi"


def test_truncated_and_unknown(schema):
    b = book()
    for cut in range(len(b)):
        m, why = schema.decode(b[:cut], 0, cut, 2, 8, 3)
        assert m is None and why in ("truncated", "malformed")
    assert schema.decode(b, 0, len(b), 99, 8, 3) == (None, "unknown_template:99")


def test_header_decode(schema):
    assert schema.decode_header(struct.pack("<HHHH", 30, 1, 7, 3)) == {
        "blockLength": 30, "templateId": 1, "schemaId": 7, "version": 3}
    assert schema.decode_header(b"\x00" * 7) is None


def test_bad_schema():
    with pytest.raises(sbe.SchemaError):
        sbe.Schema.from_string(b"<notaschema/>")
    with pytest.raises(sbe.SchemaError):
        sbe.Schema.from_string(b"<<<")


def test_fuzz_decode_never_raises(schema):
    rng = random.Random(5)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        args = (data, 0, len(data), rng.choice([1, 2, 3]), rng.randrange(0, 64), rng.randrange(0, 6))
        t0 = time.thread_time()
        m, why = schema.decode(*args)
        if time.thread_time() - t0 >= 0.01:        # a scheduler hiccup on a shared core? re-time
            t0 = time.thread_time()
            schema.decode(*args)
            assert time.thread_time() - t0 < 0.01
        assert (m is None) == bool(why)


@pytest.mark.skipif(not SCHEMAS.is_dir(), reason=f"corpus not present at {SCHEMAS}")
@pytest.mark.parametrize("name,count,schema_id,version", [
    ("templates_FixBinary.v9.xml", 29, 1, 9),
    ("FixBinary.mdp3.xml", 29, 1, 9),
    ("ilinkbinary.ilink3.xml", 48, 8, 5),
])
def test_corpus_schemas_load(name, count, schema_id, version):
    s = sbe.load_schema(SCHEMAS / name)
    assert (len(s.messages), s.id, s.version) == (count, schema_id, version)


@pytest.mark.skipif(not SCHEMAS.is_dir(), reason=f"corpus not present at {SCHEMAS}")
def test_cme_v9_names():
    s = sbe.load_schema(SCHEMAS / "templates_FixBinary.v9.xml")
    names = {m.name for m in s.messages.values()}
    for n in ("ChannelReset4", "SecurityStatus30", "MDIncrementalRefreshBook46", "MDIncrementalRefreshVolume37",
              "MDIncrementalRefreshTradeSummary48", "MDIncrementalRefreshSessionStatistics51",
              "SnapshotFullRefresh52", "MDInstrumentDefinitionFuture54"):
        assert n in names
