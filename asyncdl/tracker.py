"""Where a run stands: data sets and targets done, the run's whole total, its rate and time left.

``RunTracker`` listens to a run's events and counts; the display, the heartbeat lines and the JSON
progress events read its ``snapshot``. The total covers every data set of the run from the start:
a data set whose volumes are not in yet counts the targets an earlier run found for it (its
run.json) or a dry run counted from its grids (recorded beside them in the cache), else the mean of
those known, and the total is marked as an estimate until every data set's targets are known. The
rate is that of the answers of the last ``RATE_WINDOW`` seconds, and the time left is what remains
at that rate. Counting a target costs two additions: it happens
millions of times in a whole-atlas run, and the display reads the counts only when it draws.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .events import Events
from .results import DataSetResult

#: Seconds of answers the rate is taken over: long enough to smooth a data set's start and end.
RATE_WINDOW = 60.0


@dataclass(frozen=True)
class Snapshot:
    """A run's progress at one moment."""

    data_sets: int
    #: Data sets finished (whatever their status), of which ``skipped`` were complete already.
    finished: int
    skipped: int
    #: Targets answered or failed for good, those an earlier run answered included.
    done: int
    #: Every data set's targets but those complete already; estimated where ``estimated``.
    total: int | None
    estimated: bool
    #: Answers a second, over the last ``RATE_WINDOW`` seconds (None before two readings).
    rate: float | None
    #: Seconds left at that rate.
    eta: float | None
    retries: int
    failures: int
    #: Seconds since the run began.
    elapsed: float


class _Set:
    """Counts of one data set in flight."""

    __slots__ = ("done", "failures", "resumed", "retries", "targets")

    def __init__(self, targets: int, done: int) -> None:
        self.targets = targets
        self.done = self.resumed = done
        self.retries = 0
        self.failures = 0


class RunTracker(Events):
    """Counts a run's progress from its events; ``snapshot()`` says where it stands."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.began = clock()
        #: The data sets in flight (volumes in, not finished), by id.
        self.sets: dict[int, _Set] = {}
        self.done = self.retries = self.failures = 0
        self._data_sets = 0
        self._finished = self._skipped = 0
        # Data sets whose targets are not known yet, and what an earlier run found for some.
        self._unknown: set[int] = set()
        self._expected: dict[int, int] = {}
        self._expected_sum = 0
        self._complete: frozenset[int] = frozenset()
        # Targets of the data sets whose targets are known (in flight or finished).
        self._known = self._known_sets = 0
        self._resumed = 0  # answers of earlier runs, which are no part of the rate
        self._readings: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()  # a display may read from its own thread

    def planned(self, complete: Sequence[int], targets: Mapping[int, int]) -> None:
        self._complete = frozenset(complete)
        self._expected = dict(targets)

    def started(self, data_sets: Sequence[int]) -> None:
        self.began = self.clock()
        self._data_sets = len(data_sets)
        self._unknown = set(data_sets) - self._complete
        self._expected = {ds: n for ds, n in self._expected.items() if ds in self._unknown}
        self._expected_sum = sum(self._expected.values())

    def data_set_started(self, data_set: int, targets: int, resumed: int) -> None:
        self._forget(data_set)
        self._known += targets
        self._known_sets += 1
        self.done += resumed
        self._resumed += resumed
        self.sets[data_set] = _Set(targets, resumed)
        self._read(self.clock())

    def _forget(self, data_set: int) -> None:
        """``data_set`` is no longer one whose targets are to be estimated."""
        self._unknown.discard(data_set)
        self._expected_sum -= self._expected.pop(data_set, 0)

    def target_done(self, data_set: int, ok: bool) -> None:
        self.done += 1
        counts = self.sets.get(data_set)
        if counts is not None:
            counts.done += 1

    def retry(self, data_set: int, url: str, error: str, wait: float) -> None:
        self.retries += 1
        if (counts := self.sets.get(data_set)) is not None:
            counts.retries += 1

    def target_failed(self, data_set: int, rank: int, error: str) -> None:
        self.failures += 1
        if (counts := self.sets.get(data_set)) is not None:
            counts.failures += 1

    def data_set_done(self, result: DataSetResult) -> None:
        self._forget(data_set := result.data_set)
        self._finished += 1
        self._skipped += result.skipped
        if self.sets.pop(data_set, None) is None and not result.skipped:
            # Finished without starting (it could not be prepared): its targets are known as 0.
            self._known_sets += 1

    def total(self) -> tuple[int | None, bool]:
        """The run's targets, and whether that is an estimate; None if nothing is known yet."""
        unknown = len(self._unknown) - len(self._expected)
        if not unknown:
            return self._known + self._expected_sum, bool(self._expected)
        sets = self._known_sets + len(self._expected)
        if not sets:
            return None, True
        mean = (self._known + self._expected_sum) / sets
        return self._known + self._expected_sum + round(mean * unknown), True

    def _read(self, now: float) -> tuple[float, int, float, int]:
        """Note the answers so far; return them and the oldest reading within the window."""
        answers = self.done - self._resumed
        with self._lock:
            readings = self._readings
            readings.append((now, answers))
            while len(readings) > 2 and readings[1][0] <= now - RATE_WINDOW:
                readings.popleft()
            then, before = readings[0]
        return now, answers, then, before

    def snapshot(self) -> Snapshot:
        """Where the run stands now (also a reading of the rate)."""
        now, answers, then, before = self._read(self.clock())
        rate = (answers - before) / (now - then) if now > then and answers > before else None
        done = self.done
        total, estimated = self.total()
        eta = None
        if total is not None and rate:
            eta = max(total - done, 0) / rate
        return Snapshot(
            data_sets=self._data_sets,
            finished=self._finished,
            skipped=self._skipped,
            done=done,
            total=total,
            estimated=estimated,
            rate=rate,
            eta=eta,
            retries=self.retries,
            failures=self.failures,
            elapsed=now - self.began,
        )
