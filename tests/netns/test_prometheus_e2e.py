"""The exporter against the real demo lab and a real Prometheus (root).

`hftpf-agent demo` runs in a subprocess; the exporter runs here, over the demo's pins (the CLI flag
is not wired yet); Debian's `prometheus` scrapes it every second with configs/prometheus/prometheus.yml
(target rewritten to the exporter's port) and loads configs/prometheus/hftpf-rules.yml. Then every
PromQL expression of the dashboards and rules is evaluated through /api/v1/query: each must parse
and return data. A rule `SIGNAL OP THRESHOLD` is evaluated as `SIGNAL OP bool THRESHOLD`, which
returns a 0/1 series wherever the signal has data (an alert that does not fire returns nothing).
The kill-switch rule only has to parse. Finally: a listener on 127.0.0.1 is not reachable from
another network namespace."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KEY = "hftpf-demo-host:hfd-host0"
PIN = f"/sys/fs/bpf/hftpf/{KEY}"
NS_EXCH, NS_HOST, HOST_IP = "hftpf-demo-exch", "hftpf-demo-host", "198.18.0.2"
PARSE_ONLY = {"HftpfKillSwitchEngaged"}
_CMP = re.compile(r"\s(>=|<=|==|!=|>|<)\s")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred, timeout, what, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _query(base, expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def as_bool(expr):
    """`A > B` -> `A > bool B`, on the last comparison outside parentheses and braces."""
    depth, last = 0, None
    for i, ch in enumerate(expr):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            m = _CMP.match(expr, i)
            if m:
                last = m
    if last is None:
        return expr
    return expr[:last.end(1)] + " bool" + expr[last.end(1):]


def dashboard_exprs():
    out = []
    for f in sorted((ROOT / "configs/grafana/dashboards").glob("*.json")):
        d = json.loads(f.read_text())
        for p in d["panels"]:
            for t in p.get("targets", []):
                out.append((f"{f.name}: {p['title']}", t["expr"]))
        for v in d["templating"]["list"]:
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)      # Grafana's helper, not PromQL
            out.append((f"{f.name}: variable {v['name']}", f"count by ({m.group(2)}) ({m.group(1)})" if m else q))
    subst = {"$__rate_interval": "1m", "$instance": ".*", "$interface": ".*", "$venue": ".*"}
    res = []
    for where, e in out:
        for k, v in subst.items():
            e = e.replace(k, v)
        res.append((where, e))
    return res


def rule_exprs():
    doc = yaml.safe_load((ROOT / "configs/prometheus/hftpf-rules.yml").read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _netns_connect(ns, host, port):
    code = (f"import socket,sys\ns=socket.socket()\ns.settimeout(3)\n"
            f"try:\n s.connect(({host!r},{port}))\nexcept OSError as e:\n print(e); sys.exit(1)\nprint('connected')")
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=20)


def test_exporter_with_demo_lab_and_real_prometheus(needs_kernel, tmp_path):
    from hft_packetfilter.kernel.netlab import socket_in
    from hft_packetfilter.sinks import prometheus as prom

    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        pytest.skip("Debian's prometheus package is not installed (apt-get install prometheus)")
    if os.path.exists(PIN) or NS_HOST in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        pytest.skip("a demo lab is already running on this host")

    demo_log = open(tmp_path / "demo.log", "w")
    prom_log = open(tmp_path / "prometheus.log", "w")
    demo = subprocess.Popen([sys.executable, "-m", "hft_packetfilter.cli", "demo", "-d", "25", "--rate", "500"],
                            stdout=demo_log, stderr=subprocess.STDOUT, start_new_session=True)
    server = ns_server = poller = prometheus = None
    try:
        _wait(lambda: os.path.exists(f"{PIN}/hftpf_meta") or demo.poll() is not None, 60, "the demo's pins")
        assert demo.poll() is None, (tmp_path / "demo.log").read_text()
        holder, poller = prom.pin_provider([KEY], interval=0.5)
        assert not poller.errors, poller.errors
        server = prom.start_exporter(holder.doc, "127.0.0.1:0")

        # Prometheus with our scrape config and rules, pointed at the exporter
        conf = yaml.safe_load((ROOT / "configs/prometheus/prometheus.yml").read_text())
        conf["global"]["scrape_interval"] = "1s"
        conf["global"]["evaluation_interval"] = "1s"
        shutil.copy(ROOT / "configs/prometheus/hftpf-rules.yml", tmp_path / "hftpf-rules.yml")
        conf["rule_files"] = [str(tmp_path / "hftpf-rules.yml")]
        job = conf["scrape_configs"][0]
        job["scrape_interval"] = "1s"
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{server.port}"]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(conf))
        pport = _free_port()
        base = f"http://127.0.0.1:{pport}"
        prometheus = subprocess.Popen([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{pport}"],
                                      stdout=prom_log, stderr=subprocess.STDOUT, start_new_session=True)

        def scrapes():
            r = _query(base, 'count_over_time(up{job="hftpf"}[1m])') if prometheus.poll() is None else None
            try:
                return r and r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) >= 3
            except (KeyError, TypeError):
                return False
        _wait(lambda: prometheus.poll() is not None or _ready(base), 30, "prometheus ready")
        assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
        _wait(scrapes, 30, "3 scrapes of the exporter")
        up = _query(base, 'up{job="hftpf"}')["data"]["result"]
        assert up and up[0]["value"][1] == "1"
        assert float(_query(base, 'sum(hftpf_venue_rx_packets_total)')["data"]["result"][0]["value"][1]) > 0

        failures = []
        for where, expr in dashboard_exprs():
            r = _query(base, expr)
            if r.get("status") != "success":
                failures.append(f"{where}: does not parse: {expr!r}: {r.get('error')}")
            elif not r["data"]["result"]:
                failures.append(f"{where}: no data: {expr!r}")
        for name, expr in rule_exprs():
            r = _query(base, expr)
            if r.get("status") != "success":
                failures.append(f"rule {name}: does not parse: {expr!r}: {r.get('error')}")
                continue
            if name in PARSE_ONLY:
                continue
            r = _query(base, as_bool(expr))
            if r.get("status") != "success" or not r["data"]["result"]:
                failures.append(f"rule {name}: no data for {as_bool(expr)!r}: {r.get('error')}")
        assert not failures, "\n".join(failures)
        rules = json.load(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10))
        loaded = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert {n for n, _ in rule_exprs()} <= loaded

        # The default listener (127.0.0.1) is not reachable from another namespace. Serve one inside
        # the host namespace on its loopback: reachable there, not from the exchange namespace, neither
        # via the host's veth address nor via 127.0.0.1 (its own loopback).
        sock = socket_in(NS_HOST, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        nport = sock.getsockname()[1]
        ns_server = prom.start_exporter(holder.doc, sock=sock)
        assert _netns_connect(NS_HOST, "127.0.0.1", nport).returncode == 0
        for host in (HOST_IP, "127.0.0.1"):
            r = _netns_connect(NS_EXCH, host, nport)
            assert r.returncode == 1 and "connected" not in r.stdout, (host, r.stdout, r.stderr)
        r = _netns_connect(NS_EXCH, HOST_IP, server.port)
        assert r.returncode == 1, r.stdout
        assert demo.poll() is None, "the demo ended before the checks did: raise -d"
    finally:
        for p in (prometheus, demo):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (prometheus, demo):
            if p is None:
                continue
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for s in (server, ns_server):
            if s is not None:
                s.close()
        if poller is not None:
            poller.stop()
        demo_log.close()
        prom_log.close()
    assert not os.path.exists(PIN)


def _ready(base):
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
