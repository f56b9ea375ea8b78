"""Output files of one data set, under ``OUT/<id>/``, and how an interrupted run is resumed.

``run.json`` records the parameters and the targets of the data set's run; ``lines.ndjson`` gets one
JSON object per target as its answer arrives (any order), written unbuffered so that a killed
process loses at most the requests it had in flight; ``failures.ndjson`` lists targets that failed for
good. ``data.json`` is then assembled from ``lines.ndjson`` in the seed's order without holding all
lines in memory: one pass records where each target's line starts, a second copies the records out in
rank order. Final files are written to a temp file in the same folder and renamed, so a final path
never holds a half-written file.

A rerun with the same parameters resumes: a cut last line is dropped, answered targets are kept, and
only the others (failures included) are requested again. Other parameters are refused unless the
caller restarts the data set.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson

from .errors import UsageError, VolumeError
from .urls import data_set_id

MANIFEST = "run.json"
LINES = "lines.ndjson"
FAILURES = "failures.ndjson"
DATA = "data.json"
SUMMARY = "summary.json"
_FORMAT = 1


def atomic_write(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` via a temp file in the same folder, fsync, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
class _Scan:
    offsets: dict[int, tuple[int, int]]
    lines: int
    valid_end: int


class DataSetStore:
    """Where one data set's results go; paths are built only from its validated integer id."""

    def __init__(self, out_dir: Path, data_set: int) -> None:
        self.data_set = data_set_id(data_set)
        self.dir = Path(out_dir) / str(self.data_set)
        self._lines: IO[bytes] | None = None
        self._failures: IO[bytes] | None = None

    # -- before a run ------------------------------------------------------------------------------

    def _manifest(self) -> dict[str, Any] | None:
        try:
            manifest = orjson.loads((self.dir / MANIFEST).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError):
            return {}  # unreadable: it cannot vouch for anything
        return manifest if isinstance(manifest, dict) else {}

    def check(self, params: Mapping[str, Any], restart: bool) -> None:
        """Refuse to mix results of different parameters in one folder (unless restarting)."""
        manifest = self._manifest()
        if restart or manifest is None:
            return
        old = manifest.get("params")
        old = old if isinstance(old, dict) else {}
        if old != dict(params):
            changed = ", ".join(
                f"{key} {old.get(key)!r} -> {value!r}"
                for key, value in params.items()
                if old.get(key) != value
            )
            raise UsageError(
                f"{self.dir} holds results fetched with other parameters ({changed}); "
                "rerun with --restart to start it over"
            )

    def completed(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The summary of a finished, complete run with these parameters, if there is one."""
        manifest = self._manifest()
        if not manifest or manifest.get("params") != dict(params):
            return None
        try:
            summary = orjson.loads((self.dir / SUMMARY).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        if not (isinstance(summary, dict) and summary.get("complete") is True):
            return None
        return summary if (self.dir / DATA).is_file() else None

    # -- a run -------------------------------------------------------------------------------------

    def begin(
        self, params: Mapping[str, Any], index: npt.NDArray[np.int64], restart: bool
    ) -> Progress:
        """Open the data set for writing: resume what an earlier run left, or start afresh."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".*.tmp"):  # temp files of a run killed while writing
            stale.unlink(missing_ok=True)
        expected = {
            "format": _FORMAT,
            "data_set": self.data_set,
            "params": dict(params),
            "targets": len(index),
            "targets_sha256": targets_digest(index),
        }
        manifest = self._manifest()
        if manifest == expected and not restart:
            return self._resume(len(index))
        if manifest and not restart and manifest.get("params") == expected["params"]:
            raise VolumeError(
                "the targets differ from those of the interrupted run (did the server's volumes "
                "change?); rerun with --restart to start over"
            )
        for name in (MANIFEST, LINES, FAILURES, DATA, SUMMARY):
            (self.dir / name).unlink(missing_ok=True)
        atomic_write(self.dir / MANIFEST, [orjson.dumps(expected, option=orjson.OPT_INDENT_2)])
        self._lines = (self.dir / LINES).open("wb", buffering=0)
        return Progress(frozenset(), 0)

    def _resume(self, targets: int) -> Progress:
        path = self.dir / LINES
        path.touch()
        scan = _scan_lines(path, targets)
        repaired = path.stat().st_size - scan.valid_end
        if repaired:
            os.truncate(path, scan.valid_end)  # a line cut by a crash is not trusted
        (self.dir / FAILURES).unlink(missing_ok=True)  # failed targets are asked again
        self._lines = path.open("ab", buffering=0)
        return Progress(frozenset(scan.offsets), scan.lines, repaired)

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
        self._lines.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))

    def add_failure(
        self, rank: int, index: Sequence[int], coord: Sequence[float], error: str, attempts: int
    ) -> None:
        """Record a target that failed for good."""
        if self._failures is None:
            self._failures = (self.dir / FAILURES).open("ab", buffering=0)
        line = {"rank": rank, "index": index, "coord": coord, "error": error, "attempts": attempts}
        self._failures.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))

    def finalize(self, targets: int, injection: npt.NDArray[np.float64]) -> int:
        """Write ``data.json`` in the seed's order from ``lines.ndjson``; return how many lines it has.

        Targets without an answer (failures) are left out; the caller says whether it is complete.
        """
        path = self.dir / LINES
        offsets = _scan_lines(path, targets).offsets
        count = 0

        def chunks() -> Iterator[bytes]:
            nonlocal count
            yield b'{"lines":['
            with path.open("rb") as fh:
                for rank in range(targets):
                    where = offsets.get(rank)
                    if where is None:
                        continue
                    fh.seek(where[0])
                    for record in orjson.loads(fh.read(where[1]))["msg"]:
                        yield (b"," if count else b"") + orjson.dumps(record)
                        count += 1
            yield b'],"injectionCoordinates":'
            yield orjson.dumps(injection.tolist())
            yield b"}"

        atomic_write(self.dir / DATA, chunks())
        return count

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / SUMMARY, [orjson.dumps(summary, option=orjson.OPT_INDENT_2)])


def _scan_lines(path: Path, targets: int) -> _Scan:
    """Where each rank's first line starts in ``lines.ndjson``, up to the first damaged line."""
    offsets: dict[int, tuple[int, int]] = {}
    lines = pos = 0
    with path.open("rb") as fh:
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
