"""One process per data set: the kernel lock, a data set left to the process that holds it or
waited for, and two real ``asyncdl fetch`` processes on one OUT against one emulator."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import asyncdl
from asyncdl import FetchOptions
from asyncdl.locks import LOCK, FolderLock

from .conftest import (
    SEED_ID,
    EmulatorProcess,
    Recorder,
    command,
    run_cli,
    wait_for_answers,
)

OTHER_ID = 100141219
NARROW = (0.1, 0.12)  # a few hundred targets: quick runs

_HOLD = (
    "import sys; from pathlib import Path; from asyncdl.locks import FolderLock; "
    "assert FolderLock(Path(sys.argv[1])).acquire('fetching') is None; sys.stdin.read()"
)


def until(done: Callable[[], bool], running: Callable[[], bool], what: str) -> None:
    """Wait (at most two minutes) until ``done()``; fail if ``running()`` stops first."""
    deadline = time.monotonic() + 120
    while not done():
        assert running(), f"it ended before {what}"
        assert time.monotonic() < deadline, f"not {what} within 120 s"
        time.sleep(0.02)


class LockHolder:
    """Another process that holds a folder's lock until ``release`` (or until it dies)."""

    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(folder)], stdin=subprocess.PIPE, text=True
        )
        self.pid = self.proc.pid

        def holding() -> bool:  # its record says so once it holds the lock
            try:
                return bool(orjson.loads((folder / LOCK).read_bytes())["pid"] == self.pid)
            except (OSError, ValueError, KeyError, TypeError):
                return False

        until(holding, lambda: self.proc.poll() is None, "the lock was taken")

    def release(self) -> None:
        """The process ends (its lock with it: nothing of it is left to clean up)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(60)

    def kill(self) -> None:
        self.proc.kill()
        self.release()


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[LockHolder]:
    """Another process holding the lock of ``tmp_path/SEED_ID``."""
    held = LockHolder(tmp_path / str(SEED_ID))
    yield held
    held.kill()


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorProcess]:
    """One emulator in a process of its own, which the runs of a test share."""
    with EmulatorProcess("--latency-ms", 2) as emu:
        yield emu


def server_options(emu: EmulatorProcess) -> list[str]:
    return ["--base-url", emu.base_url, "--archive-url", emu.base_url]


# -- the lock -------------------------------------------------------------------------------------


def test_a_held_lock_names_its_holder_and_is_free_again_once_released(tmp_path):
    first, second = FolderLock(tmp_path / "7"), FolderLock(tmp_path / "7")
    assert first.acquire("verifying") is None and first.held
    assert first.acquire("verifying") is None  # taken already: still ours
    holder = second.acquire("fetching")  # another open file: excluded even within one process
    assert holder is not None and not second.held
    assert holder.pid == os.getpid() and holder.host == socket.gethostname()
    assert holder.since is not None and holder.doing == "verifying"
    assert str(holder).startswith(f"process {os.getpid()} on {socket.gethostname()} (since ")
    assert str(holder).endswith("), which is verifying it")
    first.release()
    assert (tmp_path / "7" / LOCK).read_bytes() == b""  # a free lock names nobody
    assert second.acquire("fetching") is None
    second.release()


def test_the_kernel_lets_go_of_the_lock_of_a_killed_process(tmp_path):
    other = LockHolder(tmp_path / "7")
    try:
        holder = FolderLock(tmp_path / "7").acquire("fetching")
        assert holder is not None and holder.pid == other.pid
    finally:
        other.kill()  # SIGKILL: no cleanup of its own runs
    lock = FolderLock(tmp_path / "7")
    assert lock.acquire("fetching") is None
    lock.release()


@pytest.mark.parametrize("record", [b"\x00garbage", b"[]", b'{"pid": "1"}', b""])
def test_a_damaged_or_missing_holder_record_is_an_unknown_holder(tmp_path, record):
    mine = FolderLock(tmp_path / "7")
    assert mine.acquire("fetching") is None
    (tmp_path / "7" / LOCK).write_bytes(record)
    holder = FolderLock(tmp_path / "7").acquire("fetching")
    assert holder is not None and str(holder) == "another process"
    mine.release()


def test_a_record_left_by_a_process_that_has_ended_names_nobody(tmp_path):
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    mine = FolderLock(tmp_path / "7")
    assert mine.acquire("fetching") is None
    record = {
        "pid": int(ended.stdout),
        "host": socket.gethostname(),
        "since": "2026-01-01T00:00:00+00:00",
    }
    (tmp_path / "7" / LOCK).write_bytes(orjson.dumps(record))
    holder = FolderLock(tmp_path / "7").acquire("fetching")
    assert holder is not None and str(holder) == "another process"
    mine.release()


def test_what_a_holder_says_it_is_doing_is_shown_only_if_it_is_a_word(tmp_path):
    mine = FolderLock(tmp_path / "7")
    assert mine.acquire("fetching") is None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "doing": "\x1b[2Jrm -rf ~"}
    (tmp_path / "7" / LOCK).write_bytes(orjson.dumps(record))
    holder = FolderLock(tmp_path / "7").acquire("fetching")
    assert holder is not None and holder.pid == os.getpid() and holder.doing is None
    assert str(holder) == f"process {os.getpid()} on {socket.gethostname()}"
    mine.release()


# -- a data set another process holds --------------------------------------------------------------


class ReleaseWhenWaited(Recorder):
    """Records the run's events; lets ``holder`` go once the run waits for it."""

    def __init__(self, holder: LockHolder) -> None:
        super().__init__()
        self.holder = holder

    def data_set_waiting(self, data_set: int, holder: str) -> None:
        super().data_set_waiting(data_set, holder)
        self.holder.release()


async def test_a_data_set_another_process_holds_is_left_to_it(emulator, holder, tmp_path):
    options = FetchOptions(concurrency=8, density_range=NARROW)
    seen = Recorder()
    busy, other = await asyncdl.fetch(
        [SEED_ID, OTHER_ID], tmp_path, options=options, endpoints=emulator.endpoints, events=seen
    )
    assert busy.status == "busy" and not busy.complete and seen.of("data_set_waiting") == []
    assert busy.held_by is not None and busy.held_by.startswith(f"process {holder.pid} on ")
    assert other.status == "ok"  # the others go on
    # Nothing of the held data set was asked for or written: its folder is the holder's.
    assert all(f"{SEED_ID}" not in path for path, _ in emulator.stats.wire or [])
    assert [p.name for p in (tmp_path / str(SEED_ID)).iterdir()] == [LOCK]
    line = asyncdl.events.describe(busy)
    assert line.startswith(f"{SEED_ID}: BUSY: held by process {holder.pid} on ")
    assert line.endswith(", which is fetching it; left to that process")

    holder.release()  # once the holder has gone, the same call finishes it
    again = await asyncdl.fetch([SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints)
    assert [r.status for r in again] == ["ok"]


async def test_with_wait_a_held_data_set_is_waited_for_and_then_finished(
    emulator, holder, tmp_path
):
    options = FetchOptions(concurrency=8, density_range=NARROW, wait=True)
    seen = ReleaseWhenWaited(holder)
    results = await asyncdl.fetch(
        [SEED_ID, OTHER_ID], tmp_path, options=options, endpoints=emulator.endpoints, events=seen
    )
    assert [r.status for r in results] == ["ok", "ok"]
    [waited] = seen.of("data_set_waiting")
    assert waited["data_set"] == SEED_ID
    assert waited["holder"].startswith(f"process {holder.pid} on ")
    asked = [path for path, _ in emulator.stats.wire or [] if "target_spatial" in path]
    assert len(asked) == len(set(asked)) == sum(r.targets for r in results)


# -- asyncdl verify takes the same lock ---------------------------------------------------------


async def test_verify_leaves_a_data_set_another_process_holds_unread_and_unmarked(
    emulator, tmp_path
):
    """A fetch that holds a data set may be rewriting its files (a repair, a --restart): verify
    reports it busy, naming the holder, instead of judging a file half written and marking the
    data set damaged under the writer's feet."""
    options = FetchOptions(concurrency=8, density_range=NARROW)
    await asyncdl.fetch(
        [SEED_ID, OTHER_ID], tmp_path, options=options, endpoints=emulator.endpoints
    )
    folder = tmp_path / str(SEED_ID)
    summary = (folder / "summary.json").read_bytes()
    data = (folder / "data.json").read_bytes()
    other = LockHolder(folder)
    try:
        (folder / "data.json").write_bytes(data[: len(data) // 2])  # as the holder writes it
        verified, busy = asyncdl.verify(tmp_path)  # in id order
        assert busy.data_set == SEED_ID and busy.status == "busy"
        assert busy.problem.startswith(f"held by process {other.pid} on ")
        assert busy.problem.endswith(", which is fetching it; not checked")
        assert (verified.data_set, verified.status) == (OTHER_ID, "verified")
        assert (folder / "summary.json").read_bytes() == summary  # not marked damaged
        (folder / "data.json").write_bytes(data)  # the holder has finished writing
    finally:
        other.release()
    assert [v.status for v in asyncdl.verify(tmp_path)] == ["verified", "verified"]
    # The lock of a data set verify holds is let go: a fetch finds it complete, not busy.
    again = await asyncdl.fetch([SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints)
    assert [r.status for r in again] == ["skipped"]


def test_verify_on_the_command_line_says_which_process_holds_a_data_set(tmp_path):
    (tmp_path / str(SEED_ID)).mkdir()
    other = LockHolder(tmp_path / str(SEED_ID))
    try:
        held = run_cli("verify", tmp_path, SEED_ID, OTHER_ID)
    finally:
        other.release()
    assert held.returncode == 1, held.stderr  # unfinished beats busy, as failed does in fetch
    busy, unfinished = held.stdout.splitlines()
    assert busy.startswith(f"{SEED_ID}: BUSY: held by process {other.pid} on ")
    assert busy.endswith(", which is fetching it; not checked")
    assert unfinished == f"{OTHER_ID}: UNFINISHED: not fetched"
    assert "1 unfinished, 1 busy; verify the busy ones again once" in held.stderr
    assert not (tmp_path / str(OTHER_ID)).exists()  # no lock file is made where nothing is
    other = LockHolder(tmp_path / str(SEED_ID))
    try:
        only_busy = run_cli("verify", tmp_path, SEED_ID)
    finally:
        other.release()
    assert only_busy.returncode == 75, only_busy.stderr
    [line] = only_busy.stdout.splitlines()
    assert line.startswith(f"{SEED_ID}: BUSY: held by process {other.pid} on ")


def test_export_leaves_a_data_set_another_process_holds(emulator, tmp_path):
    options = FetchOptions(concurrency=8, density_range=NARROW)
    asyncdl.fetch_sync([SEED_ID, OTHER_ID], tmp_path, options=options, endpoints=emulator.endpoints)
    folder = tmp_path / str(SEED_ID)
    summary = (folder / "summary.json").read_bytes()
    other = LockHolder(folder)
    try:
        held = run_cli("export", tmp_path, "--format", "parquet")
    finally:
        other.release()
    assert held.returncode == 75, held.stderr
    assert held.stdout.startswith(f"{OTHER_ID}: wrote ")  # the others go on
    busy = held.stderr.splitlines()[0]
    assert busy.startswith(f"{SEED_ID}: BUSY: held by process {other.pid} on ")
    assert busy.endswith(", which is fetching it; not exported")
    assert "export the busy ones again once that process has ended" in held.stderr
    assert not list(folder.glob("*.parquet")) and (folder / "summary.json").read_bytes() == summary
    again = run_cli("export", tmp_path, SEED_ID, "--format", "parquet")
    assert again.returncode == 0, again.stderr
    assert (folder / "points.parquet").is_file()


# -- two real processes on one OUT, one emulator process ------------------------------------------


def _fetch(
    emu: EmulatorProcess, out: Path, *extra: object, stderr: Any = subprocess.PIPE
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command("fetch", SEED_ID, "-o", out, "-c", 4, "-q", *server_options(emu), *extra),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def _lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return stderr.strip().splitlines()


def test_the_same_command_started_twice_on_one_out(server, seed_reference, tmp_path):
    """An overlapping second run (and a third with --wait) never crashes, never touches the first
    one's files, and asks nothing twice; when all have ended, the output is a single run's."""
    expected = seed_reference(SEED_ID, "nrrd")
    asked_before = server.target_requests()
    first = _fetch(server, tmp_path)
    try:
        wait_for_answers([tmp_path / str(SEED_ID) / "lines.ndjson"], lambda: first.poll() is None)
        first.send_signal(signal.SIGSTOP)  # mid-run, however slow the machine: it holds the lock
        try:
            second = run_cli("fetch", SEED_ID, "-o", tmp_path, "-c", 4, *server_options(server))
            assert second.returncode == 75, second.stderr
            start, busy, summary, advice = _lines(second.stderr)
            assert start == "asyncdl: starting 1 data set"
            assert busy.startswith(f"{SEED_ID}: BUSY: held by process {first.pid} on ")
            assert busy.endswith(", which is fetching it; left to that process")
            assert "0 of 1 data sets complete (1 left to another process)" in summary
            assert advice.startswith("asyncdl: 1 data set(s) left to another process; run the")
            checked = run_cli("verify", tmp_path, SEED_ID)  # not judged half written
            assert checked.returncode == 75, checked.stderr
            assert checked.stdout.startswith(f"{SEED_ID}: BUSY: held by process {first.pid} on ")
            log = tmp_path / "third.log"
            with log.open("w") as stderr:
                third = _fetch(server, tmp_path, "--wait", stderr=stderr)
            waiting = f"{SEED_ID}: waiting for process {first.pid} on "
            until(lambda: waiting in log.read_text(), lambda: third.poll() is None, "it waited")
        finally:
            first.send_signal(signal.SIGCONT)
        _, stderr = first.communicate(timeout=300)
        assert first.returncode == 0, stderr
        assert third.wait(300) == 0, log.read_text()
        said = _lines(log.read_text())
        # It found the data set complete once the first run let it go: nothing left to do.
        assert said[0] == "asyncdl: starting 1 data set"
        assert said[1].startswith(waiting)
        assert said[2:] == ["asyncdl: 1 data set already complete"]
    finally:
        first.kill()
        first.communicate(timeout=60)
    folder = tmp_path / str(SEED_ID)
    assert orjson.loads((folder / "data.json").read_bytes()) == expected
    # Every target has its answer, and the server was asked as many times as there are targets
    # (1947): no target was asked twice, by any of the three.
    assert server.target_requests() - asked_before == 1947
    assert not list(folder.glob(".*.tmp"))


def test_two_runs_started_together_share_the_work_and_ask_nothing_twice(server, tmp_path_factory):
    ids = [SEED_ID, OTHER_ID, 112514202]
    single = tmp_path_factory.mktemp("single")
    options = FetchOptions(concurrency=8, density_range=NARROW)
    asked_before = server.target_requests()
    results = asyncdl.fetch_sync(ids, single, options=options, endpoints=server.endpoints)
    targets = sum(r.targets for r in results)
    assert server.target_requests() - asked_before == targets
    asked_before = server.target_requests()
    out = tmp_path_factory.mktemp("twice")
    argv = command("fetch", *ids, "-o", out, "-c", 4, "--density-range", *NARROW)
    argv += server_options(server)
    runs = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    statuses = []
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        _lines(stderr)
        statuses.append(run.returncode)
    # Each run leaves to the other what the other holds (75), or finds it complete (0).
    assert set(statuses) <= {0, 75}, statuses
    for data_set in ids:
        name = f"{data_set}/data.json"
        assert (out / name).read_bytes() == (single / name).read_bytes()
    assert server.target_requests() - asked_before == targets  # none asked twice
