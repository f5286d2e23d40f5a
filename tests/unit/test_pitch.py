"""Cboe PITCH: sequenced unit header and message table (literal bytes)."""
import struct
from decimal import Decimal

import pytest

from hft_packetfilter.protocols import get, pitch

from _pcap_feeds import random_fuzz, timed_feed


def unit(msgs, unit_no=3, seq=1000):
    body = b"".join(bytes([len(m) + 1]) + m for m in msgs)     # m starts with its type byte
    return struct.pack("<HBBI", 8 + len(body), len(msgs), unit_no, seq) + body


OID = struct.pack("<Q", 0x0123456789ABCDEF)
T = struct.pack("<I", 500)

CASES = [
    (b"\x20" + struct.pack("<I", 34200), "Time", {"time": 34200}),
    (b"\x21" + T + OID + b"B" + struct.pack("<I", 300) + b"AAPL  " + struct.pack("<Q", 1234500) + b"\x01",
     "AddOrderLong", {"side": "B", "quantity": 300, "symbol": "AAPL", "price": Decimal("123.45"),
                      "price_raw": 1234500, "add_flags": 1}),
    (b"\x22" + T + OID + b"S" + struct.pack("<H", 100) + b"MSFT  " + struct.pack("<H", 2787) + b"\x00",
     "AddOrderShort", {"side": "S", "quantity": 100, "price": Decimal("27.87")}),
    (b"\x23" + T + OID + struct.pack("<IQ", 50, 77), "OrderExecuted",
     {"executed_quantity": 50, "execution_id": 77}),
    (b"\x24" + T + OID + struct.pack("<IIQQ", 10, 20, 78, 99990000) + b"X", "OrderExecutedAtPriceSize",
     {"executed_quantity": 10, "remaining_quantity": 20, "price": Decimal("9999.0000")}),
    (b"\x25" + T + OID + struct.pack("<I", 70), "ReduceSizeLong", {"canceled_quantity": 70}),
    (b"\x26" + T + OID + struct.pack("<H", 7), "ReduceSizeShort", {"canceled_quantity": 7}),
    (b"\x27" + T + OID + struct.pack("<IQB", 5, 10000, 1), "ModifyOrderLong",
     {"quantity": 5, "price": Decimal("1.0000"), "modify_flags": 1}),
    (b"\x28" + T + OID + struct.pack("<HHB", 5, 150, 0), "ModifyOrderShort", {"price": Decimal("1.50")}),
    (b"\x29" + T + OID, "DeleteOrder", {"order_id": 0x0123456789ABCDEF}),
    (b"\x2A" + T + OID + b"B" + struct.pack("<I", 1) + b"IBM   " + struct.pack("<QQ", 1500000, 5),
     "TradeLong", {"symbol": "IBM", "price": Decimal("150.0000"), "execution_id": 5}),
    (b"\x2B" + T + OID + b"S" + struct.pack("<H", 1) + b"IBM   " + struct.pack("<HQ", 15000, 6),
     "TradeShort", {"price": Decimal("150.00"), "execution_id": 6}),
    (b"\x2C" + T + struct.pack("<Q", 6), "TradeBreak", {"execution_id": 6}),
    (b"\x2D" + T, "EndOfSession", {"time_offset": 500}),
    (b"\x2F" + T + OID + b"B" + struct.pack("<I", 9) + b"BRK.A   " + struct.pack("<Q", 1) + b"\x00" + b"ABCD",
     "AddOrderExpanded", {"symbol": "BRK.A", "participant_id": "ABCD", "price": Decimal("0.0001")}),
    (b"\x30" + T + OID + b"B" + struct.pack("<I", 9) + b"BRK.A   " + struct.pack("<QQ", 2, 3), "TradeExpanded",
     {"symbol": "BRK.A", "execution_id": 3}),
    (b"\x31" + T + b"AAPL    " + b"T" + b"0" + b"  ", "TradingStatus", {"symbol": "AAPL", "trading_status": "T"}),
    (b"\x95" + T + b"AAPL    " + b"O" + struct.pack("<QIIQQ", 1, 2, 3, 4, 5), "AuctionUpdate",
     {"buy_shares": 2, "sell_shares": 3, "indicative_price": Decimal("0.0004")}),
    (b"\x96" + T + b"AAPL    " + b"C" + struct.pack("<QI", 1000000, 44), "AuctionSummary",
     {"price": Decimal("100.0000"), "shares": 44}),
    (b"\x97" + T, "UnitClear", {}),
    (b"\x98" + T + b"AAPL    " + b"B", "RetailPriceImprovement", {"retail_price_improvement": "B"}),
    (b"\xBC" + T, "TransactionBegin", {}),
    (b"\xBD" + T, "TransactionEnd", {}),
]


def test_registry():
    assert get("PITCH").name == "PITCH/UDP" and get("pitch/udp").transport == "udp"


@pytest.mark.parametrize("msg,name,expect", CASES, ids=[c[1] for c in CASES])
def test_message_table(msg, name, expect):
    d = pitch.new_decoder()
    out = d.feed(unit([msg]))
    assert d.stats.rejects == {} and len(out) == 1
    m = out[0]
    assert m.name == name and m.msg_type == f"0x{msg[0]:02X}" and m.unit == 3 and m.seq == 1000
    for k, v in expect.items():
        assert m.fields[k] == v, k
    m.to_dict()


def test_all_in_one_unit_sequence_numbers():
    d = pitch.new_decoder()
    out = d.feed(unit([c[0] for c in CASES], seq=50))
    assert [m.seq for m in out] == list(range(50, 50 + len(CASES)))
    assert d.stats.messages == len(CASES)


def test_short_variant_without_trailing_fields():
    """CFE's Add Order Short has no Add Flags: decodes, flags absent."""
    m = pitch.new_decoder().feed(unit([CASES[2][0][:-1]]))[0]
    assert "add_flags" not in m.fields and m.fields["price"] == Decimal("27.87")


@pytest.mark.parametrize("data,reason", [
    (b"\x08\x00\x01", "truncated_header"),
    (struct.pack("<HBBI", 100, 1, 1, 1) + b"\x02\x20", "bad_header_length"),
    (struct.pack("<HBBI", 10, 1, 1, 1) + b"\x00\x20", "bad_message_length"),
    (struct.pack("<HBBI", 10, 2, 1, 1) + b"\x02\x97", "truncated_message"),
    (struct.pack("<HBBI", 12, 1, 1, 1) + b"\x04\x21\x00\x00", "short:0x21"),
    (unit([b"\xEE\x01\x02"]), "unknown_type:0xEE"),
    (unit([b"\x97" + T]) + b"\x00", "trailing_bytes"),
])
def test_rejections(data, reason):
    d = pitch.new_decoder()
    timed_feed(d, data)
    assert d.stats.rejects[reason] == 1


def test_unknown_type_skipped_by_length():
    d = pitch.new_decoder()
    out = d.feed(unit([b"\xAD" + b"\x00" * 10, CASES[0][0]]))
    assert [m.name for m in out] == ["Time"] and d.stats.rejects == {"unknown_type:0xAD": 1}


def test_heartbeat_unit():
    d = pitch.new_decoder()
    assert d.feed(struct.pack("<HBBI", 8, 0, 1, 21134)) == [] and d.stats.rejects == {}
    assert d.last_unit.seq == 21134


def test_fuzz():
    assert random_fuzz(pitch.new_decoder, [unit([c[0] for c in CASES[:8]])]) > 100
