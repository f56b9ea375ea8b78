"""What a worker tells the client about a run: the message format, in one place.

A worker gathers its events in a ``Batch`` and sends ``Batch.encode()`` through Dask's event log
every ``worker.FLUSH_SECONDS`` (plain lists, which Dask's msgpack carries); the client reads it
back with ``Batch.decode``. One message per interval, however many answers it counts, and none
while nothing happens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Repair(NamedTuple):
    """A data set's folder was found damaged (``Events.repairing``): what, and what is done."""

    data_set: int
    damage: str
    remedy: str


class Waiting(NamedTuple):
    """A data set another process holds is waited for (``Events.data_set_waiting``)."""

    data_set: int
    holder: str


class Redirect(NamedTuple):
    """A redirect followed (``Events.redirected``)."""

    url: str
    location: str


class Started(NamedTuple):
    """A data set's volumes are in: ``targets`` to ask, ``resumed`` of them done already."""

    data_set: int
    targets: int
    resumed: int


class Retry(NamedTuple):
    data_set: int
    url: str
    error: str
    wait: float


class Failed(NamedTuple):
    data_set: int
    rank: int
    error: str


class Done(NamedTuple):
    """Targets of one data set answered (``ok``) and failed for good (``bad``) since the last batch."""

    ok: int
    bad: int


@dataclass
class Batch:
    """A worker's events since its last message."""

    #: The worker's address.
    worker: str = ""
    #: Its limit on requests in flight, if it changed (``Events.limit_changed``).
    limit: int | None = None
    waiting: list[Waiting] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    started: list[Started] = field(default_factory=list)
    done: dict[int, Done] = field(default_factory=dict)
    retries: list[Retry] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)

    def count(self, data_set: int, ok: bool) -> None:
        """One target of ``data_set`` answered (``ok``) or failed for good."""
        was = self.done.get(data_set, Done(0, 0))
        self.done[data_set] = Done(was.ok + ok, was.bad + (not ok))

    def __bool__(self) -> bool:
        return bool(
            self.limit is not None
            or self.waiting
            or self.repairs
            or self.started
            or self.done
            or self.retries
            or self.failed
            or self.redirects
        )

    def encode(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "limit": self.limit,
            "waiting": [list(w) for w in self.waiting],
            "repairs": [list(r) for r in self.repairs],
            "started": [list(s) for s in self.started],
            "done": [[data_set, ok, bad] for data_set, (ok, bad) in self.done.items()],
            "retries": [list(r) for r in self.retries],
            "failed": [list(f) for f in self.failed],
            "redirects": [list(r) for r in self.redirects],
        }

    @classmethod
    def decode(cls, message: Mapping[str, Any]) -> Batch:
        return cls(
            worker=message["worker"],
            limit=message["limit"],
            waiting=[Waiting(*w) for w in message["waiting"]],
            repairs=[Repair(*r) for r in message["repairs"]],
            started=[Started(*s) for s in message["started"]],
            done={data_set: Done(ok, bad) for data_set, ok, bad in message["done"]},
            retries=[Retry(*r) for r in message["retries"]],
            failed=[Failed(*f) for f in message["failed"]],
            redirects=[Redirect(*r) for r in message["redirects"]],
        )
