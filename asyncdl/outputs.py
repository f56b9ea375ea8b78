"""A finished data set's files, in one place: ``data.json`` always, and those of each format.

What a data set writes when it finishes, what a rerun adds to a complete one, what
``asyncdl export`` writes from what is already fetched, and the list of a finished data set's
files (for checking them) all come from ``FORMATS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import parquet
from .brainrender import has_brainrender, streamlines_file, write_brainrender
from .config import OutputFormat
from .errors import AsyncdlError, StorageError, UsageError
from .store import DATA, SUMMARY, DataSetStore


@dataclass(frozen=True)
class Format:
    """One output format: its files under ``OUT/<id>/``, how to write them, whether they are there."""

    files: Callable[[int], tuple[str, ...]]
    #: Writes the files from the data set's answers on disk; ``lines`` is how many data.json has.
    write: Callable[[DataSetStore, int], None]
    #: Whether the files are there, in the current layout (a rerun writes them otherwise).
    present: Callable[[Path, int], bool]
    #: Raises ``UsageError`` if a package the format needs is missing: checked before a run.
    require: Callable[[], None] = lambda: None


def _write_brainrender(store: DataSetStore, lines: int) -> None:
    write_brainrender(store.dir)


def _parquet_present(directory: Path, data_set: int) -> bool:
    return all((directory / name).is_file() for name in (parquet.POINTS_FILE, parquet.LINES_FILE))


FORMATS: dict[OutputFormat, Format] = {
    "brainrender": Format(
        files=lambda data_set: (streamlines_file(Path(), data_set).name,),
        write=_write_brainrender,
        present=has_brainrender,
    ),
    "parquet": Format(
        files=lambda data_set: (parquet.POINTS_FILE, parquet.LINES_FILE),
        write=parquet.write_parquet,
        present=_parquet_present,
        require=parquet.require,
    ),
}


def final_files(data_set: int, formats: Iterable[OutputFormat]) -> list[str]:
    """The names of a finished data set's files under ``OUT/<id>/``: data.json, then each format's."""
    return [DATA, *(name for f in dict.fromkeys(formats) for name in FORMATS[f].files(data_set))]


def require(formats: Iterable[OutputFormat]) -> None:
    """``UsageError`` if a format's package is missing."""
    for f in dict.fromkeys(formats):
        FORMATS[f].require()


def missing(store: DataSetStore, formats: Iterable[OutputFormat]) -> list[OutputFormat]:
    """The formats whose files are not there (or are in an old layout)."""
    return [f for f in dict.fromkeys(formats) if not FORMATS[f].present(store.dir, store.data_set)]


def write(store: DataSetStore, formats: Iterable[OutputFormat], lines: int) -> None:
    """Write the files of ``formats`` for a data set whose data.json holds ``lines`` lines."""
    for f in dict.fromkeys(formats):
        FORMATS[f].write(store, lines)


def export_ids(out: Path, data_sets: Iterable[int] | None) -> list[int]:
    """The data sets ``asyncdl export`` converts: those given, or every ``OUT/<id>`` folder."""
    if not out.is_dir():
        raise UsageError(f"{out} is not a folder")
    if data_sets is not None:
        return list(dict.fromkeys(data_sets))
    found = sorted(int(d.name) for d in out.iterdir() if d.name.isdigit() and d.is_dir())
    if not found:
        raise UsageError(f"{out} holds no data set folders (OUT/<id>/)")
    return found


def export(out: Path, data_set: int, formats: Iterable[OutputFormat]) -> str | None:
    """Write the files of ``formats`` for a data set already fetched into ``out``; why it could
    not be done, or None. A data set is exported as its last fetch left it (failed targets and
    all), once that fetch has finished: data.json and summary.json are there."""
    store = DataSetStore(out, data_set)
    summary = store.read().summary
    if not (store.dir / DATA).is_file():
        return f"no {DATA} in {store.dir} (not fetched, or its fetch has not finished)"
    lines = summary.get("lines") if summary else None
    if not isinstance(lines, int) or isinstance(lines, bool):
        return f"no readable {SUMMARY} in {store.dir} (its fetch has not finished)"
    try:
        write(store, formats, lines)
    except StorageError:
        raise
    except AsyncdlError as exc:
        return str(exc)
    return None
