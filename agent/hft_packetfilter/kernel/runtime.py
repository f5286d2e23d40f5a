"""What a running agent does for its probe besides reading counters: drain the ring buffer in
batches, sweep RTT stamps that will never be acked exactly, keep the clock offset current, and
count every loss where status can see it (hftpf_agent_stats)."""
from __future__ import annotations

import collections
import os
import struct
import time
from typing import Callable, Deque, Dict, Optional

from .. import abi
from . import bpfsys
from .probemaps import ProbeMaps
from .ringbuf import RingReader

_HDR = struct.Struct("=HHIQ")  # struct hftpf_event_hdr
RTT_STALE_NS = 2_000_000_000    # an egress stamp unacked for 2 s was covered by a later cumulative ACK


class ProbeRuntime:
    """Drains and maintains one pinned probe. `on_event(type, buf, offset, length)` sees every record."""

    def __init__(self, pdir: str, on_event: Optional[Callable[[int, bytes, int, int], None]] = None,
                 keep_recent: int = 256, timezones: Optional[Dict[int, str]] = None):
        self.pdir = pdir
        self.timezones = timezones or {}  # venue id -> zone of its time-of-day stamps (probemaps.venue_timezones)
        self.maps = ProbeMaps.from_pins(pdir)
        self._events_fd = bpfsys.obj_get(os.path.join(pdir, abi.MAP_EVENTS))
        self.ring = RingReader(self._events_fd)
        self.on_event = on_event
        # optional: lane_run(buf, offsets, i) -> the index of the first record it did not take; the
        # payload records before it were handled (the live agent's fast lane, fastlane.py)
        self.lane_run: Optional[Callable[[bytes, list, int], int]] = None
        self.by_type: Dict[int, int] = collections.Counter()
        self.recent_gaps: Deque[abi.EvGap] = collections.deque(maxlen=keep_recent)
        meta = self.maps.meta()
        self.clock_id = time.CLOCK_TAI if meta.clock == abi.Clock.TAI else time.CLOCK_MONOTONIC
        self.clock = meta.clock
        self.stats = self.maps.m[abi.MAP_AGENT_STATS].lookup(0) or abi.AgentStats()

    def close(self) -> None:
        self.ring.close()
        os.close(self._events_fd)
        self.maps.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def drain(self) -> int:
        """Read every committed record now; returns how many."""
        buf, offsets = self.ring.drain_offsets()
        n = len(offsets)
        if not n:
            return 0
        bad = 0
        gap_size = abi.ctypes.sizeof(abi.EvGap)
        lane_run = self.lane_run
        i = 0
        while i < n:
            if lane_run is not None:
                j = lane_run(buf, offsets, i)
                if j > i:
                    self.by_type[abi.EventType.PAYLOAD] += j - i
                    i = j
                    if i >= n:
                        break
            off = offsets[i]
            i += 1
            etype, elen, _cpu, _ts = _HDR.unpack_from(buf, off)
            if etype == abi.EventType.GAP and elen == gap_size:
                self.recent_gaps.append(abi.EvGap.from_buffer_copy(buf, off))
            elif etype not in (abi.EventType.RTT, abi.EventType.PAYLOAD, abi.EventType.CONN):
                bad += 1
                continue
            self.by_type[etype] += 1
            if self.on_event is not None:
                self.on_event(etype, buf, off, elen)
        self.stats.events_drained += n
        self.stats.events_bad += bad
        self.stats.drain_batches += 1
        return n

    def sweep_rtt(self) -> int:
        """Delete egress stamps older than RTT_STALE_NS (their ACK was cumulative); count them as
        evictions. Returns how many were evicted."""
        m = self.maps.m[abi.MAP_RTT_PENDING]
        now = time.clock_gettime_ns(self.clock_id)
        evicted = 0
        for k, v in list(m.items_batch(4096)):
            if now - v.ts_ns > RTT_STALE_NS or v.ts_ns == 0:
                if m.delete(k):
                    evicted += 1
        self.stats.rtt_evictions += evicted
        return evicted

    def maintain(self) -> None:
        """Once per interval: sweep, refresh the clock offset and the venues' midnights, publish agent
        stats."""
        self.sweep_rtt()
        self.maps.refresh_clock_offset()
        self.maps.refresh_midnights(self.timezones, self.clock)
        self.maps.m[abi.MAP_AGENT_STATS].update(0, self.stats)

    def run_for(self, seconds: float, interval: float = 1.0, on_interval: Optional[Callable[[], None]] = None,
                stop: Optional[Callable[[], bool]] = None) -> None:
        """Drain continuously (woken by the ring) and maintain every `interval` s, for `seconds`
        (0 = until stop() says so)."""
        end = time.monotonic() + seconds if seconds else None
        next_tick = time.monotonic() + interval
        while (end is None or time.monotonic() < end) and not (stop and stop()):
            timeout = max(0.0, min(next_tick, end or next_tick) - time.monotonic())
            self.ring.wait(int(timeout * 1000))
            self.drain()
            if time.monotonic() >= next_tick:
                self.maintain()
                if on_interval:
                    on_interval()
                next_tick += interval
        self.drain()
        self.maintain()
