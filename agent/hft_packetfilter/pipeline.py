"""The offline (and, later, live) pipeline: events -> classify -> reassemble -> decode -> analytics -> report.

One :class:`Pipeline` takes :class:`~.sources.events.Event` records one at a time (``feed``) from
any source -- :func:`run_capture` drives it from a pcap/pcapng file, the live agent will drive it
from the kernel ring buffers -- and ``report()`` returns a JSON-safe document.

Stages
------
1. **Classify**: events that arrive unclassified (``venue_id == 0`` and ``venue is None``) are
   classified with :class:`~.classify.Classifier` from the same config the kernel uses. Events of
   no venue are counted (``unclassified``) and dropped.
2. **Streams**: UDP venues get one decoder per *stream* ``(venue, destination address, destination
   port)`` -- an A and a B line are two streams of one venue. TCP venues whose protocol is a stream
   protocol (FIX, SoupBinTCP/OUCH) go through one :class:`~.sources.tcp.TcpReassembler` (both
   directions, so acknowledgements prove gaps) and get one decoder per flow direction; the
   SoupBinTCP/OUCH decoder's direction comes from the flow direction (``to_venue`` = inbound OUCH).
   A message's timestamp is the latest capture time of the bytes that completed it (a segment that
   waited behind a hole does not make a message older than the segment that filled the hole).
3. **Decode** with the protocol registry (``protocols.get(name).new_decoder()``; MDP3 with the schema
   given to the pipeline, else ``set_default_schema`` / ``HFTPF_MDP3_SCHEMA``).
4. **Analytics**:

   * feed quality (:class:`~.analytics.feed_quality.FeedQuality`) from the sequence headers:
     MoldUDP64 (session, sequence, count; heartbeats and end of session), MDP3 (packet MsgSeqNum,
     count 1, SendingTime as the exchange clock), Cboe PITCH (per unit; unsequenced units skipped),
     NYSE XDP (SeqNum and NumberMsgs, SendTime; Sequence Number Reset messages reset the line).
     The feed-quality stream is the venue (``venue/unit`` for PITCH) and the line is the stream's
     ``address:port``, so A/B lines of a venue are arbitrated;
   * order lifecycle and latency (:class:`~.analytics.orders.OrderTracker`) from FIX and OUCH, per
     venue and per session (the TCP connection ``client:port>server:port``);
   * books (:mod:`~.analytics.books`): ITCH 5.0, MDP3 (market by price) and PITCH, one book per
     venue. A/B copies are applied once: ITCH and PITCH books take only the messages the
     arbitrated feed-quality view counted as new -- first copies and late fills of holes; copies
     and duplicates are counted ``skipped_copies``. MDP3 books skip repeats by RptSeq themselves;
   * cross-venue (:class:`~.analytics.crossvenue.CrossVenue`) from the book tops after every update,
     with tick-to-trade from our orders, and execution quality
     (:class:`~.analytics.execution.ExecutionQuality`) fed by the order tracker with the
     consolidated mid as arrival price. Cross-venue is on when it can say something (two book
     venues, or a book venue and an order-entry venue) unless ``crossvenue=`` says otherwise.

Losses are counted, never hidden
--------------------------------
``decode_errors.<protocol>.<reason>`` (every decoder's rejects, including decoders of streams that
have ended; ``no_decoder`` counts packets of protocols without a decoder; ``exception:<Type>`` an
exception a decoder let through), ``tcp`` (reassembly gaps and their bytes, per venue too),
``unclassified``, ``frames_rejected.<reason>`` (frames that are not UDP/TCP, from the source),
``errors.<stage>.<ExceptionType>`` (an analytic or the pipeline itself raised on one packet: the
packet's remaining work for that stage is skipped and processing continues). Nothing here raises on
traffic.

Memory is bounded: the pull loop of :func:`run_capture` holds one record at a time; TCP state is
bounded by the reassembler (``max_flows``, ``max_buffer``); UDP streams beyond ``max_udp_streams``
are counted (``udp_streams_overflow``) and not decoded; the analytics bound their own state.
"""
from __future__ import annotations

import collections
import ipaddress
import os
import struct
from operator import attrgetter
from typing import Any, Callable, Dict, Iterable, Optional

from . import classify as _classify
from . import protocols as _protocols
from .analytics.books import ItchBook, Mdp3Book, PitchBook
from .analytics.crossvenue import CrossVenue
from .analytics.execution import ExecutionQuality
from .analytics.feed_quality import FeedQuality
from .analytics.orders import OrderTracker
from .sources.events import CLOCK_PCAP, TO_VENUE
from .sources.tcp import TcpReassembler

__all__ = ["Pipeline", "run_capture", "capture_first_ts"]

ITCH = "ITCH/MoldUDP64"
MDP3 = "MDP3/UDP"
PITCH = "PITCH/UDP"
XDP = "XDP/UDP"
FIX = "FIX/TCP"
SOUP = "SoupBinTCP/OUCH"
#: protocols decoded from a reassembled TCP byte stream
STREAM_PROTOCOLS = frozenset((FIX, SOUP))

_MOLD_HDR = struct.Struct(">10sQH").unpack_from
_MDP3_HDR = struct.Struct("<IQ").unpack_from
_PITCH_HDR = struct.Struct("<HBBI").unpack_from
_XDP_HDR = struct.Struct("<HBBIII").unpack_from
_MSG_TYPE = attrgetter("msg_type")


def _addr(packed: bytes) -> str:
    try:
        return str(ipaddress.ip_address(packed))
    except ValueError:
        return packed.hex()


class _Udp:
    """One UDP stream: a venue's (destination, port)."""

    __slots__ = ("venue", "protocol", "decoder", "handler", "line", "fq_stream", "book", "fqs")

    def __init__(self, venue, protocol, decoder, handler, line) -> None:
        self.venue = venue
        self.protocol = protocol
        self.decoder = decoder
        self.handler = handler
        self.line = line
        self.fq_stream = venue
        self.book = None
        self.fqs = None         # the feed-quality stream state (arbitrated view), once it exists


class _TcpStream:
    """Consumer of one reassembled TCP direction: decodes and dispatches its messages."""

    __slots__ = ("pipe", "venue", "protocol", "to_venue", "session", "decoder", "ts")

    def __init__(self, pipe: "Pipeline", venue, protocol, to_venue: bool, session: str, decoder) -> None:
        self.pipe = pipe
        self.venue = venue
        self.protocol = protocol
        self.to_venue = to_venue
        self.session = session
        self.decoder = decoder
        self.ts = 0

    def on_data(self, data, offset, ts_ns) -> None:
        if ts_ns > self.ts:
            self.ts = ts_ns
        self.pipe._stream_data(self, data)

    def on_gap(self, offset, size, reason) -> None:
        self.pipe._stream_gap(self, size, reason)

    def on_end(self, reason) -> None:
        self.pipe._stream_end(self, reason)


class _Quotes:
    """Forwards the order tracker's listener calls to execution quality and tick-to-trade."""

    def __init__(self, execution: ExecutionQuality, crossvenue: Optional[CrossVenue]) -> None:
        self.execution = execution
        self.crossvenue = crossvenue

    def on_order(self, venue, key, symbol, side, qty, ts_ns) -> None:
        self.execution.on_order(venue, key, symbol, side, qty, ts_ns)
        if self.crossvenue is not None and symbol is not None:
            self.crossvenue.on_order(venue, symbol, ts_ns)

    def on_fill(self, venue, key, price, qty, ts_ns) -> None:
        self.execution.on_fill(venue, key, price, qty, ts_ns)


class Pipeline:
    """Events in, a report out (see the module docstring).

    ``fused_itch``: ITCH message blocks go straight into the venue's book (ItchBook.apply_buffer, no
    message objects) when nothing else reads the messages (no cross-venue view) and the whole packet
    is new to the arbitrated feed; the report is the same as with False (tests/unit/test_native.py).

    ``config``: a :class:`~.config.Config` (None: no venues, everything is unclassified).
    ``mdp3_schema``: path of the MDP3 SBE schema XML for MDP3 venues.
    ``crossvenue``: True, False or ``"auto"``.
    """

    fused_itch = True
    #: run_capture lets the compiled replay fast lane (fastlane.py) take the plain MoldUDP64/ITCH
    #: packets; the report is the same with False
    fast_lane = True

    def __init__(self, config=None, *, mdp3_schema: Optional[str] = None, clock: str = CLOCK_PCAP,
                 crossvenue: Any = "auto", stale_after_ns: Optional[int] = None,
                 max_udp_streams: int = 4096, tcp_max_flows: int = 65536, tcp_max_buffer: int = 1 << 20) -> None:
        from . import config as _config

        self.config = config if config is not None else _config.default()
        self.mdp3_schema = mdp3_schema
        self.clock = clock
        self.classifier = _classify.Classifier(self.config)
        self.exchanges = {ex.name: ex for ex in self.config.exchanges}
        self.protocol_of = {}
        for ex in self.config.exchanges:
            self.protocol_of[ex.name] = _protocols.canonical(ex.protocol) or ex.protocol
        self.max_udp_streams = max_udp_streams

        # analytics
        kw = {} if stale_after_ns is None else {"stale_after_ns": stale_after_ns}
        self.feeds = FeedQuality(clock=clock, **kw)
        book_venues = [v for v, p in self.protocol_of.items() if p in (ITCH, MDP3, PITCH)]
        order_venues = [v for v, p in self.protocol_of.items() if p in (FIX, SOUP)]
        if crossvenue == "auto":
            crossvenue = len(book_venues) >= 2 or (bool(book_venues) and bool(order_venues))
        self.crossvenue: Optional[CrossVenue] = (CrossVenue.from_config(self.config.exchanges, clock=clock)
                                                 if crossvenue else None)
        self.execution = ExecutionQuality(self.crossvenue.mid2_for if self.crossvenue is not None else None)
        self.orders = OrderTracker(clock=clock, listener=_Quotes(self.execution, self.crossvenue))
        self.books: Dict[str, Any] = {}
        self._last_top: Dict[tuple, tuple] = {}

        # streams
        self._udp: Dict[tuple, _Udp] = {}
        self.tcp = TcpReassembler(self._tcp_consumer, max_flows=tcp_max_flows, max_buffer=tcp_max_buffer)
        self._tcp_live: Dict[int, _TcpStream] = {}

        # counters
        self.events = 0
        self.unclassified = 0
        self.frames_rejected: Dict[str, int] = {}     # filled by the source (run_capture passes it)
        self.outside_window = 0
        self.first_ts: Optional[int] = None
        self.last_ts: Optional[int] = None
        self.venue_packets: Dict[str, list] = {}      # venue -> [packets, payload bytes]
        self.messages: Dict[str, collections.Counter] = {}
        self._retired: Dict[str, collections.Counter] = {}   # decode rejects of ended decoders
        self._pipe_rejects: Dict[str, collections.Counter] = {}
        self.errors: Dict[str, collections.Counter] = {}
        self.tcp_gaps: Dict[str, list] = {}            # venue -> [gaps, bytes]
        self.skipped_copies: Dict[str, int] = {}
        self.udp_streams_overflow = 0
        self.closed = False
        # optional: called with (protocol, msg, ts_ns, venue, session, to_venue) for every decoded
        # order-entry message (the live agent's risk engine listens here)
        self.message_listener = None
        # optional: called with (venue, session, to_venue, ts_ns, bytes_lost, reason) for every hole in
        # a reassembled TCP stream (the audit trail records it as a probe-loss window)
        self.gap_listener = None

    # -- counting helpers ------------------------------------------------------------------------
    def _error(self, stage: str, exc: BaseException) -> None:
        c = self.errors.get(stage)
        if c is None:
            c = self.errors[stage] = collections.Counter()
        c[type(exc).__name__] += 1

    def _reject(self, protocol: str, reason: str, n: int = 1) -> None:
        c = self._pipe_rejects.get(protocol)
        if c is None:
            c = self._pipe_rejects[protocol] = collections.Counter()
        c[reason] += n

    def _count(self, protocol: str, msgs) -> None:
        c = self.messages.get(protocol)
        if c is None:
            c = self.messages[protocol] = collections.Counter()
        c.update(map(_MSG_TYPE, msgs))

    def _retire(self, protocol: str, decoder) -> None:
        st = getattr(decoder, "stats", None)
        if st is None:
            return
        c = self._retired.get(protocol)
        if c is None:
            c = self._retired[protocol] = collections.Counter()
        c.update(st.rejects)

    # -- input -----------------------------------------------------------------------------------
    def feed(self, ev) -> None:
        """Take one event. Never raises on traffic."""
        self.events += 1
        ts = ev.ts_ns
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        try:
            if ev.venue is None and not ev.venue_id:
                self.classifier.classify_event(ev)
            venue = ev.venue
            if venue is None:
                self.unclassified += 1
                return
            vp = self.venue_packets.get(venue)
            if vp is None:
                vp = self.venue_packets[venue] = [0, 0]
            vp[0] += 1
            vp[1] += len(ev.payload)
            if ev.transport == "udp":
                key = (venue, ev.dst, ev.dport)
                st = self._udp.get(key)
                if st is None:
                    st = self._new_udp(key, ev)
                    if st is None:
                        return
                st.handler(st, ev)
            else:
                proto = self.protocol_of.get(venue)
                if proto in STREAM_PROTOCOLS:
                    self.tcp.feed(ev)
                elif ev.payload:
                    self._reject(proto or "unknown", "no_decoder")
        except Exception as e:  # noqa: BLE001 - never crash on traffic; count and go on
            self._error("pipeline", e)

    def feed_many(self, events: Iterable) -> None:
        """Batch entry point: ``feed`` each event."""
        feed = self.feed
        for ev in events:
            feed(ev)

    def close(self) -> None:
        """End of input: flush TCP reassembly (holes become explicit gaps) and evaluate staleness."""
        if self.closed:
            return
        self.closed = True
        try:
            self.tcp.flush("flush")
        except Exception as e:  # noqa: BLE001
            self._error("reassembly", e)
        if self.last_ts is not None:
            self.feeds.tick(self.last_ts)

    # -- UDP -------------------------------------------------------------------------------------
    def _new_udp(self, key, ev) -> Optional[_Udp]:
        if len(self._udp) >= self.max_udp_streams:
            self.udp_streams_overflow += 1
            return None
        venue = ev.venue
        proto = self.protocol_of.get(venue, "UDP")
        line = f"{_addr(ev.dst)}:{ev.dport}"
        dec = None
        handler = self._h_other
        try:
            if proto == MDP3:
                from .protocols import mdp3
                dec = mdp3.new_decoder(self.mdp3_schema)
            else:
                dec = _protocols.get(proto).new_decoder()
        except _protocols.UnknownProtocol:
            handler = self._h_none
        except Exception as e:  # noqa: BLE001
            self._error("decoder_init", e)
            handler = self._h_none
        if dec is not None:
            handler = {ITCH: self._h_mold, MDP3: self._h_mdp3, PITCH: self._h_pitch,
                       XDP: self._h_xdp}.get(proto, self._h_other)
        st = _Udp(venue, proto, dec, handler, line)
        if proto == ITCH:
            st.book = self._book(venue, ItchBook)
        elif proto == PITCH:
            st.book = self._book(venue, PitchBook)
        elif proto == MDP3:
            st.book = self._book(venue, Mdp3Book)
        self._udp[key] = st
        return st

    def _book(self, venue, cls):
        b = self.books.get(venue)
        if b is None:
            b = self.books[venue] = cls(venue)
        return b

    def _decode(self, st: _Udp, ev):
        try:
            return st.decoder.feed(ev.payload, ev.ts_ns)
        except Exception as e:  # noqa: BLE001 - decoders should not raise; count it if one does
            self._reject(st.protocol, "exception:" + type(e).__name__)
            self._error("decode", e)
            return None

    def _h_none(self, st: _Udp, ev) -> None:
        if ev.payload:
            self._reject(st.protocol, "no_decoder")

    def _h_other(self, st: _Udp, ev) -> None:
        msgs = self._decode(st, ev)
        if msgs:
            self._count(st.protocol, msgs)

    def _h_mold(self, st: _Udp, ev) -> None:
        p = ev.payload
        count = ((p[18] << 8) | p[19]) if len(p) > 20 else 0
        if 0 < count < 0xFFFF and self.fused_itch and self.crossvenue is None:
            return self._h_mold_fused(st, ev, count)
        msgs = self._decode(st, ev)
        if msgs:
            self._count(ITCH, msgs)
        new = self._mold_quality(st, ev)
        if new is not None and msgs:
            self._mold_book(st, ev, msgs, new)

    def _h_mold_fused(self, st: _Udp, ev, count: int) -> None:
        """A packet with message blocks when no cross-venue view needs the tops: feed quality first
        (it reads the header only), then, when the arbitrated view counts all ``count`` messages as
        new (every decoded one goes to the book, as _first_copies would pass them), the block is
        decoded straight into the book (MoldUDP64Decoder.feed_book). Otherwise the message path."""
        new = self._mold_quality(st, ev)
        if new is None or new < count:
            msgs = self._decode(st, ev)
            if msgs:
                self._count(ITCH, msgs)
                if new is not None:
                    self._mold_book(st, ev, msgs, new)
            return
        c = self.messages.get(ITCH)
        if c is None:
            c = self.messages[ITCH] = collections.Counter()
        st.decoder.feed_book(ev.payload, st.book, c)
        if not c:                      # as _count: no entry before the first message
            del self.messages[ITCH]

    def _mold_quality(self, st: _Udp, ev) -> Optional[int]:
        """Feed quality for a MoldUDP64 packet; the messages the arbitrated view counted as new, or
        None when no book update follows (short, heartbeat, end of session, re-request, error)."""
        p = ev.payload
        n = len(p)
        if n < 20:
            return None
        try:
            raw, seq, count = _MOLD_HDR(p, 0)
            session = raw.rstrip(b" \x00").decode("ascii", "replace")
            ts = ev.ts_ns
            if count == 0:
                self.feeds.on_packet(st.fq_stream, st.line, ts, seq, 0, None, session)
                return None
            if count == 0xFFFF:
                self.feeds.on_end_of_session(st.fq_stream, st.line, ts, seq)
                return None
            if n == 20:                     # a re-request packet, not feed data
                return None
            fqs = st.fqs
            if fqs is None:                 # another line of the stream may have created it
                fqs = st.fqs = self.feeds.streams.get(st.fq_stream)
            before = fqs.arb.messages if fqs is not None else 0
            self.feeds.on_packet(st.fq_stream, st.line, ts, seq, count, None, session)
            if fqs is None:
                fqs = st.fqs = self.feeds.streams.get(st.fq_stream)
            return fqs.arb.messages - before
        except Exception as e:  # noqa: BLE001
            self._error("feed_quality", e)
            return None

    def _mold_book(self, st: _Udp, ev, msgs, new: int) -> None:
        try:
            msgs = self._first_copies(st.venue, msgs, new)
            if not msgs:
                return
            book = st.book
            book.apply_many(msgs)
            if self.crossvenue is not None:
                books = book.books
                ts = ev.ts_ns
                for loc in {m[0] for m in msgs}:
                    b = books.get(loc)
                    if b is not None:
                        self._quote(st.venue, b.symbol, ts, b.top())
        except Exception as e:  # noqa: BLE001
            self._error("books", e)

    def _first_copies(self, venue, msgs, new: int):
        """Only the messages the arbitrated feed view counted as new (first copies, late fills
        included) go to a book; A/B copies and duplicates are skipped (``skipped_copies``). In a
        packet that is partly old, the new messages are its last ``new`` ones."""
        n = len(msgs)
        if new >= n:
            return msgs
        self.skipped_copies[venue] = self.skipped_copies.get(venue, 0) + (n - max(new, 0))
        return msgs[n - new:] if new > 0 else ()

    def _quote(self, venue, symbol, ts, top) -> None:
        k = (venue, symbol)
        cv = self.crossvenue
        if self._last_top.get(k) != top:
            self._last_top[k] = top
            cv.on_quote(venue, symbol, ts, *top)
        else:
            cv.on_market_data(venue, symbol, ts)

    def _h_mdp3(self, st: _Udp, ev) -> None:
        msgs = self._decode(st, ev)
        if msgs:
            self._count(MDP3, msgs)
        p = ev.payload
        off = 2 if p[:2] == b"\xfe\xca" else 0
        if len(p) < off + 12:
            return
        ts = ev.ts_ns
        try:
            seq, sending = _MDP3_HDR(p, off)
            self.feeds.on_packet(st.fq_stream, st.line, ts, seq, 1, sending)
        except Exception as e:  # noqa: BLE001
            self._error("feed_quality", e)
        if not msgs:
            return
        try:
            book = st.book
            book.apply_many(msgs)
            if self.crossvenue is not None:
                sids = set()
                for m in msgs:
                    f = m.fields
                    sid = f.get("SecurityID")
                    if sid is not None:
                        sids.add(sid)
                    for e in f.get("NoMDEntries") or ():
                        sid = e.get("SecurityID") if isinstance(e, dict) else None
                        if sid is not None:
                            sids.add(sid)
                for sid in sids:
                    if sid in book.securities:
                        self._quote(st.venue, book.symbols.get(sid, str(sid)), ts, book.top(sid))
        except Exception as e:  # noqa: BLE001
            self._error("books", e)

    def _h_pitch(self, st: _Udp, ev) -> None:
        msgs = self._decode(st, ev)
        if msgs:
            self._count(PITCH, msgs)
        p = ev.payload
        if len(p) < 8:
            return
        ts = ev.ts_ns
        new = None
        try:
            _ln, count, unit, seq = _PITCH_HDR(p, 0)
            if seq:
                key = (st.venue, unit)
                fqs = self.feeds.streams.get(key)
                before = fqs.arb.messages if fqs is not None else 0
                self.feeds.on_packet(key, st.line, ts, seq, count)
                new = self.feeds.streams[key].arb.messages - before
        except Exception as e:  # noqa: BLE001
            self._error("feed_quality", e)
            return
        if not msgs:
            return
        try:
            if new is not None:
                msgs = self._first_copies(st.venue, msgs, new)
            book = st.book
            touched = set()
            if self.crossvenue is not None:
                orders = book.orders
                for m in msgs:
                    f = m.fields
                    o = orders.get(f.get("order_id"))
                    if o is not None:
                        touched.add(o[3])
            book.apply_many(msgs)
            if self.crossvenue is not None:
                for m in msgs:
                    sym = m.fields.get("symbol")
                    b = book.by_symbol.get(sym) if sym is not None else None
                    if b is not None:
                        touched.add(b)
                for b in touched:
                    self._quote(st.venue, b.symbol, ts, b.top())
        except Exception as e:  # noqa: BLE001
            self._error("books", e)

    def _h_xdp(self, st: _Udp, ev) -> None:
        msgs = self._decode(st, ev)
        if msgs:
            self._count(XDP, msgs)
        p = ev.payload
        if len(p) < 16 or (p[0] | p[1] << 8) != len(p):
            return                          # not XDP framing (OpenBook Ultra is framed only)
        try:
            _size, _flag, count, seq, send_s, send_ns = _XDP_HDR(p, 0)
            ts = ev.ts_ns
            if msgs and any(m.msg_type == "1" for m in msgs):
                self.feeds.on_reset(st.fq_stream, st.line, ts)
            self.feeds.on_packet(st.fq_stream, st.line, ts, seq, count,
                                 send_s * 1_000_000_000 + send_ns if count else None)
        except Exception as e:  # noqa: BLE001
            self._error("feed_quality", e)

    # -- TCP -------------------------------------------------------------------------------------
    def _tcp_consumer(self, stream):
        src, dst, sport, dport = stream.key
        _vid, venue, _kind, direction = self.classifier.classify("tcp", src, dst, sport, dport)
        proto = self.protocol_of.get(venue)
        to_venue = direction == TO_VENUE
        if to_venue:
            client, server = (src, sport), (dst, dport)
        else:
            client, server = (dst, dport), (src, sport)
        session = f"{_addr(client[0])}:{client[1]}>{_addr(server[0])}:{server[1]}"
        dec = self._stream_decoder(proto, to_venue)
        c = _TcpStream(self, venue, proto, to_venue, session, dec)
        self._tcp_live[id(c)] = c
        return c

    def _stream_decoder(self, proto, to_venue: bool):
        try:
            if proto == SOUP:
                from .protocols.ouch import IN, OUT
                return _protocols.get(SOUP).new_decoder(direction=IN if to_venue else OUT)
            return _protocols.get(proto).new_decoder()
        except Exception as e:  # noqa: BLE001
            self._error("decoder_init", e)
            return None

    def _stream_data(self, c: _TcpStream, data) -> None:
        dec = c.decoder
        if dec is None:
            self._reject(c.protocol or "unknown", "no_decoder")
            return
        ts = c.ts
        try:
            msgs = dec.feed(data, ts)
        except Exception as e:  # noqa: BLE001
            self._reject(c.protocol, "exception:" + type(e).__name__)
            self._error("decode", e)
            return
        if not msgs:
            return
        self._count(c.protocol, msgs)
        orders = self.orders
        if self.message_listener is not None:
            try:
                for m in msgs:
                    self.message_listener(c.protocol, m, ts, c.venue, c.session, c.to_venue)
            except Exception as e:  # noqa: BLE001
                self._error("listener", e)
        try:
            if c.protocol == FIX:
                for m in msgs:
                    orders.on_fix(m, ts, c.venue, c.session)
            else:
                for m in msgs:
                    if hasattr(m, "direction"):
                        orders.on_ouch(m, ts, c.venue, c.session)
        except Exception as e:  # noqa: BLE001
            self._error("orders", e)

    def _stream_gap(self, c: _TcpStream, size: int, reason: str) -> None:
        if self.gap_listener is not None:
            try:
                self.gap_listener(c.venue, c.session, c.to_venue, c.ts, size, reason)
            except Exception as e:  # noqa: BLE001
                self._error("listener", e)
        g = self.tcp_gaps.get(c.venue)
        if g is None:
            g = self.tcp_gaps[c.venue] = [0, 0]
        g[0] += 1
        g[1] += size
        dec = c.decoder
        if dec is None:
            return
        reset = getattr(dec, "reset", None)
        if reset is not None:
            reset()
        else:   # no way to drop a partial message: start a fresh decoder after the hole
            self._retire(c.protocol, dec)
            c.decoder = self._stream_decoder(c.protocol, c.to_venue)

    def _stream_end(self, c: _TcpStream, reason: str) -> None:
        if c.decoder is not None:
            self._retire(c.protocol, c.decoder)
            c.decoder = None
        self._tcp_live.pop(id(c), None)

    # -- output ----------------------------------------------------------------------------------
    def decode_errors(self) -> Dict[str, Dict[str, int]]:
        out: Dict[str, collections.Counter] = {}

        def add(proto, counter):
            if counter:
                out.setdefault(proto, collections.Counter()).update(counter)

        for proto, c in self._retired.items():
            add(proto, c)
        for proto, c in self._pipe_rejects.items():
            add(proto, c)
        for st in self._udp.values():
            if st.decoder is not None and getattr(st.decoder, "stats", None) is not None:
                add(st.protocol, st.decoder.stats.rejects)
        for c in self._tcp_live.values():
            if c.decoder is not None:
                add(c.protocol, c.decoder.stats.rejects)
        return {p: dict(sorted((str(k), v) for k, v in c.items() if v)) for p, c in sorted(out.items())}

    def _orders(self):
        """(order tracker snapshot, orders per venue, latency per venue)."""
        snap = self.orders.snapshot()
        orders, latency = {}, {}
        for venue, d in snap["venues"].items():
            lat = d.pop("latency")
            d.pop("sessions", None)
            orders[venue] = d
            latency[venue] = lat
        return snap, orders, latency

    def summary(self) -> dict:
        """What the live agent serves every interval, the same values as those of :meth:`report`
        without the sections it does not serve (feeds, TCP, execution, whole books), which cost the
        most with many streams, symbols and live orders: ``messages``, ``decode_errors``,
        ``errors``, ``orders``, ``latency``, ``books`` (``head()`` of each) and ``crossvenue``."""
        _snap, orders, latency = self._orders()
        return {
            "messages": {p: dict(sorted(c.items())) for p, c in sorted(self.messages.items())},
            "decode_errors": self.decode_errors(),
            "errors": {s: dict(sorted(c.items())) for s, c in sorted(self.errors.items())},
            "orders": orders,
            "latency": latency,
            "books": {venue: b.head() for venue, b in sorted(self.books.items())},
            "crossvenue": self.crossvenue.snapshot() if self.crossvenue is not None else {"enabled": False},
        }

    def report(self) -> dict:
        """The report document (JSON-safe; see replay's --json for the layout)."""
        ts = self.tcp.stats
        orders_snap, orders, latency = self._orders()
        venues = {}
        for name, ex in self.exchanges.items():
            vp = self.venue_packets.get(name, (0, 0))
            venues[name] = {"protocol": self.protocol_of[name], "transport": ex.transport,
                            "stream_kind": ex.stream_kind, "packets": vp[0], "payload_bytes": vp[1]}
        books = {}
        for venue, b in sorted(self.books.items()):
            d = b.snapshot()
            d["skipped_copies"] = self.skipped_copies.get(venue, 0)
            books[venue] = d
        feeds = self.feeds.snapshot()
        return {
            "packets": self.events + sum(self.frames_rejected.values()),
            "events": self.events,
            "frames_rejected": dict(sorted(self.frames_rejected.items())),
            "unclassified": self.unclassified,
            "outside_window": self.outside_window,
            "clock": self.clock,
            "first_ts_ns": self.first_ts,
            "last_ts_ns": self.last_ts,
            "venues": venues,
            "messages": {p: dict(sorted(c.items())) for p, c in sorted(self.messages.items())},
            "decode_errors": self.decode_errors(),
            "errors": {s: dict(sorted(c.items())) for s, c in sorted(self.errors.items())},
            "tcp": {"segments": ts.segments, "bytes": ts.bytes, "gaps": ts.gaps, "gap_bytes": ts.gap_bytes,
                    "retrans_bytes": ts.retrans_bytes, "retrans_segments": ts.retrans_segments,
                    "out_of_order": ts.out_of_order, "overflows": ts.overflows, "evictions": ts.evictions,
                    "flows": ts.flows,
                    "venues": {v: {"gaps": g[0], "gap_bytes": g[1]} for v, g in sorted(self.tcp_gaps.items())}},
            "udp_streams": len(self._udp),
            "udp_streams_overflow": self.udp_streams_overflow,
            "feeds": feeds["streams"],
            "feed_quality": {"clock": feeds["clock"], "stale_after_ns": feeds["stale_after_ns"],
                             "bad_input": feeds["bad_input"]},
            "orders": orders,
            "latency": latency,
            "order_tracking": {k: v for k, v in orders_snap.items() if k != "venues"},
            "books": books,
            "crossvenue": self.crossvenue.snapshot() if self.crossvenue is not None else {"enabled": False},
            "execution": self.execution.snapshot(),
        }


# --------------------------------------------------------------------------------------------
# Driving it from a capture file
# --------------------------------------------------------------------------------------------

def capture_first_ts(path) -> Optional[int]:
    """Timestamp (ns) of the first record of a capture, None when it has none."""
    from .sources.pcap import open_capture

    with open_capture(path) as reader:
        for ts, _lt, _frame, _wire in reader.records():
            return ts
    return None


def run_capture(path, config=None, from_ns: Optional[int] = None, to_ns: Optional[int] = None,
                progress: Optional[Callable[[int, int], None]] = None, *, mdp3_schema: Optional[str] = None,
                pipeline: Optional[Pipeline] = None, **kw) -> dict:
    """Replay a pcap/pcapng file through a :class:`Pipeline`; returns its report plus ``capture``.

    ``from_ns`` (inclusive) and ``to_ns`` (exclusive) bound the records replayed by capture time
    (ns since the epoch); records outside are counted (``outside_window``). ``progress(bytes_read,
    total_bytes)`` is called as the file is read. Raises :class:`~.sources.pcap.NotACaptureError`
    (a ValueError) for a file that is not a capture and ``OSError`` when it cannot be read.

    With the compiled module, a capture's plain MoldUDP64/ITCH packets go through the replay
    fast lane (:mod:`.fastlane`) instead of one ``parse`` + ``feed`` each; the report is the same.
    """
    from .fastlane import FastLane
    from .sources.packet import parse
    from .sources.pcap import PcapngReader, open_capture

    pipe = pipeline if pipeline is not None else Pipeline(config, mdp3_schema=mdp3_schema, **kw)
    reasons = pipe.frames_rejected
    feed = pipe.feed
    first = last = None
    records = 0
    linktypes: Dict[int, int] = {}
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    with open_capture(path, progress) as reader:
        lane = FastLane.for_capture(pipe, reader, from_ns, to_ns)
        for ts, lt, frame, wire in (reader.records(lane.core) if lane is not None else reader.records()):
            if lane is not None:
                lane.sync()             # what the lane took before this record, into the Python objects
            records += 1
            if first is None or ts < first:
                first = ts
            if last is None or ts > last:
                last = ts
            if (from_ns is not None and ts < from_ns) or (to_ns is not None and ts >= to_ns):
                pipe.outside_window += 1
                continue
            linktypes[lt] = linktypes.get(lt, 0) + 1
            ev = parse(frame, lt, ts, wire, reasons, pipe.clock)
            if ev is not None:
                feed(ev)
                if lane is not None:
                    lane.after(ev)
        if lane is not None:
            lane.sync()
            if lane.records:
                records += lane.records
                linktypes[1] = linktypes.get(1, 0) + lane.records       # the lane takes Ethernet only
                if first is None or lane.first_ts < first:
                    first = lane.first_ts
                if last is None or lane.last_ts > last:
                    last = lane.last_ts
        is_ng = isinstance(reader, PcapngReader)
        info = {
            "file": os.fspath(path),
            "format": "pcapng" if is_ng else "pcap",
            "gzip": gz,
            "resolution": None if is_ng else ("ns" if reader.nanosecond else "us"),
            "bytes": reader.total_bytes,
            "records": records,
            "linktypes": {str(k): v for k, v in sorted(linktypes.items())},
            "first_ts_ns": first,
            "last_ts_ns": last,
            "duration_s": (last - first) / 1e9 if first is not None else None,
            "truncated": reader.truncated,
            "problems": list(reader.problems),
            "window": {"from_ns": from_ns, "to_ns": to_ns},
            "fast_lane_records": lane.records if lane is not None else 0,
        }
    pipe.close()
    doc = pipe.report()
    doc["capture"] = info
    return doc
