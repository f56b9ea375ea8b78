"""The library end to end against the emulator on a loopback socket."""

import asyncio
import dataclasses
import itertools
from types import SimpleNamespace

import orjson
import pytest

import asyncdl
from asyncdl import FetchOptions
from asyncdl.emulator import Emulator
from asyncdl.pipeline import Pipeline

from .conftest import SEED_ID, Recorder


def load(path):
    return orjson.loads(path.read_bytes())


def check_lines_file(directory, targets):
    ranks = [
        orjson.loads(line)["rank"]
        for line in (directory / "lines.ndjson").read_bytes().splitlines()
    ]
    assert sorted(ranks) == list(range(targets))


@pytest.mark.parametrize("volumes", ["nrrd", "legacy"])
async def test_fetch_equals_the_seed(emulator, seed_reference, tmp_path, volumes):
    # The journal goes once data.json is verified; with --keep-journal it stays, as written.
    keep_journal = volumes == "legacy"
    options = FetchOptions(concurrency=16, volumes=volumes, keep_journal=keep_journal)
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints
    )
    directory = tmp_path / str(SEED_ID)
    expected = seed_reference(SEED_ID, volumes)
    assert load(directory / "data.json") == expected
    assert result.complete and result.failures == 0 and result.error is None
    assert result.lines == len(expected["lines"]) > 1000
    # One request per target, plus the volumes: density, injection and the shared fiber source
    # (annotation + structure tree for NRRD, the fiber-tract zip for legacy).
    assert result.requests == result.targets + 2 + (2 if volumes == "nrrd" else 1)
    if keep_journal:
        check_lines_file(directory, result.targets)
    else:
        assert not (directory / "lines.ndjson").exists()
    summary = load(directory / "summary.json")
    assert summary["complete"] is True and summary["targets"] == result.targets
    assert summary["parameters"]["volumes"] == volumes
    assert not (directory / "failures.ndjson").exists()


async def test_output_does_not_depend_on_concurrency(emulator, tmp_path):
    outputs = []
    for concurrency in (1, 48):
        out = tmp_path / str(concurrency)
        options = FetchOptions(concurrency=concurrency, density_range=(0.1, 0.13))
        [result] = await asyncdl.fetch(
            [SEED_ID], out, options=options, endpoints=emulator.endpoints
        )
        assert result.complete and result.targets > 100
        outputs.append((out / str(SEED_ID) / "data.json").read_bytes())
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("limit", [1, 4, 32])
async def test_server_never_sees_more_than_concurrency(tmp_path, limit):
    # A latency of 5 ms per slot: the lanes have that long per request to fill every slot, many
    # times what a request costs the client even on a busy machine, so reaching the bound does not
    # hang on scheduling; and the run still takes about 5 ms per request whatever the limit.
    options = FetchOptions(concurrency=limit, density_range=(0.1, 0.12))
    async with Emulator(latency_ms=5.0 * limit, latency_spread=0.0) as emu:
        results = await asyncdl.fetch(
            [SEED_ID, 100141219], tmp_path, options=options, endpoints=emu.endpoints
        )
        peak = emu.stats.peak_in_flight
    assert all(r.complete for r in results)
    assert sum(r.requests for r in results) > 10 * limit
    assert peak <= limit
    assert peak > limit // 2  # and the bound is what limits


async def test_auto_keeps_a_server_of_limited_capacity_busy_with_a_short_queue(tmp_path):
    # 16 handlers at 50 ms. A fixed -c 64 keeps 48 requests waiting in the server's queue, three
    # service times each; -c auto finds the 16 and keeps a few more, with the same output.
    waits = {}
    outputs = {}
    for name, concurrency in (("auto", "auto"), ("fixed", 64)):
        options = FetchOptions(concurrency=concurrency, density_range=(0.1, 0.16))  # type: ignore[arg-type]
        async with Emulator(latency_ms=50, capacity=16) as emu:
            [result] = await asyncdl.fetch(
                [SEED_ID], tmp_path / name, options=options, endpoints=emu.endpoints
            )
            queue = emu.stats.queue
            assert queue is not None and queue.peak_busy <= 16
            waits[name] = queue.wait_seconds / queue.served
        assert result.complete and result.targets > 400
        outputs[name] = (tmp_path / name / str(SEED_ID) / "data.json").read_bytes()
    assert outputs["auto"] == outputs["fixed"]
    assert waits["fixed"] >= 0.1  # two service times or more, on average
    assert waits["auto"] <= 0.05  # one at most, slow start's overshoot included


async def test_many_data_sets_keep_the_pipe_full(tmp_path):
    # With one queue for all data sets, the next data set's first query goes out when the first
    # lane frees up after the previous data set's last target was taken, about latency / 16
    # later, while that last query takes the whole latency. A fixed latency of 100 ms leaves a
    # margin of that order for scheduling noise on a busy machine (measured: 100-150 ms, idle or
    # beside a CPU hog per core); a pipeline that waited for a data set to drain has no overlap
    # at all, whatever the timing.
    ids = [SEED_ID, 100141219, 112514202]
    options = FetchOptions(concurrency=16, density_range=(0.1, 0.12))
    async with Emulator(latency_ms=100, latency_spread=0.0, record=True) as emu:
        results = await asyncdl.fetch(ids, tmp_path, options=options, endpoints=emu.endpoints)
        log = emu.stats.log or []
    assert [r.data_set for r in results] == ids and all(r.complete for r in results)
    assert all(r.targets > 100 for r in results)
    queries = [entry for entry in log if entry[0] == "query"]
    # Data sets are fed in the order they are ready (on a loaded machine that need not be the
    # order of the ids): each must start before the one fed before it has drained.
    fed = sorted(ids, key=lambda d: min(start for _, ds, start, _ in queries if ds == d))
    for first, second in itertools.pairwise(fed):
        last_end = max(end for _, ds, _, end in queries if ds == first)
        next_start = min(start for _, ds, start, _ in queries if ds == second)
        assert next_start < last_end, "the next data set waited for the previous one to drain"


async def test_unknown_data_set_fails_alone(emulator, tmp_path):
    seen = Recorder()
    options = FetchOptions(concurrency=8, density_range=(0.1, 0.2), retries=0)
    results = await asyncdl.fetch(
        [42, SEED_ID],
        tmp_path,
        options=options,
        endpoints=emulator.endpoints,
        events=seen,
    )
    bad, good = results
    assert not bad.complete and "404" in (bad.error or "") and bad.targets == 0
    assert good.complete and good.lines > 0
    assert {r.data_set for r in seen.done} == {42, SEED_ID}
    assert load(tmp_path / "42" / "summary.json")["complete"] is False
    assert not (tmp_path / "42" / "data.json").exists()


def test_fetch_sync_for_scripts(emulator, tmp_path):
    options = FetchOptions(concurrency=8, density_range=(0.1, 0.11))
    [result] = asyncdl.fetch_sync(
        [str(SEED_ID)], tmp_path, options=options, endpoints=emulator.endpoints
    )
    assert result.complete and (tmp_path / str(SEED_ID) / "data.json").exists()


async def test_rerun_with_brainrender_replaces_only_an_old_layout_file(emulator, tmp_path):
    options = FetchOptions(concurrency=8, density_range=(0.1, 0.11))
    fetch = dict(options=options, endpoints=emulator.endpoints)
    [first] = await asyncdl.fetch([SEED_ID], tmp_path, **fetch)
    assert first.complete
    viewer = tmp_path / str(SEED_ID) / f"streamlines_{SEED_ID}.json"
    viewer.write_bytes(b'{"lines":[[{"x":1,"y":2,"z":3}]],"injection_sites":[]}')  # asyncdl 0.1.0
    with_brainrender = dict(fetch, options=dataclasses.replace(options, formats=("brainrender",)))
    [again] = await asyncdl.fetch([SEED_ID], tmp_path, **with_brainrender)
    assert again.complete and again.requests == 0
    body = viewer.read_bytes()
    assert (
        body.startswith(b'{"lines":{"0":[') and len(orjson.loads(body)["lines"]["0"]) == again.lines
    )
    stamp = viewer.stat().st_mtime_ns, viewer.stat().st_ino
    await asyncdl.fetch([SEED_ID], tmp_path, **with_brainrender)
    assert (viewer.stat().st_mtime_ns, viewer.stat().st_ino) == stamp  # a current file stays


class Gate:
    """Stands in for a data set: its targets wait for ``go``; it records how many ran at once."""

    def __init__(self) -> None:
        self.running = self.done = 0
        self.go = asyncio.Event()

    async def fetch_target(self, rank: int) -> None:
        self.running += 1
        try:
            await self.go.wait()
        finally:
            self.running -= 1
            self.done += 1


async def test_a_resized_pipeline_runs_that_many_lanes():
    ctx = SimpleNamespace(plan=SimpleNamespace(options=FetchOptions(concurrency=8)))
    async with Pipeline(ctx, lanes=2) as pipeline:  # type: ignore[arg-type]
        gate = Gate()
        for rank in range(12):
            pipeline._queue.put_nowait((gate, rank))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert gate.running == 2
        pipeline.resize(5)
        await asyncio.sleep(0.05)
        assert gate.running == 5
        pipeline.resize(1)  # the extra lanes stop once their target is done
        gate.go.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if gate.done == 12:
                break
        assert gate.done == 12 and len(pipeline._lanes) == 1
