"""FIX 4.4 order-entry simulators: an order gateway (acceptor) and a trading client (initiator).

Both speak classic tag=value FIX 4.4 over TCP (FIX 4.4 specification, Volume 2 session layer and
Volume 4 order handling), each from one thread driving non-blocking sockets through a selector, so
there are no locks and shutdown is one flag. Incoming bytes are framed and validated (BodyLength,
CheckSum) by our own ``protocols.fix.FixStreamDecoder``; a message it rejects is ignored, as the
session layer requires for a garbled message.

Session layer (both sides): Logon (A, with HeartBtInt 108, ResetSeqNumFlag 141=Y on request),
Heartbeat (0), TestRequest (1, answered with a Heartbeat carrying TestReqID 112), ResendRequest (2,
answered with a SequenceReset-GapFill: we keep no message store), SequenceReset (4), Logout (5) with
the logout handshake. MsgSeqNum: every message we send carries the next number; an incoming number
lower than expected without PossDupFlag ends the session with a Logout, a higher one is answered with
a ResendRequest and accepted (simplification: we do not hold later messages back). A peer silent for
1.5 heartbeat intervals gets a TestRequest; silent for another interval, it is disconnected.

:class:`FixGateway` (acceptor):

* NewOrderSingle (D) -> ExecutionReport New (150=0) after ``ack_delay_us`` (plus any active latency
  spike), then Fill (150=F, 39=2) after ``fill_delay_us`` more, or a PartialFill (39=1) followed by
  the Fill with ``fill_mode="partial"``; ``fill_ratio`` of the orders get filled, the rest rest.
* OrderCancelRequest (F) -> ExecutionReport Canceled (150=4); OrderCancelReplaceRequest (G) ->
  ExecutionReport Replaced (150=5); unknown or finished orders -> OrderCancelReject (9).
* Rejects: a missing required tag -> session Reject (3, 373=1); an invalid value, a duplicate ClOrdID
  or a quantity above ``max_order_qty`` -> ExecutionReport Rejected (150=8, OrdRejReason 103); an
  unsupported application message -> BusinessMessageReject (j).
* Latency spikes: :class:`Spike` (start, duration, extra microseconds) relative to ``start()``, or
  :meth:`FixGateway.spike` now. Every acknowledgement sent during a spike is delayed by the extra.

:class:`FixClient` (initiator): logs on, sends ``orders`` NewOrderSingle (limit orders around a
random-walk price per symbol) at ``rate`` messages/s, with ``cancel_ratio`` / ``replace_ratio`` of
extra cancels / replaces of its own open orders, and one fat-finger order (``fat_finger_qty``
shares) as new order number ``fat_finger_at``. It records every request's latency to its first
answer (ExecutionReport or OrderCancelReject for its ClOrdID) in ``client.acks``, waits for the
outstanding answers (``drain_timeout``) and for fills of open orders (``linger_s``), logs out and
closes.

Bounds: client rate <= ``MAX_RATE`` msg/s and orders <= ``MAX_ORDERS``; gateway sessions <=
``max_sessions``; ``record=True`` keeps at most ``MAX_RECORD`` bytes of each direction's wire bytes.
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
import selectors
import socket
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..protocols.fix import FixMessage, FixStreamDecoder

SOH = b"\x01"
BEGIN_STRING = "FIX.4.4"
MAX_RATE = 10_000            # client messages per second
MAX_ORDERS = 1_000_000
MAX_RECORD = 8 << 20         # bytes of wire transcript kept per direction
MAX_OUTBUF = 16 << 20        # a peer that stops reading is disconnected beyond this

# OrdRejReason (103) and CxlRejReason (102) values used here
REJ_OTHER, REJ_EXCEEDS_LIMIT, REJ_DUPLICATE = 99, 3, 6
CXL_TOO_LATE, CXL_UNKNOWN = 0, 1


def fix_checksum(data: bytes) -> int:
    """Sum of the bytes modulo 256 (FIX CheckSum, tag 10)."""
    return sum(data) & 0xFF


def utc_timestamp(ns: Optional[int] = None) -> str:
    """UTCTimestamp with milliseconds: YYYYMMDD-HH:MM:SS.sss"""
    ns = time.time_ns() if ns is None else ns
    sec, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(sec)) + ".%03d" % (rem // 1_000_000)


def encode(msg_type: str, sender: str, target: str, seq: int, fields: Sequence[Tuple[int, object]] = (),
           sending_ns: Optional[int] = None, begin_string: str = BEGIN_STRING,
           header_extra: Sequence[Tuple[int, object]] = ()) -> bytes:
    """One complete FIX message: 8, 9 (BodyLength), 35, 49, 56, 34, 52, extra header, body, 10."""
    parts = [f"35={msg_type}", f"49={sender}", f"56={target}", f"34={seq}", f"52={utc_timestamp(sending_ns)}"]
    parts.extend(f"{t}={v}" for t, v in header_extra)
    parts.extend(f"{t}={v}" for t, v in fields)
    body = ("\x01".join(parts) + "\x01").encode("latin-1")
    head = f"8={begin_string}\x019={len(body)}\x01".encode("latin-1")
    msg = head + body
    return msg + b"10=%03d\x01" % fix_checksum(msg)


def _fmt_px(px: float) -> str:
    return f"{px:.4f}".rstrip("0").rstrip(".") if px != int(px) else str(int(px))


def _num(v: Optional[bytes]) -> Optional[float]:
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None


class _Session:
    """One FIX session over one non-blocking TCP socket. The owner's loop calls ``on_readable``,
    ``flush`` and ``timers``; ``app`` handles application messages."""

    def __init__(self, sock: socket.socket, sender: str, target: Optional[str], heartbeat_s: float,
                 app: Callable[["_Session", FixMessage], None], record: bool = False,
                 begin_string: str = BEGIN_STRING, log: Optional[Callable[[str], None]] = None) -> None:
        self.sock = sock
        self.sender = sender
        self.target = target
        self.heartbeat_s = heartbeat_s
        self.app = app
        self.begin_string = begin_string
        self.log = log or (lambda s: None)
        self.decoder = FixStreamDecoder(checksum="strict")
        self.out_seq = 1
        self.in_seq = 1
        self.outbuf = bytearray()
        self.logged_on = False
        self.logout_sent = False
        self.closing = False          # close once the output buffer is flushed
        self.closed = False
        self.last_rx = self.last_tx = time.monotonic()
        self.test_req_at: Optional[float] = None
        self.record = record
        self.wire_out = bytearray()
        self.wire_in = bytearray()
        self.counts: Dict[str, int] = {}
        self.seq_errors = 0
        self.resend_requests_sent = 0
        self.error: Optional[str] = None

    # -- output
    def send(self, msg_type: str, fields: Sequence[Tuple[int, object]] = (),
             header_extra: Sequence[Tuple[int, object]] = (), seq: Optional[int] = None) -> int:
        """Queue one message; returns its MsgSeqNum. ``seq`` given: a resend-style message that does
        not consume a sequence number (SequenceReset-GapFill)."""
        if self.closed:
            return 0
        use = self.out_seq if seq is None else seq
        raw = encode(msg_type, self.sender, self.target or "", use, fields, begin_string=self.begin_string,
                     header_extra=header_extra)
        if seq is None:
            self.out_seq += 1
        self.outbuf += raw
        if self.record and len(self.wire_out) + len(raw) <= MAX_RECORD:
            self.wire_out += raw
        self.last_tx = time.monotonic()
        self.counts["sent_" + msg_type] = self.counts.get("sent_" + msg_type, 0) + 1
        if len(self.outbuf) > MAX_OUTBUF:
            self.error = "peer not reading"
            self.close()
        return use

    def flush(self) -> None:
        while self.outbuf and not self.closed:
            try:
                n = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.error = f"send: {e}"
                self.close()
                return
            del self.outbuf[:n]
        if self.closing and not self.outbuf:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def logout(self, text: str = "") -> None:
        if not self.logout_sent and not self.closed:
            self.logout_sent = True
            self.send("5", [(58, text)] if text else [])

    # -- input
    def on_readable(self) -> List[FixMessage]:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as e:
            self.error = f"recv: {e}"
            self.close()
            return []
        if not data:
            if not self.logout_sent:
                self.error = self.error or "peer closed the connection"
            self.close()
            return []
        if self.record and len(self.wire_in) + len(data) <= MAX_RECORD:
            self.wire_in += data
        self.last_rx = time.monotonic()
        self.test_req_at = None
        msgs = self.decoder.feed(data, time.monotonic_ns())
        for m in msgs:
            if self.closed:
                break
            self._process(m)
        return msgs

    def _process(self, m: FixMessage) -> None:
        t = m.msg_type
        self.counts["recv_" + t] = self.counts.get("recv_" + t, 0) + 1
        seq = m.msg_seq_num
        if seq is None:
            self.send("3", [(45, 0), (373, 1), (371, 34), (58, "MsgSeqNum missing")])
            return
        if t == "4":                                        # SequenceReset (gap fill or reset)
            new = m.get_int(36)
            if new is not None and new >= self.in_seq:
                self.in_seq = new
            return
        if t == "A" and m.get(141) == b"Y":
            self.in_seq = 1
        if seq < self.in_seq:
            if m.get(43) == b"Y":                           # a possible duplicate: ignore
                return
            self.seq_errors += 1
            self.logout(f"MsgSeqNum too low, expecting {self.in_seq} but received {seq}")
            self.closing = True
            return
        if seq > self.in_seq:
            self.seq_errors += 1
            self.resend_requests_sent += 1
            self.send("2", [(7, self.in_seq), (16, 0)])
        self.in_seq = seq + 1
        if t == "0":
            return
        if t == "1":
            self.send("0", [(112, (m.get(112) or b"").decode("latin-1"))])
            return
        if t == "2":
            begin = m.get_int(7) or 1
            self.send("4", [(123, "Y"), (36, self.out_seq)],
                      header_extra=[(43, "Y"), (122, utc_timestamp())], seq=begin)
            return
        if t == "5":
            if not self.logout_sent:
                self.logout()
            self.closing = True
            return
        self.app(self, m)

    def timers(self, now: float) -> None:
        if self.closed or not self.logged_on:
            return
        hb = self.heartbeat_s
        if hb <= 0:
            return
        if now - self.last_tx >= hb:
            self.send("0")
        silent = now - self.last_rx
        if self.test_req_at is None and silent >= 1.5 * hb:
            self.test_req_at = now
            self.send("1", [(112, f"TEST{int(now * 1000)}")])
        elif self.test_req_at is not None and now - self.test_req_at >= hb:
            self.error = "peer silent after a TestRequest"
            self.close()


def _selector() -> selectors.BaseSelector:
    # select(2) takes a microsecond timeout; epoll/poll round theirs up to milliseconds, which would
    # make a 200 us acknowledgement delay a 1 ms one.
    return selectors.SelectSelector()


# ============================================================================================
# gateway


@dataclasses.dataclass
class Spike:
    """Delay every acknowledgement by ``extra_us`` from ``at_s`` to ``at_s + seconds`` after start."""

    at_s: float
    seconds: float
    extra_us: int

    @classmethod
    def parse(cls, text: str) -> "Spike":
        """CLI form AT_S:SECONDS:EXTRA_US, e.g. 10:2:5000."""
        a, s, e = text.split(":")
        return cls(float(a), float(s), int(e))


class _Order:
    __slots__ = ("order_id", "cl_ord_id", "symbol", "side", "qty", "price", "cum", "status", "version",
                 "ack_due", "session", "ord_type")

    def __init__(self, order_id, cl_ord_id, symbol, side, qty, price, ord_type, session) -> None:
        self.order_id = order_id
        self.cl_ord_id = cl_ord_id
        self.symbol = symbol
        self.side = side
        self.qty = qty
        self.price = price
        self.ord_type = ord_type
        self.cum = 0.0
        self.status = "pending"     # pending -> new -> partial -> filled | canceled
        self.version = 0
        self.ack_due = 0
        self.session = session


class FixGateway:
    """FIX 4.4 acceptor (see the module docstring). ``start()`` binds and runs a thread; ``stop()``
    logs every session out and closes. ``listen`` port 0 picks a free port (see ``address``)."""

    def __init__(self, listen: Tuple[str, int] = ("127.0.0.1", 0), netns: Optional[str] = None,
                 comp_id: str = "GATEWAY", ack_delay_us: int = 200, fill_delay_us: int = 1000,
                 fill_mode: str = "full", fill_ratio: float = 1.0, max_order_qty: float = 1_000_000,
                 spikes: Sequence[Spike] = (), max_sessions: int = 16, seed: int = 11,
                 record: bool = False, log: Optional[Callable[[str], None]] = None) -> None:
        if fill_mode not in ("full", "partial", "none"):
            raise ValueError("fill_mode must be full, partial or none")
        if not 0 <= ack_delay_us <= 10_000_000 or not 0 <= fill_delay_us <= 60_000_000:
            raise ValueError("ack delay must be <= 10 s and fill delay <= 60 s")
        if not 1 <= max_sessions <= 256:
            raise ValueError("max_sessions must be 1..256")
        self.listen_addr = (listen[0], int(listen[1]))
        self.netns = netns
        self.comp_id = comp_id
        self.ack_delay_ns = int(ack_delay_us) * 1000
        self.fill_delay_ns = int(fill_delay_us) * 1000
        self.fill_mode = fill_mode
        self.fill_ratio = fill_ratio
        self.max_order_qty = max_order_qty
        self.spikes = list(spikes)
        self.max_sessions = max_sessions
        self.rng = random.Random(seed)
        self.record = record
        self.log = log or (lambda s: None)
        self._manual_spikes: List[Tuple[int, int, int]] = []     # (start ns, end ns, extra ns) monotonic
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lsock: Optional[socket.socket] = None
        self._sessions: List[_Session] = []
        self._orders: Dict[Tuple[int, str], _Order] = {}         # (session id, ClOrdID) -> order
        self._heap: List[tuple] = []
        self._tie = itertools.count()
        self._ids = itertools.count(1)
        self._t0 = 0
        self.address: Optional[Tuple[str, int]] = None
        self.error: Optional[BaseException] = None
        self.finished_sessions: List[_Session] = []
        self.st = {k: 0 for k in ("connections", "refused", "logons", "orders", "acks", "fills", "partial_fills",
                                  "cancels", "replaces", "rejects", "cancel_rejects", "session_rejects",
                                  "business_rejects", "spiked_acks")}

    # -- control
    def start(self) -> "FixGateway":
        from ..kernel.netlab import socket_in

        s = socket_in(self.netns, socket.AF_INET, socket.SOCK_STREAM) if self.netns else \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(self.listen_addr)
            s.listen(self.max_sessions)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self._lsock = s
        self.address = s.getsockname()[:2]
        self._t0 = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="fixsim-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "FixGateway":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def spike(self, extra_us: int, seconds: float) -> None:
        """Start a latency spike now (thread-safe: a list append)."""
        now = time.monotonic_ns()
        self._manual_spikes.append((now, now + int(seconds * 1e9), int(extra_us) * 1000))

    def _extra_ns(self, now: int) -> int:
        rel = (now - self._t0) / 1e9
        extra = sum(int(s.extra_us * 1000) for s in self.spikes if s.at_s <= rel < s.at_s + s.seconds)
        extra += sum(e for a, b, e in list(self._manual_spikes) if a <= now < b)
        return extra

    # -- loop
    def _at(self, due_ns: int, fn, *args) -> None:
        heapq.heappush(self._heap, (due_ns, next(self._tie), fn, args))

    def _run(self) -> None:
        sel = _selector()
        sel.register(self._lsock, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                now_ns = time.monotonic_ns()
                timeout = 0.05
                if self._heap:
                    timeout = max(0.0, min(timeout, (self._heap[0][0] - now_ns) / 1e9))
                for key, mask in sel.select(timeout):
                    if key.data is None:
                        self._accept(sel)
                        continue
                    sess = key.data
                    if mask & selectors.EVENT_READ:
                        sess.on_readable()
                    if mask & selectors.EVENT_WRITE:
                        sess.flush()
                now_ns = time.monotonic_ns()
                while self._heap and self._heap[0][0] <= now_ns:
                    _, _, fn, args = heapq.heappop(self._heap)
                    fn(*args)
                now = time.monotonic()
                for sess in list(self._sessions):
                    sess.timers(now)
                    sess.flush()
                    self._watch(sel, sess)
        except BaseException as e:  # noqa: BLE001 - kept for the owner
            self.error = e
        finally:
            self._shutdown(sel)

    def _watch(self, sel, sess: _Session) -> None:
        if sess.closed:
            try:
                sel.unregister(sess.sock)
            except (KeyError, ValueError, OSError):
                pass
            self._sessions.remove(sess)
            self.finished_sessions.append(sess)
            if sess.error:
                self.log(f"gateway: session {sess.target}: {sess.error}")
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if sess.outbuf else 0)
        try:
            if sel.get_key(sess.sock).events != want:
                sel.modify(sess.sock, want, sess)
        except (KeyError, ValueError):
            pass

    def _accept(self, sel) -> None:
        try:
            conn, peer = self._lsock.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.st["connections"] += 1
        if len(self._sessions) >= self.max_sessions:
            self.st["refused"] += 1
            conn.close()
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sess = _Session(conn, self.comp_id, None, 30.0, self._app, record=self.record, log=self.log)
        sess.peer = peer
        sess.sid = next(self._ids)
        self._sessions.append(sess)
        sel.register(conn, selectors.EVENT_READ, sess)

    def _shutdown(self, sel) -> None:
        for sess in self._sessions:
            if sess.logged_on and not sess.closed:
                sess.logout("gateway shutting down")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(s.outbuf and not s.closed for s in self._sessions):
            for s in self._sessions:
                s.flush()
            time.sleep(0.005)
        for s in self._sessions:
            s.close()
            self.finished_sessions.append(s)
        self._sessions = []
        try:
            sel.close()
        except Exception:  # noqa: BLE001
            pass
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None

    # -- application
    def _app(self, sess: _Session, m: FixMessage) -> None:
        t = m.msg_type
        if not sess.logged_on:
            if t != "A":
                sess.logout("first message must be Logon")
                sess.closing = True
                return
            target = m.target_comp_id
            if target != self.comp_id:
                sess.target = m.sender_comp_id or "UNKNOWN"
                sess.logout(f"unknown TargetCompID {target!r}")
                sess.closing = True
                return
            sess.target = m.sender_comp_id or "CLIENT"
            hb = m.get_int(108)
            sess.heartbeat_s = float(hb) if hb and hb > 0 else 30.0
            reset = m.get(141) == b"Y"
            if reset:
                sess.out_seq = 1
            fields = [(98, 0), (108, hb if hb is not None else 30)]
            if reset:
                fields.append((141, "Y"))
            sess.send("A", fields)
            sess.logged_on = True
            self.st["logons"] += 1
            self.log(f"gateway: {sess.target} logged on")
            return
        if t == "D":
            self._new_order(sess, m)
        elif t == "F":
            self._cancel(sess, m)
        elif t == "G":
            self._replace(sess, m)
        elif t == "A":
            self._session_reject(sess, m, 0, "already logged on", 5)
        else:
            self.st["business_rejects"] += 1
            sess.send("j", [(45, m.msg_seq_num or 0), (372, t), (380, 3), (58, "unsupported message type")])

    def _session_reject(self, sess: _Session, m: FixMessage, tag: int, text: str, reason: int = 1) -> None:
        self.st["session_rejects"] += 1
        f = [(45, m.msg_seq_num or 0), (372, m.msg_type)]
        if tag:
            f.append((371, tag))
        f += [(373, reason), (58, text)]
        sess.send("3", f)

    def _missing(self, sess: _Session, m: FixMessage, tags: Sequence[int]) -> bool:
        for tag in tags:
            if not m.get(tag):
                self._session_reject(sess, m, tag, f"required tag {tag} missing")
                return True
        return False

    def _ack_time(self, now: int) -> int:
        extra = self._extra_ns(now)
        if extra:
            self.st["spiked_acks"] += 1
        return now + self.ack_delay_ns + extra

    def _er(self, o: _Order, exec_type: str, ord_status: str, extra: Sequence[Tuple[int, object]] = (),
            cl_ord_id: Optional[str] = None) -> None:
        leaves = 0 if ord_status in ("2", "4", "8") else max(0.0, o.qty - o.cum)
        fields = [(37, o.order_id), (11, cl_ord_id or o.cl_ord_id), (17, f"E{next(self._ids)}"),
                  (150, exec_type), (39, ord_status), (55, o.symbol), (54, o.side), (38, _fmt_px(o.qty))]
        if o.price is not None:
            fields.append((44, _fmt_px(o.price)))
        fields += list(extra)
        fields += [(151, _fmt_px(leaves)), (14, _fmt_px(o.cum)),
                   (6, _fmt_px(o.price if (o.cum and o.price is not None) else 0)), (60, utc_timestamp())]
        o.session.send("8", fields)

    def _reject_order(self, sess: _Session, m: FixMessage, reason: int, text: str) -> None:
        self.st["rejects"] += 1
        self.st["acks"] += 1
        o = _Order("NONE", m.cl_ord_id or "", m.symbol or "", m.side or "1", _num(m.get(38)) or 0,
                   _num(m.get(44)), "2", sess)
        self._at(self._ack_time(time.monotonic_ns()), self._er, o, "8", "8", [(103, reason), (58, text)])

    def _new_order(self, sess: _Session, m: FixMessage) -> None:
        if self._missing(sess, m, (11, 55, 54, 38, 40)):
            return
        self.st["orders"] += 1
        clid = m.cl_ord_id
        qty = _num(m.get(38))
        price = _num(m.get(44))
        ord_type = m.get_str(40)
        side = m.side
        if side not in ("1", "2", "5", "6"):
            return self._reject_order(sess, m, REJ_OTHER, f"invalid Side {side!r}")
        if qty is None or qty <= 0:
            return self._reject_order(sess, m, REJ_OTHER, "OrderQty must be positive")
        if ord_type not in ("1", "2"):
            return self._reject_order(sess, m, REJ_OTHER, f"unsupported OrdType {ord_type!r}")
        if ord_type == "2" and (price is None or price <= 0):
            return self._reject_order(sess, m, REJ_OTHER, "limit order needs a positive Price")
        if (sess.sid, clid) in self._orders:
            return self._reject_order(sess, m, REJ_DUPLICATE, f"duplicate ClOrdID {clid}")
        if qty > self.max_order_qty:
            return self._reject_order(sess, m, REJ_EXCEEDS_LIMIT,
                                      f"OrderQty {_fmt_px(qty)} exceeds limit {_fmt_px(self.max_order_qty)}")
        o = _Order(f"O{next(self._ids)}", clid, m.symbol, side, qty, price if ord_type == "2" else 100.0,
                   ord_type, sess)
        self._orders[(sess.sid, clid)] = o
        now = time.monotonic_ns()
        o.ack_due = self._ack_time(now)
        self._at(o.ack_due, self._ack_new, o, clid)
        if self.fill_mode != "none" and self.rng.random() < self.fill_ratio:
            self._at(o.ack_due + self.fill_delay_ns, self._fill, o, o.version)

    def _ack_new(self, o: _Order, clid: str) -> None:
        if o.status == "pending":
            o.status = "new"
        self.st["acks"] += 1
        self._er(o, "0", "0", cl_ord_id=clid)

    def _fill(self, o: _Order, version: int) -> None:
        if o.version != version or o.status in ("filled", "canceled") or o.session.closed:
            return
        leaves = o.qty - o.cum
        if leaves <= 0:
            return
        if self.fill_mode == "partial" and o.cum == 0 and leaves >= 2:
            q = float(int(leaves // 2))
            o.cum += q
            o.status = "partial"
            self.st["partial_fills"] += 1
            self._er(o, "F", "1", [(31, _fmt_px(o.price)), (32, _fmt_px(q))])
            self._at(time.monotonic_ns() + self.fill_delay_ns, self._fill, o, o.version)
            return
        o.cum += leaves
        o.status = "filled"
        self.st["fills"] += 1
        self._er(o, "F", "2", [(31, _fmt_px(o.price)), (32, _fmt_px(leaves))])

    def _cxl_reject(self, sess: _Session, m: FixMessage, o: Optional[_Order], reason: int, text: str,
                    response_to: str) -> None:
        self.st["cancel_rejects"] += 1
        self.st["acks"] += 1
        fields = [(37, o.order_id if o else "NONE"), (11, m.cl_ord_id or ""), (41, m.orig_cl_ord_id or ""),
                  (39, {"filled": "2", "canceled": "4", "partial": "1"}.get(o.status, "0") if o else "8"),
                  (434, response_to), (102, reason), (58, text)]
        now = time.monotonic_ns()
        self._at(self._ack_time(now), sess.send, "9", fields)

    def _lookup(self, sess: _Session, m: FixMessage, response_to: str) -> Optional[_Order]:
        o = self._orders.get((sess.sid, m.orig_cl_ord_id))
        if o is None:
            self._cxl_reject(sess, m, None, CXL_UNKNOWN, "unknown order", response_to)
            return None
        if o.status in ("filled", "canceled"):
            self._cxl_reject(sess, m, o, CXL_TOO_LATE, f"order already {o.status}", response_to)
            return None
        if (sess.sid, m.cl_ord_id) in self._orders:
            self._cxl_reject(sess, m, o, REJ_DUPLICATE, "duplicate ClOrdID", response_to)
            return None
        return o

    def _cancel(self, sess: _Session, m: FixMessage) -> None:
        if self._missing(sess, m, (11, 41)):
            return
        o = self._lookup(sess, m, "1")
        if o is None:
            return
        o.status = "canceled"
        o.version += 1
        self._orders[(sess.sid, m.cl_ord_id)] = o
        self.st["cancels"] += 1
        self.st["acks"] += 1
        due = max(self._ack_time(time.monotonic_ns()), o.ack_due)
        self._at(due, self._er, o, "4", "4", [(41, m.orig_cl_ord_id)], m.cl_ord_id)

    def _replace(self, sess: _Session, m: FixMessage) -> None:
        if self._missing(sess, m, (11, 41, 38)):
            return
        o = self._lookup(sess, m, "2")
        if o is None:
            return
        qty = _num(m.get(38))
        price = _num(m.get(44))
        if qty is None or qty <= o.cum or qty > self.max_order_qty or (price is not None and price <= 0):
            self._cxl_reject(sess, m, o, REJ_OTHER, "invalid replace quantity or price", "2")
            return
        o.qty = qty
        if price is not None:
            o.price = price
        o.cl_ord_id = m.cl_ord_id
        o.version += 1
        self._orders[(sess.sid, m.cl_ord_id)] = o
        self.st["replaces"] += 1
        self.st["acks"] += 1
        due = max(self._ack_time(time.monotonic_ns()), o.ack_due)
        self._at(due, self._er, o, "5", "1" if o.cum else "0", [(41, m.orig_cl_ord_id)], m.cl_ord_id)
        if self.fill_mode != "none" and self.rng.random() < self.fill_ratio:
            self._at(due + self.fill_delay_ns, self._fill, o, o.version)

    def stats(self) -> dict:
        out = dict(self.st)
        out["sessions_open"] = len(self._sessions)
        out["address"] = None if self.address is None else f"{self.address[0]}:{self.address[1]}"
        out["error"] = None if self.error is None else repr(self.error)
        return out


# ============================================================================================
# client


class FixClient:
    """FIX 4.4 initiator (see the module docstring). ``start()`` runs it in a thread (``join()`` /
    ``done`` / ``stop()``); ``run()`` runs it in the caller's thread. Results: ``stats()``, ``acks``
    (one dict per request: cl_ord_id, msg_type D/F/G, sent_ns and ack_ns (wall clock), latency_us
    (monotonic), answer (ExecType or "9")), ``latencies_us(msg_type)``."""

    def __init__(self, connect: Tuple[str, int] = ("127.0.0.1", 9878), netns: Optional[str] = None,
                 sender_comp_id: str = "CLIENT", target_comp_id: str = "GATEWAY", orders: int = 100,
                 rate: float = 50.0, cancel_ratio: float = 0.0, replace_ratio: float = 0.0,
                 fat_finger_at: Optional[int] = None, fat_finger_qty: int = 10_000_000,
                 symbols: Sequence[str] = ("AAPL", "MSFT", "NVDA"), heartbeat_s: int = 30, seed: int = 1,
                 reset_seq: bool = True, connect_timeout: float = 5.0, drain_timeout: float = 5.0,
                 record: bool = False, account: Optional[str] = None, cl_ord_prefix: Optional[str] = None,
                 log: Optional[Callable[[str], None]] = None, source: Optional[Tuple[str, int]] = None,
                 linger_s: float = 0.5) -> None:
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be in (0, {MAX_RATE}] messages/s")
        if not 0 <= orders <= MAX_ORDERS:
            raise ValueError(f"orders must be 0..{MAX_ORDERS}")
        if not 0 <= cancel_ratio + replace_ratio < 1:
            raise ValueError("cancel_ratio + replace_ratio must be in [0, 1)")
        if not 1 <= heartbeat_s <= 3600:
            raise ValueError("heartbeat_s must be 1..3600")
        self.connect_addr = (connect[0], int(connect[1]))
        self.netns = netns
        self.sender, self.target = sender_comp_id, target_comp_id
        self.n_orders = orders
        self.rate = float(rate)
        self.cancel_ratio, self.replace_ratio = cancel_ratio, replace_ratio
        self.fat_finger_at = fat_finger_at
        self.fat_finger_qty = fat_finger_qty
        self.symbols = list(symbols)
        self.heartbeat_s = heartbeat_s
        self.rng = random.Random(seed)
        self.reset_seq = reset_seq
        self.connect_timeout = connect_timeout
        self.drain_timeout = drain_timeout
        self.record = record
        self.account = account
        self.prefix = cl_ord_prefix or f"{sender_comp_id}-{int(time.time())}-"
        self.log = log or (lambda s: None)
        self.source = source
        self.linger_s = linger_s
        self._mid = {s: 100.0 + 10 * i for i, s in enumerate(self.symbols)}
        self._stop = threading.Event()
        self.done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.session: Optional[_Session] = None
        self.acks: List[dict] = []
        self._pending: Dict[str, dict] = {}
        self._open: Dict[str, dict] = {}                    # ClOrdID -> {symbol, side, qty, price}
        self._busy: set = set()                             # ClOrdIDs with a cancel/replace in flight
        self._next_id = 1
        self.sent = {"D": 0, "F": 0, "G": 0}
        self.exec_reports = 0
        self.answers: Dict[str, int] = {}                    # ExecType / "9" -> count
        self.fills = 0
        self.fat_finger: Optional[dict] = None
        self.fat_finger_sent = 0
        self.logged_on = False
        self.logged_out = False
        self.error: Optional[str] = None
        self.elapsed_s = 0.0

    # -- control
    def start(self) -> "FixClient":
        self._thread = threading.Thread(target=self.run, name="fixsim-client", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: Optional[float] = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.done.is_set()

    def stop(self) -> None:
        self._stop.set()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- helpers
    def _clid(self) -> str:
        c = f"{self.prefix}{self._next_id}"
        self._next_id += 1
        return c

    def _send_request(self, msg_type: str, fields: List[Tuple[int, object]], clid: str, **info) -> None:
        s = self.session
        mono, wall = time.monotonic_ns(), time.time_ns()
        s.send(msg_type, fields)
        s.flush()
        self.sent[msg_type] += 1
        self._pending[clid] = {"cl_ord_id": clid, "msg_type": msg_type, "sent_mono": mono, "sent_ns": wall, **info}

    def _new_order(self, index: int) -> None:
        sym = self.rng.choice(self.symbols)
        mid = self._mid[sym] = max(1.0, round(self._mid[sym] + self.rng.choice((-0.01, 0, 0.01)), 2))
        side = "1" if self.rng.random() < 0.5 else "2"
        price = round(mid + (-1 if side == "1" else 1) * 0.01 * self.rng.randint(0, 5), 2)
        qty = 100 * self.rng.randint(1, 5)
        fat = self.fat_finger_at is not None and index == self.fat_finger_at
        if fat:
            qty = int(self.fat_finger_qty)
        clid = self._clid()
        fields: List[Tuple[int, object]] = [(11, clid)]
        if self.account:
            fields.append((1, self.account))
        fields += [(21, 1), (55, sym), (54, side), (60, utc_timestamp()), (38, qty), (40, 2),
                   (44, f"{price:.2f}"), (59, 0)]
        self._send_request("D", fields, clid, symbol=sym, side=side, qty=qty, price=price, fat_finger=fat)
        if fat:
            self.fat_finger_sent += 1
            self.fat_finger = {"cl_ord_id": clid, "qty": qty, "symbol": sym, "index": index,
                               "sent_ns": self._pending[clid]["sent_ns"]}
            self.log(f"client: fat-finger order {clid} {qty} {sym}")

    def _cancel_or_replace(self, kind: str) -> bool:
        choices = [c for c in self._open if c not in self._busy]
        if not choices:
            return False
        orig = self.rng.choice(choices)
        o = self._open[orig]
        clid = self._clid()
        if kind == "F":
            fields = [(41, orig), (11, clid), (55, o["symbol"]), (54, o["side"]), (60, utc_timestamp()),
                      (38, o["qty"])]
            self._send_request("F", fields, clid, orig=orig)
        else:
            qty = o["qty"] + 100
            price = round(o["price"] + (-0.01 if o["side"] == "1" else 0.01), 2)
            fields = [(41, orig), (11, clid), (21, 1), (55, o["symbol"]), (54, o["side"]),
                      (60, utc_timestamp()), (38, qty), (40, 2), (44, f"{price:.2f}")]
            self._send_request("G", fields, clid, orig=orig, qty=qty, price=price)
        self._busy.add(orig)
        return True

    def _on_app(self, sess: _Session, m: FixMessage) -> None:
        t = m.msg_type
        if t == "A":
            self.logged_on = True
            sess.logged_on = True
            return
        if t not in ("8", "9"):
            if t in ("3", "j"):
                self.answers[t] = self.answers.get(t, 0) + 1
                ref = m.get_int(45)
                self.log(f"client: {t} for seq {ref}: {m.get_str(58)}")
            return
        now_mono, now_wall = time.monotonic_ns(), time.time_ns()
        clid = m.cl_ord_id
        key = "9" if t == "9" else (m.exec_type or "?")
        if t == "8":
            self.exec_reports += 1
        self.answers[key] = self.answers.get(key, 0) + 1
        p = self._pending.pop(clid, None)
        if p is not None:
            self.acks.append({"cl_ord_id": clid, "msg_type": p["msg_type"], "sent_ns": p["sent_ns"],
                              "ack_ns": now_wall, "latency_us": (now_mono - p["sent_mono"]) / 1000.0,
                              "answer": key, "fat_finger": p.get("fat_finger", False)})
            orig = p.get("orig")
            if orig is not None:
                self._busy.discard(orig)
        if t == "9":
            return
        status = m.ord_status
        if key in ("F", "1", "2") or status in ("1", "2"):
            if key in ("F", "1", "2"):
                self.fills += 1
        orig = m.orig_cl_ord_id
        if status in ("0", "1"):
            if orig and orig in self._open and key == "5":
                o = self._open.pop(orig)
                if p is not None:
                    o.update(qty=p.get("qty", o["qty"]), price=p.get("price", o["price"]))
                self._open[clid] = o
            elif clid not in self._open and p is not None and p["msg_type"] == "D":
                self._open[clid] = {k: p[k] for k in ("symbol", "side", "qty", "price")}
        elif status in ("2", "4", "8"):
            self._open.pop(clid, None)
            if orig:
                self._open.pop(orig, None)

    # -- main
    def run(self) -> None:
        from ..kernel.netlab import socket_in

        t0 = time.monotonic()
        sel = _selector()
        sock = None
        try:
            sock = socket_in(self.netns, socket.AF_INET, socket.SOCK_STREAM) if self.netns else \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(self.connect_timeout)
            if self.source is not None:
                sock.bind(self.source)
            sock.connect(self.connect_addr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            sess = self.session = _Session(sock, self.sender, self.target, float(self.heartbeat_s), self._on_app,
                                           record=self.record, log=self.log)
            sel.register(sock, selectors.EVENT_READ, sess)
            logon = [(98, 0), (108, self.heartbeat_s)]
            if self.reset_seq:
                logon.append((141, "Y"))
            sess.send("A", logon)
            sess.flush()
            deadline = time.monotonic() + self.connect_timeout
            while not self.logged_on:
                if sess.closed or time.monotonic() > deadline or self._stop.is_set():
                    raise ConnectionError(sess.error or "no Logon response")
                self._pump(sel, 0.05)
            self.log(f"client: logged on to {self.connect_addr[0]}:{self.connect_addr[1]}")
            interval = 1.0 / self.rate
            next_t = time.monotonic()
            index = 0
            while index < self.n_orders and not self._stop.is_set() and not sess.closed:
                now = time.monotonic()
                if now < next_t:
                    self._pump(sel, min(next_t - now, 0.05))
                    continue
                r = self.rng.random()
                sent = False
                if r < self.cancel_ratio:
                    sent = self._cancel_or_replace("F")
                elif r < self.cancel_ratio + self.replace_ratio:
                    sent = self._cancel_or_replace("G")
                if not sent:
                    self._new_order(index)
                    index += 1
                next_t += interval
                if time.monotonic() - next_t > 0.25:   # far behind: do not burst
                    next_t = time.monotonic()
                self._pump(sel, 0)
            deadline = time.monotonic() + self.drain_timeout
            while self._pending and not sess.closed and time.monotonic() < deadline and not self._stop.is_set():
                self._pump(sel, 0.02)
            # then give fills of still-open orders up to linger_s to arrive (orders that rest stay open)
            deadline = min(deadline, time.monotonic() + self.linger_s)
            while self._open and not sess.closed and time.monotonic() < deadline and not self._stop.is_set():
                self._pump(sel, 0.01)
            if not sess.closed:
                sess.logout()
                sess.flush()
                deadline = time.monotonic() + 2.0
                while not sess.closed and time.monotonic() < deadline:
                    self._pump(sel, 0.02)
                    if sess.counts.get("recv_5"):
                        self.logged_out = True
                        break
        except Exception as e:  # noqa: BLE001 - reported through .error / stats()
            self.error = f"{type(e).__name__}: {e}"
            self.log(f"client: {self.error}")
        finally:
            if self.session is not None:
                self.session.close()
            elif sock is not None:
                sock.close()
            try:
                sel.close()
            except Exception:  # noqa: BLE001
                pass
            self.elapsed_s = time.monotonic() - t0
            self.done.set()

    def _pump(self, sel, timeout: float) -> None:
        sess = self.session
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if sess.outbuf else 0)
        try:
            if sel.get_key(sess.sock).events != want:
                sel.modify(sess.sock, want, sess)
        except (KeyError, ValueError):
            return
        for key, mask in sel.select(max(0.0, timeout)):
            if mask & selectors.EVENT_READ:
                sess.on_readable()
            if mask & selectors.EVENT_WRITE:
                sess.flush()
        sess.timers(time.monotonic())
        sess.flush()
        if sess.closed:
            try:
                sel.unregister(sess.sock)
            except (KeyError, ValueError, OSError):
                pass

    # -- results
    def latencies_us(self, msg_type: str = "D") -> List[float]:
        return [a["latency_us"] for a in self.acks if a["msg_type"] == msg_type]

    def stats(self) -> dict:
        lat = sorted(self.latencies_us("D"))

        def pct(p: float) -> Optional[float]:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

        s = self.session
        return {"sent": dict(self.sent), "acked": len(self.acks), "unanswered": len(self._pending),
                "exec_reports": self.exec_reports, "answers": dict(self.answers), "fills": self.fills,
                "open_orders": len(self._open), "fat_finger_sent": self.fat_finger_sent,
                "fat_finger": self.fat_finger, "logged_on": self.logged_on, "logged_out": self.logged_out,
                "order_ack_latency_us": {"count": len(lat), "p50": pct(0.5), "p99": pct(0.99),
                                         "max": round(lat[-1], 1) if lat else None},
                "out_seq": s.out_seq if s else None, "in_seq": s.in_seq if s else None,
                "seq_errors": s.seq_errors if s else None,
                "decode_rejects": dict(s.decoder.stats.rejects) if s else None,
                "elapsed_s": round(self.elapsed_s, 3), "error": self.error}
