"""Where a request waits before it goes out: the meters of a run, side by side.

    Slots          requests in flight: at most ``-c N``, or the controller's limit under
                   ``-c auto`` (``controller``), and at most a Dask worker's share of either
    RateLimiter    request starts at least ``1 / --rate`` apart
    LoopLag        how late the event loop runs what is due, and how long it stalled: what the
                   controller takes off the round trips, which are not the server's doing

Each attempt takes a ``Slot`` (``async with limits.slot() as slot``), tells it when the server's
answer came (``slot.answered(response)``), and gives it back; the slot hands its outcome to the
controller then. The other bounds of a run follow from these: the connection pool and the request
queue of ``pipeline`` are sized to ``FetchOptions.max_in_flight``.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType

import aiohttp

from .aio import Slots
from .config import FetchOptions
from .controller import Controller, Lag
from .errors import BUSY_STATUSES

#: The controller's limit is reported at most this often (``Events.limit_changed``).
REPORT_SECONDS = 1.0


class RateLimiter:
    """Spaces request starts at least ``1 / rate`` seconds apart across all tasks (no bursts)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf

    async def wait(self) -> None:
        # Reserve the next start time before sleeping: no await between the read and the write.
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await self._sleep(start - now)

    async def set_rate(self, rate: float) -> None:
        """Space later starts ``1 / rate`` apart; return once the starts reserved before have passed,
        so that a rate given up is really free."""
        reserved = self._next
        self.interval = 1.0 / rate
        if (wait := reserved - self._clock()) > 0:
            await self._sleep(wait)


class LoopLag:
    """How late the running event loop runs what is due: it ticks every ``interval`` seconds on a
    fixed grid, and each tick due counts as late as the loop was past it when it ran.

    Every tick due is counted, those the loop was too busy or too frozen to run on time included,
    so the mean lag is what an answer arriving at a random moment waits before it is read: the
    backlog of a busy loop, half a freeze on average for a throttled process. A tick that ran a
    whole ``interval`` late or more (others were due while it waited) marks a stall of the loop
    as long as it was late.
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self._late = 0.0
        self._ticks = 0
        self._stalled = 0.0
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def reading(self) -> Lag:
        """The lag so far, for the controller."""
        return Lag(self._late, self._ticks, self._stalled)

    def ran(self, late: float) -> int:
        """A tick ran ``late`` seconds after it was due: count it and those due since. Returns
        how many ticks it stands for (the next is due that many intervals after it)."""
        due = max(1, int(late / self.interval) + 1)  # this tick and those due since
        self._late += max(0.0, due * late - self.interval * due * (due - 1) / 2)
        self._ticks += due
        if due > 1:
            self._stalled += late
        return due

    def _tick(self) -> None:
        assert self._loop is not None
        self._due += self.ran(self._loop.time() - self._due) * self.interval
        self._handle = self._loop.call_at(self._due, self._tick)


class Limits:
    """The meters every request of an ``HttpClient`` goes through; ``start`` and ``stop`` it on
    the event loop.

    ``on_limit`` is told the limit when it changes (at most every ``REPORT_SECONDS``) and once at
    the first request.
    """

    def __init__(
        self,
        options: FetchOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_limit: Callable[[int], None] | None = None,
    ) -> None:
        self.options = options
        self.clock = clock
        self._lag = LoopLag()
        self.controller = (
            Controller(
                options.max_in_flight,
                lag=self._lag.reading,
                now=clock(),
                epoch=time.time() - clock(),  # probes on the wall clock: a run's workers together
            )
            if options.adaptive
            else None
        )
        #: A Dask worker's share of ``max_in_flight`` (all of it otherwise).
        self._share = options.max_in_flight
        self._slots = Slots(self._wanted())
        self.rate = RateLimiter(options.rate, clock=clock, sleep=sleep) if options.rate else None
        self._on_limit = on_limit
        self._reported: tuple[float, int] | None = None
        #: The quickest any answer's headers came back, in seconds: a floor on the server's latency.
        self.fastest_answer = math.inf
        #: When the server last answered a request of ours well (not busy, not an error of its own).
        self.last_good: float | None = None
        # The connections seen so far, to tell a round trip that had to open one (weakly held).
        self._connections: weakref.WeakSet[object] = weakref.WeakSet()

    def start(self) -> None:
        if self.controller is not None:
            self._lag.start()

    def stop(self) -> None:
        self._lag.stop()

    @property
    def limit(self) -> int:
        """How many requests may be in flight now."""
        return self._slots.size

    def slot(self, *, sample: bool = True) -> Slot:
        """A slot for one attempt: ``async with limits.slot() as slot``. Without ``sample`` its
        outcome is not one the controller learns from (a long download, another host)."""
        return Slot(self, sample)

    async def share(self, slots: int) -> None:
        """Keep to ``slots`` of ``max_in_flight`` from now on, and to as much of the rate; return
        once no more than that are in use. ``0`` pauses requests."""
        if not 0 <= slots <= self.options.max_in_flight:
            raise ValueError(f"share {slots} is not within -c {self.options.max_in_flight}")
        rate = self.options.rate_share(slots)
        if self.rate is not None and rate:  # 0 slots: nothing goes out, the rate may stay
            await self.rate.set_rate(rate)
        self._share = slots
        if self.controller is not None:
            self.controller.set_ceiling(max(1, slots))
        await self._slots.resize(self._wanted())

    def answering(self, now: float) -> bool:
        """Whether the server has answered a request of ours well within ``patience`` seconds."""
        return self.last_good is not None and now - self.last_good < self.options.patience

    def _wanted(self) -> int:
        limit = self.controller.limit if self.controller is not None else self._share
        return min(limit, self._share)

    def _follow(self, now: float) -> None:
        """The slots follow the controller; its limit is reported, but not too often."""
        if self.controller is not None:
            self._slots.set_size(self._wanted())
        if self._on_limit is None:
            return
        limit = self._slots.size
        if self._reported is None or (
            limit != self._reported[1] and now - self._reported[0] >= REPORT_SECONDS
        ):
            self._reported = (now, limit)
            self._on_limit(limit)


class Slot:
    """One attempt's place among the requests in flight, and what became of it."""

    def __init__(self, limits: Limits, sample: bool) -> None:
        self._limits = limits
        self._sample = sample
        self.sent = 0.0
        #: When the answer's status line and headers were in, once they are; its status; and
        #: whether its request had to open its connection.
        self.done: float | None = None
        self.status = 0
        self.fresh = False

    async def __aenter__(self) -> Slot:
        limits = self._limits
        await limits._slots.acquire()
        try:
            if limits.rate is not None:
                await limits.rate.wait()
        except BaseException:
            limits._slots.release()
            raise
        self.sent = limits.clock()
        if limits.controller is not None:
            limits.controller.sending(self.sent)
        return self

    def answered(self, response: aiohttp.ClientResponse) -> None:
        """The server's answer (its status line and headers) is in."""
        limits = self._limits
        done = limits.clock()
        limits.fastest_answer = min(limits.fastest_answer, done - self.sent)
        # The connection it came on. ``response.connection`` is None once a small answer is read
        # whole (the connection is back in the pool, as nearly every spatial search's is), so
        # aiohttp's own record of it is read.
        connection = getattr(response, "_protocol", None)
        self.fresh = connection is not None and connection not in limits._connections
        if self.fresh:
            limits._connections.add(connection)
        self.done, self.status = done, response.status
        if response.status not in BUSY_STATUSES and response.status < 500:
            limits.last_good = done

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        limits = self._limits
        in_flight = limits._slots.used
        limits._slots.release()
        controller = limits.controller
        now = limits.clock()
        if controller is not None:
            if not self._sample:
                controller.ignored(self.sent, now)
            elif self.done is not None:
                if self.status in BUSY_STATUSES:
                    controller.overloaded(self.sent, self.done)
                else:
                    controller.answered(self.sent, self.done, in_flight, fresh=self.fresh)
            elif isinstance(exc, TimeoutError) or isinstance(exc and exc.__cause__, TimeoutError):
                controller.overloaded(self.sent, now)
            else:  # refused, reset, cancelled: nothing said about the server's load
                controller.ignored(self.sent, now)
        limits._follow(now)
