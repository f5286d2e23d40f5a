"""The C header and its Python mirror must agree byte for byte (compiler only, no root).

A tiny C program generated from the mirror prints sizeof/offsetof of every field and the value of
every enum constant; the header's own enum blocks are parsed too, so a constant added on either side
only is caught as well."""
import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hft_packetfilter import abi

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "include" / "hftpf_abi.h"


def _c_program() -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/types.h>", "#include <linux/bpf.h>", f'#include "{HEADER}"',
             "int main(void) {"]
    for cname, py in abi.C_STRUCTS.items():
        lines.append(f'printf("S {cname} %zu\\n", sizeof(struct {cname}));')
        for fname, _ in py._fields_:
            lines.append(f'printf("F {cname}.{fname} %zu %zu\\n", offsetof(struct {cname}, {fname}), '
                         f'sizeof(((struct {cname} *)0)->{fname}));')
    for cenum, (py, prefix) in abi.C_ENUMS.items():
        for member in py:
            lines.append(f'printf("E {prefix}{member.name} %d\\n", (int){prefix}{member.name});')
    for const in ("ABI_VERSION", "MAX_VENUES", "V4_MAPPED_PREFIX", "PORT_INDEX_SIZE", "VENUE_NAME_LEN",
                  "IFNAME_LEN", "ALLOW_MAX_PER_PREFIX", "FIRST_USER_RULE", "PORT_PROTECTED", "PTP_EVENT_PORT",
                  "PTP_GENERAL_PORT", "CFG_VENUE_TRIE", "CFG_ALLOW_TRIE", "HIST_BUCKETS", "CFG_KILL_FLOWS", "VENUE_PAYLOADS",
                  "STREAM_SLOTS"):
        lines.append(f'printf("C {const} %d\\n", (int)HFTPF_{const});')
    for m in ("META", "VENUE_HOSTS", "VENUE_HOST", "VENUE_PORTS", "VENUE_INFO", "VENUE_STATS", "VERDICT_STATS", "PKT_STATS",
              "CONFIG", "ALLOW_SRC", "ALLOW_HOST", "RULE_STATS", "DROP_STATS", "STREAMS", "STREAM_SLOTS", "RTT_PENDING", "RTT_HIST",
              "VENUE_TX", "PROBE_STATS", "AGENT_STATS", "EVENTS", "KILL", "KILL_FLOWS", "HALF_OPEN"):
        lines.append(f'printf("M MAP_{m} %s\\n", HFTPF_MAP_{m});')
    for prog in ("XDP", "XDP_OBSERVE", "TC"):
        lines.append(f'printf("M PROG_{prog} %s\\n", HFTPF_PROG_{prog});')
    lines += ["return 0;", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler (gcc) to check the ABI layout")
    d = tmp_path_factory.mktemp("abi")
    (d / "layout.c").write_text(_c_program())
    r = subprocess.run([cc, "-Wall", "-Werror", "-o", str(d / "layout"), str(d / "layout.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(d / "layout")], capture_output=True, text=True, check=True).stdout
    return [line.split(" ", 2) for line in out.splitlines()]


def test_struct_sizes_and_offsets(c_layout):
    for kind, name, rest in c_layout:
        if kind == "S":
            assert ctypes.sizeof(abi.C_STRUCTS[name]) == int(rest), f"sizeof(struct {name})"
        elif kind == "F":
            sname, fname = name.split(".")
            py = getattr(abi.C_STRUCTS[sname], fname)
            off, size = (int(x) for x in rest.split())
            assert (py.offset, py.size) == (off, size), f"struct {sname}.{fname}: C {off}/{size}, py {py.offset}/{py.size}"


def test_enum_values(c_layout):
    seen = 0
    for kind, name, rest in c_layout:
        if kind == "E":
            for cenum, (py, prefix) in abi.C_ENUMS.items():
                if name.startswith(prefix) and name[len(prefix):] in py.__members__:
                    assert int(py[name[len(prefix):]]) == int(rest), name
                    seen += 1
                    break
    assert seen == sum(len(py) for py, _ in abi.C_ENUMS.values())


def test_constants_and_map_names(c_layout):
    for kind, name, rest in c_layout:
        if kind == "C":
            assert getattr(abi, name) == int(rest), name
        elif kind == "M":
            assert getattr(abi, name) == rest, name


def test_header_enums_have_no_unmirrored_constants():
    text = HEADER.read_text()
    for cenum, (py, prefix) in abi.C_ENUMS.items():
        block = re.search(r"enum %s \{(.*?)\};" % cenum, text, re.S)
        assert block, f"enum {cenum} not found in the header"
        names = re.findall(r"\b(%s\w+)\s*=" % prefix, block.group(1))
        assert {n[len(prefix):] for n in names} == set(py.__members__), cenum


def test_lpm_key_v4_mapped():
    k = abi.lpm_key(__import__("ipaddress").ip_network("192.0.2.0/24"))
    assert k.prefixlen == 96 + 24
    assert bytes(k.addr) == bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 0])


def test_kernel_histogram_buckets_match_python(tmp_path):
    """The kernel's hist_bucket() (extracted verbatim from bpf/hftpf.bpf.c and compiled for the host)
    and analytics.percentiles.bucket_index() put every value in the same bucket."""
    from hft_packetfilter.analytics.percentiles import NUM_BUCKETS, bucket_index

    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler (gcc) to check the histogram layout")
    src = (HEADER.parents[1] / "hftpf.bpf.c").read_text()
    funcs = [re.search(r"static __always_inline __u32 %s\(__u64 v\)\n\{.*?\n\}" % name, src, re.S).group(0)
             for name in ("log2_u64", "hist_bucket")]
    values = sorted({0, 1, 63, 64, 65, 79, 80, 127, 128, 1000, 10**6, 10**9, 10**10, 2**63, 2**64 - 1,
                     *(int(1.37 ** k) for k in range(1, 140)), *(2 ** k for k in range(64)), *(2 ** k - 1 for k in range(1, 64))})
    prog = ["#include <stdio.h>", "#include <linux/types.h>", f"#define HFTPF_HIST_BUCKETS {abi.HIST_BUCKETS}",
            "#define __always_inline inline", *funcs, "int main(void) {",
            *(f'printf("%u\\n", hist_bucket({v}ULL));' for v in values), "return 0; }"]
    (tmp_path / "h.c").write_text("\n".join(prog))
    subprocess.run([cc, "-O1", "-o", str(tmp_path / "h"), str(tmp_path / "h.c")], check=True)
    got = [int(x) for x in subprocess.run([str(tmp_path / "h")], capture_output=True, text=True,
                                          check=True).stdout.split()]
    assert NUM_BUCKETS == abi.HIST_BUCKETS
    assert got == [min(bucket_index(v), NUM_BUCKETS - 1) for v in values]
