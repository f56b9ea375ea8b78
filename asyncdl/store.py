"""Output files of one data set, under ``OUT/<id>/``: reading what is there, writing what comes.

``run.json`` records the parameters and the targets of the data set's run; ``lines.ndjson`` gets one
JSON object per target as its answer arrives (any order), written unbuffered so that a killed
process loses at most the requests it had in flight; ``failures.ndjson`` lists targets that failed for
good. ``data.json`` is then assembled from ``lines.ndjson`` in the seed's order without holding all
lines in memory: one pass records where each target's line starts, a second copies the records out in
rank order. Final files are written atomically (``files.atomic_write``).

Whether to resume is ``resume.decide``'s call; the store only reads (``read``) and carries it out
(``open``): a resumed run drops a line cut by a crash and the failures (they are asked again).
Every write that fails raises ``StorageError`` naming the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import orjson

from .files import TEMP_GLOB, AtomicFile, append, atomic_write, writing
from .results import DataSetResult
from .resume import Action, Decision, Earlier
from .urls import data_set_id

MANIFEST = "run.json"
LINES = "lines.ndjson"
FAILURES = "failures.ndjson"
DATA = "data.json"
SUMMARY = "summary.json"


def targets_digest(index: npt.NDArray[np.int64]) -> str:
    """A fingerprint of a data set's targets: a resumed run must have exactly the same ones."""
    return hashlib.sha256(np.ascontiguousarray(index, dtype="<i8").tobytes()).hexdigest()


@dataclass(frozen=True)
class Progress:
    """What is already on disk for a data set when its run begins."""

    done: frozenset[int]
    lines: int
    repaired_bytes: int = 0


@dataclass(frozen=True)
class Answer:
    """One target's answer as ``lines.ndjson`` holds it: its rank, its coordinates (um), and the
    spatial search's records (0 or more lines)."""

    rank: int
    coord: list[float]
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class _Scan:
    offsets: dict[int, tuple[int, int]]
    lines: int
    valid_end: int


class DataSetStore:
    """Where one data set's results go; paths are built only from its validated integer id."""

    def __init__(self, out_dir: Path, data_set: int) -> None:
        self.data_set = data_set_id(data_set)
        self.dir = Path(out_dir) / str(self.data_set)
        self._lines: BinaryIO | None = None
        self._failures: BinaryIO | None = None
        self._scan: _Scan | None = None  # the last scan of lines.ndjson, reused when resuming

    @property
    def journal(self) -> Path:
        """``lines.ndjson``: the answers as they came, from which data.json is assembled."""
        return self.dir / LINES

    def read(self, *, scan: bool = False) -> Earlier:
        """What an earlier run left here; with ``scan``, also which targets it answered."""
        manifest = _read_object(self.dir / MANIFEST, missing=None, broken={})
        answered: frozenset[int] = frozenset()
        self._scan = None
        if scan and manifest and isinstance(manifest.get("targets"), int):
            self._scan = _scan_lines(self.dir / LINES, manifest["targets"])
            answered = frozenset(self._scan.offsets)
        return Earlier(
            manifest=manifest,
            summary=_read_object(self.dir / SUMMARY, missing=None, broken=None),
            has_data=(self.dir / DATA).is_file(),
            answered=answered,
        )

    def open(self, decision: Decision, manifest: Mapping[str, Any]) -> Progress:
        """Open the data set for writing, as ``decision`` (FRESH or RESUME) says."""
        assert decision.action in (Action.FRESH, Action.RESUME), decision
        with writing(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in self.dir.glob(TEMP_GLOB):  # temp files of a run killed while writing
                stale.unlink(missing_ok=True)
            if decision.action is Action.RESUME:
                return self._resume(manifest["targets"])
            for name in (MANIFEST, LINES, FAILURES, DATA, SUMMARY):
                (self.dir / name).unlink(missing_ok=True)
        atomic_write(self.dir / MANIFEST, [orjson.dumps(manifest, option=orjson.OPT_INDENT_2)])
        with writing(self.dir / LINES):
            self._lines = (self.dir / LINES).open("wb", buffering=0)
        return Progress(frozenset(), 0)

    def _resume(self, targets: int) -> Progress:
        """Carry the answers of earlier attempts forward into a file of this attempt's own.

        The valid lines (up to a line cut by a crash) are copied to a new file that replaces
        ``lines.ndjson``; this attempt appends to that file only. An earlier attempt that is somehow
        still running (a zombie worker) keeps writing into the old, replaced file, so two attempts
        can never interleave their lines in one file, on any file system.
        """
        path = self.dir / LINES
        scan = self._scan or _scan_lines(path, targets)
        size = path.stat().st_size if path.exists() else 0
        mine = AtomicFile(path, buffering=0)
        try:
            if scan.valid_end:
                with path.open("rb") as old:
                    append(mine.fh, old.read(scan.valid_end), path)
            mine.publish(keep_open=True)
        except BaseException:
            mine.discard()
            raise
        (self.dir / FAILURES).unlink(missing_ok=True)  # failed targets are asked again
        self._lines = mine.fh
        return Progress(frozenset(scan.offsets), scan.lines, size - scan.valid_end)

    def close(self) -> None:
        for fh in (self._lines, self._failures):
            if fh is not None:
                fh.close()
        self._lines = self._failures = None

    def add_lines(
        self, rank: int, index: Sequence[int], coord: Sequence[float], records: list[Any]
    ) -> None:
        """Append one target's answer (unbuffered: a line is on disk once this returns)."""
        assert self._lines is not None, "store is not open"
        line = {"rank": rank, "index": index, "coord": coord, "msg": records}
        append(self._lines, orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE), self.dir / LINES)

    def add_failure(
        self, rank: int, index: Sequence[int], coord: Sequence[float], error: str, attempts: int
    ) -> None:
        """Record a target that failed for good."""
        path = self.dir / FAILURES
        if self._failures is None:
            with writing(path):
                self._failures = path.open("ab", buffering=0)
        line = {"rank": rank, "index": index, "coord": coord, "error": error, "attempts": attempts}
        append(self._failures, orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE), path)

    def finalize(self, targets: int, injection: npt.NDArray[np.float64]) -> int:
        """Write ``data.json`` in the seed's order from ``lines.ndjson``; return how many lines it has.

        Targets without an answer (failures) are left out; the caller says whether it is complete.
        """
        count = 0

        def chunks() -> Iterator[bytes]:
            nonlocal count
            yield b'{"lines":['
            for answer in self.answers(targets):
                for record in answer.records:
                    yield (b"," if count else b"") + orjson.dumps(record)
                    count += 1
            yield b'],"injectionCoordinates":'
            yield orjson.dumps(injection.tolist())
            yield b"}"

        with writing(self.dir / DATA):  # reading lines.ndjson back is part of writing data.json
            atomic_write(self.dir / DATA, chunks())
        return count

    def answers(self, targets: int) -> Iterator[Answer]:
        """The answered targets in ``lines.ndjson``, in rank order: ``data.json``'s order. One
        target's answer is read at a time (a rank answered twice counts once, as when resuming)."""
        path = self.dir / LINES
        offsets = _scan_lines(path, targets).offsets
        with path.open("rb") as fh:
            for rank in range(targets):
                where = offsets.get(rank)
                if where is None:
                    continue
                fh.seek(where[0])
                line = orjson.loads(fh.read(where[1]))
                yield Answer(rank, line["coord"], line["msg"])

    def record(self, result: DataSetResult, params: Mapping[str, Any]) -> None:
        """summary.json: the result, and the parameters it was made with (what resume checks)."""
        self.write_summary({**result.as_dict(), "parameters": dict(params)})

    def write_summary(self, summary: dict[str, Any]) -> None:
        with writing(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / SUMMARY, [orjson.dumps(summary, option=orjson.OPT_INDENT_2)])


def _read_object(
    path: Path, *, missing: dict[str, Any] | None, broken: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A JSON object from ``path``: ``missing`` if there is no file, ``broken`` if it does not read."""
    try:
        value = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return missing
    except (OSError, orjson.JSONDecodeError):
        return broken
    return value if isinstance(value, dict) else broken


def _scan_lines(path: Path, targets: int) -> _Scan:
    """Where each rank's first line starts in ``lines.ndjson``, up to the first damaged line."""
    offsets: dict[int, tuple[int, int]] = {}
    lines = pos = 0
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return _Scan(offsets, 0, 0)
    with fh:
        for line in fh:
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("cut line")
                entry = orjson.loads(line)
                rank, msg = entry["rank"], entry["msg"]
                if not (isinstance(rank, int) and 0 <= rank < targets and isinstance(msg, list)):
                    raise ValueError("not a line of this data set")
            except (ValueError, KeyError, TypeError):
                break  # orjson.JSONDecodeError is a ValueError
            if rank not in offsets:
                offsets[rank] = (pos, len(line))
                lines += len(msg)
            pos += len(line)
    return _Scan(offsets, lines, pos)
