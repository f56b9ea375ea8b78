"""A server of limited capacity: K handlers, a FIFO queue beyond them, and shedding if asked.

Each request holds a handler for its whole time at the server (the emulator's latency, its work
included), so K handlers with a service time L answer at most K/L requests a second; a request
that finds them all busy waits its turn, in the order of arrival. With ``shed_queue=Q``, a request
that arrives when Q are already waiting is answered ``503`` at once with a Retry-After, as a server
that sheds load does. The server records the queue waits it imposed, what a client's concurrency
costs it, and how long its handlers were in use, what of its capacity a client used (a server
short of CPU holds a handler longer than L, so K/L is out of reach with every handler busy).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

#: Upper edges of the histogram's buckets of queue waits (seconds): 0.1 ms, then an eighth of an
#: octave each up to about two minutes, so a percentile read from it is within 9 %.
WAIT_EDGES = tuple(1e-4 * 2 ** (k / 8) for k in range(161))


class Shed(Exception):
    """The queue is full: the request is turned away."""


@dataclass
class QueueStats:
    """What the queue did; the counters only grow (until ``reset``), so that a reader can take
    the difference of two readings."""

    handlers: int
    shed_queue: int | None
    busy: int = 0
    queued: int = 0
    #: The most requests in service at once (never more than ``handlers``).
    peak_busy: int = 0
    #: Requests that got a handler, and their queue waits: summed, and counted by ``WAIT_EDGES``.
    served: int = 0
    wait_seconds: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(WAIT_EDGES) + 1))
    #: Requests turned away with a 503 because the queue was full.
    sheds: int = 0
    #: Handler-seconds in use so far (the integral of ``busy`` over time, up to the last change
    #: or reading): over a span, the difference of two readings over K times the span is the
    #: share of the handlers' time in use.
    busy_seconds: float = 0.0
    _since: float = field(default_factory=time.monotonic, repr=False)

    def add_busy(self, change: int) -> None:
        """``change`` more handlers in use from now on."""
        self._settle()
        self.busy += change

    def _settle(self) -> None:
        now = time.monotonic()
        self.busy_seconds += self.busy * (now - self._since)
        self._since = now

    def record(self, wait: float) -> None:
        self.peak_busy = max(self.peak_busy, self.busy)
        self.served += 1
        self.wait_seconds += wait
        self.histogram[bisect.bisect_left(WAIT_EDGES, wait)] += 1

    def reset(self) -> None:
        self.served, self.wait_seconds, self.sheds, self.peak_busy = 0, 0.0, 0, self.busy
        self.busy_seconds, self._since = 0.0, time.monotonic()
        self.histogram = [0] * (len(WAIT_EDGES) + 1)

    def as_dict(self) -> dict[str, Any]:
        self._settle()
        mean = self.wait_seconds / self.served if self.served else 0.0
        return {
            "handlers": self.handlers,
            "shed_queue": self.shed_queue,
            "busy": self.busy,
            "queued": self.queued,
            "peak_busy": self.peak_busy,
            "served": self.served,
            "sheds": self.sheds,
            "wait_seconds": self.wait_seconds,
            "busy_seconds": self.busy_seconds,
            "mean_wait_ms": mean * 1000,
            "p99_wait_ms": percentile(self.histogram, 0.99) * 1000,
            "histogram": list(self.histogram),
        }


def percentile(histogram: list[int], q: float) -> float:
    """The ``q`` quantile of the waits counted in ``histogram`` (seconds, the bucket's upper
    edge); 0 when it is empty."""
    total = sum(histogram)
    if not total:
        return 0.0
    seen = 0
    for bucket, count in enumerate(histogram):
        seen += count
        if seen >= q * total:
            return WAIT_EDGES[bucket] if bucket < len(WAIT_EDGES) else float("inf")
    raise AssertionError("unreachable")  # pragma: no cover


class Capacity:
    """K handlers and the FIFO queue before them; ``async with capacity.handler():`` serves one
    request (or raises ``Shed``)."""

    def __init__(self, handlers: int, shed_queue: int | None = None) -> None:
        if handlers < 1:
            raise UsageError(f"capacity must be at least 1 handler, got {handlers}")
        if shed_queue is not None and shed_queue < 0:
            raise UsageError(f"shed queue must be 0 or more, got {shed_queue}")
        self.stats = QueueStats(handlers, shed_queue)
        self._waiting: deque[asyncio.Future[None]] = deque()

    @contextlib.asynccontextmanager
    async def handler(self) -> AsyncIterator[None]:
        stats = self.stats
        if stats.busy < stats.handlers and not self._waiting:
            stats.add_busy(1)
            stats.record(0.0)
        elif stats.shed_queue is not None and len(self._waiting) >= stats.shed_queue:
            stats.sheds += 1
            raise Shed
        else:
            await self._wait()
        try:
            yield
        finally:
            stats.add_busy(-1)
            self._hand_on()

    async def _wait(self) -> None:
        stats = self.stats
        arrived = time.monotonic()
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        stats.queued += 1
        try:
            await turn  # the handler that frees up hands itself over (busy stays counted)
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                stats.add_busy(-1)  # handed over as it was cancelled: pass it on
                self._hand_on()
            else:
                self._waiting.remove(turn)
                stats.queued -= 1
            raise
        stats.record(time.monotonic() - arrived)

    def _hand_on(self) -> None:
        stats = self.stats
        while self._waiting and stats.busy < stats.handlers:
            turn = self._waiting.popleft()
            stats.queued -= 1
            if not turn.done():
                stats.add_busy(1)
                turn.set_result(None)
