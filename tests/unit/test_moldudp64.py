"""MoldUDP64 framing: literal packets for data / heartbeat / end of session / request, count and
length checks, sequence tracking, the registry entry, hypothesis and a bounded fuzz."""
from __future__ import annotations

import random
import time

from hypothesis import given, settings, strategies as st

from hft_packetfilter import protocols
from hft_packetfilter.protocols.moldudp64 import MoldPacket, MoldUDP64Decoder, encode_packet, encode_request, parse_header

SESSION = b"000010059B"
ADD = bytes.fromhex("41159800001f1aced85306000000000166b53e420000064049564f4f20202020000d55ac")  # real 'A' (OMI)
DEL = bytes.fromhex("440dbd00001f1aced85ad80000000001668bd6")  # real 'D' (OMI)


def pkt(seq: int, msgs, count=None) -> bytes:
    body = b"".join(len(m).to_bytes(2, "big") + m for m in msgs)
    return SESSION + seq.to_bytes(8, "big") + (len(msgs) if count is None else count).to_bytes(2, "big") + body


def test_registry_entry():
    info = protocols.get("ITCH/MoldUDP64")
    assert info.transport == "udp" and info.stream_kind == "market_data"
    assert protocols.get("moldudp64") is info and protocols.get("ITCH") is info
    assert "MoldUDP64" in info.spec and "ITCH 5.0" in info.spec
    assert isinstance(info.new_decoder(), MoldUDP64Decoder)


def test_data_packet_literal():
    dec = MoldUDP64Decoder()
    raw = pkt(14757721, [ADD, DEL])
    out = dec.feed(raw)
    assert [m.msg_type for m in out] == ["A", "D"]
    a = out[0]
    assert a.symbol == "IVOO" and a.price == 873_900 and a.shares == 1600 and a.side == "B"
    assert a.order_reference_number == 0x166B53E and a.stock_locate == 0x1598
    assert dec.last_header == ("000010059B", 14757721, 2)
    assert dec.next_seq == 14757723
    assert dec.stats.rejected == 0 and dec.stats.messages == 2
    assert parse_header(raw) == ("000010059B", 14757721, 2)
    assert encode_packet("000010059B", 14757721, [ADD, DEL]) == raw
    assert dec.decode_buffer(raw)  # batch alias gives the same kind of result


def test_heartbeat_end_of_session_and_request():
    dec = MoldUDP64Decoder()
    hb = dec.feed(pkt(100, [], 0))
    assert hb == [MoldPacket("HB", "000010059B", 100, 0)]
    eos = dec.feed(pkt(100, [], 0xFFFF))
    assert eos[0].msg_type == "EOS" and eos[0].count == 0xFFFF
    req = dec.feed(encode_request("000010059B", 42, 7))
    assert req[0].msg_type == "REQ" and req[0].sequence == 42 and req[0].count == 7
    assert req[0].to_dict() == {"protocol": "ITCH/MoldUDP64", "msg_type": "REQ", "session": "000010059B",
                                "sequence": 42, "count": 7}
    assert dec.stats.rejected == 0


def test_malformed_packets_are_counted():
    dec = MoldUDP64Decoder()
    assert dec.feed(b"") == [] and dec.feed(SESSION) == []
    assert dec.stats.rejects["short_header"] == 2
    # count says 3, only 2 messages present
    out = dec.feed(pkt(1, [ADD, DEL], 3))
    assert len(out) == 2 and dec.stats.rejects["count_mismatch"] == 1
    # trailing garbage after the counted messages
    dec.feed(pkt(3, [ADD]) + b"\x01")
    assert dec.stats.rejects["trailing_bytes"] == 1
    # a message length running past the datagram
    out = dec.feed(pkt(4, [ADD])[:-3])
    assert out == [] and dec.stats.rejects["count_mismatch"] == 1
    # heartbeat with a body
    dec.feed(pkt(5, [], 0) + b"xx")
    assert dec.stats.rejects["trailing_bytes"] == 2
    # a message of the wrong length for its type
    out = dec.feed(pkt(6, [ADD[:-1], DEL]))
    assert [m.msg_type for m in out] == ["D"] and dec.stats.rejects["itch_bad_length"] == 1
    assert dec.stats.rejects["itch_truncated_message"] == 1


def test_sequence_gaps_and_duplicates():
    dec = MoldUDP64Decoder()
    dec.feed(pkt(10, [ADD, DEL]))      # 10, 11 -> next 12
    dec.feed(pkt(15, [DEL]))           # 12..14 missing
    assert dec.gaps == 3 and dec.next_seq == 16
    dec.feed(pkt(15, [DEL]))           # replay
    assert dec.duplicates == 1
    dec.feed(pkt(0, [DEL]))            # synthetic sequence 0 (OMI *.20230822 files): not tracked
    assert dec.gaps == 3 and dec.next_seq == 16


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise(data):
    dec = MoldUDP64Decoder()
    t0 = time.thread_time()
    for m in dec.feed(data):
        m.to_dict()
    assert time.thread_time() - t0 < 0.010


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncate_and_flip(data):
    raw = pkt(77, [ADD, DEL, ADD])
    cut = data.draw(st.integers(0, len(raw)))
    pos = data.draw(st.integers(0, len(raw) - 1))
    flipped = bytearray(raw)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    for sample in (raw[:cut], bytes(flipped)):
        dec = MoldUDP64Decoder()
        t0 = time.thread_time()
        out = dec.feed(sample)
        assert time.thread_time() - t0 < 0.010
        if sample != raw:
            assert len(out) <= 3 or all(isinstance(m, MoldPacket) for m in out)


def test_bounded_random_fuzz():
    rng = random.Random(64)
    dec = MoldUDP64Decoder()
    deadline = time.monotonic() + 2.0
    worst = 0.0
    n = 0
    while time.monotonic() < deadline:
        msgs = [rng.choice([ADD, DEL]) for _ in range(rng.randint(0, 40))]
        raw = bytearray(pkt(rng.randrange(1 << 20), msgs, rng.choice([None, None, 0, 0xFFFF, rng.randrange(65536)])))
        for _ in range(rng.randint(0, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        if rng.random() < 0.3:
            raw = raw[:rng.randrange(len(raw) + 1)]
        t0 = time.thread_time()       # CPU time: a preempted test on a loaded VM is not a slow decoder
        for m in dec.feed(bytes(raw)):
            m.to_dict()
        worst = max(worst, time.thread_time() - t0)
        n += 1
    assert n > 100 and worst < 0.010
