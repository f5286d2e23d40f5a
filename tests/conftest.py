"""Shared test setup.

Levels (see ../shared/STYLE.md): unit/ needs nothing; bpf/ and netns/ need root, BCC and a BPF-capable
kernel. Those skip with a reason when the host cannot run them, except under --require-kernel (the
README's test command and CI use it), where a would-be skip is a failure: CI must never pass by
skipping the kernel tests.
"""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def pytest_addoption(parser):
    parser.addoption("--require-kernel", action="store_true",
                     help="fail (not skip) the root/BPF tests when this host cannot run them")


def kernel_unavailable_reason():
    if os.geteuid() != 0:
        return "needs root (CAP_BPF + CAP_NET_ADMIN) to load BPF programs"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "the bcc module is not importable (python3-bpfcc; venv with --system-site-packages)"
    if not os.path.exists(f"/lib/modules/{os.uname().release}/build"):
        return "no kernel headers at /lib/modules/$(uname -r)/build (run tools/setup-host.sh)"
    return None


@pytest.fixture(scope="session")
def needs_kernel(request):
    reason = kernel_unavailable_reason()
    if reason:
        if request.config.getoption("--require-kernel"):
            pytest.fail(f"--require-kernel given but the kernel tests cannot run: {reason}")
        pytest.skip(reason)
