"""The pipeline: many data sets, one queue of target requests, ``lanes`` coroutines asking them.

    data sets: prepare (``prefetch`` ahead) --> feed their ranks, one data set after another
                                                     |
                         bounded queue of (data set, rank), shared by all data sets
                                                     |
                         lanes: each asks one target at a time, data_set.fetch_target(rank)

The queue is shared, so the next data set's targets are already in flight while the previous one's
last answers come back; its bound gives back-pressure, so memory stays flat whatever the number of
data sets. What happens to one data set is ``dataset.DataSet``'s business, not the pipeline's.
("Workers" and "scheduler" are Dask's words, in ``cluster``; a lane is one coroutine here.)
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from types import TracebackType

from .dataset import DataSet, RunContext
from .results import DataSetResult


class Pipeline:
    """Runs data sets through one shared request queue; ``run`` may be called from many tasks.

    Use as ``async with Pipeline(ctx) as p: await all_of(*(p.run(i) for i in ids))``.
    """

    def __init__(self, ctx: RunContext, lanes: int | None = None) -> None:
        self.ctx = ctx
        options = ctx.plan.options
        self._queue: asyncio.Queue[tuple[DataSet, int]] = asyncio.Queue(
            maxsize=2 * options.max_in_flight
        )
        #: Data sets preparing, or prepared and waiting to feed: volumes read ahead, in bounds.
        self._ahead = asyncio.Semaphore(options.prefetch)
        #: One data set feeds the queue at a time, so its ranks go out in order and together.
        self._feeding = asyncio.Lock()
        self._stack = AsyncExitStack()
        self._group: asyncio.TaskGroup | None = None
        self._lanes: set[asyncio.Task[None]] = set()
        #: As many lanes as requests may be in flight: -c N, or --max-concurrency under -c auto.
        self._size = options.max_in_flight if lanes is None else lanes

    async def __aenter__(self) -> Pipeline:
        self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        self.resize(self._size)
        return self

    def resize(self, lanes: int) -> None:
        """Run ``lanes`` lanes from now on (a Dask worker's share of ``-c``, which its
        ``HttpClient`` enforces: this only saves waiting for a slot). Extra lanes stop after
        the target they have, or the next one they get."""
        assert self._group is not None, "resize inside async with"
        self._size = lanes
        while len(self._lanes) < lanes:
            self._lanes.add(self._group.create_task(self._lane()))

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Lanes wait for work forever: cancel them (a request in flight is simply asked again
        # by the next run, which resumes) and let the TaskGroup collect them. It is not shown the
        # body's error, which would come out wrapped in an ExceptionGroup: that error goes on as is.
        for lane in list(self._lanes):
            lane.cancel()
        await self._stack.aclose()

    async def run(self, data_set: int) -> DataSetResult:
        """Fetch one data set, sharing the lanes with every other ``run`` in progress."""
        ds = DataSet(data_set, self.ctx)
        try:
            todo = await self._prepare(ds)
            if ds.result is not None:
                return ds.result
            try:
                for rank in todo:
                    if ds.aborted:
                        break
                    await self._queue.put((ds, rank))
            finally:
                self._feeding.release()
            await ds.wait()
            return await ds.finish()
        finally:
            ds.close()

    async def _prepare(self, ds: DataSet) -> list[int]:
        """``ds.prepare()`` in a read-ahead slot, then the turn to feed the queue (unless it has a
        result already). A data set that another process holds is waited for outside the slots
        (``--wait``), so that the other data sets go ahead meanwhile."""
        while True:
            async with self._ahead:
                todo = await ds.prepare()
                if ds.holder is None:
                    if ds.result is None:
                        await self._feeding.acquire()
                    return todo
            await ds.wait_for_holder()

    async def _lane(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            while len(self._lanes) <= self._size:
                ds, rank = await self._queue.get()
                await ds.fetch_target(rank)  # records the answer or failure; raises only to cancel
        finally:
            self._lanes.discard(me)
