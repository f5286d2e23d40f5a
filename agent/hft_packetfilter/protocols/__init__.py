"""Protocol decoders: bytes in, messages out. Pure Python; never imports bcc.

Every decoder module registers itself here under the protocol names the config uses in
``exchanges[].protocol`` (for example ``FIX/TCP`` or ``ITCH/MoldUDP64``). Names are matched
case-insensitively.

The contract every decoder follows:

* ``decoder = get("ITCH/MoldUDP64").new_decoder()`` makes an independent decoder with its own state
  (one per TCP flow direction, or one per UDP stream).
* ``decoder.feed(data, ts_ns=0)`` takes one UDP payload (datagram protocols) or the next bytes of a
  TCP byte stream (stream protocols: messages may span calls, one call may hold many messages) and
  returns a list of decoded messages. It never raises on bad input: malformed data is counted in
  ``decoder.stats.rejects`` (reason -> count) and, for streams, the decoder resynchronises.
* Every message has ``.protocol`` (registry name), ``.msg_type`` (a short string such as ``"D"`` or
  ``"A"``) and ``.to_dict()`` (JSON-safe field dict for display and ``--json``).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

from .. import _accel


class UnknownProtocol(KeyError):
    """Raised by :func:`get` for a name no decoder registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a readable sentence
        return self.args[0]


@dataclasses.dataclass
class DecodeStats:
    """What a decoder saw: messages decoded, bytes consumed and rejections by reason."""

    messages: int = 0
    bytes: int = 0
    rejects: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejects[reason] += n

    @property
    def rejected(self) -> int:
        return sum(self.rejects.values())


def native_backend() -> str:
    """Which backend runs the batch decoders' hot loops: ``"native"`` (the compiled
    ``hft_packetfilter._native``) or ``"python"`` (see :mod:`hft_packetfilter._accel`)."""
    return _accel.backend()


@dataclasses.dataclass(frozen=True)
class ProtocolInfo:
    name: str                      # canonical registry name, e.g. "ITCH/MoldUDP64"
    transport: str                 # "tcp" or "udp"
    stream_kind: str               # "order_entry" or "market_data"
    new_decoder: Callable[[], object]
    default_ports: Tuple[int, ...] = ()
    aliases: Tuple[str, ...] = ()
    spec: str = ""                 # the public spec version implemented


_REGISTRY: Dict[str, ProtocolInfo] = {}


def register(info: ProtocolInfo) -> ProtocolInfo:
    for key in (info.name, *info.aliases):
        k = key.lower()
        if k in _REGISTRY and _REGISTRY[k] is not info:
            raise ValueError(f"protocol name {key!r} registered twice")
        _REGISTRY[k] = info
    return info


# Every protocol name the config accepts: canonical name -> (transport, stream kind, aliases).
# Decoder modules register under the same canonical names and aliases; until a module exists (or
# when it fails to import) the kernel classification still needs only the transport and the kind.
# Keep the two in step: tests/unit/test_protocol_registry.py checks it.
KNOWN = {
    "FIX/TCP": ("tcp", "order_entry", ("FIX", "FIXT/TCP", "FIX/FIXT")),
    "SoupBinTCP/OUCH": ("tcp", "order_entry", ("OUCH/SoupBinTCP", "OUCH", "SoupBinTCP")),
    "BOE/TCP": ("tcp", "order_entry", ()),
    "iLink3/TCP": ("tcp", "order_entry", ()),
    "ITCH/MoldUDP64": ("udp", "market_data", ("MoldUDP64", "ITCH")),
    "MDP3/UDP": ("udp", "market_data", ("MDP3", "CME/MDP3")),
    "PITCH/UDP": ("udp", "market_data", ("PITCH",)),
    "XDP/UDP": ("udp", "market_data", ("XDP", "Pillar/UDP", "NYSE/XDP")),
    "iMpact/UDP": ("udp", "market_data", ("IMPACT",)),
    "TCP": ("tcp", "order_entry", ()),
    "UDP": ("udp", "market_data", ()),
}
_KNOWN_LOWER = {a.lower(): (canon, tr, kind) for canon, (tr, kind, al) in KNOWN.items() for a in (canon, *al)}


def _load_all() -> None:
    """Import every decoder module so it registers. Modules that do not exist yet are skipped."""
    import importlib

    for mod in ("fix", "soupbintcp", "ouch", "moldudp64", "itch50", "mdp3", "pitch", "nyse_xdp", "impact"):
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{mod}":
                raise


def get(name: str) -> ProtocolInfo:
    _load_all()
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise UnknownProtocol(f"unknown protocol {name!r}; known: {', '.join(names())}") from None


def names() -> List[str]:
    """Canonical names the config accepts (aliases are accepted too)."""
    _load_all()
    return sorted({*(i.name for i in _REGISTRY.values()), *KNOWN})


def canonical(name: str) -> Optional[str]:
    """The canonical spelling of a protocol name or alias, or None when unknown."""
    _load_all()
    info = _REGISTRY.get(name.lower())
    if info is not None:
        return info.name
    hit = _KNOWN_LOWER.get(name.lower())
    return hit[0] if hit else None


def transport_and_kind(name: str) -> Optional[Tuple[str, str]]:
    """(transport, stream_kind) for a config protocol name, or None when the name is unknown."""
    _load_all()
    info = _REGISTRY.get(name.lower())
    if info is not None:
        return info.transport, info.stream_kind
    hit = _KNOWN_LOWER.get(name.lower())
    return (hit[1], hit[2]) if hit else None
