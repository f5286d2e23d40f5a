"""Interop with a FIX engine nobody here wrote: Debian's QuickFIX `executor` example (libquickfix-doc)
runs as a real acceptor on 127.0.0.1; our FixClient (sim/fix.py) logs on, sends a known number of
limit orders and logs out. The executor fills every order; we count its ExecutionReports both on
our side and in the executor's own outgoing log, and check its bytes with our FIX decoder.

Needs the executor binary and libquickfix17. When they are missing and we are root, one
`apt-get install -y libquickfix17 libquickfix-doc` is tried; otherwise the test skips with the reason.
"""
import gzip
import os
import shutil
import socket
import subprocess
import time

import pytest

from hft_packetfilter.protocols.fix import FixStreamDecoder
from hft_packetfilter.sim.fix import FixClient

PACKAGES = ["libquickfix17", "libquickfix-doc"]
_install_tried = []


def _executor_paths():
    r = subprocess.run(["dpkg", "-L", "libquickfix-doc"], capture_output=True, text=True)
    if r.returncode != 0:
        return []
    paths = [p for p in r.stdout.split() if "/executor/C++/" in p and os.path.basename(p) in ("executor", "executor.gz")]
    # the libtool build leaves the real binary under .libs/ and a wrapper script beside the sources
    return sorted(paths, key=lambda p: "/.libs/" not in p)


def _unpack(path, tmp):
    dst = tmp / "executor"
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as src, open(dst, "wb") as out:
            shutil.copyfileobj(src, out)
    else:
        shutil.copyfile(path, dst)
    if dst.read_bytes()[:4] != b"\x7fELF":
        return None
    dst.chmod(0o755)
    return dst


def _missing_libs(binary):
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    return [ln.split()[0] for ln in r.stdout.splitlines() if "not found" in ln]


def _try_install():
    if _install_tried or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    _install_tried.append(True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", *PACKAGES], capture_output=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def executor(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quickfix")
    for attempt in range(2):
        binary = None
        for p in _executor_paths():
            binary = _unpack(p, tmp)
            if binary is not None:
                break
        if binary is not None and not _missing_libs(binary):
            return binary
        if attempt == 0:
            _try_install()
    if binary is None:
        pytest.skip("QuickFIX executor not found (dpkg -L libquickfix-doc | grep executor); "
                    f"install {' '.join(PACKAGES)} (needs root; tried: {bool(_install_tried)})")
    pytest.skip(f"QuickFIX executor cannot run: missing {_missing_libs(binary)} (install libquickfix17)")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port, proc, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def test_our_client_against_quickfix_executor(executor, tmp_path):
    port = _free_port()
    cfg = tmp_path / "executor.cfg"
    cfg.write_text(f"""[DEFAULT]
ConnectionType=acceptor
SocketAcceptPort={port}
SocketReuseAddress=Y
FileStorePath={tmp_path / 'store'}
StartTime=00:00:00
EndTime=00:00:00
UseDataDictionary=N
ResetOnLogon=Y
ScreenLogShowIncoming=N
ScreenLogShowOutgoing=Y
ScreenLogShowEvents=Y

[SESSION]
BeginString=FIX.4.4
SenderCompID=EXECUTOR
TargetCompID=HFTPF
""")
    log = tmp_path / "executor.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(executor), str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        assert _wait_listening(port, proc), log.read_text(errors="replace")[-2000:]
        n = 97
        cl = FixClient(("127.0.0.1", port), sender_comp_id="HFTPF", target_comp_id="EXECUTOR", orders=n,
                       rate=2000, heartbeat_s=5, record=True, drain_timeout=10)
        cl.run()
        st = cl.stats()
        assert st["error"] is None, (st, log.read_text(errors="replace")[-2000:])
        assert st["logged_on"] and st["logged_out"]
        assert st["sent"]["D"] == n and st["acked"] == n and st["unanswered"] == 0
        # the executor fills every order at once: one ExecutionReport (150=F, 39=2) per order
        assert st["exec_reports"] == n and st["answers"] == {"F": n} and st["fills"] == n
        assert len(cl.latencies_us("D")) == n and all(x > 0 for x in cl.latencies_us("D"))
        assert st["seq_errors"] == 0 and st["decode_rejects"] == {}
        dec = FixStreamDecoder()
        back = dec.feed(bytes(cl.session.wire_in))
        assert dec.stats.rejected == 0 and all(m.checksum_ok for m in back)
        assert [m.msg_seq_num for m in back] == list(range(1, len(back) + 1))
        ers = [m for m in back if m.msg_type == "8"]
        assert len(ers) == n and {m.ord_status for m in ers} == {"2"}
        sent_ids = {a["cl_ord_id"] for a in cl.acks}
        assert {m.cl_ord_id for m in ers} == sent_ids
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    # the executor's own log: what it sent (outgoing messages) and that it saw our logon and logout
    text = log.read_bytes()
    assert text.count(b"\x0135=8\x01") == n
    assert b"Received logon request" in text and b"Received logout request" in text
