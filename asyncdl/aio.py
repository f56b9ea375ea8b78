"""Structured-concurrency helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

E = TypeVar("E", bound=BaseException)


async def all_of(*aws: Awaitable[Any]) -> list[Any]:
    """Await all concurrently in a TaskGroup; if one fails, the rest are cancelled and its error
    (not an ExceptionGroup) is raised, so callers can catch it by type."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_await(aw)) for aw in aws]
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return [task.result() for task in tasks]


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


def first_leaf(group: BaseExceptionGroup[E]) -> E:
    """The first exception in ``group`` that is not itself a group (groups nest)."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first  # type: ignore[return-value]  # a group of E holds only E leaves
