"""One data set's whole life, from its id to ``OUT/<id>/data.json``.

    prepare:  decide (skip? refuse?) -> volumes -> targets -> decide (fresh or resume) -> open files
    fetch:    one spatial search per target still to do; each answer or failure is recorded at once
    finish:   data.json in the seed's order, the files of each --format (``outputs``), summary.json
              with the size and SHA-256 of each; then the journal goes (unless --keep-journal)

A data set found damaged (data.json missing or of the wrong size, run.json or summary.json
unreadable) is repaired: rebuilt from the journal if it is there, else fetched again, with a note
(``Events.repairing``); a format's file missing or of the wrong size is made again from data.json.

The pipeline (``pipeline``) decides when each step runs and shares one request queue among many
data sets; everything that concerns one data set is here. A data set that cannot be prepared, or
whose targets fail, is recorded as such and the run goes on; an error in ``ENDS_THE_RUN`` (the disk,
an untrusted server) ends the whole run instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import outputs
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
from .resume import Action, Decision, Journal, decide, manifest
from .sources import VolumeSource
from .store import DATA, LINES, DataSetStore, targets_digest
from .targets import Targets


@dataclass(frozen=True)
class RunContext:
    """What the data sets of a run share: the plan, and the live objects that carry it out."""

    plan: RunPlan
    client: HttpClient
    source: VolumeSource
    events: Events


def refuse_mixing(
    out: Path, data_sets: Iterable[int], params: Mapping[str, Any], restart: bool
) -> None:
    """``UsageError`` if an ``OUT/<id>`` holds results of other parameters (checked before any
    request of a run, so old and new results are never mixed). Only a readable run.json can say
    so: a damaged folder is no refusal, its data set is repaired."""
    if restart:
        return
    ids = list(data_sets)
    refused = [  # run.json alone says that (each data set reads the rest when its turn comes)
        (store, decision.reason)
        for store in (DataSetStore(out, data_set) for data_set in ids)
        if (decision := decide(store.read_manifest(), params, restart=False)).action
        is Action.REFUSE
    ]
    if not refused:
        return
    (store, reason), more = refused[0], len(refused) - 1
    them = "them" if more else "it"
    if len(refused) == len(ids):
        advice = f"rerun with --restart to start {them} over"
    else:  # --restart starts every data set of the command over: name those that need it
        names = " ".join(str(s.data_set) for s, _ in refused)
        advice = f"to start {them} over, rerun with --restart and only {names}"
    also = f" (and {more} more data set{'s' if more > 1 else ''})" if more else ""
    raise UsageError(f"{store.dir}: {reason}{also}; {advice}")


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
        self._kept = Journal()  # the answers an earlier run left that this one keeps
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
        if early.action is Action.SKIP and await self._skip(early.summary or {}):
            return []
        try:
            self._targets, self._injection = await self.ctx.source.select(
                self.id, plan.options, self._tally
            )
            expected = manifest(
                self.id, plan.params, len(self._targets), targets_digest(self._targets.index)
            )
            earlier = await asyncio.to_thread(self.store.read, self._targets)
            decision = decide(earlier, plan.params, restart=restart, expected=expected)
            if decision.action is Action.REFUSE:
                raise VolumeError(f"{decision.reason}; rerun with --restart to start over")
            derived = outputs.derived_files(self.id)
            await asyncio.to_thread(self.store.open, decision, expected, derived)
        except ENDS_THE_RUN:
            raise
        except (AsyncdlError, OSError) as exc:
            await self._record(self._result(complete=False, targets=0, error=explain(exc)))
            return []
        if decision.reason:
            self.ctx.events.repairing(self.id, decision.reason, self._remedy(decision))
        self._kept = decision.keep
        self._lines = self._kept.records
        todo = [rank for rank in range(len(self._targets)) if rank not in self._kept.lines]
        self._pending = len(todo)
        if not todo:
            self._answered.set()
        self.ctx.events.data_set_started(self.id, len(self._targets), len(self._kept.lines))
        return todo

    def _remedy(self, decision: Decision) -> str:
        """What a repair does, in a phrase."""
        targets, kept = len(self._targets), len(decision.keep.lines)
        if kept == targets:
            action = f"rebuilding {DATA} from the {kept} answers in {LINES}"
        elif kept:
            action = f"keeping the {kept} answers in {LINES}, fetching the other {targets - kept}"
        else:
            action = f"fetching its {targets} targets"
        return f"dropped them, {action}" if decision.keep.dropped else action

    async def _skip(self, summary: Mapping[str, Any]) -> bool:
        """Complete already: request nothing, but make the files of a format asked for now that
        are missing, unrecorded, of another size than recorded or in an old layout, from the
        answers on disk, and record them; then let a journal left behind go. Either checks
        data.json byte for byte first: False if it is damaged (marked so in summary.json, for
        ``prepare`` to repair)."""
        store, options = self.store, self.ctx.plan.options
        targets, lines = int(summary.get("targets") or 0), int(summary.get("lines") or 0)
        todo = await asyncio.to_thread(outputs.stale, store, options.formats)
        drop = not options.keep_journal and store.has_journal()
        if todo or drop:
            verdict = await asyncio.to_thread(store.verify, [DATA])  # what the rest comes from
            if verdict.status != "verified":
                return False
        errors = await self._write_formats(todo, lines)
        if drop and not errors:  # summary.json vouches for every file: the journal can go
            await asyncio.to_thread(store.drop_journal)
        error = "; ".join(errors) or None
        self._report(
            DataSetResult(
                self.id,
                error is None,
                targets=targets,
                lines=lines,
                directory=str(self.store.dir),
                resumed=targets,
                skipped=error is None,
                error=error,
            )
        )
        return True

    async def _write_formats(self, names: list[str], lines: int) -> list[str]:
        """Make the files of ``names`` and record them in summary.json; why a format's could not
        be made (its data does not convert), a phrase each. data.json stays as it is."""
        if not names:
            return []
        written, errors = await asyncio.to_thread(outputs.write, self.store, names, lines)
        if written:
            await asyncio.to_thread(self.store.add_files, written)
        return errors

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
        """data.json from the answers on disk, then the files of each format (from the journal,
        which knows each target's rank), then the summary that vouches for them all; then the
        journal goes, data.json holding the same answers."""
        options = self.ctx.plan.options
        self.store.close()
        lines = await asyncio.to_thread(self.store.finalize, len(self._targets), self._injection)
        if lines != self._lines:  # the file on disk is the truth; a mismatch is a bug
            raise RuntimeError(f"data set {self.id}: wrote {self._lines} lines, found {lines}")
        failures = self._failures
        errors = [f"{failures} target(s) failed; see failures.ndjson"] if failures else []
        derived = outputs.final_files(self.id, options.formats)[1:]
        written, unwritten = await asyncio.to_thread(outputs.write, self.store, derived, lines)
        errors += unwritten
        result = self._result(
            complete=not errors,
            targets=len(self._targets),
            error="; ".join(errors) or None,
            lines=lines,
        )
        await self._record(result, [DATA, *written])
        if result.complete and not options.keep_journal:  # recorded: every file read back whole
            await asyncio.to_thread(self.store.drop_journal)
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
            resumed=len(self._kept.lines),
        )

    async def _record(self, result: DataSetResult, files: Iterable[str] = ()) -> None:
        """Write the data set's summary.json (off the loop: it is fsynced, and ``files`` are read
        back to record their SHA-256), then report it."""
        await asyncio.to_thread(self.store.record, result, self.ctx.plan.params, files)
        self._report(result)

    def _report(self, result: DataSetResult) -> None:
        self.result = result
        self.ctx.events.data_set_done(result)
