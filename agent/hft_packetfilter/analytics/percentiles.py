"""Latency recorder: a log-linear (HDR-style) histogram with the kernel's bucket layout, exact
min/max/count/sum, and exact percentiles while the sample count is small.

Bucket layout (shared with the kernel; ``bpf/`` mirrors it for its per-CPU latency histograms)
--------------------------------------------------------------------------------------------
Values are nanoseconds (unsigned integers). Four linear sub-buckets per power of two::

    v < 64 ns          -> bucket 0
    otherwise          e     = floor(log2(v))            (v.bit_length() - 1; C: 63 - clzll(v))
                       sub   = (v >> (e - 2)) & 3        (the two bits after the leading one)
                       index = (e - 6) * 4 + sub + 1
    index > MAX_INDEX  -> MAX_INDEX                     (values >= 2**34 ns, about 17.2 s)

so bucket 1 is [64, 80) ns, bucket 4 is [112, 128), bucket 5 is [128, 160) ... and the last bucket,
``MAX_INDEX = (33 - 6) * 4 + 3 + 1 = 112``, is [2**33 * 1.75, 2**34) = [15.03 s, 17.18 s) plus
everything above it. The range 64 ns .. 10 s is covered (10 s = 1e10 ns has e = 33, sub = 0: bucket 109).
``NUM_BUCKETS = 113``. Lower bound of bucket i >= 1: ``(4 + (i - 1) % 4) << ((i - 1) // 4 + 4)``.

Error bound
-----------
A bucket [lo, lo + w) of exponent e has ``w = 2**(e-2)`` and ``lo >= 2**e``, so ``w <= lo / 4``.
A percentile read from the histogram is the bucket midpoint ``lo + w/2``, clamped to the exact
[min, max]: its relative error is at most ``w / 2 / lo <= 12.5 %`` (for values >= 64 ns; below 64 ns
the error is at most 32 ns absolute). ``max`` and ``min`` are always exact, and so is ``p100``.

While ``count <= exact_limit`` (default 4096) the raw samples are kept too, and every percentile is
exact (nearest-rank: the smallest sample with at least p % of the samples at or below it). Above
that limit the samples are dropped and the histogram answers; memory stays bounded either way.

Merging (``merge``) adds histograms and counts; the result stays exact only when both sides are and
their samples still fit under the limit. ``add_buckets`` folds in a kernel histogram (per-CPU
values summed by the caller), which carries no exact samples.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

SUB_BUCKET_BITS = 2
SUB_BUCKETS = 1 << SUB_BUCKET_BITS          # 4 sub-buckets per power of two
MIN_EXP = 6                                 # 2**6 = 64 ns: the first non-zero bucket
MAX_EXP = 33                                # 2**33 ns = 8.6 s: its buckets reach 2**34 ns = 17.2 s
MAX_INDEX = (MAX_EXP - MIN_EXP) * SUB_BUCKETS + SUB_BUCKETS    # 112
NUM_BUCKETS = MAX_INDEX + 1                                    # 113
DEFAULT_EXACT_LIMIT = 4096
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_KEYS = ("p50", "p90", "p99", "p99_9")


def bucket_index(v: int) -> int:
    """The bucket of ``v`` nanoseconds (see the module docstring)."""
    if v < 64:
        return 0
    e = v.bit_length() - 1
    i = (e - 6) * 4 + ((v >> (e - 2)) & 3) + 1
    return i if i <= MAX_INDEX else MAX_INDEX


def bucket_bounds(i: int) -> tuple:
    """[lo, hi) in nanoseconds of bucket ``i`` (the last bucket's hi is its nominal 2**34)."""
    if i <= 0:
        return (0, 64)
    e = (i - 1) // 4 + MIN_EXP
    sub = (i - 1) % 4
    lo = (4 + sub) << (e - 2)
    return (lo, lo + (1 << (e - 2)))


def nearest_rank(n: int, p: float) -> int:
    """1-based nearest rank of percentile ``p`` among ``n`` samples: ceil(p/100 * n), at least 1."""
    # integer arithmetic on p * 1000 avoids float rounding (p99.9 of 1000 samples is rank 999)
    num = int(round(p * 1000)) * n
    r = -(-num // 100_000)
    return min(max(r, 1), n)


class LatencyRecorder:
    """Latencies in nanoseconds; percentiles reported in microseconds.

    ``record(ns)`` is the per-sample call (negative values are counted in ``negative`` and not
    recorded: a latency below zero means two clocks disagree). ``clock`` labels where the
    timestamps came from (``"tai"``, ``"monotonic"``, ``"pcap"`` ...).
    """

    __slots__ = ("clock", "exact_limit", "counts", "count", "sum", "min", "max", "negative", "_samples")

    def __init__(self, clock: str = "unknown", exact_limit: int = DEFAULT_EXACT_LIMIT) -> None:
        self.clock = clock
        self.exact_limit = exact_limit
        self.counts: List[int] = [0] * NUM_BUCKETS
        self.count = 0
        self.sum = 0
        self.min: Optional[int] = None
        self.max: Optional[int] = None
        self.negative = 0
        self._samples: Optional[List[int]] = []

    # -- recording -------------------------------------------------------------------------------
    def record(self, v: int) -> None:
        if v < 0:
            self.negative += 1
            return
        v = int(v)
        if v < 64:
            self.counts[0] += 1
        else:
            e = v.bit_length() - 1
            i = (e - 6) * 4 + ((v >> (e - 2)) & 3) + 1
            self.counts[i if i <= MAX_INDEX else MAX_INDEX] += 1
        self.count += 1
        self.sum += v
        if self.min is None or v < self.min:
            self.min = v
        if self.max is None or v > self.max:
            self.max = v
        s = self._samples
        if s is not None:
            if len(s) < self.exact_limit:
                s.append(v)
            else:
                self._samples = None

    def record_many(self, values: Iterable[int]) -> None:
        for v in values:
            self.record(v)

    def add_buckets(self, counts: Sequence[int], total_ns: Optional[int] = None) -> None:
        """Fold in a histogram in this layout (e.g. the kernel's, summed over CPUs). min/max become
        the bounds of the lowest/highest non-empty bucket when no exact value is known."""
        n = 0
        lo_i = hi_i = None
        for i, c in enumerate(counts[:NUM_BUCKETS]):
            if c > 0:
                self.counts[i] += c
                n += c
                if lo_i is None:
                    lo_i = i
                hi_i = i
        if n == 0:
            return
        self.count += n
        if total_ns is not None:
            self.sum += total_ns
        else:
            for i in range(lo_i, hi_i + 1):   # no exact sum: use bucket midpoints
                if counts[i] > 0:
                    b_lo, b_hi = bucket_bounds(i)
                    self.sum += counts[i] * ((b_lo + b_hi) // 2)
        lo = bucket_bounds(lo_i)[0]
        hi = bucket_bounds(hi_i)[1] - 1
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        self._samples = None

    def merge(self, other: "LatencyRecorder") -> "LatencyRecorder":
        """Add ``other`` into this recorder (in place) and return self."""
        for i, c in enumerate(other.counts):
            if c:
                self.counts[i] += c
        self.count += other.count
        self.sum += other.sum
        self.negative += other.negative
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
        if other.max is not None:
            self.max = other.max if self.max is None else max(self.max, other.max)
        if self._samples is not None and other._samples is not None \
                and len(self._samples) + len(other._samples) <= self.exact_limit:
            self._samples.extend(other._samples)
        elif other.count or other._samples is None:
            self._samples = None
        return self

    @classmethod
    def merged(cls, recorders: Iterable["LatencyRecorder"], clock: Optional[str] = None) -> "LatencyRecorder":
        out: Optional[LatencyRecorder] = None
        for r in recorders:
            if out is None:
                out = cls(clock or r.clock, r.exact_limit)
            out.merge(r)
        return out if out is not None else cls(clock or "unknown")

    # -- reading ---------------------------------------------------------------------------------
    @property
    def exact(self) -> bool:
        """True while every percentile is computed from the raw samples."""
        return self._samples is not None

    def percentile_ns(self, p: float) -> Optional[float]:
        """Latency at percentile ``p`` (0 < p <= 100) in ns; None when empty."""
        n = self.count
        if n == 0:
            return None
        if p >= 100:
            return float(self.max)
        rank = nearest_rank(n, p)
        s = self._samples
        if s is not None and len(s) == n:
            s.sort()
            return float(s[rank - 1])
        cum = 0
        for i, c in enumerate(self.counts):
            cum += c
            if cum >= rank:
                lo, hi = bucket_bounds(i)
                mid = (lo + hi) / 2.0
                return float(min(max(mid, self.min), self.max))
        return float(self.max)

    def percentile_us(self, p: float) -> Optional[float]:
        v = self.percentile_ns(p)
        return None if v is None else v / 1000.0

    @property
    def mean_ns(self) -> Optional[float]:
        return self.sum / self.count if self.count else None

    def snapshot(self) -> Dict[str, object]:
        """JSON-safe summary in microseconds; keys are always present (None when empty)."""
        out: Dict[str, object] = {"count": self.count, "clock": self.clock, "exact": self.exact}
        for key, p in zip(_KEYS, PERCENTILES):
            out[key] = self.percentile_us(p)
        out["max"] = None if self.max is None else self.max / 1000.0
        out["min"] = None if self.min is None else self.min / 1000.0
        out["mean"] = None if not self.count else self.sum / self.count / 1000.0
        out["negative"] = self.negative
        return out

    def buckets(self) -> List[int]:
        """A copy of the bucket counts (kernel layout)."""
        return list(self.counts)

    def __repr__(self) -> str:
        return f"LatencyRecorder(count={self.count}, clock={self.clock!r}, exact={self.exact})"
