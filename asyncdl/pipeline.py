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
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .config import FetchOptions
from .errors import AsyncdlError, FetchError, UsageError
from .fetcher import HttpClient, Tally
from .responses import rows
from .sources import VolumeSource
from .store import DataSetStore
from .targets import Targets, injection_coordinates, select_targets
from .urls import Endpoints, data_set_id

ResultCallback = Callable[["DataSetResult"], None]


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _DataSetRun:
    """A data set whose targets are being fetched."""

    store: DataSetStore
    targets: Targets
    injection: npt.NDArray[np.float64]
    tally: Tally
    started: float
    done: int = 0
    lines: int = 0
    failures: int = 0
    all_queued: bool = False
    finishing: bool = field(default=False, repr=False)


async def fetch(
    data_sets: Iterable[int | str],
    out_dir: str | Path,
    *,
    options: FetchOptions | None = None,
    endpoints: Endpoints | None = None,
    cache_dir: str | Path | None = None,
    on_result: ResultCallback | None = None,
) -> list[DataSetResult]:
    """Fetch the streamlines of ``data_sets`` into ``out_dir/<id>/``; one result per data set.

    A data set that fails (unknown id, bad volume) or has failed targets gets ``complete=False``
    and the others go on; nothing is silently dropped.
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
    cache = Path(cache_dir) if cache_dir is not None else out / ".cache"
    async with HttpClient(options) as client:
        source = VolumeSource(client, endpoints, cache, options.volumes)
        return await _Run(client, source, endpoints, out, options, on_result).run(ids)


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
        on_result: ResultCallback | None,
    ) -> None:
        self.client = client
        self.source = source
        self.endpoints = endpoints
        self.out = out
        self.options = options
        self.on_result = on_result
        self.results: dict[int, DataSetResult] = {}
        self._open: list[DataSetStore] = []
        self._tg: asyncio.TaskGroup | None = None

    async def run(self, ids: list[int]) -> list[DataSetResult]:
        queue: asyncio.Queue[tuple[_DataSetRun, int] | None] = asyncio.Queue(
            maxsize=2 * self.options.concurrency
        )
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
                await queue.put((run, rank))
            run.all_queued = True
            self._maybe_finish(run)

    async def _prepare(self, data_set: int) -> _DataSetRun | None:
        """Volumes in, targets out; a data set that cannot be prepared is recorded as failed."""
        started = time.monotonic()
        tally = Tally()
        store = DataSetStore(self.out, data_set)
        source = self.source
        try:
            density, injection = await _all(
                source.data_set_volume(data_set, "density", tally),
                source.data_set_volume(data_set, "injection", tally),
            )
            allowed = await source.allowed_mask(density, tally)
            targets = await asyncio.to_thread(
                select_targets, density, allowed, self.options.density_range
            )
            coords = injection_coordinates(injection, self.options.injection_threshold)
            store.open()
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
        return _DataSetRun(store, targets, coords, tally, started)

    async def _worker(self, queue: asyncio.Queue[tuple[_DataSetRun, int] | None]) -> None:
        while (job := await queue.get()) is not None:
            run, rank = job
            index = run.targets.index[rank].tolist()
            coord = run.targets.coord[rank].tolist()
            url = self.endpoints.target_spatial(coord, run.store.data_set)
            tally = Tally()
            try:
                records = await self.client.get_json(url, tally, rows)
            except FetchError as exc:
                run.store.add_failure(rank, index, coord, str(exc), tally.requests)
                run.failures += 1
            else:
                run.store.add_lines(rank, index, coord, records)
                run.lines += len(records)
            run.tally.add(tally)
            run.done += 1
            self._maybe_finish(run)

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
            ),
        )

    def _record(self, store: DataSetStore, result: DataSetResult) -> None:
        summary = result.as_dict()
        summary["options"] = {
            "density_range": list(self.options.density_range),
            "injection_threshold": self.options.injection_threshold,
            "volumes": self.options.volumes,
            "base_url": self.endpoints.base_url,
        }
        store.dir.mkdir(parents=True, exist_ok=True)
        store.write_summary(summary)
        self.results[result.data_set] = result
        if self.on_result is not None:
            self.on_result(result)


async def _all(*aws: Awaitable[Any]) -> list[Any]:
    """Await all concurrently (structured); if any fails, cancel the rest and raise its error."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_await(aw)) for aw in aws]
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return [task.result() for task in tasks]


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


def _explain(exc: BaseException) -> str:
    if isinstance(exc, FetchError) and exc.url:
        return f"{exc} ({exc.url})"
    return str(exc)
