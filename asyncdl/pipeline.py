"""The run: prepare data sets (volumes -> targets) ahead, fan targets out to workers, finish each.

    prepare (``prefetch`` data sets ahead) --> bounded queue of targets --> ``concurrency`` workers
                                                                               |
    data.json + summary.json  <-- finish (when a data set's last answer is in) <-- lines.ndjson

The queue is shared by all data sets, so the next data set's targets are already in flight while the
previous one's last answers come back; the queue's bound gives back-pressure, so memory stays flat
whatever the number of data sets.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .aio import all_of
from .brainrender import has_brainrender, write_brainrender
from .config import FetchOptions
from .errors import AsyncdlError, FetchError, UsageError
from .events import Events
from .fetcher import HttpClient, Tally
from .responses import rows
from .sources import VolumeSource
from .store import DataSetStore, Progress
from .targets import Targets
from .urls import Endpoints, data_set_id


@dataclass
class DataSetResult:
    """How one data set went; also written to ``OUT/<id>/summary.json``."""

    data_set: int
    complete: bool
    targets: int = 0
    lines: int = 0
    requests: int = 0
    retries: int = 0
    failures: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    directory: str = ""
    #: Targets already answered by an earlier, interrupted run of the same command.
    resumed: int = 0
    #: Already complete from an earlier run: nothing was requested.
    skipped: bool = False

    @property
    def status(self) -> str:
        """``ok``, ``skipped`` (complete already), ``incomplete`` (some targets failed) or ``failed``."""
        if self.skipped:
            return "skipped"
        if self.complete:
            return "ok"
        return "incomplete" if self.targets else "failed"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


@dataclass
class _DataSetRun:
    """A data set whose targets are being fetched."""

    store: DataSetStore
    targets: Targets
    injection: npt.NDArray[np.float64]
    tally: Tally
    started: float
    progress: Progress
    done: int = 0
    lines: int = 0
    failures: int = 0
    all_queued: bool = False
    finishing: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.done = len(self.progress.done)
        self.lines = self.progress.lines


async def fetch(
    data_sets: Iterable[int | str],
    out_dir: str | Path,
    *,
    options: FetchOptions | None = None,
    endpoints: Endpoints | None = None,
    cache_dir: str | Path | None = None,
    events: Events | None = None,
) -> list[DataSetResult]:
    """Fetch the streamlines of ``data_sets`` into ``out_dir/<id>/``; one result per data set.

    A data set that fails (unknown id, bad volume) or has failed targets gets ``complete=False``
    and the others go on; nothing is silently dropped. Running the same call again resumes: complete
    data sets are skipped and only unanswered targets are requested. Results made with other
    parameters are refused (``UsageError``) unless ``options.restart`` is set.
    """
    options = options or FetchOptions()
    endpoints = endpoints or Endpoints()
    ids = list(dict.fromkeys(data_set_id(d) for d in data_sets))
    if not ids:
        raise UsageError("no data set ids given")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {out}: {exc.strerror}") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {out} is not writable")
    params = run_parameters(options, endpoints)
    for data_set in ids:  # before any request: never mix old and new results
        DataSetStore(out, data_set).check(params, options.restart)
    cache = Path(cache_dir) if cache_dir is not None else out / ".cache"
    async with HttpClient(options) as client:
        source = VolumeSource(client, endpoints, cache, options.volumes)
        run = _Run(client, source, endpoints, out, options, params, events or Events())
        return await run.run(ids)


@dataclass(frozen=True)
class Survey:
    """What fetching a data set would take: its targets, and a rough time at the concurrency."""

    data_set: int
    targets: int = 0
    injection_voxels: int = 0
    #: ``targets`` x the fastest answer seen / concurrency: a floor, not a promise.
    estimate_seconds: float | None = None
    error: str | None = None


async def survey(
    data_sets: Iterable[int | str],
    *,
    options: FetchOptions | None = None,
    endpoints: Endpoints | None = None,
    cache_dir: str | Path,
) -> list[Survey]:
    """A dry run: download only the volumes (into ``cache_dir``) and count each data set's targets."""
    options = options or FetchOptions()
    endpoints = endpoints or Endpoints()
    ids = list(dict.fromkeys(data_set_id(d) for d in data_sets))
    async with HttpClient(options) as client:
        source = VolumeSource(client, endpoints, Path(cache_dir), options.volumes)
        slots = asyncio.Semaphore(options.prefetch)

        async def one(data_set: int) -> tuple[int, int] | str:
            async with slots:
                try:
                    targets, injection = await source.select(data_set, options, Tally())
                except (AsyncdlError, OSError) as exc:
                    return _explain(exc)
                return len(targets), len(injection)

        counts = await all_of(*(one(data_set) for data_set in ids))
        latency = client.fastest_answer
    surveys = []
    for data_set, count in zip(ids, counts, strict=True):
        if isinstance(count, str):
            surveys.append(Survey(data_set, error=count))
        else:
            estimate = count[0] * latency / options.concurrency if latency < math.inf else None
            surveys.append(Survey(data_set, count[0], count[1], estimate))
    return surveys


def run_parameters(options: FetchOptions, endpoints: Endpoints) -> dict[str, Any]:
    """What a data set's results depend on; a resumed run must use the same."""
    return {
        "density_range": list(options.density_range),
        "injection_threshold": options.injection_threshold,
        "volumes": options.volumes,
        "source": endpoints.name,
    }


def fetch_sync(
    data_sets: Iterable[int | str], out_dir: str | Path, **kwargs: Any
) -> list[DataSetResult]:
    """``fetch`` for scripts: runs its own event loop (in a notebook, ``await fetch(...)`` instead)."""
    return asyncio.run(fetch(data_sets, out_dir, **kwargs))


class _Run:
    def __init__(
        self,
        client: HttpClient,
        source: VolumeSource,
        endpoints: Endpoints,
        out: Path,
        options: FetchOptions,
        params: dict[str, Any],
        events: Events,
    ) -> None:
        self.client = client
        self.source = source
        self.endpoints = endpoints
        self.out = out
        self.options = options
        self.params = params
        self.events = events
        self.results: dict[int, DataSetResult] = {}
        self._open: list[DataSetStore] = []
        self._tg: asyncio.TaskGroup | None = None

    async def run(self, ids: list[int]) -> list[DataSetResult]:
        queue: asyncio.Queue[tuple[_DataSetRun, int] | None] = asyncio.Queue(
            maxsize=2 * self.options.concurrency
        )
        self.events.started(ids)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                workers = [
                    tg.create_task(self._worker(queue)) for _ in range(self.options.concurrency)
                ]
                await self._dispatch(ids, queue, tg)
                for _ in workers:
                    await queue.put(None)
        finally:
            for store in self._open:
                store.close()
        return [self.results[i] for i in ids]

    async def _dispatch(
        self,
        ids: list[int],
        queue: asyncio.Queue[tuple[_DataSetRun, int] | None],
        tg: asyncio.TaskGroup,
    ) -> None:
        """Prepare up to ``prefetch`` data sets ahead and queue their targets in order."""
        upcoming = iter(ids)
        preparing: deque[asyncio.Task[_DataSetRun | None]] = deque()

        def top_up() -> None:
            while len(preparing) < self.options.prefetch:
                nxt = next(upcoming, None)
                if nxt is None:
                    return
                preparing.append(tg.create_task(self._prepare(nxt)))

        top_up()
        while preparing:
            run = await preparing.popleft()
            top_up()
            if run is None:
                continue
            for rank in range(len(run.targets)):
                if rank not in run.progress.done:
                    await queue.put((run, rank))
            run.all_queued = True
            self._maybe_finish(run)

    async def _prepare(self, data_set: int) -> _DataSetRun | None:
        """Volumes in, targets out; a data set that cannot be prepared is recorded as failed."""
        started = time.monotonic()
        tally = Tally()
        store = DataSetStore(self.out, data_set)
        summary = None if self.options.restart else store.completed(self.params)
        if summary is not None:
            if self.options.brainrender and not has_brainrender(store.dir, data_set):
                await asyncio.to_thread(write_brainrender, store.dir)
            self._report(
                DataSetResult(
                    data_set,
                    True,
                    targets=summary["targets"],
                    lines=summary["lines"],
                    directory=str(store.dir),
                    resumed=summary["targets"],
                    skipped=True,
                )
            )
            return None
        try:
            targets, coords = await self.source.select(data_set, self.options, tally)
            progress = store.begin(self.params, targets.index, self.options.restart)
        except (AsyncdlError, OSError) as exc:
            self._record(
                store,
                DataSetResult(
                    data_set,
                    False,
                    requests=tally.requests,
                    retries=tally.retries,
                    bytes=tally.bytes,
                    seconds=time.monotonic() - started,
                    error=_explain(exc),
                    directory=str(store.dir),
                ),
            )
            return None
        self._open.append(store)
        self.events.data_set_started(data_set, len(targets), len(progress.done))
        return _DataSetRun(store, targets, coords, tally, started, progress)

    async def _worker(self, queue: asyncio.Queue[tuple[_DataSetRun, int] | None]) -> None:
        while (job := await queue.get()) is not None:
            run, rank = job
            index = run.targets.index[rank].tolist()
            coord = run.targets.coord[rank].tolist()
            data_set = run.store.data_set
            url = self.endpoints.target_spatial(coord, data_set)
            tally = Tally(on_retry=self._retry_reporter(data_set, url))
            try:
                records = await self.client.get_json(url, tally, rows)
            except FetchError as exc:
                run.store.add_failure(rank, index, coord, str(exc), tally.requests)
                run.failures += 1
                self.events.target_failed(data_set, rank, str(exc))
                ok = False
            else:
                run.store.add_lines(rank, index, coord, records)
                run.lines += len(records)
                ok = True
            run.tally.add(tally)
            run.done += 1
            self.events.target_done(data_set, ok)
            self._maybe_finish(run)

    def _retry_reporter(self, data_set: int, url: str) -> Callable[[BaseException, float], None]:
        def report(exc: BaseException, wait: float) -> None:
            self.events.retry(data_set, url, str(exc) or type(exc).__name__, wait)

        return report

    def _maybe_finish(self, run: _DataSetRun) -> None:
        if run.all_queued and run.done == len(run.targets) and not run.finishing:
            run.finishing = True
            assert self._tg is not None
            self._tg.create_task(self._finish(run))

    async def _finish(self, run: _DataSetRun) -> None:
        store = run.store
        store.close()
        self._open.remove(store)
        lines = await asyncio.to_thread(store.finalize, len(run.targets), run.injection)
        if lines != run.lines:  # the file on disk is the truth; a mismatch is a bug
            raise RuntimeError(f"data set {store.data_set}: wrote {run.lines} lines, found {lines}")
        if self.options.brainrender:
            await asyncio.to_thread(write_brainrender, store.dir)
        t = run.tally
        error = f"{run.failures} target(s) failed; see failures.ndjson" if run.failures else None
        self._record(
            store,
            DataSetResult(
                store.data_set,
                run.failures == 0,
                targets=len(run.targets),
                lines=lines,
                requests=t.requests,
                retries=t.retries,
                failures=run.failures,
                bytes=t.bytes,
                seconds=time.monotonic() - run.started,
                error=error,
                directory=str(store.dir),
                resumed=len(run.progress.done),
            ),
        )

    def _record(self, store: DataSetStore, result: DataSetResult) -> None:
        """Write a data set's summary.json, then report it."""
        store.write_summary({**result.as_dict(), "parameters": self.params})
        self._report(result)

    def _report(self, result: DataSetResult) -> None:
        self.results[result.data_set] = result
        self.events.data_set_done(result)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, FetchError) and exc.url:
        return f"{exc} ({exc.url})"
    return str(exc)
