"""Structured-concurrency helpers: await several things at once, fail as the first one did."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
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


async def _await(aw: Awaitable[T]) -> T:
    return await aw


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (extra ``fast``): less CPU per request."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main)
