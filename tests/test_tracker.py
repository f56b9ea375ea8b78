"""Where a run stands (``RunTracker``), and the lines that say it: the heartbeat, the start, the
end of a run, and the table at the end of the live display."""

import io

from rich.console import Console

from asyncdl import DataSetResult
from asyncdl.events import LineReporter, describe_progress, describe_run
from asyncdl.progress import TABLE_ROWS, RichProgress
from asyncdl.tracker import RATE_WINDOW, RunTracker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(tracker: RunTracker, data_set: int, n: int) -> None:
    for _ in range(n):
        tracker.target_done(data_set, True)


def test_the_total_covers_every_data_set_estimated_until_known():
    clock = Clock()
    tracker = RunTracker(clock)
    tracker.planned(complete=[4], targets={3: 500})  # 4 is done; an earlier run found 3's targets
    tracker.started([1, 2, 3, 4, 5])
    assert tracker.total() == (2000, True)  # 1, 2 and 5 at 3's 500: nothing else is known yet
    tracker.data_set_started(1, 100, 0)
    # 1: 100; 3: 500 from run.json; 2 and 5 at the mean of those two (300 each)
    assert tracker.total() == (1200, True)
    tracker.data_set_started(2, 200, 0)
    tracker.data_set_done(DataSetResult(4, True, targets=7, skipped=True))
    tracker.data_set_started(3, 480, 30)  # fewer than run.json said; 30 answered before
    tracker.data_set_started(5, 0, 0)
    assert tracker.total() == (780, False)
    assert tracker.snapshot().done == 30


def test_a_data_set_that_cannot_be_prepared_counts_as_none():
    tracker = RunTracker(Clock())
    tracker.started([1, 2, 3])
    tracker.data_set_started(1, 100, 0)
    tracker.data_set_done(DataSetResult(2, False, error="HTTP 404"))
    assert tracker.total() == (150, True)  # 3 at the mean of 1 (100) and 2 (0)


def test_rate_and_time_left_from_this_runs_answers_only():
    clock = Clock()
    tracker = RunTracker(clock)
    tracker.started([1, 2])
    tracker.data_set_started(1, 1000, 400)  # 400 answered by an earlier run: no part of the rate
    clock.now += 10
    answer(tracker, 1, 200)
    now = tracker.snapshot()
    assert now.rate == 20 and now.done == 600
    assert now.total == 2000 and now.estimated  # 2 at 1's 1000
    assert now.eta == (2000 - 600) / 20
    # The rate is that of the last RATE_WINDOW seconds: a slower server shows.
    clock.now += RATE_WINDOW
    answer(tracker, 1, 60 * 5)
    tracker.snapshot()
    clock.now += RATE_WINDOW
    answer(tracker, 1, 60 * 5)
    assert tracker.snapshot().rate == 5


def test_the_heartbeat_line():
    clock = Clock()
    tracker = RunTracker(clock)
    tracker.started(range(2600))
    assert describe_progress(tracker.snapshot()).startswith(
        "asyncdl: 0/2,600 data sets, 0/? targets, -/s, 0 retries, 0 failed, ETA -"
    )
    tracker.data_set_started(0, 1750, 0)
    clock.now += 5
    answer(tracker, 0, 1000)
    assert describe_progress(tracker.snapshot()) == (
        "asyncdl: 0/2,600 data sets, 1,000/~4,550,000 targets (0%), 200/s, 0 retries, 0 failed, "
        "ETA ~6:19:05, 0:00:05 elapsed"
    )


def skipped(data_set: int, *, verified: bool = False) -> DataSetResult:
    return DataSetResult(data_set, True, targets=10, lines=9, skipped=True, verified=verified)


def test_a_rerun_with_nothing_to_do_is_one_line():
    results = [skipped(i, verified=i % 2 == 0) for i in range(2600)]
    assert describe_run(results, 0.8) == "2,600 data sets already complete (1,300 verified)"
    assert describe_run(results[1:2], 0.1) == "1 data set already complete"
    stream = io.StringIO()
    lines = LineReporter(stream)
    lines.planned(complete=range(2600), targets={})
    lines.started(range(2600))
    for result in results:
        lines.data_set_done(result)
    lines.finished(results, 0.8)
    assert stream.getvalue() == "asyncdl: 2,600 data sets already complete (1,300 verified)\n"


def test_a_run_says_it_began_and_how_many_were_complete():
    stream = io.StringIO()
    lines = LineReporter(stream)
    lines.planned(complete=[1, 2], targets={3: 10})
    lines.started([1, 2, 3])
    ok = DataSetResult(3, True, targets=10, lines=9, requests=10, seconds=1.5)
    for result in (skipped(1), skipped(2), ok):
        lines.data_set_done(result)
    lines.finished([skipped(1), skipped(2), ok], 2.0)
    start, done, run = stream.getvalue().splitlines()
    assert start == "asyncdl: starting 3 data sets (2 of them complete already)"
    assert done.startswith("3: ok: 10 targets")
    assert run.startswith("asyncdl: 3 of 3 data sets complete (2 of them already), 27 lines")


def test_the_final_table_puts_failures_first_and_keeps_to_its_rows(tmp_path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    directory = str(tmp_path / "{}")
    results = [
        DataSetResult(i, True, targets=5, lines=5, directory=directory.format(i))
        for i in range(100, 160)
    ]
    results[40] = DataSetResult(140, False, error="HTTP 404", directory=directory.format(140))
    results[50] = DataSetResult(150, False, targets=5, failures=2, directory=directory.format(150))
    results += [skipped(i) for i in range(200, 300)]
    with RichProgress(console) as display:
        display.finished(results, 10.0)
    text = out.getvalue()
    rows = [
        line.split() for line in text.splitlines() if line.split()[:1] and line.split()[0].isdigit()
    ]
    assert len(rows) == TABLE_ROWS
    assert rows[0][:2] == ["140", "failed"] and rows[1][:2] == ["150", "incomplete"]
    assert all(row[1] == "ok" for row in rows[2:]) and not any(r[1] == "skipped" for r in rows)
    assert f"... and 40 more data sets: each in {tmp_path}/<id>/summary.json" in text
    assert f"asyncdl status {tmp_path}" in text
    assert "158 of 160 data sets complete (100 of them already)" in text
