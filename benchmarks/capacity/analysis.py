"""From the server's counters to the figures of a run, and medians over runs (pure).

The server's counters are read every ``poll_s``; they only grow, so what happened between two
moments is the difference of two readings (interpolated between polls). Times are seconds from the
contender's start. The target phase begins with the first spatial search answered (less L, as it
was answered L after it arrived); the steady figures leave out its first ``settle_s``.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from asyncdl.emulator.capacity import percentile

from .settings import AUTO, Server, Settings

#: Convergence: every later second (in steps of STEP_S) keeps to these.
CONVERGED_THROUGHPUT = 0.9
CONVERGED_WAIT_L = 0.5
STEP_S = 0.25


@dataclass(frozen=True)
class Poll:
    """One reading of the server's counters."""

    at: float
    #: Spatial searches answered.
    answered: int
    #: Requests given a handler, and their queue waits summed (seconds) and counted by bucket.
    served: int
    wait_s: float
    histogram: tuple[int, ...]
    #: Requests turned away (503) because the queue was full.
    sheds: int
    #: Requests at the server: in service or queued.
    in_flight: int
    #: Handler-seconds in use so far.
    busy_s: float


@dataclass(frozen=True)
class Run:
    """One run of a contender against a server."""

    server: Server
    contender: str
    repeat: int
    polls: list[Poll]
    #: When each retry was told (an event of the JSON log), and each limit reported.
    retries: list[float]
    limits: list[tuple[float, int]]
    exit_code: int
    wall_s: float


@dataclass(frozen=True)
class Figures:
    """What a run did; the goals are stated in these terms."""

    #: Answers a second over the steady part, and as a fraction of what the server can do (K / L).
    throughput: float
    capacity_fraction: float
    #: The same over the whole target phase, convergence included.
    whole_fraction: float
    #: Queue waits at the server over the steady part, in units of L.
    mean_wait_l: float
    p99_wait_l: float
    #: Sheds over the whole run, and as a fraction of the requests that reached the server.
    sheds: int
    shed_fraction: float
    retries: int
    #: From the process start to the first target request.
    first_target_s: float
    #: From the first target request to when every later second served at least 0.9 K / L with a
    #: mean queue wait of at most 0.5 L (None: never for good).
    converged_s: float | None
    #: The same, against 0.9 of the run's own steady throughput (when the machine, not the
    #: server, is the limit).
    settled_s: float | None
    #: The requests at the server, median over the steady part: the concurrency it saw.
    in_flight: float
    #: The share of the handlers' time in use over the steady part, and how long a request held
    #: one (in units of L): a server kept full whose CPU is short holds them longer than L, and
    #: then falls short of K / L with every handler in use.
    handler_use: float
    held_l: float


@dataclass(frozen=True)
class Row:
    """A contender against a server: medians over its runs (convergence: None if any run never
    converged in its median)."""

    server: Server
    contender: str
    runs: int
    figures: Figures
    exit_codes: list[int] = field(default_factory=list)


def figures(run: Run, settings: Settings) -> Figures:
    polls = run.polls
    capacity = run.server.handlers / settings.latency_s
    start = _first_target(polls, settings.latency_s)
    end = polls[-1].at
    steady = start + settings.settle_s
    throughput = _rate(polls, steady, end)
    before, after = at(polls, steady), at(polls, end)
    waits = [b - a for a, b in zip(before.histogram, after.histogram, strict=True)]
    total = polls[-1].served - polls[0].served + polls[-1].sheds - polls[0].sheds
    return Figures(
        throughput=throughput,
        capacity_fraction=throughput / capacity,
        whole_fraction=_rate(polls, start, end) / capacity,
        mean_wait_l=mean_wait(before, after) / settings.latency_s,
        p99_wait_l=percentile(waits, 0.99) / settings.latency_s,
        sheds=polls[-1].sheds - polls[0].sheds,
        shed_fraction=(polls[-1].sheds - polls[0].sheds) / max(total, 1),
        retries=len(run.retries),
        first_target_s=start,
        converged_s=_converged(polls, start, end, CONVERGED_THROUGHPUT * capacity, settings),
        settled_s=_converged(polls, start, end, CONVERGED_THROUGHPUT * throughput, settings),
        in_flight=statistics.median(p.in_flight for p in polls if p.at >= steady)
        if end > steady
        else 0.0,
        handler_use=handler_use(before, after, run.server.handlers),
        held_l=held(before, after) / settings.latency_s,
    )


def rows(runs: Sequence[Run], settings: Settings) -> list[Row]:
    """Medians per server and contender, in the order of the settings."""
    out = []
    for server in settings.servers:
        for contender in settings.contenders:
            mine = [r for r in runs if r.server == server and r.contender == contender]
            if mine:
                each = [figures(r, settings) for r in mine]
                out.append(
                    Row(server, contender, len(mine), _median(each), [r.exit_code for r in mine])
                )
    return out


def goals(row: Row) -> dict[str, bool]:
    """The issue's goals for -c auto on every server, with no tuning."""
    f = row.figures
    return {
        "throughput >= 0.9 K/L": f.capacity_fraction >= 0.9,
        "mean queue wait <= 0.5 L": f.mean_wait_l <= 0.5,
        "shed <= 2 %": f.shed_fraction <= 0.02,
        "converged within 2 s": f.converged_s is not None and f.converged_s <= 2.0,
    }


def is_auto(row: Row) -> bool:
    return row.contender == AUTO


def series(run: Run, settings: Settings, step: float = STEP_S) -> dict[str, list[float]]:
    """The run over time, from its first target request: throughput as a fraction of K / L and
    mean queue wait in units of L over each ``step``, and the requests at the server."""
    start = _first_target(run.polls, settings.latency_s)
    capacity = run.server.handlers / settings.latency_s
    times, rates, waits, in_flight = [], [], [], []
    t = start
    while t + step <= run.polls[-1].at:
        a, b = at(run.polls, t), at(run.polls, t + step)
        times.append(t - start)
        rates.append((b.answered - a.answered) / step / capacity)
        waits.append(mean_wait(a, b) / settings.latency_s)
        in_flight.append(float(b.in_flight))
        t += step
    return {"t": times, "throughput": rates, "wait": waits, "in_flight": in_flight}


def as_dict(row: Row) -> dict[str, Any]:
    return {
        **asdict(row),
        "server": asdict(row.server),
        "goals": goals(row) if is_auto(row) else None,
    }


def _first_target(polls: Sequence[Poll], latency_s: float) -> float:
    """When the first target request reached the server: L before the first answer was seen."""
    first = next((p.at for p in polls if p.answered > polls[0].answered), polls[-1].at)
    return max(first - latency_s, 0.0)


def at(polls: Sequence[Poll], t: float) -> Poll:
    """The counters at ``t``, interpolated between the polls around it (the last one after)."""
    if t <= polls[0].at:
        return polls[0]
    for a, b in itertools.pairwise(polls):
        if a.at <= t <= b.at:
            w = (t - a.at) / (b.at - a.at) if b.at > a.at else 1.0
            return Poll(
                at=t,
                answered=round(a.answered + w * (b.answered - a.answered)),
                served=round(a.served + w * (b.served - a.served)),
                wait_s=a.wait_s + w * (b.wait_s - a.wait_s),
                histogram=b.histogram if w > 0.5 else a.histogram,
                sheds=round(a.sheds + w * (b.sheds - a.sheds)),
                in_flight=b.in_flight if w > 0.5 else a.in_flight,
                busy_s=a.busy_s + w * (b.busy_s - a.busy_s),
            )
    return polls[-1]


def handler_use(before: Poll, after: Poll, handlers: int) -> float:
    """The share of the time between two readings that the server's handlers were in use."""
    span = after.at - before.at
    return (after.busy_s - before.busy_s) / (handlers * span) if span > 0 else 0.0


def held(before: Poll, after: Poll) -> float:
    """How long a request held a handler (seconds), on average between two readings."""
    served = after.served - before.served
    return (after.busy_s - before.busy_s) / served if served > 0 else 0.0


def mean_wait(before: Poll, after: Poll) -> float:
    """The mean queue wait (seconds) of the requests given a handler between two readings."""
    return (after.wait_s - before.wait_s) / max(after.served - before.served, 1)


def _rate(polls: Sequence[Poll], start: float, end: float) -> float:
    if end <= start:
        return 0.0
    return (at(polls, end).answered - at(polls, start).answered) / (end - start)


def _converged(
    polls: Sequence[Poll], start: float, end: float, throughput: float, settings: Settings
) -> float | None:
    """From ``start`` to when every later second (in steps of STEP_S) answered at least
    ``throughput`` a second with a mean queue wait of at most CONVERGED_WAIT_L."""
    converged = None
    t = start
    while t + 1.0 <= end:
        a, b = at(polls, t), at(polls, t + 1.0)
        wait = mean_wait(a, b) / settings.latency_s
        good = b.answered - a.answered >= throughput and wait <= CONVERGED_WAIT_L
        if not good:
            converged = None
        elif converged is None:
            converged = t - start
        t += STEP_S
    return converged


def _median(each: Iterable[Figures]) -> Figures:
    each = list(each)
    values: dict[str, Any] = {}
    for spec in fields(Figures):
        column = [getattr(f, spec.name) for f in each]
        if spec.name in ("converged_s", "settled_s"):
            middle = statistics.median(math.inf if v is None else v for v in column)
            values[spec.name] = None if middle == math.inf else middle
        else:
            values[spec.name] = statistics.median(column)
    return Figures(**values)
