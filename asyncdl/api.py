"""The library's entry points: ``fetch`` (and ``fetch_sync``), ``survey`` (a dry run) and
``verify`` (fetched data sets checked against their SHA-256)."""

from __future__ import annotations

import asyncio
import importlib
import os
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import outputs
from .aio import all_of, both, run
from .allensdk_cache import AllenSdkCache
from .cache import cache_root
from .config import LEGACY_WARNING, FetchOptions, LegacyVolumesWarning
from .dataset import RunContext, refuse_mixing
from .errors import UsageError
from .events import Events, LogReporter, Tee
from .fetcher import HttpClient, Tally
from .pipeline import Pipeline
from .plan import RunPlan
from .planning import Forecast, Measures, forecast, survey_data_sets
from .results import DataSetResult, Survey, Verdict
from .sources import VolumeSource, counted_targets
from .status import disk_use, outlook
from .store import DataSetStore, chosen_data_sets
from .urls import Endpoints, data_set_id

if TYPE_CHECKING:
    from distributed import Client as DaskClient


async def fetch(
    data_sets: Iterable[int | str],
    out_dir: str | Path,
    *,
    options: FetchOptions | None = None,
    endpoints: Endpoints | None = None,
    cache_dir: str | Path | None = None,
    events: Events | None = None,
    client: DaskClient | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> list[DataSetResult]:
    """Fetch the streamlines of ``data_sets`` into ``out_dir/<id>/``; one result per data set.

    A data set that fails (unknown id, bad volume) or has failed targets gets ``complete=False``
    and the others go on; nothing is silently dropped. Running the same call again resumes: complete
    data sets are skipped and only unanswered targets are requested. Results made with other
    parameters are refused (``UsageError``) unless ``options.restart`` is set. If results or the
    cache cannot be written (disk full, permissions), the run stops with a ``StorageError``, and a
    server whose TLS certificate does not verify (or that does not speak TLS) stops it with a
    ``TLSError``; what was answered is on disk, and the same call resumes once the cause is gone.

    The data sets are spread over a Dask cluster's workers (one task each) with ``client``, an
    asynchronous ``distributed.Client``; with ``workers``, a local cluster of that many processes
    started for the call; or with ``scheduler``, the address of a running one (the ``dask`` extra).
    Under ``concurrency="auto"`` each worker finds its own limit; a fixed ``concurrency`` (and
    ``rate``) is shared among the workers that have work. The results and files are the same.
    ``out_dir`` must be on a file system they all see.

    What happens is told to ``events`` and logged by the ``asyncdl`` logger (INFO per finished
    data set, WARNING per failure, DEBUG per retry). ``progress`` draws live bars, in a terminal
    (on stderr) or in a Jupyter notebook, and a table at the end.
    """
    if sum(x is not None for x in (client, workers, scheduler)) > 1:
        raise UsageError(
            "give at most one of client, workers (--workers) and scheduler (--scheduler)"
        )
    options, endpoints = options or FetchOptions(), endpoints or Endpoints()
    _warn_if_legacy(options, endpoints)  # before anything can fail: a caller sees it in any case
    outputs.require(options.formats)
    if options.allensdk_cache is not None:  # a bad manifest is a usage error before any request
        AllenSdkCache.open(options.allensdk_cache)
    plan = RunPlan.make(
        data_sets, out_dir, options=options, endpoints=endpoints, cache_dir=cache_dir
    )
    # Before any request: never mix old and new results.
    refuse_mixing(plan.out, plan.ids, plan.params, plan.options.restart)
    ahead = await asyncio.to_thread(outlook, plan.out, plan.ids, restart=plan.options.restart)
    unknown = [ds for ds in plan.ids if ds not in ahead.complete and ds not in ahead.targets]
    counted = await asyncio.to_thread(
        counted_targets, plan.cache, plan.endpoints, options.volumes, unknown, options.density_range
    )
    started = time.monotonic()
    with ExitStack() as shown:
        listeners = [LogReporter(), *([events] if events is not None else [])]
        if progress:
            from .progress import RichProgress

            listeners.append(shown.enter_context(RichProgress()))
        tell = Tee(*listeners)
        tell.planned(sorted(ahead.complete), {**counted, **ahead.targets})
        if client is not None or workers is not None or scheduler is not None:
            results = await _on_dask(
                plan, tell, client=client, workers=workers, scheduler=scheduler
            )
        else:
            results = await _locally(plan, tell)
        tell.finished(results, time.monotonic() - started)
    return results


async def _locally(plan: RunPlan, events: Events) -> list[DataSetResult]:
    """``fetch`` in this process."""
    async with HttpClient(
        plan.options, on_redirect=events.redirected, on_limit=events.limit_changed
    ) as http:
        source = VolumeSource(
            http,
            plan.endpoints,
            plan.cache,
            plan.options.volumes,
            allensdk=plan.options.allensdk_cache,
        )
        ctx = RunContext(plan, http, source, events)
        events.started(plan.ids)
        async with Pipeline(ctx) as pipeline:
            return await all_of(*(pipeline.run(data_set) for data_set in plan.ids))


async def _on_dask(
    plan: RunPlan,
    events: Events,
    *,
    client: DaskClient | None,
    workers: int | None,
    scheduler: str | None,
) -> list[DataSetResult]:
    """``fetch`` on Dask. The volumes every data set needs are fetched here once, while Dask is
    imported (in a thread: it takes a CPU-bound half second) and the cluster's workers start."""
    async with AsyncExitStack() as stack:
        shared = asyncio.create_task(_shared_volumes(plan, events))
        stack.push_async_callback(_settle, shared)  # if what follows fails, it is stopped
        await asyncio.to_thread(importlib.import_module, "asyncdl.cluster")
        from .cluster import connect, fetch_on_cluster, ready

        dask = client
        if dask is None:  # entered here: a distributed.Client must be left in its own task
            dask = await stack.enter_async_context(connect(workers=workers, scheduler=scheduler))
        tract_ids, addresses = await both(shared, ready(dask, plan.out))
        return await fetch_on_cluster(dask, addresses, tract_ids, plan, events)


async def _settle(task: asyncio.Task[Any]) -> None:
    """Stop ``task`` if it still runs, and collect what it ended with."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _shared_volumes(plan: RunPlan, events: Events) -> frozenset[int] | None:
    """The fiber volume and the tract mask in the cache, for the workers; the tract ids."""
    async with HttpClient(plan.options, on_redirect=events.redirected) as http:
        source = VolumeSource(
            http,
            plan.endpoints,
            plan.cache,
            plan.options.volumes,
            allensdk=plan.options.allensdk_cache,
        )
        await source.prefetch_shared(Tally())
        return source.tract_ids


def legacy_warning(options: FetchOptions, endpoints: Endpoints) -> str | None:
    """Why legacy volumes from the real Allen servers are asked for at one's own risk, if they are."""
    return LEGACY_WARNING if options.volumes == "legacy" and endpoints.is_allen_api else None


def _warn_if_legacy(options: FetchOptions, endpoints: Endpoints) -> None:
    if (message := legacy_warning(options, endpoints)) is not None:
        warnings.warn(message, LegacyVolumesWarning, stacklevel=3)


def fetch_sync(
    data_sets: Iterable[int | str], out_dir: str | Path, **kwargs: Any
) -> list[DataSetResult]:
    """``fetch`` for code that is not async: scripts, and notebook cells (where an event loop runs
    already, the fetch runs on its own loop in a worker thread, where ``events`` are then called).
    Ctrl-C, or a notebook's interrupt, stops the run and raises ``KeyboardInterrupt`` once
    everything answered is on disk: the same call resumes."""
    return run(fetch(data_sets, out_dir, **kwargs))


async def survey(
    data_sets: Iterable[int | str],
    *,
    options: FetchOptions | None = None,
    endpoints: Endpoints | None = None,
    cache_dir: str | Path | None = None,
    on_survey: Callable[[Survey], None] | None = None,
) -> list[Survey]:
    """A dry run: download only the volumes into the cache (the user's, as for ``fetch``, unless
    ``cache_dir``; a later ``fetch`` reuses them), count each data set's targets,
    and ask a few of them (``planning.SAMPLES``) to time the run; ``on_survey`` is told of each
    data set as it is counted. ``planning.forecast`` sums it up (the command line's dry run)."""
    surveys, _, _ = await plan_run(
        data_sets, options=options, endpoints=endpoints, cache_dir=cache_dir, on_survey=on_survey
    )
    return surveys


async def plan_run(
    data_sets: Iterable[int | str],
    *,
    options: FetchOptions | None = None,
    endpoints: Endpoints | None = None,
    cache_dir: str | Path | None = None,
    on_survey: Callable[[Survey], None] | None = None,
) -> tuple[list[Survey], Forecast, Measures]:
    """``survey``, and what the whole run will take (``Forecast``)."""
    options = options or FetchOptions()
    endpoints = endpoints or Endpoints()
    _warn_if_legacy(options, endpoints)
    ids = list(dict.fromkeys(data_set_id(d) for d in data_sets))
    cache = cache_root(cache_dir)
    surveys, measures = await survey_data_sets(
        ids, options=options, endpoints=endpoints, cache_dir=cache, on_survey=on_survey
    )
    cached = await asyncio.to_thread(disk_use, cache)
    ahead = forecast(
        surveys,
        measures,
        concurrency=options.max_in_flight,
        rate=options.rate,
        cache_bytes=cached.total,
    )
    return (
        [
            replace(s, estimate_seconds=s.targets / ahead.rate) if ahead.rate and not s.error else s
            for s in surveys
        ],
        ahead,
        measures,
    )


def verify(
    out_dir: str | Path,
    data_sets: Iterable[int | str] | None = None,
    *,
    each: Callable[[Verdict], None] | None = None,
) -> list[Verdict]:
    """Check fetched data sets (``data_sets``, or every ``out_dir/<id>``) byte for byte: each
    final file against the size and SHA-256 its summary.json recorded when it was written.

    One ``Verdict`` per data set, in order (also given to ``each`` as it comes). A damaged data
    set is marked so in its summary.json, and the next ``fetch`` of it repairs it. Each is checked
    under its lock: one that another process holds (a fetch may be writing it) is ``busy``.
    """
    out = Path(out_dir)
    ids = chosen_data_sets(out, data_sets)
    verdicts = []
    # Hashing releases the GIL: a thread per core reads and hashes files side by side.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for verdict in pool.map(lambda data_set: _verify(DataSetStore(out, data_set)), ids):
            verdicts.append(verdict)
            if each is not None:
                each(verdict)
    return verdicts


def _verify(store: DataSetStore) -> Verdict:
    """``store.verify()`` under the data set's lock."""
    with store.locked("verifying") as holder:
        if holder is not None:
            return Verdict(store.data_set, "busy", f"held by {holder}; not checked")
        return store.verify()
