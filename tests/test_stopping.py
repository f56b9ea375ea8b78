"""Stopping on signals, with real processes and real signals: the first Ctrl-C or SIGTERM stops a
run cleanly, a second one ends it at once, quietly, and either way the same command resumes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from .conftest import SEED_ID, command, interruptible, run_cli, server_args

STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
HOW = {130: "interrupted", 143: "terminated"}


def _stop_while_writing_data_json(proc: subprocess.Popen[str], folder: Path) -> bool:
    """SIGSTOP ``proc`` while it writes ``data.json`` (its temp file is there, so the writing
    thread is somewhere between creating and renaming it): True if caught, False if it ended."""
    while proc.poll() is None:
        if any(folder.glob(".data.json.*.tmp")):
            proc.send_signal(signal.SIGSTOP)
            if any(folder.glob(".data.json.*.tmp")):
                return True
            proc.send_signal(signal.SIGCONT)  # it had just renamed it: too late for this run
        time.sleep(0.002)
    return False


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_second_signal_during_finalize_ends_quietly_and_the_run_resumes(
    emulator, seed_reference, tmp_path, second
):
    """Ctrl-C while data.json is being written, then a second signal while the run stops (it
    waits for that thread): no traceback (it was uvloop's "Event loop is closed"), one line, the
    signal's status, and the same command completes the data set."""
    for attempt in range(5):  # a run whose data.json is written before it is seen goes again
        out = tmp_path / f"attempt-{attempt}"
        argv = command("fetch", SEED_ID, "-o", out, "-c", 16, "-q", *server_args(emulator))
        proc = subprocess.Popen(
            interruptible(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            caught = _stop_while_writing_data_json(proc, out / str(SEED_ID))
            if caught:
                proc.send_signal(signal.SIGINT)  # delivered as it goes on
                proc.send_signal(signal.SIGCONT)
                time.sleep(0.05)  # the run is stopping, waiting for the thread writing data.json
                proc.send_signal(second)
            _, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
            proc.communicate(timeout=60)
        if caught:
            break
    else:
        pytest.fail("no run was caught writing data.json in 5 attempts")

    assert "Traceback" not in stderr and "Event loop is closed" not in stderr, stderr
    # "asyncdl: interrupted again; stopped at once; ..." and the second signal's status; or, if the
    # run had stopped before the second signal came, the first one's line and status. A signal
    # in the last moments of the interpreter's own exit, when Python has given signals back to
    # the system, ends the process by that signal: the status a shell then shows is the same,
    # 128 + the signal's number (130, 143).
    status = 128 - proc.returncode if proc.returncode < 0 else proc.returncode
    assert status in HOW, stderr
    start, *lines = stderr.strip().splitlines()
    assert start == "asyncdl: starting 1 data set", stderr
    assert lines and all(line.startswith("asyncdl: ") for line in lines), stderr
    assert all(line.endswith("; run the same command again to resume") for line in lines)
    if "stopped at once" in lines[-1]:  # the second signal stopped it
        assert lines[-1].startswith(f"asyncdl: {HOW[STATUS[second]]} again; stopped at once")
        assert status == STATUS[second]
    else:
        assert lines == ["asyncdl: interrupted; run the same command again to resume"]
        assert status == (STATUS[second] if proc.returncode < 0 else 130)

    again = run_cli("fetch", SEED_ID, "-o", out, "-c", 16, *server_args(emulator))
    assert again.returncode == 0, again.stderr
    folder = out / str(SEED_ID)
    assert orjson.loads((folder / "data.json").read_bytes()) == seed_reference(SEED_ID, "nrrd")
    assert not list(folder.glob(".*.tmp"))  # what the hard stop left was cleaned up
