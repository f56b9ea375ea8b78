"""The live terminal display (rich): one bar for the run, one per data set in flight, then a table.

Used when stderr is a terminal; ``events.LineReporter`` or ``JsonReporter`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

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
from .events import Events, describe, describe_run, describe_workers
from .results import DataSetResult


class RichProgress(Events):
    """Bars for the run and each active data set: done/total, requests/s, retries, failures, ETA;
    and on the run's bar, how many requests may be in flight (the limit of ``-c``)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
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
            transient=True,
        )
        self._overall: TaskID | None = None
        self._tasks: dict[int, TaskID] = {}
        self._data_sets = 0
        self._done = 0

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def _task(self, task_id: TaskID) -> Task:
        return next(task for task in self.progress.tasks if task.id == task_id)

    def started(self, data_sets: Sequence[int]) -> None:
        self._data_sets = len(data_sets)
        self._overall = self.progress.add_task(
            f"0/{self._data_sets} sets", total=None, rate="-", retries=0, failures=0, limit=""
        )

    def workers_started(self, workers: int, concurrency: Concurrency, rate: float | None) -> None:
        self.progress.console.print(describe_workers(workers, concurrency, rate), highlight=False)

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

    def _each(self, data_set: int) -> list[TaskID]:
        return [t for t in (self._tasks.get(data_set), self._overall) if t is not None]

    def target_done(self, data_set: int, ok: bool) -> None:
        for task_id in self._each(data_set):
            self.progress.advance(task_id)
            speed = self._task(task_id).speed
            self.progress.update(task_id, rate=f"{speed:.0f}" if speed else "-")

    def _bump(self, data_set: int, field: str) -> None:
        for task_id in self._each(data_set):
            fields = self._task(task_id).fields
            fields[field] += 1  # rich reads the fields when it draws

    def limit_changed(self, limit: int) -> None:
        if self._overall is not None:
            self.progress.update(self._overall, limit=f"{limit:>4} at once")

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        self._bump(data_set, "retries")

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        self._bump(data_set, "failures")

    def data_set_done(self, result: DataSetResult) -> None:
        task = self._tasks.pop(result.data_set, None)
        if task is not None:
            self.progress.remove_task(task)
        self._done += 1
        if self._overall is not None:
            self.progress.update(self._overall, description=f"{self._done}/{self._data_sets} sets")
        self.progress.console.print(describe(result), highlight=False)

    def finished(self, results: Sequence[DataSetResult], seconds: float) -> None:
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
