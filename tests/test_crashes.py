"""A bug is one line that says where its crash log is, and exit 70; the log has what a maintainer
needs; nothing answered before it is lost."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from asyncdl import __version__
from asyncdl.crashes import write_crash_log

from .conftest import SEED_ID, run_cli, server_args

# asyncdl's command line with a bug planted in it: data.json cannot be assembled.
_BUGGY = """
import sys
import asyncdl.store
from asyncdl.cli import main

def finalize(self, targets, injection):
    raise RuntimeError("a bug planted by the test")

asyncdl.store.DataSetStore.finalize = finalize
sys.exit(main())
"""


def test_a_bug_is_one_line_exit_70_and_a_crash_log(emulator, seed_reference, tmp_path):
    state = tmp_path / "state"  # where platformdirs puts the user's log folder on Linux
    env = {"XDG_STATE_HOME": str(state)}
    args = ["fetch", SEED_ID, "-o", tmp_path / "out", "-c", 16, *server_args(emulator)]
    proc = subprocess.run(
        [sys.executable, "-c", _BUGGY, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "error", **env},
    )
    assert proc.returncode == 70, proc.stderr
    start, line = proc.stderr.strip().splitlines()
    assert start == "asyncdl: starting 1 data set"
    found = re.fullmatch(
        r"asyncdl: internal error \(RuntimeError: a bug planted by the test\); details in (\S+); "
        r"please report it to the asyncdl maintainers with that file",
        line,
    )
    assert found, line
    log = Path(found[1])
    assert log.parent == state / "asyncdl" / "log"
    text = log.read_text()
    assert text.startswith(f"asyncdl {__version__} crashed at ")
    assert f"command: asyncdl fetch {SEED_ID} -o " in text
    assert "python: 3." in text and "\n  numpy " in text and "\n  aiohttp " in text
    assert "Traceback (most recent call last)" in text and "in finalize" in text
    assert text.rstrip().endswith("RuntimeError: a bug planted by the test")

    # Every answer was on disk: the same command, without the bug, only assembles data.json.
    again = run_cli(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert re.search(r": ok: (\d+) targets, .*resumed after \1 targets", again.stderr)
    data = (tmp_path / "out" / str(SEED_ID) / "data.json").read_bytes()
    assert orjson.loads(data) == seed_reference(SEED_ID, "nrrd")


def test_a_crash_log_goes_to_the_temp_folder_when_the_log_folder_cannot_be_written(
    tmp_path, monkeypatch
):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    try:
        raise ValueError("boom")
    except ValueError as exc:
        log = write_crash_log(exc, ["fetch", "1"])
    assert log is not None and log.parent == tmp_path / "tmp"
    assert log.name.startswith("asyncdl-crash-") and log.suffix == ".log"
    assert log.stat().st_mode & 0o077 == 0  # the user's alone
    assert "ValueError: boom" in log.read_text()
