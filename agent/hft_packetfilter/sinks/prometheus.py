"""Prometheus exporter: a custom Collector over snapshots, and a small, capped HTTP(S) server.

The collector builds fresh metric families from the current snapshot on every scrape (no
``Counter.inc`` from deltas: the kernel's counters are already cumulative, exported as they are).
The provider is any callable returning the status document(s) (see ``snapshot.interfaces`` for the
accepted shapes); in the agent it is ``SnapshotHolder.doc``, which reads one reference and never
takes a pipeline lock, so a slow or stuck scrape cannot stall the pipeline.

Metrics (base units; every series has the label ``interface`` = pin key, IF or NETNS:IF)
---------------------------------------------------------------------------------------
per venue (``venue``)
    hftpf_venue_rx_packets_total, hftpf_venue_rx_bytes_total, hftpf_venue_tx_packets_total,
    hftpf_venue_tx_bytes_total, hftpf_venue_latency_target_seconds,
    hftpf_venue_rtt_seconds (histogram: the kernel's order-entry round-trip histogram)
per feed stream (``venue``, ``stream``)
    hftpf_feed_packets_total, _messages_total, _gaps_total, _missing_messages_total,
    _duplicates_total, _out_of_order_total, _resets_total, _heartbeats_total,
    _latency_negative_total, hftpf_feed_expected_sequence, hftpf_feed_ended,
    hftpf_feed_peak_burst_packets (most packets in one millisecond), hftpf_feed_quality_score (0-100, snapshot.kernel_quality_score),
    hftpf_feed_info{protocol}, hftpf_feed_latency_seconds (histogram; only on a TAI-clock probe:
    exchange time vs kernel time means nothing otherwise)
per interface
    hftpf_verdict_packets_total{verdict}, hftpf_verdict_bytes_total{verdict},
    hftpf_dropped_packets_total{reason}, hftpf_dropped_bytes_total{reason},
    hftpf_would_drop_packets_total{reason}, hftpf_would_drop_bytes_total{reason} (monitor/dry-run),
    hftpf_packets_total{class}, hftpf_unclassified_rx_packets_total, _bytes_total,
    hftpf_probe_loss_total{reason}: every loss the probe or agent counts, one reason each:
        ringbuf_reserve (ring full, event lost), rtt_table_full, stream_table_full,
        rtt_eviction (pending RTT entries evicted), seq_contended (feed packets whose sequence
        check lost every retry to other CPUs), decode_error (events the agent could not
        decode), truncated (packets too short to parse), plus any ``losses`` dict in the document
        (pipeline queue overflow ...);
    hftpf_probe_ringbuf_events_total, hftpf_probe_rtt_samples_total, hftpf_probe_rtt_retransmits_total,
    hftpf_agent_events_drained_total, hftpf_probe_attached, hftpf_agent_running,
    hftpf_probe_attached_since_seconds (Unix time), hftpf_probe_info{mode,attach_mode,clock,abi_version},
    hftpf_kill_switch_engaged{venue} (only when the document has a ``kill_switch`` key: per venue
    {VENUE: {"engaged": ...}}, or one switch for the interface, exported with venue="")
per interface, from the running agent (the document's ``agent`` section, when there is one)
    hftpf_alerts_total{rule,severity}: alerts fired per risk rule (every configured rule from 0),
    hftpf_orders_total{venue,event}: decoded order flow (orders, acks, fills, rejects, cancels ...),
    hftpf_order_latency_seconds{venue,metric,percentile}: the agent's order-to-ack/fill/cancel
        percentiles p50 p90 p99 p99.9 max (gauges: from the agent's recorder, not kernel buckets),
    hftpf_crossvenue_episodes_total{state}, hftpf_arbitrage_opportunities_total,
    hftpf_audit_records_total, hftpf_audit_write_errors_total (when the agent keeps a trail)
exporter
    hftpf_build_info{version,abi_version,python}, hftpf_snapshot_age_seconds, hftpf_snapshot_ok,
    hftpf_exporter_scrapes_rejected_total

Histograms are the kernel's buckets, exactly: bucket i of ``analytics.percentiles`` is [lo, hi) ns;
its count goes to ``le = hi / 1e9`` cumulatively, for i = 0 .. MAX_INDEX-1; the last kernel bucket
(it also holds everything above 2**34 ns) has no finite upper edge and appears only in ``+Inf``.
``_count`` is the ``+Inf`` bucket (the sum of the kernel buckets; the kernel's separate count can lag
by a packet in flight) and ``_sum`` is the kernel's sum_ns in seconds. Since samples are integer
nanoseconds, ``le = hi`` (inclusive in Prometheus) differs from the kernel's ``< hi`` only for a
sample of exactly ``hi`` ns.

Server
------
``start_exporter(provider, listen="127.0.0.1:9464", ...)`` serves ``/metrics`` (and ``/`` with a
link) from a thread. At most ``max_concurrent`` scrapes run at once; the rest get HTTP 503 with
``Retry-After`` at once, never queued. Optional TLS (``tls_cert``/``tls_key``) and HTTP basic auth
(``basic_auth=(user, password)``; the password may be given as ``sha256:<hex>``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import platform
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from .. import __version__, abi
from ..analytics.percentiles import MAX_INDEX, bucket_bounds
from . import snapshot as snap

Provider = Callable[[], Any]

#: le label values (seconds) of the finite buckets, from the kernel layout's upper edges
LE_BOUNDS: Tuple[str, ...] = tuple(repr(bucket_bounds(i)[1] / 1e9) for i in range(MAX_INDEX))

_PERCENTILES = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p99_9"), ("max", "max"))
_LOSS_FROM_PROBE = (("ringbuf_reserve", "ringbuf_lost"), ("rtt_table_full", "rtt_table_full"),
                    ("stream_table_full", "stream_table_full"), ("rtt_eviction", "map_evictions"),
                    ("seq_contended", "seq_contended"),
                    ("decode_error", "events_bad"), ("truncated", "truncated"))
_FEED_COUNTERS = (("packets", "packets", "Feed packets with a sequence header"),
                  ("messages", "messages", "Feed messages delivered (new sequence numbers)"),
                  ("gaps", "gaps", "Gap events: a packet began beyond the next expected sequence"),
                  ("missing_messages", "missing", "Messages skipped by gaps"),
                  ("duplicates", "duplicates", "Messages seen again"),
                  ("out_of_order", "out_of_order", "Messages that arrived after a later one"),
                  ("resets", "resets", "Sequence restarts"),
                  ("heartbeats", "heartbeats", "Heartbeat packets"),
                  ("latency_negative", "feed_latency_negative",
                   "Packets stamped before their exchange timestamp (clocks disagree)"))


def kernel_histogram_buckets(buckets: List[int]) -> List[Tuple[str, float]]:
    """Kernel bucket counts -> cumulative (le, count) pairs ending in +Inf (see the module docstring)."""
    out: List[Tuple[str, float]] = []
    cum = 0
    for i in range(MAX_INDEX):
        cum += int(buckets[i]) if i < len(buckets) else 0
        out.append((LE_BOUNDS[i], float(cum)))
    cum += sum(int(b) for b in buckets[MAX_INDEX:])
    out.append(("+Inf", float(cum)))
    return out


class SnapshotCollector:
    """A prometheus_client collector over ``provider()`` (read once per scrape)."""

    def __init__(self, provider: Provider, server: Optional["MetricsServer"] = None) -> None:
        self.provider = provider
        self.server = server

    def describe(self):
        return []   # unchecked collector: families depend on the snapshot

    def collect(self):
        t0 = time.time()
        ok = 1.0
        try:
            raw = self.provider()
        except Exception:  # noqa: BLE001 - a failing provider gives hftpf_snapshot_ok 0, not a 500
            raw, ok = None, 0.0
        ifs = snap.interfaces(raw)
        bi = GaugeMetricFamily("hftpf_build_info", "hftpf agent build", labels=["version", "abi_version", "python"])
        bi.add_metric([__version__, str(abi.ABI_VERSION), platform.python_version()], 1.0)
        yield bi
        yield GaugeMetricFamily("hftpf_snapshot_ok", "1 when the snapshot provider answered", value=ok)
        age = GaugeMetricFamily("hftpf_snapshot_age_seconds", "Seconds since the exported snapshot was taken")
        top = raw.doc if isinstance(raw, snap.Snapshot) else raw
        doc_time = top.get("time") if isinstance(top, dict) else None
        if doc_time:
            age.add_metric([], max(0.0, t0 - float(doc_time)))
        yield age
        if self.server is not None:
            yield CounterMetricFamily("hftpf_exporter_scrapes_rejected",
                                      "Scrapes answered 503 because max_concurrent were running",
                                      value=self.server.rejected)
        yield from self._families(ifs)

    # -- families -------------------------------------------------------------------------------------
    def _families(self, ifs: Dict[str, Dict[str, Any]]):
        L = ["interface"]
        V = ["interface", "venue"]
        S = ["interface", "venue", "stream"]
        R = ["interface", "reason"]

        def c(name, doc, labels):
            return CounterMetricFamily(name, doc, labels=labels)

        def g(name, doc, labels):
            return GaugeMetricFamily(name, doc, labels=labels)

        fam = {
            "rx_p": c("hftpf_venue_rx_packets", "Packets received from the venue (XDP ingress)", V),
            "rx_b": c("hftpf_venue_rx_bytes", "Bytes received from the venue (XDP ingress)", V),
            "tx_p": c("hftpf_venue_tx_packets", "Packets sent to the venue (TC egress)", V),
            "tx_b": c("hftpf_venue_tx_bytes", "Bytes sent to the venue (TC egress)", V),
            "tgt": g("hftpf_venue_latency_target_seconds", "Configured latency target of the venue", V),
            "rtt": HistogramMetricFamily("hftpf_venue_rtt_seconds",
                                         "Order-entry round trip at the wire (kernel histogram)", labels=V),
            "flat": HistogramMetricFamily("hftpf_feed_latency_seconds",
                                          "Feed latency: kernel TAI stamp minus exchange timestamp (kernel histogram)",
                                          labels=S),
            "finfo": g("hftpf_feed_info", "Feed stream protocol", S + ["protocol"]),
            "fexp": g("hftpf_feed_expected_sequence", "Next expected sequence number", S),
            "fend": g("hftpf_feed_ended", "1 after an end of session", S),
            "fpeak": g("hftpf_feed_peak_burst_packets", "Most packets seen in one millisecond", S),
            "fq": g("hftpf_feed_quality_score", "Feed quality 0-100 from kernel counters, cumulative since attach", S),
            "vp": c("hftpf_verdict_packets", "Packets by final verdict", L + ["verdict"]),
            "vb": c("hftpf_verdict_bytes", "Bytes by final verdict", L + ["verdict"]),
            "dp": c("hftpf_dropped_packets", "Packets dropped by the allow-list, by reason", R),
            "db": c("hftpf_dropped_bytes", "Bytes dropped by the allow-list, by reason", R),
            "wp": c("hftpf_would_drop_packets", "Packets enforce mode would drop (monitor/dry-run), by reason", R),
            "wb": c("hftpf_would_drop_bytes", "Bytes enforce mode would drop (monitor/dry-run), by reason", R),
            "pc": c("hftpf_packets", "Packets by parse class", L + ["class"]),
            "up": c("hftpf_unclassified_rx_packets", "Packets that matched no venue", L),
            "ub": c("hftpf_unclassified_rx_bytes", "Bytes that matched no venue", L),
            "loss": c("hftpf_probe_loss", "Everything the probe or agent lost, by reason", R),
            "rbe": c("hftpf_probe_ringbuf_events", "Ring-buffer events submitted by the probe", L),
            "rtts": c("hftpf_probe_rtt_samples", "RTT samples taken by the probe", L),
            "rtx": c("hftpf_probe_rtt_retransmits", "Order-entry retransmits seen by the RTT matcher", L),
            "drn": c("hftpf_agent_events_drained", "Ring-buffer events drained by the agent", L),
            "att": g("hftpf_probe_attached", "1 when the pinned program is attached to the interface", L),
            "run": g("hftpf_agent_running", "1 when the agent that attached the probe is alive", L),
            "since": g("hftpf_probe_attached_since_seconds", "When the probe was attached (Unix time)", L),
            "info": g("hftpf_probe_info", "Probe mode, attach mode and clock", L + ["mode", "attach_mode", "clock",
                                                                                   "abi_version"]),
            "ks": g("hftpf_kill_switch_engaged", "1 while the kill switch is engaged (per venue, or venue=\"\")", V),
        }
        feed = {k: c(f"hftpf_feed_{name}", help_, S) for name, k, help_ in _FEED_COUNTERS}
        for key, d in sorted(ifs.items()):
            clock = d.get("clock", "unknown")
            hists = d.get("histograms") or {}
            for vname, v in sorted((d.get("venues") or {}).items()):
                lv = [key, vname]
                fam["rx_p"].add_metric(lv, v.get("rx_packets", 0))
                fam["rx_b"].add_metric(lv, v.get("rx_bytes", 0))
                fam["tx_p"].add_metric(lv, v.get("tx_packets", 0))
                fam["tx_b"].add_metric(lv, v.get("tx_bytes", 0))
                if v.get("latency_target_us"):
                    fam["tgt"].add_metric(lv, v["latency_target_us"] / 1e6)
                h = (hists.get("rtt") or {}).get(vname)
                if h is not None:
                    fam["rtt"].add_metric(lv, kernel_histogram_buckets(h["buckets"]), h["sum_ns"] / 1e9)
            for sname, st in sorted((d.get("streams") or {}).items()):
                ls = [key, st.get("venue", ""), sname]
                for _, k, _ in _FEED_COUNTERS:
                    feed[k].add_metric(ls, st.get(k, 0) or 0)
                fam["finfo"].add_metric(ls + [st.get("protocol", "unknown")], 1.0)
                fam["fexp"].add_metric(ls, st.get("expected_seq", 0) or 0)
                fam["fend"].add_metric(ls, 1.0 if st.get("ended") else 0.0)
                fam["fpeak"].add_metric(ls, st.get("peak_packets_per_ms", 0) or 0)
                q = snap.kernel_quality_score(st)
                if q is not None:
                    fam["fq"].add_metric(ls, q)
                h = (hists.get("feed_latency") or {}).get(sname)
                if h is not None and clock == "tai":
                    fam["flat"].add_metric(ls, kernel_histogram_buckets(h["buckets"]), h["sum_ns"] / 1e9)
            for verdict, n in sorted((d.get("verdicts") or {}).items()):
                fam["vp"].add_metric([key, verdict], n)
            for verdict, n in sorted((d.get("verdict_bytes") or {}).items()):
                fam["vb"].add_metric([key, verdict], n)
            for reason, dr in sorted((d.get("drops") or {}).items()):
                fam["dp"].add_metric([key, reason], dr.get("dropped_packets", 0))
                fam["db"].add_metric([key, reason], dr.get("dropped_bytes", 0))
                fam["wp"].add_metric([key, reason], dr.get("would_drop_packets", 0))
                fam["wb"].add_metric([key, reason], dr.get("would_drop_bytes", 0))
            for cls, n in sorted((d.get("packet_classes") or {}).items()):
                fam["pc"].add_metric([key, cls], n)
            u = d.get("unclassified") or {}
            fam["up"].add_metric([key], u.get("rx_packets", 0))
            fam["ub"].add_metric([key], u.get("rx_bytes", 0))
            p = d.get("probe") or d.get("health") or {}
            for reason, field in _LOSS_FROM_PROBE:
                fam["loss"].add_metric([key, reason], p.get(field, 0) or 0)
            for reason, n in sorted((d.get("losses") or {}).items()):
                fam["loss"].add_metric([key, reason], n)
            fam["rbe"].add_metric([key], p.get("ringbuf_events", 0) or 0)
            fam["rtts"].add_metric([key], p.get("rtt_samples", 0) or 0)
            fam["rtx"].add_metric([key], p.get("rtt_retransmits", 0) or 0)
            fam["drn"].add_metric([key], p.get("events_drained", 0) or 0)
            fam["att"].add_metric([key], 1.0 if d.get("attached") else 0.0)
            fam["run"].add_metric([key], 1.0 if d.get("agent_running") else 0.0)
            if d.get("attached_since"):
                fam["since"].add_metric([key], float(d["attached_since"]))
            fam["info"].add_metric([key, str(d.get("mode", "")), str(d.get("attach_mode", "")), str(clock),
                                    str(p.get("abi_version", ""))], 1.0)
            ks = d.get("kill_switch")
            if isinstance(ks, dict) and "engaged" not in ks:      # per venue: {VENUE: {"engaged": ...}}
                for vname, k in sorted(ks.items()):
                    fam["ks"].add_metric([key, vname], 1.0 if (k or {}).get("engaged") else 0.0)
            elif ks is not None:                                 # one switch for the interface
                engaged = ks.get("engaged") if isinstance(ks, dict) else ks
                fam["ks"].add_metric([key, ""], 1.0 if engaged else 0.0)
        yield from fam.values()
        yield from feed.values()
        yield from self._agent_families(ifs)

    def _agent_families(self, ifs: Dict[str, Dict[str, Any]]):
        L = ["interface"]
        al = CounterMetricFamily("hftpf_alerts", "Alerts fired, per risk rule", labels=L + ["rule", "severity"])
        od = CounterMetricFamily("hftpf_orders", "Decoded order flow by event", labels=L + ["venue", "event"])
        ol = GaugeMetricFamily("hftpf_order_latency_seconds", "The agent's order latency percentiles",
                               labels=L + ["venue", "metric", "percentile"])
        cv = CounterMetricFamily("hftpf_crossvenue_episodes", "Locked / crossed market episodes", labels=L + ["state"])
        arb = CounterMetricFamily("hftpf_arbitrage_opportunities", "Cross-venue arbitrage opportunities", labels=L)
        ar = CounterMetricFamily("hftpf_audit_records", "Audit trail records written by the agent", labels=L)
        ae = CounterMetricFamily("hftpf_audit_write_errors", "Audit trail writes that failed", labels=L)
        for key, d in sorted(ifs.items()):
            a = d.get("agent")
            if not isinstance(a, dict) or "error" in a:
                continue
            for row in a.get("alert_counts") or []:
                al.add_metric([key, str(row.get("rule")), str(row.get("severity"))], row.get("count", 0))
            for venue, o in sorted((a.get("orders") or {}).items()):
                for event, n in sorted(o.items()):
                    if isinstance(n, (int, float)) and not isinstance(n, bool):
                        od.add_metric([key, venue, event], n)
            for venue, lat in sorted((a.get("latency") or {}).items()):
                for metric, r in sorted((lat or {}).items()):
                    if not isinstance(r, dict) or not r.get("count"):
                        continue
                    for q, k in _PERCENTILES:
                        if r.get(k) is not None:
                            ol.add_metric([key, venue, metric[:-3] if metric.endswith("_us") else metric, q],
                                          r[k] / 1e6)
            tot = (a.get("crossvenue") or {}).get("totals")
            if isinstance(tot, dict):
                for state in ("locked", "crossed"):
                    cv.add_metric([key, state], tot.get(state, 0) or 0)
                arb.add_metric([key], tot.get("arbitrage", 0) or 0)
            au = a.get("audit")
            if isinstance(au, dict):
                ar.add_metric([key], max(0, au.get("next_n", 0)))
                ae.add_metric([key], au.get("errors", 0) or 0)
        yield from (al, od, ol, cv, arb, ar, ae)


# ------------------------------------------------------------------------------------------------ server
def split_listen(listen: str) -> Tuple[str, int]:
    """'HOST:PORT' or '[V6]:PORT' -> (host, port)."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{listen!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512     # 200 simultaneous connects must reach the 503 path, not the backlog

    def __init__(self, addr, handler, family: int, sock: Optional[socket.socket]):
        self.address_family = family
        super().__init__(addr, handler, bind_and_activate=sock is None)
        if sock is not None:
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()
            self.server_activate()


class MetricsServer:
    """The /metrics endpoint; see ``start_exporter``."""

    def __init__(self, provider: Provider, listen: str = "127.0.0.1:9464", *, max_concurrent: int = 4,
                 tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 basic_auth: Optional[Tuple[str, str]] = None, sock: Optional[socket.socket] = None) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(provider, self))
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._count_lock = threading.Lock()
        self.rejected = 0
        self.served = 0
        self._auth = _Auth(*basic_auth) if basic_auth else None
        host, port = split_listen(listen) if sock is None else (None, None)
        family = sock.family if sock is not None else (socket.AF_INET6 if ":" in (host or "") else socket.AF_INET)
        self.httpd = _Server((host, port) if sock is None else ("", 0), self._handler(), family, sock)
        if tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(tls_cert, tls_key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.tls = bool(tls_cert)
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> Tuple[str, int]:
        return self.httpd.server_address[:2]

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{port}/metrics"

    def start(self) -> "MetricsServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="hftpf-metrics", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "hftpf-exporter"
            protocol_version = "HTTP/1.0"
            timeout = 10   # a client that never sends its request cannot hold a thread for ever

            def log_message(self, fmt, *args):  # quiet: a scrape per second is not news
                pass

            def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
                       extra: Iterable[Tuple[str, str]] = ()) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                if server._auth is not None and not server._auth.check(self.headers.get("Authorization")):
                    self._reply(401, b"authentication required\n",
                                extra=[("WWW-Authenticate", 'Basic realm="hftpf", charset="UTF-8"')])
                    return
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self._reply(200, b"<html><body><a href=\"/metrics\">/metrics</a></body></html>\n",
                                "text/html; charset=utf-8")
                    return
                if path != "/metrics":
                    self._reply(404, b"not found: try /metrics\n")
                    return
                if not server._slots.acquire(blocking=False):
                    with server._count_lock:
                        server.rejected += 1
                    self._reply(503, b"too many concurrent scrapes\n", extra=[("Retry-After", "1")])
                    return
                try:
                    body = generate_latest(server.registry)
                    with server._count_lock:
                        server.served += 1
                finally:
                    server._slots.release()
                self._reply(200, body, CONTENT_TYPE_LATEST)

        return Handler


class _Auth:
    def __init__(self, user: str, password: str) -> None:
        self.user = user.encode()
        if password.startswith("sha256:"):
            self.digest = bytes.fromhex(password[7:])
        else:
            self.digest = hashlib.sha256(password.encode()).digest()

    def check(self, header: Optional[str]) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, pw = base64.b64decode(header[6:].strip(), validate=True).partition(b":")
        except ValueError:
            return False
        ok_user = hmac.compare_digest(user, self.user)
        ok_pw = hmac.compare_digest(hashlib.sha256(pw).digest(), self.digest)
        return ok_user and ok_pw


def start_exporter(provider: Provider, listen: str = "127.0.0.1:9464", *, max_concurrent: int = 4,
                   tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                   basic_auth: Optional[Tuple[str, str]] = None, sock: Optional[socket.socket] = None) -> MetricsServer:
    """Serve ``provider``'s snapshots on http(s)://listen/metrics from a daemon thread; returns the
    running server (``.port``, ``.url``, ``.close()``). ``listen`` port 0 picks a free port.
    ``sock``: an unbound/bound TCP socket to serve on instead (e.g. created in another netns)."""
    return MetricsServer(provider, listen, max_concurrent=max_concurrent, tls_cert=tls_cert, tls_key=tls_key,
                         basic_auth=basic_auth, sock=sock).start()


def start_from_config(monitoring, provider: Provider, **kw) -> Optional[MetricsServer]:
    """Start the exporter for a ``config.Monitoring`` section (None when metrics_export is 'none')."""
    if getattr(monitoring, "metrics_export", "prometheus") != "prometheus":
        return None
    host, port = monitoring.listen
    host = f"[{host}]" if ":" in host else host
    return start_exporter(provider, f"{host}:{port}", **kw)


def pin_provider(keys: Iterable[str], interval: float = 1.0) -> Tuple[snap.SnapshotHolder, snap.PinPoller]:
    """A holder fed by a poller thread reading the given pinned probes (started; ``poller.stop()``).
    Use ``holder.doc`` as the exporter's provider."""
    holder = snap.SnapshotHolder()
    poller = snap.PinPoller(holder, list(keys), interval, read=lambda k: snap.probe_document(k, with_agent=True))
    poller.poll_once()
    poller.start()
    return holder, poller
