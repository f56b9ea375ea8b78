"""Output files of one data set, under ``OUT/<id>/``.

``lines.ndjson`` gets one JSON object per target as its answer arrives (any order); ``data.json`` is
then assembled from it in the seed's order without holding all lines in memory: one pass records where
each target's line starts, a second copies the records out in rank order. Final files are written to a
temp file in the same folder and renamed, so a final path never holds a half-written file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson

from .urls import data_set_id

LINES = "lines.ndjson"
FAILURES = "failures.ndjson"
DATA = "data.json"
SUMMARY = "summary.json"


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


class DataSetStore:
    """Where one data set's results go; paths are built only from its validated integer id."""

    def __init__(self, out_dir: Path, data_set: int) -> None:
        self.data_set = data_set_id(data_set)
        self.dir = Path(out_dir) / str(self.data_set)
        self._lines: IO[bytes] | None = None
        self._failures: IO[bytes] | None = None

    def open(self) -> None:
        """Start this data set afresh: empty ``lines.ndjson``, no failures, no final files."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in (DATA, SUMMARY, FAILURES):
            (self.dir / name).unlink(missing_ok=True)
        self._lines = (self.dir / LINES).open("wb", buffering=0)

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
        offsets = _line_offsets(path, targets)
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
        atomic_write(self.dir / SUMMARY, [orjson.dumps(summary, option=orjson.OPT_INDENT_2)])


def _line_offsets(path: Path, targets: int) -> dict[int, tuple[int, int]]:
    """Byte offset and length of the first line of each rank in ``lines.ndjson``."""
    offsets: dict[int, tuple[int, int]] = {}
    pos = 0
    with path.open("rb") as fh:
        for line in fh:
            rank = orjson.loads(line)["rank"]
            if isinstance(rank, int) and 0 <= rank < targets:
                offsets.setdefault(rank, (pos, len(line)))
            pos += len(line)
    return offsets
