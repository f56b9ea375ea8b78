"""The user's cache: where it is, one lock per entry, real processes sharing it (at once, and one
killed mid-download), a complete data set's grids leaving it, and ``asyncdl cache``."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

import asyncdl
from asyncdl import FetchOptions
from asyncdl.cache import EntryLock, cache_root, entries, locate
from asyncdl.emulator import Emulator, FaultPlan
from asyncdl.sources import _verified

from .conftest import (
    SEED_ID,
    EmulatorProcess,
    Recorder,
    command,
    run_cli,
    server_args,
    source_dir,
)

SMALL = ("--density-range", "0.1", "0.11")  # about a hundred targets
OPTIONS = FetchOptions(density_range=(0.1, 0.11), concurrency=8)
SHARED = ["annotation_25.nrrd", "fiber_mask_*.npy", "structure_graph_1.json"]
#: The annotation (3.2 MB from the emulator) dripped at this rate takes about 8 s to download:
#: long enough for other processes to start meanwhile, even on a loaded machine.
DRIP = ("--drip", 400_000, "--fault-routes", "annotation")
LIMIT_S = 180


def names(cache: Path) -> list[str]:
    return [entry.name for entry in entries(cache)]


def shared_only(cache: Path) -> bool:
    found = names(cache)
    return len(found) == 3 and all(
        Path(name).match(pattern) for name, pattern in zip(found, SHARED, strict=True)
    )


# -- where it is ------------------------------------------------------------------------------------


def test_the_cache_is_the_users_own_unless_moved(monkeypatch, tmp_path):
    monkeypatch.delenv(asyncdl.cache.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert locate() == (tmp_path / "xdg" / "asyncdl", "default")  # platformdirs, XDG honoured
    monkeypatch.setenv(asyncdl.cache.ENV_VAR, "")  # set but empty: not a place
    assert locate()[1] == "default"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(asyncdl.cache.ENV_VAR, "~/c")
    assert locate() == (tmp_path / "home" / "c", "ASYNCDL_CACHE_DIR")
    assert locate(tmp_path / "given") == (tmp_path / "given", "--cache-dir")
    monkeypatch.chdir(tmp_path)
    assert cache_root("rel") == tmp_path / "rel"  # absolute: Dask workers get the same path


def test_commands_run_by_tests_use_the_tests_cache(user_cache, tmp_path):
    # run_cli's child inherits the environment that keeps tests off the real ~/.cache.
    assert run_cli("cache", "dir").stdout == f"{user_cache}\n"
    assert run_cli("cache", "dir", "--cache-dir", tmp_path).stdout == f"{tmp_path}\n"


async def test_a_dry_run_fills_the_same_cache_that_fetch_then_reads(emulator, tmp_path, user_cache):
    [plan] = await asyncdl.survey([SEED_ID], options=OPTIONS, endpoints=emulator.endpoints)
    assert plan.targets > 0 and emulator.stats.requests["grid_nrrd"] == 2
    assert len([e for e in entries(user_cache) if e.kind == "grid"]) == 2
    emulator.stats.reset()
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints
    )
    assert result.complete and result.targets == plan.targets
    assert emulator.stats.requests["grid_nrrd"] == 0  # read from the cache the dry run filled
    assert emulator.stats.requests["annotation"] == 0
    assert emulator.stats.requests["structure_graph"] == 0
    assert shared_only(user_cache)  # and its grids went once it was complete


async def test_a_run_after_a_dry_run_knows_every_data_sets_targets_from_the_start(
    emulator, tmp_path, user_cache
):
    # The dry run leaves each count beside the grid it was counted from: a run's total is then
    # exact before any volume is read (and still marked an estimate until each data set starts).
    ids = [SEED_ID, 100141219, 112514202]
    surveys = await asyncdl.survey(ids, options=OPTIONS, endpoints=emulator.endpoints)
    counted = {s.data_set: s.targets for s in surveys}
    assert all(counted.values())
    seen = Recorder()
    await asyncdl.fetch(ids, tmp_path, options=OPTIONS, endpoints=emulator.endpoints, events=seen)
    [planned] = seen.of("planned")
    assert planned["targets"] == counted
    assert {s["data_set"]: s["targets"] for s in seen.of("data_set_started")} == counted
    # Gone with the grids of the complete data sets; and a count at one density range is no
    # estimate at another.
    await asyncdl.survey(ids[:1], options=OPTIONS, endpoints=emulator.endpoints)
    other = FetchOptions(density_range=(0.1, 0.12), concurrency=8)
    seen = Recorder()
    await asyncdl.fetch(
        ids, tmp_path / "other", options=other, endpoints=emulator.endpoints, events=seen
    )
    assert seen.of("planned")[0]["targets"] == {}


# -- the lock of an entry -----------------------------------------------------------------------


async def test_an_entry_lock_excludes_and_survives_its_entry_being_removed(tmp_path):
    entry = tmp_path / "annotation_25.nrrd"
    first, second, third = EntryLock(entry), EntryLock(entry), EntryLock(entry)
    assert first.try_acquire()
    assert not second.try_acquire()  # in one process too
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    first.release(remove=True)  # its holder removes the entry, lock file and all
    await asyncio.wait_for(waiting, 30)
    assert second.path.exists()  # a new lock file, which it holds:
    assert not third.try_acquire()
    second.release()
    assert third.try_acquire()
    third.release()


def test_the_kernel_drops_the_lock_of_a_killed_process(tmp_path):
    entry = tmp_path / "annotation_25.nrrd"
    code = (
        "import sys, time; from pathlib import Path; from asyncdl.cache import EntryLock; "
        "assert EntryLock(Path(sys.argv[1])).try_acquire(); print('held', flush=True); "
        "time.sleep(600)"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(entry)], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            assert not EntryLock(entry).try_acquire()
        finally:
            holder.kill()
    lock = EntryLock(entry)
    assert lock.try_acquire()
    lock.release()


# -- processes sharing one cache ------------------------------------------------------------------


@contextmanager
def started(*argvs: list[object], log: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started at once (their output to files under ``log``); killed if still running."""
    log.mkdir(exist_ok=True)
    procs = []
    try:
        for i, argv in enumerate(argvs):
            out = (log / f"{i}.log").open("wb")
            procs.append(subprocess.Popen(command(*argv), stdout=out, stderr=subprocess.STDOUT))
            out.close()
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def finished(procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    for i, proc in enumerate(procs):
        assert proc.wait(LIMIT_S) == 0, (log / f"{i}.log").read_text()


def downloading(folder: Path, name: str) -> Path:
    """The temp file of a download of ``name`` in progress, once it has some bytes."""
    deadline = time.monotonic() + LIMIT_S
    while time.monotonic() < deadline:
        for tmp in folder.glob(f".{name}.*.tmp"):
            if tmp.stat().st_size > 0:
                return tmp
        time.sleep(0.05)
    raise AssertionError(f"no download of {name} began")


def cli_source(cache: Path, base_url: str) -> Path:
    """The source folder of runs given ``--base-url URL --archive-url URL``."""
    return source_dir(cache, asyncdl.Endpoints(base_url, base_url))


def fetch_argv(emu: EmulatorProcess, out: Path) -> list[object]:
    servers = ["--base-url", emu.base_url, "--archive-url", emu.base_url]
    return ["fetch", SEED_ID, "-o", out, "-q", *SMALL, "-c", 8, *servers]


def data_json(out: Path) -> bytes:
    return (out / str(SEED_ID) / "data.json").read_bytes()


def test_processes_started_at_once_download_the_shared_files_once(tmp_path, user_cache):
    with EmulatorProcess(*DRIP) as emu:
        outs = [tmp_path / f"out{i}" for i in range(3)]
        with started(*(fetch_argv(emu, out) for out in outs), log=tmp_path / "logs") as procs:
            finished(procs, tmp_path / "logs")
        requests = emu.stats()["requests"]
    assert requests["annotation"] == 1  # one download for the machine; the others waited for it
    assert requests["structure_graph"] == 1
    assert data_json(outs[0]) == data_json(outs[1]) == data_json(outs[2])
    assert shared_only(user_cache)  # nothing half-written; the data set's grids are gone
    folder = cli_source(user_cache, emu.base_url)
    annotation = folder / "annotation_25.nrrd"
    key = orjson.loads((folder / "annotation_25.nrrd.meta.json").read_bytes())["key"]
    assert _verified(annotation, folder / "annotation_25.nrrd.meta.json", key)


def test_a_process_killed_mid_download_leaves_nothing_trusted(tmp_path, user_cache):
    with EmulatorProcess(*DRIP) as emu:
        folder = cli_source(user_cache, emu.base_url)
        with started(fetch_argv(emu, tmp_path / "killed"), log=tmp_path / "logs") as [victim]:
            partial = downloading(folder, "annotation_25.nrrd")
            victim.send_signal(signal.SIGKILL)
            victim.wait(30)
        assert partial.exists()  # what it left: a temp file, never an entry
        unfinished = [e.name for e in entries(user_cache) if e.kind == "unfinished"]
        assert unfinished == ["annotation_25.nrrd"]  # listed as such; no record: not trusted
        after = run_cli(*fetch_argv(emu, tmp_path / "after"), timeout=LIMIT_S)
        assert after.returncode == 0, after.stderr
        assert emu.stats()["requests"]["annotation"] == 2  # fetched whole by the next process
    assert not partial.exists()  # and the dead one's temp file removed by it
    assert shared_only(user_cache)
    assert not [p for p in user_cache.rglob("*.tmp")]


def test_a_live_download_is_waited_for_and_never_removed(tmp_path, user_cache):
    with EmulatorProcess(*DRIP) as emu:
        folder = cli_source(user_cache, emu.base_url)
        logs = tmp_path / "logs"
        with started(fetch_argv(emu, tmp_path / "first"), log=logs) as [first]:
            live = downloading(folder, "annotation_25.nrrd")
            purge = run_cli("cache", "purge")  # while the first process downloads
            assert purge.returncode == 0, purge.stderr
            assert "left 1 entry that a running asyncdl is using" in purge.stdout
            assert "annotation_25.nrrd" in purge.stdout
            assert live.exists()  # its temp file was not touched
            with started(fetch_argv(emu, tmp_path / "second"), log=logs / "2") as [second]:
                finished([first], logs)
                finished([second], logs / "2")
        assert emu.stats()["requests"]["annotation"] == 1  # the second used the first's
    assert data_json(tmp_path / "first") == data_json(tmp_path / "second")
    assert shared_only(user_cache)


# -- a data set's own grids -----------------------------------------------------------------------


async def test_a_complete_data_set_takes_its_grids_out_of_the_cache(emulator, tmp_path, user_cache):
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path / "a", options=OPTIONS, endpoints=emulator.endpoints
    )
    assert result.complete and shared_only(user_cache)  # what every data set needs stays

    keep = FetchOptions(density_range=(0.1, 0.11), keep_volumes=True)
    [kept] = await asyncdl.fetch(
        [SEED_ID], tmp_path / "b", options=keep, endpoints=emulator.endpoints
    )
    assert kept.complete
    grids = [entry.name for entry in entries(user_cache) if entry.kind == "grid"]
    assert grids == [f"grids/grid_{SEED_ID}_density.nrrd", f"grids/grid_{SEED_ID}_injection.nrrd"]


async def test_an_incomplete_data_set_keeps_its_grids_for_the_resume(
    emulator, tmp_path, user_cache
):
    options = FetchOptions(density_range=(0.1, 0.11), concurrency=8, retries=0)
    plan = FaultPlan(rate=0.3, kinds=("500",), routes=frozenset({"query"}))
    async with Emulator(faults=plan) as faulty:
        [first] = await asyncdl.fetch(
            [SEED_ID], tmp_path, options=options, endpoints=faulty.endpoints
        )
    assert not first.complete and first.failures > 0
    assert len([entry for entry in entries(user_cache) if entry.kind == "grid"]) == 2

    [resumed] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints
    )
    assert resumed.complete and resumed.resumed > 0
    assert emulator.stats.requests["grid_nrrd"] == 0  # the grids came from the cache
    assert shared_only(user_cache)  # and left it once the data set was complete


# -- asyncdl cache ------------------------------------------------------------------------------------


def test_cache_info_list_remove_and_purge(emulator, tmp_path, user_cache):
    for data_set in (SEED_ID, 100141219):
        fetched = run_cli(
            "fetch",
            data_set,
            "-o",
            tmp_path,
            "-q",
            *SMALL,
            "--keep-volumes",
            *server_args(emulator),
        )
        assert fetched.returncode == 0, fetched.stderr
    folder = cli_source(user_cache, emulator.base_url)
    (folder / "notes.txt").write_text("mine")

    info = run_cli("cache", "info")
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert lines[0] == f"cache: {user_cache} (from $ASYNCDL_CACHE_DIR)"
    assert lines[1].startswith("size: ") and lines[1].endswith(" in 8 entries")
    assert lines[2] == f"{folder.name}:"
    assert "needed by every data set:" in lines[3] and "annotation_25.nrrd" in lines[3]
    assert "data sets' own grids:" in lines[4] and lines[4].endswith("2 data sets")
    assert "files asyncdl did not write:" in lines[5] and lines[5].endswith("notes.txt")

    listed = run_cli("cache", "list", "grids").stdout.splitlines()
    assert len(listed) == 4 and all(f"{folder.name}/grids/grid_" in line for line in listed)
    assert "data set 100141219: injection fraction, 100 um NRRD" in listed[1]

    removed = run_cli("cache", "remove", SEED_ID)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith("removed 2 entries (")
    assert [e.data_set for e in entries(user_cache) if e.kind == "grid"] == [100141219] * 2
    assert (
        "nothing in the cache matches 'grid_42_*'" in run_cli("cache", "remove", "grid_42_*").stderr
    )

    purged = run_cli("cache", "purge")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("removed 6 entries (")
    assert sorted(p.name for p in user_cache.rglob("*")) == ["CACHEDIR.TAG"]


def test_cache_remove_touches_only_a_folder_marked_as_a_cache(tmp_path):
    folder = tmp_path / "papers"
    (folder / "drafts").mkdir(parents=True)
    (folder / "drafts" / "grid_1_density.nrrd").write_text("not asyncdl's")
    proc = run_cli("cache", "purge", "--cache-dir", folder)
    assert proc.returncode == 2
    assert (
        proc.stderr
        == f"asyncdl: error: {folder} is not an asyncdl cache (it has no CACHEDIR.TAG): nothing removed\n"
    )
    assert (folder / "drafts" / "grid_1_density.nrrd").exists()
