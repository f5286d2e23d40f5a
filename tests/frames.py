"""Crafted Ethernet frames for BPF fixture tables and netns tests. Pure struct packing; checksums are
left zero (XDP runs before the stack validates them)."""
import ipaddress
import struct

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


def eth(ethertype: int, payload: bytes, vlans=()) -> bytes:
    """Ethernet II; vlans is a list of (tpid, vid) tags, outermost first."""
    hdr = DST_MAC + SRC_MAC
    for tpid, vid in vlans:
        hdr += struct.pack("!HH", tpid, vid)
    return hdr + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, options: bytes = b"", frag_off: int = 0, flags: int = 0) -> bytes:
    assert len(options) % 4 == 0
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, 0, total, 1, (flags << 13) | frag_off, 64, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return hdr + options + payload


def ipv6(src: str, dst: str, nexthdr: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nexthdr, 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + payload


def hop_by_hop(nexthdr: int, payload: bytes) -> bytes:
    # 8-byte hop-by-hop header: next header, hdr ext len 0, PadN option filling 6 bytes
    return struct.pack("!BB", nexthdr, 0) + bytes([1, 4, 0, 0, 0, 0]) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, payload: bytes = b"", flags: int = 0x18, options: bytes = b"", seq: int = 1, ack: int = 1) -> bytes:
    assert len(options) % 4 == 0
    doff = 5 + len(options) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, 65535, 0, 0) + options + payload


def udp4(src, dst, sport, dport, payload=b"", **kw) -> bytes:
    return eth(0x0800, ipv4(src, dst, 17, udp(sport, dport, payload), **kw))


def tcp4(src, dst, sport, dport, payload=b"", **kw) -> bytes:
    tk = {k: kw.pop(k) for k in ("flags", "options", "seq", "ack") if k in kw}
    return eth(0x0800, ipv4(src, dst, 6, tcp(sport, dport, payload, **tk), **kw))


def arp_request(sender="192.0.2.1", target="192.0.2.2") -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, SRC_MAC, ipaddress.IPv4Address(sender).packed,
                       b"\0" * 6, ipaddress.IPv4Address(target).packed)
    return eth(0x0806, body)


def moldudp64(session: bytes, seq: int, count: int, msgs=None) -> bytes:
    """MoldUDP64 downstream packet; count 0 = heartbeat, 0xFFFF = end of session."""
    body = b""
    if msgs is None and count not in (0, 0xFFFF):
        msgs = [b"S" + bytes(11)] * count
    for m in msgs or []:
        body += struct.pack("!H", len(m)) + m
    return session.ljust(10)[:10] + struct.pack("!QH", seq, count) + body


def mdp3(seq: int, sending_time_ns: int = 0) -> bytes:
    return struct.pack("<IQ", seq & 0xFFFFFFFF, sending_time_ns)


def pitch(unit: int, seq: int, count: int = 1) -> bytes:
    msgs = b"".join(bytes([6, 0x97, 0, 0, 0, 0]) for _ in range(count))  # unit-clear-like 6-byte messages
    return struct.pack("<HBBI", 8 + len(msgs), count, unit, seq) + msgs


def nyse_xdp(seq: int, count: int = 1, flag: int = 11, send_ns: int = 0) -> bytes:
    msgs = b"".join(struct.pack("<HH", 4, 2) for _ in range(count))
    return struct.pack("<HBBIII", 16 + len(msgs), flag, count, seq, send_ns // 1_000_000_000,
                       send_ns % 1_000_000_000) + msgs
