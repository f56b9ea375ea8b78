"""Which runs a benchmark makes (pure): contender x job x concurrency, sampled or not, how often."""

from __future__ import annotations

from dataclasses import dataclass

from .measure import Measurement
from .settings import Settings

SINGLE, BULK = "single", "bulk"
#: What a trial's run does: the job; asyncdl's ``--dry-run`` of it on an empty cache (its volume
#: phase, for the strict ideal); the job again once it is complete (a run's fixed cost: start-up,
#: and for ``--workers`` the Dask cluster's start and close).
FETCH, DRY_RUN, NOTHING_TO_DO = "fetch", "dry run", "nothing to do"


@dataclass(frozen=True)
class Trial:
    """One configuration to measure, ``repeats`` times."""

    contender: str
    job: str
    data_sets: tuple[int, ...]
    concurrency: int
    #: Target requests timed, to extrapolate from (None: the whole job is done).
    sample: int | None
    repeats: int
    kind: str = FETCH


@dataclass(frozen=True)
class Run:
    """One run of a trial: the measurement, and a digest of each data.json it wrote."""

    trial: Trial
    measurement: Measurement
    outputs: dict[int, str]


def plan(settings: Settings) -> list[Trial]:
    """The trials of a benchmark, in the order of the report.

    The sequential seed is timed on a sample; so are the thread pool and naive asyncio at C = 1,
    which then do what it does at its speed. Runs that take a minute or more (C = 1, and the
    baselines' bulk run) are made once; the others ``settings.repeats`` times. The bulk run is also
    made by asyncdl over two Dask workers (a cluster of its own, and a running one) and, at the
    largest C, without uvloop; each job has a dry run, and the bulk run a run with nothing left to
    do, in one process and on Dask.
    """
    single, bulk, repeats = settings.single_ids, settings.bulk_ids, settings.repeats
    trials = [Trial("seed", SINGLE, single, 1, settings.sample, 1)]
    for contender in ("thread_pool", "naive_asyncio"):
        for c in settings.concurrencies:
            sample = settings.sample if c == 1 else None
            trials.append(Trial(contender, SINGLE, single, c, sample, 1 if c == 1 else repeats))
    trials += [
        Trial("asyncdl", SINGLE, single, c, None, 1 if c == 1 else repeats)
        for c in settings.concurrencies
    ]
    if bulk and settings.bulk_concurrencies:
        c0 = settings.bulk_concurrencies[0]
        trials.append(Trial("thread_pool", BULK, bulk, c0, None, 1))
        top = max(settings.bulk_concurrencies)
        trials += [
            Trial(contender, BULK, bulk, c, None, repeats)
            for contender in ("asyncdl", "asyncdl_workers", "asyncdl_cluster")
            for c in settings.bulk_concurrencies
        ]
        trials.append(Trial("asyncdl_no_uvloop", BULK, bulk, top, None, repeats))
        trials += [
            Trial(contender, BULK, bulk, top, None, repeats, NOTHING_TO_DO)
            for contender in ("asyncdl", "asyncdl_workers", "asyncdl_cluster")
        ]
    top_single = max(settings.concurrencies, default=1)
    trials.append(Trial("asyncdl", SINGLE, single, top_single, None, repeats, DRY_RUN))
    if bulk and settings.bulk_concurrencies:
        trials.append(Trial("asyncdl", BULK, bulk, top, None, repeats, DRY_RUN))
    return [t for t in trials if t.contender in settings.contenders]
