"""What a run reports: one ``DataSetResult`` per data set fetched, one ``Survey`` per data set
counted by a dry run, one ``Verdict`` per data set verified. Plain data at the bottom of the
package: everything imports it, it imports nothing of asyncdl's."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass
class DataSetResult:
    """How one data set went; also written to ``OUT/<id>/summary.json``."""

    data_set: int
    complete: bool
    targets: int = 0
    lines: int = 0
    requests: int = 0
    retries: int = 0
    failures: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    directory: str = ""
    #: Targets already answered by an earlier, interrupted run of the same command.
    resumed: int = 0
    #: Already complete from an earlier run: nothing was requested.
    skipped: bool = False
    #: Skipped, its final files having been checked against what summary.json records of them.
    verified: bool = False
    #: Left to another process that holds the data set: who it is (pid, host, since when).
    held_by: str | None = None

    @property
    def status(self) -> str:
        """``ok``, ``skipped`` (complete already), ``incomplete`` (some targets failed),
        ``failed``, or ``busy`` (left to another process that holds it: ``held_by`` says which)."""
        if self.skipped:
            return "skipped"
        if self.held_by is not None:
            return "busy"
        if self.complete:
            return "ok"
        return "incomplete" if self.targets else "failed"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


@dataclass(frozen=True)
class Survey:
    """What fetching a data set would take: its targets, and its time at the run's pace."""

    data_set: int
    targets: int = 0
    injection_voxels: int = 0
    #: ``targets`` at the requests a second the whole run can expect (``planning.Forecast.rate``).
    estimate_seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found in one data set's folder: its final files ``verified`` against their
    SHA-256, ``damaged`` (marked so that the next fetch repairs it), ``unfinished`` (its fetch
    has not completed: nothing to verify yet), or ``busy`` (another process holds it, a fetch
    perhaps in the middle of writing it: not checked). ``problem`` says what, in a phrase."""

    data_set: int
    status: Literal["verified", "damaged", "unfinished", "busy"]
    problem: str = ""
