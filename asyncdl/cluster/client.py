"""The run as the client drives it: the plugin and one task per data set out, the results and the
workers' progress back, and the shares of a fixed bound kept where the work is."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from distributed import Client, as_completed
from distributed.scheduler import KilledWorker

from ..aio import all_of
from ..config import AUTO
from ..events import Events
from ..limits import REPORT_SECONDS
from ..plan import RunPlan
from ..results import DataSetResult
from ..store import DataSetStore
from .messages import Batch
from .shares import Shares, first_shares, shared
from .worker import RunPlugin, fetch_data_set, task_key


async def fetch_on_cluster(
    client: Client,
    workers: Sequence[str],
    tract_ids: frozenset[int] | None,
    plan: RunPlan,
    events: Events,
) -> list[DataSetResult]:
    """``api.fetch`` on the ``workers`` of a Dask cluster (``connect.ready``), once the shared
    volumes are in the cache and ``tract_ids`` known: the same results, files and guarantees."""
    options, ids = plan.options, plan.ids
    initial = first_shares(options, workers) if shared(options) else None
    first = None if initial is None else min(initial.values())
    rate = None if first is None else options.rate_share(first)
    events.workers_started(len(workers), AUTO if first is None or options.adaptive else first, rate)

    run = f"asyncdl-{secrets.token_hex(6)}"
    relay = Relay(events, limits_are_shares=initial is None)
    client.subscribe_topic(run, relay.receive)
    await client.register_plugin(RunPlugin(run, plan, initial, tract_ids), name=run)
    keys = {data_set: task_key(run, data_set) for data_set in ids}
    futures = {
        client.submit(fetch_data_set, run, data_set, key=key, pure=False): data_set
        for data_set, key in keys.items()
    }
    shares = None if initial is None else Shares(client, run, options, initial, events)
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
            if shares is not None:
                shares.wake()
        if shares is not None:
            shares.stop()

    try:
        events.started(ids)
        await all_of(collect(), *([] if shares is None else [shares.follow(set(keys.values()))]))
    except BaseException:
        await asyncio.shield(client.cancel(list(futures), force=True))
        raise
    finally:
        client.unsubscribe_topic(run)
        await asyncio.shield(client.unregister_worker_plugin(run))
    return [results[data_set] for data_set in ids]


def _killed(plan: RunPlan, data_set: int, error: str) -> DataSetResult:
    """A data set whose task Dask gave up on, recorded as failed (unless another process now
    holds it: it is that process's to record)."""
    store = DataSetStore(plan.out, data_set)
    result = DataSetResult(
        data_set, False, error=f"KilledWorker: {error}", directory=str(store.dir)
    )
    if store.lock() is None:
        try:
            store.record(result, plan.params)
        finally:
            store.unlock()
    return result


class Relay:
    """The client's end: the workers' batches handed to the run's ``Events`` as a local run would.

    A data set that Dask runs again (its worker died) reports its start again; its progress is
    then counted once, never beyond its targets, and nothing is reported after it is done. The
    run's limit is the sum of the workers' (reported at most every ``REPORT_SECONDS``); with
    ``limits_are_shares`` (``-c auto``, nothing shared) each worker's own is reported too, as
    the run's shares.
    """

    def __init__(
        self,
        events: Events,
        *,
        limits_are_shares: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self._targets: dict[int, int] = {}
        self._counted: Counter[int] = Counter()
        self._finished: set[int] = set()
        self._limits: dict[str, int] = {}
        self._limits_are_shares = limits_are_shares
        self._clock = clock
        self._reported: float | None = None  # when the limits were last reported
        self._unreported = False

    def receive(self, event: tuple[float, Mapping[str, Any]]) -> None:
        """One worker's message, as Dask's event log hands it on: (time, message)."""
        batch = Batch.decode(event[1])
        if batch.limit is not None and self._limits.get(batch.worker) != batch.limit:
            self._limits[batch.worker] = batch.limit
            self._unreported = True
        self._report_limits()
        for waiting in batch.waiting:
            if waiting.data_set not in self._finished:
                self.events.data_set_waiting(*waiting)
        for repair in batch.repairs:
            if repair.data_set not in self._finished:
                self.events.repairing(*repair)
        for s in batch.started:
            if s.data_set not in self._targets and s.data_set not in self._finished:
                self._targets[s.data_set] = s.targets
                self._counted[s.data_set] = s.resumed
                self.events.data_set_started(*s)
        for r in batch.retries:
            if r.data_set in self._targets:
                self.events.retry(*r)
        for f in batch.failed:
            if f.data_set in self._targets:
                self.events.target_failed(*f)
        for redirect in batch.redirects:
            self.events.redirected(*redirect)
        for data_set, done in batch.done.items():
            if data_set not in self._targets:
                continue
            for good, n in ((True, done.ok), (False, done.bad)):
                n = min(n, self._targets[data_set] - self._counted[data_set])
                self._counted[data_set] += n
                for _ in range(n):
                    self.events.target_done(data_set, good)

    def _report_limits(self) -> None:
        now = self._clock()
        if not self._unreported or (
            self._reported is not None and now - self._reported < REPORT_SECONDS
        ):
            return
        self._reported, self._unreported = now, False
        self.events.limit_changed(sum(self._limits.values()))
        if self._limits_are_shares:
            self.events.shares_changed(dict(sorted(self._limits.items())))

    def done(self, result: DataSetResult) -> None:
        self._targets.pop(result.data_set, None)
        self._finished.add(result.data_set)
        self.events.data_set_done(result)
