"""Capture helpers for tests: thin wrappers over the package's reader (sources/pcap.py) and
parser (sources/packet.py), plus frame and pcap *writers*.

``read_packets`` yields IPv4 UDP/TCP packets of Ethernet captures (VLAN tags peeled, the first one
reported). The IPv4 total length bounds the payload, so capture-device trailers after the IP packet
(the OMI OUCH captures carry 16 such bytes) never leak into it.
"""
from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Iterator, List, Optional, Union

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

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
    """(ts_ns, linktype, frame bytes) for every record of a capture (pcap or pcapng); a file that
    is not a capture raises ValueError."""
    from hft_packetfilter.sources.pcap import open_capture

    with open_capture(path) as reader:
        yield from reader


def _packet(ev) -> Optional[Packet]:
    if ev is None or ev.family != 4:
        return None
    tcp = ev.transport == "tcp"
    return Packet(ev.ts_ns, ev.transport, ".".join(map(str, ev.src)), ".".join(map(str, ev.dst)),
                  ev.sport, ev.dport, ev.payload, ev.vlans[0] if ev.vlans else None,
                  ev.tcp_seq if tcp else None)


def parse_frame(ts_ns: int, frame: bytes) -> Optional[Packet]:
    """The UDP/TCP payload of an Ethernet frame (IPv4), or None for anything else."""
    from hft_packetfilter.sources.packet import parse

    return _packet(parse(frame, LINKTYPE_ETHERNET, ts_ns))


def read_packets(path: Union[str, Path]) -> List[Packet]:
    from hft_packetfilter.sources.packet import parse

    out = []
    for ts, linktype, frame in read_frames(path):
        if linktype != LINKTYPE_ETHERNET:
            continue
        p = _packet(parse(frame, linktype, ts))
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
