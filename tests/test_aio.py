import asyncio
import contextlib
import random
import socket
import sys
import threading
import types

import aiohttp
import pytest
from aiohttp import web

from asyncdl import ApiError, aio
from asyncdl.aio import Budget, Slots, all_of, both, in_thread


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


async def _hold(slots: Slots, entered: list[int], i: int, release: asyncio.Event) -> None:
    async with slots:
        entered.append(i)
        await release.wait()


async def test_slots_bound_what_is_in_use_and_serve_waiters_in_order():
    slots, release = Slots(2), asyncio.Event()
    entered: list[int] = []
    tasks = [asyncio.create_task(_hold(slots, entered, i, release)) for i in range(5)]
    await asyncio.sleep(0)
    assert entered == [0, 1] and slots.used == 2
    await slots.resize(4)  # growing lets the next waiters in, in the order they came
    await asyncio.sleep(0)
    assert entered == [0, 1, 2, 3] and slots.used == 4
    release.set()
    await asyncio.gather(*tasks)
    assert entered == [0, 1, 2, 3, 4] and slots.used == 0


async def test_shrinking_waits_for_holders_and_lets_no_one_in_meanwhile():
    slots, release = Slots(3), asyncio.Event()
    entered: list[int] = []
    holders = [asyncio.create_task(_hold(slots, entered, i, release)) for i in range(3)]
    await asyncio.sleep(0)
    shrink = asyncio.create_task(slots.resize(1))
    late = asyncio.create_task(_hold(slots, entered, 3, asyncio.Event()))
    await asyncio.sleep(0.01)
    assert not shrink.done() and entered == [0, 1, 2]  # no holder is interrupted
    release.set()
    await asyncio.wait_for(shrink, 5)  # returns once what is in use fits
    await asyncio.gather(*holders)
    await asyncio.sleep(0)
    assert entered == [0, 1, 2, 3] and slots.used == 1  # the one slot left went to the waiter
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    assert slots.used == 0
    with pytest.raises(ValueError):
        await slots.resize(-1)


async def test_a_paused_slot_pool_holds_waiters_until_it_grows():
    slots, release = Slots(0), asyncio.Event()
    entered: list[int] = []
    gone = asyncio.create_task(_hold(slots, entered, 1, release))
    waiter = asyncio.create_task(_hold(slots, entered, 0, release))
    await asyncio.sleep(0.01)
    gone.cancel()  # a waiter that leaves takes nothing with it
    await asyncio.gather(gone, return_exceptions=True)
    assert entered == [] and slots.used == 0
    await slots.resize(1)
    await asyncio.sleep(0)
    assert entered == [0]
    release.set()
    await waiter


async def test_a_waiter_cancelled_as_it_is_granted_hands_its_slot_on():
    slots, release = Slots(1), asyncio.Event()
    entered: list[int] = []
    await slots.__aenter__()
    second = asyncio.create_task(_hold(slots, entered, 1, release))
    third = asyncio.create_task(_hold(slots, entered, 2, release))
    await asyncio.sleep(0)
    await slots.__aexit__(None, None, None)  # grants the slot to the second...
    second.cancel()  # ...which is cancelled before it could run
    release.set()
    await asyncio.gather(second, third, return_exceptions=True)
    assert second.cancelled() and entered == [2] and slots.used == 0


async def test_a_cancelled_caller_of_in_thread_goes_on_only_once_the_thread_has_ended():
    started, release, ended = threading.Event(), threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        release.wait(60)
        ended.set()

    task = asyncio.create_task(in_thread(work))
    await asyncio.to_thread(started.wait, 60)
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()  # a second cancellation does not cut it short either
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()  # the thread had ended before the caller went on


async def test_in_thread_returns_what_the_thread_returns_and_raises_what_it_raises():
    assert await in_thread(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await in_thread(divmod, 1, 0)


# -- Budget: bytes of answers held at once --------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
async def test_a_budget_is_never_exceeded_and_everyone_gets_through(seed):
    rng = random.Random(seed)
    budget, peak, done = Budget(100), [0], []

    async def take(i: int, n: int) -> None:
        async with budget.hold(n):
            peak[0] = max(peak[0], budget.used)
            await asyncio.sleep(rng.uniform(0, 0.005))
        done.append(i)

    sizes = [rng.randint(0, 100) for _ in range(60)]
    await asyncio.gather(*(take(i, n) for i, n in enumerate(sizes)))
    assert sorted(done) == list(range(60)) and budget.used == 0
    assert sum(sorted(sizes)[-2:]) > 100 >= peak[0]  # it did have to make some wait


async def test_a_budget_serves_in_order_and_a_cancelled_waiter_frees_those_behind_it():
    budget, release = Budget(10), asyncio.Event()
    entered: list[str] = []

    async def take(name: str, n: int) -> None:
        async with budget.hold(n):
            entered.append(name)
            await release.wait()

    first = asyncio.create_task(take("first", 6))
    await asyncio.sleep(0)
    big = asyncio.create_task(take("big", 8))  # does not fit yet: waits
    small = asyncio.create_task(take("small", 2))  # would fit, but comes after "big"
    await asyncio.sleep(0.01)
    assert entered == ["first"] and budget.used == 6
    big.cancel()
    await asyncio.gather(big, return_exceptions=True)
    await asyncio.sleep(0)
    assert entered == ["first", "small"] and budget.used == 8
    release.set()
    await asyncio.gather(first, small)
    assert budget.used == 0
    with pytest.raises(ValueError, match="cannot hold 11"):
        async with budget.hold(11):
            pass


def test_the_loop_of_a_run_frees_the_socket_of_a_connection_cancelled_while_it_is_made():
    # A data set that fails cancels its other downloads, some while they connect. uvloop before
    # 0.23 then left the socket object owning an fd the kernel reuses (MagicStack/uvloop#738); the
    # run's loop must be one that does not (asyncio's, or a uvloop that detaches the socket).
    async def cancelled_connections() -> int:
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        still_owned = 0
        async with server:
            for _ in range(20):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", port))
                connecting = asyncio.ensure_future(
                    loop.create_connection(asyncio.Protocol, sock=sock)
                )
                await asyncio.sleep(0)
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    transport, _ = await connecting
                    transport.close()  # made before the cancel came: not the case asked about
                    continue
                if sock.fileno() != -1:
                    still_owned += 1
                    sock.detach()  # the transport closed its fd already: do not close it twice
        return still_owned

    assert aio.run(cancelled_connections()) == 0


async def test_requests_from_two_threads_each_reach_the_server_as_sent(serve):
    # Two event loops in one process: asyncdl's own in a thread under Jupyter (aio.run), and the
    # emulator's in the tests. aiohttp before 3.13 wrote every message's headers into one static C
    # buffer (aio-libs/aiohttp#11464, fixed in 3.13.0): a thread switch midway sent one request
    # with the other's bytes, request line and all (a 400, or another target's answer). A header
    # whose str() waits for the other thread forces that switch here; in the wild any Python code
    # run meanwhile can (a garbage collection's finalizers).
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.path)

    base = await serve(echo)
    paused, sent = threading.Event(), threading.Event()

    class Pausing(str):
        def __str__(self) -> str:
            paused.set()
            sent.wait(10)
            return str.__str__(self)

    def get(path: str, headers: dict[str, str]) -> tuple[int, str]:
        async def main() -> tuple[int, str]:
            async with (
                aiohttp.ClientSession() as session,
                session.get(base + path, headers=headers) as resp,
            ):
                return resp.status, await resp.text()

        return asyncio.run(main())

    def second() -> tuple[int, str]:
        assert paused.wait(10), "the first request's headers were not paused"
        try:
            return get("/second", {})
        finally:
            sent.set()

    first = asyncio.to_thread(get, "/first", {"X-Probe": Pausing("1")})
    assert list(await asyncio.gather(first, asyncio.to_thread(second))) == [
        (200, "/first"),
        (200, "/second"),
    ]


@pytest.mark.parametrize(
    ("version", "used"), [("0.17.0", False), ("0.22.1", False), ("0.23.0", True), ("1.0", True)]
)
def test_uvloop_is_used_only_from_the_release_that_frees_cancelled_connections(
    monkeypatch, version, used
):
    uvloop = types.ModuleType("uvloop")
    uvloop.__version__ = version  # type: ignore[attr-defined]
    uvloop.new_event_loop = asyncio.new_event_loop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvloop", uvloop)
    assert (aio.event_loop_factory() is asyncio.new_event_loop) is used
