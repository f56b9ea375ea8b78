"""Never lose a result: faults, retries, resume after a crash, hostile servers, bad input."""

import asyncio
import random
import signal
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiohttp import web

import asyncdl
from asyncdl import FetchOptions
from asyncdl.emulator import DATA_SET_IDS, FAULT_KINDS, Emulator, FaultPlan
from asyncdl.fetcher import HttpClient, Tally, parse_retry_after
from asyncdl.limits import RateLimiter
from asyncdl.responses import rows
from asyncdl.sources import GRIDS

from .conftest import (
    SEED_ID,
    Recorder,
    Sleeps,
    command,
    run_cli,
    server_args,
    source_dir,
    wait_for_answers,
)

SMALL = (0.1, 0.12)  # a density range with a few hundred targets, for quick runs
# Retries fast enough for tests; the policy itself is what production uses. The 0.5 s timeout
# turns the emulator's "slow" fault (1 s or more) into a timeout; on a busy machine a healthy answer
# can miss it too, which costs a retry, so tests that count retries exactly use PATIENT instead.
QUICK = FetchOptions(
    retries=12, backoff_base=0.005, backoff_max=0.05, retry_after_max=0.05, timeout=0.5
)
#: A timeout no healthy answer misses, however busy the machine: every retry is an injected fault.
PATIENT = 30.0


def data(out, data_set=SEED_ID):
    return (out / str(data_set) / "data.json").read_bytes()


@pytest.fixture
async def fault_free(emulator, tmp_path_factory):
    """data.json of fault-free runs on the shared emulator, by density range."""
    cache: dict[tuple[tuple[float, float], int], bytes] = {}

    async def get(density_range, data_set=SEED_ID):
        key = (density_range, data_set)
        if key not in cache:
            out = tmp_path_factory.mktemp("fault_free")
            options = FetchOptions(concurrency=16, density_range=density_range)
            [result] = await asyncdl.fetch(
                [data_set], out, options=options, endpoints=emulator.endpoints
            )
            assert result.complete
            cache[key] = data(out, data_set)
        return cache[key]

    return get


@pytest.mark.parametrize("kind", [k for k in FAULT_KINDS if k != "apierror"])
async def test_each_fault_kind_is_survived(fault_free, tmp_path, kind):
    expected = await fault_free(SMALL)  # first: it also has the emulator build its files
    plan = FaultPlan(rate=0.3, seed=3, kinds=(kind,), slow_seconds=1.0)
    # Only a "slow" fault needs a short timeout; the others get one no healthy answer misses.
    timeout = QUICK.timeout if kind == "slow" else PATIENT
    options = replace(QUICK, concurrency=16, density_range=SMALL, timeout=timeout)
    events = Recorder()
    async with Emulator(faults=plan) as emu:
        [result] = await asyncdl.fetch(
            [SEED_ID], tmp_path, options=options, endpoints=emu.endpoints, events=events
        )
    assert plan.injected[kind] > 10
    assert result.complete and result.failures == 0
    if kind == "drop":  # aiohttp itself re-sends a request once when a pooled connection drops
        assert 0 < result.retries <= plan.injected[kind]
    elif kind == "slow":
        # Every slow answer was given up and retried. A healthy answer that missed the short
        # timeout on a busy machine costs one more retry, so only timeouts may be retried.
        assert result.retries >= plan.injected[kind]
        assert events.retries and all("Timeout" in r["error"] for r in events.retries)
    else:  # every fault cost exactly one retry, volume downloads included
        assert result.retries == plan.injected[kind]
    assert data(tmp_path) == expected


async def test_chaos_twenty_percent_faults_on_several_data_sets(fault_free, tmp_path):
    ids = list(DATA_SET_IDS[:3])
    expected = {data_set: await fault_free((0.04, 0.3), data_set) for data_set in ids}
    plan = FaultPlan(rate=0.2, seed=11, slow_seconds=1.5)
    options = replace(QUICK, concurrency=32)
    async with Emulator(faults=plan) as emu:
        results = await asyncdl.fetch(ids, tmp_path, options=options, endpoints=emu.endpoints)
    assert all(r.complete and r.failures == 0 for r in results)
    assert set(plan.injected) == set(FAULT_KINDS) - {"apierror"}
    assert sum(plan.injected.values()) > 1000
    for data_set in ids:
        assert data(tmp_path, data_set) == expected[data_set]


async def test_failed_targets_are_recorded_and_exactly_those_are_retried(
    fault_free, emulator, tmp_path
):
    # Spatial searches fail 30% of the time and are not retried: some targets fail for good.
    plan = FaultPlan(rate=0.3, seed=5, kinds=("503", "apierror"), routes=frozenset({"query"}))
    options = FetchOptions(concurrency=16, density_range=SMALL, retries=0)
    async with Emulator(faults=plan) as emu:
        [first] = await asyncdl.fetch([SEED_ID], tmp_path, options=options, endpoints=emu.endpoints)
    directory = tmp_path / str(SEED_ID)
    failures = [
        orjson.loads(line) for line in (directory / "failures.ndjson").read_bytes().splitlines()
    ]
    assert not first.complete and first.failures == len(failures) > 10
    assert {"rank", "index", "coord", "error", "attempts"} == set(failures[0])
    assert {f["attempts"] for f in failures} == {1}
    assert any("success" not in f["error"] and "503" in f["error"] for f in failures)
    assert any("Data Access error" in f["error"] for f in failures)  # success: false is kept
    summary = orjson.loads((directory / "summary.json").read_bytes())
    assert summary["complete"] is False and "failures.ndjson" in summary["error"]
    lines = [orjson.loads(line) for line in (directory / "lines.ndjson").read_bytes().splitlines()]
    assert {f["rank"] for f in failures}.isdisjoint(line["rank"] for line in lines)

    # The same command against a healthy server asks for exactly the failed targets.
    [second] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints
    )
    assert second.complete and second.resumed == first.targets - len(failures)
    assert emulator.stats.requests["query"] == len(failures)
    # The volumes and the structure tree came from the cache: only the targets were asked again.
    assert set(emulator.stats.requests) == {"query"}
    assert data(tmp_path) == await fault_free(SMALL)
    assert not (directory / "failures.ndjson").exists()

    # And once complete, the same command asks for nothing at all.
    emulator.stats.reset()
    [third] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints
    )
    assert third.skipped and third.complete and sum(emulator.stats.requests.values()) == 0


@pytest.mark.parametrize(("header", "cap", "expected"), [("7", 60.0, 7.0), ("7", 2.0, 2.0)])
async def test_retry_after_is_honoured_and_capped(serve, header, cap, expected):
    calls = []

    async def handle(request):
        calls.append(1)
        if len(calls) == 1:
            return web.Response(status=429, headers={"Retry-After": header})
        return web.json_response({"success": True, "msg": []})

    url = await serve(handle)
    sleeps = Sleeps()
    options = FetchOptions(retries=2, backoff_base=0.01, retry_after_max=cap)
    async with HttpClient(options, sleep=sleeps) as http:
        assert await http.get_json(url + "/q", Tally(), rows) == []
    assert sleeps.waits == [expected]


def test_parse_retry_after():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(later, now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


async def test_rate_limiter_spaces_requests():
    clock = [0.0]

    async def sleep(seconds):
        clock[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: clock[0], sleep=sleep)
    starts = []
    for _ in range(5):
        await limiter.wait()
        starts.append(clock[0])
    assert starts == [0.0, 0.25, 0.5, 0.75, 1.0]


async def test_a_rate_given_up_is_free_once_the_starts_reserved_at_it_have_passed():
    clock = [0.0]

    async def sleep(seconds):
        clock[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(3):
        await limiter.wait()  # starts at 0, 0.25 and 0.5; the next is reserved for 0.75
    await limiter.set_rate(1.0)
    assert clock[0] == 0.75  # returns only once the old rate's reservations are past
    starts = []
    for _ in range(2):
        await limiter.wait()
        starts.append(clock[0])
    assert starts == [0.75, 1.75]


async def test_rate_is_global_across_a_run(emulator, tmp_path):
    rate = 40.0
    options = FetchOptions(concurrency=16, density_range=(0.1, 0.102), rate=rate)
    start = time.monotonic()
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints
    )
    elapsed = time.monotonic() - start
    assert result.complete and result.requests >= 20
    assert elapsed >= (result.requests - 1) / rate
    # Seen at the server (in this process, on the same clock): one limiter for the whole run gives
    # the k-th request a start no earlier than `start + (k - 1) / rate`, and a request reaches the
    # server only after its start, so the k-th arrival cannot be earlier either. A busy machine
    # only delays arrivals (the check cannot fail for that); requests let through without the run's
    # limiter (volumes, a second data set, a limiter per lane) arrive ahead of that schedule.
    # (Requests of earlier tests that were still being answered began before `start`.)
    arrivals = sorted(begin for _, _, begin, _ in emulator.stats.log or [] if begin >= start)
    assert len(arrivals) == result.requests
    early = [k for k, t in enumerate(arrivals) if t < start + k / rate - 1e-6]
    assert not early, f"requests {early} reached the server ahead of {rate:g}/s"


# -- resume after a crash ------------------------------------------------------------------------


def _fetch_args(emulator, out):
    return ["fetch", SEED_ID, "-o", out, "-c", 4, *server_args(emulator)]


def _fetch_process(emulator, out):
    return subprocess.Popen(
        command(*_fetch_args(emulator, out)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_at_random_points_then_resume(emulator, seed_reference, tmp_path):
    expected = seed_reference(SEED_ID, "nrrd")  # an uninterrupted run's output
    emulator.stats.reset()
    rng = random.Random(2026)
    lines = tmp_path / str(SEED_ID) / "lines.ndjson"
    kills = 0
    for attempt in range(5):
        proc = _fetch_process(emulator, tmp_path)
        if attempt == 0:
            time.sleep(rng.uniform(0.3, 1.0))  # somewhere in start-up or the volumes
        else:
            want = rng.randrange(50, 1800)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if lines.exists() and lines.read_bytes().count(b"\n") >= want:
                    break
                time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    assert kills >= 4
    proc = run_cli(*_fetch_args(emulator, tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = orjson.loads((tmp_path / str(SEED_ID) / "data.json").read_bytes())
    assert result == expected
    summary = orjson.loads((tmp_path / str(SEED_ID) / "summary.json").read_bytes())
    # Each kill loses at most the requests in flight (-c 4); nothing else is asked twice.
    assert emulator.stats.requests["query"] <= summary["targets"] + kills * 4
    assert not list((tmp_path / str(SEED_ID)).glob(".*.tmp"))


def test_sigterm_stops_cleanly_and_the_run_resumes(emulator, seed_reference, tmp_path):
    proc = _fetch_process(emulator, tmp_path)
    lines = tmp_path / str(SEED_ID) / "lines.ndjson"
    wait_for_answers([lines], lambda: proc.poll() is None, min_bytes=10_000)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert stderr.strip().splitlines()[-1].startswith("asyncdl: terminated; run the same command")
    assert "Traceback" not in stderr and "Unclosed" not in stderr
    proc = run_cli(*_fetch_args(emulator, tmp_path), timeout=120)
    assert proc.returncode == 0 and "resumed after" in proc.stderr
    result = orjson.loads((tmp_path / str(SEED_ID) / "data.json").read_bytes())
    assert result == seed_reference(SEED_ID, "nrrd")


def test_changed_parameters_are_refused_then_restart_works(emulator, tmp_path):
    def run(*extra):
        args = ["fetch", SEED_ID, "-o", tmp_path, "-c", 8, *server_args(emulator), *extra]
        return run_cli(*args, timeout=120)

    assert run("--density-range", "0.1", "0.11").returncode == 0
    refused = run("--density-range", "0.1", "0.12")
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert "other parameters (density_range [0.1, 0.11] -> [0.1, 0.12])" in line
    assert "--restart" in line
    restarted = run("--density-range", "0.1", "0.12", "--restart")
    assert restarted.returncode == 0, restarted.stderr
    summary = orjson.loads((tmp_path / str(SEED_ID) / "summary.json").read_bytes())
    assert summary["parameters"]["density_range"] == [0.1, 0.12] and summary["complete"]


# -- the volume cache ---------------------------------------------------------------------------


async def test_a_truncated_cached_volume_is_downloaded_again(emulator, fault_free, tmp_path):
    cache = tmp_path / "cache"
    options = FetchOptions(concurrency=8, density_range=SMALL, keep_volumes=True)
    await asyncdl.fetch(
        [SEED_ID], tmp_path / "a", options=options, endpoints=emulator.endpoints, cache_dir=cache
    )
    grid = source_dir(cache, emulator.endpoints) / "grids" / f"grid_{SEED_ID}_density.nrrd"
    grid.write_bytes(grid.read_bytes()[:-1000])
    emulator.stats.reset()
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path / "b", options=options, endpoints=emulator.endpoints, cache_dir=cache
    )
    assert result.complete
    assert emulator.stats.requests["grid_nrrd"] == 1  # only the damaged file
    assert data(tmp_path / "b") == await fault_free(SMALL)


async def test_two_processes_sharing_a_cache(emulator, fault_free, tmp_path):
    cache = tmp_path / "cache"
    args = ["--cache-dir", cache, "--density-range", *SMALL, "-c", 8, *server_args(emulator)]
    procs = await asyncio.gather(  # at the same time: threads, each waiting for its process
        *(
            asyncio.to_thread(run_cli, "fetch", SEED_ID, "-o", tmp_path / name, *args)
            for name in ("one", "two")
        )
    )
    for proc in procs:
        assert proc.returncode == 0, proc.stderr
    expected = await fault_free(SMALL)
    assert data(tmp_path / "one") == data(tmp_path / "two") == expected
    assert not [p for p in cache.rglob("*") if p.name.endswith((".part", ".tmp"))]


# -- hostile servers and bad input ---------------------------------------------------------------


async def test_html_where_a_volume_was_expected(serve, tmp_path, user_cache):
    async def page(request):
        if not request.path.startswith("/grid_data/"):
            await asyncio.sleep(1)  # the grids fail first (the structure tree's JSON would too)
        return web.Response(text="<html><body>Maintenance</body></html>", content_type="text/html")

    url = await serve(page)
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=FetchOptions(retries=0), endpoints=asyncdl.Endpoints(url, url)
    )
    assert not result.complete and "an HTML page (text/html)" in (result.error or "")
    assert f"({url}/grid_data/" in (result.error or "")  # it names the URL
    assert asyncdl.cache.entries(user_cache) == []  # nothing cached, not even half


async def test_a_volume_larger_than_its_grid_allows_is_refused(serve, tmp_path, user_cache):
    limit = GRIDS["nrrd"][0].max_file_bytes

    async def big(request):
        if not request.path.startswith("/grid_data/"):
            await asyncio.sleep(1)  # the grids fail first
            raise web.HTTPNotFound()
        response = web.StreamResponse(headers={"Content-Length": str(limit + 1)})
        await response.prepare(request)
        try:
            for _ in range(limit // 65536 + 1):
                await response.write(bytes(65536))
        except ConnectionError:
            pass  # the client hung up, as it should
        return response

    url = await serve(big)
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=FetchOptions(retries=0), endpoints=asyncdl.Endpoints(url, url)
    )
    assert not result.complete
    assert f"is larger than the {limit} bytes allowed ({url}/grid_data/" in (result.error or "")
    assert asyncdl.cache.entries(user_cache) == []  # nothing cached, not even half


def test_emulate_rejects_unknown_fault_kinds():
    proc = run_cli("emulate", "--faults", "gremlins", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "asyncdl: error: unknown fault kinds ['gremlins']; known: " + ", ".join(FAULT_KINDS)
    ]
