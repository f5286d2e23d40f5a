"""Which backend runs the hot loops: the optional compiled module ``hft_packetfilter._native`` or the
pure-Python code (always the reference; the tests compare the two on the same input).

The compiled module is built by ``pip install`` when a C compiler and the Python headers are there
(setup.py, ``optional=True``) and skipped otherwise. ``HFTPF_NO_NATIVE=1`` turns it off at import time,
so a run can be checked against the reference without rebuilding. Decoders read :data:`NATIVE` when
they are constructed; ``backend()`` names what is active and ``reason()`` says why when it is not.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Optional, Tuple


#: what the Python code uses from the compiled module (checked at import; "Type.method" for methods
#: added to a type after it first shipped)
REQUIRED = ("ItchCore", "ItchField", "ItchBookCore", "ItchBookCore.apply_buffer", "FixCore", "FrameCore",
            "split_pcap", "MoldLane")


def _has(module: ModuleType, dotted: str) -> bool:
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def _load() -> Tuple[Optional[ModuleType], str]:
    if os.environ.get("HFTPF_NO_NATIVE", "").strip() not in ("", "0"):
        return None, "disabled by HFTPF_NO_NATIVE"
    try:
        from . import _native  # type: ignore[attr-defined]
    except ImportError as e:
        return None, f"compiled module not built ({e}); reinstall with a C compiler and python3-dev"
    missing = [name for name in REQUIRED if not _has(_native, name)]
    if missing:     # a .so built from older sources than this Python code: never half-use it
        return None, (f"compiled module is stale (no {', '.join(missing)}); rebuild it: "
                      f"pip install -e . (or tools/setup-host.sh)")
    return _native, ""


NATIVE, _WHY = _load()


def backend() -> str:
    """``"native"`` when the compiled hot loops are active, else ``"python"``."""
    return "native" if NATIVE is not None else "python"


def reason() -> str:
    """Why the pure-Python backend is active ("" when the native one is)."""
    return _WHY
