"""From runs to results (pure): medians, extrapolation of sampled runs, the ideal, and the goals.

The ideal of a job at concurrency C is ``T_vol + N * L / C`` (Little's law: C requests in flight,
each taking L, make C / L per second), where N is the job's number of target requests and T_vol the
time asyncdl takes from its start to its first target request: interpreter start, volume downloads,
decoding, target selection (median over its runs at C >= 4, where the four volume downloads are
not serialized by the slots). A sampled run is extrapolated the same way: its own time to the
first target request, plus N times its measured time per target request.

The strict ideal (issue 10) takes T_vol instead from a separate run of ``asyncdl fetch --dry-run``
on an empty cache: the volume phase alone, without the overlap of a real run's first data sets.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .contenders import CONTENDERS
from .measure import Measurement
from .settings import Settings
from .trials import BULK, DRY_RUN, FETCH, NOTHING_TO_DO, SINGLE, Run, Trial


@dataclass(frozen=True)
class Job:
    """One job (the single data set, or the bulk run): its size and its volume phase."""

    name: str
    data_sets: tuple[int, ...]
    #: Target requests of the whole job (N).
    targets: int
    #: asyncdl's time from its start to the first target request (T_vol).
    volume_s: float
    #: asyncdl's ``--dry-run`` of the job on an empty cache, start to exit (None: not measured).
    dry_run_s: float | None = None

    def ideal_s(self, latency_s: float, concurrency: int) -> float:
        return self.volume_s + self.targets * latency_s / concurrency

    def strict_ideal_s(self, latency_s: float, concurrency: int) -> float | None:
        if self.dry_run_s is None:
            return None
        return self.dry_run_s + self.targets * latency_s / concurrency


@dataclass(frozen=True)
class Row:
    """One trial, summarised: medians over its runs (the peak RSS is the largest)."""

    contender: str
    label: str
    job: str
    data_sets: int
    concurrency: int
    runs: int
    #: Target requests timed when the run was sampled and extrapolated (None: whole job).
    sample: int | None
    wall_s: float
    requests: int
    req_per_s: float
    ideal_s: float
    ideal_over_actual: float
    #: The dry run's T_vol + N·L/C, and its ratio to the wall time (None: no dry run measured).
    strict_ideal_s: float | None
    strict_ideal_over_actual: float | None
    #: From the process start to its first target request.
    volume_s: float
    #: From the first target request to exit (extrapolated to N when sampled).
    target_phase_s: float
    #: The target phase per target request.
    per_request_ms: float
    cpu_us_per_request: float
    server_cpu_us_per_request: float
    #: CPU used over time in the target phase: 1.0 is one core saturated.
    client_busy: float
    server_busy: float
    peak_rss_mb: float
    #: The largest peak RSS of each kind of process in the tree (client, worker, ...).
    peak_rss_by_role: dict[str, float]
    #: Every data.json equal in content to asyncdl's (None: a sample writes none).
    verified: bool | None
    #: Every run exited 0 and made the requests it should have.
    ok: bool
    measurements: list[dict[str, Any]] = field(repr=False)


@dataclass(frozen=True)
class Goal:
    """A target of issue 4, measured: ``met`` is None when the run did not include what it needs."""

    goal: str
    measured: str
    met: bool | None


@dataclass(frozen=True)
class FixedCost:
    """A run with nothing left to do (every data set complete): what any run costs on top."""

    contender: str
    label: str
    job: str
    runs: int
    wall_s: float
    cpu_s: float
    peak_rss_by_role: dict[str, float]
    ok: bool


@dataclass(frozen=True)
class Results:
    jobs: dict[str, Job]
    rows: list[Row]
    goals: list[Goal]
    fixed_costs: list[FixedCost] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": {name: asdict(job) for name, job in self.jobs.items()},
            "results": [asdict(row) for row in self.rows],
            "fixed_costs": [asdict(cost) for cost in self.fixed_costs],
            "goals": [asdict(goal) for goal in self.goals],
        }


def analyse(settings: Settings, runs: list[Run]) -> Results:
    latency_s = settings.latency_ms / 1000
    fetches = [r for r in runs if r.trial.kind == FETCH]
    found = {
        name: _job(
            name,
            [r for r in fetches if r.trial.job == name],
            [r for r in runs if r.trial.job == name and r.trial.kind == DRY_RUN],
        )
        for name in (SINGLE, BULK)
    }
    jobs = {name: job for name, job in found.items() if job is not None}
    references = _reference_outputs(fetches)
    trials = list(dict.fromkeys(r.trial for r in fetches))
    rows = [
        _row(trial, [r for r in runs if r.trial == trial], jobs[trial.job], latency_s, references)
        for trial in trials
        if trial.job in jobs
    ]
    idle = list(dict.fromkeys(r.trial for r in runs if r.trial.kind == NOTHING_TO_DO))
    fixed = [_fixed_cost(trial, [r for r in runs if r.trial == trial]) for trial in idle]
    return Results(jobs, rows, goals(rows), fixed)


def _job(name: str, runs: list[Run], dry_runs: list[Run]) -> Job | None:
    whole = [r for r in runs if r.trial.sample is None and r.measurement.exit_code == 0]
    ours = [r for r in whole if r.trial.contender == "asyncdl"]
    if not whole:
        return None
    parallel = [r for r in ours if r.trial.concurrency >= 4] or ours or whole
    starts = [r.measurement.first_target_s for r in parallel]
    dry = [r.measurement.wall_s for r in dry_runs if r.measurement.exit_code == 0]
    return Job(
        name,
        whole[0].trial.data_sets,
        round(statistics.median(r.measurement.requests for r in ours or whole)),
        statistics.median([s for s in starts if s is not None] or [0.0]),
        statistics.median(dry) if dry else None,
    )


def _peaks_by_role(ms: Iterable[Measurement]) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for p in (p for m in ms for p in m.processes):
        peaks[p.role] = max(peaks.get(p.role, 0.0), p.peak_rss_mb)
    return peaks


def _fixed_cost(trial: Trial, runs: list[Run]) -> FixedCost:
    ms = [r.measurement for r in runs]
    return FixedCost(
        contender=trial.contender,
        label=CONTENDERS[trial.contender].label,
        job=trial.job,
        runs=len(ms),
        wall_s=statistics.median(m.wall_s for m in ms),
        cpu_s=statistics.median(m.cpu_s for m in ms),
        peak_rss_by_role=_peaks_by_role(ms),
        ok=all(m.exit_code == 0 and m.requests == 0 for m in ms),
    )


def _row(
    trial: Trial, runs: list[Run], job: Job, latency_s: float, references: dict[int, str]
) -> Row:
    ms = [r.measurement for r in runs]
    done = [m for m in ms if m.requests]
    n = job.targets

    def median(value: Callable[[Measurement], float]) -> float:
        return statistics.median(value(m) for m in done) if done else float("nan")

    def whole_job_s(m: Measurement) -> float:
        if trial.sample is None:
            return m.wall_s
        return (m.first_target_s or 0.0) + n * m.target_phase_s / m.requests

    wall = median(whole_job_s)
    ideal = job.ideal_s(latency_s, trial.concurrency)
    strict = job.strict_ideal_s(latency_s, trial.concurrency)
    expected = trial.sample if trial.sample is not None else n
    return Row(
        contender=trial.contender,
        label=CONTENDERS[trial.contender].label,
        job=trial.job,
        data_sets=len(trial.data_sets),
        concurrency=trial.concurrency,
        runs=len(ms),
        sample=trial.sample,
        wall_s=wall,
        requests=n,
        req_per_s=n / wall,
        ideal_s=ideal,
        ideal_over_actual=ideal / wall,
        strict_ideal_s=strict,
        strict_ideal_over_actual=None if strict is None else strict / wall,
        volume_s=median(lambda m: m.first_target_s or 0.0),
        target_phase_s=median(lambda m: n * m.target_phase_s / m.requests),
        per_request_ms=median(lambda m: 1e3 * m.target_phase_s / m.requests),
        cpu_us_per_request=median(lambda m: 1e6 * (m.cpu_s - m.cpu_at_first_s) / m.requests),
        server_cpu_us_per_request=median(
            lambda m: 1e6 * (m.server_cpu_s - m.server_cpu_at_first_s) / m.requests
        ),
        client_busy=median(lambda m: (m.cpu_s - m.cpu_at_first_s) / m.target_phase_s),
        server_busy=median(lambda m: (m.server_cpu_s - m.server_cpu_at_first_s) / m.target_phase_s),
        peak_rss_mb=max(m.peak_rss_mb for m in ms),
        peak_rss_by_role=_peaks_by_role(ms),
        verified=None
        if trial.sample is not None
        else all(r.outputs.get(d) == references.get(d) for r in runs for d in trial.data_sets),
        ok=all(m.exit_code == 0 and m.requests == expected for m in ms),
        measurements=[asdict(m) for m in ms],
    )


def _reference_outputs(runs: Iterable[Run]) -> dict[int, str]:
    """Per data set, the data.json digest asyncdl's runs agree on (or the most common one)."""
    by_set: dict[int, Counter[str]] = {}
    for run in sorted(runs, key=lambda r: r.trial.contender != "asyncdl"):
        for data_set, digest in run.outputs.items():
            by_set.setdefault(data_set, Counter())[digest] += 1
    return {d: digests.most_common(1)[0][0] for d, digests in by_set.items()}


def goals(rows: list[Row]) -> list[Goal]:
    """The targets of issue 4, each with what was measured."""
    out = [_ideal_goal(rows, 64, 0.9), _ideal_goal(rows, 256, 0.8)]
    out += _thread_pool_goals(rows)
    out.append(_seed_goal(rows))
    out += [_memory_goal(rows, job, 150.0) for job in (SINGLE, BULK)]
    out.append(_cpu_goal(rows))
    return out + _workers_goals(rows)


def _workers_goals(rows: list[Row]) -> list[Goal]:
    """The targets of issue 10: two Dask workers against one process (bulk run), client CPU."""
    out = []
    wide = _find(rows, "asyncdl_workers", BULK, 256)
    strict = None if wide is None else wide.strict_ideal_over_actual
    out.append(
        Goal(
            "(issue 10) asyncdl --workers 2 >= 0.75 of the strict ideal, bulk run at C = 256",
            "not measured" if strict is None else f"{strict:.2f}",
            None if strict is None else strict >= 0.75,
        )
    )
    for c, goal in ((256, "faster than"), (64, "no slower than")):
        single, workers = _find(rows, "asyncdl", BULK, c), _find(rows, "asyncdl_workers", BULK, c)
        text = f"(issue 10) asyncdl --workers 2 {goal} one process, bulk run at C = {c}"
        if single is None or workers is None:
            out.append(Goal(text, "not measured", None))
            continue
        measured = f"{workers.wall_s:.2f} s vs {single.wall_s:.2f} s"
        met = workers.wall_s < single.wall_s if c == 256 else workers.wall_s <= single.wall_s
        out.append(Goal(text, measured, met))
    single = _find(rows, "asyncdl", BULK, 256)
    text = "(issue 10) asyncdl's client CPU <= 250 µs per target request, bulk run at C = 256"
    if single is None:
        out.append(Goal(text, "not measured", None))
    else:
        cpu = single.cpu_us_per_request
        out.append(Goal(text, f"{cpu:.0f} µs", cpu <= 250))
    return out


def _find(rows: list[Row], contender: str, job: str, concurrency: int) -> Row | None:
    key = (contender, job, concurrency)
    return next((r for r in rows if (r.contender, r.job, r.concurrency) == key), None)


def _ideal_goal(rows: list[Row], concurrency: int, share: float) -> Goal:
    goal = f"asyncdl >= {share:g} of the ideal at C = {concurrency}"
    row = _find(rows, "asyncdl", SINGLE, concurrency)
    if row is None:
        return Goal(goal, "not measured", None)
    return Goal(goal, f"{row.ideal_over_actual:.2f}", row.ideal_over_actual >= share)


def _thread_pool_goals(rows: list[Row]) -> list[Goal]:
    speedups = {}
    for ours in (r for r in rows if r.contender == "asyncdl" and r.job == SINGLE):
        pool = _find(rows, "thread_pool", SINGLE, ours.concurrency)
        if pool is not None:
            speedups[ours.concurrency] = pool.wall_s / ours.wall_s
    every = "; ".join(f"{x:.2f}x at C = {c}" for c, x in speedups.items()) or "not measured"
    at_256 = speedups.get(256)
    return [
        Goal(
            "asyncdl faster than the thread pool at every C",
            every,
            all(x > 1 for x in speedups.values()) if speedups else None,
        ),
        Goal(
            "asyncdl >= 2x the thread pool at C = 256",
            "not measured" if at_256 is None else f"{at_256:.2f}x",
            None if at_256 is None else at_256 >= 2,
        ),
    ]


def _seed_goal(rows: list[Row]) -> Goal:
    goal = "asyncdl >= 30x faster than the sequential seed"
    seed = _find(rows, "seed", SINGLE, 1)
    ours = [r for r in rows if r.contender == "asyncdl" and r.job == SINGLE]
    if seed is None or not ours:
        return Goal(goal, "not measured", None)
    best = min(ours, key=lambda r: r.wall_s)
    speedup = seed.wall_s / best.wall_s
    return Goal(goal, f"{speedup:.0f}x (at C = {best.concurrency})", speedup >= 30)


def _memory_goal(rows: list[Row], job: str, limit_mb: float) -> Goal:
    goal = f"asyncdl peak RSS <= {limit_mb:g} MB, {'one data set' if job == SINGLE else 'bulk run'}"
    ours = [r for r in rows if r.contender == "asyncdl" and r.job == job]
    if not ours:
        return Goal(goal, "not measured", None)
    peak = max(r.peak_rss_mb for r in ours)
    return Goal(goal, f"{peak:.0f} MB", peak <= limit_mb)


def _cpu_goal(rows: list[Row]) -> Goal:
    goal = "asyncdl's CPU per target request below the server's (the server saturates first)"
    ours = [r for r in rows if r.contender == "asyncdl"]
    if not ours:
        return Goal(goal, "not measured", None)
    measured = "; ".join(
        f"{r.cpu_us_per_request:.0f} vs {r.server_cpu_us_per_request:.0f} µs "
        f"({r.job}, C = {r.concurrency})"
        for r in ours
    )
    return Goal(
        goal, measured, all(r.cpu_us_per_request < r.server_cpu_us_per_request for r in ours)
    )
