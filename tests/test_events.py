"""What a run reports: the JSON event stream, the plain lines, the log and the live display."""

import dataclasses
import inspect
import io
import logging
import subprocess
import sys
import threading

import orjson
import pytest
from rich.console import Console

import asyncdl
from asyncdl import Events, FetchOptions, UsageError
from asyncdl.emulator import Emulator, FaultPlan
from asyncdl.events import HOOKS, JsonReporter, LineReporter, Tee
from asyncdl.progress import RichProgress

from .conftest import SEED_ID, Recorder

OPTIONS = FetchOptions(concurrency=8, density_range=(0.1, 0.11))


async def test_json_events(emulator, tmp_path):
    stream = io.StringIO()
    reporter = JsonReporter(stream)
    await asyncdl.fetch(
        [SEED_ID, 42], tmp_path, options=OPTIONS, endpoints=emulator.endpoints, events=reporter
    )
    events = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "summary"
    assert kinds.count("data_set_done") == 2
    done = {e["data_set"]: e for e in events if e["event"] == "data_set_done"}
    assert done[42]["status"] == "failed" and "404" in done[42]["error"]
    assert done[SEED_ID]["status"] == "ok"
    assert events[-1]["complete"] == 1 and events[-1]["data_sets"] == 2
    assert [e["limit"] for e in events if e["event"] == "limit"] == [8]  # -c 8: told once


async def test_line_reporter(emulator, tmp_path):
    stream = io.StringIO()
    reporter = LineReporter(stream)
    results = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints, events=reporter
    )
    start, first, last = stream.getvalue().splitlines()  # the run's: fetch says it is finished
    assert start == "asyncdl: starting 1 data set"
    assert first.startswith(f"{SEED_ID}: ok: {results[0].targets} targets")
    assert last.startswith("asyncdl: 1 of 1 data sets complete")


async def test_rich_progress_shows_bars_then_a_table(emulator, tmp_path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    with RichProgress(console) as progress:
        await asyncdl.fetch(
            [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints, events=progress
        )
    text = out.getvalue()
    assert "req/s" in text and "retries" in text  # the bars were drawn
    assert "   8 at once" in text  # how many requests may be in flight
    assert f"{SEED_ID}: ok: " in text  # a line per finished data set
    assert "data set" in text and "status" in text and "1 of 1 data sets complete" in text


def test_the_recorder_records_every_hook_with_its_arguments():
    # Every hook, by name and argument names: a hook added to Events is recorded without edits.
    hooks = [name for name, f in vars(asyncdl.Events).items() if callable(f) and name[0] != "_"]
    recorder = Recorder()
    for hook in hooks:
        parameters = list(inspect.signature(getattr(asyncdl.Events, hook)).parameters)[1:]
        getattr(recorder, hook)(*parameters)  # each argument's value is its own name
    assert [(hook, list(arguments.values())) for hook, arguments in recorder.calls] == [
        (hook, list(inspect.signature(getattr(asyncdl.Events, hook)).parameters)[1:])
        for hook in hooks
    ]
    shares = {"tcp://a:1": 3}
    recorder.shares_changed(shares)
    shares["tcp://a:1"] = 0  # what the run changes afterwards is recorded as it was
    assert recorder.shares[-1] == {"tcp://a:1": 3}


def test_tee_hands_every_hook_to_each_listener_in_order():
    first, second = Recorder(), Recorder()
    tee = Tee(first, Events(), second)
    arguments = {
        name: list(inspect.signature(getattr(Events, name)).parameters)[1:] for name in HOOKS
    }
    for name in HOOKS:
        getattr(tee, name)(*arguments[name])  # each argument's value is its own name
    for listener in (first, second):
        assert [(hook, list(args.values())) for hook, args in listener.calls] == list(
            arguments.items()
        )
    assert {"started", "retry", "target_done", "data_set_done", "finished"} <= set(HOOKS)


async def test_the_log_says_what_the_lines_say(tmp_path, caplog):
    # Half the spatial searches fail at first, and a retry may fail again: retries, targets
    # failed for good, and a data set that does not exist (42).
    faults = FaultPlan(rate=0.5, kinds=("500",), routes=frozenset({"query"}))
    options = FetchOptions(
        concurrency=8, density_range=(0.1, 0.11), retries=1, backoff_base=0, backoff_max=0
    )
    lines = io.StringIO()
    async with Emulator(faults=faults) as emu:
        with caplog.at_level(logging.DEBUG, logger="asyncdl"):
            results = await asyncdl.fetch(
                [SEED_ID, 42],
                tmp_path,
                options=options,
                endpoints=emu.endpoints,
                events=LineReporter(lines, verbose=True),
            )
    seed, missing = results
    assert missing.status == "failed"
    assert seed.retries > 0 and seed.failures > 0 and seed.lines > 0
    records = [r for r in caplog.records if r.name == "asyncdl"]
    by_level = {
        level: [r.getMessage() for r in records if r.levelno == level]
        for level in (logging.DEBUG, logging.INFO, logging.WARNING)
    }
    retries = [m for m in by_level[logging.DEBUG] if ": retry in " in m]
    assert len(retries) == seed.retries
    failed = [m for m in by_level[logging.WARNING] if ": target " in m]
    assert len(failed) == seed.failures
    assert any(m.startswith(f"{SEED_ID}: INCOMPLETE: ") for m in by_level[logging.WARNING])
    assert any(m.startswith("42: FAILED: HTTP 404") for m in by_level[logging.WARNING])
    start, run = by_level[logging.INFO]  # only the run's lines: none complete
    assert start == "starting 2 data sets" and run.startswith("0 of 2 data sets complete")
    assert all(r.data_set == SEED_ID for r in records if ": retry in " in r.getMessage())
    # One text, two places: each line printed is the message of a record, and the other way round
    # but for the per-data-set start (DEBUG) records the lines leave out.
    start, *printed, run = lines.getvalue().splitlines()
    logged = [m for m in (r.getMessage() for r in records) if "answered before" not in m]
    assert start == f"asyncdl: {logged[0]}" and run == f"asyncdl: {logged[-1]}"
    assert sorted(printed) == sorted(logged[1:-1])


def test_the_library_adds_no_handler_but_a_null_one(emulator, tmp_path):
    assert [type(h) for h in logging.getLogger("asyncdl").handlers] == [logging.NullHandler]
    # A script that configures no logging sees nothing, even of failures (no lastResort output).
    script = (
        "import asyncdl, sys; "
        "[r] = asyncdl.fetch_sync([42], sys.argv[1], endpoints=asyncdl.Endpoints(sys.argv[2], "
        "sys.argv[2])); print(r.status)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), emulator.base_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "failed\n", "")


async def test_fetch_sync_runs_in_a_thread_of_its_own_where_a_loop_runs(emulator, tmp_path):
    # This test is a coroutine: its event loop runs, as a notebook kernel's does.
    threads = []

    class Where(Events):
        def data_set_done(self, result):
            threads.append(threading.current_thread().name)

    [result] = asyncdl.fetch_sync(
        [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints, events=Where()
    )
    assert result.complete and threads == ["asyncdl-run"]
    with pytest.raises(UsageError, match="no data set ids"):  # errors come out as themselves
        asyncdl.fetch_sync([], tmp_path)


async def test_a_repair_is_one_line_one_json_event_and_one_line_in_the_live_display(
    emulator, tmp_path
):
    options = dataclasses.replace(OPTIONS, keep_journal=True)  # repairs rebuild: no request
    fetch = {"options": options, "endpoints": emulator.endpoints}
    await asyncdl.fetch([SEED_ID], tmp_path, **fetch)
    data = tmp_path / str(SEED_ID) / "data.json"
    line = f"{SEED_ID}: repairing (data.json is 0 bytes, not the {data.stat().st_size:,} "
    plain, json = io.StringIO(), io.StringIO()
    terminal = Console(file=io.StringIO(), force_terminal=True, width=200, color_system=None)
    with RichProgress(terminal) as live:
        for reporter in (LineReporter(plain), JsonReporter(json), live):
            data.write_bytes(b"")
            await asyncdl.fetch([SEED_ID], tmp_path, events=reporter, **fetch)
    start, repair, *_ = plain.getvalue().splitlines()
    assert start == "asyncdl: starting 1 data set"
    assert repair.startswith(line) and "rebuilding data.json from" in repair
    events = [orjson.loads(text) for text in json.getvalue().splitlines()]
    [event] = [e for e in events if e["event"] == "repair"]  # among the run's others (limit, ...)
    assert event["data_set"] == SEED_ID
    assert event["damage"].startswith("data.json is 0 bytes, not the ")
    assert event["remedy"].startswith("rebuilding data.json from")
    assert line in terminal.file.getvalue()  # type: ignore[attr-defined]


async def test_a_redirect_is_a_line_with_v_a_json_event_and_a_log_record(
    emulator, tmp_path, caplog
):
    # Only the annotation is redirected, to the shared emulator under another name: one redirect.
    plain, quiet, json = io.StringIO(), io.StringIO(), io.StringIO()
    listeners = (LineReporter(plain, verbose=True), LineReporter(quiet), JsonReporter(json))
    there = f"http://localhost:{emulator.port}"
    async with Emulator(faults=FaultPlan(redirect=there, routes=frozenset({"annotation"}))) as emu:
        annotation = emu.endpoints.annotation_nrrd()
        moved = annotation.replace(emu.base_url, there)
        with caplog.at_level(logging.INFO, logger="asyncdl"):
            [result] = await asyncdl.fetch(
                [SEED_ID],
                tmp_path,
                options=OPTIONS,
                endpoints=emu.endpoints,
                events=Tee(*listeners),
            )
    assert result.complete
    line = f"redirected: {annotation} -> {moved}"
    assert line in plain.getvalue().splitlines() and "redirected" not in quiet.getvalue()
    events = [orjson.loads(e) for e in json.getvalue().splitlines()]
    assert [(e["url"], e["location"]) for e in events if e["event"] == "redirect"] == [
        (annotation, moved)
    ]
    assert line in [record.getMessage() for record in caplog.records]
