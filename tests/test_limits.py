"""The meters every request goes through: slots sized by -c or by the controller, the event
loop's lag and stalls, and what each attempt's outcome tells the controller, on real sockets."""

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time

import aiohttp
import pytest
from aiohttp import web

from asyncdl import FetchOptions, TransientError
from asyncdl.fetcher import HttpClient, Tally
from asyncdl.limits import REPORT_SECONDS, Limits, LoopLag
from asyncdl.responses import rows
from benchmarks import cgroups

from .conftest import EmulatorThread

QUERY = (
    "/api/v2/data/query.json?criteria=service::mouse_connectivity_target_spatial"
    "[seed_point$eq6600,3900,5700][section_data_set$eq156394513]"
)


#: A process whose event loop does a millisecond of work every other millisecond for a second,
#: on one CPU (beside ``argv[2]`` other processes spinning there, with a CPU quota if it was put in
#: a cgroup of one), and tells how its loop stalled and how long its thread waited for a CPU.
_LOOP = """
import asyncio, json, os, subprocess, sys, time
from asyncdl.limits import LoopLag
cpu = min(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpu})
rivals = [subprocess.Popen([sys.executable, "-c", sys.argv[1]]) for _ in range(int(sys.argv[2]))]
time.sleep(0.3)  # the rivals are up and spinning

def waited():
    with open("/proc/thread-self/schedstat") as stats:
        return int(stats.read().split()[1]) / 1e9

async def main():
    lag = LoopLag()
    lag.start()
    before, start = waited(), time.monotonic()
    while time.monotonic() - start < 1.0:
        end = time.monotonic() + 0.001
        while time.monotonic() < end:
            pass
        await asyncio.sleep(0.001)
    lag.stop()
    wall = time.monotonic() - start
    return {"stalled": lag.reading().stalled / wall, "waited": (waited() - before) / wall}

print(json.dumps(asyncio.run(main())))
for rival in rivals:
    rival.wait()
"""
_RIVAL = """
import os, time
os.sched_setaffinity(0, {%d})
end = time.monotonic() + 1.6
while time.monotonic() < end:
    pass
"""


def _loop_shares(prefix: list[str], rivals: int) -> dict[str, float]:
    cpu = min(os.sched_getaffinity(0))
    child = subprocess.run(
        [*prefix, sys.executable, "-c", _LOOP, _RIVAL % cpu, str(rivals)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    shares: dict[str, float] = json.loads(child.stdout)
    return shares


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="not Linux")
def test_short_waits_for_a_busy_cpu_are_no_stalls_of_the_loop():
    # Two processes spin on the loop's CPU: its thread waits for it, but in short turns (the
    # scheduler runs a task that slept soon after it wakes). Those waits delay answers at random,
    # which the mean lag measures; they are no stalls.
    shares = _loop_shares([], rivals=2)
    assert shares["waited"] > 0.01  # it did wait for the CPU...
    assert shares["stalled"] < 0.1  # ... without stalls


@pytest.mark.skipif(cgroups.available() is not None, reason=cgroups.available() or "")
def test_a_cpu_quota_freezes_the_loop_in_stalls():
    # 0.2 of a core in 0.1 s periods: the loop's millisecond of work every other one needs half a
    # core, so it runs 20 ms and is frozen 80 ms of each period: stalls of 80 ms, seen whole
    # (less the part of a tick before the first one missed).
    with cgroups.CpuQuota(f"asyncdl-test-{os.getpid()}", 0.2) as quota:
        shares = _loop_shares(quota.command([]), rivals=0)
    assert shares["stalled"] > 0.5


def test_a_tick_a_whole_interval_late_or_more_marks_a_stall_as_long():
    lag = LoopLag(interval=0.01)
    assert lag.ran(0.004) == 1  # late, but no other tick was due meanwhile: no stall
    assert lag.reading() == (0.004, 1, 0.0)
    assert lag.ran(0.035) == 4  # it stands for the three due since, 0.025, 0.015 and 0.005 late
    assert lag.reading() == pytest.approx((0.004 + 0.035 + 0.025 + 0.015 + 0.005, 5, 0.035))


async def test_an_answer_on_a_new_connection_is_told_from_one_on_a_connection_used_before(serve):
    # A spatial search's answer is small: read whole with its headers, its connection is back in
    # the pool (``response.connection`` is None) by the time the slot is told of it.
    url = await serve(ok) + "/q"
    limits = Limits(FetchOptions())
    fresh = []
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with limits.slot() as slot, session.get(url) as response:
                slot.answered(response)
            fresh.append(slot.fresh)
    assert fresh == [True, False, False]


async def test_the_loop_lag_counts_every_tick_that_was_due_while_the_loop_was_blocked():
    lag = LoopLag(interval=0.01)
    lag.start()
    try:
        await asyncio.sleep(0.05)
        before_late, before_ticks, before_stalled = lag.reading()
        start = time.monotonic()
        time.sleep(0.2)  # noqa: ASYNC251 (the point: a loop that cannot run)
        await asyncio.sleep(0.03)
        late, ticks, stalled = lag.reading()
        elapsed = time.monotonic() - start
    finally:
        lag.stop()
    # Twenty ticks were due while it was blocked, the first about 0.2 s late, the last about 0:
    # about 2 s of lateness in all, whatever else kept the machine busy (that only adds to it).
    assert ticks - before_ticks >= 20
    assert late - before_late >= 1.5
    # One stall, as long as the first of them was late: counted once, not once for each.
    assert 0.19 <= stalled - before_stalled <= elapsed
    assert before_late / max(before_ticks, 1) < 0.05  # while it could run, it ran on time


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"success": True, "msg": []})


async def test_a_busy_answer_halves_the_limit_and_other_answers_feed_the_law(serve):
    statuses = iter([503, 200, 429])

    async def handle(request):
        status = next(statuses)
        if status == 200:
            return await ok(request)
        return web.Response(status=status, headers={"Retry-After": "0"})

    url = await serve(handle) + "/q"
    async with HttpClient(FetchOptions(retries=0)) as http:
        controller = http.limits.controller
        assert controller is not None and http.limits.limit == 8
        with pytest.raises(TransientError, match="503"):
            await http.get_json(url, Tally(), rows)
        assert http.limits.limit == 4 and not controller.slow_start
        await http.get_json(url, Tally(), rows)
        assert http.limits.limit == 4  # one answer: no window is complete yet
        with pytest.raises(TransientError, match="429"):
            await http.get_json(url, Tally(), rows)
        assert http.limits.limit == 2


async def test_a_timeout_is_an_overload_and_a_refused_connection_says_nothing(serve):
    async def slow(request):
        await asyncio.sleep(1)
        return await ok(request)

    url = await serve(slow) + "/q"
    options = FetchOptions(retries=0, timeout=0.1)
    async with HttpClient(options) as http:
        with pytest.raises(TransientError, match="Timeout"):
            await http.get_json(url, Tally(), rows)
        assert http.limits.limit == 4
        with pytest.raises(TransientError, match="Connect"):
            await http.get_json("http://127.0.0.1:9/q", Tally(), rows)
        assert http.limits.limit == 4


async def test_a_fixed_limit_is_reported_once_and_the_controllers_at_most_every_second(serve):
    now = [0.0]

    async def handle(request):
        now[0] += 0.002  # each answer takes 2 ms of the client's (fake) time
        return await ok(request)

    url = await serve(handle) + "/q"

    async def told(options: FetchOptions) -> list[tuple[float, int]]:
        seen: list[tuple[float, int]] = []
        async with HttpClient(
            options, on_limit=lambda n: seen.append((now[0], n)), clock=lambda: now[0]
        ) as http:
            for _ in range(40):
                await asyncio.gather(*(http.get_json(url, Tally(), rows) for _ in range(20)))
                now[0] += 0.3
        return seen

    assert [limit for _, limit in await told(FetchOptions(concurrency=5))] == [5]
    seen = await told(FetchOptions())  # slow start grows it: told, but not twice a second
    assert len(seen) > 2
    assert all(b[0] - a[0] >= REPORT_SECONDS for a, b in itertools.pairwise(seen))


async def test_auto_keeps_to_max_concurrency_against_a_server_that_never_queues(serve):
    in_flight = peak = 0

    async def handle(request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.02)
            return await ok(request)
        finally:
            in_flight -= 1

    url = await serve(handle) + "/q"
    async with HttpClient(FetchOptions(max_concurrency=24)) as http:
        highest = 0
        for _ in range(10):
            await asyncio.gather(*(http.get_json(url, Tally(), rows) for _ in range(100)))
            highest = max(highest, http.limits.limit)
    assert highest == 24  # grown to it, with nothing to stop it...
    assert peak <= 24  # ... and never past it


@pytest.mark.parametrize("share", [0, 3])
async def test_a_share_under_auto_is_a_ceiling_for_the_controller(serve, share):
    url = await serve(ok) + "/q"
    async with HttpClient(FetchOptions(max_concurrency=16)) as http:
        await http.share(share)
        assert http.limits.limit == share
        if share:
            await asyncio.gather(*(http.get_json(url, Tally(), rows) for _ in range(200)))
            assert http.limits.limit <= share
        await http.share(16)
        assert http.limits.controller is not None and http.limits.controller.ceiling == 16


async def test_a_client_whose_loop_is_starved_keeps_the_server_busy():
    # The client's event loop is blocked 15 ms of every 50 (another task hogging it, as a busy
    # machine would): answers are read late. A controller that took that for a queue at the
    # server would cut its limit to a handful (in the simulation of test_controller, to a tenth
    # of what the server takes). The test compares it with the same client unhindered, on the
    # same machine and server (64 at once), so that how busy the machine is cancels out.
    async def hog() -> None:
        while True:
            time.sleep(0.015)  # noqa: ASYNC251 (the point: the loop cannot run meanwhile)
            await asyncio.sleep(0.035)

    async def mean_limit(url: str, hogged: bool) -> float:
        limits: list[int] = []

        async def watch(http: HttpClient) -> None:
            while True:
                limits.append(http.limits.limit)
                await asyncio.sleep(0.05)

        async with HttpClient(FetchOptions()) as http:
            tasks = [asyncio.create_task(watch(http))]
            if hogged:
                tasks.append(asyncio.create_task(hog()))
            try:
                for _ in range(6):  # about 4 s
                    await asyncio.gather(*(http.get_json(url, Tally(), rows) for _ in range(300)))
            finally:
                for task in tasks:
                    task.cancel()
        return sum(limits[len(limits) // 4 :]) / len(limits[len(limits) // 4 :])

    with EmulatorThread(latency_ms=50, latency_spread=0.2, capacity=64) as emu:
        url = emu.base_url + QUERY
        free = await mean_limit(url, hogged=False)
        starved = await mean_limit(url, hogged=True)
        queue = emu.stats.queue
        assert queue is not None
    print(f"mean limit: {free:.0f} free, {starved:.0f} starved")
    assert starved >= free / 3  # a collapse leaves a handful (about a tenth)
    assert queue.wait_seconds / queue.served <= 0.05  # a mean queue wait of at most L
