"""Structured-concurrency helpers: await several things at once, fail as the first one did."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import FIRST_COMPLETED, Future, wait
from types import TracebackType
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")


async def all_of(*aws: Awaitable[T]) -> list[T]:
    """Await all concurrently in a TaskGroup and return their results in order.

    If any fails, the rest are cancelled and the first error is raised as itself (not an
    ExceptionGroup, and with its own cause), so callers can catch it by type; the errors of the
    others are added to it as notes rather than thrown away.
    """
    error: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_await(aw)) for aw in aws]
    except BaseExceptionGroup as group:
        error, *others = group.exceptions
        for other in others:
            error.add_note(f"also: {type(other).__name__}: {other}")
    if error is not None:
        raise error  # outside the except block: its cause and traceback stay its own
    return [task.result() for task in tasks]


async def both(a: Awaitable[A], b: Awaitable[B]) -> tuple[A, B]:
    """``all_of`` for two awaitables of different types."""
    pair: list[Any] = await all_of(a, b)
    return pair[0], pair[1]


@contextlib.asynccontextmanager
async def every(seconds: float, call: Callable[[], object]) -> AsyncIterator[None]:
    """``call()`` every ``seconds`` while inside (never if ``seconds`` is 0): a heartbeat."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(seconds)
            call()

    task = asyncio.create_task(beat()) if seconds else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _await(aw: Awaitable[T]) -> T:
    return await aw


async def in_thread(func: Callable[..., T], /, *args: Any) -> T:
    """``asyncio.to_thread``, except that a cancelled caller still waits for the thread to end
    (a thread cannot be stopped) before the cancellation goes on: whatever the caller holds while
    the thread writes, such as a data set's lock, is never let go under it."""
    work = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError as cancelled:
        while not work.done():
            with contextlib.suppress(asyncio.CancelledError):  # again: the thread still ends first
                await asyncio.wait([work])
        if not work.cancelled():
            work.exception()  # retrieved: the cancellation is what the caller gets
        raise cancelled


class Slots:
    """A semaphore whose size can change while it is in use (the limit of ``-c auto``, a Dask
    worker's share of a run's ``-c``).

    Waiters are served first come, first served. Shrinking never interrupts a holder: the slots in
    use above the new size are simply not handed on, and ``resize`` returns once the slots in use
    fit, so a share given up is really free.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._fitting: list[asyncio.Future[None]] = []

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def acquire(self) -> None:
        if self.used < self.size and not self._waiting:
            self.used += 1
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # granted as it was cancelled: hand the slot on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(granted)
            raise

    def release(self) -> None:
        self.used -= 1
        self._grant()

    def set_size(self, size: int) -> None:
        """Make ``size`` slots from now on (holders beyond it keep theirs until they give it back)."""
        if size < 0:
            raise ValueError(f"size must be at least 0, got {size}")
        self.size = size
        self._grant()

    async def resize(self, size: int) -> None:
        """Make ``size`` slots; return once no more than that are in use."""
        self.set_size(size)
        if self.used > size:
            fits = asyncio.get_running_loop().create_future()
            self._fitting.append(fits)
            await fits

    def _grant(self) -> None:
        while self._waiting and self.used < self.size:
            granted = self._waiting.popleft()
            if not granted.done():
                self.used += 1
                granted.set_result(None)
        if self._fitting and self.used <= self.size:
            for fits in self._fitting:
                if not fits.done():
                    fits.set_result(None)
            self._fitting.clear()


class Budget:
    """An allowance of ``size`` units (bytes of answers held in memory) shared by many tasks.

    ``async with budget.hold(n)`` takes ``n`` at once, waiting first come, first served, and gives
    them back on exit. A task never asks for more while it holds some, so no set of holders can
    wait on each other.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def hold(self, n: int) -> _Held:
        if not 0 <= n <= self.size:
            raise ValueError(f"cannot hold {n} of a budget of {self.size}")
        return _Held(self, n)

    async def _take(self, n: int) -> None:
        if not self._waiting and self.used + n <= self.size:
            self.used += n
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((n, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._give(n)  # granted as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove((n, granted))
                self._grant()  # a large request at the head may have held back smaller ones
            raise

    def _give(self, n: int) -> None:
        self.used -= n
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.size:
            n, granted = self._waiting.popleft()
            if not granted.done():
                self.used += n
                granted.set_result(None)


class _Held:
    """``n`` of a ``Budget``, held inside ``async with``."""

    __slots__ = ("_budget", "_n")

    def __init__(self, budget: Budget, n: int) -> None:
        self._budget, self._n = budget, n

    async def __aenter__(self) -> None:
        await self._budget._take(self._n)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._budget._give(self._n)


#: The first uvloop that detaches the socket of a connection cancelled while it is made
#: (MagicStack/uvloop#738, fixed in 0.23.0). An older one leaves the socket object owning an fd
#: that the kernel hands to the next connection, and closes it when collected: an unrelated
#: transport of the run breaks. The run is cancelled mid-connect whenever a data set fails.
UVLOOP_FLOOR = (0, 23)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (extra ``fast``), for less CPU per request; asyncio's
    own (``None``) without it, or with a uvloop older than ``UVLOOP_FLOOR``."""
    try:
        import uvloop
    except ImportError:
        return None
    release = re.match(r"(\d+)\.(\d+)", getattr(uvloop, "__version__", ""))
    if release is None or (int(release[1]), int(release[2])) < UVLOOP_FLOOR:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed, callable where an event loop already runs.

    There (a Jupyter cell, whose kernel runs one) ``main`` runs on a loop of its own in a worker
    thread while this one waits. Ctrl-C means what it means to ``asyncio.run`` either way:
    ``main`` is cancelled, its cleanup runs to the end, then ``KeyboardInterrupt`` is raised here.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(main)
    return _run_in_thread(main)


def _run_in_thread(main: Coroutine[Any, Any, T]) -> T:
    # A KeyboardInterrupt comes to this thread (the main one, where signals are handled) while
    # it waits; the worker's task is then cancelled from here, as asyncio.run's handler would.
    started: Future[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = Future()
    outcome: Future[T] = Future()

    async def tracked() -> T:
        task = asyncio.current_task()
        assert task is not None
        started.set_result((asyncio.get_running_loop(), task))
        return await main

    def work() -> None:
        try:
            outcome.set_result(run(tracked()))
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome.set_exception(exc)

    # Not a daemon: an interpreter that exits waits for the run's files to be closed.
    threading.Thread(target=work, name="asyncdl-run").start()
    try:
        return outcome.result()
    except KeyboardInterrupt:
        either: list[Future[Any]] = [started, outcome]
        wait(either, return_when=FIRST_COMPLETED)
        if started.done():
            loop, task = started.result()
            with contextlib.suppress(RuntimeError):  # the loop closed: the run is over anyway
                loop.call_soon_threadsafe(task.cancel)
        wait([outcome])  # the cleanup of a cancelled run: files closed, resumable
        raise
