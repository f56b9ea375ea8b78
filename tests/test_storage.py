"""A disk that fills up mid-run: one line and exit 3, nothing answered lost, no partial final file,
and the same command completes once there is space, byte for byte as an uninterrupted run.

The disk is a real tmpfs of a few MB when the tests run as root (as CI does); elsewhere the API
test falls back to a write wrapper that raises ENOSPC after K bytes, and the CLI test is skipped.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import asyncdl
from asyncdl import FetchOptions, StorageError
from asyncdl.emulator import Emulator

from .conftest import SEED_ID, run_cli, server_args

#: The seed data set writes about 3.0 MB of lines.ndjson, then 2.9 MB of data.json (so a 1 MB disk
#: fills while answers come in, a 4 MB one while data.json is written).
#: "cache": the volumes are cached on the same 1 MB disk (the default OUT/.cache) and fill it first.
SIZES = {"cache": "1m", "lines": "1m", "data": "4m"}
WHERE = {"cache": "/.cache/", "lines": "lines.ndjson", "data": "data.json"}


def _mount(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        timeout=30,
    )
    return done.returncode == 0


def _grow(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", str(path)], check=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A tmpfs of SIZES[...] at tmp_path/disk (resized with ``_grow``), or None if none can be had."""
    disk = tmp_path / "disk"
    mounted: list[Path] = []

    def mount(size: str) -> Path | None:
        if _mount(disk, size):
            mounted.append(disk)
            return disk
        return None

    yield mount  # type: ignore[misc]
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], timeout=30, check=False)


@pytest.fixture(scope="module")
def uninterrupted(emulator_server: Emulator, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """data.json of the seed data set from a run that nothing interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted")
    results = asyncdl.fetch_sync([SEED_ID], out, endpoints=emulator_server.endpoints)
    assert results[0].complete
    return (out / str(SEED_ID) / "data.json").read_bytes()


def _no_partial_final_files(folder: Path) -> None:
    assert not (folder / "data.json").exists()
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("stage", sorted(SIZES))
def test_a_full_disk_is_one_line_exit_3_and_the_rerun_completes(
    emulator, small_disk, uninterrupted, tmp_path, stage
):
    disk = small_disk(SIZES[stage])
    if disk is None:
        pytest.skip("needs root to mount a small tmpfs")
    args = ["fetch", SEED_ID, "-o", disk, "-q", *server_args(emulator)]
    if stage != "cache":
        args += ["--cache-dir", tmp_path / "cache"]
    proc = run_cli(*args)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("asyncdl: error:")]
    assert len(errors) == 1, proc.stderr
    assert WHERE[stage] in errors[0] and "No space left on device" in errors[0]
    folder = disk / str(SEED_ID)
    _no_partial_final_files(folder)
    if stage != "cache":
        assert (folder / "lines.ndjson").stat().st_size > 0  # what was answered is on disk

    _grow(disk)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert (folder / "data.json").read_bytes() == uninterrupted
    if stage == "data":  # every answer was in: no target was asked again
        assert re.search(r": ok: (\d+) targets, .*resumed after \1 targets", again.stderr), (
            again.stderr
        )


async def test_the_api_raises_one_storage_error_with_the_cause(
    emulator, small_disk, uninterrupted, tmp_path, monkeypatch
):
    disk = small_disk(SIZES["lines"])
    if disk is None:  # no tmpfs: a write wrapper that runs out of space after 1 MB instead
        disk = tmp_path / "out"
        real = asyncdl.files.append  # the function asyncdl.store calls as `append`
        budget = [1 << 20]

        def append(fh, data, path):
            budget[0] -= len(data)
            if budget[0] < 0:
                with asyncdl.files.writing(path):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fh, data, path)

        monkeypatch.setattr(asyncdl.store, "append", append)
    options = FetchOptions(concurrency=8)
    kwargs = {"options": options, "endpoints": emulator.endpoints, "cache_dir": tmp_path / "c"}
    with pytest.raises(StorageError) as info:
        await asyncdl.fetch([SEED_ID], disk, **kwargs)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert info.value.path.endswith("lines.ndjson")
    _no_partial_final_files(disk / str(SEED_ID))

    if disk.is_mount():
        _grow(disk)
    else:
        monkeypatch.undo()
    results = await asyncdl.fetch([SEED_ID], disk, **kwargs)
    assert results[0].complete and results[0].resumed > 0
    assert (disk / str(SEED_ID) / "data.json").read_bytes() == uninterrupted
