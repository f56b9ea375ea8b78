"""What a run tells the outside world while it works: the ``Events`` hooks, and the reporters.

The pipeline calls these hooks; it never prints. ``Events`` does nothing, so a caller overrides only
what it wants. ``LogReporter`` turns them into records of the ``asyncdl`` logger (every run has
one), ``LineReporter`` into a line per finished data set (for logs and pipes), ``JsonReporter``
into one JSON object per event (for batch systems); both have a heartbeat (``progress``), which
the command line calls every --progress-interval seconds with a ``tracker.RunTracker``'s
snapshot. The live display is in ``progress``. ``Tee`` hands each event to several of them.
The words of a line are the ``describe`` functions', whoever shows it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from .config import AUTO, Concurrency
from .results import DataSetResult

if TYPE_CHECKING:
    from .tracker import Snapshot


class Events:
    """Hooks called by a run, all on the event loop; keep them quick. The default does nothing."""

    def planned(self, complete: Sequence[int], targets: Mapping[int, int]) -> None:
        """Before the run begins, what is known of it: these data sets are ``complete`` already
        (they will be skipped), and these others have ``targets``, as an earlier run found them
        (their run.json) or counted from their grids in the cache (a dry run's)."""

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

    def data_set_waiting(self, data_set: int, holder: str) -> None:
        """Another process (``holder`` says which, and what it is doing) holds the data set; this
        run waits for it (``FetchOptions.wait``) and does the others meanwhile."""

    def repairing(self, data_set: int, damage: str, remedy: str) -> None:
        """A data set's folder was found damaged (``damage``: a final file missing or of the wrong
        size, run.json or summary.json unreadable, answers that do not belong to its targets);
        ``remedy`` says how it is repaired (rebuilt from the journal, or fetched again)."""

    def data_set_started(self, data_set: int, targets: int, resumed: int) -> None:
        """A data set's volumes are in: ``targets`` requests to make, ``resumed`` already done."""

    def target_done(self, data_set: int, ok: bool) -> None:
        """One target answered (``ok``) or failed for good."""

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        """A request failed and will be tried again after ``wait`` seconds."""

    def redirected(self, url: str, location: str) -> None:
        """A request for ``url`` was redirected to ``location``, which is asked next (at most a
        few hops; never from https to plain http, which stops the run instead)."""

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
    if result.status == "busy":
        return head + f"BUSY: held by {result.held_by}; left to that process"
    return (
        head + f"{'ok' if result.complete else 'INCOMPLETE'}: {result.targets} targets, "
        f"{result.lines} lines, {result.requests} requests, {result.retries} retries, "
        f"{result.failures} failures, {result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s"
        + (f", resumed after {result.resumed} targets" if result.resumed else "")
        + (f" ({result.error})" if result.error else "")
    )


def describe_limit(limit: int) -> str:
    """One line saying how many requests may be in flight."""
    return f"up to {limit} requests in flight"


def describe_retry(data_set: int, url: str, error: str, wait: float) -> str:
    """One line for a request that failed and will be tried again."""
    return f"{data_set}: retry in {wait:.1f} s after {error} ({url})"


def describe_redirect(url: str, location: str) -> str:
    """One line for a redirect followed."""
    return f"redirected: {url} -> {location}"


def describe_failure(data_set: int, rank: int, error: str) -> str:
    """One line for a target that failed for good."""
    return f"{data_set}: target {rank} failed: {error}"


def describe_waiting(data_set: int, holder: str) -> str:
    """One line saying that a run waits for another process to finish a data set."""
    return f"{data_set}: waiting for {holder}"


def describe_repair(data_set: int, damage: str, remedy: str) -> str:
    """One line saying what was damaged in a data set's folder and how it is repaired."""
    return f"{data_set}: repairing ({damage}): {remedy}"


def describe_workers(workers: int, concurrency: Concurrency, rate: float | None) -> str:
    """One line saying how a run is spread over a Dask cluster."""
    head = f"asyncdl: {workers} Dask workers, each with"
    if concurrency == AUTO and rate is None:
        return f"{head} -c auto (a limit of its own, found from the server's answers)"
    each = f"-c {concurrency}" + (f", --rate {rate:g}" if rate is not None else "")
    return f"{head} {each} to start (the shares follow the work)"


def describe_start(data_sets: int, complete: int) -> str:
    """One line as a run begins: how many data sets, how many of them complete already."""
    already = f" ({complete:,} of them complete already)" if complete else ""
    return f"asyncdl: starting {data_sets:,} data set{'s' if data_sets != 1 else ''}{already}"


def describe_run(results: Sequence[DataSetResult], seconds: float) -> str:
    """One line for the whole run (a rerun with nothing to do says only that)."""
    skipped = sum(r.skipped for r in results)
    if results and skipped == len(results):
        verified = sum(r.verified for r in results)
        return f"{skipped:,} data set{'s' if skipped != 1 else ''} already complete" + (
            f" ({verified:,} verified)" if verified else ""
        )
    done = sum(r.complete for r in results)
    busy = sum(r.status == "busy" for r in results)
    requests = sum(r.requests for r in results)
    already = f" ({skipped:,} of them already)" if skipped else ""
    return (
        f"{done} of {len(results)} data sets complete{already}"
        + (f" ({busy} left to another process)" if busy else "")
        + f", {sum(r.lines for r in results)} lines, "
        f"{requests} requests in {seconds:.1f} s ({requests / max(seconds, 1e-9):.0f}/s)"
    )


def clock(seconds: float) -> str:
    """``h:mm:ss``."""
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02}:{s:02}"


def size(n: float) -> str:
    """Bytes in kB, MB, GB or TB (powers of 1000, as ``du --si`` and disk makers count)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def describe_progress(now: Snapshot) -> str:
    """The heartbeat: data sets and targets done of all, the rate and the time left."""
    about = "~" if now.estimated else ""
    total = f"{about}{now.total:,}" if now.total is not None else "?"
    share = f" ({100 * now.done / now.total:.0f}%)" if now.total else ""
    rate = f"{now.rate:,.0f}/s" if now.rate is not None else "-/s"
    eta = f"ETA {about}{clock(now.eta)}" if now.eta is not None else "ETA -"
    return (
        f"asyncdl: {now.finished:,}/{now.data_sets:,} data sets, {now.done:,}/{total} targets"
        f"{share}, {rate}, {now.retries:,} retries, {now.failures:,} failed, {eta}, "
        f"{clock(now.elapsed)} elapsed"
    )


#: The names of the ``Events`` hooks.
HOOKS = tuple(name for name, value in vars(Events).items() if callable(value) and name[0] != "_")


class Tee(Events):
    """Each event handed to every one of ``listeners``, in order."""

    def __init__(self, *listeners: Events) -> None:
        self.listeners = listeners
        # Per hook, only the listeners that do something with it: the hooks of every target
        # are called millions of times in a whole-atlas run.
        self._calls = {
            name: [
                getattr(listener, name)
                for listener in listeners
                if getattr(type(listener), name) is not getattr(Events, name)
            ]
            for name in HOOKS
        }


def _forward(name: str) -> Callable[..., None]:
    def hook(self: Tee, *args: Any, **kwargs: Any) -> None:
        for call in self._calls[name]:
            call(*args, **kwargs)

    hook.__name__ = hook.__qualname__ = name
    hook.__doc__ = getattr(Events, name).__doc__
    return hook


for _name in HOOKS:
    setattr(Tee, _name, _forward(_name))


#: The package's logger; the library adds no handler to it but a ``NullHandler`` (``__init__``).
log = logging.getLogger("asyncdl")


class LogReporter(Events):
    """Events as records of the ``asyncdl`` logger: INFO per finished data set and for the run,
    WARNING per failure (a target that failed for good, a data set not complete), DEBUG per retry,
    per data set started and per change of the limit of requests in flight. Records about one data
    set carry it as ``record.data_set``."""

    def __init__(self) -> None:
        self._complete = 0

    def planned(self, complete: Sequence[int], targets: Mapping[int, int]) -> None:
        self._complete = len(complete)

    def started(self, data_sets: Sequence[int]) -> None:
        if self._complete < len(data_sets):  # a rerun with nothing to do says only that
            log.info(describe_start(len(data_sets), self._complete).removeprefix("asyncdl: "))

    def workers_started(self, workers: int, concurrency: Concurrency, rate: float | None) -> None:
        log.info(describe_workers(workers, concurrency, rate))

    def shares_changed(self, shares: Mapping[str, int]) -> None:
        log.debug(
            "requests in flight by Dask worker: %s",
            ", ".join(f"{w} {n}" for w, n in shares.items()),
        )

    def limit_changed(self, limit: int) -> None:
        log.debug(describe_limit(limit))

    def data_set_waiting(self, data_set: int, holder: str) -> None:
        log.info(describe_waiting(data_set, holder), extra={"data_set": data_set})

    def data_set_started(self, data_set: int, targets: int, resumed: int) -> None:
        log.debug(
            "%s: %d targets, %d answered before",
            data_set,
            targets,
            resumed,
            extra={"data_set": data_set},
        )

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(describe_retry(data_set, url, error, wait), extra={"data_set": data_set})

    def redirected(self, url: str, location: str) -> None:
        log.info(describe_redirect(url, location))

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        log.warning(describe_failure(data_set, rank, error), extra={"data_set": data_set})

    def repairing(self, data_set: int, damage: str, remedy: str) -> None:
        log.warning(describe_repair(data_set, damage, remedy), extra={"data_set": data_set})

    def data_set_done(self, result: DataSetResult) -> None:
        # Complete before: a rerun of the whole atlas would log thousands of these at INFO.
        level = logging.DEBUG if result.skipped else logging.INFO
        level = level if result.complete else logging.WARNING
        log.log(level, describe(result), extra={"data_set": result.data_set})

    def finished(self, results: Sequence[DataSetResult], seconds: float) -> None:
        log.info(describe_run(results, seconds))


class LineReporter(Events):
    """A line as the run begins, one per data set finished (but those complete already) and one
    for the run, on ``stream`` (stderr by default); a rerun with nothing to do prints only the
    last. ``verbose`` adds one per retry, per redirect, per target that failed for good and per
    change of the limit of requests in flight; ``progress`` is the heartbeat."""

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self._complete = 0

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def planned(self, complete: Sequence[int], targets: Mapping[int, int]) -> None:
        self._complete = len(complete)

    def started(self, data_sets: Sequence[int]) -> None:
        if self._complete < len(data_sets):
            self._print(describe_start(len(data_sets), self._complete))

    def progress(self, now: Snapshot) -> None:
        self._print(describe_progress(now))

    def workers_started(self, workers: int, concurrency: Concurrency, rate: float | None) -> None:
        self._print(describe_workers(workers, concurrency, rate))

    def limit_changed(self, limit: int) -> None:
        if self.verbose:
            self._print(describe_limit(limit))

    def data_set_waiting(self, data_set: int, holder: str) -> None:
        self._print(describe_waiting(data_set, holder))

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        if self.verbose:
            self._print(describe_retry(data_set, url, error, wait))

    def redirected(self, url: str, location: str) -> None:
        if self.verbose:
            self._print(describe_redirect(url, location))

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        if self.verbose:
            self._print(describe_failure(data_set, rank, error))

    def repairing(self, data_set: int, damage: str, remedy: str) -> None:
        self._print(describe_repair(data_set, damage, remedy))

    def data_set_done(self, result: DataSetResult) -> None:
        if not result.skipped:
            self._print(describe(result))

    def finished(self, results: Sequence[DataSetResult], seconds: float) -> None:
        self._print(f"asyncdl: {describe_run(results, seconds)}")


class JsonReporter(Events):
    """One JSON object per line for each event but single target answers (too many to log)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._complete: list[int] = []

    def _emit(self, event: str, **fields: Any) -> None:
        line = orjson.dumps({"event": event, "time": round(time.time(), 3), **fields})
        self.stream.write(line.decode() + "\n")
        self.stream.flush()

    def planned(self, complete: Sequence[int], targets: Mapping[int, int]) -> None:
        self._complete = sorted(complete)

    def started(self, data_sets: Sequence[int]) -> None:
        self._emit("start", data_sets=list(data_sets), complete=self._complete)

    def progress(self, now: Snapshot) -> None:
        """The heartbeat, as a ``progress`` event."""
        self._emit("progress", **{k: _rounded(v) for k, v in asdict(now).items()})

    def workers_started(self, workers: int, concurrency: Concurrency, rate: float | None) -> None:
        self._emit("workers", workers=workers, concurrency=concurrency, rate=rate)

    def shares_changed(self, shares: Mapping[str, int]) -> None:
        self._emit("shares", shares=dict(shares))

    def limit_changed(self, limit: int) -> None:
        self._emit("limit", limit=limit)

    def data_set_waiting(self, data_set: int, holder: str) -> None:
        self._emit("data_set_wait", data_set=data_set, holder=holder)

    def repairing(self, data_set: int, damage: str, remedy: str) -> None:
        self._emit("repair", data_set=data_set, damage=damage, remedy=remedy)

    def data_set_started(self, data_set: int, targets: int, resumed: int) -> None:
        self._emit("data_set_start", data_set=data_set, targets=targets, resumed=resumed)

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        self._emit("retry", data_set=data_set, url=url, error=error, wait=round(wait, 3))

    def redirected(self, url: str, location: str) -> None:
        self._emit("redirect", url=url, location=location)

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        self._emit("failure", data_set=data_set, rank=rank, error=error)

    def data_set_done(self, result: DataSetResult) -> None:
        self._emit("data_set_done", **result.as_dict())

    def finished(self, results: Sequence[DataSetResult], seconds: float) -> None:
        self._emit(
            "summary",
            data_sets=len(results),
            complete=sum(r.complete for r in results),
            busy=sum(r.status == "busy" for r in results),
            lines=sum(r.lines for r in results),
            requests=sum(r.requests for r in results),
            retries=sum(r.retries for r in results),
            failures=sum(r.failures for r in results),
            skipped=sum(r.skipped for r in results),
            verified=sum(r.verified for r in results),
            seconds=round(seconds, 3),
        )


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value
