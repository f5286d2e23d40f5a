"""Only the optional C extension lives here; everything else is in pyproject.toml.

``optional=True``: where no C compiler or Python headers exist, pip still installs the package and the
pure-Python decoders run (hft_packetfilter._accel reports which backend is active)."""
from pathlib import Path

from setuptools import Extension, setup

_SRC = Path("agent/hft_packetfilter/native")

setup(ext_modules=[Extension(
    "hft_packetfilter._native",
    sources=[str(_SRC / name) for name in ("module.c", "itch.c", "book.c", "fix.c", "frame.c", "access.c", "lane.c")],
    depends=[str(_SRC / "hftpf_native.h")],
    extra_compile_args=["-O2", "-fno-strict-aliasing"],
    optional=True,
)])
