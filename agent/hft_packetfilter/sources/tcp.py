"""TCP reassembly: per flow and direction, payload bytes delivered in order, exactly once.

Feed every TCP :class:`~.events.Event` (both directions) to :meth:`TcpReassembler.feed`. For each
direction of each flow the reassembler asks ``factory(stream)`` once for a *consumer* and then calls

* ``consumer.on_data(data, offset, ts_ns)`` with the next in-order bytes (``offset`` = position of
  ``data[0]`` in the direction's byte stream; offsets grow without wrapping);
* ``consumer.on_gap(offset, size, reason)`` when ``size`` bytes at ``offset`` are declared lost: the
  next ``on_data`` starts at ``offset + size``. Decoders must resynchronise there;
* ``consumer.on_end(reason)`` once, when the direction ends (``"fin"``, ``"rst"``, ``"idle"``,
  ``"evicted"``, ``"reused"`` for a new SYN on the same ports, ``"flush"``).

:class:`StreamConsumer` is a do-nothing base; :class:`Collector` keeps everything (for tests/tools).

Rules
-----
* Offsets: a SYN with sequence ``isn`` puts offset 0 at ``isn + 1``. A capture that starts
  mid-stream (no SYN seen) puts offset 0 at the first sequence number seen *with payload* in that
  direction; bytes before it are simply not part of the stream (not a gap).
* Sequence numbers are unwrapped relative to the next expected offset (RFC 1982 style, a window of
  +-2^31), so streams longer than 4 GiB and ISNs near 2^32 work.
* Retransmissions and overlaps: bytes below the next expected offset are never delivered again; they
  are counted in ``retrans_bytes``. Buffered out-of-order segments that overlap are trimmed when
  drained, so overlapping bytes are delivered once (first copy wins, as most stacks do).
* Out of order: segments beyond the next expected offset wait in a per-direction buffer bounded by
  ``max_buffer`` bytes. A hole is declared a gap -- explicitly, with its exact size, never guessed
  -- when one of these proves or forces it:
    - ``"acked"``: the peer acknowledged bytes we never saw: they reached the receiver but not the
      capture, and TCP will never send them again;
    - ``"overflow"``: the buffer would exceed ``max_buffer``;
    - ``"timeout"``: the hole has been open ``gap_timeout_ns`` of capture time (0 disables);
    - ``"fin"``/``"rst"``/``"idle"``/``"evicted"``/``"flush"``: the direction ends with data still
      waiting behind the hole.
  The stream then resumes right after the gap.
* SYN: starts a direction (a new SYN with another ISN on a known direction ends the old one with
  ``"reused"``); SYN retransmissions are ignored. FIN: the direction ends once every byte before the
  FIN is delivered (or declared lost). RST: both directions end at once.
* Flows (both directions) are evicted after ``idle_timeout_ns`` without a segment (capture time) and,
  least recently used first, when more than ``max_flows`` are open. Ended flows stay (cheaply) until
  idle so late retransmissions are recognised as such and not as a new stream.

Counters are in :attr:`TcpReassembler.stats` (a :class:`TcpStats`).
"""
from __future__ import annotations

import collections
from typing import Callable, Dict, List, Optional, Tuple

from .events import Event

__all__ = ["TcpReassembler", "TcpStats", "StreamConsumer", "Collector", "Stream",
           "FIN", "SYN", "RST", "ACK"]

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_M32 = 0xFFFFFFFF
_HALF = 1 << 31


class TcpStats:
    """Reassembly counters (all monotonically increasing)."""

    __slots__ = ("segments", "bytes", "retrans_bytes", "retrans_segments", "out_of_order", "gaps",
                 "gap_bytes", "overflows", "evictions", "flows", "closed")

    def __init__(self) -> None:
        self.segments = 0          # TCP segments fed
        self.bytes = 0             # payload bytes delivered in order
        self.retrans_bytes = 0     # payload bytes seen again (full or partial retransmission/overlap)
        self.retrans_segments = 0  # segments that carried nothing new
        self.out_of_order = 0      # segments that arrived beyond the next expected byte
        self.gaps = 0              # holes declared lost
        self.gap_bytes = 0         # their total size
        self.overflows = 0         # times the out-of-order buffer was full
        self.evictions = 0         # flows evicted (idle or over max_flows)
        self.flows = 0             # flows created
        self.closed = 0            # directions ended by FIN or RST

    def as_dict(self) -> Dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        return "TcpStats(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) + ")"


class StreamConsumer:
    """What a direction's consumer implements; this base ignores everything."""

    def on_data(self, data: bytes, offset: int, ts_ns: int) -> None:
        pass

    def on_gap(self, offset: int, size: int, reason: str) -> None:
        pass

    def on_end(self, reason: str) -> None:
        pass


class Collector(StreamConsumer):
    """Keeps the delivered bytes, gaps and end reason of one direction."""

    def __init__(self, stream: "Stream" = None) -> None:
        self.stream = stream
        self.chunks: List[Tuple[int, bytes]] = []
        self.gaps: List[Tuple[int, int, str]] = []
        self.ended: Optional[str] = None

    def on_data(self, data, offset, ts_ns):
        self.chunks.append((offset, bytes(data)))

    def on_gap(self, offset, size, reason):
        self.gaps.append((offset, size, reason))

    def on_end(self, reason):
        self.ended = reason

    @property
    def data(self) -> bytes:
        return b"".join(c for _, c in self.chunks)


class Stream:
    """One direction of a TCP flow (src:sport -> dst:dport)."""

    __slots__ = ("key", "flow", "consumer", "base", "next", "pending", "pending_bytes", "hole_since",
                 "acked", "fin", "ended", "isn")

    def __init__(self, key: tuple, flow: "_Flow") -> None:
        self.key = key              # (src, dst, sport, dport), packed addresses
        self.flow = flow
        self.consumer = None
        self.base: Optional[int] = None   # sequence number of offset 0 (None: not started)
        self.isn: Optional[int] = None    # SYN's sequence number when seen
        self.next = 0                     # next expected offset
        self.pending: Dict[int, Tuple[bytes, int]] = {}   # offset -> (data, ts_ns)
        self.pending_bytes = 0
        self.hole_since = 0               # ts_ns when the current hole was first seen
        self.acked = -1                   # highest offset the peer acknowledged (-1: none)
        self.fin: Optional[int] = None    # offset of the FIN
        self.ended: Optional[str] = None

    @property
    def src(self):
        return self.key[0]

    @property
    def dst(self):
        return self.key[1]

    @property
    def sport(self) -> int:
        return self.key[2]

    @property
    def dport(self) -> int:
        return self.key[3]

    def offset_of(self, seq: int) -> int:
        """The unwrapped stream offset of sequence number ``seq`` (the stream must have started)."""
        rel = (seq - self.base) & _M32
        return self.next + (((rel - self.next) + _HALF) & _M32) - _HALF


class _Flow:
    __slots__ = ("key", "a", "b", "last_ts")

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.a: Stream = None
        self.b: Stream = None
        self.last_ts = 0


class TcpReassembler:
    """Reassembles TCP byte streams per direction; see the module docstring for the rules."""

    def __init__(self, factory: Optional[Callable[[Stream], object]] = None, *,
                 max_buffer: int = 1 << 20, max_flows: int = 65536,
                 idle_timeout_ns: int = 300 * 10**9, gap_timeout_ns: int = 10 * 10**9) -> None:
        self.factory = factory or (lambda stream: StreamConsumer())
        self.max_buffer = max_buffer
        self.max_flows = max_flows
        self.idle_timeout_ns = idle_timeout_ns
        self.gap_timeout_ns = gap_timeout_ns
        self.stats = TcpStats()
        self._streams: Dict[tuple, Stream] = {}
        self._flows: "collections.OrderedDict[tuple, _Flow]" = collections.OrderedDict()
        self._next_sweep = 0

    # -- public ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._flows)

    def streams(self) -> List[Stream]:
        return list(self._streams.values())

    def stream(self, src, dst, sport: int, dport: int) -> Optional[Stream]:
        return self._streams.get((src, dst, sport, dport))

    def feed(self, ev: Event) -> None:
        """Take one TCP segment (an Event with ``transport == "tcp"``); sets ``ev.stream_offset``."""
        self.segment(ev.src, ev.dst, ev.sport, ev.dport, ev.tcp_seq, ev.tcp_ack, ev.tcp_flags,
                     ev.payload, ev.ts_ns, ev)

    def segment(self, src, dst, sport: int, dport: int, seq: int, ack: int, flags: int,
                payload: bytes, ts_ns: int = 0, ev: Optional[Event] = None) -> None:
        st = self.stats
        st.segments += 1
        key = (src, dst, sport, dport)
        s = self._streams.get(key)
        if s is None:
            s = self._new_flow(key, ts_ns)
        flow = s.flow
        flow.last_ts = ts_ns
        self._flows.move_to_end(flow.key)
        peer = flow.b if s is flow.a else flow.a

        if flags & RST:
            if payload and s.base is not None and not s.ended:
                self._data(s, seq, payload, ts_ns, ev)
            for x in (s, peer):
                if x.base is not None and not x.ended:
                    self._end(x, "rst")
                    st.closed += 1
            self._sweep(ts_ns)
            return

        if flags & SYN:
            if s.base is not None and s.isn != seq:
                # a new connection on the same four-tuple: end both old directions
                for x in (s, peer):
                    if x.base is not None and not x.ended:
                        self._end(x, "reused")
                    self._reset(x)
            if s.isn is None:
                s.isn = seq
                s.base = (seq + 1) & _M32
                s.next = 0
            seq = (seq + 1) & _M32          # payload of a SYN (TCP Fast Open) follows the SYN

        if s.base is None and payload:      # mid-stream start: offset 0 is the first byte seen
            s.base = seq
            s.next = 0
        if s.base is not None:
            if payload:
                if s.ended:
                    st.retrans_bytes += len(payload)
                    st.retrans_segments += 1
                    if ev is not None:
                        ev.stream_offset = s.offset_of(seq)
                else:
                    self._data(s, seq, payload, ts_ns, ev)
            if flags & FIN and s.fin is None and not s.ended:
                s.fin = s.offset_of((seq + len(payload)) & _M32)
                self._maybe_fin(s)
        if flags & ACK and peer.base is not None and not peer.ended:
            off = peer.offset_of(ack)
            if peer.fin is not None and off == peer.fin + 1:
                off = peer.fin                # the ACK of the FIN itself
            if off > peer.acked:
                peer.acked = off
                # Only a hole with something after it (buffered data or the FIN) is declared here;
                # a hole at the very end waits for the next data (which then proves its size).
                if off > peer.next and (peer.pending or peer.fin is not None):
                    self._acked_gap(peer, ts_ns)
        if self.gap_timeout_ns and s.pending and ts_ns - s.hole_since >= self.gap_timeout_ns:
            self._declare_gap(s, "timeout", ts_ns)
        if ts_ns >= self._next_sweep:
            self._sweep(ts_ns)

    def flush(self, reason: str = "flush") -> None:
        """End every direction (end of capture): waiting data behind holes is delivered after
        explicit gaps, then ``on_end(reason)``. The flow table is emptied."""
        for flow in list(self._flows.values()):
            for x in (flow.a, flow.b):
                if x.base is not None and not x.ended:
                    self._end(x, reason)
        self._flows.clear()
        self._streams.clear()

    # -- internals -------------------------------------------------------------------------------
    def _new_flow(self, key: tuple, ts_ns: int) -> Stream:
        if len(self._flows) >= self.max_flows:
            _, old = self._flows.popitem(last=False)
            self._evict(old, "evicted")
        src, dst, sport, dport = key
        rkey = (dst, src, dport, sport)
        fkey = key if (src, sport) <= (dst, dport) else rkey
        flow = _Flow(fkey)
        flow.a = Stream(key, flow)
        flow.b = Stream(rkey, flow)
        flow.last_ts = ts_ns
        self._flows[fkey] = flow
        self._streams[key] = flow.a
        self._streams[rkey] = flow.b
        self.stats.flows += 1
        return flow.a

    def _evict(self, flow: _Flow, reason: str) -> None:
        self.stats.evictions += 1
        for x in (flow.a, flow.b):
            if x.base is not None and not x.ended:
                self._end(x, reason)
            self._streams.pop(x.key, None)

    def _sweep(self, now: int) -> None:
        """Evict flows idle for idle_timeout_ns (LRU order: stop at the first recent one)."""
        limit = now - self.idle_timeout_ns
        flows = self._flows
        while flows:
            fkey = next(iter(flows))
            flow = flows[fkey]
            if flow.last_ts > limit:
                break
            del flows[fkey]
            self._evict(flow, "idle")
        self._next_sweep = now + max(self.idle_timeout_ns // 8, 1)

    def _consumer(self, s: Stream):
        c = s.consumer
        if c is None:
            c = s.consumer = self.factory(s)
        return c

    def _reset(self, s: Stream) -> None:
        s.consumer = None
        s.base = s.isn = s.fin = s.ended = None
        s.next = 0
        s.pending = {}
        s.pending_bytes = 0
        s.acked = -1

    def _data(self, s: Stream, seq: int, data: bytes, ts_ns: int, ev: Optional[Event]) -> None:
        st = self.stats
        off = s.offset_of(seq)
        if ev is not None:
            ev.stream_offset = off
        nxt = s.next
        if off == nxt:                                   # the common case: in order
            s.next = off + len(data)
            st.bytes += len(data)
            self._consumer(s).on_data(data, off, ts_ns)
            if s.pending:
                self._drain(s)
            if s.fin is not None:
                self._maybe_fin(s)
            return
        end = off + len(data)
        if end <= nxt:                                   # nothing new
            st.retrans_bytes += len(data)
            st.retrans_segments += 1
            return
        if off < nxt:                                    # partly old: trim the front
            st.retrans_bytes += nxt - off
            data = data[nxt - off:]
            off = nxt
            s.next = end
            st.bytes += len(data)
            self._consumer(s).on_data(data, off, ts_ns)
            if s.pending:
                self._drain(s)
            if s.fin is not None:
                self._maybe_fin(s)
            return
        # beyond the next expected byte: buffer it
        st.out_of_order += 1
        if s.acked > nxt:                                # the peer already has the hole's bytes
            self._acked_gap(s, ts_ns, off)
            if off <= s.next:
                self._data(s, seq, data, ts_ns, None)
                return
        old = s.pending.get(off)
        if old is not None:
            if len(old[0]) >= len(data):
                st.retrans_bytes += len(data)
                st.retrans_segments += 1
                return
            st.retrans_bytes += len(old[0])
            s.pending_bytes -= len(old[0])
        if not s.pending:
            s.hole_since = ts_ns
        while s.pending and s.pending_bytes + len(data) > self.max_buffer:
            st.overflows += 1
            self._declare_gap(s, "overflow", ts_ns)
            if off <= s.next:                            # the new segment now fits in order
                if off == s.next or off + len(data) > s.next:
                    self._data(s, (s.base + off) & _M32, data, ts_ns, None)
                else:
                    st.retrans_bytes += len(data)
                return
        if len(data) > self.max_buffer:                  # cannot ever be buffered: skip to it
            st.overflows += 1
            self._gap(s, off - s.next, "overflow")
            self._data(s, (s.base + off) & _M32, data, ts_ns, None)
            return
        s.pending[off] = (data, ts_ns)
        s.pending_bytes += len(data)

    def _drain(self, s: Stream) -> None:
        """Deliver buffered segments that have become contiguous (trimming overlaps)."""
        st = self.stats
        pending = s.pending
        consumer = self._consumer(s)
        for off in sorted(pending):
            if off > s.next:
                break
            data, ts = pending.pop(off)
            s.pending_bytes -= len(data)
            nxt = s.next
            end = off + len(data)
            if end <= nxt:
                st.retrans_bytes += len(data)
                continue
            if off < nxt:
                st.retrans_bytes += nxt - off
                data = data[nxt - off:]
                off = nxt
            s.next = end
            st.bytes += len(data)
            consumer.on_data(data, off, ts)
        if pending:
            s.hole_since = min(ts for _, ts in pending.values())

    def _gap(self, s: Stream, size: int, reason: str) -> None:
        if size <= 0:
            return
        st = self.stats
        st.gaps += 1
        st.gap_bytes += size
        self._consumer(s).on_gap(s.next, size, reason)
        s.next += size

    def _declare_gap(self, s: Stream, reason: str, ts_ns: int) -> None:
        """Declare the hole before the first buffered segment lost and deliver what follows."""
        if not s.pending:
            return
        first = min(s.pending)
        self._gap(s, first - s.next, reason)
        self._drain(s)
        if s.fin is not None:
            self._maybe_fin(s)

    def _acked_gap(self, s: Stream, ts_ns: int, arriving: Optional[int] = None) -> None:
        """The peer acknowledged up to ``s.acked`` > ``s.next``: bytes below it that we never saw
        reached the receiver but not the capture, so they are lost to us. Each hole below the
        acknowledged offset is declared, up to the next byte we do have (a buffered segment, the
        one ``arriving`` at that offset, or the FIN)."""
        while s.acked > s.next and not s.ended:
            limit = s.acked
            if s.fin is not None:
                limit = min(limit, s.fin)
            if s.pending:
                limit = min(limit, min(s.pending))
            if arriving is not None:
                limit = min(limit, arriving)
            if limit <= s.next:
                break
            self._gap(s, limit - s.next, "acked")
            if s.pending:
                self._drain(s)
            if s.fin is not None:
                self._maybe_fin(s)

    def _maybe_fin(self, s: Stream) -> None:
        if s.fin is not None and s.next >= s.fin and not s.ended:
            self._end(s, "fin", flush=False)
            self.stats.closed += 1

    def _end(self, s: Stream, reason: str, flush: bool = True) -> None:
        if flush:
            while s.pending:
                self._declare_gap(s, reason, 0)
            if s.ended:          # _declare_gap may have reached the FIN
                return
        s.ended = reason
        s.pending = {}
        s.pending_bytes = 0
        self._consumer(s).on_end(reason)
