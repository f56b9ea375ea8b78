"""A finished data set's files, in one place: ``data.json`` always, and those of each format.

What a data set writes when it finishes, the files its summary.json records (what a rerun and
``verify`` check), what a rerun makes again for a complete data set, and what ``asyncdl export``
writes from what is already fetched all come from ``FORMATS``. Every format's files are made from
the answers on disk: the journal while it is there (it knows each target's rank), else data.json,
which is checked byte for byte against its SHA-256 first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import parquet
from .brainrender import has_brainrender, streamlines_file, write_brainrender
from .config import OUTPUT_FORMATS, OutputFormat
from .errors import ENDS_THE_RUN, AsyncdlError
from .store import DATA, DataSetStore, read_summary


@dataclass(frozen=True)
class Format:
    """One output format: its files under ``OUT/<id>/``, and how to write them."""

    files: Callable[[int], tuple[str, ...]]
    #: Writes those of its files named, from the data set's answers on disk; ``lines`` is how many
    #: data.json has.
    write: Callable[[DataSetStore, int, Collection[str]], None]
    #: Whether its files in a data set's folder are in the current layout (a rerun writes them
    #: again otherwise).
    current: Callable[[Path, int], bool] = lambda directory, data_set: True
    #: Raises ``UsageError`` if a package the format needs is missing: checked before a run.
    require: Callable[[], None] = lambda: None


def _write_brainrender(store: DataSetStore, lines: int, names: Collection[str]) -> None:
    write_brainrender(store.dir)


FORMATS: dict[OutputFormat, Format] = {
    "brainrender": Format(
        files=lambda data_set: (streamlines_file(Path(), data_set).name,),
        write=_write_brainrender,
        current=has_brainrender,
    ),
    "parquet": Format(
        files=lambda data_set: (parquet.POINTS_FILE, parquet.LINES_FILE),
        write=parquet.write_parquet,
        require=parquet.require,
    ),
}


def final_files(data_set: int, formats: Iterable[OutputFormat]) -> list[str]:
    """The names of a finished data set's files under ``OUT/<id>/``: data.json, then each format's."""
    return [DATA, *(name for f in dict.fromkeys(formats) for name in FORMATS[f].files(data_set))]


def derived_files(data_set: int) -> list[str]:
    """Every format's files: all made from data.json, they go when it is made again."""
    return final_files(data_set, OUTPUT_FORMATS)[1:]


def require(formats: Iterable[OutputFormat]) -> None:
    """``UsageError`` if a format's package is missing."""
    for f in dict.fromkeys(formats):
        FORMATS[f].require()


def stale(store: DataSetStore, formats: Iterable[OutputFormat]) -> list[str]:
    """The files of ``formats`` that a complete data set must have made (again): missing, not
    recorded in summary.json, of another size than it records, or in an old layout."""
    names: list[str] = []
    for f in dict.fromkeys(formats):
        files = FORMATS[f].files(store.data_set)
        current = FORMATS[f].current(store.dir, store.data_set)
        names += files if not current else store.unvouched(files)
    return names


def write(store: DataSetStore, names: Iterable[str], lines: int) -> tuple[list[str], list[str]]:
    """Write the final files of ``names`` (but data.json) for a data set whose data.json holds
    ``lines`` lines: the names of the files written, and why a format's could not be (its data
    does not convert), a phrase each. Errors that end a run (a full disk) are raised."""
    wanted = set(names)
    written: list[str] = []
    errors: list[str] = []
    for f in FORMATS.values():
        files = [name for name in f.files(store.data_set) if name in wanted]
        if not files:
            continue
        try:
            f.write(store, lines, files)
        except ENDS_THE_RUN:
            raise
        except AsyncdlError as exc:
            errors.append(str(exc))
        else:
            written += files
    return written, errors


@dataclass(frozen=True)
class Exported:
    """What ``export`` did for one data set: its files ``written``, or not, as its data.json is
    ``damaged`` (marked so: the next fetch repairs it), another process holds it (``busy``: it
    is left to it), or another reason ``failed`` it; ``detail`` names the files, or says why not."""

    data_set: int
    status: Literal["written", "damaged", "busy", "failed"]
    detail: str


def export(out: Path, data_set: int, formats: Iterable[OutputFormat]) -> Exported:
    """Write the files of ``formats`` for a data set already fetched into ``out``, and record them
    in its summary.json. A data set is exported as its last fetch left it (targets that failed
    for good are not in it), once that fetch has finished and its data.json checks out byte for
    byte against its recorded SHA-256; a damaged data.json is never read. All of it is done
    under the data set's lock: one that another process holds (a fetch may be writing it) is
    left to it."""
    store = DataSetStore(out, data_set)
    with store.locked("exporting") as holder:
        if holder is not None:
            return Exported(store.data_set, "busy", f"held by {holder}; not exported")
        return _export(store, formats)


def _export(store: DataSetStore, formats: Iterable[OutputFormat]) -> Exported:
    verdict = store.verify([DATA], incomplete=True)
    if verdict.status == "damaged":
        return Exported(store.data_set, "damaged", verdict.problem)
    if verdict.status == "unfinished":
        return Exported(store.data_set, "failed", verdict.problem)
    summary = read_summary(store.dir)
    lines = summary.lines if summary is not None else 0
    written, errors = write(store, final_files(store.data_set, formats)[1:], lines)
    if written:
        store.add_files(written)
    if errors:
        return Exported(store.data_set, "failed", "; ".join(errors))
    return Exported(store.data_set, "written", ", ".join(written))
