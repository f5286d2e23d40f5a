"""OUCH 4.2 and 5.0: one literal-bytes row per message type and direction (layouts from the specs),
appendages, direction-dependent decoding, version detection, rejects, hypothesis and a bounded fuzz."""
from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings, strategies as st

from hft_packetfilter.protocols import ouch
from hft_packetfilter.protocols.ouch import OuchDecoder, encode_appendages


def u(n: int, v: int) -> bytes:
    return v.to_bytes(n, "big", signed=v < 0)


def a(n: int, s: str) -> bytes:
    return s.encode("ascii").ljust(n, b" ")


TS = u(8, 44_647_483_486_087)
TOK = a(14, "ORD0001")
URN = u(4, 7_682_701)
CLO = a(14, "CL1")

# (version, direction, type, literal bytes, expected subset)
ROWS = [
    # ---- OUCH 4.2 inbound
    ("4.2", "in", "O", b"O" + TOK + b"B" + u(4, 100) + a(8, "AAPL") + u(4, 1_789_900) + u(4, 99_999) + a(4, "FIRM")
     + b"Y" + b"A" + b"N" + u(4, 0) + b"N" + b"R",
     {"order_token": "ORD0001", "side": "B", "shares": 100, "stock": "AAPL", "price": 1_789_900,
      "time_in_force": 99_999, "firm": "FIRM", "customer_type": "R"}),
    ("4.2", "in", "U", b"U" + TOK + a(14, "ORD0002") + u(4, 50) + u(4, 1_789_800) + u(4, 0) + b"Y" + b"N" + u(4, 0),
     {"existing_order_token": "ORD0001", "replacement_order_token": "ORD0002", "shares": 50, "price": 1_789_800}),
    ("4.2", "in", "X", b"X" + TOK + u(4, 0), {"order_token": "ORD0001", "shares": 0}),
    ("4.2", "in", "M", b"M" + TOK + b"S" + u(4, 10), {"side": "S", "shares": 10}),
    ("4.2", "in", "N", b"N" + TOK, {"order_token": "ORD0001"}),
    # ---- OUCH 4.2 outbound
    ("4.2", "out", "S", b"S" + TS + b"S", {"event_code": "S", "timestamp": 44_647_483_486_087}),
    ("4.2", "out", "A", b"A" + TS + TOK + b"B" + u(4, 100) + a(8, "AAPL") + u(4, 1_789_900) + u(4, 0) + a(4, "FIRM")
     + b"Y" + u(8, 555) + b"A" + b"N" + u(4, 0) + b"N" + b"L" + b" ",
     {"order_reference_number": 555, "order_state": "L", "price": 1_789_900, "stock": "AAPL"}),
    ("4.2", "out", "U", b"U" + TS + a(14, "ORD0002") + b"B" + u(4, 50) + a(8, "AAPL") + u(4, 1_789_800) + u(4, 0)
     + a(4, "FIRM") + b"Y" + u(8, 556) + b"A" + b"N" + u(4, 0) + b"N" + b"L" + TOK + b" ",
     {"replacement_order_token": "ORD0002", "previous_order_token": "ORD0001", "order_reference_number": 556}),
    ("4.2", "out", "C", b"C" + TS + TOK + u(4, 100) + b"U", {"decrement_shares": 100, "reason": "U"}),
    ("4.2", "out", "D", b"D" + TS + TOK + u(4, 100) + b"Q" + u(4, 40) + u(4, 1_789_900) + b"R",
     {"quantity_prevented_from_trading": 40, "execution_price": 1_789_900, "liquidity_flag": "R"}),
    ("4.2", "out", "E", b"E" + TS + TOK + u(4, 60) + u(4, 1_789_900) + b"A" + u(8, 12_345),
     {"executed_shares": 60, "execution_price": 1_789_900, "match_number": 12_345}),
    ("4.2", "out", "B", b"B" + TS + TOK + u(8, 12_345) + b"E", {"match_number": 12_345, "reason": "E"}),
    ("4.2", "out", "G", b"G" + TS + TOK + u(4, 60) + u(4, 1_789_900) + b"A" + u(8, 12_346) + u(4, 1_789_950) + b"Q",
     {"reference_price": 1_789_950, "reference_price_type": "Q", "match_number": 12_346}),
    ("4.2", "out", "F", b"F" + TS + TOK + u(4, 60) + u(4, 1_789_900) + b"A" + u(8, 12_347) + b"N",
     {"match_number": 12_347, "reason": "N"}),
    ("4.2", "out", "J", b"J" + TS + TOK + b"H", {"reason": "H"}),
    ("4.2", "out", "P", b"P" + TS + TOK, {"order_token": "ORD0001"}),
    ("4.2", "out", "I", b"I" + TS + TOK, {"order_token": "ORD0001"}),
    ("4.2", "out", "T", b"T" + TS + TOK + u(4, 1_789_900) + b"Y" + u(8, 557), {"price": 1_789_900, "order_reference_number": 557}),
    ("4.2", "out", "M", b"M" + TS + TOK + b"B" + u(4, 40), {"side": "B", "shares": 40}),
    # ---- OUCH 5.0 inbound
    ("5.0", "in", "O", b"O" + u(4, 113) + b"T" + u(4, 225) + a(8, "CVLT") + u(8, 630_200) + b"0" + b"Y" + b"A" + b"N"
     + b"N" + a(14, "H8FUB8IV") + u(2, 6) + bytes([5, 2]) + b"LIME",
     {"user_ref_num": 113, "side": "T", "quantity": 225, "symbol": "CVLT", "price": 630_200, "firm": "LIME"}),
    ("5.0", "in", "U", b"U" + u(4, 113) + u(4, 114) + u(4, 200) + u(8, 630_100) + b"0" + b"Y" + b"N" + CLO + u(2, 0),
     {"orig_user_ref_num": 113, "user_ref_num": 114, "quantity": 200, "price": 630_100, "cl_ord_id": "CL1"}),
    ("5.0", "in", "X", b"X" + u(4, 7_679_601) + u(4, 0), {"user_ref_num": 7_679_601, "quantity": 0}),
    ("5.0", "in", "M", b"M" + u(4, 114) + b"S" + u(4, 100), {"side": "S", "quantity": 100}),
    ("5.0", "in", "Q", b"Q", {}),
    ("5.0", "in", "C", b"C" + u(4, 115) + a(4, "LIME") + a(8, "CVLT"), {"firm": "LIME", "symbol": "CVLT"}),
    ("5.0", "in", "D", b"D" + u(4, 116) + a(4, "LIME"), {"user_ref_num": 116, "firm": "LIME"}),
    ("5.0", "in", "E", b"E" + u(4, 117) + a(4, "LIME"), {"user_ref_num": 117, "firm": "LIME"}),
    # ---- OUCH 5.0 outbound
    ("5.0", "out", "S", b"S" + TS + b"E", {"event_code": "E"}),
    ("5.0", "out", "A", b"A" + TS + URN + b"B" + u(4, 40) + a(8, "ADBE") + u(8, 4_777_800) + b"5" + b"Y" + u(8, 257_340_661)
     + b"A" + b"N" + b"N" + b"L" + a(14, "7682701") + u(2, 9) + bytes([5, 2]) + b"MLRO" + bytes([2, 18]) + b"0",
     {"user_ref_num": 7_682_701, "symbol": "ADBE", "price": 4_777_800, "order_reference_number": 257_340_661,
      "firm": "MLRO", "bbo_weight_indicator": "0"}),
    ("5.0", "out", "U", b"U" + TS + URN + u(4, 7_682_702) + b"B" + u(4, 40) + a(8, "ADBE") + u(8, 4_777_700) + b"5" + b"Y"
     + u(8, 257_340_662) + b"A" + b"N" + b"N" + b"L" + CLO + u(2, 6) + bytes([5, 3]) + u(4, 100),
     {"orig_user_ref_num": 7_682_701, "user_ref_num": 7_682_702, "price": 4_777_700, "min_qty": 100}),
    ("5.0", "out", "C", b"C" + TS + URN + u(4, 40) + b"U", {"quantity": 40, "reason": "U"}),
    ("5.0", "out", "D", b"D" + TS + URN + u(4, 40) + b"Q" + u(4, 10) + u(8, 4_777_800) + b"R",
     {"decrement_shares": 40, "quantity_prevented_from_trading": 10, "execution_price": 4_777_800}),
    ("5.0", "out", "E", b"E" + TS + URN + u(4, 40) + u(8, 4_777_800) + b"A" + u(8, 999) + u(2, 13)
     + bytes([9, 19]) + u(8, 4_777_850) + bytes([2, 20]) + b"Q",
     {"quantity": 40, "price": 4_777_800, "match_number": 999, "reference_price": 4_777_850,
      "reference_price_type": "Q"}),
    ("5.0", "out", "B", b"B" + TS + URN + u(8, 999) + b"E" + CLO, {"match_number": 999, "reason": "E", "cl_ord_id": "CL1"}),
    ("5.0", "out", "F", b"F" + TS + URN + u(4, 40) + u(8, 4_777_700) + b"A" + u(8, 999) + b"N" + CLO,
     {"price": 4_777_700, "reason": "N"}),
    ("5.0", "out", "J", b"J" + TS + URN + u(2, 0x1D) + CLO, {"reason": 0x1D}),
    ("5.0", "out", "P", b"P" + TS + URN, {"user_ref_num": 7_682_701}),
    ("5.0", "out", "I", b"I" + TS + URN, {"user_ref_num": 7_682_701}),
    ("5.0", "out", "T", b"T" + TS + URN + u(8, -500) + b"Y" + u(8, 258), {"price": -500, "order_reference_number": 258}),
    ("5.0", "out", "M", b"M" + TS + URN + b"S" + u(4, 20), {"side": "S", "quantity": 20}),
    ("5.0", "out", "R", b"R" + TS + URN + b"R" + u(2, 16) + bytes([5, 22]) + u(4, 100) + bytes([9, 23]) + u(8, 4_777_800),
     {"reason": "R", "display_quantity": 100, "display_price": 4_777_800}),
    ("5.0", "out", "Q", b"Q" + TS + u(4, 8_000_000), {"next_user_ref_num": 8_000_000}),
    ("5.0", "out", "X", b"X" + TS + URN + a(4, "LIME") + a(8, "CVLT"), {"firm": "LIME", "symbol": "CVLT"}),
    ("5.0", "out", "G", b"G" + TS + URN + a(4, "LIME"), {"firm": "LIME"}),
    ("5.0", "out", "K", b"K" + TS + URN + a(4, "LIME"), {"firm": "LIME"}),
]


def test_every_spec_type_has_a_row():
    have = {(v, d, t) for v, d, t, _, _ in ROWS}
    want = {(v, d, t) for v, tab in (("4.2", ouch.V42), ("5.0", ouch.V50)) for d, msgs in tab.items() for t in msgs}
    assert have == want


@pytest.mark.parametrize("ver,direction,t,raw,expected", ROWS, ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in ROWS])
def test_table_literal_bytes(ver, direction, t, raw, expected):
    for version in (ver, None):   # pinned and auto-detected
        dec = OuchDecoder(direction, version)
        m = dec.decode_message(raw)
        assert m is not None, dec.stats.rejects
        assert (m.msg_type, m.direction, m.protocol) == (t, direction, "SoupBinTCP/OUCH")
        # System Event has the same layout in both versions, so auto-detection may report either.
        assert m.version == ver or (version is None and t == "S")
        d = m.to_dict()
        flat = {**d, **d.get("appendages", {})}
        for k, v in expected.items():
            assert flat[k] == v, k
            assert getattr(m, k) == v, k
        assert not any(isinstance(v, float) for v in flat.values())
        assert dec.feed(raw) == [m]


def test_direction_decides_overlapping_letters():
    raw_in = ROWS[1][3]    # 4.2 Replace Order 'U'
    assert OuchDecoder("in").decode_message(raw_in).name == "ReplaceOrder"
    dec = OuchDecoder("out")
    assert dec.decode_message(raw_in) is None and dec.stats.rejects["bad_length"] == 1
    with pytest.raises(ValueError):
        OuchDecoder("sideways")


def test_appendage_encoder_and_bad_appendages():
    app = encode_appendages([(2, b"LIME"), (7, u(4, -25)), (99, b"\x01\x02")])
    base = b"O" + u(4, 1) + b"B" + u(4, 1) + a(8, "X") + u(8, 1) + b"0Y" + b"ANN" + CLO
    m = OuchDecoder("in", "5.0").decode_message(base + u(2, len(app)) + app)
    assert m.appendages == {"firm": "LIME", "peg_offset": -25, "tag_99": "0102"}
    dec = OuchDecoder("in", "5.0")
    assert dec.decode_message(base + u(2, len(app) + 1) + app) is None          # length says more
    assert dec.decode_message(base + u(2, 3) + bytes([5, 2, 65])) is None      # TLV overruns
    assert dec.decode_message(base + u(2, 2) + bytes([0, 2])) is None          # zero-length option
    assert dec.stats.rejects == {"bad_length": 3}


def test_rejects():
    dec = OuchDecoder("out")
    assert dec.decode_message(b"") is None
    assert dec.decode_message(b"~" + b"\0" * 9) is None
    assert dec.decode_message(ROWS[5][3][:-1]) is None
    assert dec.stats.rejects == {"empty_message": 1, "unknown_type": 1, "bad_length": 1}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["in", "out"]), st.binary(max_size=120))
def test_random_bytes_never_raise(direction, data):
    dec = OuchDecoder(direction)
    t0 = time.thread_time()
    for m in dec.feed(data):
        m.to_dict()
    assert time.thread_time() - t0 < 0.010


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(ROWS) - 1), st.data())
def test_truncate_and_flip(i, data):
    ver, direction, _t, raw, _ = ROWS[i]
    cut = data.draw(st.integers(0, len(raw)))
    pos = data.draw(st.integers(0, len(raw) - 1))
    flipped = bytearray(raw)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    for sample in (raw[:cut], bytes(flipped)):
        dec = OuchDecoder(direction)
        t0 = time.thread_time()
        for m in dec.feed(sample):
            m.to_dict()
        assert time.thread_time() - t0 < 0.010
    if cut < len(raw):
        assert OuchDecoder(direction, ver).feed(raw[:cut]) == [] or ROWS[i][2] in "Q"


def test_bounded_random_fuzz():
    rng = random.Random(42)
    decs = {d: OuchDecoder(d) for d in ("in", "out")}
    deadline = time.monotonic() + 2.0
    worst, n = 0.0, 0
    while time.monotonic() < deadline:
        ver, direction, _t, raw, _ = rng.choice(ROWS)
        raw = bytearray(raw)
        for _ in range(rng.randint(0, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        if rng.random() < 0.3:
            raw = raw[:rng.randrange(len(raw) + 1)]
        t0 = time.thread_time()
        for m in decs[direction].feed(bytes(raw)):
            m.to_dict()
        worst = max(worst, time.thread_time() - t0)
        n += 1
    assert n > 100 and worst < 0.010
