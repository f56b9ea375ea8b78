"""The scale-out benchmark's arithmetic: steady rate, tail, fairness, queues (pure)."""

from __future__ import annotations

import pytest

from benchmarks.capacity.analysis import Poll
from benchmarks.capacity.settings import Server
from benchmarks.scaleout.analysis import (
    Run,
    Task,
    all_busy,
    jain,
    mean_limits,
    server_figures,
    server_goals,
    steady_rate,
    tail,
    worker_rates,
)


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
    even = tail([Task("a", 1, 0.0, 5.0), Task("a", 2, 5.0, 10.0), Task("b", 3, 0.0, 10.0)])
    assert (even.seconds, even.lost, even.span) == (0.0, 0.0, 10.0)
    # b runs out at 6 while a works on to 10: 4 s of tail, b idle for 4 of the 2 x 10 s.
    late = tail([Task("a", 1, 0.0, 4.0), Task("a", 2, 3.0, 10.0), Task("b", 3, 0.0, 6.0)])
    assert late.seconds == 4.0 and late.lost == pytest.approx(0.2)


def test_jains_index():
    assert jain([5.0, 5.0, 5.0]) == pytest.approx(1.0)
    assert jain([9.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    assert 0.9 < jain([10.0, 7.0]) < 1.0


def test_fair_shares_from_the_limits_and_from_the_rates():
    tasks = [Task("a", 1, 0.0, 6.0), Task("a", 2, 5.0, 10.0), Task("b", 3, 1.0, 8.0)]
    assert all_busy(tasks) == (1.0, 8.0)
    # a reports 10 throughout; b 2 until t = 3, then 10: over [1, 8], b averages 2*2/7 + 10*5/7.
    shares = [(0.0, {"a": 10, "b": 2}), (3.0, {"a": 10, "b": 10})]
    limits = mean_limits(shares, 1.0, 8.0)
    assert limits["a"] == pytest.approx(10.0) and limits["b"] == pytest.approx(54 / 7)
    rates = worker_rates(tasks, {1: 600, 2: 400, 3: 700})
    assert rates == pytest.approx({"a": 100.0, "b": 100.0})
    assert jain(list(rates.values())) == pytest.approx(1.0)


def test_a_queue_that_grows_shows_in_the_last_fifth():
    # Two workers busy from 0 to 50 s against a server of 64 handlers at L = 50 ms: 1,000
    # requests a second, their queue wait rising from nothing by 0.1 L every 5 s, so that the
    # last 10 s (0.8 to 0.9 L) fail the goal while the mean over the run (about 0.45 L) passes.
    # Each request holds a handler for 1.2 L (a server short of CPU): 60 of the 64 in use.
    L = 0.05
    polls, wait = [], 0.0
    for k in range(501):
        t = k / 10
        polls.append(Poll(t, 1000 * k // 10, 1000 * k // 10, wait, (0,), 0, 64, 1000 * 1.2 * L * t))
        wait += 100 * (k // 50) * 0.1 * L
    tasks = [Task("a", 1, 0.0, 50.0), Task("b", 2, 0.0, 50.0)]
    answered = [(0.0, 0), (50.0, 50_000)]
    requests = {1: 25_000, 2: 25_000}
    run = Run(
        "server", 2, "auto", 1, 0, 50.0, answered, tasks, requests, server=Server(64), polls=polls
    )
    figures = server_figures(run, latency_ms=50.0, settle_s=2.0)
    assert figures["late_wait_l"] == pytest.approx(0.85, abs=0.02)
    assert figures["mean_wait_l"] < 0.5
    assert figures["handler_use"] == pytest.approx(60 / 64, abs=0.01)
    assert figures["held_l"] == pytest.approx(1.2, abs=0.01)
    goals = server_goals({run.setup: {**figures, "runs": 1}})
    assert goals[f"{run.setup}: mean wait <= 0.5 L"][1]
    assert not goals[f"{run.setup}: mean wait in the last 20% together <= 0.5 L"][1]
