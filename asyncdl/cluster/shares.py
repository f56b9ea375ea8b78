"""A run's bound on requests in flight (and ``--rate`` with it) shared among the workers that
have work: a fixed ``-c``, or ``--max-concurrency`` when ``-c auto`` comes with a ``--rate`` for
the whole run. Under ``-c auto`` alone nothing is shared: each worker's controller finds its own
limit.

Each check asks the scheduler which workers are running (or hold) the run's tasks and splits the
bound evenly among them; the others get nothing. Shares are taken before they are given: a
worker's ``HttpClient.share`` returns only once its requests in flight fit its new share, so the
whole never exceeds the bound. A worker that leaves may still have requests at the server; its
share is held back for one request timeout before it goes to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence

from distributed import Client

from ..aio import all_of
from ..config import FetchOptions
from ..errors import UsageError
from ..events import Events
from .worker import take_share

#: How often the shares are checked against where the work is (besides after each task).
BALANCE_SECONDS = 0.2


def split(total: int, workers: Sequence[str]) -> dict[str, int]:
    """``total`` slots split as evenly as can be among ``workers`` (the first get the remainder)."""
    each, extra = divmod(total, len(workers)) if workers else (0, 0)
    return {address: each + (i < extra) for i, address in enumerate(workers)}


def shared(options: FetchOptions) -> bool:
    """Whether the workers share the run's bound: with a fixed ``-c``, or a ``--rate`` for the
    whole run. Under ``-c auto`` alone each worker runs a controller of its own, up to
    ``--max-concurrency``, which finds what the server gives it (controllers that meet at one
    server share it as TCP flows share a link): no split, and no client in the loop."""
    return not options.adaptive or options.rate is not None


def first_shares(options: FetchOptions, workers: Sequence[str]) -> dict[str, int]:
    """The shares of the bound the workers start with; each needs at least one slot."""
    bound = options.max_in_flight
    if bound < len(workers):
        flag = "--max-concurrency" if options.adaptive else "-c"
        raise UsageError(
            f"{flag} {bound} is less than the {len(workers)} workers: each needs at least one"
        )
    return split(bound, sorted(workers))


class Shares:
    """The run's bound, shared among the workers that have work (see the module's doc)."""

    def __init__(
        self,
        client: Client,
        run: str,
        options: FetchOptions,
        initial: Mapping[str, int],
        events: Events,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.run, self.options, self.events = client, run, options, events
        #: What each worker holds (or may still hold: a share is counted until it is given up).
        self.granted = dict(initial)
        self._clock = clock
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
        now = self._clock()
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
                take_share, self.run, slots, workers=[address], on_error="ignore"
            )
            had = self.granted.get(address, 0)
            self.granted[address] = slots if address in answered else max(slots, had)

        await all_of(*(one(address, slots) for address, slots in shares.items()))
