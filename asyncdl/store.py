"""Output files of one data set, under ``OUT/<id>/``: reading what is there, writing what comes.

``run.json`` records the parameters and the targets of the data set's run; ``lines.ndjson`` (the
journal) gets one JSON object per target as its answer arrives (any order), written unbuffered so
that a killed process loses at most the requests it had in flight; ``failures.ndjson`` lists
targets that failed for good. ``data.json`` is then assembled from the journal in the seed's order
without holding all lines in memory: one pass records where each target's line starts, a second
copies the records out in rank order. Final files are written atomically (``files.atomic_write``).

``summary.json`` records how the data set went and the size and SHA-256 of each final file: a
rerun checks the sizes (``read``), ``verify`` every byte. Once data.json is written and verified,
the journal, a second copy of the same answers, can go (``drop_journal``).

Whether to resume is ``resume.decide``'s call; the store only reads (``read``) and carries it out
(``open``). Every write that fails raises ``StorageError`` naming the file.

One process at a time writes a data set: ``lock`` takes the folder's kernel lock (``locks``), and
only its holder may ``open`` it. What is decided, written or cleaned up in the folder is decided
under that lock, so a second run on the same ``OUT`` never touches the first one's files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import orjson

from .errors import StorageError, UsageError
from .files import TEMP_GLOB, AtomicFile, append, atomic_write, writing
from .locks import FolderLock, Holder
from .results import DataSetResult, Verdict
from .resume import Action, Decision, Earlier, Journal
from .targets import Targets
from .urls import data_set_id

MANIFEST = "run.json"
LINES = "lines.ndjson"
FAILURES = "failures.ndjson"
DATA = "data.json"
SUMMARY = "summary.json"
#: summary.json's status once ``verify`` found a final file damaged (the next fetch repairs it).
DAMAGED = "damaged"

#: What a recorded final file may be called: a plain name in the data set's folder, never a path.
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_COPY_CHUNK = 1 << 20


def targets_digest(index: npt.NDArray[np.int64]) -> str:
    """A fingerprint of a data set's targets: a resumed run must have exactly the same ones."""
    return hashlib.sha256(np.ascontiguousarray(index, dtype="<i8").tobytes()).hexdigest()


@dataclass(frozen=True)
class FileRecord:
    """A final file as summary.json records it when it is written: what reruns and verify check."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Answer:
    """One target's answer as ``lines.ndjson`` holds it: its rank, its coordinates (um), and the
    spatial search's records (0 or more lines)."""

    rank: int
    coord: list[float]
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class Summary:
    """``OUT/<id>/summary.json``, read back and typed (``read_summary``)."""

    #: ok, incomplete, failed; damaged (found so by ``verify``); unreadable (the file does not read).
    status: str
    complete: bool
    targets: int
    lines: int
    error: str | None
    #: The parameters the results were made with (what a rerun must match).
    parameters: Mapping[str, Any]
    #: The final files by name (none if nothing was written, or before asyncdl recorded them).
    files: Mapping[str, FileRecord]


def read_summary(directory: Path) -> Summary | None:
    """A data set folder's summary.json, typed; None if there is none."""
    raw = _read_object(Path(directory) / SUMMARY, missing=None, broken={})
    if raw is None:
        return None
    if not raw:
        return Summary("unreadable", False, 0, 0, f"{SUMMARY} cannot be read", {}, {})

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    parameters, error, status = raw.get("parameters"), raw.get("error"), raw.get("status")
    complete = raw.get("complete") is True
    return Summary(
        status=status if isinstance(status, str) else "ok" if complete else "incomplete",
        complete=complete,
        targets=count("targets"),
        lines=count("lines"),
        error=error if isinstance(error, str) else None,
        parameters=parameters if isinstance(parameters, Mapping) else {},
        files=_records(raw),
    )


class DataSetStore:
    """Where one data set's results go; paths are built only from its validated integer id."""

    def __init__(self, out_dir: Path, data_set: int) -> None:
        self.data_set = data_set_id(data_set)
        self.dir = Path(out_dir, str(self.data_set))
        # A rerun reads thousands of folders: plain strings spare it pathlib's cost per file.
        self._prefix = f"{self.dir}{os.sep}"
        self._lines: BinaryIO | None = None
        self._failures: BinaryIO | None = None
        self._written: FileRecord | None = None  # data.json as finalize wrote it
        self._lock = FolderLock(self.dir)

    def lock(self, doing: str = "fetching") -> Holder | None:
        """Take the data set's lock without waiting, for ``doing`` (what another process that
        finds it held is told): ``None`` once this store holds it, otherwise who does. Held until
        ``unlock`` (or until the process ends, however it ends)."""
        with writing(self._lock.path):
            return self._lock.acquire(doing)

    def unlock(self) -> None:
        self._lock.release()

    @contextlib.contextmanager
    def locked(self, doing: str) -> Iterator[Holder | None]:
        """The lock for a command on finished output (``verify``, ``export``: ``doing`` is
        ``"verifying"``, ``"exporting"``) to read and write the data set under: yields ``None``
        while held, or who holds it instead (then the block must leave the data set alone). A
        folder that is not there is not made just to lock it."""
        if not self.dir.is_dir():
            yield None
            return
        mine = self._lock.held  # held before the block: still held after it
        holder = self.lock(doing)
        try:
            yield holder
        finally:
            if holder is None and not mine:
                self.unlock()

    @property
    def journal(self) -> Path:
        """``lines.ndjson``: the answers as they came, from which data.json is assembled."""
        return self.dir / LINES

    def read(self, targets: Targets | None = None) -> Earlier:
        """What an earlier run left here, data.json checked against the size summary.json
        records; with ``targets``, the journal too, keeping the answers whose rank, index and
        coordinates are those of a target."""
        summary = _read_object(self._prefix + SUMMARY, missing=None, broken={})
        journal = Journal() if targets is None else _scan(self.journal, len(targets), targets)
        return Earlier(
            manifest=_read_object(self._prefix + MANIFEST, missing=None, broken={}),
            summary=summary,
            damage=self._damage(summary),
            journal=journal,
        )

    def answered(self, targets: int) -> int:
        """How many of ``targets`` ranks the journal answers, its lines not checked against the
        targets' coordinates (those need the volumes): what ``asyncdl status`` counts."""
        return len(_scan(self.journal, targets).lines)

    def read_manifest(self) -> Earlier:
        """What an earlier run left here, as far as run.json says (its parameters, its targets)."""
        return Earlier(manifest=_read_object(self._prefix + MANIFEST, missing=None, broken={}))

    def _damage(self, summary: Mapping[str, Any] | None) -> str:
        """What is wrong with the data.json a summary vouches for, by its size ("" if nothing).
        (The other final files are made from data.json: ``unvouched`` finds those to make again.)"""
        if not summary:
            return ""
        if summary.get("status") == DAMAGED:
            return str(summary.get("error") or f"{SUMMARY} says a final file is damaged")
        if summary.get("complete") is not True:
            return ""
        return _problem(self._prefix, _records(summary), [DATA], whole=False)

    def unvouched(self, names: Iterable[str]) -> list[str]:
        """Those of these final files that are missing, not recorded in summary.json, or of
        another size than it records: to be made again from data.json."""
        records = _records(_read_object(self._prefix + SUMMARY, missing={}, broken={}) or {})
        return [
            name
            for name in names
            if name not in records or _problem(self._prefix, records, [name], whole=False)
        ]

    def open(
        self, decision: Decision, manifest: Mapping[str, Any], derived: Iterable[str] = ()
    ) -> None:
        """Open the data set for writing, as ``decision`` (FRESH or RESUME) says.

        ``run.json`` is (re)written, ``lines.ndjson`` holds the answers the decision keeps and
        nothing else, the failures (they are asked again) and the summary (no longer true) go,
        and so do the ``derived`` files (made from a data.json that is being replaced: the finish
        makes those asked for again); FRESH drops data.json too.
        """
        assert decision.action in (Action.FRESH, Action.RESUME), decision
        assert self._lock.held, "a data set is opened under its lock"
        doomed = (FAILURES, SUMMARY, *derived)
        doomed += (LINES, DATA) if decision.action is Action.FRESH else ()
        with writing(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
            # Provably stale: only the lock's holder writes here, and that is this store, which
            # has written nothing yet. They are what a run killed while writing left behind.
            for stale in self.dir.glob(TEMP_GLOB):
                stale.unlink(missing_ok=True)
            for name in doomed:
                (self.dir / name).unlink(missing_ok=True)
        atomic_write(self.dir / MANIFEST, [orjson.dumps(manifest, option=orjson.OPT_INDENT_2)])
        self._lines = self._carry(decision.keep)

    def _carry(self, keep: Journal) -> BinaryIO:
        """A journal of this attempt's own, holding the answers of earlier attempts that it keeps.

        They are copied to a new file that replaces ``lines.ndjson``; this attempt appends to that
        file only. An earlier attempt that is somehow still running (a zombie worker) keeps writing
        into the old, replaced file, so two attempts can never interleave their lines in one file,
        on any file system.
        """
        path = self.journal
        mine = AtomicFile(path, buffering=0)
        try:
            if keep.lines:
                with path.open("rb") as old:
                    for start, length in _runs(keep.lines.values()):
                        old.seek(start)
                        while length > 0:
                            chunk = old.read(min(length, _COPY_CHUNK))
                            if not chunk:
                                raise OSError(f"{path} is shorter than when it was read")
                            append(mine.fh, chunk, path)
                            length -= len(chunk)
            mine.publish(keep_open=True)
        except BaseException:
            mine.discard()
            raise
        return mine.fh

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
        append(self._lines, orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE), self.journal)

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
        count = size = 0
        digest = hashlib.sha256()

        def records() -> Iterator[bytes]:
            nonlocal count
            yield b'{"lines":['
            for answer in self.answers(targets):
                for record in answer.records:
                    yield (b"," if count else b"") + orjson.dumps(record)
                    count += 1
            yield b'],"injectionCoordinates":'
            yield orjson.dumps(injection.tolist())
            yield b"}"

        def hashed() -> Iterator[bytes]:  # what is written, to check what reads back against
            nonlocal size
            for chunk in records():
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        with writing(self.dir / DATA):  # reading lines.ndjson back is part of writing data.json
            atomic_write(self.dir / DATA, hashed())
        self._written = FileRecord(DATA, size, digest.hexdigest())
        return count

    def answers(self, targets: int) -> Iterator[Answer]:
        """The answered targets in ``lines.ndjson``, in rank order: ``data.json``'s order. One
        target's answer is read at a time (a rank answered twice counts once, as when resuming)."""
        path = self.journal
        offsets = _scan(path, targets).lines
        with path.open("rb") as fh:
            for rank in range(targets):
                where = offsets.get(rank)
                if where is None:
                    continue
                fh.seek(where[0])
                line = orjson.loads(fh.read(where[1]))
                yield Answer(rank, line["coord"], line["msg"])

    def record(
        self, result: DataSetResult, params: Mapping[str, Any], files: Iterable[str] = ()
    ) -> None:
        """summary.json: the result, the parameters it was made with (what resume checks), and the
        size and SHA-256 of each final file of ``files`` as it reads back from disk. data.json must
        read back as ``finalize`` wrote it: that is what lets its journal go."""
        records = [self._check(name) for name in files]
        self.write_summary(
            {**result.as_dict(), "parameters": dict(params), "files": _as_json(records)}
        )

    def add_files(self, files: Iterable[str]) -> None:
        """Record the size and SHA-256 of final files written since summary.json was."""
        summary = _read_object(self.dir / SUMMARY, missing={}, broken={}) or {}
        recorded = dict(_as_json(_records(summary).values()))
        self.write_summary({**summary, "files": recorded | _as_json(map(self._check, files))})

    def _check(self, name: str) -> FileRecord:
        """A final file's size and SHA-256 as it reads back (data.json: as it was written)."""
        path = self.dir / name
        with writing(path):
            size, sha256 = _sha256(path)
        found = FileRecord(name, size, sha256)
        if name == DATA and self._written is not None and found != self._written:
            raise StorageError(f"cannot write {path}: it reads back other than written", str(path))
        return found

    def verify(self, only: Iterable[str] | None = None, *, incomplete: bool = False) -> Verdict:
        """Every final file summary.json records (or those of them named in ``only``), checked
        byte for byte against its size and SHA-256. A damaged data set is marked so in
        summary.json: the next fetch repairs it. With ``incomplete``, a data set whose fetch
        finished with targets that failed is checked too (its data.json holds the rest)."""
        summary = read_summary(self.dir)
        if summary is None:
            exists = self.dir.is_dir()
            why = f"no {SUMMARY}: its fetch has not finished" if exists else "not fetched"
            return Verdict(self.data_set, "unfinished", why)
        if summary.status in ("unreadable", DAMAGED):
            return Verdict(self.data_set, "damaged", summary.error or "")
        if not summary.complete and not (incomplete and summary.status == "incomplete"):
            why = f"{summary.status}: {summary.error}" if summary.error else summary.status
            return Verdict(self.data_set, "unfinished", why)
        names = summary.files if only is None else only
        problem = _problem(self._prefix, summary.files, names, whole=True)
        if not problem:
            return Verdict(self.data_set, "verified")
        self.write_summary(
            {
                **(_read_object(self.dir / SUMMARY, missing={}, broken={}) or {}),
                "complete": False,
                "status": DAMAGED,
                "error": problem,
            }
        )
        return Verdict(self.data_set, "damaged", problem)

    def has_journal(self) -> bool:
        return os.path.exists(self._prefix + LINES)

    def drop_journal(self) -> None:
        """Remove ``lines.ndjson`` (data.json, verified, holds the same answers)."""
        with writing(self.journal):
            self.journal.unlink(missing_ok=True)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        with writing(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / SUMMARY, [orjson.dumps(summary, option=orjson.OPT_INDENT_2)])


def data_set_folders(out: Path) -> list[int]:
    """The ids of the data set folders (``OUT/<id>/``) in ``out``, in order; ``UsageError`` if
    ``out`` is not a folder that can be read."""
    try:
        return sorted(
            int(d.name)
            for d in out.iterdir()
            if d.name.isascii() and d.name.isdigit() and d.is_dir()
        )
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"{out} is not a folder") from None
    except OSError as exc:
        raise UsageError(f"cannot read {out}: {exc.strerror or exc}") from exc


def chosen_data_sets(out: Path, data_sets: Iterable[int | str] | None) -> list[int]:
    """The data sets a command on finished output is about: those given (validated, each once),
    or every ``OUT/<id>`` folder; ``UsageError`` if ``out`` is not a folder or holds none."""
    if not out.is_dir():
        raise UsageError(f"{out} is not a folder")
    if data_sets is not None:
        return list(dict.fromkeys(data_set_id(d) for d in data_sets))
    found = data_set_folders(out)
    if not found:
        raise UsageError(f"{out} holds no data set folders (OUT/<id>/)")
    return found


def _read_object(
    path: str | Path, *, missing: dict[str, Any] | None, broken: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A JSON object from ``path``: ``missing`` if there is no file, ``broken`` if it does not read."""
    try:
        with open(path, "rb", buffering=0) as fh:
            value = orjson.loads(fh.readall())
    except FileNotFoundError:
        return missing
    except (OSError, orjson.JSONDecodeError):
        return broken
    return value if isinstance(value, dict) else broken


def _records(summary: Mapping[str, Any]) -> dict[str, FileRecord]:
    """The final files a summary records; an entry that is not a plain name, a size and a
    SHA-256 is left out (a hand-edited or hostile summary never names a path to read)."""
    files = summary.get("files")
    found: dict[str, FileRecord] = {}
    for name, entry in files.items() if isinstance(files, Mapping) else ():
        if not (isinstance(name, str) and _FILE_NAME.fullmatch(name) and isinstance(entry, dict)):
            continue
        size, sha256 = entry.get("size"), entry.get("sha256")
        if isinstance(size, int) and size >= 0 and isinstance(sha256, str) and len(sha256) == 64:
            found[name] = FileRecord(name, size, sha256)
    return found


def _as_json(records: Iterable[FileRecord]) -> dict[str, dict[str, Any]]:
    return {r.name: {"size": r.size, "sha256": r.sha256} for r in records}


def _sha256(path: str | Path) -> tuple[int, str]:
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
        return fh.tell(), digest.hexdigest()


def _problem(
    prefix: str, files: Mapping[str, FileRecord], names: Iterable[str], *, whole: bool
) -> str:
    """What is wrong with the recorded final files of ``names`` ("" if nothing): by their sizes,
    or with ``whole``, by every byte. A record must vouch for data.json at least."""
    if DATA not in files:
        return f"{SUMMARY} records no size and SHA-256 of {DATA} (an older asyncdl wrote it)"
    for name in names:
        if (record := files.get(name)) is None:
            continue  # not written by the run that finished the data set: nothing to check
        try:
            size, sha256 = _sha256(prefix + name) if whole else (os.stat(prefix + name).st_size, "")
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
        if size != record.size:
            return f"{name} is {size:,} bytes, not the {record.size:,} {SUMMARY} records"
        if whole and sha256 != record.sha256:
            return f"{name} does not match the SHA-256 {SUMMARY} records"
    return ""


def _runs(spans: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` spans of a file, in file order, adjacent ones joined into one."""
    start = end = -1
    for offset, length in sorted(spans):
        if offset != end:
            if end > start:
                yield start, end - start
            start = offset
        end = offset + length
    if end > start:
        yield start, end - start


def _scan(path: Path, targets: int, expect: Targets | None = None) -> Journal:
    """Where each rank's first line is in ``lines.ndjson``. With ``expect``, a line counts only if
    its index and coordinates are those of the target at its rank: it provably answers that
    target's query. Other lines, and lines that do not read, are counted as dropped."""
    index = expect.index.tolist() if expect is not None else None
    coord = expect.coord.tolist() if expect is not None else None
    lines: dict[int, tuple[int, int]] = {}
    records = dropped = pos = 0
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return Journal()
    with fh:
        for line in fh:
            start, pos = pos, pos + len(line)
            if not line.endswith(b"\n"):
                break  # the last line, cut by a crash
            try:
                entry = orjson.loads(line)
                rank, msg = entry["rank"], entry["msg"]
                ours = isinstance(rank, int) and 0 <= rank < targets and isinstance(msg, list)
                if ours and index is not None and coord is not None:
                    ours = entry["index"] == index[rank] and entry["coord"] == coord[rank]
            except (ValueError, KeyError, TypeError):  # orjson.JSONDecodeError is a ValueError
                ours = False
            if not ours:
                dropped += 1
            elif rank not in lines:
                lines[rank] = (start, len(line))
                records += len(msg)
    return Journal(lines, records, dropped)
