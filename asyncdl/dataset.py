"""One data set's whole life, from its id to ``OUT/<id>/data.json``.

    prepare:  decide (skip? refuse?) -> volumes -> targets -> decide (fresh or resume) -> open files
    fetch:    one spatial search per target still to do; each answer or failure is recorded at once
    finish:   data.json in the seed's order, summary.json, the brainrender file if asked

The pipeline (``pipeline``) decides when each step runs and shares one request queue among many
data sets; everything that concerns one data set is here. A data set that cannot be prepared, or
whose targets fail, is recorded as such and the run goes on; an error in ``ENDS_THE_RUN`` (the disk,
an untrusted server) ends the whole run instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .brainrender import has_brainrender, write_brainrender
from .errors import (
    ENDS_THE_RUN,
    AsyncdlError,
    FetchError,
    UsageError,
    VolumeError,
)
from .events import Events
from .fetcher import HttpClient, Tally
from .plan import RunPlan
from .responses import rows
from .results import DataSetResult
from .resume import Action, decide, manifest
from .sources import VolumeSource
from .store import DataSetStore, Progress, targets_digest
from .targets import Targets


@dataclass(frozen=True)
class RunContext:
    """What the data sets of a run share: the plan, and the live objects that carry it out."""

    plan: RunPlan
    client: HttpClient
    source: VolumeSource
    events: Events


def refuse_mixing(out: Path, data_set: int, params: Mapping[str, Any], restart: bool) -> None:
    """``UsageError`` if ``OUT/<id>`` holds results of other parameters (checked before any
    request of a run, so old and new results are never mixed)."""
    store = DataSetStore(out, data_set)
    decision = decide(store.read(), params, restart=restart)
    if decision.action is Action.REFUSE:
        raise UsageError(f"{store.dir}: {decision.reason}; rerun with --restart to start it over")


def explain(exc: BaseException) -> str:
    """An error as one line, with the URL it concerns."""
    if isinstance(exc, FetchError) and exc.url:
        return f"{exc} ({exc.url})"
    return str(exc)


class DataSet:
    """One data set being fetched: ``prepare``, then ``fetch_target`` for each rank it returns,
    ``wait`` for the last answer, ``finish``; ``close`` in any case."""

    def __init__(self, data_set: int, ctx: RunContext) -> None:
        self.ctx = ctx
        self.store = DataSetStore(ctx.plan.out, data_set)
        self.id = self.store.data_set
        #: Set when the data set needs no fetching (skipped, or failed to prepare), or is finished.
        self.result: DataSetResult | None = None
        self._tally = Tally()
        self._started = time.monotonic()
        self._targets = Targets(np.empty((0, 3), np.int64), np.empty((0, 3)))
        self._injection: npt.NDArray[np.float64] = np.empty((0, 3))
        self._progress = Progress(frozenset(), 0)
        self._pending = 0
        self._lines = 0
        self._failures = 0
        self._answered = asyncio.Event()
        self._error: BaseException | None = None

    # -- prepare -----------------------------------------------------------------------------------

    async def prepare(self) -> list[int]:
        """Volumes in, targets out, earlier results judged; the ranks still to fetch.

        Returns ``[]`` with ``result`` set when there is nothing to fetch (complete already, or the
        data set cannot be prepared: unknown id, bad volume, changed targets).
        """
        plan = self.ctx.plan
        restart = plan.options.restart
        early = decide(self.store.read(), plan.params, restart=restart)
        if early.action is Action.SKIP:
            await self._skip(early.summary or {})
            return []
        try:
            self._targets, self._injection = await self.ctx.source.select(
                self.id, plan.options, self._tally
            )
            expected = manifest(
                self.id, plan.params, len(self._targets), targets_digest(self._targets.index)
            )
            earlier = await asyncio.to_thread(self.store.read, scan=True)
            decision = decide(earlier, plan.params, restart=restart, expected=expected)
            if decision.action is Action.REFUSE:
                raise VolumeError(f"{decision.reason}; rerun with --restart to start over")
            self._progress = await asyncio.to_thread(self.store.open, decision, expected)
        except ENDS_THE_RUN:
            raise
        except (AsyncdlError, OSError) as exc:
            await self._record(self._result(complete=False, targets=0, error=explain(exc)))
            return []
        done = self._progress.done
        self._lines = self._progress.lines
        todo = [rank for rank in range(len(self._targets)) if rank not in done]
        self._pending = len(todo)
        if not todo:
            self._answered.set()
        self.ctx.events.data_set_started(self.id, len(self._targets), len(done))
        return todo

    async def _skip(self, summary: Mapping[str, Any]) -> None:
        """Complete already: request nothing (but write the brainrender file if it is missing or
        in the old layout)."""
        if self.ctx.plan.options.brainrender and not has_brainrender(self.store.dir, self.id):
            await asyncio.to_thread(write_brainrender, self.store.dir)
        self._report(
            DataSetResult(
                self.id,
                True,
                targets=int(summary.get("targets") or 0),
                lines=int(summary.get("lines") or 0),
                directory=str(self.store.dir),
                resumed=int(summary.get("targets") or 0),
                skipped=True,
            )
        )

    # -- fetch -------------------------------------------------------------------------------------

    async def fetch_target(self, rank: int) -> None:
        """Ask the spatial search about one target and record its answer, or its failure for good."""
        if self._error is not None:
            return
        index = self._targets.index[rank].tolist()
        coord = self._targets.coord[rank].tolist()
        url = self.ctx.plan.endpoints.target_spatial(coord, self.id)
        tally = Tally(on_retry=self._retry_reporter(url))
        try:
            try:
                records = await self.ctx.client.get_json(url, tally, rows)
            except ENDS_THE_RUN:
                raise
            except FetchError as exc:
                self.store.add_failure(rank, index, coord, str(exc), tally.requests)
                self._failures += 1
                self.ctx.events.target_failed(self.id, rank, str(exc))
                ok = False
            else:
                self.store.add_lines(rank, index, coord, records)
                self._lines += len(records)
                ok = True
        except Exception as exc:  # ENDS_THE_RUN, or a bug: this data set cannot go on
            self.abort(exc)
            return
        self._tally.add(tally)
        self.ctx.events.target_done(self.id, ok)
        self._pending -= 1
        if self._pending == 0:
            self._answered.set()

    def _retry_reporter(self, url: str) -> Callable[[BaseException, float], None]:
        def report(exc: BaseException, wait: float) -> None:
            self.ctx.events.retry(self.id, url, str(exc) or type(exc).__name__, wait)

        return report

    def abort(self, exc: BaseException) -> None:
        """Stop this data set: ``wait`` raises ``exc``; targets not yet asked are not asked."""
        if self._error is None:
            self._error = exc
        self._answered.set()

    @property
    def aborted(self) -> bool:
        return self._error is not None

    async def wait(self) -> None:
        """Until every target is answered or has failed for good; raises what aborted it."""
        await self._answered.wait()
        if self._error is not None:
            raise self._error

    # -- finish ------------------------------------------------------------------------------------

    async def finish(self) -> DataSetResult:
        """data.json from the answers on disk, then the summary (and the brainrender file)."""
        self.store.close()
        lines = await asyncio.to_thread(self.store.finalize, len(self._targets), self._injection)
        if lines != self._lines:  # the file on disk is the truth; a mismatch is a bug
            raise RuntimeError(f"data set {self.id}: wrote {self._lines} lines, found {lines}")
        if self.ctx.plan.options.brainrender:
            await asyncio.to_thread(write_brainrender, self.store.dir)
        failures = self._failures
        error = f"{failures} target(s) failed; see failures.ndjson" if failures else None
        result = self._result(
            complete=failures == 0, targets=len(self._targets), error=error, lines=lines
        )
        await self._record(result)
        return result

    def close(self) -> None:
        """Close the data set's files (whatever happened: a later run resumes from them)."""
        self.store.close()

    def _result(
        self, *, complete: bool, targets: int, error: str | None, lines: int = 0
    ) -> DataSetResult:
        t = self._tally
        return DataSetResult(
            self.id,
            complete,
            targets=targets,
            lines=lines,
            requests=t.requests,
            retries=t.retries,
            failures=self._failures,
            bytes=t.bytes,
            seconds=time.monotonic() - self._started,
            error=error,
            directory=str(self.store.dir),
            resumed=len(self._progress.done),
        )

    async def _record(self, result: DataSetResult) -> None:
        """Write the data set's summary.json (off the loop: it is fsynced), then report it."""
        await asyncio.to_thread(self.store.record, result, self.ctx.plan.params)
        self._report(result)

    def _report(self, result: DataSetResult) -> None:
        self.result = result
        self.ctx.events.data_set_done(result)
