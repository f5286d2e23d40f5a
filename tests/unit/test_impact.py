"""ICE iMpact multicast: packet framing and message table (literal bytes, big-endian)."""
import struct

import pytest

from hft_packetfilter.protocols import get, impact

from _pcap_feeds import random_fuzz, timed_feed


def packet(msgs, session=7971, seq=20018, sent=1470355200444):
    body = b"".join(t + struct.pack(">H", len(b)) + b for t, b in msgs)
    return struct.pack(">HIHQ", session, seq, len(msgs), sent) + body


MS = 1470355200000
CASES = [
    (b"E", struct.pack(">iqhcqiccq", 5055869, 13002612, 0, b"1", -205, 3, b"N", b"N", MS), "AddOrModifyOrder",
     {"market_id": 5055869, "order_id": 13002612, "side": "1", "price": -205, "quantity": 3}),
    (b"E", struct.pack(">iqhcqiccqbiq", 1, 2, 0, b"2", 100, 3, b"N", b"N", MS, 0, 7, 9), "AddOrModifyOrder",
     {"sequence_within_millis": 7, "modification_timestamp_ns": 9}),
    (b"F", struct.pack(">iqqi", 1, 2, MS, 3), "DeleteOrder", {"order_id": 2, "message_date_time": MS}),
    (b"G", struct.pack(">iqcqicqccccb3si", 1, 5410323, b"Y", 18485, 10, b" ", MS, b"S", b"N", b"N", b"1", 12,
                       b"   ", 188003), "Trade", {"trade_id": 5410323, "price": 18485, "quantity": 10}),
    (b"J", struct.pack(">iiiiiqqqq", 1, 2, 3, 4, 5, 6, 7, 8, MS), "MarketStatistics", {"volume": 2, "vwap": 8}),
    (b"K", struct.pack(">icq", 5361254, b"O", MS), "MarketStateChange", {"trading_status": "O"}),
    (b"N", struct.pack(">iqq", 5361254, 0, MS), "OpenPrice", {"open_price": 0}),
    (b"g", struct.pack(">iqqci", 1, -43, MS, b"Y", 0), "PreOpenPriceIndicator", {"pre_open_price": -43}),
    (b"D", struct.pack(">iqhcqiccqi", 1, 2, 0, b"1", 2960, 1000, b"N", b"N", MS, 4), "MarketSnapshotOrder",
     {"price": 2960}),
    (b"T", b"S", "MessageBundleMarker", {"start_or_end": "S"}),
    (b"O", struct.pack(">iqqcqq", 1, 100, MS, b"Y", MS, 100), "SettlementPrice", {"is_official": "Y"}),
    (b"c", struct.pack(">iqq", 1, 99, MS), "ClosePrice", {"close_price": 99}),
    (b"t", struct.pack(">icbqihihq", 1, b"1", 0, 50, 5, 1, 0, 0, 123), "AddPriceLevel", {"timestamp_ns": 123}),
    (b"r", struct.pack(">icbq", 1, b"2", 3, 124), "DeletePriceLevel", {"price_level_position": 3}),
]


def test_registry():
    assert get("IMPACT").name == "iMpact/UDP" and get("impact/udp").stream_kind == "market_data"


def test_message_table():
    d = impact.new_decoder()
    out = d.feed(packet([(t, b) for t, b, _, _ in CASES]))
    assert d.stats.rejects == {}
    assert [m.name for m in out] == [c[2] for c in CASES]
    assert [m.seq for m in out] == list(range(20018, 20018 + len(CASES)))
    for m, (t, _b, _n, expect) in zip(out, CASES):
        assert m.msg_type == t.decode() and m.session == 7971 and m.sent_ms == 1470355200444
        for k, v in expect.items():
            assert m.fields[k] == v, (m.name, k)
        m.to_dict()


def test_heartbeat():
    d = impact.new_decoder()
    assert d.feed(packet([])) == [] and d.stats.rejects == {} and d.last_packet.count == 0


@pytest.mark.parametrize("data,reason", [
    (b"\x00" * 15, "truncated_header"),
    (struct.pack(">HIHQ", 1, 1, 2, 0) + b"K\x00", "truncated_message"),
    (packet([(b"K", b"\x00" * 13)])[:-1], "bad_message_length"),
    (packet([(b"~", b"\x00\x01")]), "unknown_type:~"),
    (packet([(b"K", b"\x00\x01")]), "short:K"),
    (packet([(b"T", b"S")]) + b"\x00", "trailing_bytes"),
])
def test_rejections(data, reason):
    d = impact.new_decoder()
    timed_feed(d, data)
    assert d.stats.rejects[reason] == 1


def test_fuzz():
    assert random_fuzz(impact.new_decoder, [packet([(t, b) for t, b, _, _ in CASES[:6]])]) > 100
