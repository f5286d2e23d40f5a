"""Compile, load, fill, pin, attach and detach the probe. The only module that imports bcc.

Life of a probe on interface IF (optionally inside named network namespace NS):
  compile (BCC, -D flags from config) -> fill venue maps from the config -> pin maps and program
  under /sys/fs/bpf/hftpf/<key>/ (key = IF, or NS:IF) -> write hftpf_meta -> attach XDP in the
  explicit mode asked for (never a silent fallback).
Detach reads everything it needs from the pins, so it also cleans up after a `kill -9`.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from .. import abi
from . import bpfsys

PIN_ROOT = "/sys/fs/bpf/hftpf"

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2

MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
MODE_ENUM = {"native": abi.AttachMode.NATIVE, "generic": abi.AttachMode.GENERIC}
MODE_NAME = {int(v): k for k, v in MODE_ENUM.items()}
FILTER_MODES = {"monitor": abi.Mode.MONITOR, "enforce": abi.Mode.ENFORCE, "dry-run": abi.Mode.DRY_RUN}
FILTER_MODE_NAME = {v: k for k, v in FILTER_MODES.items()}


class ProbeError(RuntimeError):
    """A failure the user can act on; str() says what happened and what to do."""


def bpf_dir() -> Path:
    """The C sources: shipped inside the package (a symlink to the repo's bpf/ in a checkout)."""
    return Path(__file__).resolve().parent.parent / "bpf"


def pin_key(ifname: str, netns: Optional[str] = None) -> str:
    return f"{netns}:{ifname}" if netns else ifname


def pin_dir(ifname: str, netns: Optional[str] = None) -> str:
    return os.path.join(PIN_ROOT, pin_key(ifname, netns))


def split_pin_key(key: str):
    netns, _, ifname = key.rpartition(":")
    return ifname, (netns or None)


@contextlib.contextmanager
def in_netns(netns: Optional[str]) -> Iterator[None]:
    """Run the block in a named network namespace (only the network namespace changes, so bpffs
    and the filesystem stay the caller's: pins made inside are the same pins)."""
    if not netns:
        yield
        return
    from pyroute2 import netns as pr_netns

    if netns not in pr_netns.listnetns():
        raise ProbeError(f"network namespace {netns!r} does not exist (ip netns list)")
    pr_netns.pushns(netns)
    try:
        yield
    finally:
        pr_netns.popns()


def ensure_bpffs() -> None:
    if not os.path.isdir("/sys/fs/bpf"):
        raise ProbeError("/sys/fs/bpf is missing: this kernel has no bpffs (CONFIG_BPF_SYSCALL?)")
    with open("/proc/self/mounts") as f:
        mounted = any(line.split()[1] == "/sys/fs/bpf" and line.split()[2] == "bpf" for line in f)
    if not mounted:
        r = subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], capture_output=True, text=True)
        if r.returncode != 0:
            raise ProbeError(f"bpffs is not mounted at /sys/fs/bpf and mounting failed: {r.stderr.strip()} "
                             "(run tools/setup-host.sh, or: mount -t bpf bpf /sys/fs/bpf)")


def ifindex_of(ifname: str) -> int:
    """ifindex in the caller's current network namespace (/sys/class/net would show the namespace
    sysfs was mounted in, not the one in_netns() switched to)."""
    import socket

    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise ProbeError(f"no interface named {ifname!r} in this network namespace (ip link show)") from None


def xdp_state(ifname: str, netns: Optional[str] = None) -> Dict[str, object]:
    """What XDP program (if any) is attached to ifname, as iproute2 reports it."""
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-j", "-d", "link", "show", "dev", ifname]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ProbeError(f"cannot read interface {ifname!r}: {r.stderr.strip()}")
    link = json.loads(r.stdout)[0]
    xdp = link.get("xdp") or {}
    ids = []
    if "prog" in xdp:
        ids.append(xdp["prog"].get("id"))
    for att in xdp.get("attached", []):
        if att.get("prog", {}).get("id") is not None:
            ids.append(att["prog"]["id"])
    return {"ifindex": link.get("ifindex"), "mode": xdp.get("mode"), "prog_ids": [i for i in ids if i]}


# ---------------------------------------------------------------------------------------------------
# compile

def cflags_for(config=None, extra: Optional[List[str]] = None, clock_tai: bool = True) -> List[str]:
    """-D flags from the config (features and sizes are flags, never text substitution)."""
    flags = [f"-I{bpf_dir()}", f"-I{bpf_dir() / 'include'}", f"-DHFTPF_USE_TAI={int(clock_tai)}"]
    if config is not None:
        n_prefixes = sum(len(e.hosts) for e in config.exchanges)
        # room for live growth without reloading, never below the compiled default
        flags.append(f"-DHFTPF_MAX_HOST_PREFIXES={max(4096, 2 * n_prefixes)}")
        flags += config.probe.cflags()
    flags += list(extra or [])
    return flags


def compile_probe(config=None, extra_cflags: Optional[List[str]] = None, clock_tai: bool = True):
    """Compile bpf/hftpf.bpf.c with BCC; returns the BPF object. Raises ProbeError with the compiler's
    message when it fails."""
    try:
        from bcc import BPF
    except ImportError:
        raise ProbeError("the bcc Python module is not importable: install python3-bpfcc and run the "
                         "agent from a venv made with --system-site-packages (tools/setup-host.sh does both)")
    src = bpf_dir() / "hftpf.bpf.c"
    try:
        return BPF(src_file=str(src).encode(), cflags=cflags_for(config, extra_cflags, clock_tai))
    except Exception as e:  # BCC raises bare Exception on compile/load failure
        raise ProbeError(f"compiling {src} failed: {e}. Run 'hftpf-agent check' to see whether kernel "
                         "headers and BCC are set up (tools/setup-host.sh)") from None


def load_xdp(config=None, extra_cflags: Optional[List[str]] = None):
    """Compile and load the probe's programs with the TAI clock, or with CLOCK_MONOTONIC on kernels
    whose verifier does not know bpf_ktime_get_tai_ns (< 6.1), and wire the XDP program's tail call to
    its observer. Returns (bpf, {program name: fn}, clock)."""
    from bcc import BPF

    last = None
    for tai in (True, False):
        b = compile_probe(config, extra_cflags, clock_tai=tai)
        try:
            fns = {abi.PROG_XDP: b.load_func(abi.PROG_XDP.encode(), BPF.XDP),
                   abi.PROG_XDP_OBSERVE: b.load_func(abi.PROG_XDP_OBSERVE.encode(), BPF.XDP),
                   abi.PROG_TC: b.load_func(abi.PROG_TC.encode(), BPF.SCHED_CLS)}
        except Exception as e:
            last = e
            b.cleanup()
            continue
        progs = b.get_table(abi.MAP_PROGS.encode())
        progs[ctypes.c_int(abi.TAIL_XDP_OBSERVE)] = ctypes.c_int(fns[abi.PROG_XDP_OBSERVE].fd)
        return b, fns, abi.Clock.TAI if tai else abi.Clock.MONO
    raise ProbeError(f"the kernel refused the probe's programs: {last}")


def validate_maps(b) -> None:
    """Refuse to start when a map is missing or its key/value size differs from the ABI mirror."""
    for name in abi.UNTYPED_MAPS:
        try:
            b.get_table(name.encode())
        except KeyError:
            raise ProbeError(f"the compiled probe has no map {name}: bpf/ and abi.py are out of step")
    for name, (ktype, vtype) in abi.MAP_TYPES.items():
        try:
            t = b.get_table(name.encode())
        except KeyError:
            raise ProbeError(f"the compiled probe has no map {name}: bpf/ and abi.py are out of step")
        leaf = getattr(t, "sLeaf", t.Leaf)  # per-CPU tables: Leaf is the per-CPU array of sLeaf
        ks, vs = ctypes.sizeof(t.Key), ctypes.sizeof(leaf)
        if (ks, vs) != (ctypes.sizeof(ktype), ctypes.sizeof(vtype)):
            raise ProbeError(f"map {name}: BCC sees key/value sizes {(ks, vs)} but abi.py says "
                             f"{(ctypes.sizeof(ktype), ctypes.sizeof(vtype))}")


# ---------------------------------------------------------------------------------------------------
# venue tables

# config protocol (canonical name) -> the feed header the kernel tracks sequences in
SEQ_PROTOS = {"ITCH/MoldUDP64": abi.SeqProto.MOLDUDP64, "MDP3/UDP": abi.SeqProto.MDP3,
              "PITCH/UDP": abi.SeqProto.PITCH, "XDP/UDP": abi.SeqProto.NYSE_XDP}


def venue_tables(exchanges) -> tuple:
    """From config exchanges to (host prefix -> mask, port index -> mask, id -> VenueInfo).

    A trie lookup returns only the longest matching prefix, so each prefix's mask also carries the
    bits of every configured prefix that contains it; then one lookup answers "which venues' hosts
    cover this address"."""
    if len(exchanges) > abi.MAX_VENUES:
        raise ProbeError(f"{len(exchanges)} exchanges configured; the probe supports at most {abi.MAX_VENUES}")
    own: Dict[object, int] = {}
    ports: Dict[int, int] = {}
    infos: Dict[int, abi.VenueInfo] = {}
    for i, ex in enumerate(exchanges, start=1):
        bit = 1 << (i - 1)
        transport = abi.Transport.UDP if ex.transport == "udp" else abi.Transport.TCP
        for net in ex.hosts:
            own[net] = own.get(net, 0) | bit
        for p in ex.ports:
            idx = abi.port_index(transport, p)
            ports[idx] = ports.get(idx, 0) | bit
        info = abi.VenueInfo()
        info.name = ex.name.encode()[: abi.VENUE_NAME_LEN - 1]
        info.transport = int(transport)
        info.stream_kind = int(abi.StreamKind.MARKET_DATA if ex.stream_kind == "market_data"
                               else abi.StreamKind.ORDER_ENTRY)
        info.latency_target_us = ex.latency_target_us or 0
        info.seq_proto = int(SEQ_PROTOS.get(ex.protocol, abi.SeqProto.NONE)) if ex.transport == "udp" else 0
        info.flags = abi.VENUE_PAYLOADS if (ex.payloads and ex.transport == "udp") else 0
        infos[i] = info
    hosts: Dict[object, int] = {}
    for net, mask in own.items():
        for other, omask in own.items():
            if other.version == net.version and other.prefixlen < net.prefixlen and net.subnet_of(other):
                mask |= omask
        hosts[net] = mask
    return hosts, ports, infos


def stream_slot_keys(exchanges) -> Dict[int, abi.StreamKey]:
    """UDP port index -> the one feed stream the kernel keeps in an array slot for that port (see
    HFTPF_STREAM_SLOTS): the port belongs to exactly one sequence-tracked venue with an exact host,
    and the stream is that venue's first exact host (its group), unit 0. Any other stream on the port
    (a B line, a PITCH unit) stays in the hash."""
    owners: Dict[int, List[int]] = {}
    for i, ex in enumerate(exchanges, start=1):
        if ex.transport == "udp":
            for p in set(ex.ports):
                owners.setdefault(p, []).append(i)
    out: Dict[int, abi.StreamKey] = {}
    for p, vids in sorted(owners.items()):
        ex = exchanges[vids[0] - 1]
        group = next((n for n in ex.hosts if n.prefixlen == n.max_prefixlen), None)
        if len(vids) != 1 or group is None or not SEQ_PROTOS.get(ex.protocol):
            continue
        key = abi.StreamKey(dport=p, venue=vids[0], unit=0)
        key.daddr[:] = list(abi.addr_bytes(group.network_address))
        out[abi.port_index(abi.Transport.UDP, p)] = key
    return out


# ---------------------------------------------------------------------------------------------------
# the probe

class Probe:
    """One compiled probe for one interface. Use attach()/detach(); safe to detach twice."""

    def __init__(self, config, ifname: str, mode: str = "native", netns: Optional[str] = None,
                 extra_cflags: Optional[List[str]] = None, rules=None, filter_mode: str = "monitor"):
        if mode not in MODE_FLAGS:
            raise ProbeError(f"unknown XDP mode {mode!r}: use native or generic")
        if config is None:
            from .. import config as cfg

            config = cfg.default()
        self.config, self.ifname, self.mode, self.netns = config, ifname, mode, netns
        self.extra_cflags = extra_cflags
        self.rules = rules
        self.filter_mode = FILTER_MODES[filter_mode]
        self.bpf = None
        self.fn = None
        self.maps = None
        self.clock = abi.Clock.MONO
        self.attached = False
        self.pin_dir = pin_dir(ifname, netns)
        self.compile_s = 0.0

    # -- load -----------------------------------------------------------------------------------------
    def load(self) -> None:
        """Compile, load, and fill every map (venues, allow-list, mode) before anything is attached,
        so the first packet the program sees is already judged by the configured rules."""
        from .probemaps import ProbeMaps

        t0 = time.monotonic()
        self.bpf, self.fns, self.clock = load_xdp(self.config, self.extra_cflags)
        self.fn = self.fns[abi.PROG_XDP]
        validate_maps(self.bpf)
        self.compile_s = time.monotonic() - t0
        self.maps = ProbeMaps.from_bpf(self.bpf)
        self.maps.apply(self.config.exchanges, self.rules, self.config.probe.max_rules, fresh=True,
                        clock=self.clock)
        self.maps.set_mode(self.filter_mode)
        self.maps.refresh_clock_offset()

    def table(self, name: str):
        return self.bpf.get_table(name.encode())

    def test_run(self, frame: bytes, repeat: int = 1) -> Dict[str, object]:
        """BPF_PROG_TEST_RUN of the loaded XDP program on one frame."""
        return bpfsys.prog_test_run(self.fn.fd, frame, repeat=repeat)

    # -- attach ---------------------------------------------------------------------------------------
    def attach(self) -> None:
        if self.bpf is None:
            self.load()
        ensure_bpffs()
        if os.path.exists(self.pin_dir):
            live = pinned_status_alive(self.ifname, self.netns)
            if live:
                raise ProbeError(f"{pin_key(self.ifname, self.netns)} already has an hftpf probe attached "
                                 f"(pins in {self.pin_dir}); run 'hftpf-agent detach {self.ifname}' first")
            shutil.rmtree(self.pin_dir)  # stale pins of a probe that is no longer attached
        from bcc import BPF

        with in_netns(self.netns):
            ifindex = ifindex_of(self.ifname)
            state = xdp_state(self.ifname)
            if state["prog_ids"]:
                raise ProbeError(f"{self.ifname} already has an XDP program (id {state['prog_ids'][0]}) that is "
                                 f"not ours; remove it first (ip link set dev {self.ifname} xdp off)")
            # Pin first: from the moment the program sees a packet, status/detach can find it.
            try:
                self._pin(ifindex)
            except Exception:
                shutil.rmtree(self.pin_dir, ignore_errors=True)
                raise
            flags = MODE_FLAGS[self.mode] | XDP_FLAGS_UPDATE_IF_NOEXIST
            try:
                BPF.attach_xdp(self.ifname.encode(), self.fn, flags)
            except Exception as e:
                shutil.rmtree(self.pin_dir, ignore_errors=True)
                raise ProbeError(_attach_error(self.ifname, self.mode, str(e))) from None
        self.attached = True
        try:
            with in_netns(self.netns):
                tc_flags = attach_tc(self.ifname, self.fns[abi.PROG_TC].fd)
        except Exception:
            self.detach()
            raise
        meta = self.maps.meta()
        meta.flags = tc_flags
        self.maps.write_meta(meta)

    def _pin(self, ifindex: int) -> None:
        os.makedirs(self.pin_dir, exist_ok=True)
        self.maps.lock_path = self.pin_dir      # other processes can write the config from now on
        for name in abi.PINNED_MAPS:
            bpfsys.obj_pin(self.table(name).map_fd, os.path.join(self.pin_dir, name))
        for name in abi.PINNED_PROGS:
            bpfsys.obj_pin(self.fns[name].fd, os.path.join(self.pin_dir, name))
        meta = abi.Meta(abi_version=abi.ABI_VERSION, attach_mode=int(MODE_ENUM[self.mode]), ifindex=ifindex,
                        agent_pid=os.getpid(), attach_time_ns=time.time_ns(), nvenues=len(self.config.exchanges),
                        max_rules=self.config.probe.max_rules, clock=int(self.clock))
        meta.ifname = self.ifname.encode()
        meta.netns = (self.netns or "").encode()
        self.maps.write_meta(meta)

    def detach(self) -> None:
        if self.attached:
            detach_interface(self.ifname, self.netns)
            self.attached = False
        if self.maps is not None:
            self.maps.close()
            self.maps = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


TC_PRIO = 0xC0DE  # our filter's priority on the clsact egress hook, so detach removes only ours


def attach_tc(ifname: str, fd: int) -> int:
    """Attach the egress program as a direct-action clsact filter (in the current netns). Returns
    hftpf_meta flags saying what was done, so detach undoes exactly that."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    flags = 0
    with IPRoute() as ip:
        idx = ifindex_of(ifname)
        try:
            ip.tc("add", "clsact", idx)
            flags |= abi.META_TC_CLSACT_OURS
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise ProbeError(f"cannot add a clsact qdisc to {ifname}: {e}") from None
        try:
            ip.tc("add-filter", "bpf", idx, ":1", fd=fd, name=abi.PROG_TC, parent="ffff:fff3", classid=1,
                  direct_action=True, prio=TC_PRIO)
        except NetlinkError as e:
            if flags & abi.META_TC_CLSACT_OURS:
                ip.tc("del", "clsact", idx)
            raise ProbeError(f"cannot attach the TC egress program to {ifname}: {e}") from None
    return flags | abi.META_TC_ATTACHED


def detach_tc(ifname: str, flags: int) -> None:
    """Remove our egress filter (and the clsact qdisc when we created it and nothing else uses it)."""
    if not flags & abi.META_TC_ATTACHED:
        return
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ip:
        try:
            idx = ifindex_of(ifname)
        except ProbeError:
            return  # the interface is gone, and its qdiscs with it
        with contextlib.suppress(NetlinkError):
            ip.tc("del-filter", "bpf", idx, ":1", parent="ffff:fff3", prio=TC_PRIO)
        if flags & abi.META_TC_CLSACT_OURS:
            others = subprocess.run(["tc", "filter", "show", "dev", ifname, "egress"], capture_output=True,
                                    text=True).stdout.strip() or subprocess.run(
                ["tc", "filter", "show", "dev", ifname, "ingress"], capture_output=True, text=True).stdout.strip()
            if not others:
                with contextlib.suppress(NetlinkError):
                    ip.tc("del", "clsact", idx)


def _attach_error(ifname: str, mode: str, err: str) -> str:
    err = err.rpartition(": ")[2] or err  # BCC: "Failed to attach BPF to device b'eth0': <strerror>"
    low = err.lower()
    if mode == "native" and ("not supported" in low or "invalid argument" in low):
        return (f"native XDP is not supported on {ifname} ({err}); its driver has no XDP support. "
                f"Re-run with --xdp-mode generic (works on every interface, costs more per packet); "
                f"hftpf never falls back on its own")
    if "busy" in low or "exists" in low:
        return f"{ifname} already has an XDP program attached ({err}); detach it first"
    if "no such device" in low:
        return f"no interface named {ifname!r} ({err})"
    if "operation not permitted" in low:
        return f"not permitted to attach XDP to {ifname} ({err}): run as root (CAP_NET_ADMIN + CAP_BPF)"
    return f"attaching XDP ({mode}) to {ifname} failed: {err}"


# ---------------------------------------------------------------------------------------------------
# pins: status and detach without the agent

def read_meta(pdir: str) -> Optional[abi.Meta]:
    path = os.path.join(pdir, abi.MAP_META)
    if not os.path.exists(path):
        return None
    with bpfsys.Map.pinned(path, *abi.MAP_TYPES[abi.MAP_META]) as m:
        return m.lookup(0)


def pinned_prog_id(pdir: str) -> Optional[int]:
    path = os.path.join(pdir, abi.PROG_XDP)
    if not os.path.exists(path):
        return None
    fd = bpfsys.obj_get(path)
    try:
        return bpfsys.prog_info(fd).id
    finally:
        os.close(fd)


def pinned_status_alive(ifname: str, netns: Optional[str]) -> bool:
    """True when the pinned program is the one attached to the interface right now."""
    pdir = pin_dir(ifname, netns)
    try:
        pid = pinned_prog_id(pdir)
        return pid is not None and pid in xdp_state(ifname, netns)["prog_ids"]
    except (ProbeError, OSError):
        return False


def list_pinned() -> List[str]:
    if not os.path.isdir(PIN_ROOT):
        return []
    return sorted(d for d in os.listdir(PIN_ROOT) if os.path.isdir(os.path.join(PIN_ROOT, d)))


def agent_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"hftpf" in cmd or b"hft_packetfilter" in cmd


def detach_interface(ifname: str, netns: Optional[str] = None, wait_agent_s: float = 5.0) -> Dict[str, object]:
    """Remove our XDP program from the interface and delete the pins. Works after kill -9.

    A running agent for the interface is asked to stop (SIGTERM) first, so it does not keep
    writing to maps that are going away."""
    pdir = pin_dir(ifname, netns)
    report: Dict[str, object] = {"interface": pin_key(ifname, netns), "removed_xdp": False,
                                 "removed_pins": False, "stopped_agent": None}
    if not os.path.isdir(pdir):
        raise ProbeError(f"no hftpf probe is pinned for {pin_key(ifname, netns)} (nothing in {pdir})")
    meta = read_meta(pdir)
    our_id = pinned_prog_id(pdir)
    if meta is not None and meta.agent_pid != os.getpid() and agent_alive(meta.agent_pid):
        os.kill(meta.agent_pid, 15)
        report["stopped_agent"] = meta.agent_pid
        deadline = time.monotonic() + wait_agent_s
        while time.monotonic() < deadline and agent_alive(meta.agent_pid):
            time.sleep(0.05)
        if not os.path.isdir(pdir):  # the agent cleaned up itself
            report.update(removed_xdp=True, removed_pins=True)
            return report
        if agent_alive(meta.agent_pid):
            raise ProbeError(f"the agent (pid {meta.agent_pid}) did not stop within {wait_agent_s:.0f} s; "
                             f"try again or kill it")
    try:
        state = xdp_state(ifname, netns)
    except ProbeError:
        state = {"prog_ids": []}  # the interface is gone (e.g. its namespace was deleted)
    if meta is not None:
        with in_netns(netns):
            detach_tc(ifname, meta.flags)
    if our_id is not None and our_id in state["prog_ids"]:
        mode = MODE_NAME.get(meta.attach_mode if meta else 0, "native")
        from bcc import BPF

        with in_netns(netns):
            try:
                BPF.remove_xdp(ifname.encode(), MODE_FLAGS[mode])
            except Exception as e:
                raise ProbeError(f"removing the XDP program from {ifname} failed: {e}") from None
        report["removed_xdp"] = True
    shutil.rmtree(pdir, ignore_errors=False)
    report["removed_pins"] = True
    from . import runstate

    runstate.remove(pin_key(ifname, netns))
    with contextlib.suppress(OSError):
        os.rmdir(PIN_ROOT)  # only when empty
    return report


def adopt(config, ifname: str, netns: Optional[str], rules, filter_mode: str):
    """Take over an orphaned probe (pinned and attached, its agent gone) without detaching it, so an
    enforcing allow-list never has an unfiltered window across an agent restart. The config and
    rules are re-applied to the live maps and the meta records the new agent. Returns ProbeMaps."""
    from .probemaps import ProbeMaps

    pdir = pin_dir(ifname, netns)
    maps = ProbeMaps.from_pins(pdir)
    try:
        meta = maps.meta()
        if meta.abi_version != abi.ABI_VERSION:
            raise ProbeError(f"the pinned probe speaks ABI {meta.abi_version}, this agent {abi.ABI_VERSION}: "
                             f"detach it first (hftpf-agent detach {ifname})")
        maps.apply(config.exchanges, rules, meta.max_rules)
        maps.set_mode(FILTER_MODES[filter_mode])
        meta.agent_pid = os.getpid()
        meta.nvenues = len(config.exchanges)
        maps.write_meta(meta)
    except BaseException:
        maps.close()
        raise
    return maps
