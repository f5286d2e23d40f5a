"""A small classic-pcap reader for the feed decoder tests (no scapy, no dpkt).

Handles the libpcap file format with microsecond (0xa1b2c3d4) and nanosecond (0xa1b23c4d) magic in
either byte order, link type 1 (Ethernet) with any number of 802.1Q / 802.1ad VLAN tags, IPv4 and
IPv6, and UDP/TCP. It yields one :class:`Frame` per UDP datagram or TCP segment with a payload.
IPv4 fragments other than the first are skipped (none of the corpus captures has them).
"""
from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Iterator, List, Optional, Union

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),  # usec, little-endian file
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),      # nsec
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
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
    data = Path(path).read_bytes()
    if len(data) < 24 or data[:4] not in _MAGIC:
        raise ValueError(f"{path}: not a classic pcap file")
    end, frac_ns = _MAGIC[data[:4]]
    linktype = struct.unpack_from(end + "I", data, 20)[0]
    rec = struct.Struct(end + "IIII")
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += 16
        pkt = data[off:off + incl]
        off += incl
        frame = _parse(pkt, linktype, sec * 1_000_000_000 + frac * frac_ns)
        if frame is not None:
            yield frame


def _parse(pkt: bytes, linktype: int, ts_ns: int) -> Optional[Frame]:
    vlans: List[int] = []
    if linktype == LINKTYPE_ETHERNET:
        if len(pkt) < 14:
            return None
        etype = struct.unpack_from("!H", pkt, 12)[0]
        p = 14
        while etype in (ETH_VLAN, ETH_QINQ) and p + 4 <= len(pkt):
            tci, etype = struct.unpack_from("!HH", pkt, p)
            vlans.append(tci & 0x0FFF)
            p += 4
    elif linktype == LINKTYPE_RAW:
        etype = ETH_IPV6 if pkt[:1] and pkt[0] >> 4 == 6 else ETH_IPV4
        p = 0
    else:
        return None
    if etype == ETH_IPV4:
        if p + 20 > len(pkt):
            return None
        ihl = (pkt[p] & 0x0F) * 4
        total = struct.unpack_from("!H", pkt, p + 2)[0]
        frag = struct.unpack_from("!H", pkt, p + 6)[0] & 0x1FFF
        proto = pkt[p + 9]
        src = ".".join(str(b) for b in pkt[p + 12:p + 16])
        dst = ".".join(str(b) for b in pkt[p + 16:p + 20])
        if frag:
            return None
        l4 = p + ihl
        ip_end = min(len(pkt), p + total) if total else len(pkt)
    elif etype == ETH_IPV6:
        if p + 40 > len(pkt):
            return None
        plen = struct.unpack_from("!H", pkt, p + 4)[0]
        proto = pkt[p + 6]
        src = pkt[p + 8:p + 24].hex()
        dst = pkt[p + 24:p + 40].hex()
        l4 = p + 40
        ip_end = min(len(pkt), l4 + plen)
    else:
        return None
    if proto == 17 and l4 + 8 <= ip_end:
        sport, dport, ulen = struct.unpack_from("!HHH", pkt, l4)
        end = min(ip_end, l4 + ulen) if ulen >= 8 else ip_end
        return Frame(ts_ns, "udp", src, dst, sport, dport, bytes(pkt[l4 + 8:end]), vlans)
    if proto == 6 and l4 + 20 <= ip_end:
        sport, dport = struct.unpack_from("!HH", pkt, l4)
        doff = (pkt[l4 + 12] >> 4) * 4
        return Frame(ts_ns, "tcp", src, dst, sport, dport, bytes(pkt[l4 + doff:ip_end]), vlans)
    return None


def payloads(path: Union[str, Path]) -> List[bytes]:
    """Every non-empty UDP/TCP payload of a capture, in file order."""
    return [f.payload for f in read_pcap(path) if f.payload]


def corpus_files(folder: str) -> List[Path]:
    return sorted((CORPUS / folder).rglob("*.pcap"))


def timed_feed(decoder, data: bytes, limit_s: float = 0.01):
    """Feed ``data``; assert it neither raises nor takes ``limit_s`` (re-timed once on a fresh
    decoder state to tell a scheduler hiccup on a shared core from a slow path)."""
    import time

    t0 = time.perf_counter()
    out = decoder.feed(data)
    if time.perf_counter() - t0 >= limit_s:
        t0 = time.perf_counter()
        decoder.feed(data)
        assert time.perf_counter() - t0 < limit_s, f"feeding {len(data)} bytes took too long"
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
