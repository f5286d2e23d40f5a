"""The compiled backend (hft_packetfilter._native) against the pure-Python reference.

Each native entry point must give what the Python code gives, object for object: the same messages
(same classes, same field values and types), the same stats and reject reasons, the same decoder
state. Checked on the benchmark generators (tools/bench), on the real corpus captures
(../shared/corpus, read in place) and with hypothesis on random and malformed buffers, which also
proves the C code never crashes on bad input.

The differential tests skip with the reason when the extension is not built; in CI (CI=true, root,
where tools/setup-host.sh builds it) a missing extension fails instead, so CI never tests only the
fallback.
"""
from __future__ import annotations

import importlib
import os
from collections import Counter
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import hft_packetfilter
from hft_packetfilter import _accel
from hft_packetfilter.protocols import itch50, native_backend
from hft_packetfilter.protocols.itch50 import MESSAGE_LENGTHS, ITCH50Decoder, encode_message, frame
from hft_packetfilter.protocols.moldudp64 import MoldUDP64Decoder, encode_packet

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pcap  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tools" / "bench"
ITCH_CORPUS = _pcap.CORPUS / "omi-nasdaq-itch50"

needs_native = pytest.mark.skipif(_accel.NATIVE is None, reason=f"native backend inactive: {_accel.reason()}")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _bench_module(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


# ---- backend selection ---------------------------------------------------------------------------

#: Pythons the extension has been built and tested on (add one after a green CI on it, or a build
#: and a green tests/unit run on it): 3.11 is Debian 12's (every CI run); 3.12.1 and 3.13 (Debian 13's)
#: were built from pyenv with GCC 12 and ran tests/unit green with the extension, and every source
#: passes the errors GCC 14 (Debian 13) turns on by default (implicit declarations, incompatible
#: pointer types, int conversion) against their headers
VERIFIED_PYTHONS = ((3, 11), (3, 12), (3, 13))


def test_ci_as_root_builds_the_native_module(request):
    """CI installs with tools/setup-host.sh (python3-dev + gcc, pip install -e .[dev]) and runs the
    README's test command as root with --require-kernel (sudo drops CI=true from the environment):
    the extension must be there, or every benchmark and differential test would silently cover only
    the fallback."""
    ci = os.environ.get("CI") == "true" or request.config.getoption("--require-kernel", default=False)
    if not ci or os.geteuid() != 0:
        pytest.skip("only enforced as root under CI=true or --require-kernel (the README's test command), "
                    "where setup-host.sh builds the extension")
    if sys.version_info[:2] not in VERIFIED_PYTHONS:
        pytest.skip(f"the extension is verified to build on CPython {VERIFIED_PYTHONS} only; on "
                    f"{sys.version_info.major}.{sys.version_info.minor} a failed build falls back to the "
                    f"pure-Python decoders (tools/setup-host.sh says which): {_accel.reason() or 'it built'}")
    try:
        importlib.import_module("hft_packetfilter._native")
    except ImportError as e:
        pytest.fail(f"hft_packetfilter._native is not importable in CI: {e}")


def test_backend_is_named_and_env_turns_native_off():
    assert native_backend() == _accel.backend() in ("native", "python")
    assert (_accel.reason() == "") == (_accel.NATIVE is not None)
    env = dict(os.environ, HFTPF_NO_NATIVE="1",
               PYTHONPATH=os.pathsep.join([str(Path(hft_packetfilter.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", "from hft_packetfilter import _accel as a; "
                          "from hft_packetfilter.protocols.itch50 import ITCH50Decoder as D, MESSAGE_CLASSES as C; "
                          "print(a.backend(), a.reason(), D()._core, type(C['A'].symbol.fget).__name__)"],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["python", "disabled", "by", "HFTPF_NO_NATIVE", "None", "function"]


def test_check_names_the_backend(monkeypatch):
    from hft_packetfilter.kernel.check import check_decoders

    item = check_decoders()
    assert item["check"] == "decoder backend" and item["detail"].startswith(_accel.backend())
    monkeypatch.setattr(_accel, "NATIVE", None)
    monkeypatch.setattr(_accel, "_WHY", "disabled by HFTPF_NO_NATIVE")
    item = check_decoders()
    assert (item["state"], item["fix"]) == ("warn", "unset HFTPF_NO_NATIVE")


# ---- ITCH 5.0 ------------------------------------------------------------------------------------

def _state(dec: ITCH50Decoder) -> tuple:
    return (dec.stats.messages, dec.stats.bytes, dict(dec.stats.rejects), dict(dec.symbols),
            getattr(dec, "last_offset", None), getattr(dec, "last_framed", None),
            getattr(dec, "last_truncated", None))


def _same_messages(got: list, want: list, dec_got: ITCH50Decoder, dec_want: ITCH50Decoder) -> None:
    assert got == want
    assert [type(m).__name__ for m in got] == [type(m).__name__ for m in want]
    assert all(type(m) is dec_got.classes[m.msg_type] for m in got)
    assert [tuple(map(type, m)) for m in got] == [tuple(map(type, m)) for m in want]
    assert [m.to_dict() for m in got] == [m.to_dict() for m in want]
    for m in got:
        same_accessors(m)


def _both(nat, ref, steps, check):
    """Run each step on the native and on the Python object, check(native result, Python result)
    after each; returns the last native result."""
    assert nat._core is not None and ref._core is None
    got = None
    for step in steps:
        got = step(nat)
        check(got, step(ref))
    return got


def itch_both(buf, offset: int = 0, count: int = -1, resolve_symbols: bool = True, calls: int = 1):
    """Decode `buf` with both backends (`calls` times, to carry state) and check they agree."""
    nat, ref = ITCH50Decoder(resolve_symbols), ITCH50Decoder(resolve_symbols, native=False)

    def check(got, want):
        _same_messages(got, want, nat, ref)
        assert _state(nat) == _state(ref)

    return _both(nat, ref, [lambda d: d.decode_buffer(buf, offset, count)] * calls, check)


@needs_native
def test_itch_bench_stream_identical():
    decode_itch = _bench_module("decode_itch")
    datagrams, n = decode_itch.generate(6_000, seed=7)
    stream = b"".join(d[20:] for d in datagrams)
    msgs = itch_both(stream)
    assert len(msgs) == n
    assert {m.msg_type for m in msgs} >= set("RAFECXDUP")
    for kind in (bytearray, memoryview):
        itch_both(kind(stream), calls=2)
    itch_both(stream, offset=2 + 39, count=100, resolve_symbols=False)
    itch_both(stream, count=1 << 70)                        # past C's range: the Python loop runs it


@needs_native
def test_itch_native_messages_behave_like_python_ones():
    import gc
    import pickle

    buf = frame([encode_message("R", stock_locate=1, stock="AAPL"),
                 encode_message("A", stock_locate=1, order_reference_number=5, side="B", shares=10,
                                stock="AAPL", price=1_500_000, timestamp=12345)])
    dec = ITCH50Decoder()
    msgs = dec.decode_buffer(buf)
    gc.collect()
    r, a = msgs
    assert pickle.loads(pickle.dumps(a)) == a and a.symbol == "AAPL" and a.timestamp == 12345
    assert repr(a).startswith("AddOrder(") and hash(a) == hash(tuple(a)) and a[4:6] == (5, b"B")
    assert dec.symbols == {1: "AAPL"} and r.symbol == "AAPL"


@needs_native
def test_itch_every_message_type_and_48_bit_timestamp():
    big = (1 << 48) - 1
    msgs = [encode_message(t, stock_locate=65535, tracking_number=7, timestamp=big) for t in MESSAGE_LENGTHS]
    msgs.append(encode_message("A", order_reference_number=(1 << 64) - 1, shares=(1 << 32) - 1,
                               price=(1 << 32) - 1, stock=b"\xff\x80AB\x00 \x00 ", side="S"))
    msgs.append(encode_message("R", stock_locate=3, stock=b"\xe9T\x00 \x00"))
    got = itch_both(frame(msgs))
    assert got[0].timestamp == big and got[-2].order_reference_number == (1 << 64) - 1


@needs_native
def test_itch_moldudp64_feed_identical_on_bench_datagrams():
    decode_itch = _bench_module("decode_itch")
    datagrams, _n = decode_itch.generate(3_000, seed=3)
    extra = [encode_packet("S", 1, [], count=0), encode_packet("S", 9, [b"A" * 36], count=3),
             datagrams[5][:-4], datagrams[6] + b"\x00", b"short"]
    nat = MoldUDP64Decoder()
    ref = MoldUDP64Decoder(ITCH50Decoder(native=False))
    for d in datagrams + extra:
        a, b = nat.feed(d), ref.feed(d)
        assert a == b and [type(m).__name__ for m in a] == [type(m).__name__ for m in b]
    assert (nat.stats, nat.gaps, nat.duplicates) == (ref.stats, ref.gaps, ref.duplicates)
    assert _state(nat.inner) == _state(ref.inner)


def _corpus_payloads():
    if not ITCH_CORPUS.is_dir():
        return []
    return [(p.name, pk.payload) for p in sorted(ITCH_CORPUS.rglob("*.pcap")) for pk in _pcap.read_packets(p)]


@needs_native
@pytest.mark.skipif(not ITCH_CORPUS.is_dir(), reason=f"ITCH corpus not found at {ITCH_CORPUS}")
def test_itch_corpus_identical_whole_and_truncated():
    payloads = _corpus_payloads()
    assert payloads
    for _name, p in payloads:
        itch_both(p, offset=20, count=int.from_bytes(p[18:20], "big"))
        for cut in range(20, len(p), 7):
            itch_both(p[:cut], offset=20)


# -- fuzz: random bytes, and well-framed messages with wrong types/lengths/truncation
_TYPES = sorted(MESSAGE_LENGTHS)


@st.composite
def _framed(draw):
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        t = draw(st.sampled_from(_TYPES + ["z", "\x00"]))
        ln = MESSAGE_LENGTHS.get(t, 10) + draw(st.sampled_from([0, 0, 0, -1, 1, -30]))
        ln = max(ln, 0)
        body = (t.encode("latin-1") + draw(st.binary(min_size=ln, max_size=ln)))[:ln]
        parts.append(len(body).to_bytes(2, "big") + body)
    buf = b"".join(parts)
    cut = draw(st.integers(0, len(buf)))
    return buf[:cut] if draw(st.booleans()) else buf


@needs_native
@FUZZ
@given(buf=st.binary(max_size=300), offset=st.integers(0, 40), count=st.integers(-1, 20))
def test_itch_fuzz_random_bytes(buf, offset, count):
    itch_both(buf, offset, count)


@needs_native
@FUZZ
@given(buf=_framed(), count=st.integers(-1, 15), resolve=st.booleans())
def test_itch_fuzz_framed(buf, count, resolve):
    itch_both(buf, 0, count, resolve_symbols=resolve, calls=2)


# -- accessors: the C getters (ItchField) against the Python reference getters (itch50.py_getter)

def _compiled_getters(cls) -> dict:
    """{attribute: ItchField} of every property of `cls` (its bases included) with a compiled getter."""
    out = {}
    for klass in reversed(cls.__mro__):
        for attr, v in vars(klass).items():
            if isinstance(v, property):
                out[attr] = v.fget
    return {a: f for a, f in out.items() if type(f) is _accel.NATIVE.ItchField}


def _outcome(fn, msg):
    try:
        v = fn(msg)
    except Exception as e:  # noqa: BLE001 - the exception is the result being compared
        return ("raises", type(e), str(e))
    return ("returns", type(v), v)


from collections import UserDict  # noqa: E402


def same_accessors(msg) -> int:
    """Every compiled getter of msg's class gives what its Python reference gives (value and type, or
    the same exception), read as a property and called directly; returns how many were compared."""
    getters = _compiled_getters(type(msg))
    for attr, f in getters.items():
        want = _outcome(itch50.py_getter(f.kind, f.index), msg)
        assert _outcome(lambda m: getattr(m, attr), msg) == want, (attr, f, msg)
        assert _outcome(f, msg) == want, (attr, f, msg)
    return len(getters)


@needs_native
def test_itch_every_alpha_char_field_timestamp_and_symbol_has_a_compiled_getter():
    for t, (_name, body) in itch50.MESSAGE_SPECS.items():
        cls = itch50.MESSAGE_CLASSES[t]
        lazy = {f[0] for f in body if f[2] in ("a", "c")} | {"timestamp", "symbol"}
        getters = _compiled_getters(cls)
        assert set(getters) == lazy, t
        assert {f.kind for f in getters.values()} <= {"ts48", "alpha", "char", "symbol"}
        assert (getters["symbol"].kind, getters["symbol"] is getters.get("stock")) == (
            ("alpha", True) if "stock" in lazy else ("symbol", False))
        for attr in lazy:
            assert cls.__dict__.get(attr, getattr(cls, attr)).__class__ is property


@needs_native
def test_itch_accessors_identical_on_every_message_type():
    big = (1 << 48) - 1
    msgs = [encode_message(t, stock_locate=loc, tracking_number=7, timestamp=ts)
            for t in MESSAGE_LENGTHS for loc, ts in ((1, 0), (2, big), (9, 34_200 * 10**9 + 17))]
    odd = {"stock": b"\xff\x80AB\x00 \x00 ", "mpid": b"\x00\x00\x00\x00", "attribution": b"A\x00B ",
           "reason": b"\xe9   ", "issue_sub_type": b" Z"}
    for t, (_name, body) in itch50.MESSAGE_SPECS.items():
        names = {f[0]: f for f in body}
        kw = {k: v[:int(names[k][1][:-1])] for k, v in odd.items() if k in names}
        kw.update({f[0]: b"\xf1" for f in body if f[2] == "c"})
        msgs.append(encode_message(t, stock_locate=2, timestamp=12345, **kw))
    for dec in (ITCH50Decoder(), ITCH50Decoder(native=False), ITCH50Decoder(resolve_symbols=False)):
        got = dec.decode_buffer(frame(msgs))
        assert len(got) == len(msgs) and {m.msg_type for m in got} == set(MESSAGE_LENGTHS)
        assert all(same_accessors(m) >= 2 for m in got)           # timestamp and symbol at least
        assert all(same_accessors(tuple.__new__(itch50.MESSAGE_CLASSES[m.msg_type], m)) for m in got)
    directory = [encode_message("R", stock_locate=1, stock="AAPL"), encode_message("R", stock_locate=2, stock=b"\xe9T\x00")]
    execs = [encode_message("E", stock_locate=loc) for loc in (1, 2, 3)]
    for resolve, want in ((True, ["AAPL", "\ufffdT", None]), (False, [None, None, None])):
        got = ITCH50Decoder(resolve_symbols=resolve).decode_buffer(frame(directory + execs))[2:]
        assert [same_accessors(m) for m in got] == [2] * 3 and [m.symbol for m in got] == want


@needs_native
def test_itch_accessors_identical_on_the_bench_stream_and_after_pickling():
    import pickle

    decode_itch = _bench_module("decode_itch")
    datagrams, n = decode_itch.generate(3_000, seed=5)
    dec = MoldUDP64Decoder()
    msgs = [m for d in datagrams for m in dec.feed(d)]
    assert len(msgs) == n
    for m in msgs:
        same_accessors(m)
    for m in pickle.loads(pickle.dumps(msgs[190:260])):
        same_accessors(m)


@needs_native
@pytest.mark.skipif(not ITCH_CORPUS.is_dir(), reason=f"ITCH corpus not found at {ITCH_CORPUS}")
def test_itch_accessors_identical_on_the_corpus():
    payloads = _corpus_payloads()
    assert payloads
    compared = 0
    for resolve in (True, False):
        dec = ITCH50Decoder(resolve_symbols=resolve)
        for _name, p in payloads:
            for m in dec.decode_buffer(p, 20, int.from_bytes(p[18:20], "big")):
                compared += same_accessors(m)
    assert compared > 100


_ITEM = st.one_of(st.binary(max_size=12), st.integers(-(1 << 70), 1 << 70), st.integers(0, 0xFFFF),
                  st.integers(0, 0xFFFFFFFF), st.none(), st.text(max_size=4), st.booleans(),
                  st.binary(max_size=9).map(bytearray), st.floats(allow_nan=False))


@needs_native
@FUZZ
@given(t=st.sampled_from(_TYPES), data=st.data(),
       symbols=st.one_of(st.dictionaries(st.integers(0, 5), st.text(max_size=3)), st.none(),
                         st.dictionaries(st.integers(0, 5), st.text(max_size=3)).map(UserDict)))
def test_itch_accessors_fuzz_raw_fields(t, data, symbols):
    """Random bytes in alpha and char fields (non-ASCII, NULs, spaces, wrong widths), timestamps out of
    the 48-bit range, items of wrong types, messages too short and odd locate maps: same value or
    same exception."""
    base = itch50.MESSAGE_CLASSES[t]
    cls = type(base.__name__, (base,), {"__slots__": (), "_symbols": symbols})
    kinds = base._kinds
    n = data.draw(st.integers(0, len(kinds)), label="items") if data.draw(st.booleans()) else len(kinds)
    items = []
    for i in range(n):
        if data.draw(st.integers(0, 9)) == 0:
            items.append(data.draw(_ITEM))
        elif kinds[i] in ("a", "c"):
            items.append(data.draw(st.binary(max_size=10)))
        else:
            items.append(data.draw(st.integers(0, (1 << 64) - 1) if i > 1 else st.integers(0, 8)))
    same_accessors(tuple.__new__(cls, items))
    same_accessors(tuple.__new__(base, items))


@needs_native
def test_itch_field_getter_rejects_bad_use():
    F = _accel.NATIVE.ItchField
    for args in ((), ("ts48", 0, 1), (1,), ("alpha", "x"), ("alpha", 1 << 70)):
        with pytest.raises((TypeError, OverflowError)):
            F(*args)
    for args in (("nope",), ("alpha", -1)):
        with pytest.raises(ValueError):
            F(*args)
    f = F("alpha", 4)
    assert (f.kind, f.index, repr(f)) == ("alpha", 4, "ItchField(alpha, 4)")
    import pickle
    g = pickle.loads(pickle.dumps(f))
    assert (g.kind, g.index) == (f.kind, f.index)
    msg = (1, 2, 3, 4, b"AB  ")
    for bad in ((), (msg, msg)):
        with pytest.raises(TypeError):
            f(*bad)
    with pytest.raises(TypeError):
        f(msg=msg)
    for not_a_tuple in (None, b"12345", [1, 2, 3, 4, b"A"], 5, "AB"):
        for k in ("ts48", "alpha", "char", "symbol"):
            with pytest.raises(TypeError):
                F(k, 4)(not_a_tuple)
    assert f(msg) == "AB" and F("ts48")(msg) == (3 << 32) | 4 and F("char", 4)(msg) == "AB  "
    with pytest.raises(IndexError):
        F("alpha", 5)(msg)
    with pytest.raises(AttributeError):
        F("symbol")(msg)                       # a plain tuple has no _symbols, like the reference


# ---- ITCH order book -----------------------------------------------------------------------------

from hft_packetfilter.analytics.books import ItchBook  # noqa: E402
from hft_packetfilter.protocols.moldudp64 import MoldPacket  # noqa: E402


def _book_state(b: ItchBook) -> tuple:
    per_symbol = {s: (bk.bids, bk.asks, bk.top(), bk.depth(3), bk.volume, bk.status, bk.best_bid, bk.best_ask)
                  for s, bk in b.by_symbol.items()}
    orders = {ref: (o[0], o[1], o[2], o[3].symbol, o[4]) for ref, o in b.orders.items()}
    assert all(o[3] is b.by_symbol[o[3].symbol] for o in b.orders.values())
    return (b.messages, dict(b.counters), b.snapshot(), b.tops(), b.mpid_orders(), per_symbol, orders,
            {loc: bk.symbol for loc, bk in b.books.items()}, b.order_count())


def books_both(batches) -> ItchBook:
    """Apply the message batches to a native and a Python book; equal state after every batch."""
    nat, ref = ItchBook("V"), ItchBook("V", native=False)

    def check(_got, _want):
        assert _book_state(nat) == _book_state(ref)

    _both(nat, ref, [lambda b, m=m: b.apply_many(list(m)) for m in batches], check)
    return nat


@needs_native
def test_book_bench_stream_identical():
    decode_itch = _bench_module("decode_itch")
    datagrams, n = decode_itch.generate(8_000, seed=11)
    dec = MoldUDP64Decoder()
    batches = [dec.feed(d) for d in datagrams]
    batches.insert(3, [MoldPacket("HB", "S", 1, 0)])
    nat = books_both([sum(batches[i:i + 40], []) for i in range(0, len(batches), 40)])
    assert nat.messages == n + 1 and nat.order_count() > 50


@needs_native
def test_book_python_decoded_messages_and_generic_level_api():
    msgs = ITCH50Decoder(native=False).feed(frame([
        encode_message("R", stock_locate=1, stock="AAPL"), encode_message("R", stock_locate=2, stock="AAPL"),
        encode_message("H", stock_locate=1, stock="AAPL", trading_state="T"),
        encode_message("A", stock_locate=2, order_reference_number=1, side="B", shares=0, stock="AAPL", price=5),
        encode_message("F", stock_locate=1, order_reference_number=2, side="S", shares=9, stock="AAPL", price=7,
                       attribution="GSCO"),
        encode_message("U", stock_locate=1, original_order_reference_number=2, new_order_reference_number=1,
                       shares=4, price=6)]))
    nat = books_both([msgs])
    bk = nat.book("AAPL")
    bk.add(True, 9, 3)
    bk.remove(True, 9, 1)
    assert bk.bids == {9: 2} and bk.top() == (9, 2, 6, 4) and nat.counters == {"duplicate_order": 1}
    bk.clear()
    assert bk.top() == (None, None, None, None) and not bk.has_levels()


_BOOK_TYPES = "AFECXDUHR"


@st.composite
def _book_block(draw):
    """Adversarial order flow as a message block: few refs (duplicates, unknown refs), zero and huge
    sizes, two locates sharing a symbol, odd sides."""
    specs = []
    for _ in range(draw(st.integers(1, 60))):
        t = draw(st.sampled_from(_BOOK_TYPES))
        f = dict(stock_locate=draw(st.integers(1, 4)))
        ref = draw(st.integers(0, 8))
        qty = draw(st.sampled_from([0, 1, 50, 100, (1 << 32) - 1]))
        px = draw(st.sampled_from([0, 99, 100, 101, (1 << 32) - 1]))
        stock = draw(st.sampled_from(["AAPL", "MSFT", "AAPL  \x00"]))
        if t in "AF":
            f.update(order_reference_number=ref, side=draw(st.sampled_from("BSX")), shares=qty, stock=stock, price=px)
            if t == "F":
                f["attribution"] = draw(st.sampled_from(["GSCO", "MS"]))
        elif t in "ECX":
            f.update(order_reference_number=ref, **{"X": {"cancelled_shares": qty}}.get(t, {"executed_shares": qty}))
        elif t == "D":
            f.update(order_reference_number=ref)
        elif t == "U":
            f.update(original_order_reference_number=ref, new_order_reference_number=draw(st.integers(0, 8)),
                     shares=qty, price=px)
        else:
            f.update(stock=stock)
            if t == "H":
                f["trading_state"] = draw(st.sampled_from("HT"))
        specs.append(encode_message(t, **f))
    return frame(specs)


def _book_messages():
    return _book_block().map(ITCH50Decoder().feed)


@needs_native
@FUZZ
@given(batches=st.lists(_book_messages(), min_size=1, max_size=4))
def test_book_fuzz_adversarial_flow(batches):
    books_both(batches)


@needs_native
@FUZZ
@given(bodies=st.lists(st.tuples(st.sampled_from("AFECXDU"), st.binary(min_size=48, max_size=48)), max_size=40))
def test_book_fuzz_random_field_bytes(bodies):
    """Random bytes in every field (u64 refs, u32 sizes and prices) through the native decoder."""
    buf = frame([t.encode() + body[:MESSAGE_LENGTHS[t] - 1] for t, body in bodies])
    books_both([ITCH50Decoder().feed(buf)])


# -- apply_buffer: a message block decoded straight into the book (compiled: no message objects)

def fused_both(blocks, resolve_symbols: bool = True) -> ItchBook:
    """Feed each (buf, offset, count) block three ways: ItchBook.apply_buffer, decode_buffer +
    apply_many (same backend), and the pure-Python apply_buffer (its fallback); the returned counts,
    book state, decoder state (stats, rejects, symbols, last_*) and message counts by type must agree
    after every block."""
    runs = [(ItchBook("V", native=nat), ITCH50Decoder(resolve_symbols, native=nat), fused, Counter())
            for nat, fused in ((True, True), (True, False), (False, True))]
    for buf, offset, count in blocks:
        seen = []
        for book, dec, fused, types in runs:
            if fused:
                n = book.apply_buffer(buf, offset, count, decoder=dec, types=types)
            else:
                msgs = dec.decode_buffer(buf, offset, count)
                book.apply_many(msgs)
                types.update(m.msg_type for m in msgs)
                n = len(msgs)
            seen.append((n, _book_state(book), _state(dec), dict(types)))
        assert seen[0] == seen[1] == seen[2]
    return runs[0][0]


def test_apply_buffer_is_decode_buffer_then_apply_many_in_either_backend():
    buf = frame([encode_message("R", stock_locate=1, stock="AAPL"),
                 encode_message("A", stock_locate=1, order_reference_number=7, side="B", shares=5, stock="AAPL",
                                price=10),
                 encode_message("S", event_code="O"), b"", b"z12",
                 encode_message("E", stock_locate=1, order_reference_number=7, executed_shares=9, match_number=1)])
    for native in (True, False):
        book, ref, dec = ItchBook("V", native=native), ItchBook("V", native=native), ITCH50Decoder(native=native)
        assert book.apply_buffer(buf) == 4 and book.apply_buffer(bytearray(buf[:-3]), 0, 2) == 2
        ref.apply_many(dec.decode_buffer(buf) + dec.decode_buffer(bytearray(buf[:-3]), 0, 2))
        assert _book_state(book) == _book_state(ref) and _state(book.decoder) == _state(dec)
        assert book.decoder.symbols == {1: "AAPL"} and book.counters == {"over_execute": 1}


@needs_native
def test_apply_buffer_bench_streams_identical():
    decode_itch = _bench_module("decode_itch")
    datagrams, n = decode_itch.generate(8_000, seed=11)
    nat = fused_both([(d, 20, -1) for d in datagrams])
    assert nat.messages == n and nat.order_count() > 50 and nat.decoder is None
    replay = _bench_module("replay")
    path = Path(__file__).parent / ".replay_fused.pcap"      # removed below
    try:
        replay.write_itch_capture(path, 3_000, seed=5, symbols=40)
        stream, n = replay._book_inputs(str(path), 1 << 30)
    finally:
        path.unlink()
    probe = ITCH50Decoder()
    probe.decode_buffer(stream, 0, n // 3)
    cut = probe.last_offset                                     # message boundaries
    probe.decode_buffer(stream, cut, 500)
    assert fused_both([(stream[:cut], 0, -1), (stream, cut, 500), (stream, probe.last_offset, -1)]).messages == n
    fused_both([(stream[:len(stream) // 3], 0, -1), (stream, len(stream) // 3, -1)])   # cut mid-message


@needs_native
@pytest.mark.skipif(not ITCH_CORPUS.is_dir(), reason=f"ITCH corpus not found at {ITCH_CORPUS}")
def test_apply_buffer_corpus_identical_whole_and_truncated():
    payloads = _corpus_payloads()
    assert payloads
    fused_both([(p, 20, int.from_bytes(p[18:20], "big")) for _name, p in payloads])
    fused_both([(p[:cut], 20, -1) for _name, p in payloads for cut in range(20, len(p), 7)], resolve_symbols=False)


@needs_native
@FUZZ
@given(blocks=st.lists(st.tuples(_book_block(), st.integers(0, 3), st.integers(-1, 80)), min_size=1, max_size=4))
def test_apply_buffer_fuzz_adversarial_flow(blocks):
    fused_both(blocks)


@needs_native
@FUZZ
@given(buf=st.binary(max_size=300), offset=st.integers(0, 40), count=st.integers(-1, 20), framed=_framed())
def test_apply_buffer_fuzz_random_and_damaged_bytes(buf, offset, count, framed):
    fused_both([(buf, offset, count), (framed, 0, count), (framed, 0, -1)])


@needs_native
@FUZZ
@given(bodies=st.lists(st.tuples(st.sampled_from("AFECXDUHR"), st.binary(min_size=48, max_size=48)), max_size=40))
def test_apply_buffer_fuzz_random_field_bytes(bodies):
    fused_both([(frame([t.encode() + body[:MESSAGE_LENGTHS[t] - 1] for t, body in bodies]), 0, -1)])


# ---- FIX framing and fast-path fields -----------------------------------------------------------

from hft_packetfilter.protocols import fix as fixmod  # noqa: E402
from hft_packetfilter.protocols.fix import FixMessage, FixStreamDecoder  # noqa: E402

FIX_MODES = ("strict", "report", "ignore")


def _fix_state(dec: FixStreamDecoder) -> tuple:
    s = dec.stats
    return (s.messages, s.bytes, dict(s.rejects), dict(s.flagged), s.skipped_bytes, dec.pending, dec._need)


def _fix_msg(m: FixMessage) -> tuple:
    return (m.raw, m.begin_string, m.msg_type, m.ts_ns, m.checksum_ok, m.body_length_ok, m._idx, m._plain)


def python_values(raw: bytes):
    """FixMessage.values() through the Python code only."""
    saved, fixmod._CORE = fixmod._CORE, None
    try:
        return FixMessage(raw, "FIX.4.4", "D").values()
    finally:
        fixmod._CORE = saved


def fix_both(segments, mode: str = "strict", max_message: int = fixmod.DEFAULT_MAX_MESSAGE) -> list:
    """Feed the segments to a native and a Python decoder; same messages and state after each."""
    nat = FixStreamDecoder(mode, max_message)
    ref = FixStreamDecoder(mode, max_message, native=False)
    msgs: list = []

    def check(got, want):
        assert [_fix_msg(m) for m in got] == [_fix_msg(m) for m in want]
        assert _fix_state(nat) == _fix_state(ref)
        msgs.extend(got)

    _both(nat, ref, [lambda d, s=s, t=t: d.feed(s, t) for t, s in enumerate(segments)], check)
    for m in msgs[:200]:
        assert m.values() == python_values(m.raw)
    return msgs


@needs_native
def test_fix_bench_stream_identical_in_every_mode():
    decode_fix = _bench_module("decode_fix")
    stream, framed = decode_fix.build_stream(3_000, seed=5)
    for mode in FIX_MODES:
        assert len(fix_both(decode_fix.segments(stream), mode)) == len(framed)
    # one byte at a time, and everything at once (bytearray path and bytes path)
    assert len(fix_both([stream[i:i + 1] for i in range(20_000)])) > 50
    fix_both([stream], max_message=300)


@needs_native
@pytest.mark.skipif(not (_pcap.CORPUS / "ndpi-fix-pcap").is_dir(), reason="FIX corpus not found")
def test_fix_corpus_identical():
    payloads = [p.payload for p in _pcap.read_packets(_pcap.CORPUS / "ndpi-fix-pcap" / "fix.pcap")
                if p.proto == "tcp" and p.payload]
    logs = sorted((_pcap.CORPUS / "fix-logs-quickfix-logviewer").glob("*.log")) + \
        sorted((_pcap.CORPUS / "fix-logs-sackfix").glob("*.log"))
    assert payloads and logs
    for mode in FIX_MODES:
        assert fix_both(payloads, mode)
        for log in logs:
            data = log.read_bytes().replace(b"|", b"\x01")
            fix_both([data[i:i + 700] for i in range(0, len(data), 700)], mode)


@st.composite
def _fix_stream(draw):
    """Valid messages, then damage: byte flips, cuts, splices of junk, wrong lengths; random segments."""
    decode_fix = _bench_module("decode_fix")
    stream, _ = decode_fix.build_stream(draw(st.integers(1, 6)), seed=draw(st.integers(0, 50)))
    s = bytearray(stream)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "cut", "junk", "dup"]))
        at = draw(st.integers(0, max(len(s) - 1, 0)))
        if op == "flip" and s:
            s[at] = draw(st.sampled_from([0x01, ord("="), ord("8"), ord("0"), ord("9"), 0xFF]))
        elif op == "cut":
            del s[at:at + draw(st.integers(1, 40))]
        elif op == "junk":
            s[at:at] = draw(st.binary(max_size=20))
        else:
            s[at:at] = s[max(0, at - 30):at]
    data = bytes(s)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


@needs_native
@FUZZ
@given(segments=_fix_stream(), mode=st.sampled_from(FIX_MODES), small=st.booleans())
def test_fix_fuzz_damaged_streams(segments, mode, small):
    fix_both(segments, mode, 200 if small else fixmod.DEFAULT_MAX_MESSAGE)


@needs_native
@FUZZ
@given(segments=st.lists(st.binary(max_size=80), max_size=5), mode=st.sampled_from(FIX_MODES))
def test_fix_fuzz_random_bytes(segments, mode):
    fix_both([b"8=FIX.4.4\x019=" + segments[0] if segments else b""] + segments[1:], mode)


_FIX_TAGS = st.sampled_from(["35", "11", "055", "", "95", "96", "9", "8", "10", "55", "=", "99999", "x"])


@needs_native
@FUZZ
@given(fields=st.lists(st.tuples(_FIX_TAGS, st.sampled_from(["D", "", "=", "a=b", "\x01", "AAPL"])), max_size=12),
       tail=st.binary(max_size=6))
def test_fix_values_fuzz(fields, tail):
    raw = b"".join(f"{t}={v}\x01".encode() for t, v in fields) + tail
    assert fixmod._CORE.values(raw) in (None, python_values(raw))
    assert FixMessage(raw, "FIX.4.4", "D").values() == python_values(raw)


# ---- pcap records and frame parsing ----------------------------------------------------------------

import struct  # noqa: E402

from hft_packetfilter.sources import packet as packetmod  # noqa: E402
from hft_packetfilter.sources.events import Event  # noqa: E402
from hft_packetfilter.sources.pcap import PcapReader  # noqa: E402


def _event(ev):
    return None if ev is None else tuple(getattr(ev, s) for s in Event.__slots__)


def parse_both(frame, linktype=1, ts=5, frame_len=0):
    """packet.parse with and without the native fast path: same Event (every slot), same reasons."""
    r_nat, r_ref = {}, {}
    got = packetmod.parse(frame, linktype, ts, frame_len, r_nat, "pcap")
    saved, packetmod._parse_eth = packetmod._parse_eth, None
    try:
        want = packetmod.parse(frame, linktype, ts, frame_len, r_ref, "pcap")
    finally:
        packetmod._parse_eth = saved
    assert _event(got) == _event(want) and r_nat == r_ref
    return got


def records_both(path, chunk):
    """PcapReader.records with and without the native splitter; same records and problems."""
    def read():
        r = PcapReader(path, chunk_size=chunk)
        try:
            return list(r.records()), r.problems, r.truncated
        finally:
            r.close()

    got = read()
    saved, _accel.NATIVE = _accel.NATIVE, None
    try:
        want = read()
    finally:
        _accel.NATIVE = saved
    assert got == want
    return got[0]


def _corpus_pcaps():
    return sorted(p for p in _pcap.CORPUS.rglob("*.pcap") if p.read_bytes()[:4] in
                  (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"))


@needs_native
@pytest.mark.skipif(not _pcap.CORPUS.is_dir(), reason=f"corpus not found at {_pcap.CORPUS}")
def test_frames_and_records_identical_on_the_corpus():
    pcaps = _corpus_pcaps()
    assert pcaps
    fast = 0
    for path in pcaps:
        for chunk in (64, 4 << 20):
            recs = records_both(path, chunk)
        for ts, lt, frame, orig in recs:
            fast += parse_both(frame, lt, ts, orig) is not None
            for cut in (0, 13, 14, 17, 33, 34, 41, 42, 53, len(frame) - 1):
                parse_both(frame[:cut], lt, ts)
    assert fast > 1000


@needs_native
def test_records_identical_on_the_bench_capture_and_a_cut_one(tmp_path):
    decode_itch = _bench_module("decode_itch")
    datagrams, _n = decode_itch.generate(2_000, seed=4)
    path = tmp_path / "b.pcap"
    decode_itch.write_pcap(str(path), datagrams)
    for chunk in (100, 1000, 4 << 20):
        assert len(records_both(path, chunk)) == len(datagrams)
    data = path.read_bytes()
    (tmp_path / "cut.pcap").write_bytes(data[:len(data) // 2])
    records_both(tmp_path / "cut.pcap", 333)


@st.composite
def _frame(draw):
    """An Ethernet/IPv4 UDP or TCP frame, perhaps VLAN-tagged, then damaged."""
    proto = draw(st.sampled_from(["udp", "tcp"]))
    f = bytearray(_pcap.build_frame(proto, draw(st.binary(max_size=30)), 1000, 26477))
    for _ in range(draw(st.integers(0, 3))):
        f[12:12] = struct.pack(">HH", draw(st.sampled_from([0x8100, 0x88A8])), draw(st.integers(0, 0xFFFF)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(f) - 1))
        f[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        f = f[:draw(st.integers(0, len(f)))]
    return bytes(f)


@needs_native
@FUZZ
@given(frame=_frame(), frame_len=st.sampled_from([0, 60, 1500]))
def test_parse_fuzz_damaged_frames(frame, frame_len):
    parse_both(frame, 1, 7, frame_len)


@needs_native
@FUZZ
@given(frame=st.binary(max_size=100), linktype=st.sampled_from([1, 1, 113, 101]))
def test_parse_fuzz_random_bytes(frame, linktype):
    parse_both(frame, linktype)
    parse_both(bytearray(frame), linktype)


@needs_native
@FUZZ
@given(body=st.binary(max_size=200), hlen=st.sampled_from([16, 24]), pos=st.integers(0, 30),
       little=st.booleans(), mult=st.sampled_from([1, 1000]))
def test_split_pcap_fuzz_random_bytes(body, hlen, pos, little, mult):
    recs, end = _accel.NATIVE.split_pcap(body, pos, hlen, mult, 1, little)
    o = "<" if little else ">"
    want, p = [], pos
    while p + hlen <= len(body):                # the Python records() inner loop
        sec, frac, incl, orig = struct.unpack_from(o + "IIII", body, p)
        if p + hlen + incl > len(body):
            break
        want.append((sec * 1_000_000_000 + frac * mult, 1, body[p + hlen:p + hlen + incl], orig))
        p += hlen + incl
    assert (recs, end) == (want, max(p, pos))


def test_a_stale_compiled_module_is_not_half_used(monkeypatch):
    """A .so built from older sources (missing an entry point the Python code uses) is refused as a
    whole, with a reason that says how to rebuild, instead of failing at import or half-working."""
    import types

    stale = types.ModuleType("hft_packetfilter._native")
    for name in _accel.REQUIRED[:-1]:
        setattr(stale, name, object())
    monkeypatch.setitem(sys.modules, "hft_packetfilter._native", stale)
    monkeypatch.setattr(hft_packetfilter, "_native", stale, raising=False)
    monkeypatch.delenv("HFTPF_NO_NATIVE", raising=False)
    mod, why = _accel._load()
    assert mod is None and "stale" in why and _accel.REQUIRED[-1] in why and "pip install -e ." in why
