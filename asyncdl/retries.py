"""When a failed request is asked again: the retry policy of a run and its retry budget.

A request that fails with a ``TransientError`` is retried after a full-jitter exponential backoff,
stretched to the server's Retry-After (capped at ``retry_after_max``), at most ``retries`` times.
For a server under load two rules come on top, so that it is neither stormed nor given up on:

* **Busy answers are waited out.** A 429 or 503 says the server declined the request for now, not
  that the request failed. While the server answers others (one of ours was answered well within
  ``patience`` seconds) and for up to ``patience`` seconds of each request, busy answers are retried
  without counting against ``retries``; meanwhile the controller of ``-c auto`` halves the limit, so
  the run slows down instead of failing targets. After that they count like any failure, and
  ``retries=0`` retries nothing. What ends a run against a server that never recovers: once it has
  answered nothing well for ``patience`` seconds, every request fails after its ``retries``, about
  ``patience + retries * retry_after_max`` seconds later at most.

* **A retry budget**, one per client and shared by all its requests: retries may be at most
  ``retry_budget`` (a share) of the requests of the last ``TTL`` seconds, beyond a reserve of
  ``RESERVE_PER_SECOND`` retries a second for a client that has sent few. A retry that finds the
  budget spent waits for it while the server answers others: the run goes no faster than its first
  attempts allow. While the server answers nothing, the retry is not made: the request fails now.

Taken from (no code copied): Finagle's ``RetryBudget`` (deposits that expire after a time to live,
a percentage of them that may be retried, a minimum rate of retries on top; its defaults are ours:
20 %, 10 a second, 10 s) and gRPC's retry throttling (one budget per client and server, counted
across all calls; a retry the budget refuses is not made and the call fails at once, and the
server's pushback is honoured as its retry delay).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

from tenacity import RetryCallState, wait_random_exponential

from .config import FetchOptions
from .errors import TransientError

#: How long a request counts towards the budget (seconds).
TTL = 10.0
#: Retries a second the budget allows whatever the number of requests.
RESERVE_PER_SECOND = 10.0
#: How often a retry waiting for the budget looks again (seconds, jittered).
BUDGET_POLL = 0.5


class RetryBudget:
    """Retries at most ``share`` of the requests of the last ``ttl`` seconds, beyond a reserve of
    ``reserve`` retries a second.

    Counted in one-second buckets: pure, with the time given by the caller.
    """

    def __init__(
        self, share: float, *, reserve: float = RESERVE_PER_SECOND, ttl: float = TTL
    ) -> None:
        self.share = share
        self.reserve = reserve
        self.ttl = ttl
        self._buckets: deque[list[int]] = deque()  # [second, requests, retries], oldest first

    def deposit(self, now: float) -> None:
        """A request (a first attempt) goes out."""
        self._bucket(now)[1] += 1

    def available(self, now: float) -> bool:
        """Whether a retry may go out now."""
        self._expire(now)
        requests = sum(bucket[1] for bucket in self._buckets)
        retries = sum(bucket[2] for bucket in self._buckets)
        return retries + 1 <= self.share * requests + self.reserve * self.ttl

    def withdraw(self, now: float) -> bool:
        """Take a retry from the budget if it allows one now."""
        if not self.available(now):
            return False
        self._bucket(now)[2] += 1
        return True

    def _bucket(self, now: float) -> list[int]:
        second = int(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        return self._buckets[-1]

    def _expire(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - self.ttl:
            self._buckets.popleft()


class RetryPolicy:
    """A client's retry policy: its options, its budget, and whether its server answers."""

    def __init__(
        self,
        options: FetchOptions,
        *,
        answering: Callable[[float], bool],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self.budget = RetryBudget(options.retry_budget)
        self.answering = answering
        self.clock = clock
        self.sleep = sleep
        #: Full-jitter exponential backoff (tenacity), by attempt.
        self.backoff = wait_random_exponential(
            multiplier=options.backoff_base, max=options.backoff_max
        )

    def request(self) -> Retries:
        """A request's first attempt goes out now: its retries, from here."""
        now = self.clock()
        self.budget.deposit(now)
        return Retries(self, now)


class Retries:
    """One request's retries: tenacity's ``stop``, ``wait`` and ``sleep`` for it.

    Built per request, since retry state must not be shared between tasks.
    """

    def __init__(self, policy: RetryPolicy, started: float) -> None:
        self.policy = policy
        self.started = started
        #: Retries that counted against ``retries`` (busy answers waited out do not).
        self.counted = 0

    def stop(self, state: RetryCallState) -> bool:
        """Give up? Out of retries, or the budget is spent and the server answers nothing."""
        policy, options = self.policy, self.policy.options
        error = state.outcome.exception() if state.outcome is not None else None
        now = policy.clock()
        answering = policy.answering(now)
        waited_out = (
            isinstance(error, TransientError)
            and error.busy
            and options.retries > 0
            and answering
            and now - self.started < options.patience
        )
        if not waited_out:
            self.counted += 1
        if self.counted > options.retries:
            return True
        return not answering and not policy.budget.available(now)

    def wait(self, state: RetryCallState) -> float:
        """Full-jitter exponential backoff, stretched to the server's Retry-After (capped)."""
        options = self.policy.options
        delay: float = self.policy.backoff(state)
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, TransientError) and error.retry_after is not None:
            delay = max(delay, min(error.retry_after, options.retry_after_max))
        return delay

    async def sleep(self, seconds: float) -> None:
        """The backoff, then as long as the budget needs to allow the retry."""
        policy = self.policy
        await policy.sleep(seconds)
        while not policy.budget.withdraw(policy.clock()):
            await policy.sleep(BUDGET_POLL * random.uniform(0.5, 1.5))
