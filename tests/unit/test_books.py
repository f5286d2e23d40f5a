"""Order books: exact final states of hand-written sequences, hypothesis against a naive reference,
MDP3 snapshot recovery, and real corpus captures."""
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from hft_packetfilter.analytics.books import ItchBook, Mdp3Book, PitchBook
from hft_packetfilter.protocols.itch50 import ITCH50Decoder, encode_message, frame
from hft_packetfilter.protocols.mdp3 import Mdp3Message
from hft_packetfilter.protocols.pitch import PitchMessage

sys.path.insert(0, str(Path(__file__).resolve().parent))
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def itch(specs):
    """Decode hand-written (type, fields) tuples with the real decoder."""
    msgs = ITCH50Decoder().feed(frame([encode_message(t, **f) for t, f in specs]))
    assert len(msgs) == len(specs)
    return msgs


def add(ref, side, qty, px, stock="AAPL", locate=1, mpid=None):
    f = dict(stock_locate=locate, order_reference_number=ref, side=side, shares=qty, stock=stock, price=px)
    if mpid:
        f["attribution"] = mpid
        return ("F", f)
    return ("A", f)


def test_itch_hand_written_exact_final_state():
    b = ItchBook("NSDQ")
    b.apply_many(itch([
        ("R", dict(stock_locate=1, stock="AAPL")),
        ("H", dict(stock_locate=1, stock="AAPL", trading_state="T")),
        add(1, "B", 100, 1_500_000),
        add(2, "B", 200, 1_500_000),
        add(3, "B", 300, 1_499_900, mpid="GSCO"),
        add(4, "S", 150, 1_500_500),
        add(5, "S", 250, 1_500_600),
        add(6, "B", 10, 2_000_000, stock="MSFT", locate=2),
        ("E", dict(stock_locate=1, order_reference_number=1, executed_shares=100, match_number=1)),   # 1 gone
        ("C", dict(stock_locate=1, order_reference_number=4, executed_shares=50, match_number=2,
                   printable="Y", execution_price=1_500_500)),                                          # 4: 100
        ("X", dict(stock_locate=1, order_reference_number=2, cancelled_shares=120)),                   # 2: 80
        ("U", dict(stock_locate=1, original_order_reference_number=3, new_order_reference_number=7,
                   shares=90, price=1_500_100)),                                                      # 3 -> 7
        ("D", dict(stock_locate=1, order_reference_number=5)),
        ("D", dict(stock_locate=1, order_reference_number=999)),                                       # unknown
        ("E", dict(stock_locate=1, order_reference_number=4, executed_shares=1000, match_number=3)),   # over
        ("H", dict(stock_locate=2, stock="MSFT", trading_state="H")),
    ]))
    assert b.orders == {2: [True, 1_500_000, 80, b.book("AAPL"), None],
                        7: [True, 1_500_100, 90, b.book("AAPL"), b"GSCO"],
                        6: [True, 2_000_000, 10, b.book("MSFT"), None]}
    aapl = b.book("AAPL")
    assert aapl.bids == {1_500_000: 80, 1_500_100: 90} and aapl.asks == {}
    assert b.top("AAPL") == (1_500_100, 90, None, None)
    assert b.top("MSFT") == (2_000_000, 10, None, None) and b.top("NONE") == (None, None, None, None)
    assert aapl.volume == 100 + 50 + 100
    assert b.counters == {"unknown_order": 1, "over_execute": 1}
    assert b.depth("AAPL", 5) == {"bids": [[1_500_100, 90], [1_500_000, 80]], "asks": []}
    snap = b.snapshot()
    assert snap["status"] == {"AAPL": "T", "MSFT": "H"} and snap["mpid_orders"] == {"GSCO": 1}
    assert snap["messages"] == 16 and snap["orders"] == 3
    assert snap["top"]["AAPL"] == {"bid_px": 1_500_100, "bid_qty": 90, "ask_px": None, "ask_qty": None}


def test_itch_best_recomputed_lazily_after_best_level_empties():
    b = ItchBook()
    b.apply_many(itch([add(1, "S", 5, 101), add(2, "S", 5, 103), add(3, "S", 5, 102), add(4, "B", 1, 99)]))
    assert b.top("AAPL") == (99, 1, 101, 5)
    b.apply_many(itch([("D", dict(stock_locate=1, order_reference_number=1))]))
    assert b.top("AAPL") == (99, 1, 102, 5)
    b.apply_many(itch([add(5, "S", 7, 100)]))
    assert b.top("AAPL") == (99, 1, 100, 7)


class RefBook:
    """Naive reference: a list of live orders; levels aggregated from scratch when read."""

    def __init__(self):
        self.orders = {}

    def add(self, ref, is_bid, qty, px, sym):
        self.orders[ref] = [is_bid, px, qty, sym]

    def reduce(self, ref, n):
        o = self.orders.get(ref)
        if o is None:
            return
        o[2] -= min(n, o[2])
        if o[2] == 0:
            del self.orders[ref]

    def delete(self, ref):
        self.orders.pop(ref, None)

    def replace(self, old, new, qty, px):
        o = self.orders.pop(old, None)
        if o is None:
            return
        self.orders.pop(new, None)
        self.orders[new] = [o[0], px, qty, o[3]]

    def levels(self, sym):
        bids, asks = {}, {}
        for is_bid, px, qty, s in self.orders.values():
            if s == sym:
                d = bids if is_bid else asks
                d[px] = d.get(px, 0) + qty
        return bids, asks

    def top(self, sym):
        bids, asks = self.levels(sym)
        b = max(bids) if bids else None
        a = min(asks) if asks else None
        return (b, bids.get(b), a, asks.get(a))


OPS = st.lists(st.tuples(st.sampled_from("AAAAFEXCDU"), st.integers(1, 30), st.integers(1, 30),
                         st.integers(1, 400), st.integers(95, 105), st.sampled_from("BS"), st.sampled_from([1, 2])),
               min_size=1, max_size=150)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_itch_book_matches_reference(ops):
    ref = RefBook()
    specs = []
    stocks = {1: "AAA", 2: "BBB"}
    for t, r, r2, qty, px, side, loc in ops:
        if t in "AF":
            specs.append(add(r, side, qty, px, stock=stocks[loc], locate=loc, mpid="MPID" if t == "F" else None))
            ref.delete(r)
            ref.add(r, side == "B", qty, px, stocks[loc])
        elif t in "EC":
            f = dict(order_reference_number=r, executed_shares=qty, match_number=1)
            if t == "C":
                f.update(printable="Y", execution_price=px)
            specs.append((t, f))
            ref.reduce(r, qty)
        elif t == "X":
            specs.append(("X", dict(order_reference_number=r, cancelled_shares=qty)))
            ref.reduce(r, qty)
        elif t == "D":
            specs.append(("D", dict(order_reference_number=r)))
            ref.delete(r)
        else:
            specs.append(("U", dict(original_order_reference_number=r, new_order_reference_number=r2,
                                    shares=qty, price=px)))
            ref.replace(r, r2, qty, px)
    book = ItchBook()
    msgs = itch(specs)
    half = len(msgs) // 2
    book.apply_many(msgs[:half])
    for m in msgs[half:]:
        book.apply(m)
    for sym in stocks.values():
        assert book.top(sym) == ref.top(sym)
        sb = book.book(sym)
        bids, asks = ref.levels(sym)
        assert (sb.bids if sb else {}) == bids and (sb.asks if sb else {}) == asks
    assert {k: (v[0], v[1], v[2], v[3].symbol) for k, v in book.orders.items()} == \
        {k: tuple(v) for k, v in ref.orders.items()}


# -- PITCH ----------------------------------------------------------------------------------------
def pm(name, unit=1, **f):
    return PitchMessage("0x00", name, unit, 0, f)


def test_pitch_book_exact_state():
    b = PitchBook("BZX")
    b.apply_many([
        pm("AddOrderLong", order_id=1, side="B", quantity=100, symbol="AAPL", price_raw=1_500_000),
        pm("AddOrderShort", order_id=2, side="S", quantity=50, symbol="AAPL", price_raw=15_010),   # 150.10
        pm("AddOrderExpanded", order_id=3, side="B", quantity=70, symbol="AAPL", price_raw=1_499_000, unit=2),
        pm("OrderExecuted", order_id=1, executed_quantity=30, execution_id=1),
        pm("ReduceSizeShort", order_id=2, canceled_quantity=10),
        pm("ModifyOrderLong", order_id=3, quantity=60, price_raw=1_500_500),
        pm("OrderExecutedAtPriceSize", order_id=1, executed_quantity=20, remaining_quantity=40,
           execution_id=2, price_raw=1_500_000),
        pm("AddOrderLong", order_id=4, side="S", quantity=5, symbol="MSFT", price_raw=3_000_000, unit=2),
        pm("DeleteOrder", order_id=77),
        pm("TradingStatus", symbol="AAPL", trading_status="T"),
    ])
    assert b.top("AAPL") == (1_500_500, 60, 1_501_000, 40)
    assert b.book("AAPL").bids == {1_500_000: 40, 1_500_500: 60}
    assert b.book("AAPL").volume == 50
    assert b.counters == {"unknown_order": 1}
    b.apply(pm("UnitClear", unit=2))
    assert b.top("AAPL") == (1_500_000, 40, 1_501_000, 40) and b.top("MSFT") == (None, None, None, None)
    assert b.snapshot()["status"] == {"AAPL": "T"} and b.snapshot()["orders"] == 2
    b.apply(pm("AddOrderLong", order_id=9))     # malformed: counted
    assert b.counters["bad_message"] == 1


# -- MDP3 -----------------------------------------------------------------------------------------
def inc(*entries, seq=1):
    rows = [dict(SecurityID=e[0], RptSeq=e[1], MDUpdateAction=e[2], MDEntryType=e[3], MDPriceLevel=e[4],
                 MDEntryPx=Decimal(e[5]) if e[5] is not None else None, MDEntrySize=e[6], NumberOfOrders=1)
            for e in entries]
    return Mdp3Message("MDIncrementalRefreshBook", 46, "MDIncrementalRefreshBook46", 1, 9, seq, 0,
                       {"TransactTime": 0, "NoMDEntries": rows})


def snap(sid, rpt, levels):
    rows = [dict(MDEntryPx=Decimal(px), MDEntrySize=q, NumberOfOrders=1, MDPriceLevel=l, MDEntryType=t)
            for t, l, px, q in levels]
    return Mdp3Message("SnapshotFullRefresh", 52, "SnapshotFullRefresh52", 1, 9, 1, 0,
                       {"SecurityID": sid, "RptSeq": rpt, "NoMDEntries": rows})


def test_mdp3_mbp_actions_exact():
    b = Mdp3Book(depth=3)
    b.apply_many([
        inc((7, 1, "New", "Bid", 1, "100.25", 10), (7, 2, "New", "Bid", 2, "100.00", 20),
            (7, 3, "New", "Offer", 1, "100.50", 5)),
        inc((7, 4, "New", "Bid", 1, "100.50", 1)),                 # inserts above: 100.25 -> level 2
        inc((7, 5, "New", "Bid", 4, "99.00", 1)),                  # beyond depth 3: appended then cut
        inc((7, 6, "Change", "Bid", 2, "100.25", 15)),
        inc((7, 7, "New", "Bid", 4, "98.00", 1)),                  # out of range: counted, cut by depth
        inc((7, 8, "New", "ImpliedBid", 1, "100.75", 2)),
    ])
    exp = 10**9
    assert b.depth(7) == {"bids": [[100_500_000_000, 1], [100_250_000_000, 15], [100_000_000_000, 20]],
                          "asks": [[100_500_000_000, 5]]}
    assert b.top(7) == (100_500_000_000, 1, 100_500_000_000, 5)
    assert b.top(7, implied=True) == (100_750_000_000, 2, None, None)
    b.apply(inc((7, 9, "Delete", "Bid", 1, "100.50", 0)))
    assert b.top(7)[:2] == (100_250_000_000, 15)
    b.apply(inc((7, 10, "DeleteFrom", "Bid", 2, None, 0)))
    assert b.depth(7)["bids"] == []
    b.apply(inc((7, 11, "Overlay", "Offer", 1, "101.00", 9), (7, 12, "New", "Offer", 2, "101.25", 3)))
    b.apply(inc((7, 13, "DeleteThru", "Offer", 1, None, 0)))
    assert b.top(7) == (None, None, None, None)
    assert b.counters == {}
    b.apply(inc((7, 14, "Change", "Offer", 3, "101", 1), (7, 15, "Delete", "Offer", 2, "101", 1),
                (7, 16, "Change", "Offer", 0, "101", 1)))
    assert b.counters == {"level_out_of_range": 2, "bad_entry": 1} and b.top(7) == (None, None, None, None)
    assert 100 * exp == 100_000_000_000


def test_mdp3_gap_recovery_from_snapshot():
    b = Mdp3Book(symbols={7: "ESZ5"})
    b.apply(inc((7, 1, "New", "Bid", 1, "100", 10), (8, 1, "New", "Bid", 1, "50", 1)))
    b.apply(inc((7, 1, "New", "Bid", 1, "100", 10)))              # line B copy: duplicate
    b.apply(inc((7, 3, "New", "Bid", 1, "101", 1)))               # RptSeq 2 missing: gap
    s = b.snapshot()["securities"]["ESZ5"]
    assert s["recovering"] and s["bid_px"] is None and b.counters == {"duplicates": 1, "gaps": 1}
    b.apply(inc((7, 4, "New", "Bid", 1, "102", 1)))               # dropped while recovering
    b.apply(inc((8, 2, "New", "Bid", 1, "51", 1)))                # other instrument unaffected
    b.apply(snap(7, 4, [("Bid", 1, "102", 1), ("Bid", 2, "101", 1), ("Offer", 1, "103", 7)]))
    b.apply(inc((7, 4, "Change", "Bid", 1, "102", 99)))           # older than the snapshot: skipped
    b.apply(inc((7, 5, "Change", "Offer", 1, "103", 8)))
    assert b.top("ESZ5") == (102 * 10**9, 1, 103 * 10**9, 8)
    assert b.top(8) == (51 * 10**9, 1, None, None)
    s = b.snapshot()
    assert s["securities"]["ESZ5"]["rpt_seq"] == 5 and not s["securities"]["ESZ5"]["recovering"]
    assert s["counters"] == {"duplicates": 2, "gaps": 1, "dropped_recovering": 1, "snapshots": 1}
    b.apply(snap(7, 3, [("Bid", 1, "1", 1)]))                      # stale snapshot ignored
    assert b.top(7)[0] == 102 * 10**9 and b.counters["stale_snapshots"] == 1
    head = b.head()                # the live agent's cut: tops by symbol, no orders (market by price)
    assert head["orders"] is None and head["symbols"] == 2 and head["messages"] == b.messages
    assert head["top"]["ESZ5"] == {k: v for k, v in b.snapshot()["securities"]["ESZ5"].items()
                                   if k in ("bid_px", "bid_qty", "ask_px", "ask_qty")}
    b.apply(Mdp3Message("ChannelReset", 4, "ChannelReset4", 1, 9, 1, 0, {"NoMDEntries": []}))
    assert b.top(7) == (None, None, None, None) and b.snapshot()["securities"]["ESZ5"]["rpt_seq"] is None


def test_mdp3_trade_rptseq_counts_in_sequence():
    b = Mdp3Book()
    b.apply(inc((7, 1, "New", "Bid", 1, "100", 10)))
    b.apply(Mdp3Message("MDIncrementalRefreshTradeSummary", 48, "x", 1, 9, 2, 0, {"NoMDEntries": [
        dict(SecurityID=7, RptSeq=2, MDEntryPx=Decimal("100"), MDEntrySize=1, MDUpdateAction="New",
             MDEntryType="2")]}))
    b.apply(inc((7, 3, "Change", "Bid", 1, "100", 9)))
    assert b.counters == {} and b.top(7)[:2] == (100 * 10**9, 9)


V9 = CORPUS / "sbe-schemas-cme" / "templates_FixBinary.v9.xml"
MDP3_FILES = sorted((CORPUS / "omi-cme-mdp3").glob("Mdp3.Sbe.v1.[589]/*.pcap"))


@pytest.mark.skipif(not V9.is_file() or not MDP3_FILES, reason=f"CME corpus absent under {CORPUS}")
def test_real_mdp3_captures():
    from _pcap_feeds import read_pcap
    from hft_packetfilter.protocols import mdp3
    schema = mdp3.load_schema(V9)
    # v1.5 book alone: two Change entries on SecurityID 13950 seen for the first time
    book_file = CORPUS / "omi-cme-mdp3" / "Mdp3.Sbe.v1.5" / "MdIncrementalRefreshBook.pcap"
    b = Mdp3Book()
    dec = mdp3.Mdp3Decoder(schema)
    for fr in read_pcap(book_file):
        b.apply_many(dec.feed(fr.payload, fr.ts_ns))
    assert b.depth(13950) == {"bids": [[207775 * 10**9, 308], [207750 * 10**9, 480]], "asks": []}
    assert b.securities[13950].last_rpt == 20707878
    # every capture through one book: RptSeq jumps between the separate captures are gaps
    b = Mdp3Book()
    dec = mdp3.Mdp3Decoder(schema)
    for f in MDP3_FILES:
        for fr in read_pcap(f):
            b.apply_many(dec.feed(fr.payload, fr.ts_ns))
    assert b.messages > 10 and "bad_message" not in b.counters
    assert b.counters["gaps"] >= 1 and b.securities[13950].recovering
    import json
    json.dumps(b.snapshot())


ITCH_DIR = CORPUS / "omi-nasdaq-itch50"


@pytest.mark.skipif(not ITCH_DIR.is_dir(), reason=f"ITCH corpus absent: {ITCH_DIR}")
def test_real_itch_captures_build_books():
    from _pcap_feeds import read_pcap
    from hft_packetfilter.protocols.moldudp64 import MoldUDP64Decoder
    import json
    total = 0
    for f in sorted(ITCH_DIR.glob("*/*.pcap")):
        b = ItchBook(f.parent.name)
        d = MoldUDP64Decoder()
        for fr in read_pcap(f):
            b.apply_many([m for m in d.feed(fr.payload, fr.ts_ns) if hasattr(m, "stock_locate")])
        total += b.messages
        json.dumps(b.snapshot())
        if "AddOrder" in f.name:
            assert b.orders and all(o[2] > 0 for o in b.orders.values())
            for sym, (bp, bq, ap, aq) in b.tops().items():
                assert (bp is None or bq > 0) and (ap is None or aq > 0)
    assert total > 50
