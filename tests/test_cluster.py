"""A run spread over a Dask cluster: 2 worker processes, the emulator in a process of its own.

The cluster is started once for the module; each test connects its own asynchronous client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

import asyncdl
from asyncdl import FetchOptions, UsageError
from asyncdl.locks import LOCK, FolderLock

from .conftest import (
    SEED_ID,
    EmulatorProcess,
    Recorder,
    answers_written,
    command,
    interruptible,
    run_cli,
    wait_for_answers,
)

distributed = pytest.importorskip("distributed")

IDS = [SEED_ID, 100141219, 112514202]
NARROW = (0.1, 0.2)  # fewer targets per data set: the tests stay quick on 2 busy cores


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:  # a distributed.LocalCluster (imported at run time)
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=3,
        processes=True,
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
        silence_logs=logging.CRITICAL,
    ) as local:
        yield local


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorProcess]:
    with EmulatorProcess("--latency-ms", 5) as emu:
        yield emu


@pytest.fixture(scope="module")
def single_process(server, tmp_path_factory) -> dict[int, bytes]:
    """data.json of each data set from a run in this process: what the cluster must reproduce."""
    out = tmp_path_factory.mktemp("single")
    options = FetchOptions(density_range=NARROW)
    results = asyncdl.fetch_sync(IDS, out, options=options, endpoints=server.endpoints)
    assert all(r.complete for r in results)
    return {ds: (out / str(ds) / "data.json").read_bytes() for ds in IDS}


async def test_output_is_byte_identical_to_a_single_process_run(
    cluster, server, single_process, tmp_path
):
    options = FetchOptions(concurrency=16, density_range=NARROW)
    async with distributed.Client(cluster.scheduler_address, asynchronous=True) as client:
        results = await asyncdl.fetch(
            IDS, tmp_path, options=options, endpoints=server.endpoints, client=client
        )
    assert [r.data_set for r in results] == IDS and all(r.complete for r in results)
    for ds in IDS:
        assert (tmp_path / str(ds) / "data.json").read_bytes() == single_process[ds]
    # Rerun: complete data sets are skipped, as locally.
    async with distributed.Client(cluster.scheduler_address, asynchronous=True) as client:
        again = await asyncdl.fetch(
            IDS, tmp_path, options=options, endpoints=server.endpoints, client=client
        )
    assert [r.status for r in again] == ["skipped"] * 3
    # A damaged data.json is repaired on a worker, and its note reaches the client.
    data = tmp_path / str(IDS[1]) / "data.json"
    data.write_bytes(data.read_bytes()[:1000])
    notes = Recorder()
    async with distributed.Client(cluster.scheduler_address, asynchronous=True) as client:
        repaired = await asyncdl.fetch(
            IDS, tmp_path, options=options, endpoints=server.endpoints, client=client, events=notes
        )
    assert [r.status for r in repaired] == ["skipped", "ok", "skipped"]
    assert data.read_bytes() == single_process[IDS[1]]
    [note] = notes.of("repairing")
    assert note["data_set"] == IDS[1] and note["damage"].startswith("data.json is 1,000 bytes")


async def test_a_data_set_another_process_holds_is_left_to_it_or_waited_for(
    cluster, server, single_process, tmp_path
):
    """As in a local run: left to the process that holds it, or with ``wait``, waited for."""
    folder = tmp_path / str(SEED_ID)
    lock = FolderLock(folder)  # held by this process: another process to the workers
    assert lock.acquire("fetching") is None

    class Release(Recorder):
        def data_set_waiting(self, data_set: int, holder: str) -> None:
            super().data_set_waiting(data_set, holder)
            lock.release()

    seen = Release()
    options = FetchOptions(concurrency=16, density_range=NARROW)
    try:
        async with distributed.Client(cluster.scheduler_address, asynchronous=True) as client:
            left = await asyncdl.fetch(
                IDS, tmp_path, options=options, endpoints=server.endpoints, client=client
            )
            assert [r.status for r in left] == ["busy", "ok", "ok"]
            assert (left[0].held_by or "").startswith(f"process {os.getpid()} on ")
            assert [p.name for p in folder.iterdir()] == [LOCK]  # untouched
            waited = await asyncdl.fetch(
                IDS,
                tmp_path,
                options=replace(options, wait=True),
                endpoints=server.endpoints,
                client=client,
                events=seen,
            )
    finally:
        lock.release()
    assert [r.status for r in waited] == ["ok", "skipped", "skipped"]
    [wait] = seen.of("data_set_waiting")
    assert wait["data_set"] == SEED_ID
    assert wait["holder"].startswith(f"process {os.getpid()} on ")
    assert (folder / "data.json").read_bytes() == single_process[SEED_ID]


async def test_the_server_never_sees_more_than_c_from_the_whole_cluster(cluster, tmp_path):
    with EmulatorProcess("--latency-ms", 20) as emu:
        options = FetchOptions(concurrency=6, density_range=NARROW)
        async with distributed.Client(cluster.scheduler_address, asynchronous=True) as client:
            results = await asyncdl.fetch(
                IDS[:2], tmp_path, options=options, endpoints=emu.endpoints, client=client
            )
        assert all(r.complete for r in results)
        stats = emu.stats()
    assert 1 <= stats["peak_in_flight"] <= options.concurrency


async def test_a_lone_data_set_gets_the_whole_of_c_and_never_more(cluster, tmp_path):
    seen = Recorder()
    with EmulatorProcess("--latency-ms", 20) as emu:
        options = FetchOptions(concurrency=6, density_range=NARROW)
        (result,) = await asyncdl.fetch(
            [SEED_ID],
            tmp_path,
            options=options,
            endpoints=emu.endpoints,
            scheduler=cluster.scheduler_address,
            events=seen,
        )
        stats = emu.stats()
    assert result.complete and result.targets > 10 * options.max_in_flight
    # The idle worker's share went to the busy one: the server saw all of -c, and never more.
    assert seen.shares and sorted(seen.shares[-1].values()) == [0, options.concurrency]
    assert stats["peak_in_flight"] == options.concurrency


async def test_under_c_auto_each_worker_finds_its_own_limit_and_a_shedding_server_loses_nothing(
    cluster, single_process, tmp_path
):
    # 16 handlers and a 503 to whatever finds 8 queued, against two workers of -c auto (the
    # default): nobody splits anything, each worker's controller finds its part of the server,
    # and what the server sheds is waited out instead of failing targets.
    seen = Recorder()
    capacity = ("--capacity", 16, "--shed-queue", 8)
    with EmulatorProcess("--latency-ms", 20, "--latency-spread", 0, *capacity) as emu:
        options = FetchOptions(density_range=NARROW)
        results = await asyncdl.fetch(
            IDS,
            tmp_path,
            options=options,
            endpoints=emu.endpoints,
            scheduler=cluster.scheduler_address,
            events=seen,
        )
        queue = emu.stats()["queue"]
    assert all(r.complete and r.failures == 0 for r in results), [r.error for r in results]
    for ds in IDS:
        assert (tmp_path / str(ds) / "data.json").read_bytes() == single_process[ds]
    (started,) = seen.of("workers_started")
    assert started["concurrency"] == "auto" and started["rate"] is None
    # The shares are the workers' own limits, as they reported them: each within its bounds,
    # both workers heard from, and the run's limit their sum.
    limits = seen.shares
    assert limits and len(limits[-1]) == 2
    assert all(1 <= n <= options.max_concurrency for s in limits for n in s.values())
    assert [call["limit"] for call in seen.of("limit_changed")] == [sum(s.values()) for s in limits]
    print(f"limits {limits}; served {queue['served']}, shed {queue['sheds']}")
    assert queue["sheds"] <= 0.05 * queue["served"]


async def test_a_killed_worker_is_replaced_and_the_output_stays_identical(
    cluster, single_process, server, tmp_path
):
    options = FetchOptions(concurrency=8, density_range=NARROW)
    seen = Recorder()
    with EmulatorProcess("--latency-ms", 5) as emu:
        async with distributed.Client(cluster.scheduler_address, asynchronous=True) as client:
            pids = await client.run(os.getpid)
            run = asyncio.create_task(
                asyncdl.fetch(
                    IDS,
                    tmp_path,
                    options=options,
                    endpoints=emu.endpoints,
                    client=client,
                    events=seen,
                )
            )
            # Kill a worker while answers are being written (as soon as the first is on disk:
            # a fixed pause after that could outlast the run on an idle machine, or not).
            lines = [tmp_path / str(ds) / "lines.ndjson" for ds in IDS]
            await answers_written(lines, lambda: not run.done())
            victim_address, victim = min(pids.items(), key=lambda item: item[1])
            os.kill(victim, signal.SIGKILL)
            results = await asyncio.wait_for(run, 240)
            await client.wait_for_workers(2, timeout=120)
            assert victim not in (await client.run(os.getpid)).values()
        stats = emu.stats()
    assert all(r.complete for r in results), [r.error for r in results]
    for ds in IDS:
        assert (tmp_path / str(ds) / "data.json").read_bytes() == single_process[ds]
    targets = sum(r.targets for r in results)
    asked = stats["requests"]["query"]
    # Only what the dead worker had in flight is asked again: at most its share of -c (half to
    # start with; more if it was given the other's share before it died).
    share = max([options.max_in_flight // 2] + [s.get(victim_address, 0) for s in seen.shares])
    print(f"targets {targets}, spatial searches {asked}, the dead worker's largest share {share}")
    assert targets <= asked <= targets + share


def test_ctrl_c_then_rerun_resumes_with_local_workers(server, single_process, tmp_path):
    args = ["fetch", *IDS, "-o", tmp_path, "--workers", 2, "-c", 8, "-q"]
    args += ["--base-url", server.base_url, "--archive-url", server.base_url]
    args += ["--density-range", *NARROW]
    proc = subprocess.Popen(interruptible(command(*args)), stderr=subprocess.PIPE, text=True)
    try:
        lines = [tmp_path / str(ds) / "lines.ndjson" for ds in IDS]
        wait_for_answers(lines, lambda: proc.poll() is None)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    # The rerun resumes, and the workers' progress reaches the JSON log as a local run's does.
    json_args = [a for a in args if a != "-q"] + ["--log-format", "json"]
    again = run_cli(*json_args)
    assert again.returncode == 0, again.stderr
    events = [orjson.loads(line) for line in again.stderr.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "workers" and kinds[-1] == "summary", kinds
    assert events[0]["workers"] == 2 and events[0]["concurrency"] == 4
    done = {e["data_set"]: e for e in events if e["event"] == "data_set_done"}
    assert sorted(done) == sorted(IDS) and all(e["complete"] for e in done.values())
    assert any(e["resumed"] > 0 for e in done.values())  # what was answered was not asked again
    started = [e["data_set"] for e in events if e["event"] == "data_set_start"]
    assert len(started) == len(set(started))  # reported once each, however many attempts
    for ds in IDS:
        assert (tmp_path / str(ds) / "data.json").read_bytes() == single_process[ds]


def test_without_the_extra_the_flag_is_one_clear_line(tmp_path):
    blocker = tmp_path / "blocked" / "distributed"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": str(blocker.parent)}
    proc = run_cli(
        "fetch", SEED_ID, "-o", tmp_path / "out", "--workers", 2, "--emulator", env=env, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "asyncdl: error: running on Dask needs the 'dask' extra: pip install 'asyncdl[dask]'"
    )


def test_code_that_does_not_ask_for_dask_does_not_import_it():
    code = "import sys, asyncdl, asyncdl.cli; sys.exit('distributed' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_workers_start_with_even_shares_and_too_few_slots_are_refused():
    from asyncdl.cluster.shares import first_shares

    shares = first_shares(FetchOptions(concurrency=256), ["tcp://c:3", "tcp://a:1", "tcp://b:2"])
    assert shares == {"tcp://a:1": 86, "tcp://b:2": 85, "tcp://c:3": 85}
    with pytest.raises(UsageError, match="less than the 4 workers"):
        first_shares(FetchOptions(concurrency=3), ["w1", "w2", "w3", "w4"])


class FakeCluster:
    """What ``Shares`` asks of a Dask client: ``run`` and its scheduler's ``processing``."""

    def __init__(self, work: dict[str, list[str]]) -> None:
        self.work = work  # worker -> the keys it is running or holds
        self.deaf: set[str] = set()  # listed by the scheduler, but they do not answer
        self.calls: list[tuple[str, int]] = []
        self.scheduler = self

    async def processing(self) -> dict[str, list[str]]:
        return self.work

    async def run(self, fn, run, slots, *, workers, on_error):
        assert on_error == "ignore"
        (address,) = workers
        if address not in self.work or address in self.deaf:
            return {}  # gone, or cut off: it does not answer
        self.calls.append((address, slots))
        return {address: None}


async def test_shares_go_where_the_work_is_taken_before_given_and_held_when_a_worker_leaves():
    from asyncdl.cluster.shares import Shares

    fake = FakeCluster({"a": ["run-1"], "b": ["run-2"], "c": []})
    seen = Recorder()
    options = FetchOptions(concurrency=12, timeout=3600)
    now = 1000.0
    initial = {"a": 4, "b": 4, "c": 4}
    shares = Shares(fake, "run", options, initial, seen, clock=lambda: now)  # type: ignore[arg-type]
    keys = {"run-1", "run-2", "run-3"}

    await shares.balance(keys)  # c has nothing to do: its share goes to a and b, once it is free
    assert fake.calls == [("c", 0), ("a", 6), ("b", 6)]
    assert seen.shares[-1] == {"a": 6, "b": 6, "c": 0}

    fake.calls.clear()
    fake.work["b"] = ["someone-else"]  # another client's task is not work of this run
    await shares.balance(keys)
    assert fake.calls == [("b", 0), ("a", 12)]

    fake.calls.clear()
    await shares.balance(keys)  # nothing changed: nothing asked
    assert fake.calls == []

    # a dies: its 12 slots may still be at the server, so they are held back (one request
    # timeout); the task it had goes to d, which joined with no share.
    del fake.work["a"]
    fake.work["d"] = ["run-1"]
    await shares.balance(keys)
    assert fake.calls == []
    assert shares.granted == {"b": 0, "c": 0}

    now += options.timeout - 1  # not yet
    await shares.balance(keys)
    assert fake.calls == []
    now += 1  # the timeout has passed
    await shares.balance(keys)
    assert fake.calls == [("d", 12)]
    assert seen.shares[-1] == {"b": 0, "c": 0, "d": 12}

    # b gets work, but d does not answer when asked to give up half: b gets only what is free.
    fake.calls.clear()
    fake.work["b"] = ["run-2"]
    fake.deaf.add("d")
    await shares.balance(keys)
    assert fake.calls == [] and shares.granted == {"b": 0, "c": 0, "d": 12}
    assert seen.shares[-1] == {"b": 0, "c": 0, "d": 12} and len(seen.shares) == 3  # no change
    fake.deaf.clear()
    await shares.balance(keys)
    assert fake.calls == [("d", 6), ("b", 6)]


async def test_an_output_folder_a_worker_cannot_see_is_refused(tmp_path):
    from asyncdl.cluster.connect import _check_shared

    class Blind:
        async def run(self, fn, *args):
            return {"tcp://a:1": fn(*args), "tcp://b:2": False}

    with pytest.raises(UsageError, match=r"not on a file system every Dask worker can see.*b:2"):
        await _check_shared(Blind(), tmp_path)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())  # the sentinel is removed


async def test_when_dask_gives_up_the_data_set_is_failed_and_a_rerun_completes_it(
    server, single_process, tmp_path
):
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        local = await distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=3,
            processes=True,
            asynchronous=True,
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.CRITICAL,
        )
    options = FetchOptions(concurrency=4, density_range=NARROW)
    kwargs = {"options": options, "endpoints": server.endpoints}
    try:
        async with distributed.Client(local, asynchronous=True) as client:
            (pid,) = (await client.run(os.getpid)).values()
            run = asyncio.create_task(asyncdl.fetch([SEED_ID], tmp_path, client=client, **kwargs))
            lines = tmp_path / str(SEED_ID) / "lines.ndjson"
            await answers_written([lines], lambda: not run.done())
            os.kill(pid, signal.SIGKILL)
            (failed,) = await asyncio.wait_for(run, 240)
            assert not failed.complete and failed.status == "failed"
            assert failed.error is not None and failed.error.startswith("KilledWorker")
            summary = orjson.loads((tmp_path / str(SEED_ID) / "summary.json").read_bytes())
            assert summary["status"] == "failed"

            await client.wait_for_workers(1, timeout=120)  # the nanny started a new worker
            (done,) = await asyncdl.fetch([SEED_ID], tmp_path, client=client, **kwargs)
    finally:
        await local.close()
    assert done.complete and done.resumed > 0
    assert (tmp_path / str(SEED_ID) / "data.json").read_bytes() == single_process[SEED_ID]


def test_a_batch_travels_as_plain_lists_and_reads_back_the_same():
    from distributed.protocol.core import dumps, loads

    from asyncdl.cluster.messages import (
        Batch,
        Done,
        Failed,
        Redirect,
        Repair,
        Retry,
        Started,
        Waiting,
    )

    batch = Batch("tcp://w:1")
    assert not batch  # nothing to send
    batch.limit = 12
    assert batch
    batch.waiting.append(Waiting(9, "process 12 on h since 10:00:00"))
    batch.repairs.append(Repair(7, "data.json is 1,000 bytes", "rebuilt from the journal"))
    batch.started.append(Started(7, 100, 40))
    for ok in (True, True, False):
        batch.count(7, ok)
    batch.count(8, True)
    batch.retries.append(Retry(7, "http://x/q", "HTTP 503", 0.5))
    batch.failed.append(Failed(7, 12, "HTTP 404"))
    batch.redirects.append(Redirect("http://x/a", "http://y/a"))
    sent = loads(dumps(batch.encode()))  # as Dask carries it to the client
    assert Batch.decode(sent) == batch
    assert batch.done == {7: Done(2, 1), 8: Done(1, 0)}


async def test_the_plugin_carries_only_the_plan_and_the_run_lives_beside_it(tmp_path):
    """Set up on a worker (in this process), the plugin still pickles to the plan alone; the
    run's live objects are the worker's, and teardown closes them."""
    import pickle

    from asyncdl.cluster.worker import _RUNS, RunPlugin, WorkerRun
    from asyncdl.plan import RunPlan

    plan = RunPlan.make([SEED_ID], tmp_path)
    async with (
        distributed.LocalCluster(
            n_workers=1,
            processes=False,
            asynchronous=True,
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.CRITICAL,
        ) as local,
        distributed.Client(local, asynchronous=True) as client,
    ):
        (worker,) = local.workers.values()
        plugin = RunPlugin("asyncdl-test", plan, {worker.address: 3}, frozenset({1, 2}))
        await client.register_plugin(plugin, name=plugin.name)
        here = worker.plugins[plugin.name]
        assert here is not plugin  # the worker's own copy, from the bytes the scheduler keeps
        run = _RUNS[worker.address, plugin.name]
        assert isinstance(run, WorkerRun) and run.http.options == plan.options
        again = pickle.loads(pickle.dumps(here))
        assert vars(again) == vars(plugin) == vars(here)  # the plan, and nothing live
        await client.unregister_worker_plugin(plugin.name)
        assert (worker.address, plugin.name) not in _RUNS
        with pytest.raises(RuntimeError, match="not open"):
            run.http.session  # noqa: B018 (closed by teardown)


def test_the_client_reports_the_sum_of_the_workers_limits_and_under_auto_each_one():
    from asyncdl.cluster.client import Relay
    from asyncdl.cluster.messages import Batch
    from asyncdl.limits import REPORT_SECONDS

    now = 100.0
    seen = Recorder()
    relay = Relay(seen, limits_are_shares=True, clock=lambda: now)

    def limit(worker: str, n: int) -> None:
        relay.receive((0.0, Batch(worker, n).encode()))

    limit("a", 8)
    limit("b", 8)  # within a second of the last report: kept for the next
    assert [c["limit"] for c in seen.of("limit_changed")] == [8]
    now += REPORT_SECONDS
    relay.receive((0.0, Batch("a").encode()))  # any message: what was kept goes out
    limit("a", 8)  # no change: nothing to tell
    now += REPORT_SECONDS
    limit("b", 8)
    assert [c["limit"] for c in seen.of("limit_changed")] == [8, 16]
    assert seen.shares == [{"a": 8}, {"a": 8, "b": 8}]

    fixed = Recorder()  # -c N: the client's Shares are the shares; the limits only add up
    relay = Relay(fixed, clock=lambda: now)
    relay.receive((0.0, Batch("a", 3).encode()))
    assert [c["limit"] for c in fixed.of("limit_changed")] == [3] and fixed.shares == []


def test_auto_shares_nothing_unless_a_rate_is_shared_too():
    from asyncdl.cluster.shares import first_shares, shared

    assert not shared(FetchOptions())
    assert shared(FetchOptions(concurrency=64)) and shared(FetchOptions(rate=100))
    with pytest.raises(UsageError, match="--max-concurrency 2 is less than the 3 workers"):
        first_shares(FetchOptions(max_concurrency=2, rate=10), ["w1", "w2", "w3"])


def test_the_start_line_says_how_the_workers_share_the_run():
    from asyncdl.events import describe_workers

    assert describe_workers(2, "auto", None) == (
        "asyncdl: 2 Dask workers, each with -c auto (a limit of its own, found from the "
        "server's answers)"
    )
    assert describe_workers(2, 64, 5.0) == (
        "asyncdl: 2 Dask workers, each with -c 64, --rate 5 to start (the shares follow the work)"
    )


def _shared_server(workers: int, stagger: float) -> tuple[float, float, float]:
    """Simulated (benchmarks/queue_model.py): ``workers`` clients, each its own controller as under -c
    auto on Dask, against one server of 64 handlers at 50 ms, starting ``stagger`` s apart.
    Over the last two thirds of 30 s: the throughput as a fraction of K/L, the mean queue wait in
    units of L, and Jain's index over the clients' throughputs."""
    from benchmarks.queue_model import simulate
    from benchmarks.scaleout.analysis import jain

    latency, handlers, seconds = 0.05, 64, 30.0
    out = simulate(
        handlers=handlers,
        service=latency,
        seconds=seconds,
        clients=workers,
        stagger=stagger,
        cpu_per_answer=218e-6,
    )
    assert out.sheds == 0
    start = seconds / 3
    rates = [out.rate(start, seconds, client) for client in range(workers)]
    return sum(rates) / (handlers / latency), out.mean_wait(start, seconds) / latency, jain(rates)


@pytest.mark.parametrize("workers", [2, 3])
def test_controllers_of_several_workers_fill_one_server_together_fairly_with_a_short_queue(
    workers,
):
    # As a Dask run starts them: its tasks go out once every worker is up.
    throughput, wait, fairness = _shared_server(workers, stagger=0.0)
    assert throughput >= 0.9 and wait <= 0.5 and fairness >= 0.9, (throughput, wait, fairness)


@pytest.mark.parametrize("workers", [2, 3])
def test_a_worker_that_joins_later_gets_its_fair_share(workers):
    # One joins every 2 s (a batch system starting jobs one by one): a latecomer measures its
    # no-load round trip inside the queue the others keep and takes some of it for the server's
    # own latency (TCP Vegas' weakness), but it neither starves nor is starved.
    throughput, _, fairness = _shared_server(workers, stagger=2.0)
    assert throughput >= 0.9 and fairness >= 0.9, (throughput, fairness)


def test_the_queue_of_several_workers_does_not_grow_over_a_long_run():
    # Three workers, each its own controller, against one server of 64 handlers for 90 s
    # (simulated). Each probe of a worker alone would find the queue the others keep and take it
    # for the server's latency, and the queue would grow with every probe (TCP Vegas' weakness;
    # shown below with their clocks apart). With the periodic probes on one clock they drain it
    # together, and it stays short.
    from benchmarks.queue_model import simulate

    latency, handlers, seconds = 0.05, 64, 90.0
    common = dict(
        handlers=handlers, service=latency, seconds=seconds, clients=3, cpu_per_answer=218e-6
    )
    together = simulate(**common)  # type: ignore[arg-type]
    apart = simulate(**common, clocks=(0.0, 3.3, 6.7))  # type: ignore[arg-type]
    late = (seconds - 20, seconds)
    assert together.rate(*late) >= 0.9 * handlers / latency
    assert together.mean_wait(*late) <= 0.5 * latency
    assert apart.mean_wait(*late) > 2 * together.mean_wait(*late)
