"""Preflight: can this host run the probe? Each check says what it found and, when it fails, what to do."""
from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

OK, WARN, FAIL = "ok", "warn", "fail"

# capability bit numbers (linux/capability.h)
CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39


def _item(name: str, state: str, detail: str, fix: str = "") -> Dict[str, str]:
    d = {"check": name, "state": state, "detail": detail}
    if fix:
        d["fix"] = fix
    return d


def _caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_kernel() -> Dict[str, str]:
    rel = platform.release()
    try:
        major, minor = (int(x) for x in rel.split(".")[:2])
    except ValueError:
        return _item("kernel", WARN, f"cannot parse kernel release {rel!r}")
    if (major, minor) < (5, 8):
        return _item("kernel", FAIL, f"Linux {rel}", "the probe needs Linux >= 5.8 (ring buffer, BPF_PROG_TEST_RUN "
                     "for XDP, LPM tries); use a newer kernel or the vagrant/ lab VM")
    return _item("kernel", OK, f"Linux {rel} ({platform.machine()})")


def check_caps() -> Dict[str, str]:
    caps = _caps()
    have_bpf = bool(caps & (1 << CAP_BPF)) or bool(caps & (1 << CAP_SYS_ADMIN))
    have_net = bool(caps & (1 << CAP_NET_ADMIN))
    if have_bpf and have_net:
        return _item("capabilities", OK, f"uid {os.geteuid()}, CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN present")
    return _item("capabilities", FAIL, f"uid {os.geteuid()} lacks "
                 + ", ".join(n for n, ok in (("CAP_BPF", have_bpf), ("CAP_NET_ADMIN", have_net)) if not ok),
                 "run as root (sudo hftpf-agent ...) or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON")


def check_btf() -> Dict[str, str]:
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        return _item("btf", OK, "/sys/kernel/btf/vmlinux present")
    return _item("btf", WARN, "no /sys/kernel/btf/vmlinux", "not needed by the BCC probe; CO-RE tools need "
                 "CONFIG_DEBUG_INFO_BTF=y")


def check_bpffs() -> Dict[str, str]:
    with open("/proc/self/mounts") as f:
        mounted = any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in f)
    if mounted:
        return _item("bpffs", OK, "bpffs mounted at /sys/fs/bpf")
    return _item("bpffs", FAIL, "/sys/fs/bpf is not a bpffs mount", "mount -t bpf bpf /sys/fs/bpf "
                 "(tools/setup-host.sh does it; add it to /etc/fstab to survive reboots)")


def check_headers() -> Dict[str, str]:
    build = Path(f"/lib/modules/{platform.release()}/build")
    if not build.exists():
        return _item("kernel headers", FAIL, f"{build} is missing", "install the distro's linux-headers package "
                     "and link it there: sudo tools/setup-host.sh")
    target = build.resolve()
    name = target.name.replace("linux-headers-", "")
    if platform.release() not in str(target):
        return _item("kernel headers", WARN, f"{build} -> {target} (headers {name}, kernel {platform.release()})",
                     "headers do not match the running kernel; fine for the probe, which includes only uapi headers")
    return _item("kernel headers", OK, f"{build} -> {target}")


def check_bcc() -> Dict[str, str]:
    try:
        import bcc  # noqa: F401
    except ImportError:
        return _item("bcc", FAIL, "the bcc module does not import",
                     "install python3-bpfcc and use a venv made with --system-site-packages (tools/setup-host.sh)")
    ver = getattr(bcc, "__version__", "?")
    return _item("bcc", OK, f"bcc {ver} from {os.path.dirname(bcc.__file__)}")


def check_compile(config=None) -> Dict[str, str]:
    from .loader import ProbeError, load_xdp, validate_maps

    t0 = time.monotonic()
    try:
        b, _, clock = load_xdp(config)
        validate_maps(b)
        b.cleanup()
    except ProbeError as e:
        return _item("probe compile+load", FAIL, str(e), "run tools/setup-host.sh; see the compiler message above")
    except Exception as e:
        return _item("probe compile+load", FAIL, f"{type(e).__name__}: {e}",
                     "the kernel verifier refused the program: report this with 'hftpf-agent check --json'")
    dt = time.monotonic() - t0
    return _item("probe compile+load", OK if dt < 3 else WARN, f"BCC compiled and the verifier loaded the "
                 f"XDP program in {dt:.2f} s; clock {'TAI' if clock else 'monotonic (no bpf_ktime_get_tai_ns)'}", "" if dt < 3 else "slow compile: are kernel-internal headers included?")


def check_tc() -> Dict[str, str]:
    if shutil.which("tc"):
        return _item("tc", OK, f"{shutil.which('tc')} (clsact for the egress program)")
    return _item("tc", WARN, "tc not found", "apt-get install iproute2")


def check_decoders() -> Dict[str, str]:
    """Which backend runs the decoders' hot loops (never a failure: the Python one is the reference)."""
    from .. import _accel

    if _accel.NATIVE is not None:
        return _item("decoder backend", OK, f"native (compiled {_accel.NATIVE.__name__})")
    why = _accel.reason()
    return _item("decoder backend", WARN, f"python: {why}",
                 "unset HFTPF_NO_NATIVE" if "HFTPF_NO_NATIVE" in why else
                 "for full speed: apt-get install gcc python3-dev, then pip install -e . again")


def check_iface_modes(ifname: str, netns: Optional[str] = None) -> Dict[str, str]:
    """Attach a trivial XDP program in each mode and remove it again; reports which modes work."""
    from .loader import MODE_FLAGS, XDP_FLAGS_UPDATE_IF_NOEXIST, ProbeError, in_netns, xdp_state

    try:
        from bcc import BPF
    except ImportError:
        return _item(f"xdp modes on {ifname}", FAIL, "bcc missing", "see the bcc check")
    try:
        with in_netns(netns):
            state = xdp_state(ifname)
            if state["prog_ids"]:
                return _item(f"xdp modes on {ifname}", WARN, f"an XDP program (id {state['prog_ids'][0]}) is "
                             "attached already; modes not probed", "detach it to probe the modes")
            b = BPF(text=b"int p(struct xdp_md *ctx) { return XDP_PASS; }")
            fn = b.load_func(b"p", BPF.XDP)
            ok = []
            errs = {}
            for mode, flag in MODE_FLAGS.items():
                try:
                    BPF.attach_xdp(ifname.encode(), fn, flag | XDP_FLAGS_UPDATE_IF_NOEXIST)
                    BPF.remove_xdp(ifname.encode(), flag)
                    ok.append(mode)
                except Exception as e:
                    errs[mode] = str(e)
            b.cleanup()
    except ProbeError as e:
        return _item(f"xdp modes on {ifname}", FAIL, str(e))
    if not ok:
        return _item(f"xdp modes on {ifname}", FAIL, "; ".join(f"{m}: {e}" for m, e in errs.items()),
                     "check the interface exists and is up")
    if "native" not in ok:
        return _item(f"xdp modes on {ifname}", WARN, "generic only (driver has no native XDP)",
                     "attach with --xdp-mode generic")
    return _item(f"xdp modes on {ifname}", OK, "supports " + " and ".join(ok))


def run_checks(ifname: Optional[str] = None, netns: Optional[str] = None, config=None) -> List[Dict[str, str]]:
    items = [check_kernel(), check_caps(), check_btf(), check_bpffs(), check_headers(), check_bcc(), check_tc(),
             check_decoders()]
    if all(i["state"] != FAIL for i in items if i["check"] in ("bcc", "kernel headers", "capabilities")):
        items.append(check_compile(config))
        if ifname:
            items.append(check_iface_modes(ifname, netns))
    else:
        items.append(_item("probe compile+load", FAIL, "skipped: fix the failures above first"))
    return items
