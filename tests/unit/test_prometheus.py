"""The Prometheus exporter on fixture snapshots: exposition checked by promtool, histograms equal to
the kernel's buckets, the scrape cap (503), basic auth, TLS, and the rules file."""
import base64
import http.client
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import _snapshots as S
from hft_packetfilter.analytics.percentiles import MAX_INDEX, bucket_bounds
from hft_packetfilter.sinks import prometheus as prom
from hft_packetfilter.sinks.snapshot import SnapshotHolder

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def exposition(provider):
    reg = prom.CollectorRegistry(auto_describe=False)
    reg.register(prom.SnapshotCollector(provider))
    return prom.generate_latest(reg).decode()


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def get(url_port, path="/metrics", headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", url_port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


@needs_promtool
def test_exposition_passes_promtool_check_metrics():
    text = exposition(lambda: S.doc(1))
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_values_names_and_labels():
    fams = families(exposition(lambda: {"interfaces": {S.KEY: S.doc(1)}, "time": time.time()}))
    def value(name, **labels):
        fam = fams[name]
        sname = name + "_total" if fam.type == "counter" else name
        hits = [s.value for s in fam.samples if s.name == sname and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(hits) == 1, (name, labels, hits)
        return hits[0]
    assert value("hftpf_build_info", version=prom.__version__) == 1
    assert value("hftpf_venue_rx_bytes", interface=S.KEY, venue="DEMO-ITCH") == 101_000 * 76
    assert value("hftpf_venue_latency_target_seconds", venue="NASDAQ-OUCH") == pytest.approx(50e-6)
    assert value("hftpf_feed_missing_messages", stream="DEMO-ITCH:198.18.0.2:26477", venue="DEMO-ITCH") == 37
    assert value("hftpf_feed_gaps", stream="DEMO-ITCH:198.18.0.2:26477") == 4
    assert value("hftpf_feed_quality_score", stream="DEMO-ITCH:198.18.0.2:26477") == pytest.approx(77.7, abs=0.05)
    assert value("hftpf_would_drop_packets", reason="unknown_source") == 17
    assert value("hftpf_dropped_packets", reason="deny_rule") == 0
    assert value("hftpf_probe_loss", reason="ringbuf_reserve") == 7
    assert value("hftpf_probe_loss", reason="rtt_eviction") == 2
    for reason in ("rtt_table_full", "stream_table_full", "decode_error", "truncated"):
        assert value("hftpf_probe_loss", reason=reason) == 0
    assert value("hftpf_kill_switch_engaged", venue="NASDAQ-OUCH") == 1
    assert value("hftpf_kill_switch_engaged", venue="DEMO-ITCH") == 0
    assert value("hftpf_probe_attached", interface=S.KEY) == 1
    assert value("hftpf_snapshot_ok") == 1
    assert 0 <= value("hftpf_snapshot_age_seconds") < 60
    # every name is hftpf_* and every series carries the interface label (exporter-level ones aside)
    for f in fams.values():
        assert f.name.startswith("hftpf_")
        if f.name not in ("hftpf_build_info", "hftpf_snapshot_ok", "hftpf_snapshot_age_seconds"):
            assert all(s.labels.get("interface") == S.KEY for s in f.samples), f.name


@pytest.mark.parametrize("metric,where,samples", [
    ("hftpf_venue_rtt_seconds", ("rtt", "NASDAQ-OUCH"), S.RTT_NS),
    ("hftpf_feed_latency_seconds", ("feed_latency", "DEMO-MDP3:198.18.0.2:14310"), S.FEED_NS)])
def test_histograms_are_the_kernel_buckets(metric, where, samples):
    doc = S.doc(1)
    kernel = doc["histograms"][where[0]][where[1]]
    kernel["buckets"][MAX_INDEX] = 3            # overflow bucket: only in +Inf
    fam = families(exposition(lambda: doc))[metric]
    label = "venue" if where[0] == "rtt" else "stream"
    mine = [s for s in fam.samples if s.labels.get(label) == where[1]]
    buckets = [s for s in mine if s.name == metric + "_bucket"]
    les = [s.labels["le"] for s in buckets]
    assert les[-1] == "+Inf" and len(les) == MAX_INDEX + 1
    assert [float(x) for x in les[:-1]] == [bucket_bounds(i)[1] / 1e9 for i in range(MAX_INDEX)]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)                                  # cumulative
    per_bucket = [counts[0]] + [b - a for a, b in zip(counts, counts[1:])]
    assert per_bucket[:MAX_INDEX] == kernel["buckets"][:MAX_INDEX]   # exactly the kernel's counts
    assert per_bucket[MAX_INDEX] == 3
    count = next(s.value for s in mine if s.name == metric + "_count")
    total = next(s.value for s in mine if s.name == metric + "_sum")
    assert count == len(samples) + 3 == counts[-1]
    assert total == pytest.approx(sum(samples) / 1e9)


def test_feed_latency_needs_a_tai_clock_and_empty_provider_is_fine():
    doc = S.doc(1)
    doc["clock"] = "monotonic"
    assert not families(exposition(lambda: doc))["hftpf_feed_latency_seconds"].samples
    fams = families(exposition(lambda: None))
    assert fams["hftpf_build_info"].samples and fams["hftpf_snapshot_ok"].samples[0].value == 1

    def boom():
        raise RuntimeError("pipeline gone")
    assert families(exposition(boom))["hftpf_snapshot_ok"].samples[0].value == 0


def test_server_binds_loopback_by_default_and_serves():
    holder = SnapshotHolder()
    holder.publish(S.doc(1))
    with prom.start_exporter(holder.doc, "127.0.0.1:0") as srv:
        assert srv.address[0] == "127.0.0.1"
        status, body = get(srv.port)
        assert status == 200 and b"hftpf_venue_rx_packets_total" in body
        assert get(srv.port, "/nope")[0] == 404
    from hft_packetfilter.config import Monitoring
    assert Monitoring().listen == ("127.0.0.1", 9464)


def test_concurrent_scrapes_beyond_the_cap_get_503_and_the_pipeline_never_waits():
    cap = 4
    release = threading.Event()
    inside = threading.Semaphore(0)
    holder = SnapshotHolder()
    holder.publish(S.doc(0))

    def slow_provider():            # a scrape that takes long: it holds its slot until released
        inside.release()
        release.wait(20)
        return holder.doc()

    results = []
    lock = threading.Lock()
    with prom.start_exporter(slow_provider, "127.0.0.1:0", max_concurrent=cap) as srv:
        def scrape():
            try:
                st, _ = get(srv.port, timeout=30)
            except Exception as e:  # noqa: BLE001
                st = repr(e)
            with lock:
                results.append(st)
        threads = [threading.Thread(target=scrape) for _ in range(200)]
        for t in threads:
            t.start()
        for _ in range(cap):
            assert inside.acquire(timeout=10)          # cap scrapes are running ...
        deadline = time.monotonic() + 20
        while len(results) < 200 - cap and time.monotonic() < deadline:
            time.sleep(0.01)                           # ... and every other one was turned away
        # meanwhile the pipeline publishes snapshots without waiting for any scrape
        d1 = S.doc(1)
        t0 = time.monotonic()
        for i in range(1000):
            holder.publish(d1)
        assert time.monotonic() - t0 < 2.0      # microseconds each; a lock wait would show as seconds
        assert holder.latest().seq == 1001
        release.set()
        for t in threads:
            t.join(30)
        assert sorted(results, key=str).count(200) == cap
        assert results.count(503) == 200 - cap, [r for r in results if r not in (200, 503)]
        assert srv.rejected == 200 - cap
        st, body = get(srv.port)
        assert st == 200 and f"hftpf_exporter_scrapes_rejected_total {float(200 - cap)}".encode() in body


def test_basic_auth():
    for pw in ("s3cret", "sha256:" + __import__("hashlib").sha256(b"s3cret").hexdigest()):
        with prom.start_exporter(lambda: S.doc(1), "127.0.0.1:0", basic_auth=("prom", pw)) as srv:
            assert get(srv.port)[0] == 401
            bad = base64.b64encode(b"prom:wrong").decode()
            assert get(srv.port, headers={"Authorization": "Basic " + bad})[0] == 401
            assert get(srv.port, headers={"Authorization": "Basic !!notbase64"})[0] == 401
            good = base64.b64encode(b"prom:s3cret").decode()
            status, body = get(srv.port, headers={"Authorization": "Basic " + good})
            assert status == 200 and b"hftpf_build_info" in body


def test_tls(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed: cannot make a test certificate")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    with prom.start_exporter(lambda: S.doc(1), "127.0.0.1:0", tls_cert=str(cert), tls_key=str(key)) as srv:
        assert srv.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        c = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)
        c.request("GET", "/metrics")
        r = c.getresponse()
        assert r.status == 200 and b"hftpf_venue_rtt_seconds_bucket" in r.read()
        c.close()
        # a plain-HTTP client gets no metrics
        with pytest.raises(Exception):
            st, _ = get(srv.port, timeout=5)
            assert st != 200


@needs_promtool
def test_rules_pass_promtool_check_rules():
    r = subprocess.run([PROMTOOL, "check", "rules", str(ROOT / "configs/prometheus/hftpf-rules.yml")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([PROMTOOL, "check", "config", str(ROOT / "configs/prometheus/prometheus.yml")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def _doc_with_agent():
    d = S.doc(1)
    d["agent"] = {"alert_counts": [{"rule": "fat-finger", "severity": "critical", "count": 2},
                                   {"rule": "syn-flood", "severity": "critical", "count": 0}],
                  "orders": {"NASDAQ-OUCH": {"orders": 23, "acks": 22, "fills": 5, "venue_name": "x"}},
                  "latency": {"NASDAQ-OUCH": {"order_ack_us": {"count": 22, "p50": 310.0, "p90": 400.0, "p99": 950.5,
                                                               "p99_9": 999.0, "max": 1000.0},
                                              "cancel_ack_us": {"count": 0, "p50": None}}},
                  "crossvenue": {"totals": {"locked": 3, "crossed": 4, "arbitrage": 5}},
                  "audit": {"next_n": 120, "errors": 1}}
    return d


def test_agent_families_alerts_orders_latency_crossvenue_audit():
    text = exposition(lambda: {"interfaces": {S.KEY: _doc_with_agent()}})
    samples = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "interface"))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("hftpf_alerts_total", (("rule", "fat-finger"), ("severity", "critical")))] == 2
    assert samples[("hftpf_alerts_total", (("rule", "syn-flood"), ("severity", "critical")))] == 0
    assert samples[("hftpf_orders_total", (("event", "acks"), ("venue", "NASDAQ-OUCH")))] == 22
    assert not any(k[0] == "hftpf_orders_total" and ("event", "venue_name") in k[1] for k in samples)
    assert samples[("hftpf_order_latency_seconds",
                    (("metric", "order_ack"), ("percentile", "p99"), ("venue", "NASDAQ-OUCH")))] == pytest.approx(950.5e-6)
    assert not any(k[0] == "hftpf_order_latency_seconds" and ("metric", "cancel_ack") in k[1] for k in samples)
    assert samples[("hftpf_crossvenue_episodes_total", (("state", "crossed"),))] == 4
    assert samples[("hftpf_arbitrage_opportunities_total", ())] == 5
    assert samples[("hftpf_audit_records_total", ())] == 120 and samples[("hftpf_audit_write_errors_total", ())] == 1
    # an agent that did not answer, or none, exports none of these
    d = S.doc(1)
    d["agent"] = {"error": "timeout"}
    assert "hftpf_orders_total{" not in exposition(lambda: {"interfaces": {S.KEY: d}})
    if PROMTOOL:
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
