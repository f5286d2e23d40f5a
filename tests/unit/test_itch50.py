"""ITCH 5.0 decoder: one literal-bytes row per message type (layouts from the TotalView-ITCH 5.0 spec),
batch == per-message, directory -> symbol resolution, rejects, hypothesis and a bounded fuzz."""
from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings, strategies as st

from hft_packetfilter.protocols import itch50
from hft_packetfilter.protocols.itch50 import ITCH50Decoder, frame


def u(n: int, v: int) -> bytes:
    return v.to_bytes(n, "big")


def a(n: int, s: str) -> bytes:
    return s.encode("ascii").ljust(n, b" ")


TS = 34_200_123_456_789  # 09:30:00.123456789 in ns since midnight


def hdr(t: str, locate: int = 7, track: int = 2) -> bytes:
    return t.encode() + u(2, locate) + u(2, track) + u(6, TS)


# (type, literal message bytes, expected fields subset). Field order and widths follow the spec tables.
ROWS = [
    ("S", hdr("S", 0) + b"Q", {"event_code": "Q"}),
    ("R", hdr("R") + a(8, "AAPL") + b"Q" + b"N" + u(4, 100) + b"N" + b"C" + a(2, "Z") + b"P" + b"N" + b" "
     + b"1" + b"N" + u(4, 0) + b"N",
     {"stock": "AAPL", "market_category": "Q", "round_lot_size": 100, "issue_sub_type": "Z",
      "luld_reference_price_tier": "1"}),
    ("H", hdr("H") + a(8, "AMC") + b"T" + b" " + a(4, "LUDP"), {"stock": "AMC", "trading_state": "T", "reason": "LUDP"}),
    ("Y", hdr("Y") + a(8, "SOPA") + b"1", {"stock": "SOPA", "reg_sho_action": "1"}),
    ("L", hdr("L") + a(4, "MAXM") + a(8, "FGMC") + b"Y" + b"N" + b"A",
     {"mpid": "MAXM", "stock": "FGMC", "primary_market_maker": "Y", "market_maker_mode": "N",
      "market_participant_state": "A"}),
    ("V", hdr("V", 0) + u(8, 3_500_00000000) + u(8, 3_200_00000000) + u(8, 2_900_00000000),
     {"level1": 350_000_000_000, "level2": 320_000_000_000, "level3": 290_000_000_000}),
    ("W", hdr("W", 0) + b"1", {"breached_level": "1"}),
    ("K", hdr("K") + a(8, "NEWCO") + u(4, 36_000) + b"A" + u(4, 210_000),
     {"stock": "NEWCO", "ipo_quotation_release_time": 36_000, "ipo_quotation_release_qualifier": "A",
      "ipo_price": 210_000}),
    ("h", hdr("h") + a(8, "AMC") + b"Q" + b"H", {"stock": "AMC", "market_code": "Q", "operational_halt_action": "H"}),
    ("J", hdr("J") + a(8, "LTRY") + u(4, 134_424) + u(4, 140_356) + u(4, 109_200) + u(4, 0),
     {"stock": "LTRY", "auction_collar_reference_price": 134_424, "upper_auction_collar_price": 140_356,
      "lower_auction_collar_price": 109_200, "auction_collar_extension": 0}),
    ("A", hdr("A") + u(8, 1001) + b"B" + u(4, 300) + a(8, "MSFT") + u(4, 3_301_500),
     {"order_reference_number": 1001, "side": "B", "shares": 300, "stock": "MSFT", "price": 3_301_500}),
    ("F", hdr("F") + u(8, 1002) + b"S" + u(4, 100) + a(8, "QQQ") + u(4, 3_771_800) + a(4, "PUND"),
     {"order_reference_number": 1002, "side": "S", "stock": "QQQ", "price": 3_771_800, "attribution": "PUND"}),
    ("E", hdr("E") + u(8, 1001) + u(4, 25) + u(8, 99_001),
     {"order_reference_number": 1001, "executed_shares": 25, "match_number": 99_001}),
    ("C", hdr("C") + u(8, 1001) + u(4, 5) + u(8, 99_002) + b"Y" + u(4, 3_301_400),
     {"executed_shares": 5, "match_number": 99_002, "printable": "Y", "execution_price": 3_301_400}),
    ("X", hdr("X") + u(8, 1001) + u(4, 70), {"order_reference_number": 1001, "cancelled_shares": 70}),
    ("D", hdr("D") + u(8, 1001), {"order_reference_number": 1001}),
    ("U", hdr("U") + u(8, 1001) + u(8, 1003) + u(4, 200) + u(4, 3_301_600),
     {"original_order_reference_number": 1001, "new_order_reference_number": 1003, "shares": 200,
      "price": 3_301_600}),
    ("P", hdr("P") + u(8, 0) + b"B" + u(4, 100) + a(8, "GOOGL") + u(4, 1_284_600) + u(8, 99_003),
     {"order_reference_number": 0, "side": "B", "shares": 100, "stock": "GOOGL", "price": 1_284_600,
      "match_number": 99_003}),
    ("Q", hdr("Q") + u(8, 123_456) + a(8, "AAPL") + u(4, 1_789_900) + u(8, 99_004) + b"O",
     {"shares": 123_456, "stock": "AAPL", "cross_price": 1_789_900, "match_number": 99_004, "cross_type": "O"}),
    ("B", hdr("B") + u(8, 99_004), {"match_number": 99_004}),
    ("I", hdr("I") + u(8, 1) + u(8, 0) + b"N" + a(8, "MDC") + u(4, 464_400) + u(4, 464_400) + u(4, 464_400)
     + b"O" + b"L",
     {"paired_shares": 1, "imbalance_shares": 0, "imbalance_direction": "N", "stock": "MDC",
      "far_price": 464_400, "near_price": 464_400, "current_reference_price": 464_400, "cross_type": "O",
      "price_variation_indicator": "L"}),
    ("N", hdr("N") + a(8, "BIZD") + b"N", {"stock": "BIZD", "interest_flag": "N"}),
    ("O", hdr("O") + a(8, "DLCO") + b"Y" + u(4, 80_000) + u(4, 120_000) + u(4, 100_000) + u(8, 36_000_000_000_000)
     + u(4, 90_000) + u(4, 110_000),
     {"stock": "DLCO", "open_eligibility_status": "Y", "minimum_allowable_price": 80_000,
      "maximum_allowable_price": 120_000, "near_execution_price": 100_000,
      "near_execution_time": 36_000_000_000_000, "lower_price_range_collar": 90_000,
      "upper_price_range_collar": 110_000}),
]


def test_every_spec_type_has_a_row():
    assert sorted(t for t, _, _ in ROWS) == sorted(itch50.MESSAGE_SPECS)
    assert sorted(itch50.MESSAGE_SPECS) == sorted("SRHYLVWKhJAFECXDUPQBINO")


@pytest.mark.parametrize("t,raw,expected", ROWS, ids=[r[0] for r in ROWS])
def test_table_literal_bytes(t, raw, expected):
    assert len(raw) == itch50.MESSAGE_LENGTHS[t]
    dec = ITCH50Decoder()
    m = dec.decode_message(raw)
    assert m is not None, dec.stats.rejects
    assert m.msg_type == t and m.protocol == "ITCH/MoldUDP64"
    assert m.timestamp == TS
    d = m.to_dict()
    for k, v in expected.items():
        assert d[k] == v, k
        assert getattr(m, k) == v, k
    # prices and every other number stay integers; nothing is a float
    assert not any(isinstance(v, float) for v in d.values())
    # the batch API gives the same message
    assert dec.decode_buffer(frame([raw])) == [m]
    # and the encoder used by the benchmark and simulators round-trips it
    fields = {k: v for k, v in d.items() if k not in ("protocol", "msg_type", "name", "symbol")}
    assert itch50.encode_message(t, **fields) == raw


def test_batch_equals_per_message():
    raws = [r for _, r, _ in ROWS] * 3
    d1, d2 = ITCH50Decoder(), ITCH50Decoder()
    batch = d1.decode_buffer(frame(raws))
    single = [d2.decode_message(r) for r in raws]
    assert batch == single
    assert [m.to_dict() for m in batch] == [m.to_dict() for m in single]
    assert d1.stats.messages == d2.stats.messages == len(raws)


def test_directory_resolves_locate_to_symbol():
    dec = ITCH50Decoder()
    r = ROWS[1][1]
    x = hdr("X") + u(8, 1) + u(4, 1)
    out = dec.decode_buffer(frame([x, r, x]))
    assert [m.msg_type for m in out] == ["X", "R", "X"]
    assert dec.symbols == {7: "AAPL"}
    assert out[2].symbol == "AAPL" and out[2].to_dict()["symbol"] == "AAPL"
    other = ITCH50Decoder()
    assert other.decode_message(x).symbol is None  # maps are per decoder


def test_rejects_are_counted_and_framing_continues():
    dec = ITCH50Decoder()
    good = ROWS[10][1]
    blk = frame([good, b"Z" + b"\0" * 10, good[:-1], b"", good]) + b"\x00\x30A"
    out = dec.decode_buffer(blk)
    assert len(out) == 2
    assert dec.stats.rejects == {"unknown_type": 1, "bad_length": 1, "empty_message": 1, "truncated_message": 1}
    assert dec.decode_message(b"") is None and dec.decode_message(b"\xff" * 12) is None


def _all_values_safe(d):
    for v in d.values():
        assert isinstance(v, (int, str, type(None))), v


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data):
    dec = ITCH50Decoder()
    t0 = time.thread_time()
    out = dec.feed(data)
    assert time.thread_time() - t0 < 0.010
    for m in out:
        _all_values_safe(m.to_dict())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(ROWS) - 1), st.data())
def test_truncate_and_flip(i, data):
    raw = frame([ROWS[i][1]])
    cut = data.draw(st.integers(0, len(raw)))
    pos = data.draw(st.integers(0, len(raw) - 1))
    flipped = bytearray(raw)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    for sample in (raw[:cut], bytes(flipped)):
        dec = ITCH50Decoder()
        t0 = time.thread_time()
        dec.feed(sample)
        assert time.thread_time() - t0 < 0.010


def test_bounded_random_fuzz():
    rng = random.Random(5)
    dec = ITCH50Decoder()
    seeds = [r for _, r, _ in ROWS]
    deadline = time.monotonic() + 2.0
    worst = 0.0
    n = 0
    while time.monotonic() < deadline:
        blk = bytearray(frame(rng.sample(seeds, 5)))
        for _ in range(rng.randint(0, 6)):
            blk[rng.randrange(len(blk))] = rng.randrange(256)
        if rng.random() < 0.3:
            blk = blk[:rng.randrange(len(blk) + 1)]
        if rng.random() < 0.1:
            blk = bytearray(rng.randbytes(rng.randrange(300)))
        t0 = time.thread_time()
        for m in dec.feed(bytes(blk)):
            m.to_dict()
        worst = max(worst, time.thread_time() - t0)
        n += 1
    assert n > 100 and worst < 0.010
