"""The command line, run as a real subprocess (``python -m asyncdl``)."""

import os
import re
import shlex
import signal
import subprocess
import time
import urllib.request

import orjson
import pandas as pd
import pytest

from asyncdl import cli, planning
from asyncdl.config import FetchOptions
from asyncdl.emulator import FaultPlan
from asyncdl.emulator.synthetic import DATA_SET_IDS

from .conftest import (
    SEED_ID,
    EmulatorProcess,
    EmulatorThread,
    command,
    interruptible,
    run_cli,
    server_args,
    wait_for_answers,
)


def assert_clean(stderr):
    assert "Traceback" not in stderr
    assert "Unclosed" not in stderr and "Task was destroyed" not in stderr


@pytest.mark.parametrize("volumes", ["nrrd", "legacy"])
def test_fetch_with_the_bundled_emulator_matches_the_seed(seed_reference, tmp_path, volumes):
    # The README's command, in a fresh process with its own emulator.
    proc = run_cli("fetch", SEED_ID, "--emulator", "-o", tmp_path, "--volumes", volumes)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stderr)
    data = orjson.loads((tmp_path / str(SEED_ID) / "data.json").read_bytes())
    assert data == seed_reference(SEED_ID, volumes)
    assert f"{SEED_ID}: ok: " in proc.stderr
    assert "1 of 1 data sets complete" in proc.stderr
    assert "warning" not in proc.stderr  # legacy volumes warn against the real host only


def test_partial_failure_exits_1_after_writing_the_rest(emulator, tmp_path):
    proc = run_cli(
        "fetch",
        42,
        SEED_ID,
        "-o",
        tmp_path,
        "--base-url",
        emulator.base_url,
        "--archive-url",
        emulator.base_url,
        "--density-range",
        "0.1",
        "0.11",
    )
    assert proc.returncode == 1
    assert_clean(proc.stderr)
    assert "42: FAILED: HTTP 404" in proc.stderr
    assert (tmp_path / str(SEED_ID) / "data.json").exists()


@pytest.mark.parametrize("flag", ["--ids-file", "-i"])
def test_ids_file(emulator, tmp_path, flag):
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# experiments\n{SEED_ID}  # the seed's\n\n")
    proc = run_cli(
        "fetch",
        flag,
        ids,
        "-o",
        tmp_path / "out",
        "--base-url",
        emulator.base_url,
        "--archive-url",
        emulator.base_url,
        "-c",
        "4",
        "--density-range",
        "0.1",
        "0.11",
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / str(SEED_ID) / "summary.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fetch", "abc", "-o", "x"], "not a data set id: 'abc'"),
        (["fetch", "-1", "-o", "x"], "not a data set id"),
        (["fetch", "1", "-o", "x", "-c", "0"], "concurrency must be at least 1"),
        (["fetch", "1", "-o", "x", "-c", "lots"], "expected a number or auto, got 'lots'"),
        (["fetch", "1", "-o", "x", "--max-concurrency", "0"], "max concurrency must be at least"),
        (["fetch", "1", "-o", "x", "--patience", "-1"], "patience must be 0 or more"),
        (["emulate", "--shed-queue", "4"], "shedding needs a capacity"),
        (["fetch", "1", "-o", "x", "--density-range", "0.3", "0.1"], "density range is empty"),
        (["fetch", "1", "-o", "x", "--retries", "-1"], "retries"),
        (["fetch", "1"], "required: -o/--out"),
        (["fetch", "-o", "x"], "no data set ids"),
        (["fetch", "--ids-file", "/nonexistent/ids", "-o", "x"], "cannot read ids file"),
        (["fetch", "1", "-o", "x", "--emulator", "--base-url", "http://h"], "--emulator"),
        (["fetch", "1", "-o", "x", "--base-url", "ftp://h"], "not an http(s) URL"),
        (["fetch", "1", "-o", "x", "--volumes", "tiff"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path, args, message):
    proc = run_cli(*args, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asyncdl: error:"), proc.stderr
    assert message in lines[0]


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run_cli("fetch", "1", "-o", blocker / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"asyncdl: error: cannot create output directory {blocker / 'out'}: Not a directory"
    ]


def test_unreachable_server_is_a_clear_failure(tmp_path):
    proc = run_cli(
        "fetch",
        SEED_ID,
        "-o",
        tmp_path,
        "--base-url",
        "http://127.0.0.1:9",
        "--archive-url",
        "http://127.0.0.1:9",
        "--retries",
        "1",
    )
    assert proc.returncode == 1
    assert_clean(proc.stderr)
    assert f"{SEED_ID}: FAILED: ClientConnectorError" in proc.stderr


def test_version_and_help():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("asyncdl ")
    proc = run_cli("fetch", "--help")
    assert proc.returncode == 0 and "--concurrency" in proc.stdout and "examples:" in proc.stdout


def test_emulate_serves_until_interrupted():
    with EmulatorProcess() as emu:
        assert emu.output().startswith("asyncdl emulator listening on http://127.0.0.1:")
        path = "/api/v2/structure_graph_download/1.json"
        with urllib.request.urlopen(emu.base_url + path, timeout=60) as resp:
            assert orjson.loads(resp.read())["success"] is True
        assert emu.stop() == 0  # SIGINT, as a Ctrl-C
        assert_clean(emu.output())


def test_an_emulator_process_that_cannot_start_says_why():
    failed = pytest.raises(RuntimeError, match=r"(?s)exited; its output:.*unknown fault kinds")
    with failed, EmulatorProcess("--faults", "gremlins"):
        pass


def test_ctrl_c_stops_promptly_and_cleanly(emulator, tmp_path):
    concurrency = 2
    proc = subprocess.Popen(
        interruptible(
            command("fetch", SEED_ID, "-o", tmp_path, "-c", concurrency, *server_args(emulator))
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        lines = tmp_path / str(SEED_ID) / "lines.ndjson"
        wait_for_answers([lines], lambda: proc.poll() is None)
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()  # after: a late reading can only miss requests
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert (
        stderr.strip().splitlines()[-1]
        == "asyncdl: interrupted; run the same command again to resume"
    )
    assert_clean(stderr)
    # Promptly, counted in requests rather than seconds so that a busy machine cannot fail it:
    # the server sees only the requests already on their way (at most one per slot) and the few
    # sent in the turns of the event loop it takes to handle the signal. A run that went on would
    # send hundreds more (the data set has about 1950 targets).
    after = [entry for entry in emulator.stats.log or [] if entry[2] > interrupted]
    assert len(after) <= 4 * concurrency, f"{len(after)} requests after the interrupt"
    assert not (tmp_path / str(SEED_ID) / "data.json").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".part"))]


def test_list_finds_data_sets_by_injection_structure(emulator):
    proc = run_cli(
        "list", "--injection-structure", "VISp", "--primary-only", *server_args(emulator)
    )
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.strip().splitlines()
    assert header.split()[:2] == ["id", "structure"]
    assert rows and all(row.split()[1] == "VISp" for row in rows)
    assert proc.stderr.strip() == f"{len(rows)} experiments"
    proc = run_cli("list", "--injection-structure", "grey", "--json", *server_args(emulator))
    records = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) > 2000 and len({r["id"] for r in records}) == len(records)  # two pages


def _peak(intervals):
    """The most of these (start, end) intervals that overlap at any moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize("concurrency", [2, 16])
def test_dry_run_counts_targets_and_samples_a_few(tmp_path, concurrency):
    ids = DATA_SET_IDS[:6]
    # Answers that take 0.3 s at the server, so that the grids asked at once are there at once
    # (with quick answers, how many overlap depends on how fast this machine sends them).
    with EmulatorThread(latency_ms=300, latency_spread=0, record=True) as emulator:
        cache = ("--cache-dir", tmp_path / "cache")  # empty: the shared files are fetched too
        proc = run_cli(
            "fetch",
            *ids,
            "--dry-run",
            "-o",
            tmp_path,
            "-c",
            concurrency,
            *cache,
            *server_args(emulator),
        )
        assert proc.returncode == 0, proc.stderr
        *per_data_set, total, time, disk = proc.stdout.strip().splitlines()
        assert per_data_set[0].startswith(f"{SEED_ID}: 1947 target requests, ~")
        assert per_data_set[0].endswith(f"at -c {concurrency}")
        assert [line.split(":")[0] for line in per_data_set] == list(map(str, ids))
        targets = sum(int(line.split()[1]) for line in per_data_set)
        assert total.startswith(f"dry run: 6 data sets, {targets:,} target requests")
        assert time.startswith("time: ~") and f"at -c {concurrency}" in time
        assert disk.startswith("disk: ~") and "of data.json" in disk
        # A few real target requests a data set, to time them; no result is written.
        assert emulator.stats.requests["query"] == (planning.SAMPLES + 1) * len(ids)
        assert not list(tmp_path.glob("*/lines.ndjson")) and not list(tmp_path.glob("*/data.json"))
        # The volumes come in as concurrently as -c allows (it was 2 data sets at a time whatever -c).
        log = emulator.stats.log
        assert log is not None  # record=True
        grids = [(start, end) for route, _, start, end in log if route == "grid_nrrd"]
        assert len(grids) == 2 * len(ids)
        assert _peak(grids) <= concurrency
        # What every count needs came first, so that data sets are counted as their grids come in
        # (behind 5,200 grids, a whole atlas's dry run counted nothing for its first 12 minutes).
        [annotation] = [end for route, _, _, end in log if route == "annotation"]
        assert annotation <= min(start for start, _ in grids)
        if concurrency == 16:
            assert _peak(grids) > 4  # the 12 grids went out together (not 2 data sets at a time)


def test_a_dry_run_under_c_auto_says_at_what_bound_it_figured_the_time(emulator, tmp_path):
    proc = run_cli("fetch", SEED_ID, "--dry-run", "-o", tmp_path, *server_args(emulator))
    assert proc.returncode == 0, proc.stderr
    per_data_set, _, time, _ = proc.stdout.strip().splitlines()
    at = f"at -c auto ({FetchOptions().max_concurrency} at most)"
    assert per_data_set.startswith(f"{SEED_ID}: 1947 target requests, ~")
    assert per_data_set.endswith(at)
    assert time.startswith("time: ~") and at in time


def test_fetch_by_injection_structure_searches_first(emulator, tmp_path):
    proc = run_cli(
        "fetch",
        "--injection-structure",
        "VISp",
        "--transgenic-line",
        "no-such-line",
        "-o",
        tmp_path,
        *server_args(emulator),
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "asyncdl: error: no data set ids given (as arguments, --ids-file or a search)"
    )
    assert emulator.stats.requests["query"] == 1  # the search ran


def test_brainrender_format_json_log_and_preview(emulator, tmp_path):
    proc = run_cli(
        "fetch",
        SEED_ID,
        "-o",
        tmp_path,
        "--format",
        "brainrender",
        "--log-format",
        "json",
        "--density-range",
        "0.1",
        "0.13",
        *server_args(emulator),
    )
    assert proc.returncode == 0, proc.stderr
    everything = [orjson.loads(line) for line in proc.stderr.splitlines()]
    events = [e for e in everything if e["event"] != "limit"]
    assert [e["event"] for e in events] == ["start", "data_set_start", "data_set_done", "summary"]
    assert events[2]["status"] == "ok" and events[3]["complete"] == 1
    limits = [e["limit"] for e in everything if e["event"] == "limit"]  # -c auto's, now and then
    assert limits and all(1 <= limit <= 256 for limit in limits)
    streamlines = pd.read_json(tmp_path / str(SEED_ID) / f"streamlines_{SEED_ID}.json")
    assert len(streamlines["lines"][0]) == events[2]["lines"] > 0  # as brainrender reads it
    proc = run_cli("preview", tmp_path / str(SEED_ID))
    assert proc.returncode == 0, proc.stderr
    png = tmp_path / str(SEED_ID) / "preview.png"
    assert proc.stdout.strip() == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_of_a_folder_without_data(tmp_path):
    proc = run_cli("preview", tmp_path)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("asyncdl: error:") and "data.json" in line


def test_fetch_help_lists_every_exit_status_from_the_one_table(capsys):
    from asyncdl.exits import Exit

    with pytest.raises(SystemExit) as stop:
        cli.main(["fetch", "--help"])
    assert stop.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for status in Exit:
        assert f"{int(status)} {status.meaning}" in shown


def test_a_default_run_against_a_server_that_sheds_load_answers_every_target(tmp_path):
    # 16 handlers at 50 ms, and a 503 with Retry-After to whatever finds 8 queued: a run with
    # every default slows down to what the server takes instead of losing targets. A fixed -c 64
    # would be shed most of the time; its busy answers are waited out too, and it also ends well.
    with EmulatorThread(latency_ms=50, capacity=16, shed_queue=8) as emu:
        proc = run_cli("fetch", SEED_ID, "-o", tmp_path / "auto", *server_args(emu))
        queue = emu.stats.queue
        assert queue is not None
        auto_sheds, served = queue.sheds, queue.served
        fixed = run_cli(
            "fetch", SEED_ID, "-o", tmp_path / "fixed", "-c", 64, "--density-range", "0.1", "0.13",
            *server_args(emu),
        )  # fmt: skip
        fixed_sheds = queue.sheds - auto_sheds
    assert proc.returncode == 0, proc.stderr
    summary = orjson.loads((tmp_path / "auto" / str(SEED_ID) / "summary.json").read_bytes())
    assert summary["complete"] and summary["failures"] == 0 and summary["targets"] == 1947
    assert auto_sheds <= 0.02 * served
    assert fixed.returncode == 0, fixed.stderr
    done = orjson.loads((tmp_path / "fixed" / str(SEED_ID) / "summary.json").read_bytes())
    assert done["complete"] and fixed_sheds > 0 and done["retries"] >= fixed_sheds
    print(f"sheds: {auto_sheds} of {served} with -c auto, {fixed_sheds} with -c 64")


# -- conventions: pipes, -v, --help --------------------------------------------------------------


def test_a_closed_pipe_ends_quietly(emulator):
    # The reader is gone before anything is written (the end of the pipe it read is closed).
    proc = subprocess.Popen(
        command("list", "--injection-structure", "grey", "--json", *server_args(emulator)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=120)
    assert (proc.returncode, stderr) == (0, "")


def test_list_into_head_as_in_a_shell(emulator):
    # `asyncdl list ... | head -1` with pipefail: the status is asyncdl's own.
    line = shlex.join(command("list", "--injection-structure", "grey", *server_args(emulator)))
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {line} | head -1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.split()[:2] == ["id", "structure"] and proc.stdout.count("\n") == 1


@pytest.fixture(scope="module")
def faulty():
    """An emulator whose spatial search fails a third of the time, at once (HTTP 500)."""
    faults = FaultPlan(rate=0.3, kinds=("500",), routes=frozenset({"query"}))
    with EmulatorThread(faults=faults) as emu:
        yield emu


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_prints_each_retry(faulty, tmp_path, verbose):
    args = ["--density-range", "0.1", "0.11", "--retries", "8", *server_args(faulty)]
    proc = run_cli("fetch", SEED_ID, "-o", tmp_path, *args, *(["-v"] if verbose else []))
    assert proc.returncode == 0, proc.stderr
    summary = orjson.loads((tmp_path / str(SEED_ID) / "summary.json").read_bytes())
    assert summary["retries"] > 0
    retries = [line for line in proc.stderr.splitlines() if ": retry in " in line]
    assert len(retries) == (summary["retries"] if verbose else 0)
    pattern = rf"{SEED_ID}: retry in \d+\.\d s after HTTP 500 Internal Server Error \(http://"
    assert all(re.match(pattern, line) for line in retries), retries[:3]


def help_of(*args):
    proc = run_cli(*args, "--help")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def sections(text):
    """The option lines of each titled part of a --help text, by title."""
    parts: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            title = line[:-1]
            parts[title] = []
        elif title is not None and line.startswith("  -"):
            parts[title].append(line.split()[0].rstrip(","))
    return parts


def test_fetch_help_groups_its_options_with_readable_names():
    text = help_of("fetch")
    parts = sections(text)
    assert list(parts)[:5] == ["options", "what to fetch", "speed", "output", "server"]
    assert parts["what to fetch"][:2] == ["-i", "--injection-structure"]
    assert parts["speed"][:6] == [
        "-c",
        "--max-concurrency",
        "--rate",
        "--retries",
        "--patience",
        "--timeout",
    ]
    assert {"-o", "-q", "-v", "--format", "--dry-run"} <= set(parts["output"])
    assert parts["server"] == [
        "--base-url",
        "--archive-url",
        "--proxy",
        "--ca-bundle",
        "--emulator",
    ]
    usage = text[: text.index("\n\n")]
    assert re.findall(r"\b[A-Z]+_[A-Z_]+\b", usage) == []  # no INJECTION_THRESHOLD
    assert "--injection-threshold FRACTION" in usage and "--timeout SECONDS" in usage
    # Defaults and help texts are FetchOptions' own.
    flat = " ".join(text.split())
    for name in ("concurrency", "retries", "timeout", "injection_threshold", "proxy"):
        assert FetchOptions.describe(name)[1] in flat


def test_list_help_offers_only_what_list_uses():
    text = help_of("list")
    parts = sections(text)
    assert parts["which experiments"] == [
        "--injection-structure",
        "--primary-only",
        "--transgenic-line",
    ]
    assert parts["output"] == ["--json", "--csv"]
    assert parts["server"] == ["--base-url", "--proxy", "--ca-bundle", "--emulator"]
    for unused in ("--archive-url", "--concurrency", "--retries", "--out", "--verbose"):
        assert unused not in text


@pytest.mark.parametrize("interval", ["0.05", "0"])
def test_a_heartbeat_when_stderr_is_not_a_terminal(emulator, tmp_path, interval):
    args = ["-c", "2", "--density-range", "0.1", "0.13", "--progress-interval", interval]
    proc = run_cli("fetch", SEED_ID, "-o", tmp_path, *args, *server_args(emulator))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "asyncdl: starting 1 data set"  # not silent until a data set is done
    beat = r"asyncdl: [01]/1 data sets, [\d,]+/~?[\d,?]+ targets.*, ETA .*, \d+:\d\d:\d\d elapsed$"
    beats = [line for line in lines if re.match(beat, line)]
    assert len(beats) == len(lines) - 3  # the start, the data set's line and the run's
    assert bool(beats) == (interval != "0")
