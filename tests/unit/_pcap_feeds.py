"""Capture reading for the feed decoder tests: a thin wrapper over the package's reader
(sources/pcap.py) and parser (sources/packet.py), plus decoder timing and fuzz helpers.

Link types 1 (Ethernet, 802.1Q / 802.1ad tags peeled) and 101 (raw IP), IPv4 and IPv6, UDP/TCP.
It yields one :class:`Frame` per UDP datagram or TCP segment. IPv4 fragments other than the first
are skipped (none of the corpus captures has them).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, List, Union

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8


@dataclasses.dataclass
class Frame:
    ts_ns: int
    proto: str          # "udp" or "tcp"
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    vlans: List[int]


def read_pcap(path: Union[str, Path]) -> Iterator[Frame]:
    from hft_packetfilter.sources.packet import parse
    from hft_packetfilter.sources.pcap import open_capture

    with open_capture(path) as reader:
        for ts_ns, linktype, pkt in reader:
            if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
                continue
            ev = parse(pkt, linktype, ts_ns)
            if ev is not None:
                yield _frame(ev)


def _addr(packed: bytes) -> str:
    return ".".join(map(str, packed)) if len(packed) == 4 else packed.hex()


def _frame(ev) -> Frame:
    return Frame(ev.ts_ns, ev.transport, _addr(ev.src), _addr(ev.dst), ev.sport, ev.dport,
                 bytes(ev.payload), list(ev.vlans))


def payloads(path: Union[str, Path]) -> List[bytes]:
    """Every non-empty UDP/TCP payload of a capture, in file order."""
    return [f.payload for f in read_pcap(path) if f.payload]


def corpus_files(folder: str) -> List[Path]:
    return sorted((CORPUS / folder).rglob("*.pcap"))


def timed_feed(decoder, data: bytes, limit_s: float = 0.01):
    """Feed ``data``; assert it neither raises nor takes ``limit_s`` (re-timed once on a fresh
    decoder state to tell a scheduler hiccup on a shared core from a slow path)."""
    import time

    t0 = time.thread_time()
    out = decoder.feed(data)
    if time.thread_time() - t0 >= limit_s:
        t0 = time.thread_time()
        decoder.feed(data)
        assert time.thread_time() - t0 < limit_s, f"feeding {len(data)} bytes took too long"
    assert isinstance(out, list)
    for m in out:
        m.to_dict()
    return out


def random_fuzz(new_decoder, seeds, seconds: float = 2.0, seed: int = 1) -> int:
    """Bounded random fuzz: random bytes, and mutated/truncated/spliced seed payloads."""
    import random
    import time

    rng = random.Random(seed)
    seeds = [bytes(s) for s in seeds if s] or [b"\x00" * 16]
    d = new_decoder()
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = rng.random()
        if r < 0.3:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 6)):
                if data:
                    data[rng.randrange(len(data))] = rng.getrandbits(8)
            if r > 0.8:
                data = data[:rng.randrange(len(data) + 1)]
            elif r > 0.7:
                data = data + rng.choice(seeds)
            data = bytes(data)
        timed_feed(d, data)
        n += 1
    return n
