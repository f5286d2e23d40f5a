"""Unit tests for hft_packetfilter.sinks.alerts against a real HTTP receiver on 127.0.0.1.

The receiver (http.server in a thread) records every POST: its time, headers and JSON body. It can
answer with a scripted list of status codes, or sleep before answering (a hanging webhook). Every
loop is bounded; no test waits on the wall clock for more than a few seconds.
"""
from __future__ import annotations

import gc
import http.server
import io
import json
import logging
import os
import threading
import time

import pytest

from hft_packetfilter.risk.rules import Alert
from hft_packetfilter.sinks import alerts as sinks
from hft_packetfilter.sinks.alerts import AlertDispatcher, LogSink, Secret, SecretError, WebhookSink

TOKEN = "xoxb-SUPERSECRET-0123456789"


class Receiver:
    def __init__(self) -> None:
        self.posts = []
        self.statuses = []          # popped per request; 200 when empty
        self.sleep_s = 0.0
        self.lock = threading.Lock()
        self.release = threading.Event()
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                with rec.lock:
                    rec.posts.append({"t": time.monotonic(), "path": self.path,
                                      "headers": dict(self.headers), "json": json.loads(body)})
                    status = rec.statuses.pop(0) if rec.statuses else 200
                    sleep = rec.sleep_s
                if sleep:
                    rec.release.wait(sleep)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/{TOKEN}"

    def wait_posts(self, n: int, timeout: float = 5.0) -> list:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.posts) >= n:
                    return list(self.posts)
            time.sleep(0.005)
        with self.lock:
            return list(self.posts)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rx():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hook_env(rx, monkeypatch):
    monkeypatch.setenv("HFTPF_TEST_HOOK", rx.url)
    monkeypatch.setenv("HFTPF_TEST_TOKEN", TOKEN)
    return "env:HFTPF_TEST_HOOK"


def alert(i: int = 0, rule: str = "fat-finger", key: str = None, severity: str = "critical") -> Alert:
    now = time.time_ns()
    return Alert(rule=rule, kind="order_quantity", severity=severity, dedupe_key=key or f"VEN/S{i}",
                 message=f"VEN AAPL: order quantity {1000 + i} above 500", first_seen_ns=now,
                 last_seen_ns=now, count=1, context={"qty": 1000 + i}, venue="VEN", session=f"S{i}",
                 actions=("alert",), created_ns=now, emitted=1)


def sink(url, **kw):
    kw.setdefault("proxies", {})          # never route 127.0.0.1 through an environment proxy
    kw.setdefault("jitter", 0.0)
    kw.setdefault("backoff_s", 0.05)
    return WebhookSink(url, **kw)


# --------------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------------

def test_generic_payload_and_headers(rx, hook_env):
    s = sink(hook_env, format="generic", token="env:HFTPF_TEST_TOKEN", host="probe-1")
    try:
        assert s.submit(alert(1)) is True
        posts = rx.wait_posts(1)
    finally:
        s.close()
    assert len(posts) == 1
    p = posts[0]
    assert p["path"] == f"/hook/{TOKEN}"
    assert p["headers"]["Content-Type"] == "application/json"
    assert p["headers"]["Authorization"] == f"Bearer {TOKEN}"
    body = p["json"]
    assert body["source"] == "hftpf" and body["host"] == "probe-1"
    a = body["alert"]
    assert (a["rule"], a["severity"], a["dedupe_key"], a["count"], a["venue"]) == \
        ("fat-finger", "critical", "VEN/S1", 1, "VEN")
    assert a["context"] == {"qty": 1001} and isinstance(a["first_seen_ns"], int)
    assert s.stats()["sent"] == 1


def test_slack_payload(rx, hook_env):
    s = sink(hook_env, format="slack", host="probe-1")
    try:
        s.submit(alert(2))
        body = rx.wait_posts(1)[0]["json"]
    finally:
        s.close()
    assert body["text"].startswith("[CRITICAL] fat-finger (order_quantity): VEN AAPL: order quantity 1002")
    types = [b["type"] for b in body["blocks"]]
    assert types == ["header", "section", "section", "context"]
    assert body["blocks"][0]["text"] == {"type": "plain_text", "text": "[CRITICAL] fat-finger (order_quantity)"}
    fields = {f["text"].split(":*\n")[0].lstrip("*"): f["text"].split(":*\n")[1] for f in body["blocks"][2]["fields"]}
    assert fields["Key"] == "VEN/S2" and fields["Severity"] == "critical" and fields["Count"] == "1"
    assert len(body["blocks"][2]["fields"]) <= 10          # Slack's limit per section


def test_teams_payload(rx, hook_env):
    s = sink(hook_env, format="teams", host="probe-1")
    try:
        s.submit(alert(3, severity="warning"))
        body = rx.wait_posts(1)[0]["json"]
    finally:
        s.close()
    assert body["type"] == "message"
    att = body["attachments"][0]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["text"] == "[WARNING] fat-finger (order_quantity)"
    assert card["body"][0]["color"] == "Warning"
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Key"] == "VEN/S3" and facts["Host"] == "probe-1"


def test_format_payload_rejects_unknown_format():
    with pytest.raises(ValueError, match="unknown webhook format"):
        sinks.format_payload(alert(), "pagerduty")


# --------------------------------------------------------------------------------------------
# Retries, dedupe, rate limiting
# --------------------------------------------------------------------------------------------

def test_retries_after_500_with_exponential_backoff(rx, hook_env):
    rx.statuses = [500, 502, 503]
    s = sink(hook_env, backoff_s=0.05, max_attempts=5)
    try:
        s.submit(alert())
        posts = rx.wait_posts(4)
        assert s.flush(5)
    finally:
        s.close()
    assert len(posts) == 4
    gaps = [b["t"] - a["t"] for a, b in zip(posts, posts[1:])]
    # 0.05, 0.1, 0.2 s (jitter off): each wait at least its backoff and growing
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2
    assert gaps[0] < gaps[1] < gaps[2]
    st = s.stats()
    assert (st["sent"], st["retries"], st["failed"]) == (1, 3, 0)


def test_gives_up_after_max_attempts_and_no_retry_on_4xx(rx, hook_env):
    rx.statuses = [500] * 3 + [404]
    s = sink(hook_env, backoff_s=0.01, max_attempts=3)
    try:
        s.submit(alert(1))
        s.submit(alert(2))
        assert s.flush(5)
        posts = rx.wait_posts(4)
    finally:
        s.close()
    assert len(posts) == 4                               # 3 attempts, then 1 (a 404 is final)
    st = s.stats()
    assert (st["sent"], st["failed"], st["retries"]) == (0, 2, 2)
    assert st["last_error"].endswith("HTTP 404")


def test_dedupe_same_rule_and_key(rx, hook_env):
    s = sink(hook_env, dedupe_s=60)
    try:
        results = [s.submit(alert(1)) for _ in range(5)] + [s.submit(alert(2))]
        assert s.flush(5)
    finally:
        s.close()
    assert results == [True, False, False, False, False, True]
    assert len(rx.posts) == 2
    assert s.stats()["deduped"] == 4


def test_rate_limit_token_bucket(rx, hook_env):
    clock = [10**18]
    s = sink(hook_env, rate_per_min=60, burst=3, dedupe_s=0, clock=lambda: clock[0])
    try:
        first = [s.submit(alert(i)) for i in range(5)]      # burst of 3, then limited
        clock[0] += 2 * 10**9                               # 2 s at 1/s: 2 more tokens
        second = [s.submit(alert(10 + i)) for i in range(3)]
        assert s.flush(5)
    finally:
        s.close()
    assert first == [True, True, True, False, False]
    assert second == [True, True, False]
    assert s.stats()["rate_limited"] == 3 and len(rx.posts) == 5


# --------------------------------------------------------------------------------------------
# A hanging receiver never stalls the caller
# --------------------------------------------------------------------------------------------

def test_hanging_receiver_does_not_block_and_overflow_is_counted(rx, hook_env):
    rx.sleep_s = 3.0                                     # every POST hangs 3 s
    s = sink(hook_env, timeout_s=0.5, max_attempts=1, queue_size=8, rate_per_min=1e9, burst=10**6,
             dedupe_s=0)
    n = 200
    worst = 0.0
    items = [alert(i) for i in range(n)]
    gc.disable()                                         # time submit, not the collector
    try:
        for a in items:
            t = time.perf_counter()
            s.submit(a)
            worst = max(worst, time.perf_counter() - t)
        st = s.stats()
    finally:
        gc.enable()
        t = time.perf_counter()
        s.close(timeout=0.5)
        close_s = time.perf_counter() - t
    assert worst < 0.001, f"submit took {worst * 1e3:.3f} ms"
    # at most queue_size queued plus one taken by the sender thread; the rest dropped and counted
    assert st["queued"] + st["dropped_queue_full"] == n
    assert n - 9 <= st["dropped_queue_full"] <= n - 8
    assert close_s < 1.5


def test_dead_receiver_connection_refused_counts_failures():
    import socket
    with socket.socket() as so:                           # a port with nobody listening
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    s = sink(f"http://127.0.0.1:{port}/x", backoff_s=0.01, max_attempts=2)
    try:
        t = time.perf_counter()
        assert s.submit(alert()) is True
        assert time.perf_counter() - t < 0.001
        assert s.flush(5)
    finally:
        s.close()
    st = s.stats()
    assert (st["failed"], st["retries"], st["sent"]) == (1, 1, 0)
    assert "ConnectionRefusedError" in st["last_error"]


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------

def test_secrets_never_in_repr_logs_or_stats(rx, hook_env, caplog):
    rx.statuses = [500, 401]
    caplog.set_level(logging.DEBUG, logger="hftpf.alerts")
    s = sink(hook_env, token="env:HFTPF_TEST_TOKEN", backoff_s=0.01, max_attempts=3)
    try:
        s.submit(alert())
        assert s.flush(5)
    finally:
        s.close()
    texts = [repr(s), str(s), repr(s.url), str(s.token), json.dumps(s.stats(), default=str), caplog.text,
             repr(AlertDispatcher([s]))]
    assert "HTTP 500" in caplog.text and "HTTP 401" in caplog.text
    for t in texts:
        assert TOKEN not in t and rx.url not in t, t
    assert repr(s.url) == "Secret(env:HFTPF_TEST_HOOK)"
    lit = Secret(rx.url)
    assert TOKEN not in repr(lit) and repr(lit) == "Secret(<literal, redacted>)"
    assert lit.redact(f"oops {rx.url}") == "oops <redacted>"
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(lit)


def test_secret_file_mode_0600_only(tmp_path):
    p = tmp_path / "hook"
    p.write_text("https://hooks.example.com/services/T000/B000/" + TOKEN + "\n")
    os.chmod(p, 0o600)
    s = Secret(f"file:{p}")
    assert s.value().endswith(TOKEN) and TOKEN not in repr(s)
    os.chmod(p, 0o400)
    assert Secret(f"file:{p}").value().endswith(TOKEN)
    for mode in (0o644, 0o640, 0o604, 0o660, 0o700):
        os.chmod(p, mode)
        with pytest.raises(SecretError) as info:
            Secret(f"file:{p}")
        msg = str(info.value)
        assert f"has mode {mode:04o}; expected 0600" in msg and TOKEN not in msg
    link = tmp_path / "link"
    os.chmod(p, 0o600)
    link.symlink_to(p)
    with pytest.raises(SecretError, match="symbolic links are refused"):
        Secret(f"file:{link}")
    with pytest.raises(SecretError, match="does not exist"):
        Secret(f"file:{tmp_path}/nope")
    with pytest.raises(SecretError, match="not an absolute path"):
        Secret("file:relative/path")


def test_secret_env_errors(monkeypatch):
    monkeypatch.delenv("HFTPF_NOPE", raising=False)
    with pytest.raises(SecretError, match="environment variable HFTPF_NOPE is not set"):
        Secret("env:HFTPF_NOPE")
    with pytest.raises(SecretError, match="not an environment variable name"):
        Secret("env:1BAD")
    monkeypatch.setenv("HFTPF_NOT_URL", "not-a-url-" + TOKEN)
    with pytest.raises(SecretError) as info:
        WebhookSink("env:HFTPF_NOT_URL", start=False)
    assert TOKEN not in str(info.value) and "Secret(env:HFTPF_NOT_URL)" in str(info.value)


# --------------------------------------------------------------------------------------------
# Log sink, dispatcher, latency
# --------------------------------------------------------------------------------------------

def test_log_sink_json_lines():
    buf = io.StringIO()
    ls = LogSink(buf, clock=lambda: 1_700_000_000_000_000_000)
    ls.submit(alert(1))
    ls.submit(alert(2, severity="info"))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    recs = [json.loads(x) for x in lines]
    assert recs[0]["event"] == "alert" and recs[0]["level"] == "CRITICAL"
    assert recs[0]["ts"] == "2023-11-14T22:13:20.000000+00:00"
    assert recs[1]["level"] == "INFO" and recs[1]["dedupe_key"] == "VEN/S2"
    assert ls.stats() == {"sink": "log", "written": 2, "errors": 0}


def test_dispatcher_and_from_monitoring(rx, hook_env):
    from hft_packetfilter import config
    cfg = config.loads("monitoring:\n  alert_webhook: env:HFTPF_TEST_HOOK\n")
    buf = io.StringIO()
    d = sinks.from_monitoring(cfg.monitoring, log_stream=buf, proxies={})
    try:
        d.submit(alert(7))
        assert d.sinks[1].flush(5)
    finally:
        d.close()
    assert len(rx.posts) == 1 and json.loads(buf.getvalue())["dedupe_key"] == "VEN/S7"
    assert [st["sink"] for st in d.stats()] == ["log", "webhook-generic"]


def test_engine_to_webhook_end_to_end(rx, hook_env):
    from hft_packetfilter.risk import rules
    rs = rules.loads("rules:\n  - {name: qty, kind: order_quantity, threshold: 10}\n")
    s = sink(hook_env)
    eng = rules.RiskEngine(rs, time.time_ns, on_alert=s.submit)
    try:
        eng.on_order_event("new", "VEN", "S1", time.time_ns(), qty=11, symbol="X")
        posts = rx.wait_posts(1)
    finally:
        s.close()
    assert posts[0]["json"]["alert"]["rule"] == "qty"


def test_p99_creation_to_post_under_modest_load(rx, hook_env):
    s = sink(hook_env, rate_per_min=1e9, burst=10**6, dedupe_s=0, queue_size=1000)
    n = 300
    try:
        for i in range(n):                   # 300 alerts in bursts of 30, 10 ms apart
            s.submit(alert(i))
            if i % 30 == 29:
                time.sleep(0.01)
        assert s.flush(10)
    finally:
        s.close()
    st = s.stats()
    assert st["sent"] == n and len(rx.posts) == n
    lat = st["creation_to_post_us"]
    assert lat["count"] == n
    assert lat["p99"] < 1_000_000, lat          # microseconds: p99 under 1 s
    assert st["creation_to_response_us"]["p99"] < 1_000_000
