"""NYSE XDP / Pillar packet framing and message table (literal bytes); OpenBook Ultra framing."""
import struct
from decimal import Decimal

import pytest

from hft_packetfilter.protocols import get, nyse_xdp

from _pcap_feeds import random_fuzz, timed_feed


def packet(msgs, seq=500, flag=11):
    body = b"".join(struct.pack("<HH", 4 + len(b), t) + b for t, b in msgs)
    return struct.pack("<HBBIII", 16 + len(body), flag, len(msgs), seq, 1_600_000_000, 250) + body


SYMMAP = struct.pack("<I", 77) + b"ABG".ljust(11, b"\x00") + b"\x00" + struct.pack("<HBcBcHIIBcHHH",
    1, 7, b"N", 4, b"A", 100, 508500, 0, 0, b"N", 500, 1, 0)

CASES = [
    (1, struct.pack("<IIBB", 1, 2, 3, 1), "SequenceNumberReset", {"product_id": 3, "channel_id": 1}),
    (2, struct.pack("<III", 54, 0, 1692711000), "SourceTimeReference", {"source_time": 1692711000}),
    (3, SYMMAP, "SymbolIndexMapping", {"symbol": "ABG", "price_scale_code": 4, "exchange_code": "N"}),
    (34, struct.pack("<IIIIcc4xIIcIIccc", 1, 2, 77, 1, b"P", b"~", 0, 0, b" ", 0, 0, b"~", b"P", b" "),
     "SecurityStatus", {"security_status": "P", "market_state": "P", "symbol_index": 77}),
    (100, struct.pack("<IIIQIIc5sB", 9, 77, 6, 111, 1234500, 1200, b"B", b"FIRM1", 0), "AddOrder",
     {"order_id": 111, "price": 1234500, "price_decimal": Decimal("123.4500"), "volume": 1200, "side": "B",
      "firm_id": "FIRM1", "symbol": "ABG"}),
    (101, struct.pack("<IIIQIIBcB", 9, 77, 7, 111, 1234600, 100, 1, b"B", 0), "ModifyOrder",
     {"price": 1234600, "position_change": 1}),
    (102, struct.pack("<IIIQB", 9, 77, 8, 111, 0), "DeleteOrder", {"order_id": 111}),
    (103, struct.pack("<IIIQIIIB5x", 9, 77, 9, 111, 96403, 126400, 100, 1), "OrderExecution",
     {"trade_id": 96403, "price": 126400, "volume": 100, "printable_flag": 1}),
    (104, struct.pack("<IIIQQIIcB", 9, 77, 10, 111, 112, 10000, 200, b"S", 0), "ReplaceOrder",
     {"new_order_id": 112, "price_decimal": Decimal("1.0000")}),
    (105, struct.pack("<IIIIIIIIHccIIIIIIBBB", 1, 2, 77, 11, 182200, 0, 5, 0, 1600, b"C", b"B",
                      182200, 182200, 0, 0, 0, 0, 0, 0, 0), "Imbalance",
     {"reference_price": 182200, "auction_time": 1600, "imbalance_side": "B"}),
    (140, struct.pack("<IIIIIIIcc", 5, 77, 12, 103800, 100, 103200, 300, b"R", b" "), "Quote",
     {"ask_price": 103800, "bid_price": 103200, "bid_price_decimal": Decimal("10.3200"), "quote_condition": "R"}),
    (220, struct.pack("<IIIIIIcccc", 5, 77, 13, 1, 10000, 10, b"@", b" ", b" ", b" "), "Trade",
     {"trade_id": 1, "volume": 10, "trade_cond1": "@"}),
    (223, struct.pack("<IIIIIIII", 1, 2, 77, 4, 3, 2, 1, 900), "StockSummary", {"high_price": 4, "total_volume": 900}),
]


def test_registry():
    for n in ("XDP", "Pillar/UDP", "NYSE/XDP", "xdp/udp"):
        assert get(n).name == "XDP/UDP"


def test_message_table_with_symbol_scale():
    d = nyse_xdp.new_decoder()
    out = d.feed(packet([(t, b) for t, b, _, _ in CASES], seq=900))
    assert d.stats.rejects == {}
    assert [m.name for m in out] == [c[2] for c in CASES]
    assert [m.seq for m in out] == list(range(900, 900 + len(CASES)))
    assert out[0].send_time_ns == 1_600_000_000_000_000_250
    for m, (_t, _b, _n, expect) in zip(out, CASES):
        for k, v in expect.items():
            assert m.fields[k] == v, (m.name, k)
        m.to_dict()


def test_pillar_imbalance_longer_layout():
    body = CASES[9][1] + struct.pack("<Icc", 1100, b"B", b" ")
    m = nyse_xdp.new_decoder().feed(packet([(105, body)]))[0]
    assert m.fields["unpaired_qty"] == 1100 and m.fields["unpaired_side"] == "B"


@pytest.mark.parametrize("data,reason", [
    (b"\x10\x00", "truncated_header"),
    (struct.pack("<HBBIII", 200, 1, 1, 1, 0, 0), "bad_packet_size"),
    (struct.pack("<HBBIII", 18, 1, 1, 1, 0, 0) + b"\x02\x00", "truncated_message"),
    (packet([(1, b"")])[:16] + struct.pack("<HH", 2, 1), "bad_message_size"),
    (packet([(9999, b"\x00\x00")]), "unknown_type:9999"),
    (packet([(100, b"\x00" * 8)]), "short:100"),
])
def test_rejections(data, reason):
    d = nyse_xdp.XdpDecoder("xdp")
    timed_feed(d, data)
    assert d.stats.rejects[reason] == 1


def test_heartbeat_packet():
    d = nyse_xdp.new_decoder()
    assert d.feed(struct.pack("<HBBIII", 16, 1, 0, 2, 0, 0)) == [] and d.stats.rejects == {}
    assert d.last_packet.seq == 2 and d.last_packet.count == 0


def test_openbook_framing():
    d = nyse_xdp.new_decoder()
    pkt = struct.pack(">HHIIBBBB", 14, 2, 0, 1000, 1, 0, 0, 0)
    assert d.feed(pkt) == []
    p = d.last_packet
    assert (p.framing, p.types, p.seq) == ("openbook", [2], 0)
    assert d.stats.rejects == {"openbook_framed_only:2": 1}


def test_fuzz():
    assert random_fuzz(nyse_xdp.new_decoder, [packet([(t, b) for t, b, _, _ in CASES[:6]])]) > 100
