"""What a run reports: the JSON event stream, the plain lines and the live display."""

import inspect
import io

import orjson
from rich.console import Console

import asyncdl
from asyncdl import FetchOptions
from asyncdl.events import JsonReporter, LineReporter
from asyncdl.progress import RichProgress

from .conftest import SEED_ID, Recorder

OPTIONS = FetchOptions(concurrency=8, density_range=(0.1, 0.11))


async def test_json_events(emulator, tmp_path):
    stream = io.StringIO()
    reporter = JsonReporter(stream)
    results = await asyncdl.fetch(
        [SEED_ID, 42], tmp_path, options=OPTIONS, endpoints=emulator.endpoints, events=reporter
    )
    reporter.finished(results, 1.0)
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
    reporter.finished(results, 2.0)
    first, last = stream.getvalue().splitlines()
    assert first.startswith(f"{SEED_ID}: ok: {results[0].targets} targets")
    assert last.startswith("asyncdl: 1 of 1 data sets complete")


async def test_rich_progress_shows_bars_then_a_table(emulator, tmp_path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    with RichProgress(console) as progress:
        results = await asyncdl.fetch(
            [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints, events=progress
        )
        progress.finished(results, 1.5)
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
