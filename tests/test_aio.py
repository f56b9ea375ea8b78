import asyncio

import pytest

from asyncdl import ApiError
from asyncdl.aio import all_of


async def test_results_come_in_order():
    async def after(delay, value):
        await asyncio.sleep(delay)
        return value

    assert await all_of(after(0.02, "a"), after(0.0, "b")) == ["a", "b"]


async def test_a_failure_cancels_the_others_and_is_raised_as_is():
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def fail():
        await asyncio.sleep(0.01)
        raise ApiError("no", "u")

    with pytest.raises(ApiError):  # not an ExceptionGroup: callers catch errors by type
        await all_of(slow(), fail(), slow())
    assert cancelled == [True, True]
