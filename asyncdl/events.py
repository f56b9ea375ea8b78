"""What a run tells the outside world while it works: the ``Events`` hooks, and two plain reporters.

The pipeline calls these hooks; it never prints. ``Events`` does nothing, so a caller overrides only
what it wants. ``LineReporter`` writes one line per finished data set (for logs and pipes),
``JsonReporter`` one JSON object per event (for batch systems); the live terminal display is in
``progress``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import orjson

from .config import AUTO, Concurrency
from .results import DataSetResult


class Events:
    """Hooks called by a run, all on the event loop; keep them quick. The default does nothing."""

    def started(self, data_sets: Sequence[int]) -> None:
        """The run begins, for these data sets."""

    def workers_started(self, workers: int, concurrency: Concurrency, rate: float | None) -> None:
        """The run is spread over ``workers`` Dask workers, each with this share of -c and --rate
        to start with; ``"auto"``: each finds its own limit (with a share of --rate, if given)."""

    def shares_changed(self, shares: Mapping[str, int]) -> None:
        """How the requests in flight are now shared among the Dask workers (by address): a fixed
        -c as it follows the work, or under -c auto each worker's own limit."""

    def limit_changed(self, limit: int) -> None:
        """Up to ``limit`` requests may be in flight now: ``-c N`` (told once), or what ``-c auto``
        has learnt of the server (told when it changes, at most every second)."""

    def data_set_started(self, data_set: int, targets: int, resumed: int) -> None:
        """A data set's volumes are in: ``targets`` requests to make, ``resumed`` already done."""

    def target_done(self, data_set: int, ok: bool) -> None:
        """One target answered (``ok``) or failed for good."""

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        """A request failed and will be tried again after ``wait`` seconds."""

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        """A target failed for good; it is in ``failures.ndjson``."""

    def data_set_done(self, result: DataSetResult) -> None:
        """A data set is finished (complete, incomplete, failed or skipped)."""

    def finished(self, results: Sequence[DataSetResult], seconds: float) -> None:
        """The run is over."""


def describe(result: DataSetResult) -> str:
    """One line saying how a data set went."""
    head = f"{result.data_set}: "
    if result.status == "skipped":
        return head + f"already complete: {result.targets} targets, {result.lines} lines"
    if result.status == "failed":
        return head + f"FAILED: {result.error}"
    return (
        head + f"{'ok' if result.complete else 'INCOMPLETE'}: {result.targets} targets, "
        f"{result.lines} lines, {result.requests} requests, {result.retries} retries, "
        f"{result.failures} failures, {result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s"
        + (f", resumed after {result.resumed} targets" if result.resumed else "")
        + (f" ({result.error})" if result.error else "")
    )


def describe_workers(workers: int, concurrency: Concurrency, rate: float | None) -> str:
    """One line saying how a run is spread over a Dask cluster."""
    head = f"asyncdl: {workers} Dask workers, each with"
    if concurrency == AUTO and rate is None:
        return f"{head} -c auto (a limit of its own, found from the server's answers)"
    each = f"-c {concurrency}" + (f", --rate {rate:g}" if rate is not None else "")
    return f"{head} {each} to start (the shares follow the work)"


def describe_run(results: Sequence[DataSetResult], seconds: float) -> str:
    """One line for the whole run."""
    done = sum(r.complete for r in results)
    requests = sum(r.requests for r in results)
    return (
        f"{done} of {len(results)} data sets complete, {sum(r.lines for r in results)} lines, "
        f"{requests} requests in {seconds:.1f} s ({requests / max(seconds, 1e-9):.0f}/s)"
    )


class LineReporter(Events):
    """A line per finished data set and one for the run, on ``stream`` (stderr by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def workers_started(self, workers: int, concurrency: Concurrency, rate: float | None) -> None:
        print(describe_workers(workers, concurrency, rate), file=self.stream, flush=True)

    def data_set_done(self, result: DataSetResult) -> None:
        print(describe(result), file=self.stream, flush=True)

    def finished(self, results: Sequence[DataSetResult], seconds: float) -> None:
        print(f"asyncdl: {describe_run(results, seconds)}", file=self.stream, flush=True)


class JsonReporter(Events):
    """One JSON object per line for each event but single target answers (too many to log)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def _emit(self, event: str, **fields: Any) -> None:
        line = orjson.dumps({"event": event, "time": round(time.time(), 3), **fields})
        self.stream.write(line.decode() + "\n")
        self.stream.flush()

    def started(self, data_sets: Sequence[int]) -> None:
        self._emit("start", data_sets=list(data_sets))

    def workers_started(self, workers: int, concurrency: Concurrency, rate: float | None) -> None:
        self._emit("workers", workers=workers, concurrency=concurrency, rate=rate)

    def shares_changed(self, shares: Mapping[str, int]) -> None:
        self._emit("shares", shares=dict(shares))

    def limit_changed(self, limit: int) -> None:
        self._emit("limit", limit=limit)

    def data_set_started(self, data_set: int, targets: int, resumed: int) -> None:
        self._emit("data_set_start", data_set=data_set, targets=targets, resumed=resumed)

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        self._emit("retry", data_set=data_set, url=url, error=error, wait=round(wait, 3))

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        self._emit("failure", data_set=data_set, rank=rank, error=error)

    def data_set_done(self, result: DataSetResult) -> None:
        self._emit("data_set_done", **result.as_dict())

    def finished(self, results: Sequence[DataSetResult], seconds: float) -> None:
        self._emit(
            "summary",
            data_sets=len(results),
            complete=sum(r.complete for r in results),
            lines=sum(r.lines for r in results),
            requests=sum(r.requests for r in results),
            retries=sum(r.retries for r in results),
            failures=sum(r.failures for r in results),
            seconds=round(seconds, 3),
        )
