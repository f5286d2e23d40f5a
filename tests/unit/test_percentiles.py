"""Latency recorder: the kernel bucket layout, exact percentiles, the histogram error bound, merging."""
import random

import pytest
from hypothesis import given, strategies as st

from hft_packetfilter.analytics.percentiles import (MAX_INDEX, NUM_BUCKETS, LatencyRecorder, bucket_bounds,
                                                    bucket_index, nearest_rank)


def _formula(v):
    """The docstring formula, written as the kernel will (no Python bit_length shortcut)."""
    if v < 64:
        return 0
    e = 0
    while (v >> (e + 1)) > 0:
        e += 1
    return min((e - 6) * 4 + ((v >> (e - 2)) & 3) + 1, MAX_INDEX)


@pytest.mark.parametrize("v,idx", [(0, 0), (63, 0), (64, 1), (79, 1), (80, 2), (96, 3), (112, 4), (127, 4),
                                   (128, 5), (159, 5), (160, 6), (255, 8), (256, 9), (1000, 16),
                                   (10**10, 109), (2**34 - 1, 112), (2**34, 112), (2**50, 112)])
def test_bucket_table(v, idx):
    assert bucket_index(v) == idx == _formula(v)


def test_layout_constants():
    assert NUM_BUCKETS == 113 and MAX_INDEX == 112
    for i in range(1, NUM_BUCKETS):
        lo, hi = bucket_bounds(i)
        assert bucket_index(lo) == i and bucket_index(hi - 1) == i
        assert (hi - lo) * 4 <= lo                   # width <= lo/4: the 12.5 % midpoint bound
        if i + 1 < NUM_BUCKETS:
            assert bucket_bounds(i + 1)[0] == hi      # contiguous


@given(st.integers(min_value=0, max_value=2**40))
def test_formula_matches(v):
    assert bucket_index(v) == _formula(v)
    lo, hi = bucket_bounds(bucket_index(v))
    assert lo <= v and (v < hi or bucket_index(v) == MAX_INDEX)


def test_nearest_rank():
    assert nearest_rank(1000, 99.9) == 999
    assert nearest_rank(1000, 50) == 500
    assert nearest_rank(10, 99) == 10
    assert nearest_rank(1, 50) == 1


def test_exact_percentiles_known_latencies():
    r = LatencyRecorder(clock="tai")
    # 1000 acks: 1..1000 microseconds, shuffled
    vals = [i * 1000 for i in range(1, 1001)]
    random.Random(3).shuffle(vals)
    r.record_many(vals)
    s = r.snapshot()
    assert s["exact"] is True and s["clock"] == "tai" and s["count"] == 1000
    assert (s["p50"], s["p90"], s["p99"], s["p99_9"], s["max"], s["min"]) == (500.0, 900.0, 990.0, 999.0,
                                                                            1000.0, 1.0)
    assert s["mean"] == pytest.approx(500.5)


def test_histogram_mode_error_bound():
    r = LatencyRecorder(exact_limit=100)
    rng = random.Random(7)
    vals = [int(rng.lognormvariate(10, 1.5)) + 64 for _ in range(20000)]
    r.record_many(vals)
    assert not r.exact
    vals.sort()
    for p in (50, 90, 99, 99.9):
        true = vals[nearest_rank(len(vals), p) - 1]
        est = r.percentile_ns(p)
        assert abs(est - true) <= 0.125 * true + 1, (p, est, true)
    assert r.percentile_ns(100) == vals[-1] and r.min == vals[0] and r.max == vals[-1]
    assert r.sum == sum(vals)


def test_negative_counted_not_recorded():
    r = LatencyRecorder()
    r.record(-5)
    r.record(100)
    assert r.negative == 1 and r.count == 1


def test_empty_snapshot_has_stable_keys():
    s = LatencyRecorder().snapshot()
    assert set(s) == {"count", "clock", "exact", "p50", "p90", "p99", "p99_9", "max", "min", "mean", "negative"}
    assert s["p50"] is None and s["count"] == 0


def test_merge_exact_and_histogram():
    a, b = LatencyRecorder(), LatencyRecorder()
    a.record_many(range(1000, 51000, 1000))   # 50 values
    b.record_many(range(51000, 101000, 1000))
    m = LatencyRecorder.merged([a, b])
    assert m.exact and m.count == 100 and m.percentile_us(50) == 50.0 and m.max == 100000
    big = LatencyRecorder(exact_limit=60)
    big.merge(a).merge(b)
    assert not big.exact and big.count == 100 and big.counts == m.counts and big.max == 100000
    assert abs(big.percentile_ns(50) - 50000) <= 0.125 * 50000


def test_add_kernel_buckets():
    r = LatencyRecorder()
    counts = [0] * NUM_BUCKETS
    counts[bucket_index(1000)] = 3
    counts[bucket_index(5000)] = 1
    r.add_buckets(counts, total_ns=8000)
    assert r.count == 4 and r.sum == 8000 and not r.exact
    lo, hi = bucket_bounds(bucket_index(5000))
    assert r.max == hi - 1 and r.percentile_ns(100) == hi - 1
    assert abs(r.percentile_ns(50) - 1000) <= 125
