"""The replay fast lane: offline MoldUDP64/ITCH replay's common case in one compiled loop (and the
live agent's payload records: :meth:`FastLane.run_live`).

A 1 M-packet ITCH capture spends most of its replay time in per-packet Python: frame parsing, the
pipeline's dispatch, MoldUDP64 framing and feed quality, each a handful of calls per packet. The
compiled ``MoldLane`` (native/lane.c) does all of it for the packets whose every answer is the
plain one -- in order on a registered ITCH line, and either the arbitrated feed's next first copy
(applied to the book) or a copy wholly behind it (A/B redundancy: counted, not applied),
well-formed blocks, no staleness change (lane.c lists the conditions) -- straight from the pcap
read buffer, and stops at
the first record it cannot take, which the Python pipeline (the reference) then handles as before.

This module keeps the two sides in step:

* before the pipeline handles a record itself, :meth:`FastLane.sync` folds what the lane did since
  the last sync into the Python objects (feed-quality lines and streams, the MoldUDP64 and ITCH
  decoders' stats and state, the book's message count, the pipeline's counters);
* after it, :meth:`FastLane.after` registers the record's flow with the lane when it belongs to an
  ITCH line the lane can serve, and pushes that line's and its stream's state back (the lane takes
  a line's packets only while that state says the plain case holds).

The report is the same with the lane on or off (tests/unit/test_fastlane.py replays the test feeds,
damaged A/B feeds and the corpus both ways). The lane is used when the compiled module is built,
the capture is a classic pcap of Ethernet frames or a pcapng (its Enhanced Packet Blocks of
Ethernet interfaces) and ``Pipeline.fast_lane`` and ``fused_itch`` are true; otherwise replay runs
as before. With a cross-venue view, the lane keeps the top of every book a first copy touched, as it
was right after that packet, and :meth:`FastLane.sync` hands them to the view in order.
"""
from __future__ import annotations

import collections
from typing import Dict, List, Optional

from . import _accel

ITCH = "ITCH/MoldUDP64"
_ETHERNET = 1


def _session(raw: bytes) -> str:
    return raw.rstrip(b" \x00").decode("ascii", "replace")


class FastLane:
    """The Python half of the lane for one :class:`~.pipeline.Pipeline` and one capture."""

    def __init__(self, pipe, core) -> None:
        self.pipe = pipe
        self.core = core
        self._line_of: Dict[int, int] = {}          # id(_Udp) -> line index, -1: not for the lane
        self._lines: List = []                      # line index -> _Udp
        self._stream_of: Dict[object, int] = {}     # feed-quality stream -> stream index
        self._streams: List = []                    # stream index -> feed-quality stream key
        self._flows_full = False
        # what the lane took, for the capture summary
        self.records = 0
        self.first_ts: Optional[int] = None
        self.last_ts: Optional[int] = None

    @classmethod
    def for_capture(cls, pipe, reader, from_ns: Optional[int] = None, to_ns: Optional[int] = None
                    ) -> Optional["FastLane"]:
        """A lane for replaying ``reader`` into ``pipe``, or None when it cannot serve (see the module
        docstring)."""
        from .sources.pcap import PcapngReader

        # classic pcap: one link type for the file; pcapng: the lane takes Ethernet interfaces' blocks
        if not isinstance(reader, PcapngReader) and getattr(reader, "linktype", None) != _ETHERNET:
            return None
        return cls._new(pipe, from_ns, to_ns)

    @classmethod
    def for_live(cls, pipe) -> Optional["FastLane"]:
        """A lane for the live agent's payload records (:meth:`run_live`), or None."""
        return cls._new(pipe, None, None)

    @classmethod
    def _new(cls, pipe, from_ns, to_ns) -> Optional["FastLane"]:
        native = _accel.NATIVE
        if (native is None or not getattr(pipe, "fast_lane", False) or not pipe.fused_itch
                or ITCH not in pipe.protocol_of.values()):
            return None
        return cls(pipe, native.MoldLane(pipe.feeds.stale_after_ns, from_ns, to_ns, pipe.crossvenue is not None))

    def run_live(self, buf, offsets, i: int, payloads) -> int:
        """Let the lane take the ring-buffer payload records at ``offsets[i:]`` it can (the caller
        holds the pipeline's lock); returns the index of the first it left. What it took is folded
        into the Python objects before this returns, and counted in ``payloads.records`` as
        :class:`~.sources.live.LivePayloads` would have."""
        j, taken = self.core.run_live(buf, offsets, i, payloads.snaplen)
        if taken:
            payloads.records += taken
            self.sync()
        return j

    # -- lane -> Python ----------------------------------------------------------------------------
    def sync(self) -> None:
        """Fold what the lane did since the last call into the Python objects."""
        got = self.core.take()
        if got is None:
            return
        records, first, last, lines, streams, types, quotes = got
        pipe = self.pipe
        self.records += records
        if self.first_ts is None or first < self.first_ts:
            self.first_ts = first
        if self.last_ts is None or last > self.last_ts:
            self.last_ts = last
        pipe.events += records
        if pipe.first_ts is None or first < pipe.first_ts:
            pipe.first_ts = first
        if pipe.last_ts is None or last > pipe.last_ts:
            pipe.last_ts = last
        fq = pipe.feeds.streams
        for i, packets, messages, copies, pbytes, last_seq, last_count, last_len, expected, lts, now in lines:
            st = self._lines[i]
            # Pipeline.feed
            vp = pipe.venue_packets[st.venue]
            vp[0] += packets
            vp[1] += pbytes
            # FeedQuality.on_packet, the line's half
            ln = fq[st.fq_stream].lines[st.line]
            ln.seq.packets += packets
            ln.seq.messages += messages
            ln.seq.expected = expected
            ln.live.last_ts = lts
            ln.live.now = now
            # MoldUDP64Decoder.feed_book and ItchBook.apply_buffer
            dec = st.decoder
            dec.packets += packets
            dec.stats.messages += messages
            dec.stats.bytes += pbytes
            dec.next_seq = expected
            dec.last_header = (dec.session, last_seq, last_count)
            inner = dec.inner
            inner.stats.messages += messages
            inner.stats.bytes += pbytes - 20 * packets
            inner.last_offset = last_len
            inner.last_framed = last_count
            inner.last_truncated = False
            # Pipeline._mold_book: first copies into the book, the copies' messages skipped
            st.book.messages += messages - copies
            if copies:
                pipe.skipped_copies[st.venue] = pipe.skipped_copies.get(st.venue, 0) + copies
        for i, packets, messages, duplicates, expected, lts, now in streams:
            s = fq[self._streams[i]]
            s.arb.packets += packets
            s.arb.messages += messages
            s.arb.duplicates += duplicates
            s.arb.expected = expected
            s.live.last_ts = lts
            s.live.now = now
        if types:
            c = pipe.messages.get(ITCH)
            if c is None:
                c = pipe.messages[ITCH] = collections.Counter()
            c.update(types)
        if quotes:
            self._quotes(quotes)

    def _quotes(self, quotes) -> None:
        """Pipeline._mold_book's cross-venue quotes for the first copies the lane took, in order: per
        packet, its distinct locates in the order the pipeline's set of them iterates, each with the
        top its book had right after the packet."""
        quote = self.pipe._quote
        lines = self._lines
        i, n = 0, len(quotes)
        while i < n:
            q = quotes[i]
            packet = q[1]
            j = i + 1
            while j < n and quotes[j][1] == packet:
                j += 1
            st = lines[q[0]]
            books = st.book.books
            if j == i + 1:
                order, at = (q[2],), None
            else:
                group = quotes[i:j]
                order = {g[2] for g in group}        # first-appearance order: the pipeline's set
                at = {g[2]: g for g in group}
            for loc in order:
                b = books.get(loc)
                if b is not None:
                    g = q if at is None else at[loc]
                    quote(st.venue, b.symbol, g[4], g[5:9] if g[3] else b.top())
            i = j

    # -- Python -> lane ----------------------------------------------------------------------------
    def after(self, ev) -> None:
        """The pipeline has just handled ``ev`` itself: let the lane serve its flow from now on when
        it can, with that line's state as it is now."""
        if ev.transport != "udp" or ev.venue is None:
            return
        st = self.pipe._udp.get((ev.venue, ev.dst, ev.dport))
        if st is None or st.protocol != ITCH:
            return
        i = self._line_of.get(id(st))
        if i is None:
            i = self._add_line(st) if ev.family == 4 else -1
        if i >= 0 and ev.family == 4 and not self._flows_full:
            if not self.core.add_flow(ev.src, ev.dst, ev.sport, ev.dport, i):
                self._flows_full = True     # later flows stay on the Python path
        # the packet may have moved its line's state and (through another line, IPv6 or not served
        # by the lane) the arbitrated stream's: push both
        self._push(st, i, bytes(ev.payload[:10]))

    def _add_line(self, st) -> int:
        pipe = self.pipe
        dec, book = st.decoder, st.book
        inner = getattr(dec, "inner", None)
        if (st.handler != pipe._h_mold or book is None or getattr(book, "_core", None) is None
                or getattr(inner, "_core", None) is None or not hasattr(dec, "next_seq")):
            self._line_of[id(st)] = -1
            return -1
        s = self._stream_of.get(st.fq_stream)
        if s is None:
            s = self._stream_of[st.fq_stream] = self.core.add_stream()
            self._streams.append(st.fq_stream)
        i = self.core.add_line(s, book._core, inner._core, book._book_index, book._apply_other)
        self._line_of[id(st)] = i
        self._lines.append(st)
        return i

    def _push(self, st, i: int, raw: bytes) -> None:
        """Hand line ``i`` (-1: none) and its stream their Python state; ``raw``: the session bytes
        of the packet just handled."""
        s = self._stream_of.get(st.fq_stream)
        if s is None:
            return                          # no line of this stream is served by the lane
        fqs = self.pipe.feeds.streams.get(st.fq_stream)
        if fqs is None:
            self.core.set_stream(s, False, 0, 0, 0, 0)
            return
        arb, s_live = fqs.arb, fqs.live
        # holes are disjoint and sorted: a copy above the last one fills none
        hole_end = arb.holes[-1][1] if arb.holes else 0
        s_ok = (arb.expected is not None and not arb.ended and 0 <= arb.expected < 1 << 64
                and 0 <= hole_end < 1 << 64
                and s_live.last_ts is not None and s_live.stale_since is None and s_live.now is not None)
        self.core.set_stream(s, s_ok, hole_end if s_ok else 0, arb.expected if s_ok else 0,
                             s_live.last_ts if s_ok else 0, s_live.now if s_ok else 0)
        if i < 0:
            return
        ln = fqs.lines.get(st.line)
        if ln is None:
            self.core.set_line(i, False, b"", 0, 0, 0)
            return
        seq, live, dec = ln.seq, ln.live, st.decoder
        session = _session(raw)
        ok = (len(raw) == 10 and seq.expected is not None and dec.next_seq == seq.expected
              and seq.epoch == fqs.arb_epoch and not seq.ended
              and seq.session == session and dec.session == session and arb.session == session
              and live.last_ts is not None and live.stale_since is None and live.now is not None
              and 0 <= seq.expected < 1 << 64)
        self.core.set_line(i, ok, raw, seq.expected if ok else 0, live.last_ts if ok else 0,
                           live.now if ok else 0)
