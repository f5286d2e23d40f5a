"""Market-data feed quality per stream, per line and after A/B arbitration.

A *stream* is one sequenced feed: venue + session/channel/unit (any hashable; a tuple is shown as
``"a/b"``). A stream may arrive on several *lines* (A and B multicast copies); each line is tracked
on its own, and an *arbitrated* view tracks the union: a message counts as received when the first
copy arrives on any line, so a gap on A that B fills is not loss.

Inputs (plain calls; the pipeline feeds them from the kernel or from decoded packets)::

    on_packet(stream, line, ts_ns, seq, count, exchange_ts_ns=None, session=None)
        MoldUDP64: seq of the first message and the message count; a heartbeat has count 0 and
        seq = the next expected sequence. MDP3: the packet MsgSeqNum with count=1. PITCH: the unit
        sequence and HdrCount. ``session`` (MoldUDP64 session, ...) marks session changes.
    on_end_of_session(stream, line, ts_ns, seq=None)
    on_reset(stream, line, ts_ns)     an explicit sequence reset (MDP3 ChannelReset ...)
    tick(now_ns)                      evaluates staleness (call it every interval)

Counters, per line and arbitrated (messages are sequence numbers)
----------------------------------------------------------------
``packets``, ``heartbeats``, ``messages`` (new messages delivered: first copies only),
``gaps`` (gap events: a packet started beyond the next expected sequence), ``missing`` (messages
skipped by gaps and not delivered since: late arrivals give them back), ``gaps_unfilled`` (gap events
with at least one message still missing), ``out_of_order`` (messages that arrived after a later one,
each filling a hole), ``duplicates`` (messages delivered again on the same line), ``resets``
(the sequence restarted: ``on_reset``, or seq <= 1 while the next expected is more than 16 ahead)
and ``session_changes`` (the ``session`` argument changed).
For the arbitrated view ``duplicates`` is the sum over lines (a copy from the other line is the
normal A/B redundancy, reported as ``redundant``) and the other figures are computed on the union.
Holes are remembered for ``hole_window`` sequence numbers (and at most ``max_holes`` holes); a hole
older than that stays missing for good.

Staleness: a line (or the stream) is stale when no packet or heartbeat arrived for ``stale_after_ns``.
An episode runs from the last packet before the silence to the first packet after it (``end_ns`` is
None while it lasts); after an end of session silence is expected and is not stale.

Latency: ``ts_ns - exchange_ts_ns`` (capture/kernel clock minus the exchange clock, meaningful only
on a PTP-disciplined host) per line, and for the arbitrated view the copy that won.

Quality score (0-100, from the arbitrated figures)
--------------------------------------------------
With ``expected = messages + missing`` and ratios over ``max(expected, 1)``::

    loss   = min(50, 50 * 1000 * missing / expected)        0.1 % of messages lost costs all 50
    gaps   = min(15, gaps_unfilled)                          1 point per unrecovered gap event
    order  = min(10, 10 * 100 * out_of_order / expected)     1 % late messages costs all 10
    dups   = min(5,  5 * 100 * duplicates / expected)        1 % duplicates costs all 5
    stale  = min(20, 20 * 10 * stale_ns / observed_ns)       10 % of the time stale costs all 20,
             and at least 10 while the stream is stale now
    score  = round(max(0, 100 - loss - gaps - order - dups - stale), 1)

``observed_ns`` is the time from the first packet to the last packet (or the last ``tick``).
A stream that has seen no packet has score None.
"""
from __future__ import annotations

from typing import Dict, Hashable, List, Optional

from .percentiles import LatencyRecorder

DEFAULT_STALE_AFTER_NS = 5_000_000_000     # 5 s without a packet or heartbeat
MAX_EPISODES = 32


class SeqTracker:
    """Sequence state of one line (or of the arbitrated union)."""

    __slots__ = ("expected", "session", "packets", "heartbeats", "messages", "gaps", "missing",
                 "out_of_order", "duplicates", "resets", "session_changes", "ended", "holes",
                 "hole_left", "_event", "expired", "hole_window", "max_holes", "gaps_filled", "epoch",
                 "reset_drop")

    def __init__(self, hole_window: int, max_holes: int, reset_drop: Optional[int] = 16) -> None:
        self.expected: Optional[int] = None
        self.epoch = 0                        # bumped at every reset / session change
        self.reset_drop = reset_drop          # None: never infer a reset from the sequence
        self.session: Optional[str] = None
        self.packets = 0
        self.heartbeats = 0
        self.messages = 0
        self.gaps = 0
        self.gaps_filled = 0                  # gap events whose every message arrived later
        self.missing = 0
        self.out_of_order = 0
        self.duplicates = 0
        self.resets = 0
        self.session_changes = 0
        self.ended = False
        self.holes: List[list] = []           # [start, end (inclusive), event id], sorted by start
        self.hole_left: Dict[int, int] = {}   # event id -> messages of that gap still missing
        self._event = 0
        self.expired = 0                      # holes forgotten (their messages stay missing)
        self.hole_window = hole_window
        self.max_holes = max_holes

    @property
    def gaps_unfilled(self) -> int:
        return self.gaps - self.gaps_filled

    def _is_reset(self, seq: int, exp: int) -> bool:
        return self.reset_drop is not None and seq <= 1 and exp - seq > self.reset_drop

    def restart(self, kind: str) -> None:
        """An explicit sequence reset ("reset") or session change ("session")."""
        if kind == "session":
            self.session_changes += 1
        else:
            self.resets += 1
        self._restart()

    def _restart(self) -> None:
        self.epoch += 1
        self.expected = None
        self.holes = []
        self.hole_left = {}   # gaps of the old session stay unfilled, their messages missing

    def observe(self, seq: int, count: int, session: Optional[str]) -> int:
        """Account for a packet; returns how many messages were new (first copies)."""
        self.packets += 1
        if session is not None and session != self.session:
            if self.session is not None:
                self.session_changes += 1
                self._restart()
            self.session = session
        exp = self.expected
        if count <= 0:
            self.heartbeats += 1
            if exp is None:
                self.expected = seq
            elif seq > exp:
                self._gap(exp, seq - 1)
                self.expected = seq
            elif self._is_reset(seq, exp):
                self.resets += 1
                self._restart()
                self.expected = seq
            self.ended = False
            return 0
        self.ended = False
        last = seq + count - 1
        if exp is None:
            self.expected = last + 1
            self.messages += count
            return count
        if seq == exp:
            self.expected = last + 1
            self.messages += count
            return count
        if seq > exp:
            self._gap(exp, seq - 1)
            self.expected = last + 1
            self.messages += count
            return count
        if self._is_reset(seq, exp):
            self.resets += 1
            self._restart()
            self.expected = last + 1
            self.messages += count
            return count
        # seq < exp: late fill of holes and/or duplicates
        new = 0
        if last >= exp:                       # straddles the expected sequence
            new = last - exp + 1
            self.messages += new
            self.expected = last + 1
            last = exp - 1
        filled = self._fill(seq, last) if self.holes else 0
        self.out_of_order += filled
        self.messages += filled
        self.duplicates += (last - seq + 1) - filled
        return new + filled

    def _gap(self, start: int, end: int) -> None:
        n = end - start + 1
        self.gaps += 1
        self.missing += n
        self._event += 1
        ev = self._event
        self.holes.append([start, end, ev])
        self.hole_left[ev] = n
        holes = self.holes
        # forget holes that are too old or too many (their messages remain missing)
        floor = end - self.hole_window
        while holes and (holes[0][1] < floor or len(holes) > self.max_holes):
            h = holes.pop(0)
            self.expired += 1
            if not any(x[2] == h[2] for x in holes):
                self.hole_left.pop(h[2], None)   # final: this gap event stays unfilled

    def _fill(self, a: int, b: int) -> int:
        """Remove [a, b] from the holes; returns how many missing messages it delivered."""
        filled = 0
        holes = self.holes
        out: List[list] = []
        for h in holes:
            s, e, ev = h
            if e < a or s > b:
                out.append(h)
                continue
            lo = s if s > a else a
            hi = e if e < b else b
            k = hi - lo + 1
            filled += k
            left = self.hole_left.get(ev, 0) - k
            if left <= 0:
                self.hole_left.pop(ev, None)
                self.gaps_filled += 1
            else:
                self.hole_left[ev] = left
            if s < lo:
                out.append([s, lo - 1, ev])
            if hi < e:
                out.append([hi + 1, e, ev])
        self.holes = out
        self.missing -= filled
        return filled

    def figures(self) -> dict:
        return {"packets": self.packets, "heartbeats": self.heartbeats, "messages": self.messages,
                "gaps": self.gaps, "missing": self.missing, "gaps_unfilled": self.gaps_unfilled,
                "out_of_order": self.out_of_order, "duplicates": self.duplicates,
                "resets": self.resets, "session_changes": self.session_changes,
                "next_expected": self.expected, "session": self.session, "ended": self.ended,
                "holes_expired": self.expired}


class _Liveness:
    """Stale-stream detection for one line or one stream."""

    __slots__ = ("first_ts", "last_ts", "now", "stale_since", "episodes", "stale_episodes", "stale_ns")

    def __init__(self) -> None:
        self.first_ts: Optional[int] = None
        self.last_ts: Optional[int] = None
        self.now: Optional[int] = None
        self.stale_since: Optional[int] = None
        self.episodes: List[dict] = []
        self.stale_episodes = 0
        self.stale_ns = 0

    def packet(self, ts: int, stale_after: int, ended: bool) -> None:
        last = self.last_ts
        if last is None:
            self.first_ts = ts
        elif self.stale_since is not None:
            self._close(ts)
        elif not ended and ts - last > stale_after:
            self.stale_since = last
            self.stale_episodes += 1
            self._close(ts)
        if last is None or ts > last:
            self.last_ts = ts
        if self.now is None or ts > self.now:
            self.now = ts

    def _close(self, ts: int) -> None:
        start = self.stale_since
        self.stale_since = None
        dur = max(0, ts - start)
        self.stale_ns += dur
        self.episodes.append({"start_ns": start, "end_ns": ts, "duration_ns": dur})
        if len(self.episodes) > MAX_EPISODES:
            del self.episodes[0]

    def tick(self, now: int, stale_after: int, ended: bool) -> None:
        if self.now is None or now > self.now:
            self.now = now
        if self.last_ts is None or ended or self.stale_since is not None:
            return
        if now - self.last_ts > stale_after:
            self.stale_since = self.last_ts
            self.stale_episodes += 1

    def stale_total(self) -> int:
        cur = 0
        if self.stale_since is not None and self.now is not None:
            cur = max(0, self.now - self.stale_since)
        return self.stale_ns + cur

    def figures(self) -> dict:
        eps = list(self.episodes)
        if self.stale_since is not None:
            eps.append({"start_ns": self.stale_since, "end_ns": None,
                        "duration_ns": max(0, (self.now or self.stale_since) - self.stale_since)})
        return {"stale": self.stale_since is not None, "stale_since_ns": self.stale_since,
                "stale_episodes": self.stale_episodes, "stale_ns": self.stale_total(),
                "first_ts_ns": self.first_ts, "last_ts_ns": self.last_ts, "episodes": eps}


class _Line:
    __slots__ = ("seq", "live", "latency")

    def __init__(self, hole_window: int, max_holes: int, clock: str) -> None:
        self.seq = SeqTracker(hole_window, max_holes)
        self.live = _Liveness()
        self.latency = LatencyRecorder(clock)


class _Stream:
    __slots__ = ("lines", "arb", "live", "latency", "arb_epoch")

    def __init__(self, hole_window: int, max_holes: int, clock: str) -> None:
        self.lines: Dict[Hashable, _Line] = {}
        self.arb = SeqTracker(hole_window, max_holes, reset_drop=None)
        self.arb_epoch = 0
        self.live = _Liveness()
        self.latency = LatencyRecorder(clock)


def stream_key(stream: Hashable) -> str:
    if isinstance(stream, tuple):
        return "/".join(str(s) for s in stream)
    return str(stream)


def quality_score(fig: dict, stale_ns: int, observed_ns: int, stale_now: bool) -> Optional[float]:
    """The documented 0-100 score (module docstring) from arbitrated figures."""
    if fig["packets"] == 0:
        return None
    expected = max(fig["messages"] + fig["missing"], 1)
    loss = min(50.0, 50.0 * 1000.0 * fig["missing"] / expected)
    gaps = min(15.0, float(fig["gaps_unfilled"]))
    order = min(10.0, 10.0 * 100.0 * fig["out_of_order"] / expected)
    dups = min(5.0, 5.0 * 100.0 * fig["duplicates"] / expected)
    stale = min(20.0, 20.0 * 10.0 * stale_ns / observed_ns) if observed_ns > 0 else 0.0
    if stale_now:
        stale = max(stale, 10.0)
    return round(max(0.0, 100.0 - loss - gaps - order - dups - stale), 1)


class FeedQuality:
    """Feed quality for every stream (see the module docstring)."""

    def __init__(self, stale_after_ns: int = DEFAULT_STALE_AFTER_NS, clock: str = "unknown",
                 hole_window: int = 1 << 20, max_holes: int = 1024) -> None:
        self.stale_after_ns = stale_after_ns
        self.clock = clock
        self.hole_window = hole_window
        self.max_holes = max_holes
        self.streams: Dict[Hashable, _Stream] = {}
        self.bad_input = 0

    def _get(self, stream: Hashable, line: Hashable):
        st = self.streams.get(stream)
        if st is None:
            st = self.streams[stream] = _Stream(self.hole_window, self.max_holes, self.clock)
        ln = st.lines.get(line)
        if ln is None:
            ln = st.lines[line] = _Line(self.hole_window, self.max_holes, self.clock)
        return st, ln

    def on_packet(self, stream: Hashable, line: Hashable, ts_ns: int, seq: int, count: int,
                  exchange_ts_ns: Optional[int] = None, session: Optional[str] = None) -> None:
        if seq is None or count is None or seq < 0 or count < 0:
            self.bad_input += 1
            return
        st, ln = self._get(stream, line)
        stale_after = self.stale_after_ns
        ln.live.packet(ts_ns, stale_after, ln.seq.ended)
        st.live.packet(ts_ns, stale_after, st.arb.ended)
        lt = ln.seq
        resets, changes = lt.resets, lt.session_changes
        lt.observe(seq, count, session)
        new = self._arbitrate(st, lt, seq, count, resets, changes)
        if exchange_ts_ns is not None and count > 0:
            lat = ts_ns - exchange_ts_ns
            ln.latency.record(lat)
            if new:
                st.latency.record(lat)

    @staticmethod
    def _arbitrate(st: _Stream, lt: SeqTracker, seq: int, count: int, resets: int, changes: int) -> int:
        """Feed the arbitrated view. Resets and session changes are decided per line: the first
        line to restart restarts the union; packets of a line still in an older epoch are copies of
        what the union already saw (or lost) and are skipped."""
        arb = st.arb
        if lt.epoch > st.arb_epoch:
            st.arb_epoch = lt.epoch
            if lt.session_changes > changes:
                arb.session_changes += 1
            else:
                arb.resets += 1
            arb._restart()
            arb.session = lt.session
        elif lt.epoch < st.arb_epoch:
            arb.packets += 1
            if count > 0:
                arb.duplicates += count
            return 0
        arb.session = lt.session
        return arb.observe(seq, count, None)

    def on_reset(self, stream: Hashable, line: Hashable, ts_ns: int) -> None:
        """An explicit sequence reset on a line (e.g. MDP3 ChannelReset, a MoldUDP64 new day)."""
        st, ln = self._get(stream, line)
        ln.seq.restart("reset")
        if ln.seq.epoch > st.arb_epoch:
            st.arb_epoch = ln.seq.epoch
            st.arb.restart("reset")

    def on_end_of_session(self, stream: Hashable, line: Hashable, ts_ns: int, seq: Optional[int] = None) -> None:
        st, ln = self._get(stream, line)
        ln.live.packet(ts_ns, self.stale_after_ns, ln.seq.ended)
        st.live.packet(ts_ns, self.stale_after_ns, st.arb.ended)
        for tr in (ln.seq, st.arb):
            if seq is not None and tr.expected is not None and seq > tr.expected:
                tr._gap(tr.expected, seq - 1)
                tr.expected = seq
            tr.ended = True

    def tick(self, now_ns: int) -> None:
        sa = self.stale_after_ns
        for st in self.streams.values():
            st.live.tick(now_ns, sa, st.arb.ended)
            for ln in st.lines.values():
                ln.live.tick(now_ns, sa, ln.seq.ended)

    # -- reading ---------------------------------------------------------------------------------
    def stream_figures(self, stream: Hashable) -> Optional[dict]:
        st = self.streams.get(stream)
        return None if st is None else self._stream_snapshot(st)

    def _stream_snapshot(self, st: _Stream) -> dict:
        lines = {}
        dups = 0
        for name, ln in st.lines.items():
            f = ln.seq.figures()
            f.update(ln.live.figures())
            f["latency_us"] = ln.latency.snapshot()
            lines[str(name)] = f
            dups += ln.seq.duplicates
        arb = st.arb.figures()
        arb["redundant"] = arb["duplicates"] - dups   # copies of the other line(s): normal A/B
        arb["duplicates"] = dups
        arb.update(st.live.figures())
        arb["latency_us"] = st.latency.snapshot()
        live = st.live
        observed = 0
        if live.first_ts is not None and live.now is not None:
            observed = live.now - live.first_ts
        score = quality_score(arb, live.stale_total(), observed, live.stale_since is not None)
        return {"lines": lines, "arbitrated": arb, "score": score,
                "messages": arb["messages"], "gaps": arb["gaps"], "missing": arb["missing"],
                "duplicates": dups, "out_of_order": arb["out_of_order"]}

    def snapshot(self) -> dict:
        return {"clock": self.clock, "stale_after_ns": self.stale_after_ns, "bad_input": self.bad_input,
                "streams": {stream_key(k): self._stream_snapshot(st) for k, st in self.streams.items()}}
