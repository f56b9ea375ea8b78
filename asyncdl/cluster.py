"""A run spread over the processes and machines of a Dask cluster (``pip install 'asyncdl[dask]'``).

One task per data set, keyed by its id and the run. Each worker holds, for the run, what a local
run holds once: one HTTP client, one volume source and one ``Pipeline`` (a ``WorkerPlugin`` made on
the worker, never pickled), so the data sets it is given share its request queue and its pipe
stays full between them. ``-c`` and ``--rate`` are shared among the workers that have data sets to
fetch (``Shares``): evenly at first, then a worker with nothing left gives its share to the others,
so the last data sets of a run get the whole of ``-c``. Progress comes back in batches through
Dask's event log. Everything else is the local run's: the same
``DataSet`` life, the same files, so resume and a worker that dies mid-data-set are handled by
the per-data-set resume (and ``store`` gives each attempt a ``lines.ndjson`` of its own).

Only ``fetch(..., client=...)`` and the command line's ``--workers``/``--scheduler`` import this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .aio import all_of, both, event_loop_factory
from .config import FetchOptions
from .dataset import RunContext
from .errors import UsageError
from .events import Events
from .fetcher import HttpClient
from .pipeline import Pipeline
from .plan import RunPlan
from .results import DataSetResult
from .sources import VolumeSource
from .store import DataSetStore

try:
    import dask
    import distributed
    from distributed import Client, WorkerPlugin, as_completed, get_worker
    from distributed.scheduler import KilledWorker
except ImportError as exc:  # pragma: no cover (the extra is installed for the tests)
    raise UsageError("running on Dask needs the 'dask' extra: pip install 'asyncdl[dask]'") from exc

if TYPE_CHECKING:
    from distributed import Worker

#: How often a worker sends its progress (one message per interval, however many answers).
FLUSH_SECONDS = 0.2
#: How long the workers of a cluster started for the run may take to start.
WORKERS_TIMEOUT = 300
#: How often a task checks that the scheduler still wants it (a cancelled task must stop writing).
WATCH_SECONDS = 0.2
#: How often the shares of ``-c`` are checked against where the work is (besides after each task).
BALANCE_SECONDS = 0.2


def split(total: int, workers: Sequence[str]) -> dict[str, int]:
    """``total`` slots split as evenly as can be among ``workers`` (the first get the remainder)."""
    each, extra = divmod(total, len(workers)) if workers else (0, 0)
    return {address: each + (i < extra) for i, address in enumerate(workers)}


def first_shares(options: FetchOptions, workers: Sequence[str]) -> dict[str, int]:
    """The shares of ``-c`` the workers start with; each needs at least one slot."""
    if not workers:
        raise UsageError("the Dask cluster has no workers")
    if options.max_in_flight < len(workers):
        raise UsageError(
            f"-c {options.max_in_flight} is less than the {len(workers)} workers: each needs at "
            "least one"
        )
    return split(options.max_in_flight, sorted(workers))


@asynccontextmanager
async def connect(
    *, workers: int | None = None, scheduler: str | None = None
) -> AsyncIterator[Client]:
    """A client of an existing cluster (``scheduler``), or of a local one of ``workers`` processes
    started for the run and closed after it. Workers use uvloop when it is installed."""
    if (workers is None) == (scheduler is None):
        raise UsageError("give either --workers N or --scheduler ADDRESS")
    if scheduler is not None:
        try:
            async with Client(scheduler, asynchronous=True, timeout="10s") as client:
                yield client
        except OSError as exc:
            raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        return
    assert workers is not None
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    loop = "uvloop" if event_loop_factory() is not None else "asyncio"
    with dask.config.set({"distributed.admin.event-loop": loop}):
        cluster = await distributed.LocalCluster(
            n_workers=0,
            # Each task is one data set: a worker runs one while it prepares the next, as a local
            # run does; a worker that is done early takes the next data set, not a fixed half.
            threads_per_worker=FetchOptions().prefetch,
            processes=True,
            asynchronous=True,
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.CRITICAL,
        )
        # The workers start in the background while the run fetches its shared volumes.
        cluster.scale(workers)
    try:
        async with Client(cluster, asynchronous=True) as client:
            yield client
    finally:
        await cast(Awaitable[None], cluster.close())


async def ready(client: Client, out: Path) -> list[str]:
    """The run's workers (addresses), once those of a cluster started for it are up and each has
    been seen to see ``out``."""
    if not getattr(client, "asynchronous", False):
        raise UsageError("fetch(client=...) needs an asynchronous Client (asynchronous=True)")
    workers = await _workers_up(client)
    await _check_shared(client, out)
    return workers


async def fetch_on_cluster(
    client: Client,
    workers: Sequence[str],
    tract_ids: frozenset[int] | None,
    plan: RunPlan,
    events: Events,
) -> list[DataSetResult]:
    """``api.fetch`` on the ``workers`` of a Dask cluster (``ready``), once the shared volumes are
    in the cache and ``tract_ids`` known: the same results, files and guarantees."""
    options, ids = plan.options, plan.ids
    initial = first_shares(options, workers)
    first = min(initial.values())
    events.workers_started(len(workers), first, options.rate_share(first))

    run = f"asyncdl-{secrets.token_hex(6)}"
    relay = _Relay(events)
    client.subscribe_topic(run, relay.receive)
    plugin = RunPlugin(run, plan, initial, tract_ids)
    await client.register_plugin(plugin, name=run)
    futures = {
        client.submit(_fetch_data_set, run, data_set, key=f"{run}-{data_set}", pure=False): data_set
        for data_set in ids
    }
    shares = Shares(client, run, options, initial, events)
    results: dict[int, DataSetResult] = {}

    async def collect() -> None:
        async for future in as_completed(list(futures)):
            data_set = futures[future]
            try:
                result = await future
            except KilledWorker as exc:  # Dask gave up on it: failed here, a rerun resumes it
                result = _killed(plan, data_set, str(exc))
            relay.done(result)
            results[data_set] = result
            shares.wake()
        shares.stop()

    try:
        events.started(ids)
        await both(collect(), shares.follow({f"{run}-{data_set}" for data_set in ids}))
    except BaseException:
        await asyncio.shield(client.cancel(list(futures), force=True))
        raise
    finally:
        client.unsubscribe_topic(run)
        await asyncio.shield(client.unregister_worker_plugin(run))
    return [results[data_set] for data_set in ids]


class Shares:
    """The run's ``-c`` (and ``--rate`` with it), shared among the workers that have work.

    Each check asks the scheduler which workers are running (or hold) the run's tasks and splits
    ``-c`` evenly among them; the others get nothing. Shares are taken before they are given: a
    worker's ``HttpClient.share`` returns only once its requests in flight fit its new share, so
    the whole never exceeds ``-c``. A worker that leaves may still have requests at the server;
    its share is held back for one request timeout before it goes to the others.
    """

    def __init__(
        self,
        client: Client,
        run: str,
        options: FetchOptions,
        initial: Mapping[str, int],
        events: Events,
    ) -> None:
        self.client, self.run, self.options, self.events = client, run, options, events
        #: What each worker holds (or may still hold: a share is counted until it is given up).
        self.granted = dict(initial)
        self._held: list[tuple[float, int]] = []  # (until, slots) of workers that left
        self._wake = asyncio.Event()
        self._done = False

    def wake(self) -> None:
        """Check the shares now (a task ended: its worker may have nothing left)."""
        self._wake.set()

    def stop(self) -> None:
        self._done = True
        self._wake.set()

    async def follow(self, keys: set[str]) -> None:
        """Keep the shares where the run's tasks are, until ``stop``."""
        while not self._done:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BALANCE_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            if not self._done:
                await self.balance(keys)

    async def balance(self, keys: set[str]) -> None:
        assert self.client.scheduler is not None
        processing: dict[str, list[str]] = await self.client.scheduler.processing()
        now = asyncio.get_running_loop().time()
        for address in [a for a in self.granted if a not in processing]:
            self._held.append((now + self.options.timeout, self.granted.pop(address)))
        self._held = [(until, n) for until, n in self._held if until > now]
        busy = sorted(a for a, held in processing.items() if not keys.isdisjoint(held))
        if not busy:
            return  # nothing runs (between tasks, or waiting for workers): leave things as they are
        free = self.options.max_in_flight - sum(n for _, n in self._held)
        want = dict.fromkeys(processing, 0) | split(max(free, 0), busy)
        if all(self.granted.get(a, 0) == n for a, n in want.items()):
            return
        before = dict(self.granted)
        await self._give({a: n for a, n in want.items() if n < self.granted.get(a, 0)})
        # Give only what is free now: a worker that did not answer still counts its old share.
        available = free - sum(self.granted.values())
        grow = {}
        for address, n in want.items():
            more = min(n - self.granted.get(address, 0), available)
            if more > 0:
                grow[address] = self.granted.get(address, 0) + more
                available -= more
        await self._give(grow)
        if self.granted != before:
            self.events.shares_changed(self.granted)

    async def _give(self, shares: Mapping[str, int]) -> None:
        """Set these workers' shares. One that does not answer is counted with the larger of its
        old and new share (it may have taken the new one): never less than it may use."""
        if not shares:
            return

        async def one(address: str, slots: int) -> None:
            answered = await self.client.run(
                _take_share, self.run, slots, workers=[address], on_error="ignore"
            )
            had = self.granted.get(address, 0)
            self.granted[address] = slots if address in answered else max(slots, had)

        await all_of(*(one(address, slots) for address, slots in shares.items()))


async def _take_share(run: str, slots: int, dask_worker: Worker) -> None:
    """On a worker: keep to ``slots`` requests at once from now on (returns once it does)."""
    plugin = cast(RunPlugin, dask_worker.plugins[run])
    assert plugin.http is not None and plugin.pipeline is not None, "the run is not set up here"
    plugin.pipeline.resize(slots)
    await plugin.http.share(slots)


async def _workers_up(client: Client) -> list[str]:
    """The run's workers (addresses), once those of a cluster started for it are up."""
    cluster = getattr(client, "cluster", None)
    if cluster is not None:
        try:
            # distributed annotates it for its blocking form; an asynchronous client's is awaitable.
            wait: Any = client.wait_for_workers
            await wait(len(cluster.worker_spec), timeout=WORKERS_TIMEOUT)
        except TimeoutError as exc:
            raise UsageError(f"the Dask workers did not start in {WORKERS_TIMEOUT} s") from exc
    assert client.scheduler is not None
    return sorted((await client.scheduler.identity(n_workers=-1))["workers"])


def _killed(plan: RunPlan, data_set: int, error: str) -> DataSetResult:
    store = DataSetStore(plan.out, data_set)
    result = DataSetResult(
        data_set, False, error=f"KilledWorker: {error}", directory=str(store.dir)
    )
    store.record(result, plan.params)
    return result


async def _check_shared(client: Client, out: Path) -> None:
    """Fail unless every worker sees ``out``: a sentinel file written here is read there."""
    token = secrets.token_hex(8)
    sentinel = out / f".asyncdl-sentinel-{token}"
    sentinel.write_text(token)
    try:
        seen = await client.run(_sees, str(sentinel), token)
    finally:
        sentinel.unlink(missing_ok=True)
    blind = sorted(address for address, ok in seen.items() if not ok)
    if blind:
        raise UsageError(
            f"{out} is not on a file system every Dask worker can see (not seen by "
            f"{', '.join(blind)}); give -o a shared folder"
        )


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


class RunPlugin(WorkerPlugin):
    """One run's state on one worker: made there by ``setup``, closed by ``teardown``."""

    def __init__(
        self,
        name: str,
        plan: RunPlan,
        initial: Mapping[str, int],
        tract_ids: frozenset[int] | None,
    ) -> None:
        self.name = name
        self.plan = plan
        #: Each worker's first share of -c; a worker that joins later starts with none.
        self.initial = dict(initial)
        self.tract_ids = tract_ids
        self.http: HttpClient | None = None
        self.pipeline: Pipeline | None = None
        self._stack: AsyncExitStack | None = None
        self._events: _WorkerEvents | None = None

    _LIVE = ("http", "pipeline", "_stack", "_events")

    def __getstate__(self) -> dict[str, Any]:  # only the parameters travel, never live objects
        return {k: v for k, v in vars(self).items() if k not in self._LIVE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, **dict.fromkeys(self._LIVE))

    async def setup(self, worker: Worker) -> None:
        stack = AsyncExitStack()
        self._events = _WorkerEvents(worker, self.name)
        stack.push_async_callback(self._events.close)
        # Slots for the whole of -c (any share may come its way), but only its own share in use.
        share = self.initial.get(worker.address, 0)
        plan = self.plan
        client = await stack.enter_async_context(HttpClient(plan.options))
        await client.share(share)
        self.http = client
        source = VolumeSource(
            client, plan.endpoints, plan.cache, plan.options.volumes, tract_ids=self.tract_ids
        )
        ctx = RunContext(plan, client, source, self._events)
        self.pipeline = await stack.enter_async_context(Pipeline(ctx, lanes=share))
        self._stack = stack

    async def teardown(self, worker: Worker) -> None:
        if self._stack is not None:
            await self._stack.aclose()


async def _fetch_data_set(run: str, data_set: int) -> DataSetResult:
    """The task: one data set, on this worker's pipeline. It stops itself (cancelled, so its
    files are closed) as soon as the cluster no longer wants it, e.g. after the run was cancelled:
    Dask does not stop a running task by itself."""
    worker = get_worker()
    plugin = cast(RunPlugin, worker.plugins[run])
    assert plugin.pipeline is not None and plugin._events is not None
    key = f"{run}-{data_set}"
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
        result = await plugin.pipeline.run(data_set)
    finally:
        watchdog.cancel()
    plugin._events.flush()
    return result


class _WorkerEvents(Events):
    """A worker's events, gathered and sent to the client every ``FLUSH_SECONDS`` in one message."""

    def __init__(self, worker: Worker, topic: str) -> None:
        self.worker = worker
        self.topic = topic
        self._started: list[list[int]] = []
        self._done: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
        self._retries: list[list[Any]] = []
        self._failed: list[list[Any]] = []
        self._flusher = asyncio.create_task(self._flush_every())

    def data_set_started(self, data_set: int, targets: int, resumed: int) -> None:
        self._started.append([data_set, targets, resumed])

    def target_done(self, data_set: int, ok: bool) -> None:
        self._done[data_set][0 if ok else 1] += 1

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        self._retries.append([data_set, url, error, wait])

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        self._failed.append([data_set, rank, error])

    def flush(self) -> None:
        if not (self._started or self._done or self._retries or self._failed):
            return
        message = {
            "started": self._started,
            "done": [[ds, ok, bad] for ds, (ok, bad) in self._done.items()],
            "retries": self._retries,
            "failed": self._failed,
        }
        self._started, self._retries, self._failed = [], [], []
        self._done.clear()
        self.worker.log_event(self.topic, message)

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()

    async def close(self) -> None:
        self._flusher.cancel()
        self.flush()


class _Relay:
    """The client's end: the workers' batches handed to the run's ``Events`` as a local run would.

    A data set that Dask runs again (its worker died) reports its start again; its progress is
    then counted once, never beyond its targets, and nothing is reported after it is done.
    """

    def __init__(self, events: Events) -> None:
        self.events = events
        self._targets: dict[int, int] = {}
        self._counted: Counter[int] = Counter()
        self._finished: set[int] = set()

    def receive(self, event: tuple[float, Mapping[str, Any]]) -> None:
        message = event[1]
        for data_set, targets, resumed in message["started"]:
            if data_set not in self._targets and data_set not in self._finished:
                self._targets[data_set] = targets
                self._counted[data_set] = resumed
                self.events.data_set_started(data_set, targets, resumed)
        for data_set, url, error, wait in message["retries"]:
            if data_set in self._targets:
                self.events.retry(data_set, url, error, wait)
        for data_set, rank, error in message["failed"]:
            if data_set in self._targets:
                self.events.target_failed(data_set, rank, error)
        for data_set, ok, bad in message["done"]:
            if data_set not in self._targets:
                continue
            for good, n in ((True, ok), (False, bad)):
                n = min(n, self._targets[data_set] - self._counted[data_set])
                self._counted[data_set] += n
                for _ in range(n):
                    self.events.target_done(data_set, good)

    def done(self, result: DataSetResult) -> None:
        self._targets.pop(result.data_set, None)
        self._finished.add(result.data_set)
        self.events.data_set_done(result)
