"""The audit trail written live under `attach` (root): order-entry messages seen on the wire with the
kernel's stamps, the kill-switch and allow-list changes made from the command line (sent through the
running agent, which records them), attach/detach and the clock-sync state; after a kill -9 of the
agent a change made directly on the pins still lands in the trail; `audit verify` passes and
`audit reconstruct` rebuilds the orders."""
import json
import os
import signal
import subprocess
import time

from test_live_orders_e2e import AGENT, EXCH_IP, HOST_IP, IF_RX, IF_TX, NS_RX, NS_TX, start_session

from _fixexch import fix


def _records(d):
    from hft_packetfilter.sinks import audit as A

    return list(A.iter_records(str(d)))


def test_attach_writes_the_trail_live_and_cli_changes_land_in_it(needs_kernel, tmp_path):
    from hft_packetfilter.kernel.netlab import Lab, Link
    from hft_packetfilter.sinks import audit as A

    from _wire import teardown_agents

    trail = tmp_path / "trail"
    key = tmp_path / "audit.key"
    rules_file = tmp_path / "allow.yaml"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"hft_analyzer: {{rules_file: {rules_file}}}\n"
                   f"exchanges:\n  - {{name: VENUE, host: {EXCH_IP}, ports: [9878], protocol: FIX/TCP}}\n"
                   f"compliance: {{audit_trail: true, audit_dir: {trail}, audit_key_file: {key}}}\n")
    with Lab([NS_TX, NS_RX], [Link(NS_TX, IF_TX, f"{EXCH_IP}/24", NS_RX, IF_RX, f"{HOST_IP}/24")]):
        procs = []
        try:
            agent, sock, c = start_session(procs, cfg, 200, "-i", "0.2", "--metrics-listen", "off")
            n = 7
            for i in range(1, n + 1):
                c.sendall(fix([(35, "D"), (49, "CLIENT"), (56, "VENUE"), (34, i), (11, f"AUD{i:04d}"),
                               (55, "ACME"), (54, 1), (38, 100), (40, 2), (44, "10.5")]))
                got = b""
                while got.count(b"\x0110=") < 2:
                    got += c.recv(65536)
            t_sent = time.time_ns()
            # controls from the command line go through the running agent, which records them
            r = subprocess.run([*AGENT, "kill-switch", "engage", "VENUE", "--reason", "audit test", "--json"],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            done = json.loads(r.stdout)
            assert len(done) == 1 and done[0]["via"] == f"agent pid {agent.pid}", done
            assert done[0]["audit"].startswith("record "), done
            r = subprocess.run([*AGENT, "allow", "add", "198.18.77.0/24", "--port", "9878", "--rules", str(rules_file),
                                "--comment", "audit test", "--json"], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            probes = json.loads(r.stdout)["probes"]
            assert probes == [{"interface": f"{NS_RX}:{IF_RX}", "via": f"agent pid {agent.pid}",
                               "audit": probes[0]["audit"]}] and probes[0]["audit"].startswith("record "), probes
            # while the agent runs, nobody else may write its trail
            with_writer = subprocess.run([*AGENT, "audit", "verify", str(trail), "--key", str(key)],
                                         capture_output=True, text=True)
            assert with_writer.returncode == 0, with_writer.stdout + with_writer.stderr
            time.sleep(0.6)   # the agent drains and decodes the last replies
            # kill -9: the probe stays pinned and keeps filtering; a release now goes to the pins directly
            agent.send_signal(signal.SIGKILL)
            agent.wait(5)
            r = subprocess.run([*AGENT, "kill-switch", "release", "VENUE", "--reason", "agent gone", "--json"],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            done = json.loads(r.stdout)
            assert done[0]["via"] == "pinned maps" and done[0]["audit"] == f"recorded in {trail}", done
            assert "no agent is running" in r.stderr
        finally:
            teardown_agents(procs, IF_RX, NS_RX)

    res = A.verify(str(trail), A.load_key(str(key)))
    assert res.ok, res.to_dict()
    recs = _records(trail)
    agent_actions = [r.body["action"] for r in recs if r.kind == A.AGENT]
    assert agent_actions[0] == "attach", agent_actions
    orders = [r for r in recs if r.kind == A.ORDER_ENTRY]
    sent = [r for r in orders if r.body["direction"] == "to_venue" and r.body["msg_type"] == "D"]
    acks = [r for r in orders if r.body["direction"] == "from_venue"]
    assert sorted(dict(map(tuple, r.body["fields"]))[11] for r in sent) == [f"AUD{i:04d}" for i in range(1, n + 1)]
    assert len(acks) >= 2 * n - 2, len(acks)     # acks and fills (the last replies may still be in flight)
    for r in orders:
        assert r.body["clock"] in ("kernel_tai", "kernel_mono")
        assert r.ts_tai_ns - r.ts_utc_ns == A.tai_minus_utc(r.ts_utc_ns)
        assert abs(r.ts_utc_ns - t_sent) < 30 * 10**9, (r.ts_utc_ns, t_sent)   # a real wall-clock time
        assert r.body["raw"].startswith(b"8=FIX")
    # order of events on the wire is order in the trail, and stamps do not go backwards per direction
    utc = [r.ts_utc_ns for r in sent]
    assert utc == sorted(utc)
    kill = [r.body for r in recs if r.kind == A.KILL_SWITCH]
    assert [(k["action"], k["reason"], k["venue"]) for k in kill] == [("engage", "audit test", "VENUE"),
                                                                      ("release", "agent gone", "VENUE")], kill
    allow = [r.body for r in recs if r.kind == A.ALLOWLIST]
    assert len(allow) == 1 and allow[0]["action"] == "add" and allow[0]["rule"]["src"] == "198.18.77.0/24", allow
    assert allow[0]["rules_sha256"] and allow[0]["interface"] == f"{NS_RX}:{IF_RX}"
    clock = [r.body for r in recs if r.kind == A.CLOCK_SYNC]
    assert clock and clock[0]["state"] in ("synced", "unsynced", "unknown"), clock
    # reconstruct the lifecycle of one order from the trail
    r = subprocess.run([*AGENT, "audit", "reconstruct", "--dir", str(trail), "--clordid", "AUD0003", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    life = json.loads(r.stdout)
    assert "AUD0003" in json.dumps(life) and os.path.isdir(trail)
