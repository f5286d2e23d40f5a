"""Market-data simulators: generators, a paced UDP sender with injected faults, and pcap replay.

Generators (each ``next_packet()`` returns one UDP payload and sets ``last_count`` to the number of
sequence numbers it used; ``skip(n)`` advances the sequence without sending, which is how a gap is
made; ``seq`` is the next sequence number):

* :class:`ItchGenerator` -- Nasdaq TotalView-ITCH 5.0 over MoldUDP64 1.00. The first packet carries
  the start-of-day preamble (system event 'S' O, a stock directory 'R' per symbol, 'S' S and 'S' Q);
  then add 'A', executed 'E', cancel 'X', delete 'D' and replace 'U' orders around the venue's mid.
  Several messages per packet (``max_batch``), one MoldUDP64 sequence number per message.
* :class:`PitchGenerator` -- Cboe US Equities Multicast PITCH 2.x (Sequenced Unit Header, Time 0x20,
  Add Order Long 0x21, Order Executed 0x23, Reduce Size Long 0x25, Modify Order Long 0x27, Delete
  Order 0x29); one sequence number per message, per unit.
* :class:`Mdp3Generator` -- a CME-like MDP 3.0 channel: binary packet header (MsgSeqNum u32 LE,
  SendingTime u64 LE ns), one sequence number per packet, carrying MDIncrementalRefreshBook46 (an
  aggregated price-level book kept consistent: New/Change/Delete by level) and now and then
  MDIncrementalRefreshTradeSummary48. The layouts are those of CME's ``templates_FixBinary.xml``
  schema id 1 version 9 (constants below; :func:`check_mdp3_layout` compares them with a loaded
  schema, and the tests decode our packets with that schema through ``protocols.mdp3``).

Timestamps: the ITCH and PITCH generators stamp ns since *UTC* midnight (a venue's config then says
``timezone: UTC``; Nasdaq's real feed counts from US Eastern midnight).

Prices: equity generators use integer 1e-4 dollars (the ITCH / PITCH long-price unit) on a one-cent
tick; MDP3 uses PRICE9/PRICENULL9 mantissas (1e-9). Nothing becomes a float on the wire.

Cross-venue behaviour: venues share a :class:`MidWalk` (one random-walk mid per symbol, in ticks).
Each venue quotes around ``common mid + its own offset``; the offset mean-reverts to 0 and now and
then jumps by 3-5 ticks for a while, so one venue's best bid rises above the other's best offer:
crossed markets and arbitrage show up now and then, not all the time. The default symbol sets of
venue A and venue B overlap (AAPL, MSFT, NVDA, AMZN) and each has one symbol of its own.

:class:`FeedSender` sends a generator's packets to a unicast address or a multicast group (egress
interface by name or address, TTL), from inside a network namespace if asked, at a target rate for
a bounded duration and count, and executes :class:`Injection` s on a schedule: a gap (skip N
sequence numbers), a duplicate burst (resend the last K packets), a stall (silence for S seconds).
:func:`replay_pcap` sends a capture's UDP payloads the same way.

Bounds: rate <= ``MAX_RATE`` packets/s, count <= ``MAX_PACKETS``, duration <= ``MAX_DURATION_S``,
duplicate bursts <= ``MAX_DUP_BURST`` packets, stalls <= ``MAX_STALL_S``.
"""
from __future__ import annotations

import collections
import dataclasses
import ipaddress
import random
import socket
import struct
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..protocols import itch50, moldudp64

MAX_RATE = 100_000            # packets per second
MAX_PACKETS = 1_000_000       # packets per sender run
MAX_DURATION_S = 86_400.0
MAX_DUP_BURST = 1024          # packets remembered for a duplicate burst
MAX_GAP = 1_000_000           # sequence numbers one gap may skip
MAX_STALL_S = 120.0
MAX_DATAGRAM = 1400           # payload bytes we aim to stay under (one Ethernet MTU, no fragments)

NS_PER_DAY = 86_400 * 1_000_000_000

# Default symbol universe: symbol -> starting mid in dollars. Venue A and venue B overlap on four.
SYMBOL_MIDS: Dict[str, float] = {"AAPL": 190.00, "MSFT": 410.00, "NVDA": 880.00, "AMZN": 180.00,
                                 "META": 490.00, "GOOG": 160.00, "TSLA": 175.00}
VENUE_A_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "META")
VENUE_B_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG")

EQUITY_TICK = 100             # one cent in 1e-4 dollars


def _ns_since_midnight() -> int:
    return time.time_ns() % NS_PER_DAY


# --------------------------------------------------------------------------------------------
# shared price process


class MidWalk:
    """One random-walk mid per symbol, in ticks, shared by the venues that quote the symbol.

    ``tick(symbol)`` moves the symbol's mid by one tick up or down with probability ``move_prob``
    and returns it; any venue may call it (thread-safe). Deterministic for a given seed when driven
    from one thread.
    """

    def __init__(self, mids: Optional[Dict[str, float]] = None, tick: float = 0.01, seed: int = 7,
                 move_prob: float = 0.3) -> None:
        mids = dict(SYMBOL_MIDS if mids is None else mids)
        self.tick_size = tick
        self._mid = {s: max(10, int(round(p / tick))) for s, p in mids.items()}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.move_prob = move_prob

    def add(self, symbol: str, price: float) -> None:
        with self._lock:
            self._mid.setdefault(symbol, max(10, int(round(price / self.tick_size))))

    def mid(self, symbol: str) -> int:
        with self._lock:
            return self._mid.setdefault(symbol, int(round(100.0 / self.tick_size)))

    def tick(self, symbol: str) -> int:
        with self._lock:
            m = self._mid.setdefault(symbol, int(round(100.0 / self.tick_size)))
            r = self._rng.random()
            if r < self.move_prob:
                m += 1 if r < self.move_prob / 2 else -1
                m = max(10, m)
                self._mid[symbol] = m
            return m


class _VenueOffset:
    """A venue's deviation from the common mid, in ticks: mean-reverting, with rare 3-5 tick jumps."""

    def __init__(self, rng: random.Random, jump_prob: float) -> None:
        self.rng = rng
        self.jump_prob = jump_prob
        self.value = 0

    def step(self) -> int:
        r = self.rng.random()
        if r < self.jump_prob:
            self.value = self.rng.choice((-1, 1)) * self.rng.randint(3, 5)
        elif self.value and r < self.jump_prob + 0.08:
            self.value -= 1 if self.value > 0 else -1
        return self.value


class _BookSim:
    """Order-level book of one venue: emits add / execute / cancel / delete / replace events.

    Events (tuples, the symbol always last): ("A", ref, side "B"/"S", shares, price, symbol),
    ("E", ref, shares, match, symbol), ("X", ref, shares, symbol), ("D", ref, symbol),
    ("U", old_ref, new_ref, shares, price, symbol). Prices are integer
    1e-4 dollars. Bids rest below the venue mid, offers above; when the mid moves through a resting
    order, that order is executed (the market traded through it), so a venue's own book is never
    crossed. ``replace_keeps_id``: PITCH modifies keep the order id, ITCH replaces assign a new one.
    """

    def __init__(self, symbols: Sequence[str], walk: MidWalk, rng: random.Random, jump_prob: float,
                 max_orders: int = 32, replace_keeps_id: bool = False) -> None:
        self.symbols = list(symbols)
        self.walk = walk
        self.rng = rng
        self.max_orders = max_orders
        self.keep_id = replace_keeps_id
        self.orders: Dict[str, Dict[int, list]] = {s: {} for s in self.symbols}  # ref -> [side, px_ticks, shares]
        self.offsets = {s: _VenueOffset(rng, jump_prob) for s in self.symbols}
        self.next_ref = 1
        self.next_match = 1
        self.tick_px = int(round(walk.tick_size * 10_000))

    def _ref(self) -> int:
        r = self.next_ref
        self.next_ref += 1
        return r

    def _match(self) -> int:
        m = self.next_match
        self.next_match += 1
        return m

    def venue_mid(self, symbol: str) -> int:
        return self.walk.mid(symbol) + self.offsets[symbol].value

    def step(self) -> List[tuple]:
        rng = self.rng
        sym = rng.choice(self.symbols)
        mid = self.walk.tick(sym) + self.offsets[sym].step()
        book = self.orders[sym]
        tp = self.tick_px
        ev: List[tuple] = []
        # orders the mid moved through are executed in full
        for ref, (side, px, shares) in list(book.items()):
            if (side == "B" and px >= mid) or (side == "S" and px <= mid):
                ev.append(("E", ref, shares, self._match(), sym))
                del book[ref]
        n = len(book)
        r = rng.random()
        if n < 6 or r < 0.40:
            side = "B" if rng.random() < 0.5 else "S"
            k = rng.randint(1, 5)
            px = mid - k if side == "B" else mid + k
            shares = 100 * rng.randint(1, 10)
            ref = self._ref()
            book[ref] = [side, px, shares]
            ev.append(("A", ref, side, shares, px * tp, sym))
        elif r < 0.50:
            # execute part of the best order on a random side
            side = "B" if rng.random() < 0.5 else "S"
            same = [(ref, o) for ref, o in book.items() if o[0] == side]
            if same:
                ref, o = (max if side == "B" else min)(same, key=lambda x: x[1][1])
                q = min(o[2], 100 * rng.randint(1, 3))
                ev.append(("E", ref, q, self._match(), sym))
                o[2] -= q
                if o[2] <= 0:
                    del book[ref]
        elif r < 0.65:
            ref = rng.choice(list(book))
            o = book[ref]
            if o[2] > 100:
                q = 100 * rng.randint(1, o[2] // 100 - 1) if o[2] > 200 else 100
                o[2] -= q
                ev.append(("X", ref, q, sym))
            else:
                del book[ref]
                ev.append(("D", ref, sym))
        elif r < 0.85:
            ref = rng.choice(list(book))
            del book[ref]
            ev.append(("D", ref, sym))
        else:
            ref = rng.choice(list(book))
            side, _px, _sh = book.pop(ref)
            k = rng.randint(1, 5)
            px = mid - k if side == "B" else mid + k
            shares = 100 * rng.randint(1, 10)
            new = ref if self.keep_id else self._ref()
            book[new] = [side, px, shares]
            ev.append(("U", ref, new, shares, px * tp, sym))
        while len(book) > self.max_orders:
            ref = next(iter(book))
            del book[ref]
            ev.append(("D", ref, sym))
        return ev

    def top(self, symbol: str) -> Tuple[Optional[int], Optional[int]]:
        """(best bid, best offer) in 1e-4 dollars from the generator's own view (tests, demo)."""
        book = self.orders[symbol]
        bids = [o[1] for o in book.values() if o[0] == "B"]
        asks = [o[1] for o in book.values() if o[0] == "S"]
        tp = self.tick_px
        return (max(bids) * tp if bids else None, min(asks) * tp if asks else None)


# --------------------------------------------------------------------------------------------
# generators


class _OrderFeedGenerator:
    """What the order-by-order generators (ITCH, PITCH) share: symbols on a mid walk, a simulated
    book, the sequence and message counters."""

    def _setup(self, symbols: Sequence[str], walk: Optional[MidWalk], seed: int, max_batch: int,
               batch_limit: int, symbol_limit: int, what: str, jump_prob: float, first_seq: int,
               replace_keeps_id: bool = False) -> None:
        if not 1 <= max_batch <= batch_limit:
            raise ValueError(f"max_batch must be 1..{batch_limit}")
        self.rng = random.Random(seed)
        self.walk = walk if walk is not None else MidWalk(seed=seed)
        self.symbols = list(symbols)
        for s in self.symbols:
            if len(s) > symbol_limit:
                raise ValueError(f"{what} symbols are at most {symbol_limit} characters: {s!r}")
            self.walk.add(s, SYMBOL_MIDS.get(s, 100.0))
        self.max_batch = max_batch
        self.seq = first_seq
        self.last_count = 0
        self.messages = 0
        self.book = _BookSim(self.symbols, self.walk, self.rng, jump_prob, replace_keeps_id=replace_keeps_id)
        self._pending: collections.deque = collections.deque()


class ItchGenerator(_OrderFeedGenerator):
    """ITCH 5.0 messages in MoldUDP64 packets (see the module docstring)."""

    protocol = "ITCH/MoldUDP64"

    def __init__(self, symbols: Sequence[str] = VENUE_A_SYMBOLS, walk: Optional[MidWalk] = None,
                 seed: int = 1, session: str = "HFTSIM0001", max_batch: int = 3,
                 jump_prob: float = 0.002, first_seq: int = 1) -> None:
        if len(session.encode("ascii")) > 10:
            raise ValueError("a MoldUDP64 session is at most 10 ASCII characters")
        self._setup(symbols, walk, seed, max_batch, 20, 8, "ITCH", jump_prob, first_seq)
        self.session = session
        self.locate = {s: i + 1 for i, s in enumerate(self.symbols)}
        self._preamble_done = False
        self._tracking = 0

    def _msg(self, t: str, **f) -> bytes:
        self._tracking = (self._tracking + 1) & 0xFFFF
        return itch50.encode_message(t, tracking_number=self._tracking, timestamp=_ns_since_midnight(), **f)

    def preamble(self) -> List[bytes]:
        out = [self._msg("S", event_code="O")]
        for s in self.symbols:
            out.append(self._msg("R", stock_locate=self.locate[s], stock=s, market_category="Q",
                                 financial_status_indicator="N", round_lot_size=100, round_lots_only="N",
                                 issue_classification="C", issue_sub_type="Z", authenticity="P",
                                 short_sale_threshold_indicator="N", ipo_flag="N",
                                 luld_reference_price_tier="1", etp_flag="N", etp_leverage_factor=0,
                                 inverse_indicator="N"))
        out.append(self._msg("S", event_code="S"))
        out.append(self._msg("S", event_code="Q"))
        return out

    def _encode(self, e: tuple) -> bytes:
        k, loc = e[0], self.locate[e[-1]]
        if k == "A":
            _, ref, side, shares, px, sym = e
            return self._msg("A", stock_locate=loc, order_reference_number=ref, side=side, shares=shares,
                             stock=sym, price=px)
        if k == "E":
            return self._msg("E", stock_locate=loc, order_reference_number=e[1], executed_shares=e[2],
                             match_number=e[3])
        if k == "X":
            return self._msg("X", stock_locate=loc, order_reference_number=e[1], cancelled_shares=e[2])
        if k == "D":
            return self._msg("D", stock_locate=loc, order_reference_number=e[1])
        return self._msg("U", stock_locate=loc, original_order_reference_number=e[1],
                         new_order_reference_number=e[2], shares=e[3], price=e[4])

    def next_packet(self) -> bytes:
        if not self._preamble_done:       # start of day: system event, directory, start of market
            self._preamble_done = True
            msgs = self.preamble()
        else:
            want = self.rng.randint(1, self.max_batch)
            msgs = []
            size = moldudp64.HEADER_LEN
            while len(msgs) < want:
                if not self._pending:
                    self._pending.extend(self._encode(e) for e in self.book.step())
                    continue
                m = self._pending[0]
                if msgs and size + 2 + len(m) > MAX_DATAGRAM:
                    break
                msgs.append(self._pending.popleft())
                size += 2 + len(m)
        pkt = moldudp64.encode_packet(self.session, self.seq, msgs)
        self.last_count = len(msgs)
        self.seq += len(msgs)
        self.messages += len(msgs)
        return pkt

    def skip(self, n: int) -> None:
        """Advance the sequence by n without sending (a gap of n messages)."""
        self.seq += n

    def heartbeat(self) -> bytes:
        self.last_count = 0
        return moldudp64.encode_packet(self.session, self.seq, count=0)

    def end_of_session(self) -> bytes:
        self.last_count = 0
        return moldudp64.encode_packet(self.session, self.seq, count=moldudp64.END_OF_SESSION)

    def top(self, symbol: str) -> Tuple[Optional[int], Optional[int]]:
        return self.book.top(symbol)


# ---- Cboe PITCH

PITCH_UNIT_HEADER = struct.Struct("<HBBI")
_P_TIME = struct.Struct("<BBI")                    # 0x20 Time: seconds since midnight
_P_ADD_LONG = struct.Struct("<BBIQcI6sQB")         # 0x21 (34 bytes)
_P_EXEC = struct.Struct("<BBIQIQ")                 # 0x23 (26 bytes)
_P_REDUCE_LONG = struct.Struct("<BBIQI")           # 0x25 (18 bytes)
_P_MODIFY_LONG = struct.Struct("<BBIQIQB")         # 0x27 (27 bytes)
_P_DELETE = struct.Struct("<BBIQ")                 # 0x29 (14 bytes)


def _pstruct(st: struct.Struct, typ: int, *vals) -> bytes:
    return st.pack(st.size, typ, *vals)


class PitchGenerator(_OrderFeedGenerator):
    """Cboe PITCH 2.x Sequenced Units (see the module docstring). ``unit`` is the HdrUnit."""

    protocol = "PITCH/UDP"

    def __init__(self, symbols: Sequence[str] = VENUE_B_SYMBOLS, walk: Optional[MidWalk] = None,
                 seed: int = 3, unit: int = 1, max_batch: int = 4, jump_prob: float = 0.002,
                 first_seq: int = 1) -> None:
        if not 1 <= unit <= 255:
            raise ValueError("unit must be 1..255")
        self._setup(symbols, walk, seed, max_batch, 40, 6, "PITCH long-form", jump_prob, first_seq,
                    replace_keeps_id=True)
        self.unit = unit
        self._second = -1

    def _encode(self, e: tuple, off: int) -> bytes:
        k = e[0]
        if k == "A":
            _, ref, side, shares, px, sym = e
            return _pstruct(_P_ADD_LONG, 0x21, off, ref, side.encode(), shares, sym.encode().ljust(6), px, 1)
        if k == "E":
            _, ref, shares, match, _sym = e
            return _pstruct(_P_EXEC, 0x23, off, ref, shares, match)
        if k == "X":
            return _pstruct(_P_REDUCE_LONG, 0x25, off, e[1], e[2])
        if k == "D":
            return _pstruct(_P_DELETE, 0x29, off, e[1])
        _, old, _new, shares, px, _sym = e
        return _pstruct(_P_MODIFY_LONG, 0x27, off, old, shares, px, 0)

    def _fill(self) -> None:
        now = _ns_since_midnight()
        sec, off = divmod(now, 1_000_000_000)
        if sec != self._second:
            self._second = sec
            self._pending.append(_pstruct(_P_TIME, 0x20, sec))
        for e in self.book.step():
            self._pending.append(self._encode(e, off))

    def next_packet(self) -> bytes:
        want = self.rng.randint(1, self.max_batch)
        msgs: List[bytes] = []
        size = PITCH_UNIT_HEADER.size
        while len(msgs) < want:
            if not self._pending:
                self._fill()
                continue
            m = self._pending[0]
            if msgs and size + len(m) > MAX_DATAGRAM:
                break
            msgs.append(self._pending.popleft())
            size += len(m)
        body = b"".join(msgs)
        pkt = PITCH_UNIT_HEADER.pack(PITCH_UNIT_HEADER.size + len(body), len(msgs), self.unit, self.seq) + body
        self.last_count = len(msgs)
        self.seq += len(msgs)
        self.messages += len(msgs)
        return pkt

    def skip(self, n: int) -> None:
        self.seq += n

    def heartbeat(self) -> bytes:
        """An unsequenced empty unit (HdrCount 0): what Cboe sends as a heartbeat."""
        self.last_count = 0
        return PITCH_UNIT_HEADER.pack(PITCH_UNIT_HEADER.size, 0, self.unit, self.seq)

    def top(self, symbol: str) -> Tuple[Optional[int], Optional[int]]:
        return self.book.top(symbol)


# ---- CME MDP 3.0

# Layouts of templates_FixBinary.xml, schema id 1, version 9 (checked by check_mdp3_layout()).
MDP3_SCHEMA_ID = 1
MDP3_VERSION = 9
MDP3_PACKET_HEADER = struct.Struct("<IQ")          # MsgSeqNum, SendingTime (ns since epoch)
MDP3_MSG_HEADER = struct.Struct("<HHHHH")          # MsgSize, blockLength, templateId, schemaId, version
BOOK46_ID, BOOK46_BLOCK = 46, 11                   # MDIncrementalRefreshBook46
TRADE48_ID, TRADE48_BLOCK = 48, 11                 # MDIncrementalRefreshTradeSummary48
_ROOT = struct.Struct("<QB2x")                     # TransactTime u64, MatchEventIndicator u8, pad to 11
_GROUP_SIZE = struct.Struct("<HB")                 # groupSize: blockLength u16, numInGroup u8
_GROUP_SIZE8 = struct.Struct("<H5xB")              # groupSize8Byte: blockLength u16, numInGroup u8 @7
# NoMDEntries of 46: MDEntryPx PRICENULL9 @0, MDEntrySize Int32NULL @8, SecurityID @12, RptSeq @16,
# NumberOfOrders Int32NULL @20, MDPriceLevel u8 @24, MDUpdateAction u8 @25, MDEntryType char @26; 32.
_BOOK46_ENTRY = struct.Struct("<qiiIiBBc5x")
_BOOK46_ORDER_BLOCK = 24                           # NoOrderIDEntries entry size (we send none)
# NoMDEntries of 48: MDEntryPx PRICE9 @0, MDEntrySize @8, SecurityID @12, RptSeq @16,
# NumberOfOrders @20, AggressorSide u8 @24, MDUpdateAction u8 @25, MDTradeEntryID u32 @26; 32.
_TRADE48_ENTRY = struct.Struct("<qiiIiBBI2x")
_TRADE48_ORDER_BLOCK = 16
MEI_LAST_TRADE, MEI_LAST_QUOTE, MEI_END_OF_EVENT = 0x01, 0x04, 0x80
MD_NEW, MD_CHANGE, MD_DELETE = 0, 1, 2
PRICE9 = 1_000_000_000

# symbol -> (SecurityID, starting price, tick size)
MDP3_INSTRUMENTS: Dict[str, Tuple[int, float, float]] = {
    "ESZ5": (1001, 5000.00, 0.25),
    "NQZ5": (1002, 17500.00, 0.25),
    "CLZ5": (1003, 78.50, 0.01),
}


def check_mdp3_layout(schema) -> List[str]:
    """Compare the constants above with a loaded :class:`protocols.sbe.Schema`; [] when they agree."""
    problems: List[str] = []
    if schema.id != MDP3_SCHEMA_ID:
        problems.append(f"schema id {schema.id} != {MDP3_SCHEMA_ID}")
    expect = {
        BOOK46_ID: (BOOK46_BLOCK, {"MDEntryPx": 0, "MDEntrySize": 8, "SecurityID": 12, "RptSeq": 16,
                                   "NumberOfOrders": 20, "MDPriceLevel": 24, "MDUpdateAction": 25,
                                   "MDEntryType": 26}, _BOOK46_ENTRY.size, _BOOK46_ORDER_BLOCK),
        TRADE48_ID: (TRADE48_BLOCK, {"MDEntryPx": 0, "MDEntrySize": 8, "SecurityID": 12, "RptSeq": 16,
                                     "NumberOfOrders": 20, "AggressorSide": 24, "MDUpdateAction": 25,
                                     "MDTradeEntryID": 26}, _TRADE48_ENTRY.size, _TRADE48_ORDER_BLOCK),
    }
    for tid, (block, offsets, entry_size, order_block) in expect.items():
        m = schema.messages.get(tid)
        if m is None:
            problems.append(f"template {tid} missing")
            continue
        if m.block_length != block:
            problems.append(f"template {tid}: blockLength {m.block_length} != {block}")
        if len(m.groups) < 2:
            problems.append(f"template {tid}: expected 2 groups")
            continue
        g, og = m.groups[0], m.groups[1]
        if g.block_length != entry_size:
            problems.append(f"template {tid} {g.name}: blockLength {g.block_length} != {entry_size}")
        if og.block_length != order_block:
            problems.append(f"template {tid} {og.name}: blockLength {og.block_length} != {order_block}")
        if g.dimension.size != _GROUP_SIZE.size or og.dimension.size != _GROUP_SIZE8.size:
            problems.append(f"template {tid}: group dimension sizes differ")
        have = {f.name: f.offset for f in g.fields if f.const is None}
        for name, off in offsets.items():
            if have.get(name) != off:
                problems.append(f"template {tid} {name}: offset {have.get(name)} != {off}")
    return problems


def encode_book46(transact_ns: int, entries: Sequence[tuple], mei: int = MEI_LAST_QUOTE | MEI_END_OF_EVENT) -> bytes:
    """One MDIncrementalRefreshBook46 message (with its MsgSize). ``entries``: (price mantissa 1e-9
    or None, size or None, security id, rpt seq, number of orders or None, level, action, entry type
    b"0" bid / b"1" offer)."""
    null32 = 2147483647
    body = [_ROOT.pack(transact_ns, mei), _GROUP_SIZE.pack(_BOOK46_ENTRY.size, len(entries))]
    for px, size, sec, rpt, norders, level, action, etype in entries:
        body.append(_BOOK46_ENTRY.pack(0x7FFFFFFFFFFFFFFF if px is None else px,
                                       null32 if size is None else size, sec, rpt,
                                       null32 if norders is None else norders, level, action, etype))
    body.append(_GROUP_SIZE8.pack(_BOOK46_ORDER_BLOCK, 0))
    payload = b"".join(body)
    return MDP3_MSG_HEADER.pack(MDP3_MSG_HEADER.size + len(payload), BOOK46_BLOCK, BOOK46_ID, MDP3_SCHEMA_ID,
                                MDP3_VERSION) + payload


def encode_trade48(transact_ns: int, entries: Sequence[tuple], mei: int = MEI_LAST_TRADE | MEI_END_OF_EVENT) -> bytes:
    """One MDIncrementalRefreshTradeSummary48. ``entries``: (price mantissa 1e-9, size, security id,
    rpt seq, number of orders, aggressor side 1 buy / 2 sell, trade entry id)."""
    body = [_ROOT.pack(transact_ns, mei), _GROUP_SIZE.pack(_TRADE48_ENTRY.size, len(entries))]
    for px, size, sec, rpt, norders, aggressor, trade_id in entries:
        body.append(_TRADE48_ENTRY.pack(px, size, sec, rpt, norders, aggressor, MD_NEW, trade_id))
    body.append(_GROUP_SIZE8.pack(_TRADE48_ORDER_BLOCK, 0))
    payload = b"".join(body)
    return MDP3_MSG_HEADER.pack(MDP3_MSG_HEADER.size + len(payload), TRADE48_BLOCK, TRADE48_ID, MDP3_SCHEMA_ID,
                                MDP3_VERSION) + payload


class _Mdp3Book:
    def __init__(self, sec_id: int, price: float, tick: float, depth: int, rng: random.Random) -> None:
        self.sec_id = sec_id
        self.tick_m = int(round(tick * PRICE9))
        self.mid = int(round(price / tick))             # in ticks; best bid = mid - 1, best offer = mid + 1
        self.depth = depth
        self.rng = rng
        self.rpt = 0
        self.bids = [[self.mid - 1 - i, rng.randint(1, 50), rng.randint(1, 10)] for i in range(depth)]
        self.offers = [[self.mid + 1 + i, rng.randint(1, 50), rng.randint(1, 10)] for i in range(depth)]

    def _e(self, lvl: list, level: int, action: int, etype: bytes) -> tuple:
        self.rpt += 1
        return (lvl[0] * self.tick_m, lvl[1], self.sec_id, self.rpt, lvl[2], level, action, etype)

    def _new_level(self, px: int) -> list:
        return [px, self.rng.randint(1, 50), self.rng.randint(1, 10)]

    def step(self) -> List[tuple]:
        r = self.rng.random()
        out: List[tuple] = []
        if r < 0.15:       # mid up one tick: new best bid, best offer removed, new far offer
            self.mid += 1
            b = self._new_level(self.mid - 1)
            self.bids.insert(0, b)
            self.bids.pop()
            out.append(self._e(b, 1, MD_NEW, b"0"))
            gone = self.offers.pop(0)
            out.append(self._e(gone, 1, MD_DELETE, b"1"))
            far = self._new_level(self.offers[-1][0] + 1)
            self.offers.append(far)
            out.append(self._e(far, self.depth, MD_NEW, b"1"))
        elif r < 0.30:     # mid down one tick
            self.mid -= 1
            o = self._new_level(self.mid + 1)
            self.offers.insert(0, o)
            self.offers.pop()
            out.append(self._e(o, 1, MD_NEW, b"1"))
            gone = self.bids.pop(0)
            out.append(self._e(gone, 1, MD_DELETE, b"0"))
            far = self._new_level(self.bids[-1][0] - 1)
            self.bids.append(far)
            out.append(self._e(far, self.depth, MD_NEW, b"0"))
        else:              # size change at one level
            side, etype = (self.bids, b"0") if self.rng.random() < 0.5 else (self.offers, b"1")
            i = self.rng.randrange(self.depth)
            side[i][1] = self.rng.randint(1, 50)
            side[i][2] = self.rng.randint(1, 10)
            out.append(self._e(side[i], i + 1, MD_CHANGE, etype))
        return out


class Mdp3Generator:
    """A CME-like MDP 3.0 incremental channel (see the module docstring)."""

    protocol = "MDP3/UDP"

    def __init__(self, instruments: Optional[Dict[str, Tuple[int, float, float]]] = None, seed: int = 5,
                 depth: int = 5, trade_prob: float = 0.1, first_seq: int = 1) -> None:
        if not 1 <= depth <= 10:
            raise ValueError("depth must be 1..10")
        self.rng = random.Random(seed)
        self.instruments = dict(MDP3_INSTRUMENTS if instruments is None else instruments)
        self.books = {sym: _Mdp3Book(sec, px, tick, depth, self.rng)
                      for sym, (sec, px, tick) in self.instruments.items()}
        self.trade_prob = trade_prob
        self.seq = first_seq
        self.last_count = 0
        self.messages = 0
        self._trade_id = 0

    def next_packet(self) -> bytes:
        book = self.rng.choice(list(self.books.values()))
        now = time.time_ns()
        msgs = []
        if self.rng.random() < self.trade_prob:
            self._trade_id += 1
            book.rpt += 1
            aggressor = 1 if self.rng.random() < 0.5 else 2
            px = (book.mid + (1 if aggressor == 1 else -1)) * book.tick_m
            msgs.append(encode_trade48(now, [(px, self.rng.randint(1, 20), book.sec_id, book.rpt,
                                              self.rng.randint(1, 4), aggressor, self._trade_id)]))
        msgs.append(encode_book46(now, book.step()))
        pkt = MDP3_PACKET_HEADER.pack(self.seq & 0xFFFFFFFF, now) + b"".join(msgs)
        self.last_count = 1
        self.seq += 1
        self.messages += len(msgs)
        return pkt

    def skip(self, n: int) -> None:
        self.seq += n

    def heartbeat(self) -> bytes:
        """A packet with no messages (header only): one sequence number, like a CME heartbeat."""
        pkt = MDP3_PACKET_HEADER.pack(self.seq & 0xFFFFFFFF, time.time_ns())
        self.last_count = 1
        self.seq += 1
        return pkt


# --------------------------------------------------------------------------------------------
# sender


@dataclasses.dataclass
class Injection:
    """A scheduled fault. ``kind``: "gap" (skip ``n`` sequence numbers), "duplicate" (resend the last
    ``n`` packets), "stall" (send nothing for ``seconds``). It fires at ``at_s`` seconds after the
    start or after ``at_packet`` packets, whichever is given (``at_packet`` wins when both are)."""

    kind: str
    at_s: Optional[float] = None
    at_packet: Optional[int] = None
    n: int = 1
    seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("gap", "duplicate", "stall"):
            raise ValueError(f"injection kind must be gap, duplicate or stall, not {self.kind!r}")
        if self.at_s is None and self.at_packet is None:
            raise ValueError("an injection needs at_s or at_packet")
        if self.kind == "gap" and not 1 <= self.n <= MAX_GAP:
            raise ValueError(f"gap size must be 1..{MAX_GAP}")
        if self.kind == "duplicate" and not 1 <= self.n <= MAX_DUP_BURST:
            raise ValueError(f"duplicate burst must be 1..{MAX_DUP_BURST} packets")
        if self.kind == "stall" and not 0 < self.seconds <= MAX_STALL_S:
            raise ValueError(f"stall must be 0..{MAX_STALL_S} s")

    @classmethod
    def parse(cls, kind: str, text: str) -> "Injection":
        """CLI form ``WHEN:AMOUNT``: WHEN is seconds ("5s" or "5.0") or a packet index ("#1000");
        AMOUNT is N (gap, duplicate) or seconds (stall). E.g. ``gap 5:10``, ``duplicate #500:3``."""
        when, _, amount = text.partition(":")
        if not amount:
            raise ValueError(f"{kind} wants WHEN:AMOUNT, got {text!r}")
        kw: dict = {}
        if when.startswith("#"):
            kw["at_packet"] = int(when[1:])
        else:
            kw["at_s"] = float(when.rstrip("s"))
        if kind == "stall":
            kw["seconds"] = float(amount.rstrip("s"))
        else:
            kw["n"] = int(amount)
        return cls(kind, **kw)


def parse_hostport(text: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected ADDR:PORT, got {text!r}")
    p = int(port)
    if not 0 <= p <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    ipaddress.ip_address(host)
    return host, p


def _is_multicast(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_multicast
    except ValueError:
        return False


def open_udp_sender(dst: Tuple[str, int], netns: Optional[str] = None, iface: Optional[str] = None,
                    ttl: int = 1, src: Optional[Tuple[str, int]] = None) -> socket.socket:
    """A UDP socket (inside ``netns`` when given) set up to send to ``dst``; for a multicast group
    the egress interface is ``iface`` (an interface name, or a local IPv4 address)."""
    from ..kernel.netlab import entered, socket_in

    sock = socket_in(netns) if netns else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        if src is not None:
            sock.bind(src)
        if _is_multicast(dst[0]):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, max(1, min(ttl, 255)))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            if iface:
                try:
                    addr = socket.inet_aton(str(ipaddress.IPv4Address(iface)))
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, addr)
                except ValueError:
                    with entered(netns):   # interface names are per namespace
                        idx = socket.if_nametoindex(iface)
                    # struct ip_mreqn {imr_multiaddr, imr_address, imr_ifindex}
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                    struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, idx))
        elif iface and not _looks_like_ip(iface):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    except BaseException:
        sock.close()
        raise
    return sock


def _looks_like_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


class FeedSender(threading.Thread):
    """Send a generator's packets to ``dst`` at ``rate`` packets/s for at most ``duration`` seconds
    and ``count`` packets (``duration=0``: until :meth:`stop`; ``count=None``: ``MAX_PACKETS``).

    ``generator`` needs ``next_packet()``, ``last_count`` and ``skip(n)`` (all generators above and
    :class:`PcapPayloads`); ``next_packet`` may raise StopIteration to end the run. Use as a thread
    (``start()`` / ``stop()`` / ``join()``) or call :meth:`run` directly. ``stats()`` reports what
    was sent and every injection that fired (``events``), so a test can expect exact gap and
    duplicate counts.
    """

    def __init__(self, generator, dst: Tuple[str, int], rate: float = 1000, duration: float = 10.0,
                 count: Optional[int] = None, netns: Optional[str] = None, iface: Optional[str] = None,
                 ttl: int = 1, injections: Iterable[Injection] = (), src: Optional[Tuple[str, int]] = None,
                 name: Optional[str] = None, sock: Optional[socket.socket] = None,
                 on_packet: Optional[Callable[[bytes], None]] = None) -> None:
        super().__init__(name=name or f"feedsim-{getattr(generator, 'protocol', 'udp')}", daemon=True)
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be in (0, {MAX_RATE}] packets/s")
        if not 0 <= duration <= MAX_DURATION_S:
            raise ValueError(f"duration must be 0..{MAX_DURATION_S} s (0 = until stop())")
        if count is not None and not 1 <= count <= MAX_PACKETS:
            raise ValueError(f"count must be 1..{MAX_PACKETS}")
        self.gen = generator
        self.dst = (dst[0], int(dst[1]))
        self.rate = float(rate)
        self.duration = float(duration)
        self.count = MAX_PACKETS if count is None else int(count)
        self.netns, self.iface, self.ttl, self.src = netns, iface, ttl, src
        self.injections = sorted(injections, key=lambda i: (i.at_packet is None, i.at_packet or 0, i.at_s or 0))
        self._halt = threading.Event()
        self._sock = sock
        self._own_sock = sock is None
        self.on_packet = on_packet          # called with every payload sent (tests: feed a decoder)
        self._recent: collections.deque = collections.deque(maxlen=MAX_DUP_BURST)
        self.packets = 0                    # packets sent (duplicates included)
        self.messages = 0                   # sequence numbers used by new packets (failed sends included)
        self.bytes = 0
        self.send_errors = 0
        self.gap_seqs = 0                   # sequence numbers skipped by gap injections
        self.dup_packets = 0
        self.dup_seqs = 0                   # sequence numbers resent by duplicate bursts
        self.stalled_s = 0.0
        self.events: List[dict] = []
        self.started_at: Optional[float] = None
        self.elapsed_s = 0.0
        self.error: Optional[BaseException] = None
        self.exhausted = False

    # -- control
    def stop(self) -> None:
        self._halt.set()

    @property
    def stopping(self) -> bool:
        return self._halt.is_set()

    def _send(self, pkt: bytes) -> bool:
        try:
            self._sock.sendto(pkt, self.dst)
        except (BlockingIOError, OSError):   # ENOBUFS and friends: counted, never fatal
            self.send_errors += 1
            return False
        self.packets += 1
        self.bytes += len(pkt)
        if self.on_packet is not None:
            self.on_packet(pkt)
        return True

    def _inject(self, inj: Injection, t: float) -> None:
        seq_before = getattr(self.gen, "seq", None)
        ev = {"kind": inj.kind, "t_s": round(t, 6), "after_packets": self.packets, "seq_before": seq_before}
        if inj.kind == "gap":
            self.gen.skip(inj.n)
            self.gap_seqs += inj.n
            ev["seqs"] = inj.n
        elif inj.kind == "duplicate":
            burst = list(self._recent)[-inj.n:]
            seqs = 0
            for pkt, n in burst:
                if self._send(pkt):
                    self.dup_packets += 1
                    seqs += n
            self.dup_seqs += seqs
            ev.update(packets=len(burst), seqs=seqs)
        else:
            t0 = time.monotonic()
            self._halt.wait(inj.seconds)
            self.stalled_s += time.monotonic() - t0
            ev["seconds"] = inj.seconds
        self.events.append(ev)

    def run(self) -> None:
        try:
            if self._sock is None:
                self._sock = open_udp_sender(self.dst, self.netns, self.iface, self.ttl, self.src)
            self._loop()
        except BaseException as e:  # noqa: BLE001 - reported through .error / stats()
            self.error = e
            if threading.current_thread() is not self:
                raise
        finally:
            if self._own_sock and self._sock is not None:
                self._sock.close()
                self._sock = None

    def _loop(self) -> None:
        pending = list(self.injections)
        interval = 1.0 / self.rate
        t0 = time.monotonic()
        self.started_at = time.time()
        next_t = t0
        end = t0 + self.duration if self.duration else None
        sent_new = 0
        while not self._halt.is_set() and sent_new < self.count:
            now = time.monotonic()
            if end is not None and now >= end:
                break
            while pending:
                inj = pending[0]
                due = (inj.at_packet is not None and sent_new >= inj.at_packet) or \
                      (inj.at_packet is None and now - t0 >= inj.at_s)
                if not due:
                    break
                pending.pop(0)
                self._inject(inj, now - t0)
                if inj.kind == "stall":
                    now = time.monotonic()
                    next_t = now            # no catch-up burst after a stall
            if self._halt.is_set():
                break
            if next_t > now:
                delay = next_t - now
                if delay > 0.0005:
                    self._halt.wait(min(delay, 0.05))
                continue
            if now - next_t > 0.05:         # fell behind by > 50 ms: do not burst to catch up
                next_t = now
            burst = 0
            while next_t <= now and sent_new < self.count and burst < 512:
                try:
                    pkt = self.gen.next_packet()
                except StopIteration:
                    self.exhausted = True
                    self.elapsed_s = time.monotonic() - t0
                    return
                n = getattr(self.gen, "last_count", 1)
                if self._send(pkt):
                    self._recent.append((pkt, n))
                self.messages += n
                sent_new += 1
                burst += 1
                next_t += interval
                if pending and pending[0].at_packet is not None and sent_new >= pending[0].at_packet:
                    break
        self.elapsed_s = time.monotonic() - t0

    def stats(self) -> dict:
        return {"protocol": getattr(self.gen, "protocol", "udp"), "dst": f"{self.dst[0]}:{self.dst[1]}",
                "packets": self.packets, "messages": self.messages, "bytes": self.bytes,
                "send_errors": self.send_errors, "gap_seqs": self.gap_seqs, "dup_packets": self.dup_packets,
                "dup_seqs": self.dup_seqs, "stalled_s": round(self.stalled_s, 3),
                "elapsed_s": round(self.elapsed_s, 3), "next_seq": getattr(self.gen, "seq", None),
                "events": list(self.events), "error": None if self.error is None else repr(self.error)}


# --------------------------------------------------------------------------------------------
# pcap replay


class PcapPayloads:
    """UDP payloads of a capture, as a generator for :class:`FeedSender` (``skip(n)`` drops the next
    n payloads). ``dport`` keeps only datagrams to that port."""

    protocol = "pcap"

    def __init__(self, path, dport: Optional[int] = None) -> None:
        from ..sources.packet import parse
        from ..sources.pcap import open_capture

        self._reader = open_capture(path)
        self._parse = parse
        self._it = iter(self._reader)
        self.dport = dport
        self.last_count = 1
        self.seq = 0            # payloads taken from the capture
        self.skipped_frames = 0

    def _next_payload(self) -> bytes:
        for ts, linktype, frame in self._it:
            ev = self._parse(frame, linktype, ts)
            if ev is None or ev.transport != "udp" or (self.dport is not None and ev.dport != self.dport):
                self.skipped_frames += 1
                continue
            self.seq += 1
            return ev.payload
        self.close()
        raise StopIteration

    def next_packet(self) -> bytes:
        return self._next_payload()

    def skip(self, n: int) -> None:
        for _ in range(n):
            try:
                self._next_payload()
            except StopIteration:
                return

    def close(self) -> None:
        self._reader.close()


def replay_pcap(path, rate: float, dst: Tuple[str, int], netns: Optional[str] = None,
                iface: Optional[str] = None, count: Optional[int] = None, duration: float = 60.0,
                dport: Optional[int] = None, injections: Iterable[Injection] = (), ttl: int = 1,
                stop: Optional[threading.Event] = None) -> dict:
    """Replay the UDP payloads of a capture (pcap/pcapng, plain or gzip) to ``dst`` at ``rate``
    packets/s, bounded by ``count`` packets and ``duration`` seconds; returns the sender's stats
    (plus ``frames_skipped``: non-UDP frames or other ports). Blocks until done; ``stop`` ends early."""
    src = PcapPayloads(path, dport)
    sender = FeedSender(src, dst, rate=rate, duration=duration, count=count, netns=netns, iface=iface,
                        ttl=ttl, injections=injections, name="feedsim-replay")
    watcher = None
    if stop is not None:
        def _watch() -> None:
            while not sender.stopping and not stop.wait(0.05):
                pass
            sender.stop()
        watcher = threading.Thread(target=_watch, daemon=True)
        watcher.start()
    try:
        sender.run()
    finally:
        sender.stop()
        src.close()
        if watcher is not None:
            watcher.join(1)
    st = sender.stats()
    st["frames_skipped"] = src.skipped_frames
    st["exhausted"] = sender.exhausted
    return st
