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


def _executor_cfg(tmp_path, port):
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
    return cfg


def test_our_client_against_quickfix_executor(executor, tmp_path):
    port = _free_port()
    cfg = _executor_cfg(tmp_path, port)
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


NS_X, NS_H = "hftpf-q-exch", "hftpf-q-host"
IF_X, IF_H = "hft-q-exch0", "hft-q-host0"
X_IP, H_IP = "198.18.11.1", "198.18.11.2"


def test_probe_counts_and_latencies_match_what_the_client_saw(executor, tmp_path, needs_kernel):
    """The executor in an exchange namespace, the probe attached on the host side of the veth, our
    client in the host namespace: the probe's decoded order count equals what the client sent and
    had acked, and its wire-level order-to-ack latencies sit below the client's (the kernel stamps
    the order later on the way out and the ack earlier on the way in than user space can), order
    statistic by order statistic."""
    import json
    import sys

    from hft_packetfilter.control import request
    from hft_packetfilter.kernel.netlab import Lab, Link, socket_in

    from _wire import teardown_agents

    port = 9878
    cfg = _executor_cfg(tmp_path, port)
    conf = tmp_path / "probe.yaml"
    conf.write_text(f"exchanges:\n  - {{name: QFX, host: {X_IP}, ports: [{port}], protocol: FIX/TCP}}\n")
    procs = []
    with Lab([NS_X, NS_H], [Link(NS_X, IF_X, f"{X_IP}/24", NS_H, IF_H, f"{H_IP}/24")]):
        try:
            log = open(tmp_path / "executor.log", "wb")
            ex = subprocess.Popen(["ip", "netns", "exec", NS_X, str(executor), str(cfg)], stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path)
            procs.append(ex)
            end = time.monotonic() + 10
            while True:                       # listening? (before the probe: this probe connection is not counted)
                s = socket_in(NS_H, socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(0.3)
                try:
                    s.connect((X_IP, port))
                    break
                except OSError:
                    assert time.monotonic() < end and ex.poll() is None, "the executor never listened"
                    time.sleep(0.1)
                finally:
                    s.close()
            agent = subprocess.Popen([sys.executable, "-m", "hft_packetfilter.cli", "attach", IF_H, "--netns", NS_H,
                                      "-c", str(conf), "-q", "--metrics-listen", "off"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(agent)
            sock = f"/run/hftpf/{NS_H}:{IF_H}.sock"
            end = time.monotonic() + 20
            while True:
                assert agent.poll() is None, agent.stderr.read()
                try:
                    if request(sock, "ping", timeout=0.5) == "pong":
                        break
                except (ConnectionError, OSError, ValueError):
                    assert time.monotonic() < end, "the agent never answered"
                    time.sleep(0.1)
            n = 150
            cl = FixClient((X_IP, port), netns=NS_H, sender_comp_id="HFTPF", target_comp_id="EXECUTOR", orders=n,
                           rate=300, heartbeat_s=5, drain_timeout=10)
            cl.run()
            st = cl.stats()
            assert st["error"] is None and st["acked"] == n and st["fills"] == n, st
            client_lat = sorted(cl.latencies_us("D"))
            assert len(client_lat) == n
            time.sleep(1.0)                   # the agent drains the last records
            snap = request(sock, "snapshot", timeout=5)["agent"]
        finally:
            teardown_agents(procs, IF_H, NS_H)
    orders = snap["orders"]["QFX"]
    assert (orders["orders"], orders["acks"], orders["fills"]) == (n, n, n), json.dumps(orders)
    probe = snap["latency"]["QFX"]["order_ack_us"]
    assert probe["count"] == n and probe["exact"], probe

    def pct(xs, p):                            # the same nearest-rank rule as analytics.percentiles
        import math
        return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]

    for k, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        assert 0 < probe[k] <= pct(client_lat, p), (k, probe[k], pct(client_lat, p))
    assert probe["min"] <= client_lat[0]
