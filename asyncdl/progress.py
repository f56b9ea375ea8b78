"""The live display (rich): one bar for the run, one per data set in flight, then a table.

The command line uses it when stderr is a terminal (``events.LineReporter`` or ``JsonReporter``
otherwise), ``fetch(progress=True)`` in a terminal or a Jupyter notebook.

It costs the run next to nothing: an answer only adds to the counts of a ``RunTracker``, and the
bars take their figures from it when they are drawn, a few times a second (in a terminal, by
rich's own thread). Nothing is done per answer that a whole-atlas run would feel.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, Task, TaskID, TextColumn
from rich.table import Table

from .config import Concurrency
from .events import (
    Events,
    clock,
    describe,
    describe_failure,
    describe_repair,
    describe_retry,
    describe_run,
    describe_waiting,
    describe_workers,
)
from .results import DataSetResult
from .tracker import RunTracker

#: Seconds between two redraws of a notebook's bars (each is a message to the browser).
NOTEBOOK_REDRAW = 0.25
#: Redraws a second in a terminal.
TERMINAL_REDRAWS = 4
#: Rows of the table at the end; the others are in their summary.json and ``asyncdl status``.
TABLE_ROWS = 20


class _Bars(Progress):
    """rich's ``Progress``, whose figures are brought up to date just before each drawing."""

    def __init__(self, view: RichProgress, **kwargs: Any) -> None:
        self.view = view
        super().__init__(
            TextColumn("{task.description:>12}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[count]:>15}"),
            TextColumn("{task.fields[rate]:>7} req/s"),
            TextColumn("{task.fields[retries]:>4} retries"),
            TextColumn("{task.fields[failures]:>3} failed"),
            TextColumn("{task.fields[limit]:>12}"),
            TextColumn("{task.fields[eta]:>9}"),
            **kwargs,
        )

    def get_renderables(self) -> Iterable[RenderableType]:
        self.view.update(self.tasks)
        yield from super().get_renderables()


def _figures(
    done: int, total: int | None, rate: float | None, eta: float | None, about: str = ""
) -> dict[str, Any]:
    return {
        "count": f"{done:,}/{about}{total:,}" if total is not None else f"{done:,}/?",
        "rate": f"{rate:,.0f}" if rate else "-",
        "eta": f"{about}{clock(eta)}" if eta is not None else "-:--:--",
    }


class RichProgress(Events):
    """Bars for the run and each active data set: done/total, requests/s, retries, failures, time
    left; on the run's bar, how many requests may be in flight (the limit of ``-c``). The run's
    total counts every data set, estimated (``~``) until each one's is known.

    In a terminal the bars are redrawn in place and go at the end, for the table. In Jupyter they
    are one output of the cell, redrawn in place through its display id (rich's own live display
    needs ipywidgets there), and stay, with the table below them. ``verbose`` also prints a line
    per retry and per target that failed for good.
    """

    def __init__(self, console: Console | None = None, *, verbose: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.verbose = verbose
        self.tracker = RunTracker()
        self._notebook = self.console.is_jupyter
        self.progress = _Bars(
            self,
            console=self.console,
            transient=not self._notebook,
            auto_refresh=not self._notebook,
            refresh_per_second=TERMINAL_REDRAWS,
        )
        self._overall: TaskID | None = None
        self._tasks: dict[int, TaskID] = {}
        #: Per data set in flight, when its answers were first drawn (run seconds) and how many.
        self._first: dict[int, tuple[float, int]] = {}
        #: The run's limit of requests in flight, as its bar shows it ("" until told).
        self._limit = ""
        #: The notebook output the bars are drawn in (an IPython ``DisplayHandle``), and when.
        self._shown: Any = None
        self._drawn = 0.0
        if not self._notebook:  # an answer is only counted: rich's thread draws
            self.target_done = self.tracker.target_done  # type: ignore[method-assign]

    def __enter__(self) -> RichProgress:
        if self._notebook:
            from IPython.display import display

            self._shown = display(self.progress, display_id=True)  # type: ignore[no-untyped-call]
        else:
            self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def update(self, tasks: Iterable[Task]) -> None:
        """Bring the bars' figures up to date from the tracker (called as they are drawn)."""
        now = self.tracker.snapshot()
        for task in tasks:
            data_set = task.fields.get("data_set")
            if data_set is None:
                task.description = f"{now.finished:,}/{now.data_sets:,} sets"
                task.total, task.completed = now.total, now.done
                about = "~" if now.estimated else ""
                task.fields.update(_figures(now.done, now.total, now.rate, now.eta, about))
                task.fields.update(retries=now.retries, failures=now.failures, limit=self._limit)
                continue
            counts = self.tracker.sets.get(data_set)
            if counts is None:
                continue
            # Its rate from the first drawing that saw answers of this run: a data set prepared
            # ahead waits for its turn before its first request goes out.
            if counts.done > counts.resumed:
                self._first.setdefault(data_set, (now.elapsed, counts.done))
            since, before = self._first.get(data_set, (now.elapsed, counts.done))
            seconds = now.elapsed - since
            rate = (counts.done - before) / seconds if seconds >= 1 else None
            eta = (counts.targets - counts.done) / rate if rate else None
            task.completed = counts.done
            task.fields.update(_figures(counts.done, counts.targets, rate, eta))
            task.fields.update(retries=counts.retries, failures=counts.failures)

    def _redraw(self, *, now: bool = True) -> None:
        """Draw the notebook's bars again (at most every ``NOTEBOOK_REDRAW`` s unless ``now``)."""
        if self._shown is not None and (now or time.monotonic() - self._drawn >= NOTEBOOK_REDRAW):
            self._drawn = time.monotonic()
            self._shown.update(self.progress)

    def _print(self, line: str) -> None:
        """A line above a terminal's bars, or below a notebook's."""
        self.progress.console.print(line, highlight=False)

    def planned(self, complete: Sequence[int], targets: Mapping[int, int]) -> None:
        self.tracker.planned(complete, targets)

    def started(self, data_sets: Sequence[int]) -> None:
        self.tracker.started(data_sets)
        self._overall = self._add("", None, 0)
        self._redraw()

    def _add(self, description: str, total: int | None, done: int, **fields: Any) -> TaskID:
        figures = _figures(done, total, None, None)
        return self.progress.add_task(
            description,
            total=total,
            completed=done,
            retries=0,
            failures=0,
            limit="",
            **figures,
            **fields,
        )

    def workers_started(self, workers: int, concurrency: Concurrency, rate: float | None) -> None:
        self._print(describe_workers(workers, concurrency, rate))

    def data_set_waiting(self, data_set: int, holder: str) -> None:
        self._print(describe_waiting(data_set, holder))

    def repairing(self, data_set: int, damage: str, remedy: str) -> None:
        self._print(describe_repair(data_set, damage, remedy))

    def data_set_started(self, data_set: int, targets: int, resumed: int) -> None:
        self.tracker.data_set_started(data_set, targets, resumed)
        self._tasks[data_set] = self._add(str(data_set), targets, resumed, data_set=data_set)
        self._redraw()

    def target_done(self, data_set: int, ok: bool) -> None:
        self.tracker.target_done(data_set, ok)
        self._redraw(now=False)

    def limit_changed(self, limit: int) -> None:
        self._limit = f"{limit:>4} at once"
        self._redraw(now=False)

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        self.tracker.retry(data_set, url, error, wait)
        if self.verbose:
            self._print(describe_retry(data_set, url, error, wait))

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        self.tracker.target_failed(data_set, rank, error)
        if self.verbose:
            self._print(describe_failure(data_set, rank, error))

    def data_set_done(self, result: DataSetResult) -> None:
        self.tracker.data_set_done(result)
        task = self._tasks.pop(result.data_set, None)
        if task is not None:
            self.progress.remove_task(task)
        self._first.pop(result.data_set, None)
        self._redraw()
        if not result.skipped:
            self._print(describe(result))

    def finished(self, results: Sequence[DataSetResult], seconds: float) -> None:
        self._redraw()
        self.progress.stop()
        if any(not r.skipped for r in results):
            self.console.print(result_table(results))
            if more := rest(results):
                self.console.print(more, highlight=False, soft_wrap=True)
        self.console.print(f"asyncdl: {describe_run(results, seconds)}", highlight=False)


#: The order of the table's rows: what needs attention first.
_ORDER = {"failed": 0, "incomplete": 1, "ok": 2}


def _shown(results: Sequence[DataSetResult]) -> list[DataSetResult]:
    """The table's rows: failures first, then the others in run order, ``TABLE_ROWS`` at most;
    data sets complete before the run are left out."""
    fetched = [r for r in results if not r.skipped]
    return sorted(fetched, key=lambda r: _ORDER[r.status])[:TABLE_ROWS]


def result_table(results: Sequence[DataSetResult]) -> Table:
    """The data sets of a run, failures first, at most ``TABLE_ROWS`` of them."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    columns = ("data set", "status", "targets", "lines", "requests", "retries", "failed")
    for column in (*columns, "MB", "s"):
        table.add_column(column, justify="left" if column == "status" else "right", no_wrap=True)
    for r in _shown(results):
        numbers = (r.targets, r.lines, r.requests, r.retries, r.failures)
        table.add_row(
            str(r.data_set),
            r.status,
            *map(str, numbers),
            f"{r.bytes / 1e6:.1f}",
            f"{r.seconds:.1f}",
        )
    return table


def rest(results: Sequence[DataSetResult]) -> str:
    """Where the data sets that the table leaves out are told of ("" if it has them all)."""
    left = sum(not r.skipped for r in results) - len(_shown(results))
    if not left:
        return ""
    out = Path(results[0].directory).parent if results[0].directory else Path("OUT")
    return (
        f"... and {left:,} more data sets: each in {out}/<id>/summary.json; "
        f"asyncdl status {out} sums them up"
    )
