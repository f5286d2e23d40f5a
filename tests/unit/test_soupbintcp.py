"""SoupBinTCP 3.0 stream framing: every packet type as literal bytes, packets split across and packed
into feed() calls, sequence numbering, direction checks, resynchronisation, hypothesis and a fuzz."""
from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings, strategies as st

from hft_packetfilter import protocols
from hft_packetfilter.protocols.ouch import OuchMessage
from hft_packetfilter.protocols.soupbintcp import SoupBinTCPDecoder, SoupPacket, encode_login_accepted, encode_login_request, encode_packet

# Real OUCH 5.0 payloads (OMI captures): Enter Order (inbound) and Order Accepted (outbound).
ENTER = bytes.fromhex("4f0000007154000000e143564c54202020200000000000099db83059414e4e4838465542384956"
                      "202020202020000605024c494d45")
ACCEPTED = bytes.fromhex("410000289b4d64af8700753a8d42000000284144424520202020000000000048e748355900000000"
                         "0f56b4f5414e4e4c373638323730312020202020202000090502" + "4d4c524f021230")
CANCELED = bytes.fromhex("430000289b4d68131700753a8d0000002855")

LOGIN_REQ = (b"\x00\x2f" b"L" b"USER01" b"secret    " b"SESSION001" + b" " * 19 + b"1")
LOGIN_ACC = b"\x00\x1f" b"A" b"SESSION001" + b" " * 17 + b"100"
OUT_STREAM = (LOGIN_ACC + b"\x00\x01H" + encode_packet("S", ACCEPTED) + encode_packet("S", CANCELED)
              + b"\x00\x06+hello" + b"\x00\x01Z")
IN_STREAM = LOGIN_REQ + encode_packet("U", ENTER) + b"\x00\x01R" + b"\x00\x01O"


def test_registry_entry():
    info = protocols.get("SoupBinTCP/OUCH")
    assert info.transport == "tcp" and info.stream_kind == "order_entry"
    for alias in ("OUCH/SoupBinTCP", "OUCH", "SoupBinTCP", "ouch"):
        assert protocols.get(alias) is info
    assert isinstance(info.new_decoder(), SoupBinTCPDecoder)


def test_outbound_stream_all_packet_types():
    dec = SoupBinTCPDecoder("out")
    out = dec.feed(OUT_STREAM)
    assert [m.msg_type for m in out] == ["A", "H", "A", "C", "+", "Z"]
    assert out[0] == SoupPacket("A", {"session": "SESSION001", "sequence_number": 100})
    acc, can = out[2], out[3]
    assert isinstance(acc, OuchMessage) and acc.direction == "out" and acc.soup_type == "S"
    assert (acc.sequence, can.sequence) == (100, 101) and dec.next_sequence == 102
    assert acc.symbol == "ADBE" and acc.price == 4_777_800 and acc.appendages["firm"] == "MLRO"
    assert out[4].text == "hello"
    assert dec.stats.rejected == 0 and dec.pending == 0
    assert encode_login_accepted("SESSION001", 100) == LOGIN_ACC


def test_inbound_stream_and_password_never_kept():
    dec = SoupBinTCPDecoder("in")
    out = dec.feed(IN_STREAM)
    assert [m.msg_type for m in out] == ["L", "O", "R", "O"]
    login = out[0]
    assert login.to_dict() == {"protocol": "SoupBinTCP/OUCH", "msg_type": "L", "name": "LoginRequest",
                               "username": "USER01", "requested_session": "SESSION001",
                               "requested_sequence_number": 1}
    assert "secret" not in repr(out) and "secret" not in str(login.to_dict())
    assert out[1].name == "EnterOrder" and out[1].soup_type == "U" and out[1].symbol == "CVLT"
    assert encode_login_request("USER01", "secret", "SESSION001", 1) == LOGIN_REQ


def test_login_rejected_and_wrong_direction():
    dec = SoupBinTCPDecoder()
    assert dec.feed(b"\x00\x02JA")[0].reject_reason_code == "A"
    strict = SoupBinTCPDecoder("in")
    assert strict.feed(encode_packet("S", CANCELED)) == []
    assert strict.stats.rejects == {"wrong_direction": 1}


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_packets_split_across_feeds(chunk):
    whole = SoupBinTCPDecoder().feed(OUT_STREAM)
    dec = SoupBinTCPDecoder()
    got = []
    for i in range(0, len(OUT_STREAM), chunk):
        got += dec.feed(OUT_STREAM[i:i + chunk])
    assert got == whole and dec.pending == 0


def test_resync_after_garbage():
    dec = SoupBinTCPDecoder()
    out = dec.feed(b"\xff\xff\xff garbage \xfe" + encode_packet("S", CANCELED) + b"\x00\x00" + b"\x00\x01H")
    assert [m.msg_type for m in out] == ["C", "H"]
    assert dec.stats.rejects["bad_header"] >= 1


def test_bad_payload_and_bad_length_keep_framing():
    dec = SoupBinTCPDecoder()
    out = dec.feed(encode_packet("S", b"~junk") + encode_packet("H", b"x") + encode_packet("S", CANCELED))
    assert [m.msg_type for m in out] == ["C"]
    assert dec.stats.rejects == {"ouch_unknown_type": 1, "bad_length": 1}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=5))
def test_random_chunks_never_raise(chunks):
    dec = SoupBinTCPDecoder()
    for c in chunks:
        t0 = time.thread_time()
        for m in dec.feed(c):
            m.to_dict()
        assert time.thread_time() - t0 < 0.010


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([OUT_STREAM, IN_STREAM]), st.data())
def test_truncate_and_flip(stream, data):
    cut = data.draw(st.integers(0, len(stream)))
    pos = data.draw(st.integers(0, len(stream) - 1))
    flipped = bytearray(stream)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    for sample in (stream[:cut], bytes(flipped)):
        dec = SoupBinTCPDecoder()
        t0 = time.thread_time()
        for m in dec.feed(sample):
            m.to_dict()
        assert time.thread_time() - t0 < 0.010
    # a clean stream after a damaged one still decodes: the decoder resynchronises
    dec = SoupBinTCPDecoder()
    dec.feed(bytes(flipped))
    dec.feed(b"\x00\x01H" * 3)
    assert dec.pending <= 4096 + 2


def test_bounded_random_fuzz():
    rng = random.Random(3)
    dec = SoupBinTCPDecoder()
    deadline = time.monotonic() + 2.0
    worst, n = 0.0, 0
    while time.monotonic() < deadline:
        s = bytearray(rng.choice([OUT_STREAM, IN_STREAM]))
        for _ in range(rng.randint(0, 5)):
            s[rng.randrange(len(s))] = rng.randrange(256)
        if rng.random() < 0.2:
            s = bytearray(rng.randbytes(rng.randrange(2000)))
        i = 0
        while i < len(s):
            j = i + rng.randint(1, 100)
            t0 = time.thread_time()
            for m in dec.feed(bytes(s[i:j])):
                m.to_dict()
            worst = max(worst, time.thread_time() - t0)
            i = j
        n += 1
    assert n > 50 and worst < 0.010
    assert dec.pending <= dec.max_packet + 2
