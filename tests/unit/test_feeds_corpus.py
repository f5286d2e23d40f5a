"""Real third-party captures (../shared/corpus, see its README.md table): every MDP3, PITCH, XDP /
Pillar and iMpact pcap decodes to the sequence numbers, counts and types the README lists, and no
truncation or byte flip of any sample makes a decoder raise or stall."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hft_packetfilter.protocols import impact, mdp3, nyse_xdp, pitch

from _pcap_feeds import CORPUS, corpus_files, payloads, read_pcap, timed_feed

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not present at {CORPUS}")

V9 = CORPUS / "sbe-schemas-cme" / "templates_FixBinary.v9.xml"


def _mdp3():
    return mdp3.new_decoder(V9)


# ---------------------------------------------------------------- MDP3: (file, seq, templates, unknown)
MDP3 = [
    ("Mdp3.Sbe.v1.5/MdIncrementalRefreshBook.pcap", 19321375, [(32, 1, 5)]),
    ("Mdp3.Sbe.v1.5/MdIncrementalRefreshTradeSummary.pcap", 19321415, [(42, 1, 5)]),
    ("Mdp3.Sbe.v1.5/MdIncrementalRefreshVolume.pcap", 19321379, [(37, 1, 5), (32, 1, 5)]),
    ("Mdp3.Sbe.v1.8/MdIncrementalRefreshTradeSummary.pcap", 17349477, [(42, 1, 8), (37, 1, 8), (32, 1, 8)]),
    ("Mdp3.Sbe.v1.9/MdIncrementalRefreshBook.pcap", 1028095, [(46, 1, 9), (46, 1, 9)]),
    ("Mdp3.Sbe.v1.9/MdIncrementalRefreshTradeSummary.pcap", 884140,
     [(48, 1, 9), (37, 1, 9), (47, 1, 9), (46, 1, 9), (46, 1, 9)]),
    ("Mdp3.Sbe.v1.9/MdIncrementalRefreshVolume.pcap", 1160087,
     [(37, 1, 9), (46, 1, 9), (46, 1, 9), (48, 1, 9), (37, 1, 9), (46, 1, 9), (46, 1, 9)]),
]
# v12 over TCP with the 0xCAFE marker: framed; templates the v9 schema lacks are named.
MDP3_TCP = [
    ("Mdp3.Sbe.v1.12/MdIncrementalRefreshBookLongQty.pcap", 119, (64, 1, 12)),
    ("Mdp3.Sbe.v1.12/MdIncrementalRefreshTradeSummaryLongQty.pcap", 108, (65, 1, 12)),
    ("Mdp3.Sbe.v1.12/SecurityListRequest.Tcp.pcap", 2, (208, 2, 0)),
    ("Mdp3.Sbe.v1.12/SecurityStatusRequest.Tcp.pcap", 3, (209, 2, 0)),
    ("Mdp3.Sbe.v1.12/SubscriberHeartbeat.Tcp.pcap", 6, (210, 2, 0)),
]


def test_mdp3_schema_loads_29_messages():
    assert len(mdp3.load_schema(V9).messages) == 29
    assert len(mdp3.load_schema(CORPUS / "sbe-schemas-cme" / "FixBinary.mdp3.xml").messages) == 29


@pytest.mark.parametrize("name,seq,templates", MDP3, ids=[m[0] for m in MDP3])
def test_mdp3_udp_corpus(name, seq, templates):
    d = _mdp3()
    out = []
    for p in payloads(CORPUS / "omi-cme-mdp3" / name):
        out += d.feed(p)
    assert d.stats.rejects == {}
    assert [(m.template_id, m.schema_id, m.version) for m in out] == templates
    assert {m.seq for m in out} == {seq} and d.packets[-1].templates == templates
    for m in out:                       # named fields everywhere, prices exact
        assert "TransactTime" in m.fields and "MatchEventIndicator" in m.fields
        for e in m.fields.get("NoMDEntries", []):
            if e.get("MDEntryPx") is not None:
                assert mdp3.mantissa_exponent(e["MDEntryPx"])[1] in (-7, -9)
        m.to_dict()


@pytest.mark.parametrize("name,seq,template", MDP3_TCP, ids=[m[0] for m in MDP3_TCP])
def test_mdp3_tcp_corpus_frames_and_names_unknown(name, seq, template):
    frames = [f for f in read_pcap(CORPUS / "omi-cme-mdp3" / name) if f.payload]
    assert len(frames) == 1 and frames[0].proto == "tcp"
    d = mdp3.Mdp3Decoder(mdp3.load_schema(V9), transport="tcp")
    assert d.feed(frames[0].payload) == []
    assert d.packets[-1].seq == seq and d.packets[-1].templates == [template]
    assert d.stats.rejects == {f"unknown_template:{template[0]}": 1}
    assert dict(d.unknown_templates) == {template: 1}


# ---------------------------------------------------------------- PITCH: per packet (unit, seq, types)
PITCH = {
    "Byx.Equities.DepthOfBook.Pitch.v2.41/AddOrderShortMessage.pcap": [
        (17, 14003, [0x22]), (15, 47690, [0x20, 0x22]), (15, 47692, [0x22]), (15, 47693, [0x22, 0x22]),
        (31, 35742, [0x20, 0x22, 0x22])],
    "Byx.Equities.DepthOfBook.Pitch.v2.41/ModifyOrderShortMessage.pcap": [(11, 121843, [0x28])],
    "Futures.DepthOfBook.Pitch.v1.1.12/FutureInstrumentDefinitionMessage.pcap": [(2, 0, [0xBB])],
    "Futures.DepthOfBook.Pitch.v1.1.6/AddOrderShortMessage.pcap": [(1, 21396, [0x22])],
    "Futures.DepthOfBook.Pitch.v1.1.6/FutureInstrumentDefinitionMessage.pcap": [(2, 0, [0xBB])],
    "Futures.DepthOfBook.Pitch.v1.1.6/Heartbeat.pcap": [(1, 21134, [])],
    "Futures.DepthOfBook.Pitch.v1.1.6/TimeMessage.pcap": [(1, 36444, [0x20, 0x28])],
    "Futures.DepthOfBook.Pitch.v1.1.6/TradingStatusMessage.pcap": [(1, 35934, [0x31] * 16)],
    "Options.ComplexDepthOfBook.Pitch.v2.1.18/AuctionNotificationMessage.pcap": [(33, 10017425, [0xAD])],
    "Options.ComplexDepthOfBook.Pitch.v2.1.18/AuctionUpdateMessage.pcap": [(33, 452545, [0xD1])],
    "Options.ComplexDepthOfBook.Pitch.v2.1.18/DeleteOrderMessage.pcap": [(33, 10033418, [0x29])],
    "Options.ComplexDepthOfBook.Pitch.v2.1.18/Heartbeat.pcap": [(1, 1, [])],
    "Options.ComplexDepthOfBook.Pitch.v2.1.18/OrderExecutedMessage.pcap": [(33, 9975020, [0x23])],
    "Options.ComplexDepthOfBook.Pitch.v2.1.18/SymbolMappingMessage.pcap": [(33, 0, [0x2E])],
    "Options.DepthOfBook.Pitch.v2.39.4/AddOrderLongMessage.pcap": [(1, 37, [0x20, 0x21])],
    "Options.DepthOfBook.Pitch.v2.39.4/DeleteOrderMessage.pcap": [(1, 41, [0x20, 0x29])],
    "Options.DepthOfBook.Pitch.v2.39.4/ModifyOrderLongMessage.pcap": [(1, 27, [0x20, 0x27])],
}
PITCH_UNDECODED = {0xAD, 0xBB, 0xD1}     # options complex auction and CFE instrument messages


def test_pitch_corpus_covers_every_file():
    assert {str(p.relative_to(CORPUS / "omi-cboe-pitch")) for p in corpus_files("omi-cboe-pitch")} == set(PITCH)


@pytest.mark.parametrize("name", sorted(PITCH))
def test_pitch_corpus(name):
    d = pitch.new_decoder()
    seen, decoded = [], []
    for p in payloads(CORPUS / "omi-cboe-pitch" / name):
        decoded += d.feed(p)
        u = d.last_unit
        seen.append((u.unit, u.seq, u.types))
    assert seen == PITCH[name]
    types = [t for _, _, ts in PITCH[name] for t in ts]
    assert [int(m.msg_type, 16) for m in decoded] == [t for t in types if t not in PITCH_UNDECODED]
    assert d.stats.rejected == sum(t in PITCH_UNDECODED for t in types)
    assert all(r.startswith("unknown_type:") for r in d.stats.rejects)


def test_pitch_corpus_values():
    out = pitch.new_decoder().feed(payloads(CORPUS / "omi-cboe-pitch" / "Options.DepthOfBook.Pitch.v2.39.4"
                                            / "AddOrderLongMessage.pcap")[0])
    add = out[1]
    assert add.name == "AddOrderLong" and add.fields["side"] == "B" and add.fields["quantity"] == 1000
    assert add.fields["price_raw"] == 29 and str(add.fields["price"]) == "0.0029"


# ---------------------------------------------------------------- XDP / Pillar: (seq, types)
XDP = {
    "omi-nyse-xdp/Bbo.Xdp.v2.3a/QuoteMessage.pcap": (19618, [140]),
    "omi-nyse-xdp/Bbo.Xdp.v2.3a/SequenceNumberResetMessage.pcap": (1, [1]),
    "omi-nyse-xdp/ImbalancesFeed.Xdp.v2.1.f/ImbalanceMessage.pcap": (11603, [105]),
    "omi-nyse-xdp/ImbalancesFeed.Xdp.v2.1.f/SequenceResetMessage.pcap": (1, [1]),
    "omi-nyse-xdp/IntegratedFeed.Xdp.v2.1/ImbalanceMessage.pcap": (3825213, [105]),
    "omi-nyse-xdp/IntegratedFeed.Xdp.v2.1/OrderExecutionMessage.pcap": (2422938, [103]),
    "omi-nyse-xdp/IntegratedFeed.Xdp.v2.1/SecurityStatusMessage.pcap": (242, [34]),
    "omi-nyse-xdp/IntegratedFeed.Xdp.v2.1/SequenceResetMessage.pcap": (1, [1]),
    "omi-nyse-xdp/IntegratedFeed.Xdp.v2.1/SymbolIndexMappingMessage.pcap": (2, [3]),
    "omi-nyse-pillar/Arca.Options.TopFeed.Pillar.1.2.c/HeartBeat.pcap": (2, []),
    "omi-nyse-pillar/Arca.Options.TopFeed.Pillar.1.2.c/OptionsQuoteMessage.pcap": (663636, [340]),
    "omi-nyse-pillar/IntegratedFeed.Pillar.v2.5/AddOrderMessage.pcap": (53173, [100]),
    "omi-nyse-pillar/IntegratedFeed.Pillar.v2.5/DeleteOrderMessage.pcap": (53150, [102]),
    "omi-nyse-pillar/IntegratedFeed.Pillar.v2.5/ImbalanceMessage.pcap": (53119, [105]),
    "omi-nyse-pillar/IntegratedFeed.Pillar.v2.5/ReplaceOrderMessage.pcap": (54194, [104]),
    "omi-nyse-pillar/IntegratedFeed.Pillar.v2.5/SecurityStatusMessage.pcap": (42754, [34]),
    "omi-nyse-pillar/IntegratedFeed.Pillar.v2.5/StockSummaryMessage.pcap": (216123, [223]),
    "omi-nyse-pillar/National.Equities.Bbo.Pillar.v2.5/QuoteMessage.pcap": (489925, [140]),
    "omi-nyse-pillar/National.Equities.Bbo.Pillar.v2.5/SecurityStatusMessage.pcap": (490664, [34]),
    "omi-nyse-pillar/National.Equities.Bbo.Pillar.v2.5/SourceTimeReferenceMessage.pcap": (489903, [2]),
}
OPENBOOK = {  # (msg_type, seq, num_body_entries)
    "DeltaUpdateMessage.pcap": (231, 499977, 21),
    "HeartbeatMessage.pcap": (2, 0, 0),
    "SequenceNumberResetMessage.pcap": (1, 1, 1),
}


@pytest.mark.parametrize("name", sorted(XDP))
def test_xdp_corpus(name):
    seq, types = XDP[name]
    d = nyse_xdp.new_decoder()
    out = []
    for f in read_pcap(CORPUS / name):
        assert f.proto == "udp"
        out += d.feed(f.payload)
    p = d.last_packet
    assert (p.framing, p.seq, p.count, p.types) == ("xdp", seq, len(types), types)
    known = [t for t in types if t != 340]          # Arca Options quote: not an equities type
    assert [int(m.msg_type) for m in out] == known
    assert d.stats.rejects == ({"unknown_type:340": 1} if 340 in types else {})


def test_xdp_corpus_values():
    out = nyse_xdp.new_decoder().feed(payloads(CORPUS / "omi-nyse-xdp/IntegratedFeed.Xdp.v2.1"
                                               "/SymbolIndexMappingMessage.pcap")[0])
    assert out[0].fields["symbol"] == "ABG" and out[0].fields["exchange_code"] == "N"
    q = nyse_xdp.new_decoder().feed(payloads(CORPUS / "omi-nyse-pillar/National.Equities.Bbo.Pillar.v2.5"
                                             "/QuoteMessage.pcap")[0])[0]
    assert q.fields["ask_volume"] == 100 and q.fields["quote_condition"] == "R"


def test_pillar_order_entry_is_not_a_feed():
    frames = list(read_pcap(CORPUS / "omi-nyse-pillar/Equities.BinaryGateway.Pillar.v5.8"
                                     "/NewOrderSingleAndCancelReplaceRequestMessage.pcap"))
    assert [f.proto for f in frames] == ["tcp"]


@pytest.mark.parametrize("name", sorted(OPENBOOK))
def test_openbook_corpus_framing(name):
    d = nyse_xdp.new_decoder()
    d.feed(payloads(CORPUS / "omi-nyse-xdp/Nyse.Equities.OpenBook.Ultra.2.1.b" / name)[0])
    p = d.last_packet
    assert (p.framing, p.types[0], p.seq, p.num_body_entries) == ("openbook", *OPENBOOK[name])


# ---------------------------------------------------------------- iMpact: (session, seq, types)
IMPACT = {
    "Mdf.iMpact.v1.1.24/AddOrModifyOrderMessage.pcap": (7971, 20018, "E" * 15 + "T"),
    "Mdf.iMpact.v1.1.24/MarketStateChangeMessage.pcap": (7971, 4267, "K" * 18),
    "Mdf.iMpact.v1.1.24/OpenPriceMessage.pcap": (7971, 4493, "N"),
    "Mdf.iMpact.v1.1.24/PreOpenPriceIndicatorMessage.pcap": (7971, 4262, "g" * 5),
    "Mdf.iMpact.v1.1.33/DeleteOrderMessage.pcap": (1291, 253601, "TFET"),
    "Mdf.iMpact.v1.1.33/Heartbeat.pcap": (1291, 253572, ""),
    "Mdf.iMpact.v1.1.33/MarketSnapshotOrderMessage.pcap": (6289, 538704, "C" + "D" * 8),
    "Mdf.iMpact.v1.1.33/MarketStatisticsMessage.pcap": (1291, 275270, "GJGJT"),
    "Mdf.iMpact.v1.1.33/NewOptionsStrategyDefinintionMessage.pcap": (11093, 47373, "U"),
    "Mdf.iMpact.v1.1.33/SpecialFieldMessage.pcap": (6289, 538715, "CbDbDbD"),
}


@pytest.mark.parametrize("name", sorted(IMPACT))
def test_impact_corpus(name):
    session, seq, types = IMPACT[name]
    d = impact.new_decoder()
    out = []
    for p in payloads(CORPUS / "omi-ice-impact" / name):
        out += d.feed(p)
    p = d.last_packet
    assert (p.session, p.seq, p.count, "".join(p.types)) == (session, seq, len(types), types)
    assert "".join(m.msg_type for m in out) == types and d.stats.rejects == {}
    assert [m.seq for m in out] == list(range(seq, seq + len(types)))


# ---------------------------------------------------------------- robustness on every real sample
def _samples():
    out = []
    for folder, factory in (("omi-cme-mdp3", _mdp3), ("omi-cboe-pitch", pitch.new_decoder),
                            ("omi-nyse-xdp", nyse_xdp.new_decoder), ("omi-nyse-pillar", nyse_xdp.new_decoder),
                            ("omi-ice-impact", impact.new_decoder)):
        for path in corpus_files(folder):
            for p in payloads(path):
                out.append((folder, factory, p))
    return out


SAMPLES = _samples() if CORPUS.is_dir() else []


def test_truncate_every_sample_at_every_offset():
    for _folder, factory, p in SAMPLES:
        d = factory()
        for cut in range(len(p)):
            timed_feed(d, p[:cut])
        tcp = mdp3.Mdp3Decoder(mdp3.load_schema(V9), transport="tcp")
        for cut in range(0, len(p), 7):           # a stream cut anywhere and resumed
            timed_feed(tcp, p[cut:cut + 7])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(idx=st.integers(min_value=0), flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)),
                                                    min_size=1, max_size=8),
       cut=st.none() | st.integers(min_value=0))
def test_flipped_bytes_never_raise(idx, flips, cut):
    if not SAMPLES:
        pytest.skip("no corpus samples")
    _folder, factory, p = SAMPLES[idx % len(SAMPLES)]
    data = bytearray(p)
    for pos, val in flips:
        data[pos % len(data)] = val
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    d = factory()
    timed_feed(d, bytes(data))
    assert d.stats.messages + d.stats.rejected >= 0
