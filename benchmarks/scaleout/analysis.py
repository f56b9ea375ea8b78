"""From what a run recorded to its figures, and medians over rounds (pure).

Times are seconds from the run's start. A run records the server's answers over time, each
data set's task (which worker, when) from Dask's task stream, and the events of its JSON log:
each worker's limit (``shares``), the data sets' requests.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..capacity import analysis as capacity
from ..capacity.settings import Server
from ..capacity.settings import Settings as CapacitySettings

#: The share of a run's span whose one-second counts make its steady rate.
MIDDLE = 0.8
#: Issue 14's goals for the defaults (a controller per worker) on simulated machines.
SCALE_GOALS = {2: 2.0, 3: 3.0}
AUTO_VS_FIXED_GOAL = 0.9
TAIL_GOAL = 0.10
JAIN_GOAL = 0.9
#: The share of the workers' time together whose queue wait says whether the queue kept still.
LATE = 0.2


@dataclass(frozen=True)
class Task:
    """One data set's task: the worker that ran it, and when (start to stop)."""

    worker: str
    data_set: int
    start: float
    stop: float


@dataclass
class Run:
    part: str
    workers: int
    concurrency: str
    round: int
    exit_code: int
    wall_s: float
    #: (time, spatial searches answered so far), every poll.
    answered: list[tuple[float, int]]
    tasks: list[Task]
    #: Target requests each data set made (its data_set_done event).
    requests: dict[int, int]
    #: The workers' limits as the run reported them, and the run's, when it did.
    shares: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    limits: list[tuple[float, int]] = field(default_factory=list)
    retries: list[float] = field(default_factory=list)
    #: The server part: its emulator and every reading of its counters.
    server: Server | None = None
    polls: list[capacity.Poll] = field(default_factory=list)
    #: The machines part: each worker's CPU seconds and how long its cgroup held it back.
    worker_cpu_s: list[float] = field(default_factory=list)
    throttled_s: list[float] = field(default_factory=list)

    @property
    def setup(self) -> str:
        where = f"K = {self.server.handlers}: " if self.server is not None else ""
        return f"{where}{self.workers} x -c {self.concurrency}"


# -- rates ----------------------------------------------------------------------------------------


def steady_rate(samples: Sequence[tuple[float, int]], middle: float = MIDDLE) -> list[float]:
    """The one-second counts over the ``middle`` of a run's span, from ``(time, answered so
    far)`` samples: the span runs from the last sample before the first answer to the first
    sample with every answer in. Their mean is the steady rate."""
    base, final = samples[0][1], samples[-1][1]
    if final == base:
        return []
    start = max(t for t, n in samples if n == base)
    end = min(t for t, n in samples if n == final)
    trim = (1 - middle) / 2 * (end - start)
    lo, hi = start + trim, end - trim
    seconds = math.floor(hi - lo)
    if seconds < 1:
        return [(_answered(samples, hi) - _answered(samples, lo)) / (hi - lo)]
    edges = [_answered(samples, lo + k) for k in range(seconds + 1)]
    return [b - a for a, b in itertools.pairwise(edges)]


def _answered(samples: Sequence[tuple[float, int]], at: float) -> float:
    """Answers by ``at``, interpolated between the samples around it."""
    for (t0, n0), (t1, n1) in itertools.pairwise(samples):
        if t0 <= at <= t1:
            return n0 + (n1 - n0) * (at - t0) / (t1 - t0) if t1 > t0 else n1
    return samples[-1][1] if at > samples[-1][0] else samples[0][1]


# -- the tail -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tail:
    """The end of a run on several workers: from the first worker out of data sets to the last
    data set done (``seconds``), and the workers' idle time in it over N times the whole span
    (``lost``: what it cost, 0 when all finish together)."""

    seconds: float
    lost: float
    span: float


def tail(tasks: Sequence[Task]) -> Tail:
    start, end = min(t.start for t in tasks), max(t.stop for t in tasks)
    last: dict[str, float] = {}
    for t in tasks:
        last[t.worker] = max(last.get(t.worker, t.stop), t.stop)
    span = end - start
    idle = sum(end - t for t in last.values())
    return Tail(end - min(last.values()), idle / (len(last) * span) if span > 0 else 0.0, span)


# -- fairness -------------------------------------------------------------------------------------


def jain(xs: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one has everything."""
    total, squares = sum(xs), sum(x * x for x in xs)
    return total * total / (len(xs) * squares) if squares > 0 else 1.0


def all_busy(tasks: Sequence[Task]) -> tuple[float, float]:
    """When every worker had a data set: from the last first start to the first last stop."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for t in tasks:
        first[t.worker] = min(first.get(t.worker, t.start), t.start)
        last[t.worker] = max(last.get(t.worker, t.stop), t.stop)
    return max(first.values()), min(last.values())


def mean_limits(
    shares: Sequence[tuple[float, Mapping[str, int]]], lo: float, hi: float
) -> dict[str, float]:
    """Each worker's limit averaged over ``[lo, hi]``, its reports held until the next one."""
    sums: dict[str, float] = {}
    for i, (t, limits) in enumerate(shares):
        until = shares[i + 1][0] if i + 1 < len(shares) else hi
        a, b = max(t, lo), min(until, hi)
        if b > a:
            for worker, n in limits.items():
                sums[worker] = sums.get(worker, 0.0) + n * (b - a)
    return {worker: s / (hi - lo) for worker, s in sums.items()} if hi > lo else {}


def worker_rates(tasks: Sequence[Task], requests: Mapping[int, int]) -> dict[str, float]:
    """Each worker's target requests a second over its busy span (first start to last stop)."""
    done: dict[str, int] = {}
    span: dict[str, tuple[float, float]] = {}
    for t in tasks:
        done[t.worker] = done.get(t.worker, 0) + requests.get(t.data_set, 0)
        a, b = span.get(t.worker, (t.start, t.stop))
        span[t.worker] = (min(a, t.start), max(b, t.stop))
    return {w: done[w] / (b - a) for w, (a, b) in span.items() if b > a}


# -- figures and medians --------------------------------------------------------------------------


def machines_figures(run: Run) -> dict[str, Any]:
    counts = steady_rate(run.answered)
    t = tail(run.tasks) if run.tasks else Tail(0.0, 0.0, 0.0)
    return {
        "steady": statistics.fmean(counts) if counts else 0.0,
        "one_second_min": min(counts, default=0.0),
        "one_second_max": max(counts, default=0.0),
        "tail_s": t.seconds,
        "tail_lost": t.lost,
        "span_s": t.span,
        "cpu_per_request_us": 1e6 * sum(run.worker_cpu_s) / max(run.answered[-1][1], 1),
    }


def server_figures(run: Run, latency_ms: float, settle_s: float) -> dict[str, Any]:
    assert run.server is not None
    settings = CapacitySettings(latency_ms=latency_ms, settle_s=settle_s)
    as_capacity = capacity.Run(
        run.server, run.setup, run.round, run.polls, run.retries, run.limits, run.exit_code,
        run.wall_s,
    )  # fmt: skip
    f = capacity.figures(as_capacity, settings)
    lo, hi = all_busy(run.tasks) if run.tasks else (0.0, 0.0)
    limits = mean_limits(run.shares, lo, hi)
    rates = worker_rates(run.tasks, run.requests)
    # A queue that grows over the run (workers that each take the others' queue for the server's
    # latency) shows at its end, where the mean over the run hides it.
    late = capacity.at(run.polls, hi - LATE * (hi - lo)), capacity.at(run.polls, hi)
    return {
        "capacity_fraction": f.capacity_fraction,
        "mean_wait_l": f.mean_wait_l,
        "late_wait_l": capacity.mean_wait(*late) / settings.latency_s if hi > lo else None,
        "p99_wait_l": f.p99_wait_l,
        "shed_fraction": f.shed_fraction,
        "retries": f.retries,
        "converged_s": f.converged_s,
        "in_flight_over_k": f.in_flight / run.server.handlers,
        "handler_use": f.handler_use,
        "held_l": f.held_l,
        "cpu_per_request_us": 1e6 * sum(run.worker_cpu_s) / max(run.answered[-1][1], 1),
        "jain_limits": jain(list(limits.values())) if limits else None,
        "jain_rates": jain(list(rates.values())) if rates else None,
        "all_busy_s": hi - lo,
    }


def medians(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over rounds (None: any round without it, or never reached)."""
    out: dict[str, Any] = {"runs": len(rows)}
    for key in rows[0]:
        column = [r[key] for r in rows]
        if any(v is None for v in column):
            out[key] = None
        else:
            out[key] = statistics.median(column)
    return out


def machines_goals(by_setup: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, bool]]:
    """Issue 14's scale-out goals for the defaults: (measured, met)."""
    goals: dict[str, tuple[str, bool]] = {}

    def steady(n: int, c: str) -> float | None:
        row = by_setup.get(f"{n} x -c {c}")
        return None if row is None else float(row["steady"])

    one = steady(1, "auto")
    for n, want in SCALE_GOALS.items():
        mine = steady(n, "auto")
        if one and mine is not None:
            ratio = mine / one
            goals[f"{n} auto workers >= {want:.1f}x one"] = (f"{ratio:.2f}x", ratio >= want)
    fixed = steady(1, "512")
    if one and fixed:
        ratio = one / fixed
        want = AUTO_VS_FIXED_GOAL
        goals[f"one auto worker >= {want} of a -c 512 one"] = (f"{ratio:.2f}", ratio >= want)
    for key, row in by_setup.items():
        if not key.startswith("1 "):
            lost = float(row["tail_lost"])
            goals[f"tail of {key} <= {TAIL_GOAL:.0%}"] = (f"{lost:.1%}", lost <= TAIL_GOAL)
    return goals


def server_goals(by_setup: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, bool]]:
    """Issue 14's goals for workers sharing one server, with the capacity benchmark's own."""
    goals: dict[str, tuple[str, bool]] = {}
    for key, row in by_setup.items():
        checks = {
            "throughput >= 0.9 K/L": (row["capacity_fraction"], 0.9, True),
            "mean wait <= 0.5 L": (row["mean_wait_l"], 0.5, False),
            f"mean wait in the last {LATE:.0%} together <= 0.5 L": (row["late_wait_l"], 0.5, False),
            "shed <= 2 %": (row["shed_fraction"], 0.02, False),
            f"Jain's index >= {JAIN_GOAL}": (row["jain_rates"], JAIN_GOAL, True),
        }
        for name, (value, bound, above) in checks.items():
            ok = value is not None and (value >= bound if above else value <= bound)
            shown = "-" if value is None else f"{value:.2f}"
            goals[f"{key}: {name}"] = (shown, ok)
    return goals
