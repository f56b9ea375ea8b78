import asyncio

import pytest

from asyncdl import ApiError
from asyncdl.aio import all_of, both


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


async def test_the_first_error_keeps_its_cause_and_the_others_are_noted():
    async def fail():
        await asyncio.sleep(0)
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise ApiError("first", "u") from exc

    async def fails_when_cancelled():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ValueError("second") from None

    with pytest.raises(ApiError) as info:
        await all_of(fails_when_cancelled(), fail())
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__notes__ == ["also: ValueError: second"]


async def test_both_keeps_each_type():
    async def number():
        return 1

    async def word():
        return "a"

    assert await both(number(), word()) == (1, "a")
