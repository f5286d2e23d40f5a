"""Raw frames on veth ends inside test namespaces: exact packet counts with any source address.

An AF_PACKET socket on the sender's veth injects crafted frames; an AF_PACKET socket on the
receiver's veth counts what got past XDP (packet taps run after XDP, so a dropped frame is never
seen there)."""
import select
import socket
import time

from hft_packetfilter.kernel.netlab import entered

ETH_P_ALL = 0x0003


def raw_socket(ns: str, ifname: str) -> socket.socket:
    with entered(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((ifname, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    return s


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def with_macs(frame: bytes, dst_mac: bytes, src_mac: bytes) -> bytes:
    return dst_mac + src_mac + frame[12:]


class Counter:
    """Counts received frames by a key function over the raw frame, until told to stop."""

    def __init__(self, sock: socket.socket, key):
        self.sock, self.key = sock, key
        self.counts = {}

    def drain(self, quiet_s: float = 0.3, max_s: float = 5.0) -> dict:
        """Read until nothing arrived for quiet_s (bounded by max_s)."""
        deadline = time.monotonic() + max_s
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
            r, _, _ = select.select([self.sock], [], [], 0.05)
            if not r:
                continue
            while True:
                try:
                    data, addr = self.sock.recvfrom(65535, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                k = self.key(data)
                if k is not None:
                    self.counts[k] = self.counts.get(k, 0) + 1
                last = time.monotonic()
        return self.counts


def teardown_agents(procs, ifname: str, netns: str) -> None:
    """Kill agents a test started and remove a probe it left pinned (also after a failure)."""
    import os

    from hft_packetfilter.kernel.loader import ProbeError, detach_interface, pin_dir

    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    if os.path.isdir(pin_dir(ifname, netns)):
        try:
            detach_interface(ifname, netns)
        except ProbeError:
            pass
