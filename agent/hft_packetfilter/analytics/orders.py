"""Order lifecycle and order-entry latency for FIX and OUCH, per venue and per session.

Feed every order-entry message in both directions, with the wire timestamp (kernel or capture)::

    tracker.on_fix(msg, ts_ns, venue, session)     # FixMessage: .msg_type and .get(tag)
    tracker.on_ouch(msg, ts_ns, venue, session)    # OuchMessage: .msg_type, .direction, fields

FIX: an order is the chain of ClOrdIDs (11) linked by OrigClOrdID (41) across cancel (35=F) and
cancel/replace (35=G) requests; 35=D starts a chain. Responses are execution reports (35=8, read
through ExecType 150 and OrdStatus 39), order cancel rejects (35=9, CxlRejResponseTo 434: 1 cancel,
2 replace), session rejects (35=3) and business message rejects (35=j).
OUCH: an order is its order token (4.2) or UserRefNum (5.0); Replace links the existing token to
the replacement token. Enter Order -> Accepted / Rejected, Executed, Cancel -> Canceled (or Cancel
Pending / Cancel Reject), Replace -> Replaced.

Latencies (nanosecond stamps in, microseconds out, labelled with ``clock``):

* ``order_ack``: new order -> the venue's first response to it that is not a reject (an ack, or a
  fill when the order trades at once);
* ``order_fill``: new order -> first fill;
* ``cancel_ack``: cancel request -> the first response to that request (pending cancel or canceled);
* ``replace_ack``: replace request -> the first response to it (pending replace or replaced).

Counters per (venue, session): ``orders``, ``acks``, ``fills`` (fill events), ``filled_orders``
(orders with at least one fill), ``cancels`` / ``replaces`` (requests), ``cancel_acks``,
``replace_acks``, ``rejects`` (new orders rejected), ``cancel_rejects``, ``replace_rejects``,
``session_rejects`` (35=3), ``business_rejects`` (35=j), ``unsolicited_cancels``,
``unmatched_acks`` (responses to no order we know, e.g. the capture began after the order was
sent), ``orphans`` (cancel/replace requests for unknown orders), ``duplicate_ids`` (a new order
reusing a live id), ``trade_corrections``, ``order_qty`` and ``fill_qty``. Derived:
``reject_rate = rejects / orders``, ``fill_ratio = fill_qty / order_qty`` (original order
quantities) and ``fill_ratio_orders = filled_orders / orders``.

Memory is bounded: completed orders (filled, canceled, rejected, done) are kept in arrival order
and the oldest are evicted beyond ``max_completed`` (``evicted_completed``); live orders beyond
``max_live`` are evicted oldest first too (``evicted_live``). Nothing raises on odd input.

An optional ``listener`` (e.g. :class:`analytics.execution.ExecutionQuality`) receives
``on_order(venue, order_key, symbol, side, qty, ts_ns)`` for each new order and
``on_fill(venue, order_key, price, qty, ts_ns)`` for each fill, with ``side`` +1 buy / -1 sell and
prices as integers in units of ``10 ** price_exponent`` (default -4, the ITCH/OUCH unit).
"""
from __future__ import annotations

import collections
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, Hashable, Optional, Tuple

from .percentiles import LatencyRecorder

LATENCIES = ("order_ack", "order_fill", "cancel_ack", "replace_ack")
COUNTERS = ("orders", "acks", "fills", "filled_orders", "cancels", "replaces", "cancel_acks",
            "replace_acks", "rejects", "cancel_rejects", "replace_rejects", "session_rejects",
            "business_rejects", "unsolicited_cancels", "unmatched_acks", "orphans", "duplicate_ids",
            "trade_corrections", "modifies")

_FIX_TERMINAL_STATUS = frozenset(("2", "3", "4", "8", "C"))   # filled, done, canceled, rejected, expired
_FIX_FILL = frozenset(("1", "2", "F"))                        # partial fill, fill (4.2), trade (4.4+)
_FIX_SELL = frozenset(("2", "5", "6", "B", "C"))


def _fix_str(msg: Any, tag: int) -> Optional[str]:
    """The one place that reads FIX fields: FixMessage.get returns bytes (or str); None if absent."""
    v = msg.get(tag)
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("latin-1")
    return str(v)


def _num(s: Optional[str]):
    if s is None:
        return 0
    if s.isdigit():
        return int(s)
    try:
        f = float(s)
    except ValueError:
        return 0
    return int(f) if f.is_integer() else f


class _Stats:
    __slots__ = COUNTERS + ("order_qty", "fill_qty", "lat")

    def __init__(self, clock: str) -> None:
        for c in COUNTERS:
            setattr(self, c, 0)
        self.order_qty = 0
        self.fill_qty = 0
        self.lat = {k: LatencyRecorder(clock) for k in LATENCIES}

    def merge(self, other: "_Stats") -> None:
        for c in COUNTERS:
            setattr(self, c, getattr(self, c) + getattr(other, c))
        self.order_qty += other.order_qty
        self.fill_qty += other.fill_qty
        for k in LATENCIES:
            self.lat[k].merge(other.lat[k])

    def snapshot(self) -> dict:
        d = {c: getattr(self, c) for c in COUNTERS}
        d["order_qty"] = self.order_qty
        d["fill_qty"] = self.fill_qty
        d["reject_rate"] = self.rejects / self.orders if self.orders else None
        d["fill_ratio"] = self.fill_qty / self.order_qty if self.order_qty else None
        d["fill_ratio_orders"] = self.filled_orders / self.orders if self.orders else None
        d["latency"] = {k + "_us": self.lat[k].snapshot() for k in LATENCIES}
        return d


class Order:
    """One order (a FIX ClOrdID chain or an OUCH token chain)."""

    __slots__ = ("venue", "session", "root", "symbol", "side", "qty", "cum", "leaves", "t_new", "t_ack",
                 "t_fill", "status", "ids", "pend", "stats", "__weakref__")

    def __init__(self, venue, session, root, symbol, side, qty, ts, stats) -> None:
        self.venue = venue
        self.session = session
        self.root = root
        self.symbol = symbol
        self.side = side
        self.qty = qty
        self.cum = 0
        self.leaves = qty
        self.t_new = ts
        self.t_ack: Optional[int] = None
        self.t_fill: Optional[int] = None
        self.status = "sent"
        self.ids = [root]
        self.pend: Dict[Hashable, Tuple[str, int]] = {}   # request id -> (kind "C"/"R"/"M", ts)
        self.stats = stats


class OrderTracker:
    """Order lifecycle and latency (see the module docstring)."""

    def __init__(self, clock: str = "unknown", max_live: int = 200_000, max_completed: int = 100_000,
                 listener: Any = None, price_exponent: int = -4) -> None:
        self.clock = clock
        self.max_live = max_live
        self.max_completed = max_completed
        self.listener = listener
        self.price_exponent = price_exponent
        self._ids: Dict[tuple, Order] = {}
        self._live: "collections.OrderedDict[Order, None]" = collections.OrderedDict()
        self._done: "collections.OrderedDict[Order, None]" = collections.OrderedDict()
        self._stats: Dict[tuple, _Stats] = {}
        self.evicted_completed = 0
        self.evicted_live = 0
        self.ignored = 0          # messages that are not order flow (heartbeats, logons ...)
        self.errors = 0           # messages that could not be read at all

    # -- helpers ---------------------------------------------------------------------------------
    def stats(self, venue, session) -> _Stats:
        key = (venue, session)
        s = self._stats.get(key)
        if s is None:
            s = self._stats[key] = _Stats(self.clock)
        return s

    def _px(self, s: Optional[str]) -> Optional[int]:
        if s is None:
            return None
        try:
            return int(Decimal(s).scaleb(-self.price_exponent).to_integral_value())
        except (InvalidOperation, ValueError):
            return None

    def _new(self, venue, session, oid, symbol, side, qty, ts) -> Optional[Order]:
        st = self.stats(venue, session)
        key = (venue, session, oid)
        old = self._ids.get(key)
        if old is not None and old.status not in ("filled", "canceled", "rejected", "done"):
            st.duplicate_ids += 1
            return None
        o = Order(venue, session, oid, symbol, side, qty, ts, st)
        self._ids[key] = o
        self._live[o] = None
        st.orders += 1
        st.order_qty += qty
        if len(self._live) > self.max_live:
            victim, _ = self._live.popitem(last=False)
            self._forget(victim)
            self.evicted_live += 1
        lis = self.listener
        if lis is not None:
            lis.on_order(venue, (session, oid), symbol, side, qty, ts)
        return o

    def _forget(self, o: Order) -> None:
        ids = self._ids
        for i in o.ids:
            k = (o.venue, o.session, i)
            if ids.get(k) is o:
                del ids[k]

    def _finish(self, o: Order, status: str) -> None:
        o.status = status
        if self._live.pop(o, 0) is None:
            self._done[o] = None
            if len(self._done) > self.max_completed:
                victim, _ = self._done.popitem(last=False)
                self._forget(victim)
                self.evicted_completed += 1

    def _ack(self, o: Order, ts: int) -> None:
        if o.t_ack is None:
            o.t_ack = ts
            o.stats.acks += 1
            o.stats.lat["order_ack"].record(ts - o.t_new)
            if o.status == "sent":
                o.status = "live"

    def _fill(self, o: Order, qty, price: Optional[int], ts: int) -> None:
        st = o.stats
        st.fills += 1
        st.fill_qty += qty
        if o.t_fill is None:
            o.t_fill = ts
            st.filled_orders += 1
            st.lat["order_fill"].record(ts - o.t_new)
        o.cum += qty
        o.leaves -= qty
        lis = self.listener
        if lis is not None:
            lis.on_fill(o.venue, (o.session, o.root), price, qty, ts)

    def _link(self, o: Order, new_id, kind: str, ts: int) -> None:
        if new_id is None:
            return
        key = (o.venue, o.session, new_id)
        self._ids[key] = o
        if new_id not in o.ids:
            o.ids.append(new_id)
        o.pend[new_id] = (kind, ts)

    # -- FIX -------------------------------------------------------------------------------------
    def on_fix(self, msg: Any, ts_ns: int, venue: Hashable, session: Hashable = None) -> None:
        try:
            mt = msg.msg_type
            if mt == "8":
                self._fix_er(msg, ts_ns, venue, session)
            elif mt == "D":
                side = _fix_str(msg, 54)
                self._new(venue, session, _fix_str(msg, 11), _fix_str(msg, 55),
                          -1 if side in _FIX_SELL else 1, _num(_fix_str(msg, 38)), ts_ns)
            elif mt == "F" or mt == "G":
                st = self.stats(venue, session)
                kind = "C" if mt == "F" else "R"
                if kind == "C":
                    st.cancels += 1
                else:
                    st.replaces += 1
                o = self._ids.get((venue, session, _fix_str(msg, 41)))
                if o is None:
                    st.orphans += 1
                    return
                self._link(o, _fix_str(msg, 11), kind, ts_ns)
            elif mt == "9":
                self._fix_cxl_reject(msg, ts_ns, venue, session)
            elif mt == "3":
                self.stats(venue, session).session_rejects += 1
            elif mt == "j":
                self.stats(venue, session).business_rejects += 1
            else:
                self.ignored += 1
        except Exception:  # noqa: BLE001 - never raise on input; count it
            self.errors += 1

    def _fix_find(self, msg, venue, session) -> Tuple[Optional[Order], Optional[str]]:
        cl = _fix_str(msg, 11)
        o = self._ids.get((venue, session, cl)) if cl is not None else None
        if o is None:
            orig = _fix_str(msg, 41)
            if orig is not None:
                o = self._ids.get((venue, session, orig))
        return o, cl

    def _fix_er(self, msg, ts, venue, session) -> None:
        o, cl = self._fix_find(msg, venue, session)
        if o is None:
            self.stats(venue, session).unmatched_acks += 1
            return
        st = o.stats
        et = _fix_str(msg, 150)
        ost = _fix_str(msg, 39)
        rejected = et == "8" or (et is None and ost == "8")
        pend = o.pend.pop(cl, None) if cl is not None else None
        if pend is not None:
            kind, t0 = pend
            if rejected:
                if kind == "C":
                    st.cancel_rejects += 1
                else:
                    st.replace_rejects += 1
                rejected = False   # the order itself lives on
            elif kind == "C":
                st.cancel_acks += 1
                st.lat["cancel_ack"].record(ts - t0)
            else:
                st.replace_acks += 1
                st.lat["replace_ack"].record(ts - t0)
                if et == "5":
                    q = _fix_str(msg, 38)
                    if q is not None:
                        o.qty = _num(q)
                        o.leaves = o.qty - o.cum
        elif o.t_ack is None and cl == o.root:
            if rejected:
                st.rejects += 1
                self._finish(o, "rejected")
                return
            self._ack(o, ts)
        if et in _FIX_FILL or (et is None and ost in ("1", "2")):
            lq = _num(_fix_str(msg, 32))
            if lq:
                if o.t_ack is None:
                    self._ack(o, ts)
                self._fill(o, lq, self._px(_fix_str(msg, 31)) if self.listener is not None else None, ts)
        elif et in ("G", "H"):
            st.trade_corrections += 1
        if et == "4" and pend is None:
            st.unsolicited_cancels += 1
        if ost in _FIX_TERMINAL_STATUS or (ost is None and et in ("4", "C", "3")):
            status = {"2": "filled", "4": "canceled", "8": "rejected"}.get(ost or et, "done")
            if status == "rejected" and o.t_ack is not None:
                status = "done"
            self._finish(o, status)

    def _fix_cxl_reject(self, msg, ts, venue, session) -> None:
        o, cl = self._fix_find(msg, venue, session)
        st = self.stats(venue, session)
        if o is None:
            st.unmatched_acks += 1
            return
        pend = o.pend.pop(cl, None) if cl is not None else None
        kind = pend[0] if pend is not None else ("R" if _fix_str(msg, 434) == "2" else "C")
        if kind == "R":
            o.stats.replace_rejects += 1
        else:
            o.stats.cancel_rejects += 1

    # -- OUCH ------------------------------------------------------------------------------------
    def on_ouch(self, msg: Any, ts_ns: int, venue: Hashable, session: Hashable = None) -> None:
        try:
            f = msg.fields
            mt = msg.msg_type
            if msg.direction == "in":
                self._ouch_in(mt, f, ts_ns, venue, session)
            else:
                self._ouch_out(mt, f, ts_ns, venue, session)
        except Exception:  # noqa: BLE001
            self.errors += 1

    @staticmethod
    def _tok(f: dict, *names):
        for n in names:
            v = f.get(n)
            if v is not None:
                return v
        return None

    def _ouch_in(self, mt, f, ts, venue, session) -> None:
        if mt == "O":
            side = f.get("side")
            qty = f.get("shares", f.get("quantity", 0)) or 0
            self._new(venue, session, self._tok(f, "order_token", "user_ref_num"),
                      f.get("stock", f.get("symbol")), 1 if side == "B" else -1, qty, ts)
            return
        st = self.stats(venue, session)
        if mt == "X":
            st.cancels += 1
            tok = self._tok(f, "order_token", "user_ref_num")
            o = self._ids.get((venue, session, tok))
            if o is None:
                st.orphans += 1
                return
            o.pend["C"] = ("C", ts)
        elif mt == "U":
            st.replaces += 1
            o = self._ids.get((venue, session, self._tok(f, "existing_order_token", "orig_user_ref_num")))
            if o is None:
                st.orphans += 1
                return
            self._link(o, self._tok(f, "replacement_order_token", "user_ref_num"), "R", ts)
        elif mt == "M":
            st.modifies += 1
        else:
            self.ignored += 1

    def _ouch_out(self, mt, f, ts, venue, session) -> None:
        if mt == "S":
            self.ignored += 1
            return
        if mt == "U":
            tok = self._tok(f, "replacement_order_token", "user_ref_num")
        else:
            tok = self._tok(f, "order_token", "user_ref_num")
        o = self._ids.get((venue, session, tok))
        if o is None:
            if mt in ("A", "U", "C", "D", "E", "G", "J", "P", "I", "B", "F"):
                self.stats(venue, session).unmatched_acks += 1
            else:
                self.ignored += 1
            return
        st = o.stats
        if mt == "A":
            self._ack(o, ts)
            if f.get("order_state") == "D":
                self._finish(o, "done")
        elif mt == "E" or mt == "G":
            if o.t_ack is None:
                self._ack(o, ts)
            qty = f.get("executed_shares", f.get("quantity", 0)) or 0
            self._fill(o, qty, f.get("execution_price", f.get("price")), ts)
            if o.leaves <= 0:
                self._finish(o, "filled")
        elif mt == "C" or mt == "D" or mt == "P":
            pend = o.pend.pop("C", None)
            if pend is not None:
                st.cancel_acks += 1
                st.lat["cancel_ack"].record(ts - pend[1])
            elif mt != "P":
                st.unsolicited_cancels += 1
            if mt != "P":
                dec = f.get("decrement_shares", f.get("quantity", 0)) or 0
                o.leaves -= dec
                if o.leaves <= 0 or not dec:
                    self._finish(o, "canceled")
        elif mt == "U":
            pend = o.pend.pop(tok, None)
            if pend is not None:
                st.replace_acks += 1
                st.lat["replace_ack"].record(ts - pend[1])
            q = f.get("shares", f.get("quantity"))
            if q is not None:
                o.qty = q
                o.leaves = q
            if f.get("order_state") == "D":
                self._finish(o, "done")
        elif mt == "J":
            pend = o.pend.pop(tok, None)
            if pend is not None and pend[0] == "R":
                st.replace_rejects += 1
            elif o.t_ack is None:
                st.rejects += 1
                self._finish(o, "rejected")
            else:
                self.ignored += 1
        elif mt == "I":
            o.pend.pop("C", None)
            st.cancel_rejects += 1
        elif mt == "B" or mt == "F":
            st.trade_corrections += 1
        else:
            self.ignored += 1

    # -- reading ---------------------------------------------------------------------------------
    def order(self, venue, session, oid) -> Optional[Order]:
        return self._ids.get((venue, session, oid))

    def venue_stats(self, venue) -> _Stats:
        out = _Stats(self.clock)
        for (v, _s), st in self._stats.items():
            if v == venue:
                out.merge(st)
        return out

    def snapshot(self) -> dict:
        venues: Dict[str, dict] = {}
        for v in sorted({k[0] for k in self._stats}, key=str):
            d = self.venue_stats(v).snapshot()
            d["sessions"] = {str(s): st.snapshot() for (vv, s), st in self._stats.items() if vv == v}
            venues[str(v)] = d
        return {"clock": self.clock, "venues": venues, "live_orders": len(self._live),
                "completed_orders": len(self._done), "evicted_completed": self.evicted_completed,
                "evicted_live": self.evicted_live, "ignored": self.ignored, "errors": self.errors}
