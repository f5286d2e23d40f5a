"""Order books: Nasdaq ITCH 5.0 full depth, CME MDP3 market by price, Cboe PITCH full depth.

Prices are integers in every piece of state (never floats): ITCH and PITCH books keep 1e-4 units
(``PRICE_EXPONENT = -4``; PITCH short prices, 1e-2, are scaled by 100), MDP3 books keep 1e-9 units
(``price_exponent = -9``, exact from the SBE decimal). ``top(symbol)`` returns
``(bid_px, bid_qty, ask_px, ask_qty)`` with None for an empty side; ``depth(symbol, n)`` the first
``n`` levels per side. Odd input never raises: unknown order ids, duplicates, over-executions and
sequence problems are counted in ``counters``.

ITCH 5.0 (:class:`ItchBook`): ``A``/``F`` add (``F`` keeps its MPID), ``E``/``C`` execute, ``X``
cancel (partial), ``D`` delete, ``U`` replace (the new order keeps side, stock and MPID, and loses
priority), ``H`` trading status, ``R`` directory (locate -> symbol). State: one dict
``order ref -> [is_bid, price, qty, symbol book, mpid]`` and per symbol two dicts ``price -> qty``
with the best price kept incrementally on adds and recomputed lazily (``max``/``min`` over the
levels) only after the best level empties. ``apply_many(messages)`` is the batch entry point (one
Python loop, hot types first); ``apply(message)`` does one; ``apply_buffer(block)`` decodes a
MoldUDP64 message block into the book (compiled: no message objects for the order flow). When the optional compiled module is built
(``hft_packetfilter._native``; ``ItchBook(native=False)`` or HFTPF_NO_NATIVE=1 turn it off) the same state
lives in C and ``apply_many`` runs there; ``orders``, ``bids`` and ``asks`` are then built on each read
(equal to the Python ones, but copies: change the book through its messages only).

MDP3 (:class:`Mdp3Book`): ``MDIncrementalRefreshBook`` entries update price levels by
``MDPriceLevel`` (1 = best) with ``MDUpdateAction`` New (insert, levels below shift down, the book
keeps ``depth`` levels), Change (size at the level), Delete (remove, levels below shift up),
DeleteThru (clear the side), DeleteFrom (remove the top ``MDPriceLevel`` levels) and Overlay (replace
the level's price and size). Outright (Bid/Offer) and implied (ImpliedBid/ImpliedOffer) books are kept
apart; ``top`` reads the outright book. ``RptSeq`` is checked per instrument over every incremental
message that carries it (trades and volume too): a repeat is skipped (``duplicates``, so A and B
lines can both feed the book), a jump marks the instrument ``recovering``, empties its book and drops
its updates until a ``SnapshotFullRefresh`` with a newer RptSeq rebuilds it. ``ChannelReset``
clears every book.

Cboe PITCH (:class:`PitchBook`): add (long, short, expanded), executed (reduces), executed at
price/size (sets the remaining quantity), reduce size, modify (new price and size), delete, trading
status and unit clear (drops the unit's orders).
"""
from __future__ import annotations

from decimal import Decimal
from operator import attrgetter
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .. import _accel
from ..protocols.itch50 import MESSAGE_CLASSES as _ITCH, ITCH50Decoder

PRICE_EXPONENT = -4
_MSG_TYPE = attrgetter("msg_type")
Top = Tuple[Optional[int], Optional[int], Optional[int], Optional[int]]


def _idx(t: str, name: str) -> int:
    return _ITCH[t]._fields.index(name)


# ITCH tuple indices, taken from the decoder's layouts (checked at import)
_A_REF, _A_SIDE, _A_QTY, _A_STOCK, _A_PX = (_idx("A", n) for n in
                                            ("order_reference_number", "side", "shares", "stock", "price"))
_F_MPID = _idx("F", "attribution")
_E_REF, _E_QTY = _idx("E", "order_reference_number"), _idx("E", "executed_shares")
_C_REF, _C_QTY = _idx("C", "order_reference_number"), _idx("C", "executed_shares")
_X_REF, _X_QTY = _idx("X", "order_reference_number"), _idx("X", "cancelled_shares")
_D_REF = _idx("D", "order_reference_number")
_U_OLD, _U_NEW, _U_QTY, _U_PX = (_idx("U", n) for n in
                                 ("original_order_reference_number", "new_order_reference_number",
                                  "shares", "price"))
_H_STOCK, _H_STATE = _idx("H", "stock"), _idx("H", "trading_state")
_R_STOCK = _idx("R", "stock")
assert all(_idx("F", n) == i for n, i in (("order_reference_number", _A_REF), ("side", _A_SIDE),
                                          ("shares", _A_QTY), ("stock", _A_STOCK), ("price", _A_PX)))


def _alpha(raw) -> str:
    if isinstance(raw, bytes):
        return raw.rstrip(b" \x00").decode("ascii", "replace")
    return str(raw).rstrip()


class SymbolBook:
    """Price levels of one symbol: ``bids``/``asks`` map price -> total quantity."""

    __slots__ = ("symbol", "bids", "asks", "_bb", "_ba", "_bb_dirty", "_ba_dirty", "status", "volume",
                 "updates")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: Dict[int, int] = {}
        self.asks: Dict[int, int] = {}
        self._bb: Optional[int] = None
        self._ba: Optional[int] = None
        self._bb_dirty = False
        self._ba_dirty = False
        self.status: Optional[str] = None
        self.volume = 0
        self.updates = 0

    # generic (non-inlined) level maintenance, used by PITCH and by the ITCH slow paths
    def add(self, is_bid: bool, px: int, qty: int) -> None:
        if is_bid:
            d = self.bids
            d[px] = d.get(px, 0) + qty
            if not self._bb_dirty and (self._bb is None or px > self._bb):
                self._bb = px
        else:
            d = self.asks
            d[px] = d.get(px, 0) + qty
            if not self._ba_dirty and (self._ba is None or px < self._ba):
                self._ba = px

    def remove(self, is_bid: bool, px: int, qty: int) -> None:
        d = self.bids if is_bid else self.asks
        left = d.get(px, 0) - qty
        if left > 0:
            d[px] = left
            return
        d.pop(px, None)
        if is_bid:
            if px == self._bb:
                self._bb_dirty = True
        elif px == self._ba:
            self._ba_dirty = True

    @property
    def best_bid(self) -> Optional[int]:
        if self._bb_dirty:
            self._bb = max(self.bids) if self.bids else None
            self._bb_dirty = False
        return self._bb

    @property
    def best_ask(self) -> Optional[int]:
        if self._ba_dirty:
            self._ba = min(self.asks) if self.asks else None
            self._ba_dirty = False
        return self._ba

    def top(self) -> Top:
        b = self.best_bid
        a = self.best_ask
        return (b, self.bids[b] if b is not None else None, a, self.asks[a] if a is not None else None)

    def depth(self, n: int = 5) -> dict:
        return _depth(self.bids, self.asks, n)

    def has_levels(self) -> bool:
        return bool(self.bids or self.asks)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bb = self._ba = None
        self._bb_dirty = self._ba_dirty = False


def _depth(bids: Dict[int, int], asks: Dict[int, int], n: int) -> dict:
    return {"bids": [[p, bids[p]] for p in sorted(bids, reverse=True)[:n]],
            "asks": [[p, asks[p]] for p in sorted(asks)[:n]]}


class NativeSymbolBook:
    """A :class:`SymbolBook` whose levels live in the compiled ITCH book core: same attributes and
    methods; ``bids``/``asks`` are built on each read."""

    __slots__ = ("symbol", "status", "updates", "_core", "_i")

    def __init__(self, symbol: str, core) -> None:
        self.symbol = symbol
        self.status: Optional[str] = None
        self.updates = 0
        self._core = core
        self._i = core.new_book()

    bids = property(lambda self: self._core.levels(self._i, True))
    asks = property(lambda self: self._core.levels(self._i, False))
    best_bid = property(lambda self: self._core.best(self._i, True))
    best_ask = property(lambda self: self._core.best(self._i, False))
    volume = property(lambda self: self._core.volume(self._i))

    def add(self, is_bid: bool, px: int, qty: int) -> None:
        self._core.level_add(self._i, is_bid, px, qty)

    def remove(self, is_bid: bool, px: int, qty: int) -> None:
        self._core.level_remove(self._i, is_bid, px, qty)

    def top(self) -> Top:
        return self._core.top(self._i)

    def depth(self, n: int = 5) -> dict:
        return _depth(self.bids, self.asks, n)

    def has_levels(self) -> bool:
        t = self._core.top(self._i)
        return t[0] is not None or t[2] is not None

    def clear(self) -> None:
        self._core.clear_book(self._i)


def _top_dict(t: Top) -> dict:
    return {"bid_px": t[0], "bid_qty": t[1], "ask_px": t[2], "ask_qty": t[3]}


class _OrderBookBase:
    price_exponent = PRICE_EXPONENT

    def __init__(self, venue: str = "") -> None:
        self.venue = venue
        self.orders: Dict[int, list] = {}
        self.books: Dict[Any, SymbolBook] = {}       # internal key -> book
        self.by_symbol: Dict[str, SymbolBook] = {}
        self.messages = 0
        self.counters: Dict[str, int] = {}

    def _count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def book(self, symbol: str) -> Optional[SymbolBook]:
        return self.by_symbol.get(symbol)

    def top(self, symbol: str) -> Top:
        b = self.by_symbol.get(symbol)
        return b.top() if b is not None else (None, None, None, None)

    def depth(self, symbol: str, n: int = 5) -> dict:
        b = self.by_symbol.get(symbol)
        return b.depth(n) if b is not None else {"bids": [], "asks": []}

    def tops(self) -> Dict[str, Top]:
        return {s: b.top() for s, b in self.by_symbol.items() if b.has_levels()}

    def order_count(self) -> int:
        return len(self.orders)

    def head(self) -> dict:
        """The live agent's cut of :meth:`snapshot`: messages, live orders, symbols and the tops."""
        return {"messages": self.messages, "orders": self.order_count(), "symbols": len(self.by_symbol),
                "top": {s: _top_dict(t) for s, t in sorted(self.tops().items())}}

    def snapshot(self) -> dict:
        return {"venue": self.venue, "price_exponent": self.price_exponent, "messages": self.messages,
                "orders": self.order_count(), "symbols": len(self.by_symbol),
                "counters": dict(sorted(self.counters.items())),
                "status": {s: b.status for s, b in sorted(self.by_symbol.items()) if b.status is not None},
                "top": {s: _top_dict(t) for s, t in sorted(self.tops().items())}}


class ItchBook(_OrderBookBase):
    """Full-depth ITCH 5.0 book for every symbol of one feed (see the module docstring)."""

    def __init__(self, venue: str = "", native: bool = True) -> None:
        self._core = None
        self.decoder: Optional[ITCH50Decoder] = None     # apply_buffer's own, made on first use
        super().__init__(venue)
        if native and _accel.NATIVE is not None:
            self._core = _accel.NATIVE.ItchBookCore(self.counters, (
                _A_REF, _A_SIDE, _A_QTY, _A_STOCK, _A_PX, _F_MPID, _D_REF, _U_OLD, _U_NEW, _U_QTY, _U_PX))
            self._by_index: List[NativeSymbolBook] = []

    @property
    def orders(self) -> Dict[int, list]:
        """order ref -> [is_bid, price, qty, symbol book, mpid] (a copy when the native core runs)."""
        if self._core is None:
            return self._orders
        objs = self._by_index
        out = self._core.orders()
        for o in out.values():
            o[3] = objs[o[3]]
        return out

    @orders.setter
    def orders(self, value: Dict[int, list]) -> None:
        self._orders = value

    def order_count(self) -> int:
        return self._core.order_count() if self._core is not None else len(self._orders)

    def _book_for(self, locate: int, stock) -> SymbolBook:
        b = self.books.get(locate)
        if b is None:
            sym = _alpha(stock) if stock is not None else str(locate)
            b = self.by_symbol.get(sym)
            if b is None:
                if self._core is None:
                    b = SymbolBook(sym)
                else:
                    b = NativeSymbolBook(sym, self._core)
                    self._by_index.append(b)
                self.by_symbol[sym] = b
            self.books[locate] = b
            if self._core is not None:
                self._core.bind(locate, b._i)
        return b

    def _book_index(self, locate: int, stock) -> int:
        """The native core asks this for a locate it has no book for."""
        return self._book_for(locate, stock)._i

    def _apply_other(self, m) -> None:
        """H (trading status) and R (directory): rare, shared by both backends."""
        if m.msg_type == "H":
            b = self._book_for(m[0], m[_H_STOCK])
            st = m[_H_STATE]
            b.status = st.decode("latin-1") if isinstance(st, bytes) else st
        else:
            self._book_for(m[0], m[_R_STOCK])

    def apply(self, m) -> None:
        self.apply_many((m,))

    def apply_many(self, messages: Iterable) -> None:
        if self._core is not None:
            self.messages += self._core.apply_many(messages, self._book_index, self._apply_other)
            return
        orders = self._orders
        books = self.books
        n = 0
        for m in messages:
            n += 1
            t = m.msg_type
            if t == "A" or t == "F":
                ref = m[_A_REF]
                b = books.get(m[0])
                if b is None:
                    b = self._book_for(m[0], m[_A_STOCK])
                px = m[_A_PX]
                qty = m[_A_QTY]
                is_bid = m[_A_SIDE] == b"B"
                if ref in orders:
                    self._count("duplicate_order")
                    self._remove_order(ref)
                orders[ref] = [is_bid, px, qty, b, m[_F_MPID] if t == "F" else None]
                if is_bid:
                    d = b.bids
                    d[px] = d.get(px, 0) + qty
                    if not b._bb_dirty and (b._bb is None or px > b._bb):
                        b._bb = px
                else:
                    d = b.asks
                    d[px] = d.get(px, 0) + qty
                    if not b._ba_dirty and (b._ba is None or px < b._ba):
                        b._ba = px
            elif t == "D":
                o = orders.pop(m[_D_REF], None)
                if o is None:
                    self._count("unknown_order")
                    continue
                o[3].remove(o[0], o[1], o[2])
            elif t == "E" or t == "C" or t == "X":
                ref = m[4]
                o = orders.get(ref)
                if o is None:
                    self._count("unknown_order")
                    continue
                qty = m[5]                   # executed_shares / cancelled_shares (checked at import)
                left = o[2] - qty
                if left < 0:
                    self._count("over_execute" if t != "X" else "over_cancel")
                    qty = o[2]
                    left = 0
                b = o[3]
                if t != "X":
                    b.volume += qty
                b.remove(o[0], o[1], qty)
                if left:
                    o[2] = left
                else:
                    del orders[ref]
            elif t == "U":
                old = orders.pop(m[_U_OLD], None)
                if old is None:
                    self._count("unknown_order")
                    continue
                b = old[3]
                b.remove(old[0], old[1], old[2])
                new = m[_U_NEW]
                if new in orders:
                    self._count("duplicate_order")
                    self._remove_order(new)
                px = m[_U_PX]
                qty = m[_U_QTY]
                orders[new] = [old[0], px, qty, b, old[4]]
                b.add(old[0], px, qty)
            elif t == "H" or t == "R":
                self._apply_other(m)
        self.messages += n

    def apply_buffer(self, buf, offset: int = 0, count: int = -1, decoder: Optional[ITCH50Decoder] = None,
                     types: Optional[Dict[str, int]] = None) -> int:
        """Decode a block of u16 length-prefixed ITCH messages (a MoldUDP64 message block) from
        ``buf[offset:]`` straight into the book; returns the number of messages decoded and applied.

        The result (book state, ``counters``, ``messages``, and the decoder's stats, rejects, symbol
        directory and ``last_*``) is that of ``apply_many(decoder.decode_buffer(buf, offset, count))``,
        which is also the fallback. With both compiled cores the block goes through the decoder's scan
        into the book core with no message object built except for H and R. ``decoder`` defaults to
        one kept by the book (its ``symbols`` then live in ``self.decoder``). ``types`` (a Counter) gets
        one count per message under its ``msg_type``, as ``Counter.update(m.msg_type for m in msgs)``.
        """
        dec = decoder
        if dec is None:
            if self.decoder is None:
                self.decoder = ITCH50Decoder(native=self._core is not None)
            dec = self.decoder
        if self._core is not None and dec._core is not None and offset >= 0:
            r = self._core.apply_buffer(dec._core, buf, offset, count,
                                        dec.symbols if dec.resolve_symbols else None,
                                        self._book_index, self._apply_other, types)
            if r is not None:               # None: not a byte buffer, nothing touched
                good = r[0]
                dec._account_scan(offset, *r)
                self.messages += good
                return good
        msgs = dec.decode_buffer(buf, offset, count)
        self.apply_many(msgs)
        if types is not None:
            types.update(map(_MSG_TYPE, msgs))
        return len(msgs)

    def _remove_order(self, ref: int) -> None:
        o = self._orders.pop(ref, None)
        if o is not None:
            o[3].remove(o[0], o[1], o[2])

    def mpid_orders(self) -> Dict[str, int]:
        """Live orders per MPID (attributed 'F' orders only); computed on demand."""
        out: Dict[str, int] = {}
        if self._core is not None:
            for raw, n in self._core.mpid_counts().items():
                k = _alpha(raw)
                out[k] = out.get(k, 0) + n
            return out
        for o in self._orders.values():
            if o[4] is not None:
                k = _alpha(o[4])
                out[k] = out.get(k, 0) + 1
        return out

    def snapshot(self) -> dict:
        d = super().snapshot()
        d["mpid_orders"] = dict(sorted(self.mpid_orders().items()))
        return d


assert _E_REF == _C_REF == _X_REF == 4 and _E_QTY == _C_QTY == _X_QTY == 5


class PitchBook(_OrderBookBase):
    """Full-depth Cboe PITCH book (see the module docstring). Prices in 1e-4 units."""

    _ADDS = {"AddOrderLong": 1, "AddOrderShort": 100, "AddOrderExpanded": 1}
    _MODS = {"ModifyOrderLong": 1, "ModifyOrderShort": 100}

    def _sym_book(self, sym: str) -> SymbolBook:
        b = self.by_symbol.get(sym)
        if b is None:
            b = self.by_symbol[sym] = SymbolBook(sym)
        return b

    def apply_many(self, messages: Iterable) -> None:
        for m in messages:
            self.apply(m)

    def apply(self, m) -> None:
        self.messages += 1
        try:
            self._apply(m.name, m.fields, m.unit)
        except (KeyError, TypeError, ValueError):
            self._count("bad_message")

    def _apply(self, name: str, f: dict, unit: int) -> None:
        orders = self.orders
        mult = self._ADDS.get(name)
        if mult is not None:
            oid = f["order_id"]
            if oid in orders:
                self._count("duplicate_order")
                self._drop(oid)
            b = self._sym_book(f["symbol"])
            is_bid = f["side"] == "B"
            px = f["price_raw"] * mult
            qty = f["quantity"]
            orders[oid] = [is_bid, px, qty, b, unit]
            b.add(is_bid, px, qty)
            return
        mult = self._MODS.get(name)
        if mult is not None:
            o = orders.get(f["order_id"])
            if o is None:
                self._count("unknown_order")
                return
            b = o[3]
            b.remove(o[0], o[1], o[2])
            o[1] = f["price_raw"] * mult
            o[2] = f["quantity"]
            if o[2] > 0:
                b.add(o[0], o[1], o[2])
            else:
                del orders[f["order_id"]]
            return
        if name in ("OrderExecuted", "ReduceSizeLong", "ReduceSizeShort", "OrderExecutedAtPriceSize"):
            oid = f["order_id"]
            o = orders.get(oid)
            if o is None:
                self._count("unknown_order")
                return
            if name == "OrderExecutedAtPriceSize":
                dec = o[2] - f["remaining_quantity"]
                executed = f["executed_quantity"]
            elif name == "OrderExecuted":
                dec = executed = f["executed_quantity"]
            else:
                dec = f["canceled_quantity"]
                executed = 0
            if dec > o[2] or dec < 0:
                self._count("over_execute")
                dec = o[2] if dec > 0 else 0
            b = o[3]
            b.volume += executed
            b.remove(o[0], o[1], dec)
            o[2] -= dec
            if o[2] <= 0:
                del orders[oid]
        elif name == "DeleteOrder":
            if not self._drop(f["order_id"]):
                self._count("unknown_order")
        elif name == "TradingStatus":
            self._sym_book(f["symbol"]).status = f["trading_status"]
        elif name == "UnitClear":
            drop = [oid for oid, o in orders.items() if o[4] == unit]
            for oid in drop:
                self._drop(oid)
            self._count("unit_clears")

    def _drop(self, oid: int) -> bool:
        o = self.orders.pop(oid, None)
        if o is None:
            return False
        o[3].remove(o[0], o[1], o[2])
        return True


# -- MDP3 market by price ---------------------------------------------------------------------------
_SIDES = {"Bid": 0, "0": 0, "Offer": 1, "1": 1, "ImpliedBid": 2, "E": 2, "ImpliedOffer": 3, "F": 3}
_RESET = ("BookReset", "J")
_ACTIONS = {"New": 0, "Change": 1, "Delete": 2, "DeleteThru": 3, "DeleteFrom": 4, "Overlay": 5,
            0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, "0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5}


def decimal_to_int(px: Any, exponent: int) -> Optional[int]:
    """An exact SBE decimal (or int) as an integer in units of 10**exponent; None for null."""
    if px is None:
        return None
    if isinstance(px, int):
        return px
    if not isinstance(px, Decimal):
        px = Decimal(str(px))
    return int(px.scaleb(-exponent))


class MbpSecurity:
    __slots__ = ("security_id", "levels", "last_rpt", "recovering", "status", "from_snapshot")

    def __init__(self, security_id: int) -> None:
        self.security_id = security_id
        self.levels: List[List[list]] = [[], [], [], []]   # bid, offer, implied bid, implied offer
        self.last_rpt: Optional[int] = None
        self.recovering = False
        self.status: Any = None
        self.from_snapshot = False

    def clear(self) -> None:
        for lv in self.levels:
            lv.clear()

    def top(self, implied: bool = False) -> Top:
        b = self.levels[2 if implied else 0]
        a = self.levels[3 if implied else 1]
        return (b[0][0] if b else None, b[0][1] if b else None, a[0][0] if a else None, a[0][1] if a else None)


class Mdp3Book:
    """CME MDP3 market-by-price books for every instrument of one channel."""

    def __init__(self, venue: str = "CME", depth: int = 10, price_exponent: int = -9,
                 symbols: Optional[Dict[int, str]] = None) -> None:
        self.venue = venue
        self.max_depth = depth
        self.price_exponent = price_exponent
        self.symbols: Dict[int, str] = dict(symbols or {})       # SecurityID -> symbol (optional)
        self.securities: Dict[int, MbpSecurity] = {}
        self.messages = 0
        self.counters: Dict[str, int] = {}

    def _count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def _sec(self, sid: int) -> MbpSecurity:
        s = self.securities.get(sid)
        if s is None:
            s = self.securities[sid] = MbpSecurity(sid)
        return s

    def apply_many(self, messages: Iterable) -> None:
        for m in messages:
            self.apply(m)

    def apply(self, m) -> None:
        self.messages += 1
        try:
            mt = m.msg_type
            f = m.fields
            if mt.startswith("SnapshotFullRefresh") and "OrderBook" not in mt:
                self._snapshot_msg(f)
            elif mt.startswith("MDIncrementalRefresh") and "OrderBook" not in mt:
                self._incremental(f, mt.startswith("MDIncrementalRefreshBook"))
            elif mt == "ChannelReset":
                for s in self.securities.values():
                    s.clear()
                    s.last_rpt = None
                    s.recovering = False
                self._count("channel_resets")
            elif mt.startswith("SecurityStatus"):
                sid = f.get("SecurityID")
                if sid is not None:
                    self._sec(sid).status = f.get("SecurityTradingStatus")
        except (KeyError, TypeError, ValueError, AttributeError):
            self._count("bad_message")

    def _incremental(self, f: dict, book: bool) -> None:
        exp = self.price_exponent
        for e in f.get("NoMDEntries") or ():
            sid = e.get("SecurityID")
            rpt = e.get("RptSeq")
            if sid is None:
                continue
            s = self._sec(sid)
            if rpt is not None:
                last = s.last_rpt
                if s.recovering:
                    self._count("dropped_recovering")
                    continue
                if last is not None:
                    if rpt <= last:
                        self._count("duplicates")
                        continue
                    if rpt != last + 1:
                        self._count("gaps")
                        s.recovering = True
                        s.clear()
                        continue
                s.last_rpt = rpt
            if not book:
                continue
            et = e.get("MDEntryType")
            if et in _RESET:
                s.clear()
                continue
            side = _SIDES.get(et)
            if side is None:
                continue
            act = _ACTIONS.get(e.get("MDUpdateAction"))
            lvl = e.get("MDPriceLevel")
            if act is None or lvl is None or lvl < 1:
                self._count("bad_entry")
                continue
            self._level(s.levels[side], act, lvl, decimal_to_int(e.get("MDEntryPx"), exp),
                        e.get("MDEntrySize"), e.get("NumberOfOrders"))

    def _level(self, levels: list, act: int, lvl: int, px, qty, norders) -> None:
        i = lvl - 1
        n = len(levels)
        if act == 0:                               # New: insert, shift down, keep depth
            if i > n:
                self._count("level_out_of_range")
                i = n
            levels.insert(i, [px, qty, norders])
            if len(levels) > self.max_depth:
                del levels[self.max_depth:]
        elif act == 1 or act == 5:                 # Change / Overlay
            if i >= n:
                self._count("level_out_of_range")
                if i == n:
                    levels.append([px, qty, norders])
                return
            if act == 1 and px is not None and levels[i][0] != px:
                self._count("change_price_mismatch")
            levels[i] = [px, qty, norders]
        elif act == 2:                             # Delete
            if i >= n:
                self._count("level_out_of_range")
                return
            del levels[i]
        elif act == 3:                             # DeleteThru: the whole side
            levels.clear()
        elif act == 4:                             # DeleteFrom: the top lvl levels
            del levels[:lvl]

    def _snapshot_msg(self, f: dict) -> None:
        sid = f.get("SecurityID")
        rpt = f.get("RptSeq")
        if sid is None:
            self._count("bad_message")
            return
        s = self._sec(sid)
        if not s.recovering and s.last_rpt is not None and rpt is not None and rpt <= s.last_rpt:
            self._count("stale_snapshots")
            return
        s.clear()
        exp = self.price_exponent
        staged: List[List[tuple]] = [[], [], [], []]
        for e in f.get("NoMDEntries") or ():
            side = _SIDES.get(e.get("MDEntryType"))
            lvl = e.get("MDPriceLevel")
            if side is None or lvl is None:
                continue
            staged[side].append((lvl, [decimal_to_int(e.get("MDEntryPx"), exp), e.get("MDEntrySize"),
                                       e.get("NumberOfOrders")]))
        for side, rows in enumerate(staged):
            rows.sort(key=lambda r: r[0])
            s.levels[side] = [r[1] for r in rows][:self.max_depth]
        if rpt is not None:
            s.last_rpt = rpt
        if "MDSecurityTradingStatus" in f:
            s.status = f.get("MDSecurityTradingStatus")
        s.recovering = False
        s.from_snapshot = True
        self._count("snapshots")

    # -- reading
    def _lookup(self, key) -> Optional[MbpSecurity]:
        s = self.securities.get(key)
        if s is None and isinstance(key, str):
            for sid, sym in self.symbols.items():
                if sym == key:
                    return self.securities.get(sid)
        return s

    def top(self, key, implied: bool = False) -> Top:
        s = self._lookup(key)
        return s.top(implied) if s is not None else (None, None, None, None)

    def depth(self, key, n: int = 10) -> dict:
        s = self._lookup(key)
        if s is None:
            return {"bids": [], "asks": []}
        return {"bids": [[l[0], l[1]] for l in s.levels[0][:n]], "asks": [[l[0], l[1]] for l in s.levels[1][:n]]}

    def tops(self) -> Dict[str, Top]:
        return {self.symbols.get(sid, str(sid)): s.top() for sid, s in self.securities.items()
                if s.levels[0] or s.levels[1]}

    def head(self) -> dict:
        """The live agent's cut of :meth:`snapshot` (market by price: no orders)."""
        return {"messages": self.messages, "orders": None, "symbols": len(self.securities),
                "top": {s: _top_dict(t) for s, t in sorted(self.tops().items())}}

    def snapshot(self) -> dict:
        secs = {}
        for sid, s in sorted(self.securities.items()):
            d = _top_dict(s.top())
            d.update({"rpt_seq": s.last_rpt, "recovering": s.recovering, "from_snapshot": s.from_snapshot,
                      "status": s.status if s.status is None or isinstance(s.status, (str, int)) else str(s.status),
                      "levels": [len(s.levels[0]), len(s.levels[1])]})
            secs[self.symbols.get(sid, str(sid))] = d
        return {"venue": self.venue, "price_exponent": self.price_exponent, "depth": self.max_depth,
                "messages": self.messages, "counters": dict(sorted(self.counters.items())),
                "recovering": sum(1 for s in self.securities.values() if s.recovering),
                "securities": secs}
