"""What an attached probe was configured with, kept beside the pins' meta in /run/hftpf/<key>.json.

bpffs holds only maps and programs, so the config text and the rules-file path that `attach` used
live here. `allow` uses them to apply rule changes to a running (or orphaned, after kill -9) probe
with exactly the venue rules it was attached with; `detach` removes the file."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Optional

RUN_DIR = "/run/hftpf"


def path(key: str) -> str:
    return os.path.join(RUN_DIR, key + ".json")


def write(key: str, config_text: str, config_source: Optional[str], rules_file: Optional[str], pid: int) -> None:
    os.makedirs(RUN_DIR, mode=0o750, exist_ok=True)
    doc = {"config_text": config_text, "config_source": config_source, "rules_file": rules_file, "pid": pid}
    fd, tmp = tempfile.mkstemp(dir=RUN_DIR, prefix=".state.")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path(key))


def read(key: str) -> Optional[dict]:
    try:
        with open(path(key)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove(key: str) -> None:
    """Forget everything kept for this probe: state, kill-switch reasons, a stale control socket."""
    for p in (path(key), os.path.join(RUN_DIR, key + ".kill.json"), os.path.join(RUN_DIR, key + ".sock")):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
