"""Cross-venue view: consolidated best bid/offer, locked and crossed markets, arbitrage, tick-to-trade.

Venues trading the same instrument are joined through the symbol mapping of the config
(``exchanges[].symbols``: venue symbol -> canonical instrument). A venue with no mapping uses its
symbols as instrument names; a venue with a mapping that lacks the symbol counts ``unmapped`` and
the quote is ignored.

Inputs::

    on_quote(venue, symbol, ts_ns, bid_px, bid_qty, ask_px, ask_qty)   top of book of one venue
    on_market_data(venue, symbol, ts_ns)        any other update (for tick-to-trade)
    on_order(venue, symbol, ts_ns)              one of our orders (tick-to-trade sample)

Prices are integers in the same unit on every venue (the books of ``analytics.books`` use 1e-4 for
equities); None means an empty side.

Consolidated book (per instrument): best bid = highest bid over venues, best offer = lowest offer; on
a tie the larger quantity wins, then the venue name in sort order. The market is *locked* when the
best bid equals the best offer and *crossed* when it is above, with the two on different venues
(one venue's own book is never locked against itself here). An episode runs from the quote that
locked/crossed the market to the quote that ended it (a lock turning into a cross ends the lock and
starts a cross); ``duration_ns = end_ns - start_ns``.

Arbitrage opportunity: a crossed market whose edge is at least ``min_edge_bps``: buy at the best
offer's venue, sell at the best bid's venue, ``size = min(bid_qty, ask_qty)``,
``edge_bps = (bid - ask) / mid * 1e4`` with ``mid = (bid + ask) / 2``. One opportunity lasts while
the same (buy venue, sell venue) pair stays crossed; it reports its maximum size and edge and its
duration.

Tick-to-trade: ``on_order`` records ``ts_ns - (time of the last market-data update of the
instrument on any venue)`` in a latency recorder per order venue (microseconds).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from .percentiles import LatencyRecorder

MAX_EPISODES = 256


class _Inst:
    __slots__ = ("quotes", "state", "episode", "opp", "last_md", "bid", "ask")

    def __init__(self) -> None:
        self.quotes: Dict[str, tuple] = {}      # venue -> (bid_px, bid_qty, ask_px, ask_qty, ts)
        self.state: Optional[str] = None        # None, "locked", "crossed"
        self.episode: Optional[dict] = None
        self.opp: Optional[dict] = None
        self.last_md: Optional[int] = None
        self.bid: Optional[tuple] = None        # (px, qty, venue)
        self.ask: Optional[tuple] = None


class CrossVenue:
    def __init__(self, symbols: Optional[Dict[str, Dict[str, str]]] = None, clock: str = "unknown",
                 min_edge_bps: float = 0.0) -> None:
        self.symbols = {v: dict(m) for v, m in (symbols or {}).items()}
        self.clock = clock
        self.min_edge_bps = min_edge_bps
        self.inst: Dict[str, _Inst] = {}
        self.episodes: List[dict] = []
        self.opportunities: List[dict] = []
        self.totals = {"locked": 0, "crossed": 0, "locked_ns": 0, "crossed_ns": 0, "arbitrage": 0}
        self.t2t: Dict[str, LatencyRecorder] = {}
        self.unmapped = 0
        self.no_market_data = 0
        self.bad_input = 0

    @classmethod
    def from_config(cls, exchanges: Iterable[Any], **kw) -> "CrossVenue":
        """From config ``exchanges`` (objects or dicts with ``name`` and ``symbols``)."""
        sym: Dict[str, Dict[str, str]] = {}
        for e in exchanges:
            name = e["name"] if isinstance(e, dict) else e.name
            m = (e.get("symbols") if isinstance(e, dict) else getattr(e, "symbols", None)) or {}
            if m:
                sym.setdefault(name, {}).update(m)
        return cls(sym, **kw)

    def instrument(self, venue: str, symbol: str) -> Optional[str]:
        m = self.symbols.get(venue)
        if not m:
            return symbol
        return m.get(symbol)

    def _get(self, venue: str, symbol: str) -> Tuple[Optional[str], Optional[_Inst]]:
        name = self.instrument(venue, symbol)
        if name is None:
            self.unmapped += 1
            return None, None
        st = self.inst.get(name)
        if st is None:
            st = self.inst[name] = _Inst()
        return name, st

    # -- inputs ----------------------------------------------------------------------------------
    def on_market_data(self, venue: str, symbol: str, ts_ns: int) -> None:
        name, st = self._get(venue, symbol)
        if st is not None and (st.last_md is None or ts_ns > st.last_md):
            st.last_md = ts_ns

    def on_quote(self, venue: str, symbol: str, ts_ns: int, bid_px: Optional[int], bid_qty: Optional[int],
                 ask_px: Optional[int], ask_qty: Optional[int]) -> None:
        name, st = self._get(venue, symbol)
        if st is None:
            return
        if st.last_md is None or ts_ns > st.last_md:
            st.last_md = ts_ns
        if bid_px is None or not bid_qty:
            bid_px = bid_qty = None
        if ask_px is None or not ask_qty:
            ask_px = ask_qty = None
        st.quotes[venue] = (bid_px, bid_qty, ask_px, ask_qty)
        bb = ba = None
        for v, q in st.quotes.items():
            if q[0] is not None and (bb is None or q[0] > bb[0] or (q[0] == bb[0] and (
                    q[1] > bb[1] or (q[1] == bb[1] and v < bb[2])))):
                bb = (q[0], q[1], v)
            if q[2] is not None and (ba is None or q[2] < ba[0] or (q[2] == ba[0] and (
                    q[3] > ba[1] or (q[3] == ba[1] and v < ba[2])))):
                ba = (q[2], q[3], v)
        st.bid, st.ask = bb, ba
        state = None
        if bb is not None and ba is not None and bb[2] != ba[2]:
            if bb[0] == ba[0]:
                state = "locked"
            elif bb[0] > ba[0]:
                state = "crossed"
        if state != st.state:
            if st.episode is not None:
                self._close_episode(st, ts_ns)
            if state is not None:
                st.episode = {"instrument": name, "kind": state, "start_ns": ts_ns, "end_ns": None,
                              "duration_ns": None, "bid_venue": bb[2], "ask_venue": ba[2],
                              "bid_px": bb[0], "ask_px": ba[0]}
                self.totals[state] += 1
            st.state = state
        self._arbitrage(name, st, state, bb, ba, ts_ns)

    def _close_episode(self, st: _Inst, ts: int) -> None:
        ep = st.episode
        st.episode = None
        ep["end_ns"] = ts
        ep["duration_ns"] = ts - ep["start_ns"]
        self.totals[ep["kind"] + "_ns"] += ep["duration_ns"]
        self.episodes.append(ep)
        if len(self.episodes) > MAX_EPISODES:
            del self.episodes[0]

    def _arbitrage(self, name, st: _Inst, state, bb, ba, ts: int) -> None:
        opp = st.opp
        edge = None
        if state == "crossed":
            edge = (bb[0] - ba[0]) * 2e4 / (bb[0] + ba[0])
            if edge < self.min_edge_bps:
                edge = None
        if opp is not None and (edge is None or opp["buy_venue"] != ba[2] or opp["sell_venue"] != bb[2]):
            st.opp = None
            opp["end_ns"] = ts
            opp["duration_ns"] = ts - opp["start_ns"]
            self.opportunities.append(opp)
            if len(self.opportunities) > MAX_EPISODES:
                del self.opportunities[0]
            opp = None
        if edge is None:
            return
        size = min(bb[1], ba[1])
        if opp is None:
            st.opp = {"instrument": name, "buy_venue": ba[2], "sell_venue": bb[2], "buy_px": ba[0],
                      "sell_px": bb[0], "size": size, "max_size": size, "edge_bps": edge,
                      "max_edge_bps": edge, "start_ns": ts, "end_ns": None, "duration_ns": None}
            self.totals["arbitrage"] += 1
        else:
            opp.update(buy_px=ba[0], sell_px=bb[0], size=size, edge_bps=edge)
            opp["max_size"] = max(opp["max_size"], size)
            opp["max_edge_bps"] = max(opp["max_edge_bps"], edge)

    def on_order(self, venue: str, symbol: str, ts_ns: int) -> Optional[int]:
        """Record tick-to-trade for one of our orders; returns it in ns (None without market data)."""
        name, st = self._get(venue, symbol)
        if st is None:
            return None
        if st.last_md is None:
            self.no_market_data += 1
            return None
        rec = self.t2t.get(venue)
        if rec is None:
            rec = self.t2t[venue] = LatencyRecorder(self.clock)
        d = ts_ns - st.last_md
        rec.record(d)
        return d

    # -- reading ---------------------------------------------------------------------------------
    def bbo(self, instrument: str) -> Tuple[Optional[tuple], Optional[tuple]]:
        """((bid_px, bid_qty, venue) or None, (ask_px, ask_qty, venue) or None)."""
        st = self.inst.get(instrument)
        return (st.bid, st.ask) if st is not None else (None, None)

    def mid2(self, instrument: str) -> Optional[int]:
        """Twice the consolidated mid (bid + ask, an exact integer), None without both sides."""
        b, a = self.bbo(instrument)
        if b is None or a is None:
            return None
        return b[0] + a[0]

    def mid2_for(self, venue: str, symbol: str) -> Optional[int]:
        name = self.instrument(venue, symbol)
        return None if name is None else self.mid2(name)

    def snapshot(self) -> dict:
        insts = {}
        for name, st in sorted(self.inst.items()):
            insts[name] = {
                "bid_px": st.bid[0] if st.bid else None, "bid_qty": st.bid[1] if st.bid else None,
                "bid_venue": st.bid[2] if st.bid else None,
                "ask_px": st.ask[0] if st.ask else None, "ask_qty": st.ask[1] if st.ask else None,
                "ask_venue": st.ask[2] if st.ask else None, "state": st.state,
                "state_since_ns": st.episode["start_ns"] if st.episode else None,
                "venues": {v: {"bid_px": q[0], "bid_qty": q[1], "ask_px": q[2], "ask_qty": q[3]}
                           for v, q in sorted(st.quotes.items())},
                "arbitrage": dict(st.opp) if st.opp else None,
            }
        t2t_all = LatencyRecorder.merged(self.t2t.values(), clock=self.clock)
        return {"clock": self.clock, "instruments": insts, "totals": dict(self.totals),
                "episodes": list(self.episodes), "opportunities": list(self.opportunities),
                "tick_to_trade_us": {"all": t2t_all.snapshot(),
                                     "venues": {v: r.snapshot() for v, r in sorted(self.t2t.items())}},
                "unmapped": self.unmapped, "no_market_data": self.no_market_data}
