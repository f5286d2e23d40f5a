"""CME MDP 3.0: packet framing, named fields via the SBE schema, exact prices, TCP framing."""
import struct
from decimal import Decimal
from pathlib import Path

import pytest

from hft_packetfilter.protocols import get, mdp3

from _pcap_feeds import random_fuzz, timed_feed

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
V9 = CORPUS / "sbe-schemas-cme" / "templates_FixBinary.v9.xml"
needs_schema = pytest.mark.skipif(not V9.is_file(), reason=f"CME schema not present at {V9}")

# Packet: MsgSeqNum 7, SendingTime; one MDIncrementalRefreshBook46 (v9) with one entry:
# price 4321.250000000 (PRICENULL9 mantissa 4321250000000), size 5, SecurityID 42, RptSeq 9,
# 3 orders, level 1, New, Bid; empty NoOrderIDEntries (groupSize8Byte).
BOOK46 = (
    b"\x07\x00\x00\x00" + b"\x00\x10\xa5\xd4\xe8\x00\x00\x00"                 # packet header
    + b"\x40\x00" + b"\x0b\x00\x2e\x00\x01\x00\x09\x00"                         # size 64, header
    + b"\x01\x00\x00\x00\x00\x00\x00\x00" + b"\x84" + b"\x00\x00"               # TransactTime, MEI, pad
    + b"\x20\x00\x01"                                                           # groupSize 32 x 1
    + struct.pack("<qiiIiBBc5x", 4321250000000, 5, 42, 9, 3, 1, 0, b"0")
    + b"\x18\x00" + b"\x00" * 5 + b"\x00"                                       # groupSize8Byte 24 x 0
)
# A second message in the same packet: template 999 (not in the schema) of 12 bytes.
UNKNOWN = b"\x0c\x00" + b"\x02\x00\xe7\x03\x01\x00\x09\x00" + b"\xaa\xbb"


@pytest.fixture(autouse=True)
def _no_default(monkeypatch):
    monkeypatch.delenv(mdp3.SCHEMA_ENV, raising=False)
    mdp3.set_default_schema(None)
    yield
    mdp3.set_default_schema(None)


def test_registry_names():
    for name in ("MDP3/UDP", "mdp3", "CME/MDP3"):
        info = get(name)
        assert info.name == "MDP3/UDP" and info.transport == "udp" and info.stream_kind == "market_data"


def test_no_schema_still_frames():
    d = get("MDP3/UDP").new_decoder()
    assert d.feed(BOOK46 + UNKNOWN) == []
    assert d.stats.rejects["no_schema"] == 2
    p = d.packets[-1]
    assert (p.seq, p.messages, p.templates) == (7, 2, [(46, 1, 9), (999, 1, 9)])
    assert d.last_seq == 7


@needs_schema
def test_book_named_fields_and_exact_price():
    mdp3.set_default_schema(V9)
    d = get("MDP3").new_decoder()
    msgs = d.feed(BOOK46 + UNKNOWN)
    assert len(msgs) == 1 and d.stats.rejects == {"unknown_template:999": 1}
    m = msgs[0]
    assert (m.msg_type, m.template_id, m.seq, m.version) == ("MDIncrementalRefreshBook", 46, 7, 9)
    assert m.sending_time == 1_000_000_000_000
    e = m.fields["NoMDEntries"][0]
    assert e["MDEntryPx"] == Decimal("4321.250000000")
    assert mdp3.mantissa_exponent(e["MDEntryPx"]) == (4321250000000, -9)
    assert (e["MDEntrySize"], e["SecurityID"], e["RptSeq"], e["NumberOfOrders"]) == (5, 42, 9, 3)
    assert (e["MDUpdateAction"], e["MDEntryType"]) == ("New", "Bid")
    assert m.fields["MatchEventIndicator"] == ["LastQuoteMsg", "EndOfEvent"]
    assert m.fields["NoOrderIDEntries"] == []
    assert m.to_dict()["NoMDEntries"][0]["MDEntryPx"] == "4321.250000000"
    assert d.unknown_templates[(999, 1, 9)] == 1


@needs_schema
def test_schema_from_environment(monkeypatch):
    monkeypatch.setenv(mdp3.SCHEMA_ENV, str(V9))
    d = get("MDP3/UDP").new_decoder()
    assert len(d.feed(BOOK46)) == 1


def test_unreadable_schema_counts(tmp_path):
    d = mdp3.new_decoder(tmp_path / "missing.xml")
    assert d.stats.rejects["schema_error"] == 1 and d.schema is None
    assert d.feed(BOOK46) == [] and d.stats.rejects["no_schema"] == 1


@needs_schema
def test_older_version_message_decodes():
    """MDIncrementalRefreshBook32 sent at version 6 (before the sinceVersion=7 NoOrderIDEntries
    group existed): the group is absent, the rest decodes."""
    d = mdp3.new_decoder(V9)
    body = struct.pack("<QB2x", 5, 1) + struct.pack("<HB", 32, 1)
    body += struct.pack("<qiiIiBBc5x", 123450000000, 1, 7, 1, 1, 1, 1, b"1")
    msg = struct.pack("<HHHHH", 10 + len(body), 11, 32, 1, 6) + body
    out = d.feed(struct.pack("<IQ", 1, 2) + msg)
    assert len(out) == 1 and "NoOrderIDEntries" not in out[0].fields
    assert out[0].fields["NoMDEntries"][0]["MDEntryPx"] == Decimal("12345.0000000")


@pytest.mark.parametrize("data,reason", [
    (b"", "truncated_packet_header"),
    (b"\x01\x00\x00\x00\x00\x00", "truncated_packet_header"),
    (struct.pack("<IQ", 1, 1) + b"\x05\x00", "bad_message_size"),
    (struct.pack("<IQ", 1, 1) + b"\x40\x00" + b"\x00" * 10, "truncated_message"),
    (struct.pack("<IQ", 1, 1) + b"\x0c", "truncated_message_size"),
])
def test_bad_framing(data, reason):
    d = mdp3.new_decoder()
    assert timed_feed(d, data) == []
    assert d.stats.rejects[reason] == 1


@needs_schema
def test_truncated_body_rejected():
    d = mdp3.new_decoder(V9)
    pkt = bytearray(BOOK46)
    struct.pack_into("<H", pkt, 12, 40)         # message size cuts the group
    assert d.feed(bytes(pkt[:12 + 40])) == []
    assert d.stats.rejects["truncated:46"] == 1


# TCP form: 0xCAFE marker, packet header, message (template 64 is a v12+ LongQty template).
TCP_PKT = (b"\xfe\xca" + struct.pack("<IQ", 119, 3)
           + struct.pack("<HHHHH", 10 + 13, 11, 64, 1, 12) + b"\x00" * 13)


def test_tcp_framing_datagram_and_stream():
    d = mdp3.new_decoder()
    d.feed(TCP_PKT)
    assert d.packets[-1].framing == "tcp" and d.packets[-1].templates == [(64, 1, 12)]
    s = mdp3.Mdp3Decoder(None, transport="tcp")
    stream = TCP_PKT * 3
    for i in range(len(stream)):                # one byte at a time
        s.feed(stream[i:i + 1])
    assert [p.seq for p in s.packets] == [119, 119, 119]
    assert s.stats.rejects == {"no_schema": 3}
    s.feed(b"\x01\x00garbage" + TCP_PKT)        # an impossible message size
    assert s.stats.rejects["resync"] >= 1 and s.packets[-1].seq == 119


@needs_schema
def test_tcp_unknown_templates_named():
    d = mdp3.Mdp3Decoder(mdp3.load_schema(V9), transport="tcp")
    d.feed(TCP_PKT)
    assert d.stats.rejects == {"unknown_template:64": 1}
    assert d.unknown_templates == {(64, 1, 12): 1}


def test_fuzz_without_schema():
    assert random_fuzz(mdp3.new_decoder, [BOOK46 + UNKNOWN, TCP_PKT], seconds=1.0) > 100


@needs_schema
def test_fuzz_with_schema():
    assert random_fuzz(lambda: mdp3.new_decoder(V9), [BOOK46 + UNKNOWN, TCP_PKT], seconds=2.0) > 100
