"""Real Nasdaq captures (../shared/corpus, from Open-Markets-Initiative/omi-data-packets): every ITCH 5.0
and OUCH 5.0 pcap decodes with the message counts and types the corpus README lists, key fields are
sane, MoldUDP64 / SoupBinTCP headers agree with tshark, every sample survives truncation at every
offset and random byte flips.

tshark 4.0's ITCH dissector only knows ITCH 2.0-4.1 and its OUCH dissector only OUCH 4.x, so ITCH 5.0
and OUCH 5.0 fields are checked against the specs here; tshark checks the MoldUDP64 and SoupBinTCP
framing, and OUCH 4.2 fields on a synthetic capture we write.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pcap  # noqa: E402

from hft_packetfilter.protocols import get  # noqa: E402
from hft_packetfilter.protocols.itch50 import MESSAGE_LENGTHS  # noqa: E402
from hft_packetfilter.protocols.moldudp64 import MoldUDP64Decoder, parse_header  # noqa: E402
from hft_packetfilter.protocols.ouch import encode_message as ouch_encode  # noqa: E402
from hft_packetfilter.protocols.soupbintcp import SoupBinTCPDecoder, encode_packet  # noqa: E402

CORPUS = _pcap.CORPUS
ITCH_DIR = CORPUS / "omi-nasdaq-itch50"
OUCH_DIR = CORPUS / "omi-nasdaq-ouch50"
TSHARK = shutil.which("tshark")

pytestmark = pytest.mark.skipif(not ITCH_DIR.is_dir() or not OUCH_DIR.is_dir(),
                                reason=f"Nasdaq corpus not found at {CORPUS} (../shared/corpus from the repo root)")

# File name -> ITCH message type, as the OMI file names spell the spec's message names.
NAME_TO_TYPE = [
    ("AddOrderWithMPID", "F"), ("AddOrderWithMpid", "F"), ("AddOrderMpid", "F"),
    ("AddOrderNoMPID", "A"), ("AddOrderNoMpid", "A"), ("OrderExecutedWithPrice", "C"),
    ("OrderExecuted", "E"), ("OrderCancel", "X"), ("OrderDelete", "D"), ("OrderReplace", "U"),
    ("StockTradingAction", "H"), ("RegSHO", "Y"), ("RegSho", "Y"), ("MarketParticipantPosition", "L"),
    ("NetOrderImbalance", "I"), ("LULDAuctionCollar", "J"), ("RetailInterest", "N"),
    ("NonCrossTrade", "P"), ("TradeMessageNon-cross", "P"),
]
OUCH_NAME = {"EnterOrderMessage": ("U", "O"), "CancelOrderMessage": ("U", "X"),
             "CanceledMessage": ("S", "C"), "OrderAcceptedMessage": ("S", "A")}


def _readme_rows():
    """{relative path: info} parsed from the corpus README table."""
    rows = {}
    readme = CORPUS / "README.md"
    if not readme.is_file():
        return rows
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 6 or not cells[1].startswith("omi-nasdaq-"):
            continue
        info = cells[5]
        row = {"pkts": int(re.search(r"(\d+) pkt", info).group(1))}
        m = re.search(r"moldudp64 seq=(\w+) count=(\d+).*?itch=(\{[^}]*\})", info)
        if m:
            row["count"] = int(m.group(2))
            row["itch"] = ast.literal_eval(m.group(3))
        m = re.search(r"soupbintcp (\[.*?\])", info)
        if m:
            row["soup"] = ast.literal_eval(m.group(1))
        rows[cells[1]] = row
    return rows


README = _readme_rows()
ITCH_FILES = sorted(ITCH_DIR.glob("*/*.pcap")) if ITCH_DIR.is_dir() else []
OUCH_FILES = sorted(OUCH_DIR.glob("*/*.pcap")) if OUCH_DIR.is_dir() else []


def _rel(p: Path) -> str:
    return str(p.relative_to(CORPUS))


def _type_from_name(p: Path) -> str:
    for key, t in NAME_TO_TYPE:
        if p.stem.startswith(key):
            return t
    raise AssertionError(f"no ITCH type known for file name {p.name}")


SYMBOL = re.compile(r"^[A-Z][A-Z0-9.\-]{0,7}$")
DAY_NS = 86_400 * 10**9


def _check_itch_fields(m) -> None:
    d = m.to_dict()
    assert 0 <= m.timestamp < DAY_NS
    for k, v in d.items():
        assert not isinstance(v, float), k
    if "stock" in d:
        assert SYMBOL.match(d["stock"]), d["stock"]
    for k in ("price", "execution_price", "far_price", "near_price", "current_reference_price",
              "auction_collar_reference_price", "upper_auction_collar_price"):
        if k in d:
            assert isinstance(d[k], int) and 0 < d[k] < 2_000_000 * 10_000, (k, d[k])
    for k in ("shares", "executed_shares", "cancelled_shares"):
        if k in d:
            assert isinstance(d[k], int) and 0 < d[k] < 10**9, (k, d[k])
    if m.msg_type in "AFP":
        assert d["side"] in "BS"


@pytest.mark.parametrize("path", ITCH_FILES, ids=_rel)
def test_itch_pcap_matches_readme(path):
    row = README.get(_rel(path))
    if row is None:
        pytest.skip(f"{_rel(path)} is not in the corpus README table")
    pkts = _pcap.read_packets(path)
    assert len(pkts) == row["pkts"]
    assert all(p.proto == "udp" for p in pkts)
    want = _type_from_name(path)
    assert set(row["itch"]) == {want}
    dec = get("ITCH/MoldUDP64").new_decoder()
    total = []
    for p in pkts:
        _session, seq, count = parse_header(p.payload)
        assert count == row["count"]
        msgs = dec.feed(p.payload)
        assert len(msgs) == count
        total += msgs
    assert [m.msg_type for m in total] == [want] * (row["pkts"] * row["count"])
    assert dec.stats.rejected == 0 and dec.inner.stats.rejected == 0
    for m in total:
        _check_itch_fields(m)
    if path.parent.name.endswith(".20230822"):
        assert all(p.dst == "0.0.0.0" and parse_header(p.payload)[1] == 0 for p in pkts)


def test_corpus_covers_vlan_and_both_pcap_magics():
    vlans = {p.vlan for f in ITCH_FILES + OUCH_FILES for p in _pcap.read_packets(f)}
    assert {141, 142, 5} <= vlans
    magics = {f.read_bytes()[:4] for f in ITCH_FILES + OUCH_FILES}
    assert b"\x4d\x3c\xb2\xa1" in magics and b"\xd4\xc3\xb2\xa1" in magics


def test_real_field_values():
    """Spot values read by hand from the captures with the ITCH 5.0 layouts."""
    f = ITCH_DIR / "Nasdaq.Equities.TotalView.Itch.v5.0" / "NetOrderImbalanceIndicatorMessage.pcap"
    (m,) = MoldUDP64Decoder().feed(_pcap.read_packets(f)[0].payload)
    assert (m.msg_type, m.symbol, m.paired_shares, m.imbalance_shares, m.imbalance_direction) == ("I", "MDC", 1, 0, "N")
    assert (m.far_price, m.near_price, m.current_reference_price, m.cross_type) == (464_400, 464_400, 464_400, "O")
    f = ITCH_DIR / "Nasdaq.Equities.TotalView.Itch.v5.0" / "OrderReplaceMessage.pcap"
    (m,) = MoldUDP64Decoder().feed(_pcap.read_packets(f)[0].payload)
    assert (m.original_order_reference_number, m.new_order_reference_number, m.shares, m.price) == \
        (0xE6897F, 0x145F2C7, 100, 0x1036C8)


@pytest.mark.parametrize("path", OUCH_FILES, ids=_rel)
def test_ouch_pcap_matches_readme(path):
    row = README.get(_rel(path))
    if row is None:
        pytest.skip(f"{_rel(path)} is not in the corpus README table")
    pkts = _pcap.read_packets(path)
    assert len(pkts) == row["pkts"] and all(p.proto == "tcp" for p in pkts)
    got = []
    for p in pkts:
        dec = SoupBinTCPDecoder()
        msgs = dec.feed(p.payload)
        assert dec.stats.rejected == 0 and dec.pending == 0
        got += msgs
    assert [(m.soup_type, m.msg_type) for m in got] == row["soup"] == [OUCH_NAME[path.stem]]
    m = got[0]
    assert m.version == "5.0"
    assert m.direction == ("in" if m.soup_type == "U" else "out")
    d = m.to_dict()
    assert not any(isinstance(v, float) for v in d.values())
    if "symbol" in d:
        assert SYMBOL.match(d["symbol"])
        assert isinstance(d["price"], int) and 0 < d["price"] < 100_000 * 10_000
    if "timestamp" in d:
        assert 0 < d["timestamp"] < DAY_NS


# ---- tshark cross-checks ----------------------------------------------------------------------------

def _tshark(args):
    r = subprocess.run([TSHARK, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [ln.split("\t") for ln in r.stdout.splitlines() if ln.strip()]


needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed (apt install tshark)")


@needs_tshark
@pytest.mark.parametrize("path", [f for f in ITCH_FILES if not f.parent.name.endswith(".20230822")], ids=_rel)
def test_moldudp64_header_matches_tshark(path):
    pkts = _pcap.read_packets(path)
    port = pkts[0].dport
    rows = _tshark(["-r", str(path), "-d", f"udp.port=={port},moldudp64", "-T", "fields",
                    "-e", "moldudp64.sequence", "-e", "moldudp64.count", "-e", "moldudp64.msglen"])
    assert len(rows) == len(pkts)
    for p, (seq, count, msglen) in zip(pkts, rows):
        _s, our_seq, our_count = parse_header(p.payload)
        assert (our_seq, our_count) == (int(seq), int(count))
        dec = MoldUDP64Decoder()
        msgs = dec.feed(p.payload)
        assert [int(x) for x in msglen.split(",")] == [MESSAGE_LENGTHS[m.msg_type] for m in msgs]


@needs_tshark
def test_synthetic_port0_files_skipped_for_tshark():
    """The *.20230822 files use UDP port 0, which tshark cannot map to MoldUDP64 with -d."""
    assert any(f.parent.name.endswith(".20230822") for f in ITCH_FILES)


@needs_tshark
@pytest.mark.parametrize("path", OUCH_FILES, ids=_rel)
def test_soupbintcp_matches_tshark(path):
    pkts = _pcap.read_packets(path)
    ports = {pkts[0].sport, pkts[0].dport}
    args = ["-r", str(path)]
    for port in ports:
        args += ["-d", f"tcp.port=={port},soupbintcp"]
    rows = _tshark(args + ["-T", "fields", "-e", "soupbintcp.packet_type", "-e", "soupbintcp.packet_length"])
    theirs = [(t.strip("'"), int(n)) for t, n in rows]
    ours = []
    for p in pkts:
        dec = SoupBinTCPDecoder()
        for m in dec.feed(p.payload):
            ours.append((getattr(m, "soup_type", None) or m.msg_type, len(p.payload) - 2))
    assert ours == theirs


@needs_tshark
def test_ouch42_fields_match_tshark(tmp_path):
    """tshark knows OUCH 4.x: write a SoupBinTCP capture of OUCH 4.2 messages and compare fields."""
    msgs = [
        ("in", "O", dict(order_token="TOK00000000001", side="B", shares=300, stock="AAPL", price=1_789_900,
                         time_in_force=99_999, firm="FIRM", display="Y", capacity="A",
                         intermarket_sweep_eligibility="N", cross_type="N", customer_type="R")),
        ("out", "A", dict(timestamp=34_200_000_000_000, order_token="TOK00000000001", side="B", shares=300,
                          stock="AAPL", price=1_789_900, time_in_force=99_999, firm="FIRM", display="Y",
                          order_reference_number=4242, capacity="A", intermarket_sweep_eligibility="N",
                          cross_type="N", order_state="L", bbo_weight_indicator=" ")),
        ("out", "E", dict(timestamp=34_200_000_000_500, order_token="TOK00000000001", executed_shares=100,
                          execution_price=1_789_800, liquidity_flag="A", match_number=777)),
        ("in", "X", dict(order_token="TOK00000000001", shares=0)),
        ("out", "C", dict(timestamp=34_200_000_001_000, order_token="TOK00000000001", decrement_shares=200,
                          reason="U")),
    ]
    frames, ours = [], []
    seq_in, seq_out = 1, 1
    for direction, t, f in msgs:
        raw = ouch_encode("4.2", direction, t, **f)
        soup = encode_packet("U" if direction == "in" else "S", raw)
        if direction == "in":
            frames.append(_pcap.build_frame("tcp", soup, 40000, 15000, "10.0.0.1", "10.0.0.2", seq_in))
            seq_in += len(soup)
        else:
            frames.append(_pcap.build_frame("tcp", soup, 15000, 40000, "10.0.0.2", "10.0.0.1", seq_out))
            seq_out += len(soup)
        dec = SoupBinTCPDecoder(ouch_version="4.2")
        (m,) = dec.feed(soup)
        ours.append(m)
    pcap = tmp_path / "ouch42.pcap"
    _pcap.write_pcap(pcap, frames)
    rows = _tshark(["-r", str(pcap), "-d", "tcp.port==15000,soupbintcp", "-T", "fields",
                    "-e", "ouch.packet_type", "-e", "ouch.order_token", "-e", "ouch.shares",
                    "-e", "ouch.price", "-e", "ouch.executed_shares", "-e", "ouch.execution_price",
                    "-e", "ouch.match_number", "-e", "ouch.order_reference_number", "-e", "ouch.decrement_shares"])
    assert len(rows) == len(ours)
    for m, row in zip(ours, rows):
        t, token, shares, price, xs, xp, match, oref, dec_sh = row
        if not t:
            pytest.skip("this tshark build did not dissect the OUCH 4.2 payloads")
        assert t.strip("'") == m.msg_type
        assert token.strip() == m.order_token
        d = m.to_dict()
        for field, val in (("shares", shares), ("executed_shares", xs), ("match_number", match),
                           ("order_reference_number", oref), ("decrement_shares", dec_sh)):
            if val:
                assert int(val) == d[field], field
        for field, val in (("price", price), ("execution_price", xp)):
            if val:
                # tshark shows prices either as the raw integer or in dollars
                assert val in (str(d[field]), f"{d[field] / 10_000:.4f}", f"{d[field] // 10_000}.{d[field] % 10_000:04d}") \
                    or round(float(val) * 10_000) == d[field], field


# ---- robustness on real samples ------------------------------------------------------------------------

def _samples():
    out = []
    for f in ITCH_FILES:
        out += [("udp", p.payload) for p in _pcap.read_packets(f)[:1]]
    for f in OUCH_FILES:
        out += [("tcp", p.payload) for p in _pcap.read_packets(f)]
    return out


SAMPLES = _samples()


def _decoder(kind):
    return MoldUDP64Decoder() if kind == "udp" else SoupBinTCPDecoder()


def test_truncate_every_sample_at_every_offset():
    worst = 0.0
    for kind, payload in SAMPLES:
        full = _decoder(kind).feed(payload)
        for cut in range(len(payload)):
            dec = _decoder(kind)
            t0 = time.thread_time()
            out = dec.feed(payload[:cut])
            worst = max(worst, time.thread_time() - t0)
            for m in out:
                m.to_dict()
            if kind == "udp":
                assert len(out) <= len(full)
                if cut < len(payload) and out and out[0].__class__.__name__ != "MoldPacket":
                    pytest.fail("a truncated datagram decoded a full message")
            else:
                assert out == [] and dec.pending == cut   # a partial packet waits for more bytes
    assert worst < 0.010


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(SAMPLES))) if SAMPLES else st.just(-1), st.data())
def test_flip_random_bytes_in_real_samples(i, data):
    if i < 0:
        return
    kind, payload = SAMPLES[i]
    buf = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] ^= data.draw(st.integers(1, 255))
    dec = _decoder(kind)
    t0 = time.thread_time()
    for m in dec.feed(bytes(buf)):
        m.to_dict()
    assert time.thread_time() - t0 < 0.010
