"""A small classic-pcap reader for tests: usec and nsec magic (either byte order), Ethernet with
802.1Q / 802.1ad VLAN tags, IPv4, UDP and TCP payload extraction.

The IPv4 total length bounds the payload, so capture-device trailers after the IP packet (the OMI
OUCH captures carry 16 such bytes) never leak into it.
"""
from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Iterator, List, Optional, Union

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),   # usec, little-endian
    b"\xa1\xb2\xc3\xd4": (">", 1000),   # usec, big-endian
    b"\x4d\x3c\xb2\xa1": ("<", 1),      # nsec, little-endian
    b"\xa1\xb2\x3c\x4d": (">", 1),      # nsec, big-endian
}
LINKTYPE_ETHERNET = 1


@dataclasses.dataclass
class Packet:
    ts_ns: int
    proto: str            # "udp" or "tcp"
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    vlan: Optional[int] = None
    tcp_seq: Optional[int] = None


def read_frames(path: Union[str, Path]) -> Iterator[tuple]:
    """(ts_ns, linktype, frame bytes) for every record of a classic pcap file."""
    data = Path(path).read_bytes()
    if len(data) < 24 or data[:4] not in _MAGIC:
        raise ValueError(f"{path}: not a classic pcap file")
    endian, mult = _MAGIC[data[:4]]
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    rec = struct.Struct(endian + "IIII")
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += 16
        frame = data[off:off + incl]
        off += incl
        yield sec * 1_000_000_000 + frac * mult, linktype, frame


def parse_frame(ts_ns: int, frame: bytes) -> Optional[Packet]:
    """The UDP/TCP payload of an Ethernet frame, or None for anything else."""
    if len(frame) < 14:
        return None
    etype = struct.unpack_from(">H", frame, 12)[0]
    off = 14
    vlan = None
    while etype in (0x8100, 0x88A8) and off + 4 <= len(frame):
        tci, etype = struct.unpack_from(">HH", frame, off)
        if vlan is None:
            vlan = tci & 0x0FFF
        off += 4
    if etype != 0x0800 or off + 20 > len(frame):
        return None
    vihl = frame[off]
    ihl = (vihl & 0x0F) * 4
    total = struct.unpack_from(">H", frame, off + 2)[0]
    proto = frame[off + 9]
    src = ".".join(str(b) for b in frame[off + 12:off + 16])
    dst = ".".join(str(b) for b in frame[off + 16:off + 20])
    ip_end = min(off + total, len(frame)) if total else len(frame)
    l4 = off + ihl
    if proto == 17 and l4 + 8 <= ip_end:
        sport, dport, ulen = struct.unpack_from(">HHH", frame, l4)
        end = min(l4 + ulen, ip_end) if ulen >= 8 else ip_end
        return Packet(ts_ns, "udp", src, dst, sport, dport, frame[l4 + 8:end], vlan)
    if proto == 6 and l4 + 20 <= ip_end:
        sport, dport, seq = struct.unpack_from(">HHI", frame, l4)
        doff = (frame[l4 + 12] >> 4) * 4
        return Packet(ts_ns, "tcp", src, dst, sport, dport, frame[l4 + doff:ip_end], vlan, seq)
    return None


def read_packets(path: Union[str, Path]) -> List[Packet]:
    out = []
    for ts, linktype, frame in read_frames(path):
        if linktype != LINKTYPE_ETHERNET:
            continue
        p = parse_frame(ts, frame)
        if p is not None:
            out.append(p)
    return out


def write_pcap(path: Union[str, Path], frames: List[bytes], nsec: bool = False) -> None:
    """Write Ethernet frames to a classic pcap (tests that hand a capture to tshark)."""
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    parts = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
    for i, f in enumerate(frames):
        parts.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(f), len(f)))
        parts.append(f)
    Path(path).write_bytes(b"".join(parts))


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f">{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def build_frame(proto: str, payload: bytes, sport: int, dport: int, src="10.0.0.1", dst="10.0.0.2",
                tcp_seq: int = 1) -> bytes:
    """An Ethernet/IPv4/UDP-or-TCP frame around ``payload`` (valid IP checksum, zero L4 checksum)."""
    s = bytes(int(x) for x in src.split("."))
    d = bytes(int(x) for x in dst.split("."))
    if proto == "udp":
        l4 = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
        p = 17
    else:
        l4 = struct.pack(">HHIIBBHHH", sport, dport, tcp_seq, 1, 5 << 4, 0x18, 65535, 0, 0) + payload
        p = 6
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, p, 0, s, d)
    ip = ip[:10] + struct.pack(">H", _csum(ip)) + ip[12:]
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + ip + l4
