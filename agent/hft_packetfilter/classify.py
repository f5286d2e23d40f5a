"""Packet -> venue classification in user space, by exactly the kernel's rule.

The rule (bpf/hftpf.bpf.c, tables built by ``kernel.loader.venue_tables``): venue V matches a
packet when

* one of V's host prefixes covers the source OR the destination address, AND
* one of V's ports equals the source OR the destination port, AND
* V's transport is the packet's transport;

the lowest venue id wins (ids are 1..63 in config order). Addresses are compared in the kernel's
address space: IPv4 as v4-mapped IPv6 (``::ffff:a.b.c.d``), IPv4 prefixes as ``::ffff:0:0/96`` +
their length -- so, like the kernel, an IPv4 prefix also covers a v4-mapped address inside an IPv6
packet.

Speed: a dict ``(transport, port) -> venue ids`` narrows each packet to its candidate venues (most
traffic has none and costs two dict misses); hosts are checked only for candidates, as integer
mask-and-compare. Results are cached per flow direction ``(transport, src, dst, sport, dport)`` in
a bounded dict (cleared when full).

``direction`` (not a kernel notion): ``"to_venue"`` when the destination is covered by the venue's
hosts, ``"from_venue"`` otherwise, with two refinements -- when both ends are covered, the port
decides (``dport`` among the venue's ports and ``sport`` not: to the venue; the reverse: from
it); and a multicast destination is always ``"from_venue"`` (a feed publishes to its group).

:func:`guess` builds a config for a replay that has none; see its docstring.
"""
from __future__ import annotations

import ipaddress
import struct
from typing import Dict, Iterable, List, Optional, Tuple

from . import config as _config
from .sources.events import FROM_VENUE, TO_VENUE, Event

__all__ = ["Classifier", "NO_VENUE", "guess", "Guesser"]

#: what :meth:`Classifier.classify` returns for a packet of no venue
NO_VENUE: Tuple[int, Optional[str], Optional[str], Optional[str]] = (0, None, None, None)

_V4MAPPED = 0xFFFF << 32
_ALL128 = (1 << 128) - 1


def _addr128(packed: bytes) -> int:
    """A packed address as the kernel's 128-bit key (IPv4 v4-mapped)."""
    v = int.from_bytes(packed, "big")
    return v | _V4MAPPED if len(packed) == 4 else v


def _net128(net) -> Tuple[int, int]:
    """(network, mask) of a prefix in the kernel's 128-bit space."""
    if net.version == 4:
        plen = 96 + net.prefixlen
        base = _V4MAPPED | int(net.network_address)
    else:
        plen = net.prefixlen
        base = int(net.network_address)
    mask = _ALL128 ^ ((1 << (128 - plen)) - 1)
    return base & mask, mask


def _is_multicast(packed: bytes) -> bool:
    return (packed[0] & 0xF0) == 0xE0 if len(packed) == 4 else packed[0] == 0xFF


class _Venue:
    __slots__ = ("vid", "name", "kind", "transport", "nets", "ports", "result_to", "result_from")

    def __init__(self, vid: int, ex) -> None:
        self.vid = vid
        self.name = ex.name
        self.kind = ex.stream_kind
        self.transport = ex.transport
        self.nets = tuple(_net128(n) for n in ex.hosts)
        self.ports = frozenset(ex.ports)
        self.result_to = (vid, ex.name, ex.stream_kind, TO_VENUE)
        self.result_from = (vid, ex.name, ex.stream_kind, FROM_VENUE)

    def covers(self, a: int) -> bool:
        for net, mask in self.nets:
            if a & mask == net:
                return True
        return False


class Classifier:
    """``classify(transport, src, dst, sport, dport) -> (venue_id, venue_name, stream_kind,
    direction)``, or :data:`NO_VENUE`. Addresses are packed bytes (4 or 16) as in
    :class:`~.sources.events.Event`; ``transport`` is ``"tcp"`` or ``"udp"``."""

    def __init__(self, config=None, cache_size: int = 65536) -> None:
        exchanges = tuple(config.exchanges) if config is not None else ()
        if len(exchanges) > _config.MAX_EXCHANGES:
            raise ValueError(f"{len(exchanges)} exchanges configured; at most "
                             f"{_config.MAX_EXCHANGES} (the kernel's venue ids are 1..63)")
        self.venues: List[_Venue] = [_Venue(i, ex) for i, ex in enumerate(exchanges, start=1)]
        ports: Dict[Tuple[str, int], List[_Venue]] = {}
        for v in self.venues:
            for p in v.ports:
                ports.setdefault((v.transport, p), []).append(v)   # ascending vid by construction
        self._ports: Dict[Tuple[str, int], Tuple[_Venue, ...]] = {k: tuple(vs) for k, vs in ports.items()}
        self._cache: Dict[tuple, tuple] = {}
        self.cache_size = cache_size
        self.lookups = 0
        self.cache_hits = 0

    def classify(self, transport: str, src: bytes, dst: bytes, sport: int, dport: int) -> tuple:
        key = (transport, src, dst, sport, dport)
        r = self._cache.get(key)
        if r is not None:
            return r
        r = self._compute(transport, src, dst, sport, dport)
        cache = self._cache
        if len(cache) >= self.cache_size:
            cache.clear()
        cache[key] = r
        return r

    def classify_event(self, ev: Event) -> Event:
        """Fill ``ev``'s venue fields in place (and return it)."""
        key = (ev.transport, ev.src, ev.dst, ev.sport, ev.dport)
        r = self._cache.get(key)
        if r is None:
            r = self.classify(*key)
        ev.venue_id, ev.venue, ev.stream_kind, ev.direction = r
        return ev

    def _compute(self, transport, src, dst, sport, dport) -> tuple:
        ports = self._ports
        a = ports.get((transport, sport), ())
        b = ports.get((transport, dport), ()) if dport != sport else ()
        if not a and not b:
            return NO_VENUE
        if a and b:
            cands = sorted(set(a) | set(b), key=lambda v: v.vid)
        else:
            cands = a or b
        s = _addr128(src)
        d = _addr128(dst)
        for v in cands:
            d_cov = v.covers(d)
            s_cov = v.covers(s)
            if not (d_cov or s_cov):
                continue
            if _is_multicast(dst):
                return v.result_from
            if d_cov and s_cov:
                to = dport in v.ports or sport not in v.ports
                return v.result_to if to else v.result_from
            return v.result_to if d_cov else v.result_from
        return NO_VENUE


# --------------------------------------------------------------------------------------------
# Guessing a config from traffic (replay without a config)
# --------------------------------------------------------------------------------------------

#: ports where the protocols below are commonly found; used only to name the server side of a
#: TCP session and in the notes -- never as evidence on their own
FIX_PORTS = frozenset([*range(4000, 4011), 9001, 9878, 9880, 9876, 5001, 6001, 11310])
MDP3_PORTS = frozenset(range(14310, 14400)) | frozenset(range(15310, 15400))

_u16le = struct.Struct("<H").unpack_from
_u16be = struct.Struct(">H").unpack_from
_u32le = struct.Struct("<I").unpack_from
_u64le = struct.Struct("<Q").unpack_from
_MDP3_T0 = 1262304000 * 10**9      # 2010-01-01: a plausible MDP3 SendingTime is after this ...
_MDP3_T1 = 4102444800 * 10**9      # ... and before 2100-01-01
_SOUP_TYPES = frozenset(b"+AJSHZLURO")


def _is_moldudp64(p: bytes) -> bool:
    """Session (10 printable ASCII) + seq u64 + count u16, then exactly ``count`` length-prefixed
    message blocks filling the datagram (count 0 or 0xFFFF: header only)."""
    n = len(p)
    if n < 20 or any(c < 0x20 or c > 0x7E for c in p[:10]):
        return False
    count = _u16be(p, 18)[0]
    if count == 0 or count == 0xFFFF:
        return n == 20
    pos = 20
    for _ in range(count):
        if pos + 2 > n:
            return False
        pos += 2 + _u16be(p, pos)[0]
    return pos == n


def _is_mdp3(p: bytes) -> bool:
    """CME MDP 3.0 packet: seq u32, SendingTime u64 (plausible ns since epoch), then SBE messages
    (size u16 incl. itself, SBE header with schemaId 1) filling the datagram exactly."""
    n = len(p)
    if n < 22:
        return False
    if not _MDP3_T0 <= _u64le(p, 4)[0] < _MDP3_T1 or _u16le(p, 18)[0] != 1:
        return False
    pos = 12
    while pos < n:
        if pos + 2 > n:
            return False
        size = _u16le(p, pos)[0]
        if size < 10:
            return False
        pos += size
    return pos == n


def _is_pitch(p: bytes) -> bool:
    """Cboe sequenced unit header: length u16 == datagram, count u8, unit u8, seq u32, then exactly
    ``count`` messages of (length u8 >= 2, type u8, ...)."""
    n = len(p)
    if n < 8 or _u16le(p, 0)[0] != n:
        return False
    count = p[2]
    pos = 8
    for _ in range(count):
        if pos + 2 > n or p[pos] < 2:
            return False
        pos += p[pos]
    return pos == n


def _is_nyse_xdp(p: bytes) -> bool:
    """NYSE XDP/Pillar packet header: PktSize u16 == datagram, NumberMsgs u8, SeqNum u32, SendTime
    u32, SendTimeNS u32 < 1e9, then exactly NumberMsgs messages of (MsgSize u16 >= 4, MsgType u16)."""
    n = len(p)
    if n < 16 or _u16le(p, 0)[0] != n or _u32le(p, 12)[0] >= 1_000_000_000:
        return False
    count = p[3]
    pos = 16
    for _ in range(count):
        if pos + 4 > n:
            return False
        size = _u16le(p, pos)[0]
        if size < 4:
            return False
        pos += size
    return pos == n


def _is_soupbintcp(p: bytes) -> bool:
    """SoupBinTCP packets (length u16 big-endian, known type byte) filling the segment exactly."""
    n = len(p)
    pos = 0
    while pos < n:
        if pos + 3 > n:
            return False
        ln = _u16be(p, pos)[0]
        if ln < 1 or p[pos + 2] not in _SOUP_TYPES:
            return False
        pos += 2 + ln
    return pos == n and n > 0


def _is_boe(p: bytes) -> bool:
    """Cboe BOE: messages start 0xBA 0xBA, length u16 LE (excluding the marker) -- exactly filled."""
    n = len(p)
    pos = 0
    while pos < n:
        if pos + 4 > n or p[pos] != 0xBA or p[pos + 1] != 0xBA:
            return False
        ln = _u16le(p, pos + 2)[0]
        if ln < 2:
            return False
        pos += 2 + ln
    return pos == n and n > 0


def _is_ilink3(p: bytes) -> bool:
    """CME iLink 3: SOFH (length u16 LE incl. itself, encoding 0xCAFE) + SBE header with schemaId 8."""
    n = len(p)
    if n < 12 or _u16le(p, 2)[0] != 0xCAFE or _u16le(p, 8)[0] != 8:
        return False
    pos = 0
    while pos < n:
        if pos + 4 > n or _u16le(p, pos + 2)[0] != 0xCAFE:
            return False
        ln = _u16le(p, pos)[0]
        if ln < 12:
            return False
        pos += ln
    return pos == n


_UDP_SHAPES = (("ITCH/MoldUDP64", _is_moldudp64), ("MDP3/UDP", _is_mdp3),
               ("PITCH/UDP", _is_pitch), ("XDP/UDP", _is_nyse_xdp))
#: TCP shapes after FIX (a payload starting with "8=FIX" is FIX, nothing else)
_TCP_SHAPES = (("BOE/TCP", _is_boe), ("iLink3/TCP", _is_ilink3), ("SoupBinTCP/OUCH", _is_soupbintcp))
#: segments with the shape needed before a TCP protocol is guessed (FIX needs 1: "8=FIX" is exact)
_TCP_MIN_HITS = {"BOE/TCP": 1, "iLink3/TCP": 1, "SoupBinTCP/OUCH": 3}


class Guesser:
    """Watches events and proposes exchanges. Conservative by design:

    * evidence is always the payload, never the port alone: ``8=FIX.``/``8=FIXT.`` at a segment
      start (not ``8=FIXCOMP``, compressed FIX, which the FIX decoder cannot read); for
      binary protocols a header whose length fields chain *exactly* to the end of the datagram or
      segment (MoldUDP64, MDP3 with schemaId 1 and a plausible SendingTime, Cboe PITCH, NYSE XDP,
      Cboe BOE, CME iLink 3; SoupBinTCP needs 3 such segments because its framing is weak);
    * a payload matching two protocols is ambiguous and counts for neither;
    * UDP venues are named by destination (the multicast group or receiver) and port, TCP venues by
      the server address and port (the SYN's destination when seen, else the lower port);
    * port 0 and the unspecified address (synthetic captures) are never proposed.
    """

    def __init__(self) -> None:
        self.votes: Dict[Tuple[str, bytes, int, str], int] = {}
        self.servers: Dict[tuple, Tuple[bytes, int]] = {}
        self.seen = 0

    def observe(self, ev: Event) -> None:
        self.seen += 1
        p = ev.payload
        if ev.transport == "tcp":
            if ev.tcp_flags & 0x12 == 0x02:                  # SYN without ACK: dst is the server
                self.servers[_conn(ev)] = (ev.dst, ev.dport)
            if not p:
                return
            if p[:6] == b"8=FIX." or p[:7] == b"8=FIXT.":
                proto = "FIX/TCP"
            else:
                hits = [name for name, f in _TCP_SHAPES if f(p)]
                if len(hits) != 1:
                    return
                proto = hits[0]
            host, port = self.servers.get(_conn(ev)) or (
                (ev.dst, ev.dport) if ev.dport < ev.sport else (ev.src, ev.sport))
            self._vote("tcp", host, port, proto)
        else:
            hits = [name for name, f in _UDP_SHAPES if f(p)]
            if len(hits) == 1:
                self._vote("udp", ev.dst, ev.dport, hits[0])

    def _vote(self, transport, host, port, proto) -> None:
        if port == 0 or not any(host):
            return
        k = (transport, host, port, proto)
        self.votes[k] = self.votes.get(k, 0) + 1

    def result(self, config=None):
        """(Config, notes): ``config`` with the guessed exchanges (its other sections kept)."""
        import dataclasses

        base = config if config is not None else _config.default()
        notes: List[str] = []
        exchanges = []
        for (transport, host, port, proto), n in sorted(self.votes.items(), key=lambda kv: -kv[1]):
            need = _TCP_MIN_HITS.get(proto, 1)
            ip = ipaddress.ip_address(host)
            if n < need:
                notes.append(f"not guessing {proto} on port {port} ({ip}): only {n} matching "
                             f"payload(s), need {need}")
                continue
            if len(exchanges) >= _config.MAX_EXCHANGES:
                notes.append(f"not guessing {proto} on port {port} ({ip}): already "
                             f"{_config.MAX_EXCHANGES} venues")
                continue
            tk = _known(proto)
            name = f"{proto.split('/')[0]}_{port}_{len(exchanges) + 1}"[:31]
            exchanges.append(_config.Exchange(
                name=name, hosts=(ipaddress.ip_network(ip),), ports=(port,), protocol=proto,
                transport=tk[0], stream_kind=tk[1], line=0))
            usual = " (its usual port)" if (proto == "FIX/TCP" and port in FIX_PORTS) or (
                proto == "MDP3/UDP" and port in MDP3_PORTS) else ""
            notes.append(f"guessed {proto} on port {port}{usual} for {ip} from {n} "
                         f"{'segment' if transport == 'tcp' else 'datagram'}(s) -> venue {name}")
        cfg = dataclasses.replace(base, exchanges=tuple(exchanges), source="<guessed>")
        return cfg, notes


def _conn(ev: Event) -> tuple:
    a, b = (ev.src, ev.sport), (ev.dst, ev.dport)
    return (a, b) if a <= b else (b, a)


def _known(proto: str) -> Tuple[str, str]:
    from . import protocols

    tk = protocols.transport_and_kind(proto)
    if tk is None:     # pragma: no cover - every name above is in protocols.KNOWN
        raise ValueError(proto)
    return tk


def guess(events: Iterable[Event], config=None, max_events: int = 200_000):
    """Propose a config for ``events`` (e.g. the first part of a capture replayed without one).

    Returns ``(Config, notes)``: the guessed exchanges (see :class:`Guesser` for the evidence
    required) on top of ``config``'s other sections, and human-readable notes such as
    ``"guessed FIX/TCP on port 4000 (its usual port) for 10.0.0.1 from 596 segment(s) -> venue
    FIX_4000_1"``. When ``config`` already has exchanges it is returned unchanged with a note:
    a real config always wins over guessing.
    """
    if config is not None and config.exchanges:
        return config, ["config has exchanges; nothing guessed"]
    g = Guesser()
    for i, ev in enumerate(events):
        if i >= max_events:
            break
        g.observe(ev)
    cfg, notes = g.result(config)
    if not cfg.exchanges:
        notes.append(f"nothing recognised in {g.seen} packet(s); pass a config to classify venues")
    return cfg, notes
