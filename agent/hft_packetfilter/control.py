"""The running agent's local control API: a Unix socket (default /run/hftpf/<iface>.sock, mode
0660, owned by root and an optional group) answering one JSON request per line with one JSON reply.

Requests: {"cmd": "ping"}, {"cmd": "snapshot"} (the kernel status document plus what only the
agent knows: decoded order flow, latencies, ring-buffer drain counters). A malformed or unknown
request gets {"ok": false, "error": ...}; nothing a client sends can stop the agent. `status` and
`top` use it when an agent is running and say so when none is."""
from __future__ import annotations

import grp
import json
import os
import socket
import threading
from typing import Callable, Dict, Optional

MAX_REQUEST = 64 * 1024


def socket_path(key: str) -> str:
    from .kernel.runstate import RUN_DIR

    return os.path.join(RUN_DIR, key + ".sock")


class ControlServer:
    def __init__(self, path: str, handlers: Dict[str, Callable[[dict], object]], group: Optional[str] = None):
        self.path = path
        self.handlers = handlers
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o660)
        if group:
            os.chown(path, 0, grp.getgrnam(group).gr_gid)
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self._stop = threading.Event()
        self.served = 0
        self.errors = 0
        self.thread = threading.Thread(target=self._loop, name="hftpf-control", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            buf = b""
            try:
                while b"\n" not in buf and len(buf) < MAX_REQUEST:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                reply = self._answer(buf.split(b"\n", 1)[0])
                conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
            except (OSError, socket.timeout):
                self.errors += 1

    def _answer(self, line: bytes) -> dict:
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError("expected a JSON object with a string 'cmd'")
        except ValueError as e:
            self.errors += 1
            return {"ok": False, "error": f"malformed request: {e}"}
        fn = self.handlers.get(req["cmd"])
        if fn is None:
            self.errors += 1
            return {"ok": False, "error": f"unknown cmd {req['cmd']!r}; known: {sorted(self.handlers)}"}
        try:
            self.served += 1
            return {"ok": True, "result": fn(req)}
        except Exception as e:  # noqa: BLE001 - a failing handler answers, never kills the agent
            self.errors += 1
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, cmd: str, timeout: float = 2.0, **kw) -> dict:
    """One request to a running agent. Raises ConnectionError when no agent answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except (FileNotFoundError, ConnectionRefusedError, socket.timeout) as e:
        raise ConnectionError(f"no agent answers on {path}: {e}") from None
    finally:
        s.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise ConnectionError(reply.get("error", "agent error"))
    return reply["result"]
