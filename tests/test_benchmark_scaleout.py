"""The scale-out benchmark's arithmetic: steady rate, tail, fairness (pure)."""

from __future__ import annotations

import pytest

from benchmarks.scaleout import jain, steady_rate, tail


def test_the_steady_rate_leaves_out_the_start_and_the_end():
    # 100 answers a second from t = 10 to t = 20, nothing before (volumes) or after.
    samples = [(t / 10, 0 if t <= 100 else min(1000, (t - 100) * 10)) for t in range(0, 250)]
    counts = steady_rate(samples)
    assert len(counts) == 8 and counts == pytest.approx([100.0] * 8)
    # A slow start and a slow end (20 a second for the first and last 2 s) are left out as far
    # as the middle 80 % allows: 1 s at either end of a 10 s span; the rest counts as it was.
    slow: list[tuple[float, int]] = [(0.0, 0)]
    n = 0
    for k in range(1, 101):
        n += 2 if k <= 20 or k > 80 else 10
        slow.append((k / 10, n))
    counts = steady_rate(slow)
    assert counts == pytest.approx([20.0] + [100.0] * 6 + [20.0])


def test_no_answers_no_rate():
    assert steady_rate([(0.0, 5), (1.0, 5)]) == []


def test_the_tail_is_the_idle_time_at_the_end():
    even = tail([("a", 0.0, 5.0), ("a", 5.0, 10.0), ("b", 0.0, 10.0)])
    assert (even.seconds, even.lost, even.span) == (0.0, 0.0, 10.0)
    # b runs out at 6 while a works on to 10: 4 s of tail, b idle for 4 of the 2 x 10 s.
    late = tail([("a", 0.0, 4.0), ("a", 3.0, 10.0), ("b", 0.0, 6.0)])
    assert late.seconds == 4.0 and late.lost == pytest.approx(0.2)


def test_jains_index():
    assert jain([5.0, 5.0, 5.0]) == pytest.approx(1.0)
    assert jain([9.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    assert 0.9 < jain([10.0, 7.0]) < 1.0
