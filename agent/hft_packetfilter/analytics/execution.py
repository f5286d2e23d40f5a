"""Execution quality per venue: fill ratio, slippage against the arrival mid, effective spread.

Inputs (the order tracker of ``analytics.orders`` calls the first two as its ``listener``)::

    on_order(venue, order_key, instrument, side, qty, ts_ns, mid2=None)
    on_fill(venue, order_key, price, qty, ts_ns)
    on_done(venue, order_key)              forget a finished order (optional; memory is bounded anyway)

``side`` is +1 for a buy and -1 for a sell. Prices are integers in the book unit. The arrival mid is
the consolidated mid when the order is seen: ``mid2`` (twice the mid, ``bid + ask``, so it stays an
exact integer) is passed in or read from ``mid_source(venue, instrument)`` (for example
``CrossVenue.mid2_for``). An order without an arrival mid still counts for the fill ratio; its fills
count ``no_arrival_mid``.

Definitions, per fill, with ``mid = mid2 / 2``:

* slippage_bps = side * (price - mid) / mid * 1e4. **Positive = cost**: a buy filled above the
  arrival mid, or a sell filled below it. Negative = price improvement.
* effective_spread_bps = 2 * |price - mid| / mid * 1e4 (always >= 0).

Per venue the figures are averaged weighted by filled quantity. ``fill_ratio = filled_qty /
ordered_qty`` and ``fill_ratio_orders = orders with a fill / orders``.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Dict, Hashable, Optional


class _VenueExec:
    __slots__ = ("orders", "ordered_qty", "filled_orders", "fills", "filled_qty", "slip_qty_bps",
                 "espread_qty_bps", "measured_qty", "no_arrival_mid", "unknown_fills")

    def __init__(self) -> None:
        self.orders = 0
        self.ordered_qty = 0
        self.filled_orders = 0
        self.fills = 0
        self.filled_qty = 0
        self.slip_qty_bps = 0.0       # sum of qty * slippage_bps
        self.espread_qty_bps = 0.0    # sum of qty * effective_spread_bps
        self.measured_qty = 0         # quantity of fills that had an arrival mid
        self.no_arrival_mid = 0
        self.unknown_fills = 0

    def snapshot(self) -> dict:
        m = self.measured_qty
        return {"orders": self.orders, "ordered_qty": self.ordered_qty, "filled_orders": self.filled_orders,
                "fills": self.fills, "filled_qty": self.filled_qty,
                "fill_ratio": self.filled_qty / self.ordered_qty if self.ordered_qty else None,
                "fill_ratio_orders": self.filled_orders / self.orders if self.orders else None,
                "slippage_bps": self.slip_qty_bps / m if m else None,
                "effective_spread_bps": self.espread_qty_bps / m if m else None,
                "measured_qty": m, "no_arrival_mid": self.no_arrival_mid, "unknown_fills": self.unknown_fills}


class ExecutionQuality:
    def __init__(self, mid_source: Optional[Callable[[Any, Any], Optional[int]]] = None,
                 max_orders: int = 200_000) -> None:
        self.mid_source = mid_source
        self.max_orders = max_orders
        self.venues: Dict[Any, _VenueExec] = {}
        # (venue, key) -> [side, mid2 or None, filled?]
        self._orders: "collections.OrderedDict[tuple, list]" = collections.OrderedDict()
        self.evicted = 0

    def _v(self, venue) -> _VenueExec:
        v = self.venues.get(venue)
        if v is None:
            v = self.venues[venue] = _VenueExec()
        return v

    def on_order(self, venue: Hashable, order_key: Hashable, instrument: Any, side: int, qty,
                 ts_ns: int = 0, mid2: Optional[int] = None) -> None:
        if mid2 is None and self.mid_source is not None:
            try:
                mid2 = self.mid_source(venue, instrument)
            except Exception:  # noqa: BLE001 - a broken source must not stop the pipeline
                mid2 = None
        if mid2 is not None and mid2 <= 0:
            mid2 = None
        v = self._v(venue)
        v.orders += 1
        v.ordered_qty += qty or 0
        self._orders[(venue, order_key)] = [1 if side >= 0 else -1, mid2, False]
        if len(self._orders) > self.max_orders:
            self._orders.popitem(last=False)
            self.evicted += 1

    def on_fill(self, venue: Hashable, order_key: Hashable, price: Optional[int], qty, ts_ns: int = 0) -> None:
        v = self._v(venue)
        o = self._orders.get((venue, order_key))
        if o is None:
            v.unknown_fills += 1
            return
        v.fills += 1
        v.filled_qty += qty
        if not o[2]:
            o[2] = True
            v.filled_orders += 1
        mid2 = o[1]
        if mid2 is None or price is None:
            v.no_arrival_mid += 1
            return
        # price - mid = (2*price - mid2) / 2 ; / mid = / (mid2 / 2)  ->  (2*price - mid2) / mid2
        rel = (2 * price - mid2) / mid2
        v.slip_qty_bps += qty * o[0] * rel * 1e4
        v.espread_qty_bps += qty * 2.0 * abs(rel) * 1e4
        v.measured_qty += qty

    def on_done(self, venue: Hashable, order_key: Hashable) -> None:
        self._orders.pop((venue, order_key), None)

    def snapshot(self) -> dict:
        return {"venues": {str(k): v.snapshot() for k, v in sorted(self.venues.items(), key=lambda kv: str(kv[0]))},
                "open_orders": len(self._orders), "evicted": self.evicted}
