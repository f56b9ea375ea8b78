"""The run on one Dask worker: ``RunPlugin`` sets it up, ``fetch_data_set`` is its task.

``RunPlugin`` is the run's plan and nothing else: frozen, and pickled once by the client. Dask
sends those bytes to every worker, one that joins later included, and each unpickles its own copy
and calls ``setup``. What ``setup`` opens (the HTTP client, the pipeline, the events) is a
``WorkerRun``, kept in this process's ``_RUNS``, never on the plugin: so pickling the plugin, now
or at any time, can only ever carry the plan.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from distributed import WorkerPlugin, get_worker

from ..dataset import RunContext
from ..events import Events
from ..fetcher import HttpClient
from ..pipeline import Pipeline
from ..plan import RunPlan
from ..results import DataSetResult
from ..sources import VolumeSource
from .messages import Batch, Failed, Redirect, Repair, Retry, Started, Waiting

if TYPE_CHECKING:
    from distributed import Worker

#: How often a worker sends its progress (one message per interval, however many answers).
FLUSH_SECONDS = 0.2
#: How often a task checks that the scheduler still wants it (a cancelled task must stop writing).
WATCH_SECONDS = 0.2


@dataclass(frozen=True, eq=False)
class RunPlugin(WorkerPlugin):
    """One run, as every worker gets it: set up by ``setup``, closed by ``teardown``."""

    #: The run's name: its plugin's, its tasks' key prefix and its event topic.
    name: str
    plan: RunPlan
    #: Each worker's first share of the run's bound (by address; a worker that joins later starts
    #: with none), or None: nothing is shared (``-c auto``), each worker finds its own limit.
    initial: Mapping[str, int] | None
    tract_ids: frozenset[int] | None

    async def setup(self, worker: Worker) -> None:
        key = (worker.address, self.name)
        assert key not in _RUNS, f"run {self.name} is set up twice on {worker.address}"
        _RUNS[key] = await WorkerRun.open(self, worker)

    async def teardown(self, worker: Worker) -> None:
        run = _RUNS.pop((worker.address, self.name), None)
        if run is not None:
            await run.close()


class WorkerRun:
    """What one worker holds for one run: its HTTP client, pipeline and events, open until
    ``close``. Its slots cover the run's whole bound (any share may come its way) and it uses its
    share; or, with nothing shared, its own controller's limit, as a run in one process does."""

    def __init__(
        self, http: HttpClient, pipeline: Pipeline, events: WorkerEvents, stack: AsyncExitStack
    ) -> None:
        self.http, self.pipeline, self.events = http, pipeline, events
        self._stack = stack  # closes them

    @classmethod
    async def open(cls, plugin: RunPlugin, worker: Worker) -> WorkerRun:
        plan = plugin.plan
        share = None if plugin.initial is None else plugin.initial.get(worker.address, 0)
        async with AsyncExitStack() as stack:
            events = WorkerEvents(worker, plugin.name)
            stack.push_async_callback(events.close)
            http = HttpClient(
                plan.options, on_limit=events.limit_changed, on_redirect=events.redirected
            )
            await stack.enter_async_context(http)
            if share is not None:
                await http.share(share)
            source = VolumeSource(
                http,
                plan.endpoints,
                plan.cache,
                plan.options.volumes,
                tract_ids=plugin.tract_ids,
                allensdk=plan.options.allensdk_cache,
            )
            ctx = RunContext(plan, http, source, events)
            pipeline = await stack.enter_async_context(Pipeline(ctx, lanes=share))
            return cls(http, pipeline, events, stack.pop_all())  # open: nothing is closed here

    async def share(self, slots: int) -> None:
        """Keep to ``slots`` requests at once from now on (returns once it does)."""
        self.pipeline.resize(slots)
        await self.http.share(slots)
        # Told now: the client's sum of the limits must not wait for this worker's next request
        # (a worker whose share went to 0 makes none).
        self.events.limit_changed(self.http.limits.limit)

    async def fetch(self, data_set: int) -> DataSetResult:
        result = await self.pipeline.run(data_set)
        self.events.flush()  # its last answers reach the client before its result does
        return result

    async def close(self) -> None:
        await self._stack.aclose()


#: The runs set up in this process, by worker address (a process may hold several workers) and
#: run name.
_RUNS: dict[tuple[str, str], WorkerRun] = {}


def _running(worker: Worker, run: str) -> WorkerRun:
    try:
        return _RUNS[worker.address, run]
    except KeyError:
        raise RuntimeError(f"run {run} is not set up on {worker.address}") from None


async def take_share(run: str, slots: int, dask_worker: Worker) -> None:
    """On a worker (``Client.run``): keep to ``slots`` requests at once from now on."""
    await _running(dask_worker, run).share(slots)


async def fetch_data_set(run: str, data_set: int) -> DataSetResult:
    """The task: one data set, on this worker's pipeline. It stops itself (cancelled, so its
    files are closed) as soon as the cluster no longer wants it, e.g. after the run was cancelled:
    Dask does not stop a running task by itself."""
    worker = get_worker()
    here = _running(worker, run)
    key = task_key(run, data_set)
    task = asyncio.current_task()
    assert task is not None

    async def watch() -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            state = worker.state.tasks.get(key)
            if state is None or state.state not in ("executing", "long-running"):
                task.cancel()
                return

    watchdog = asyncio.create_task(watch())
    try:
        return await here.fetch(data_set)
    finally:
        watchdog.cancel()


def task_key(run: str, data_set: int) -> str:
    """The Dask key of a run's task for one data set."""
    return f"{run}-{data_set}"


class WorkerEvents(Events):
    """A worker's events, sent to the client in one message every ``FLUSH_SECONDS``."""

    def __init__(self, worker: Worker, topic: str) -> None:
        self.worker, self.topic = worker, topic
        self._batch = Batch(worker.address)
        self._flusher = asyncio.create_task(self._flush_every())

    def limit_changed(self, limit: int) -> None:
        self._batch.limit = limit

    def data_set_waiting(self, data_set: int, holder: str) -> None:
        self._batch.waiting.append(Waiting(data_set, holder))

    def repairing(self, data_set: int, damage: str, remedy: str) -> None:
        self._batch.repairs.append(Repair(data_set, damage, remedy))

    def data_set_started(self, data_set: int, targets: int, resumed: int) -> None:
        self._batch.started.append(Started(data_set, targets, resumed))

    def target_done(self, data_set: int, ok: bool) -> None:
        self._batch.count(data_set, ok)

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        self._batch.retries.append(Retry(data_set, url, error, wait))

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        self._batch.failed.append(Failed(data_set, rank, error))

    def redirected(self, url: str, location: str) -> None:
        self._batch.redirects.append(Redirect(url, location))

    def flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, Batch(self.worker.address)
            self.worker.log_event(self.topic, batch.encode())

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()

    async def close(self) -> None:
        self._flusher.cancel()
        self.flush()
