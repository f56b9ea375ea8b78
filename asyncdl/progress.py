"""The live display (rich): one bar for the run, one per data set in flight, then a table.

The command line uses it when stderr is a terminal (``events.LineReporter`` or ``JsonReporter``
otherwise), ``fetch(progress=True)`` in a terminal or a Jupyter notebook.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .config import Concurrency
from .events import (
    Events,
    describe,
    describe_failure,
    describe_repair,
    describe_retry,
    describe_run,
    describe_workers,
)
from .results import DataSetResult

#: Seconds between two redraws of a notebook's bars (each is a message to the browser).
NOTEBOOK_REDRAW = 0.25


class RichProgress(Events):
    """Bars for the run and each active data set: done/total, requests/s, retries, failures, ETA;
    on the run's bar, how many requests may be in flight (the limit of ``-c``).

    In a terminal the bars are redrawn in place and go at the end, for the table. In Jupyter they
    are one output of the cell, redrawn in place through its display id (rich's own live display
    needs ipywidgets there), and stay, with the table below them. ``verbose`` also prints a line
    per retry and per target that failed for good.
    """

    def __init__(self, console: Console | None = None, *, verbose: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.verbose = verbose
        self._notebook = self.console.is_jupyter
        self.progress = Progress(
            TextColumn("{task.description:>12}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7} req/s"),
            TextColumn("{task.fields[retries]:>4} retries"),
            TextColumn("{task.fields[failures]:>3} failed"),
            TextColumn("{task.fields[limit]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=not self._notebook,
            auto_refresh=not self._notebook,
        )
        self._overall: TaskID | None = None
        self._tasks: dict[int, TaskID] = {}
        self._data_sets = 0
        self._done = 0
        #: The notebook output the bars are drawn in (an IPython ``DisplayHandle``), and when.
        self._shown: Any = None
        self._drawn = 0.0

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

    def _redraw(self, *, now: bool = True) -> None:
        """Draw the notebook's bars again (at most every ``NOTEBOOK_REDRAW`` s unless ``now``)."""
        if self._shown is not None and (now or time.monotonic() - self._drawn >= NOTEBOOK_REDRAW):
            self._drawn = time.monotonic()
            self._shown.update(self.progress)

    def _print(self, line: str) -> None:
        """A line above a terminal's bars, or below a notebook's."""
        self.progress.console.print(line, highlight=False)

    def _task(self, task_id: TaskID) -> Task:
        return next(task for task in self.progress.tasks if task.id == task_id)

    def started(self, data_sets: Sequence[int]) -> None:
        self._data_sets = len(data_sets)
        self._overall = self.progress.add_task(
            f"0/{self._data_sets} sets", total=None, rate="-", retries=0, failures=0, limit=""
        )
        self._redraw()

    def workers_started(self, workers: int, concurrency: Concurrency, rate: float | None) -> None:
        self._print(describe_workers(workers, concurrency, rate))

    def repairing(self, data_set: int, damage: str, remedy: str) -> None:
        self._print(describe_repair(data_set, damage, remedy))

    def data_set_started(self, data_set: int, targets: int, resumed: int) -> None:
        self._tasks[data_set] = self.progress.add_task(
            str(data_set),
            total=targets,
            completed=resumed,
            rate="-",
            retries=0,
            failures=0,
            limit="",
        )
        if self._overall is not None:
            total = self._task(self._overall).total or 0
            self.progress.update(self._overall, total=total + targets, advance=resumed)
        self._redraw()

    def _each(self, data_set: int) -> list[TaskID]:
        return [t for t in (self._tasks.get(data_set), self._overall) if t is not None]

    def target_done(self, data_set: int, ok: bool) -> None:
        for task_id in self._each(data_set):
            self.progress.advance(task_id)
            speed = self._task(task_id).speed
            self.progress.update(task_id, rate=f"{speed:.0f}" if speed else "-")
        self._redraw(now=False)

    def _bump(self, data_set: int, field: str) -> None:
        for task_id in self._each(data_set):
            fields = self._task(task_id).fields
            fields[field] += 1  # rich reads the fields when it draws

    def limit_changed(self, limit: int) -> None:
        if self._overall is not None:
            self.progress.update(self._overall, limit=f"{limit:>4} at once")

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        self._bump(data_set, "retries")
        if self.verbose:
            self._print(describe_retry(data_set, url, error, wait))

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        self._bump(data_set, "failures")
        if self.verbose:
            self._print(describe_failure(data_set, rank, error))

    def data_set_done(self, result: DataSetResult) -> None:
        task = self._tasks.pop(result.data_set, None)
        if task is not None:
            self.progress.remove_task(task)
        self._done += 1
        if self._overall is not None:
            self.progress.update(self._overall, description=f"{self._done}/{self._data_sets} sets")
        self._redraw()
        self._print(describe(result))

    def finished(self, results: Sequence[DataSetResult], seconds: float) -> None:
        self._redraw()
        self.progress.stop()
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        columns = ("data set", "status", "targets", "lines", "requests", "retries", "failed")
        for column in (*columns, "MB", "s"):
            table.add_column(
                column, justify="left" if column == "status" else "right", no_wrap=True
            )
        for r in results:
            numbers = (r.targets, r.lines, r.requests, r.retries, r.failures)
            table.add_row(
                str(r.data_set),
                r.status,
                *map(str, numbers),
                f"{r.bytes / 1e6:.1f}",
                f"{r.seconds:.1f}",
            )
        self.console.print(table)
        self.console.print(f"asyncdl: {describe_run(results, seconds)}", highlight=False)
