"""Unit tests of the FIX tag=value decoder: literal-byte tables, stream framing, rejections, field
access, log lines, property tests and a bounded fuzz run. No corpus needed (see test_fix_corpus)."""
from __future__ import annotations

import json
import os
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hft_packetfilter.protocols import get
from hft_packetfilter.protocols.fix import (FixMessage, FixStreamDecoder, checksum, read_fix_log)

S = b"\x01"

# Time limits are checked on this process's CPU time, so a busy shared CI machine (preemption)
# does not make them flaky; the limit itself (10 ms per rejected input) is the requirement.
cpu_time = time.process_time


def fix(fields, begin=b"FIX.4.2", length=None, cs=None):
    """Build a message from (tag, value) pairs with correct (or forced) BodyLength and CheckSum."""
    body = b"".join(b"%d=%s\x01" % (t, v if isinstance(v, bytes) else str(v).encode()) for t, v in fields)
    head = b"8=" + begin + S + b"9=%d" % (len(body) if length is None else length) + S
    return head + body + b"10=" + (cs if cs is not None else checksum(head + body)) + S


HB = b"8=FIX.4.2\x019=5\x0135=0\x0110=161\x01"   # the smallest valid message, checksum by hand
NOS = fix([(35, "D"), (49, "CLIENT"), (56, "EXCH"), (34, 2), (52, "20240102-09:30:00.123"),
           (11, "ORD-1"), (55, "AAPL"), (54, 1), (38, 100), (40, 2), (44, "187.25"), (59, 0),
           (60, "20240102-09:30:00.120")])
ER = fix([(35, "8"), (49, "EXCH"), (56, "CLIENT"), (34, 3), (52, "20240102-09:30:00.125"),
          (37, "X1"), (11, "ORD-1"), (17, "E1"), (150, "F"), (39, "1"), (55, "AAPL"), (54, 1),
          (38, 100), (31, "187.25"), (32, 40), (14, 40), (151, 60), (6, "187.25")], begin=b"FIX.4.4")
LOGON_T = fix([(35, "A"), (49, "A"), (56, "B"), (34, 1), (52, "20240102-09:30:00"), (98, 0),
               (108, 30), (1137, 9)], begin=b"FIXT.1.1")
SAMPLES = [HB, NOS, ER, LOGON_T]


# -- table of literal bytes ---------------------------------------------------------------------

TABLE = [
    # (description, bytes, expected (begin, msg_type, {tag: value}) per message)
    ("heartbeat 4.2", HB, [("FIX.4.2", "0", {})]),
    ("test request 4.1 with zero-padded length",
     b"8=FIX.4.1\x019=00014\x0135=1\x01112=farm\x0110=217\x01", [("FIX.4.1", "1", {112: b"farm"})]),
    ("logon FIX 4.0", fix([(35, "A"), (98, 0), (108, 30)], begin=b"FIX.4.0"), [("FIX.4.0", "A", {108: b"30"})]),
    ("4.3 order", fix([(35, "D"), (11, "a")], begin=b"FIX.4.3"), [("FIX.4.3", "D", {11: b"a"})]),
    ("FIXT logon", LOGON_T, [("FIXT.1.1", "A", {1137: b"9"})]),
    ("two-char msg type", fix([(35, "AE"), (571, "T1")], begin=b"FIX.4.4"), [("FIX.4.4", "AE", {571: b"T1"})]),
    ("two messages back to back", HB + NOS, [("FIX.4.2", "0", {}), ("FIX.4.2", "D", {11: b"ORD-1"})]),
    ("junk before and between", b"xx\r\n" + HB + b"\n--\n" + ER,
     [("FIX.4.2", "0", {}), ("FIX.4.4", "8", {17: b"E1", 150: b"F"})]),
]


@pytest.mark.parametrize("desc,data,expected", TABLE, ids=[t[0] for t in TABLE])
def test_table(desc, data, expected):
    dec = FixStreamDecoder()
    msgs = dec.feed(data, ts_ns=7)
    assert [(m.begin_string, m.msg_type) for m in msgs] == [e[:2] for e in expected]
    for m, (_, _, want) in zip(msgs, expected):
        assert m.protocol == "FIX/TCP" and m.checksum_ok is True and m.ts_ns == 7
        for tag, value in want.items():
            assert m.get(tag) == value
        assert m.raw in data
    assert dec.stats.messages == len(expected)
    assert dec.pending == 0


def test_checksum_literal():
    assert checksum(b"8=FIX.4.2\x019=5\x0135=0\x01") == b"161"
    assert checksum(bytes(range(256)) * 5) == b"%03d" % (sum(bytes(range(256)) * 5) % 256)


def test_fast_path_fields():
    (m,) = FixStreamDecoder().feed(ER)
    assert (m.order_id, m.cl_ord_id, m.exec_id, m.exec_type, m.ord_status) == ("X1", "ORD-1", "E1", "F", "1")
    assert (m.side, m.symbol, m.order_qty, m.last_px, m.last_qty) == ("1", "AAPL", 100.0, 187.25, 40.0)
    assert (m.cum_qty, m.leaves_qty, m.msg_seq_num) == (40.0, 60.0, 3)
    assert (m.sender_comp_id, m.target_comp_id, m.sending_time) == ("EXCH", "CLIENT", "20240102-09:30:00.125")
    assert m.orig_cl_ord_id is None and m.price is None and m.transact_time is None
    assert m.get("11") == m.get(b"11") == m.get(11) == b"ORD-1"
    assert m.get(9999, b"dflt") == b"dflt" and m.get_int(34) == 3 and m.get_float(44) is None
    (n,) = FixStreamDecoder().feed(NOS)
    assert n.price == 187.25 and n.transact_time == "20240102-09:30:00.120" and n.msg_type_name == "NewOrderSingle"


def test_fields_order_and_trailer():
    (m,) = FixStreamDecoder().feed(NOS)
    f = m.fields()
    assert f[:3] == [(8, b"FIX.4.2"), (9, f[1][1]), (35, b"D")]
    assert f[-1] == (10, NOS[-4:-1])
    assert [t for t, _ in f][3:6] == [49, 56, 34]


def test_data_field_may_hold_soh_and_equals():
    data = b"a\x0111=evil\x01=b"
    raw = fix([(35, "B"), (148, "news"), (95, len(data)), (96, data), (11, "real"), (58, "x=y")])
    (m,) = FixStreamDecoder().feed(raw)
    assert m.get(96) == data and m.get(11) == b"real" and m.get(58) == b"x=y"
    assert (96, data) in m.fields()
    assert json.loads(json.dumps(m.to_dict()))["fields"][5]["value"] == data.hex()


def test_value_with_equals_sign_fast_index_falls_back():
    raw = fix([(35, "D"), (58, "a=b"), (11, "c")])
    (m,) = FixStreamDecoder().feed(raw)
    assert m.get(58) == b"a=b" and m.get(11) == b"c"


def test_groups_market_data():
    raw = fix([(35, "W"), (55, "ES"), (268, 3),
               (269, 0), (270, "100.25"), (271, 5),
               (269, 1), (270, "100.50"), (271, 7), (290, 1),
               (269, 2), (270, "100.25"), (271, 1),
               (5000, "after")], begin=b"FIX.4.4")
    (m,) = FixStreamDecoder().feed(raw)
    g = m.groups(268)
    assert [inst[0] for inst in g] == [(269, b"0"), (269, b"1"), (269, b"2")]
    assert g[1] == [(269, b"1"), (270, b"100.50"), (271, b"7"), (290, b"1")]
    assert g[2] == [(269, b"2"), (270, b"100.25"), (271, b"1")]  # 5000 is not a member
    assert m.get(270) == b"100.25"  # get() is the first occurrence
    assert m.groups(146) == []


def test_groups_unknown_count_tag_and_nested():
    raw = fix([(35, "D"), (453, 2), (448, "P1"), (447, "D"), (452, 1), (802, 1), (523, "s"), (803, 2),
               (448, "P2"), (447, "D"), (452, 3), (11, "x"), (5001, 2), (5002, "a"), (5003, 1),
               (5002, "b"), (5003, 2), (5003, 3)])
    (m,) = FixStreamDecoder().feed(raw)
    parties = m.groups(453)
    assert len(parties) == 2 and (523, b"s") in parties[0] and parties[1][-1] == (452, b"3")
    custom = m.groups(5001)
    assert custom == [[(5002, b"a"), (5003, b"1")], [(5002, b"b"), (5003, b"2")]]


def test_to_dict_is_json_safe_with_names():
    (m,) = FixStreamDecoder().feed(ER)
    d = json.loads(json.dumps(m.to_dict()))
    assert d["protocol"] == "FIX/TCP" and d["msg_type"] == "8" and d["msg_type_name"] == "ExecutionReport"
    by_tag = {f["tag"]: f for f in d["fields"]}
    assert by_tag[39]["name"] == "OrdStatus" and by_tag[39]["meaning"] == "PartiallyFilled"
    assert by_tag[150]["meaning"] == "Trade" and by_tag[54]["meaning"] == "Buy"
    assert by_tag[35]["meaning"] == "ExecutionReport"


def test_registry():
    for name in ("FIX/TCP", "fix", "FIXT/TCP", "FIX/FIXT"):
        info = get(name)
        assert info.name == "FIX/TCP" and info.transport == "tcp" and info.stream_kind == "order_entry"
        assert isinstance(info.new_decoder(), FixStreamDecoder)
    assert "FIXT.1.1" in get("FIX").spec


# -- streaming ----------------------------------------------------------------------------------

def test_split_at_every_offset_two_feeds():
    stream = b"".join(SAMPLES)
    want = [m.raw for m in FixStreamDecoder().feed(stream)]
    assert len(want) == len(SAMPLES)
    for cut in range(len(stream) + 1):
        dec = FixStreamDecoder()
        got = dec.feed(stream[:cut], 1) + dec.feed(stream[cut:], 2)
        assert [m.raw for m in got] == want, cut
        assert dec.stats.rejected == 0 and dec.pending == 0


def test_one_byte_at_a_time():
    stream = b"".join(SAMPLES) * 3
    dec = FixStreamDecoder()
    got = [m for i in range(len(stream)) for m in dec.feed(stream[i:i + 1])]
    assert [m.raw for m in got] == [s for s in SAMPLES] * 3


def test_many_messages_in_one_call():
    stream = b"".join(random.Random(1).choice(SAMPLES) for _ in range(5000))
    dec = FixStreamDecoder()
    msgs = dec.feed(stream)
    assert len(msgs) == 5000 == dec.stats.messages and dec.stats.bytes == len(stream)
    assert b"".join(m.raw for m in msgs) == stream


REJECTS = [
    ("garbage", b"hello world\r\n"),
    ("bad_begin_string", b"8=FIX.9.9\x019=5\x0135=0\x0110=000\x01"),
    ("bad_begin_string", b"8=FIXCOMP\x019=5\x01\x78\x9c\x00\x01\x02"),
    ("bad_begin_string", b"8=FIX" + b"X" * 40),
    ("bad_body_length", b"8=FIX.4.2\x0135=0\x019=5\x0110=161\x01"),
    ("bad_body_length", b"8=FIX.4.2\x019=5x\x0135=0\x0110=161\x01"),
    ("bad_body_length", b"8=FIX.4.2\x019=\x0135=0\x0110=161\x01"),
    ("bad_body_length", b"8=FIX.4.2\x019=6\x0135=0\x0110=161\x01" + b"\x00" * 8),
    ("bad_body_length", b"8=FIX.4.2\x019=1234567890\x0135=0\x01"),
    ("truncated_field", b"8=FIX.4.2\x019=40\x0135=D\x0111=abc"),  # cut, then the next message
    ("bad_checksum", b"8=FIX.4.2\x019=5\x0135=0\x0110=162\x01"),
    ("bad_checksum", b"8=FIX.4.2\x019=5\x0135=0\x0110=16x\x01"),
    ("missing_msg_type", fix([(49, "A"), (56, "B")])),
    ("message_too_large", b"8=FIX.4.2\x019=2000000\x0135=D\x01"),
]


@pytest.mark.parametrize("reason,bad", REJECTS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(REJECTS)])
def test_each_rejection_then_resync(reason, bad):
    dec = FixStreamDecoder()
    t0 = cpu_time()
    msgs = dec.feed(bad + NOS + HB)
    assert cpu_time() - t0 < 0.010
    assert [m.msg_type for m in msgs] == ["D", "0"], dec.stats
    assert dec.stats.rejects[reason] == 1, dec.stats.rejects
    assert dec.pending == 0


def test_truncated_then_next_message_delivered_at_once():
    """A message cut at any offset (segments lost before the probe) and followed by a complete
    one: the complete one comes out of the same feed() call, the cut one is counted."""
    for cut_from in SAMPLES:
        for nxt in SAMPLES:
            for cut in range(1, len(cut_from)):
                dec = FixStreamDecoder()
                assert dec.feed(cut_from[:cut]) == []
                got = dec.feed(nxt + HB)
                assert [m.raw for m in got] == [nxt, HB], (cut_from[:cut], dec.stats)
                assert dec.stats.rejected == 1 and dec.pending == 0
                want = "garbage" if cut < 5 else "truncated_field"
                assert dec.stats.rejects[want] == 1, (cut, dec.stats.rejects)


def test_waiting_for_body_scans_only_new_bytes():
    dec = FixStreamDecoder()
    dec.feed(b"8=FIX.4.2\x019=900000\x0135=D\x0158=")
    t0 = cpu_time()
    for _ in range(2000):
        dec.feed(b"8=FIX.4.2\x019=zz" * 20)  # looks like starts, none complete: never rescanned
    assert cpu_time() - t0 < 2.0
    assert dec.stats.rejected == 0 and dec.pending == 27 + 2000 * 20 * 14


def test_checksum_modes():
    bad = HB.replace(b"10=161", b"10=999")
    strict = FixStreamDecoder()
    assert strict.feed(bad) == [] and strict.stats.rejects["bad_checksum"] == 1
    report = FixStreamDecoder(checksum="report")
    (m,) = report.feed(bad)
    assert m.checksum_ok is False and report.stats.flagged["bad_checksum"] == 1 and not report.stats.rejects
    ignore = FixStreamDecoder(checksum="ignore")
    (m,) = ignore.feed(bad)
    assert m.checksum_ok is None
    with pytest.raises(ValueError):
        FixStreamDecoder(checksum="maybe")


def test_partial_message_memory_is_bounded():
    dec = FixStreamDecoder(max_message=4096)
    assert dec.feed(b"8=FIX.4.2\x019=5000\x0135=D\x01" + b"x" * 100) == []
    assert dec.stats.rejects["message_too_large"] == 1 and dec.pending < 16
    dec = FixStreamDecoder()
    dec.feed(b"8=FIX.4.2\x019=900000\x0135=D\x01")
    for _ in range(100):
        dec.feed(b"y" * 10_000)  # waits for the declared length: 1 MiB cap, never more
        assert dec.pending <= 1 << 20
    msgs = dec.feed(NOS)
    assert dec.stats.rejects["bad_body_length"] == 1 and [m.msg_type for m in msgs] == ["D"]


def test_linear_large_message_in_small_pieces():
    big = fix([(35, "B"), (148, "h"), (58, "z" * 500_000)])
    dec = FixStreamDecoder()
    t0 = cpu_time()
    got = [m for off in range(0, len(big), 100) for m in dec.feed(big[off:off + 100])]
    assert cpu_time() - t0 < 2.0
    assert len(got) == 1 and got[0].raw == big and got[0].checksum_ok


def test_linear_garbage():
    dec = FixStreamDecoder()
    junk = random.Random(3).randbytes(200_000).replace(b"8", b"7")
    t0 = cpu_time()
    for off in range(0, len(junk), 1000):
        dec.feed(junk[off:off + 1000])
    assert cpu_time() - t0 < 1.0
    assert dec.pending <= 4 and dec.stats.rejects["garbage"] == 1
    assert [m.msg_type for m in dec.feed(b"8=F" + b"IX.4.2\x019=5\x0135=0\x0110=161\x01")] == ["0"]


def test_reset_drops_pending():
    dec = FixStreamDecoder()
    dec.feed(NOS[:30])
    dec.reset()
    assert dec.pending == 0 and [m.msg_type for m in dec.feed(HB)] == ["0"]
    assert dict(dec.stats.rejects) == {"truncated_field": 1}
    dec.feed(b"8=F")
    dec.reset()  # only a possible start, not a message: nothing counted
    assert dict(dec.stats.rejects) == {"truncated_field": 1}


def test_message_equality():
    a = FixStreamDecoder().feed(HB)[0]
    b = FixStreamDecoder().feed(HB)[0]
    assert a == b and a != FixStreamDecoder().feed(NOS)[0] and isinstance(a, FixMessage)
    assert "35=0" in repr(a)


# -- log lines ----------------------------------------------------------------------------------

def test_log_delimiters_and_prefixes():
    pipe = NOS.replace(S, b"|").decode()
    caret = ER.replace(S, b"^A")
    lines = [
        "20230101-12:00:00.000 : " + pipe,
        b"incoming 09:15:57 INFO - FIX.4.4:A->B: " + caret + b"\r\n",
        HB + HB.replace(b"10=161", b"10=000"),
        "This is junk",
        "",
        b"8=FIX.4.2\x019=5\x0135=0\x0110=161",   # no trailing SOH at the end of the line
        b"8=FIX.4.2\x019=5\x0135=0\x0110=16",     # cut inside the checksum
        b"8=FIX.4.2\x019=5\x0135=0\x01" + HB,     # cut before the trailer, next message follows
    ]
    reader = read_fix_log(lines, checksum="report")
    msgs = list(reader)
    assert [m.msg_type for m in msgs] == ["D", "8", "0", "0", "0", "0"]
    assert [m.checksum_ok for m in msgs] == [True, True, True, False, True, True]
    assert msgs[0].raw == NOS and msgs[1].raw == ER and msgs[1].cl_ord_id == "ORD-1"
    assert dict(reader.stats.rejects) == {"garbage": 1, "truncated_field": 2}
    assert reader.stats.flagged["bad_checksum"] == 1
    strict = read_fix_log(lines)
    assert len(list(strict)) == 5 and strict.stats.rejects["bad_checksum"] == 1


def test_log_body_length_modes(tmp_path):
    wrong = fix([(35, "0")], length=9)
    p = tmp_path / "x.log"
    p.write_bytes(wrong + b"\n")
    (m,) = list(read_fix_log(p))
    assert m.body_length_ok is False and m.checksum_ok
    r = read_fix_log(str(p), body_length="strict")
    assert list(r) == [] and r.stats.rejects["bad_body_length"] == 1
    assert [m.msg_type for m in read_fix_log(p.read_bytes())] == ["0"]


# -- properties and fuzzing ---------------------------------------------------------------------

def _feed_timed(dec, data):
    t0 = cpu_time()
    out = dec.feed(data)
    assert cpu_time() - t0 < 0.010 + len(data) * 1e-7
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLES), st.data())
def test_truncate_every_offset_never_raises(sample, data):
    cut = data.draw(st.integers(0, len(sample)))
    dec = FixStreamDecoder()
    assert _feed_timed(dec, sample[:cut]) == ([] if cut < len(sample) else _feed_timed(FixStreamDecoder(), sample))
    # the truncated message is then overtaken by a complete one
    msgs = _feed_timed(dec, NOS)
    assert msgs[-1].raw == NOS


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=5), st.data())
def test_flip_random_bytes_never_raises(msgs, data):
    stream = bytearray(b"".join(msgs))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(stream) - 1))
        stream[i] = data.draw(st.integers(0, 255))
    split = data.draw(st.integers(0, len(stream)))
    for mode in ("strict", "report"):
        dec = FixStreamDecoder(checksum=mode)
        got = _feed_timed(dec, bytes(stream[:split])) + _feed_timed(dec, bytes(stream[split:]))
        for m in got:
            m.fields(), m.to_dict(), m.groups(268), m.get(11), m.price, m.msg_seq_num
        assert dec.stats.messages == len(got) <= len(msgs) + 1
        if mode == "strict":
            assert all(m.checksum_ok for m in got)
    reader = read_fix_log([bytes(stream)], checksum="report")
    for m in reader:
        m.to_dict()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(blob):
    dec = FixStreamDecoder()
    for m in _feed_timed(dec, blob) + _feed_timed(dec, b"8=FIX.4.2\x01" + blob):
        m.to_dict()
    list(read_fix_log([blob, b"8=FIX.4.4|" + blob]))


def test_fuzz_random_bytes_two_seconds():
    rng = random.Random(int(os.environ.get("FIX_FUZZ_SEED", "12345")))
    pieces = SAMPLES + [b"8=FIX", b"\x019=", b"\x0110=", b"8=FIXT.1.1\x01", b"9=99999\x01", b"35=D\x01"]
    dec = FixStreamDecoder(checksum="report")
    deadline = time.monotonic() + 2.0
    rounds = 0
    while time.monotonic() < deadline:
        parts = []
        for _ in range(rng.randint(1, 20)):
            if rng.random() < 0.5:
                parts.append(rng.choice(pieces))
            else:
                parts.append(rng.randbytes(rng.randint(0, 64)))
        blob = b"".join(parts)
        for m in _feed_timed(dec, blob):
            m.fields(), m.get(35), m.to_dict()
        list(read_fix_log([blob], checksum="report"))
        rounds += 1
    assert rounds > 100
    assert dec.pending <= 1 << 20


def test_values_fast_layout_matches_get():
    msgs = FixStreamDecoder().feed(b"".join(SAMPLES) * 2)
    from hft_packetfilter.protocols.fix import FAST_TAGS
    for m in msgs:
        fresh = FixMessage(m.raw, m.begin_string, m.msg_type)
        assert m.values() == tuple(fresh.get(t) for t in FAST_TAGS)
        assert m.values((11, 9999, 8)) == (fresh.get(11), None, fresh.get(8))
    # a value holding "=" and a data field take the exact path and agree with fields()
    data = b"x\x0111=evil="
    for raw in (fix([(35, "D"), (58, "a=b"), (11, "c"), (11, "d")]),
                fix([(35, "B"), (95, len(data)), (96, data), (11, "real")])):
        (m,) = FixStreamDecoder().feed(raw)
        first = {}
        for t, v in m.fields():
            first.setdefault(t, v)
        assert m.values() == tuple(first.get(t) for t in FAST_TAGS)
        (m2,) = FixStreamDecoder().feed(raw)
        assert m2.get(11) == first[11]  # bytes.find path must not be fooled by the data field


def test_docstring_examples():
    import doctest

    from hft_packetfilter.protocols import fix as fix_module
    assert doctest.testmod(fix_module).failed == 0


def test_largest_inputs_reject_within_10ms():
    body_max = (1 << 20) - 200
    big = fix([(35, "B"), (58, "q" * body_max)])
    bad_cs = big[:-4] + (b"000" if big[-4:-1] != b"000" else b"001") + S
    garbage = random.Random(5).randbytes(1 << 20).replace(b"8", b"9")
    for data, reason in ((bad_cs, "bad_checksum"), (garbage, "garbage"),
                         (b"8=FIX.4.2\x019=1048000\x0135=B\x01" + b"8" * 1048000 + b"10=000\x01", "bad_body_length")):
        dec = FixStreamDecoder()
        t0 = cpu_time()
        assert dec.feed(data) == []
        assert cpu_time() - t0 < 0.010, reason
        assert dec.stats.rejects[reason] == 1
