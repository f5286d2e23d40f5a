"""Alert sinks: structured JSON log lines, and generic / Slack / Teams webhooks.

Wiring (the risk engine emits :class:`~hft_packetfilter.risk.rules.Alert` objects)::

    sinks = AlertDispatcher([LogSink(sys.stderr),
                             WebhookSink(Secret("env:HFTPF_WEBHOOK"), format="slack")])
    engine = RiskEngine(rules, on_alert=sinks.submit, ...)
    ...
    sinks.close()

Webhook delivery never blocks the caller: ``submit`` does a dedupe check, a token-bucket check and
a ``put_nowait`` on a bounded queue, and returns (microseconds). One background thread per webhook
POSTs the alerts one by one; a 5xx, 429, timeout or connection error is retried with exponential
backoff (``backoff_s * 2**attempt``, capped at ``backoff_max_s``, +/- ``jitter``) up to
``max_attempts``; another 4xx is a permanent failure. A dead or hanging receiver therefore only
fills the queue: once full, new alerts are dropped and counted (``dropped_queue_full``). Alerts
suppressed by dedupe (same rule and dedupe key within ``dedupe_s``) or by the rate limit
(``rate_per_min`` with bursts of ``burst``) are counted too. ``stats()`` reports every counter and
the time from the alert's creation (``Alert.created_ns``, set by the engine's clock) to the start
of the POST that delivered it (``creation_to_post_us``: p50/p99/max), and to its response.

Secrets (webhook URLs carry tokens; bearer tokens) are :class:`Secret` references: ``env:NAME``
(an environment variable) or ``file:/abs/path`` (a regular file of mode 0600 or 0400 -- anything
readable by group or others is refused with a clear error). A literal URL is accepted (the config
allows it) but discouraged. The value is read once, never printed: ``repr``/``str`` of a secret, a
sink or an error shows only the reference, log lines name the sink and the HTTP status or the
exception type, and any text that would carry the value is passed through ``Secret.redact``.

Payloads
--------
* ``generic``: ``{"source": "hftpf", "host": ..., "alert": Alert.to_dict()}``
* ``slack``: an incoming-webhook message: ``text`` (the notification fallback) and Block Kit
  ``blocks`` (header, message, fields, context).
* ``teams``: a Workflows (Power Automate) webhook message carrying an Adaptive Card 1.4
  (``{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": {...}}]}``); the retired Office 365
  connector MessageCard format is not produced.
"""
from __future__ import annotations

import collections
import datetime
import json
import logging
import os
import queue
import random
import socket
import stat
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Iterable, List, Optional, TextIO

from ..analytics.percentiles import LatencyRecorder

__all__ = ["SecretError", "Secret", "LogSink", "WebhookSink", "AlertDispatcher", "FORMATS",
           "format_payload", "from_monitoring"]

FORMATS = ("generic", "slack", "teams")
log = logging.getLogger("hftpf.alerts")

_SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
_TEAMS_COLOR = {"critical": "Attention", "warning": "Warning", "info": "Accent"}
_STOP = object()


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------

class SecretError(ValueError):
    """A secret reference that cannot be used; the message names the reference, never the value."""


class Secret:
    """A secret read from ``env:NAME``, ``file:/abs/path`` (mode 0600/0400) or given literally.

    ``value()`` returns it; ``repr``/``str`` show only the reference (``Secret(env:NAME)``)."""

    __slots__ = ("ref", "_value")

    def __init__(self, ref: str) -> None:
        if not isinstance(ref, str) or not ref.strip():
            raise SecretError("empty secret reference; expected 'env:NAME', 'file:/path' or a value")
        ref = ref.strip()
        if ref.startswith("env:"):
            name = ref[4:]
            if not name or not (name[0].isalpha() or name[0] == "_") or \
                    not all(c.isalnum() or c == "_" for c in name):
                raise SecretError(f"{ref!r}: not an environment variable name; expected 'env:NAME'")
            v = os.environ.get(name)
            if v is None or not v.strip():
                raise SecretError(f"environment variable {name} is not set (or empty); "
                                  f"export it before starting the agent")
            self.ref = ref
            self._value = v.strip()
        elif ref.startswith("file:"):
            path = ref[5:]
            self.ref = ref
            self._value = _read_secret_file(path)
        else:
            self.ref = None          # a literal: nothing to show
            self._value = ref

    def value(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the value replaced by ``<redacted>``."""
        v = self._value
        return text.replace(v, "<redacted>") if v and v in text else text

    def __repr__(self) -> str:
        return f"Secret({self.ref if self.ref else '<literal, redacted>'})"

    __str__ = __repr__

    def __reduce__(self):  # never pickle the value
        raise TypeError("Secret objects cannot be pickled")


def _read_secret_file(path: str) -> str:
    if not path.startswith("/"):
        raise SecretError(f"'file:{path}': not an absolute path; expected 'file:/absolute/path'")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SecretError(f"secret file {path} does not exist") from None
    except OSError as e:
        raise SecretError(f"cannot open secret file {path}: {e.strerror or type(e).__name__} "
                          "(symbolic links are refused)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"secret file {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode not in (0o600, 0o400):
            raise SecretError(f"secret file {path} has mode {mode:04o}; expected 0600 (or 0400): "
                              f"only its owner may read it (chmod 600 {path})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(65536)
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretError(f"secret file {path} is not UTF-8 text") from None
    if not text:
        raise SecretError(f"secret file {path} is empty")
    return text


def _secret(s: Any) -> Secret:
    return s if isinstance(s, Secret) else Secret(s)


# --------------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------------

def _alert_dict(alert: Any) -> dict:
    if isinstance(alert, dict):
        return alert
    return alert.to_dict()


def _iso(ns: Optional[int]) -> Optional[str]:
    if not ns:
        return None
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).isoformat(timespec="microseconds")


def format_payload(alert: Any, fmt: str = "generic", host: Optional[str] = None) -> dict:
    """The JSON body for ``alert`` in format ``fmt`` (generic | slack | teams)."""
    a = _alert_dict(alert)
    host = host or socket.gethostname()
    sev = str(a.get("severity", "warning"))
    title = f"[{sev.upper()}] {a.get('rule')} ({a.get('kind')})"
    facts = [("Rule", a.get("rule")), ("Severity", sev), ("Key", a.get("dedupe_key")),
             ("Count", a.get("count")), ("Venue", a.get("venue")), ("Session", a.get("session")),
             ("First seen", a.get("first_seen_ns")), ("Last seen", a.get("last_seen_ns")),
             ("Actions", ", ".join(a.get("actions") or ())), ("Host", host)]
    facts = [(k, str(v)) for k, v in facts if v not in (None, "")]
    if fmt == "generic":
        return {"source": "hftpf", "host": host, "alert": a}
    if fmt == "slack":
        fields = [{"type": "mrkdwn", "text": f"*{k}:*\n{v}"} for k, v in facts[:10]]
        return {
            "text": f"{title}: {a.get('message')}",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
                {"type": "section", "text": {"type": "mrkdwn",
                                             "text": f"{_SEVERITY_EMOJI.get(sev, '')} {a.get('message')}"[:3000]}},
                {"type": "section", "fields": fields},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"hftpf on {host}"}]},
            ],
        }
    if fmt == "teams":
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard", "version": "1.4",
            "body": [
                {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium",
                 "color": _TEAMS_COLOR.get(sev, "Default"), "wrap": True},
                {"type": "TextBlock", "text": str(a.get("message")), "wrap": True},
                {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts]},
            ],
        }
        return {"type": "message", "summary": title,
                "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                 "contentUrl": None, "content": card}]}
    raise ValueError(f"unknown webhook format {fmt!r}; expected one of: {', '.join(FORMATS)}")


# --------------------------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------------------------

class LogSink:
    """One JSON object per line per alert (synchronous: a write and a flush)."""

    def __init__(self, stream: Optional[TextIO] = None, clock: Callable[[], int] = time.time_ns) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self._lock = threading.Lock()
        self.written = 0
        self.errors = 0

    def submit(self, alert: Any) -> bool:
        a = _alert_dict(alert)
        rec = {"ts": _iso(self.clock()), "level": str(a.get("severity", "warning")).upper(),
               "event": "alert", **a}
        line = json.dumps(rec, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError):
                self.errors += 1
                return False
            self.written += 1
        return True

    def close(self, timeout: float = 0.0) -> None:
        return None

    def stats(self) -> dict:
        return {"sink": "log", "written": self.written, "errors": self.errors}

    def __repr__(self) -> str:
        return f"LogSink(stream={getattr(self.stream, 'name', type(self.stream).__name__)!r})"


class WebhookSink:
    """POSTs alerts as JSON from a background thread (see the module docstring)."""

    def __init__(self, url: Any, *, format: str = "generic", token: Any = None, name: Optional[str] = None,
                 timeout_s: float = 2.0, max_attempts: int = 5, backoff_s: float = 0.5,
                 backoff_max_s: float = 30.0, jitter: float = 0.1, queue_size: int = 1000,
                 rate_per_min: float = 60.0, burst: int = 20, dedupe_s: float = 60.0,
                 clock: Callable[[], int] = time.time_ns, proxies: Optional[Dict[str, str]] = None,
                 host: Optional[str] = None, start: bool = True) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown webhook format {format!r}; expected one of: {', '.join(FORMATS)}")
        self.url = _secret(url)
        u = self.url.value()
        if not u.lower().startswith(("http://", "https://")):
            raise SecretError(f"{self.url!r} does not hold an http(s) URL")
        self.token = _secret(token) if token is not None else None
        self.format = format
        self.name = name or f"webhook-{format}"
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.jitter = jitter
        self.rate_per_ns = rate_per_min / 60e9
        self.burst = burst
        self.dedupe_ns = int(dedupe_s * 1e9)
        self.clock = clock
        self.host = host or socket.gethostname()
        handlers = [urllib.request.ProxyHandler(proxies)] if proxies is not None else []
        self._opener = urllib.request.build_opener(*handlers)
        self._q: "queue.Queue" = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._tokens = float(burst)
        self._tokens_ts = clock()
        self._seen: "collections.OrderedDict" = collections.OrderedDict()
        self.counters: Dict[str, int] = {k: 0 for k in (
            "submitted", "queued", "sent", "failed", "retries", "deduped", "rate_limited",
            "dropped_queue_full", "dropped_on_close")}
        self.last_error: Optional[str] = None
        self._post_lat = LatencyRecorder("wall")
        self._done_lat = LatencyRecorder("wall")
        self._thread: Optional[threading.Thread] = None
        if start:
            self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"hftpf-{self.name}", daemon=True)
            self._thread.start()

    # ---- caller side (never blocks) ---------------------------------------------------------
    def submit(self, alert: Any) -> bool:
        """Queue ``alert`` for delivery; False when deduped, rate limited or the queue is full."""
        now = self.clock()
        a = alert if isinstance(alert, dict) else None
        key = (a.get("rule"), a.get("dedupe_key")) if a is not None else (alert.rule, alert.dedupe_key)
        with self._lock:
            c = self.counters
            c["submitted"] += 1
            if self._stop.is_set():
                c["dropped_on_close"] += 1
                return False
            last = self._seen.get(key)
            if last is not None and now - last < self.dedupe_ns:
                c["deduped"] += 1
                return False
            tokens = min(self.burst, self._tokens + (now - self._tokens_ts) * self.rate_per_ns)
            self._tokens_ts = now
            if tokens < 1.0:
                self._tokens = tokens
                c["rate_limited"] += 1
                return False
            try:
                self._q.put_nowait(alert)
            except queue.Full:
                self._tokens = tokens
                c["dropped_queue_full"] += 1
                return False
            self._tokens = tokens - 1.0
            self._seen[key] = now
            self._seen.move_to_end(key)
            if len(self._seen) > 10_000:
                self._seen.popitem(last=False)
            c["queued"] += 1
            self._inflight += 1
        return True

    # ---- sender thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            try:
                self._deliver(item)
            except Exception as e:  # noqa: BLE001 - the sender must survive anything
                self._fail(f"internal error {type(e).__name__}")
            finally:
                with self._lock:
                    self._inflight -= 1
                    self._idle.notify_all()

    def _deliver(self, alert: Any) -> None:
        body = json.dumps(format_payload(alert, self.format, self.host), separators=(",", ":"),
                          default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "hftpf-alerts"}
        if self.token is not None:
            headers["Authorization"] = "Bearer " + self.token.value()
        created = alert.get("created_ns") if isinstance(alert, dict) else getattr(alert, "created_ns", 0)
        for attempt in range(self.max_attempts):
            if attempt:
                with self._lock:
                    self.counters["retries"] += 1
                delay = min(self.backoff_max_s, self.backoff_s * (2 ** (attempt - 1)))
                if self.jitter:
                    delay *= 1.0 + random.uniform(-self.jitter, self.jitter)
                if self._stop.wait(delay):
                    self._fail("abandoned at close")
                    return
            t_post = self.clock()
            req = urllib.request.Request(self.url.value(), data=body, headers=headers, method="POST")
            status: Optional[int] = None
            try:
                with self._opener.open(req, timeout=self.timeout_s) as resp:
                    status = resp.status
                    resp.read(65536)
                retry, err = False, None
            except urllib.error.HTTPError as e:
                status = e.code
                try:
                    e.close()
                except Exception:  # noqa: BLE001
                    pass
                retry, err = (status >= 500 or status == 429), f"HTTP {status}"
            except (urllib.error.URLError, OSError) as e:   # timeouts, refused, resets
                reason = getattr(e, "reason", e)
                retry, err = True, f"{type(reason).__name__}"
            if err is None:
                t_done = self.clock()
                with self._lock:
                    self.counters["sent"] += 1
                    if created:
                        self._post_lat.record(t_post - created)
                        self._done_lat.record(t_done - created)
                return
            self._note(err, attempt)
            if not retry:
                break
        self._fail(self.last_error or "failed")

    def _note(self, err: str, attempt: int) -> None:
        msg = self._redact(f"{self.name}: POST attempt {attempt + 1}/{self.max_attempts} failed: {err}")
        with self._lock:
            self.last_error = msg
        log.warning(msg)

    def _fail(self, why: str) -> None:
        msg = self._redact(f"{self.name}: alert not delivered: {why}")
        with self._lock:
            self.counters["failed"] += 1
            self.last_error = msg
        log.error(msg)

    def _redact(self, text: str) -> str:
        text = self.url.redact(text)
        return self.token.redact(text) if self.token is not None else text

    # ---- lifecycle and reading --------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued alert was delivered or given up; False on timeout."""
        end = time.monotonic() + timeout
        with self._lock:
            while self._inflight > 0:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued within ``timeout``, then stop (retries are abandoned); alerts
        still queued are counted ``dropped_on_close``. Never waits longer than ``timeout``."""
        self.flush(timeout)
        self._stop.set()
        dropped = 0
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                dropped += 1
        with self._lock:
            self.counters["dropped_on_close"] += dropped
            self._inflight -= dropped
        try:
            self._q.put_nowait(_STOP)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(max(0.0, timeout / 4))

    def stats(self) -> dict:
        with self._lock:
            out: Dict[str, Any] = {"sink": self.name, "format": self.format, **self.counters,
                                   "queue_depth": self._q.qsize(), "last_error": self.last_error}
            for label, rec in (("creation_to_post_us", self._post_lat),
                               ("creation_to_response_us", self._done_lat)):
                s = rec.snapshot()
                out[label] = {k: s[k] for k in ("count", "p50", "p99", "max")}
        return out

    def __repr__(self) -> str:
        return (f"WebhookSink(name={self.name!r}, format={self.format!r}, url={self.url!r}, "
                f"token={self.token!r}, queue={self._q.maxsize})")

    __str__ = __repr__


class AlertDispatcher:
    """Fans each alert out to several sinks; ``submit`` never raises and never blocks on a webhook."""

    def __init__(self, sinks: Iterable[Any] = ()) -> None:
        self.sinks: List[Any] = list(sinks)
        self.errors = 0

    def submit(self, alert: Any) -> None:
        for s in self.sinks:
            try:
                s.submit(alert)
            except Exception:  # noqa: BLE001
                self.errors += 1

    __call__ = submit

    def close(self, timeout: float = 2.0) -> None:
        for s in self.sinks:
            s.close(timeout)

    def stats(self) -> List[dict]:
        return [s.stats() for s in self.sinks]

    def __repr__(self) -> str:
        return f"AlertDispatcher({self.sinks!r})"


def from_monitoring(monitoring: Any, log_stream: Optional[TextIO] = None, **webhook_kw) -> AlertDispatcher:
    """The default sinks from the config's ``monitoring`` section: a JSON-lines log sink, plus a
    generic webhook when ``alert_webhook`` is set (``env:``/``file:``/URL). A webhook secret that
    cannot be read raises :class:`SecretError` (naming the reference only)."""
    sinks: List[Any] = [LogSink(log_stream)]
    ref = getattr(monitoring, "alert_webhook", None)
    if ref:
        sinks.append(WebhookSink(Secret(ref), **webhook_kw))
    return AlertDispatcher(sinks)
