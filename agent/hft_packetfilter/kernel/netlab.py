"""Network-namespace labs (pyroute2): named namespaces joined by veth pairs, for the demo and tests.

Traffic in a lab stays inside namespaces the lab created. Addresses come from 198.18.0.0/15 (RFC 2544,
reserved for benchmarking), so nothing here can reach a real network. `Lab` is a context manager
that removes every namespace it made, also when the block fails.
"""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import socket
import subprocess
from typing import Iterator, List, Optional


@dataclasses.dataclass
class Link:
    ns_a: str
    if_a: str
    addr_a: str       # "198.18.0.1/24"
    ns_b: str
    if_b: str
    addr_b: str

    @property
    def ip_a(self) -> str:
        return str(ipaddress.ip_interface(self.addr_a).ip)

    @property
    def ip_b(self) -> str:
        return str(ipaddress.ip_interface(self.addr_b).ip)


class Lab:
    """Create namespaces and veth links; tear everything down on exit."""

    def __init__(self, namespaces: List[str], links: List[Link]):
        self.namespaces = list(namespaces)
        self.links = list(links)
        self._made: List[str] = []

    def __enter__(self) -> "Lab":
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        from pyroute2 import IPRoute, NetNS, netns

        existing = set(netns.listnetns())
        for ns in self.namespaces:
            if ns in existing:  # left over from a crashed run: start clean
                netns.remove(ns)
            netns.create(ns)
            self._made.append(ns)
        with IPRoute() as ip:
            for ln in self.links:
                for stale in (ln.if_a, ln.if_b):
                    for idx in ip.link_lookup(ifname=stale):
                        ip.link("del", index=idx)
                ip.link("add", ifname=ln.if_a, kind="veth", peer=ln.if_b)
                ip.link("set", index=ip.link_lookup(ifname=ln.if_a)[0], net_ns_fd=ln.ns_a)
                ip.link("set", index=ip.link_lookup(ifname=ln.if_b)[0], net_ns_fd=ln.ns_b)
        for ns in self.namespaces:
            with NetNS(ns) as n:
                n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")
        for ln in self.links:
            for ns, ifn, addr in ((ln.ns_a, ln.if_a, ln.addr_a), (ln.ns_b, ln.if_b, ln.addr_b)):
                iface = ipaddress.ip_interface(addr)
                with NetNS(ns) as n:
                    idx = n.link_lookup(ifname=ifn)[0]
                    n.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                    n.link("set", index=idx, state="up")
        # Static neighbours: no ARP round trip before the first packet, so counts are exact from packet 1.
        for ln in self.links:
            mac_a, mac_b = self.mac(ln.ns_a, ln.if_a), self.mac(ln.ns_b, ln.if_b)
            self._neigh(ln.ns_a, ln.if_a, ln.ip_b, mac_b)
            self._neigh(ln.ns_b, ln.if_b, ln.ip_a, mac_a)

    @staticmethod
    def mac(ns: str, ifname: str) -> str:
        from pyroute2 import NetNS

        with NetNS(ns) as n:
            return n.get_links(n.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS")

    @staticmethod
    def _neigh(ns: str, ifname: str, ip: str, mac: str) -> None:
        from pyroute2 import NetNS

        with NetNS(ns) as n:
            n.neigh("replace", dst=ip, lladdr=mac, ifindex=n.link_lookup(ifname=ifname)[0], state=0x80)

    def down(self) -> None:
        from pyroute2 import netns

        for ns in reversed(self._made):
            with contextlib.suppress(Exception):
                netns.remove(ns)
        self._made.clear()


@contextlib.contextmanager
def entered(ns: Optional[str]) -> Iterator[None]:
    """Switch this thread's network namespace for the block (filesystem and bpffs unchanged)."""
    if not ns:
        yield
        return
    from pyroute2 import netns

    netns.pushns(ns)
    try:
        yield
    finally:
        netns.popns()


def socket_in(ns: Optional[str], family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM,
              proto: int = 0) -> socket.socket:
    """A socket that lives in namespace ns (a socket keeps the namespace it was created in)."""
    with entered(ns):
        return socket.socket(family, type, proto)


def run_in(ns: str, argv: List[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)
