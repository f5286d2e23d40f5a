"""Every decoder registers under the canonical names and aliases the config already accepts, so a
config means the same thing whether or not a decoder module is installed."""
from hft_packetfilter import protocols


def test_registered_decoders_agree_with_known_names():
    protocols._load_all()
    for key, info in protocols._REGISTRY.items():
        assert info.name in protocols.KNOWN, f"decoder registers {info.name!r}, not a known canonical name"
        tr, kind, aliases = protocols.KNOWN[info.name]
        assert (info.transport, info.stream_kind) == (tr, kind), info.name
        assert {a.lower() for a in info.aliases} <= {a.lower() for a in aliases}, info.name


def test_unknown_protocol_message_lists_names():
    try:
        protocols.get("NOPE/UDP")
    except protocols.UnknownProtocol as e:
        assert "unknown protocol 'NOPE/UDP'" in str(e) and "FIX/TCP" in str(e)
    else:
        raise AssertionError("no error")


def test_aliases_resolve_to_canonical():
    assert protocols.canonical("ouch") == "SoupBinTCP/OUCH"
    assert protocols.canonical("pillar/udp") == "XDP/UDP"
    assert protocols.transport_and_kind("itch") == ("udp", "market_data")
    assert protocols.canonical("nope") is None
