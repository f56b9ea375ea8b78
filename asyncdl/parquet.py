"""Parquet results: ``OUT/<id>/points.parquet`` and ``OUT/<id>/lines.parquet``, and reading many
data sets back as one table.

data.json is the seed's format and stays the record of a run; these two files hold the same
answers in columns, for analyses over many data sets (docs/parquet.md has the schema for users):

- ``points``: one row per point of every line, in data.json's order (``line``, then ``point``).
- ``lines``: one row per line: the target it answers (rank, coordinates) and the spatial-search
  record's scalar fields, typed (the same on every line of a data set: dictionary-encoded, they
  cost almost nothing).

They are written from the data set's answers on disk, one target at a time and a row group at a
time: from ``lines.ndjson`` when it is there (it has the targets' ranks), else from data.json
(``rank`` is then null). A fetch writes them before its journal goes; made later (a rerun that asks
for them, ``asyncdl export``, a repair), they come from data.json. Its lines do not give the ranks
back: the seed points name the targets answered, but targets without a line (the service answers
0 or 1 per target) leave gaps that only the full target list, from the volumes, could place. Both
files are zstd-compressed and appear atomically, only once their
line count matches data.json's. pyarrow (the ``parquet`` extra) is imported only when a file is
written or read.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from .errors import UsageError
from .files import atomic_file, writing
from .store import DATA, DataSetStore, data_set_folders
from .urls import data_set_id

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

POINTS_FILE = "points.parquet"
LINES_FILE = "lines.parquet"
Table = Literal["points", "lines"]
_FILES: dict[Table, str] = {"points": POINTS_FILE, "lines": LINES_FILE}

#: Points per row group: about 1.5 MB of columns in memory while writing.
ROWS_PER_GROUP = 65_536
#: zstd level 3: 7% smaller than level 1 here, and still far faster to write than data.json.
ZSTD_LEVEL = 3

_POINT_FLOATS = ("x", "y", "z", "density", "intensity")
Kind = Literal["int", "float", "str"]
#: The spatial-search record's scalar fields in ``lines``: (record key, column, kind). A column is
#: named after its key with "-" as "_", except ``density`` (at the target, not at a point: named
#: ``target_density`` so it never clashes with the points' column in a join). ``id`` is left out:
#: it is the data set, asked for in the query (``data_set``). ``injection-coordinates`` becomes
#: ``injection_x/y/z``; ``path`` is the points table; ``injection-structures`` (a list) is left to
#: data.json and ``asyncdl list``. A key the record lacks, or null, is null.
RECORD_FIELDS: tuple[tuple[str, str, Kind], ...] = (
    ("density", "target_density", "float"),
    ("injection-volume", "injection_volume", "float"),
    ("structure-id", "structure_id", "int"),
    ("structure-abbrev", "structure_abbrev", "str"),
    ("structure-name", "structure_name", "str"),
    ("structure-color", "structure_color", "str"),
    ("name", "name", "str"),
    ("transgenic-line", "transgenic_line", "str"),
    ("product-id", "product_id", "int"),
    ("gender", "gender", "str"),
    ("strain", "strain", "str"),
    ("projection", "projection", "float"),
    ("num-voxels", "num_voxels", "int"),
)


def require() -> None:
    """``UsageError`` unless pyarrow is installed: checked before a run asks the server anything."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise UsageError("Parquet output needs pyarrow: pip install 'asyncdl[parquet]'") from exc


def points_schema() -> pa.Schema:
    """``points.parquet``: a row per point, in data.json's order; nothing is ever null."""
    import pyarrow as pa

    fields: list[pa.Field[Any]] = [
        pa.field("data_set", pa.int64(), nullable=False),
        pa.field("line", pa.int32(), nullable=False),  # the line's index in data.json
        pa.field("point", pa.int32(), nullable=False),  # 0: the target; last: the injection
        *(pa.field(c, pa.float64(), nullable=False) for c in _POINT_FLOATS),
    ]
    return pa.schema(fields)


def lines_schema() -> pa.Schema:
    """``lines.parquet``: a row per line, in data.json's order."""
    import pyarrow as pa

    kinds: dict[Kind, pa.DataType] = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    fields: list[pa.Field[Any]] = [
        pa.field("data_set", pa.int64(), nullable=False),
        pa.field("line", pa.int32(), nullable=False),
        pa.field("rank", pa.int32()),  # the target's; null when written from data.json alone
        *(pa.field(f"target_{c}", pa.float64(), nullable=False) for c in "xyz"),
        pa.field("points", pa.int32(), nullable=False),
        *(pa.field(column, kinds[kind]) for _, column, kind in RECORD_FIELDS),
        *(pa.field(f"injection_{c}", pa.float64()) for c in "xyz"),
    ]
    return pa.schema(fields)


@dataclass(frozen=True)
class _Line:
    """One line to write: the target it answers, and the record (whose ``path`` is its points)."""

    rank: int | None
    target: Any
    record: Any


def write_parquet(
    store: DataSetStore, lines: int, names: Collection[str] = tuple(_FILES.values())
) -> None:
    """Write the data set's Parquet files (those of ``names``: both by default) from its answers
    on disk; ``lines`` is how many data.json has (the summary's count): a source that holds
    another number is refused, and nothing is written. ``UsageError`` names the file and the
    line that does not convert."""
    require()
    import pyarrow.parquet as pq

    source, answers = _answers(store)
    # Where the lines came from changes lines.parquet's ranks alone: points.parquet made from
    # data.json is the same file, byte for byte, as made from the journal.
    schemas: dict[Table, pa.Schema] = {
        "points": points_schema().with_metadata({b"asyncdl": orjson.dumps({"format": 1})}),
        "lines": lines_schema().with_metadata(
            {b"asyncdl": orjson.dumps({"format": 1, "from": source})}
        ),
    }
    with ExitStack() as stack:
        files = {
            table: stack.enter_context(atomic_file(store.dir / name))
            for table, name in _FILES.items()
            if name in names
        }
        stack.enter_context(writing(store.dir))
        writers = {
            table: stack.enter_context(
                pq.ParquetWriter(
                    fh, schemas[table], compression="zstd", compression_level=ZSTD_LEVEL
                )
            )
            for table, fh in files.items()
        }
        batch = _Batch(store.data_set)
        for line in answers:
            batch.add(line, f"{store.dir / source}")
            if batch.points >= ROWS_PER_GROUP:
                batch.flush(writers)
        batch.flush(writers)
        if batch.line != lines:
            raise UsageError(
                f"{store.dir / source} holds {batch.line} lines where data.json has {lines}: the "
                "data set changed since it was fetched (is it being fetched again?); finish "
                "that fetch, then write Parquet"
            )


def _answers(store: DataSetStore) -> tuple[str, Iterator[_Line]]:
    """The data set's lines in data.json's order: from ``lines.ndjson`` when it is there, since it
    also has each target's rank; else from data.json itself (one file read whole)."""
    manifest = store.read_manifest().manifest or {}
    targets = manifest.get("targets")
    if store.journal.is_file() and isinstance(targets, int) and not isinstance(targets, bool):

        def journal() -> Iterator[_Line]:
            for answer in store.answers(targets):
                for record in answer.records:
                    yield _Line(answer.rank, answer.coord, record)

        return store.journal.name, journal()
    path = store.dir / DATA
    try:
        data = orjson.loads(path.read_bytes())
        records = data["lines"]
    except FileNotFoundError:
        raise UsageError(f"no {DATA} in {store.dir} (fetch the data set first)") from None
    except (OSError, orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise UsageError(f"{path} is not a data.json of streamlines ({exc})") from exc
    if not isinstance(records, list):
        raise UsageError(f"{path} is not a data.json of streamlines ('lines' is not a list)")
    return DATA, (_Line(None, _seed_point(record), record) for record in records)


def _seed_point(record: Any) -> Any:
    """The target of a record from data.json: the first point of its path (the seed point)."""
    try:
        return record["path"][0]["coord"]
    except (KeyError, IndexError, TypeError):
        return None  # _Batch.add says what is wrong with the record


class _Batch:
    """Columns being filled, a row group's worth at a time; ``line`` counts every line so far."""

    def __init__(self, data_set: int) -> None:
        self.data_set = data_set
        self.line = 0
        self._clear()

    def _clear(self) -> None:
        self.points = 0
        self.point_columns: dict[str, array[Any]] = {
            "line": array("i"),
            "point": array("i"),
            **{column: array("d") for column in _POINT_FLOATS},
        }
        self.line_rows: list[dict[str, Any]] = []

    def add(self, line: _Line, source: str) -> None:
        """Add one line and its points; ``UsageError`` says which line of ``source`` is wrong."""
        try:
            row, points = _convert(line)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise UsageError(
                f"{source}: line {self.line} does not convert to Parquet ({exc})"
            ) from exc
        n = len(points["x"])
        self.point_columns["line"].extend(array("i", [self.line]) * n)
        self.point_columns["point"].extend(array("i", range(n)))
        for column, values in points.items():
            self.point_columns[column].extend(values)
        self.line_rows.append({"line": self.line, **row})
        self.points += n
        self.line += 1

    def flush(self, writers: Mapping[Table, Any]) -> None:
        """Write what was added as a row group of each table's file being written."""
        if not self.line_rows:
            return
        if (out := writers.get("points")) is not None:
            points = {
                "data_set": np.full(self.points, self.data_set, np.int64),
                **{column: _np(values) for column, values in self.point_columns.items()},
            }
            out.write_table(_table(points, out.schema))
        if (out := writers.get("lines")) is not None:
            lines = {
                "data_set": np.full(len(self.line_rows), self.data_set, np.int64),
                **{
                    name: [row[name] for row in self.line_rows]
                    for name in out.schema.names
                    if name != "data_set"
                },
            }
            out.write_table(_table(lines, out.schema))
        self._clear()


def _convert(line: _Line) -> tuple[dict[str, Any], dict[str, array[float]]]:
    """A line's row of ``lines`` (but ``data_set`` and ``line``) and its points' float columns;
    raises if a value does not fit its column, before anything is added."""
    record = line.record
    if not isinstance(record, dict):
        raise TypeError("the record is not an object")
    path = record["path"]
    if not isinstance(path, list) or not path:
        raise ValueError("its path is empty or not a list")
    points = {column: array("d") for column in _POINT_FLOATS}
    for point in path:
        x, y, z = point["coord"]
        values = (x, y, z, point["density"], point["intensity"])
        for column, value in zip(_POINT_FLOATS, values, strict=True):
            points[column].append(value)  # TypeError unless a number
    row: dict[str, Any] = {"rank": line.rank, "points": len(path)}
    target = _triple(line.target, "the target")
    row.update((f"target_{c}", _float(v, "the target")) for c, v in zip("xyz", target, strict=True))
    row.update(
        (column, _CONVERT[kind](record.get(key), key)) for key, column, kind in RECORD_FIELDS
    )
    key = "injection-coordinates"
    at = [None] * 3 if record.get(key) is None else _triple(record[key], key)
    row.update((f"injection_{c}", _float(v, key)) for c, v in zip("xyz", at, strict=True))
    return row, points


def _table(columns: dict[str, Any], schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    arrays = [pa.array(columns[f.name], f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _np(values: array[Any]) -> npt.NDArray[Any]:
    """An array's buffer as numpy's, without a copy (then pyarrow's, without another)."""
    return np.frombuffer(values, {"i": np.intc, "d": np.float64}[values.typecode])


def _triple(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(f"{what} is not [x, y, z]")
    return value


def _float(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key!r} is {value!r}, not a number")
    return float(value)


def _int(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key!r} is {value!r}, not an integer")
    return value


def _str(value: Any, key: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{key!r} is {value!r}, not a string")


_CONVERT: dict[Kind, Callable[[Any, str], Any]] = {"int": _int, "float": _float, "str": _str}


def read_parquet(
    out_dir: str | Path,
    data_sets: Iterable[int | str] | None = None,
    *,
    table: Table = "points",
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """The ``points`` (or ``lines``) of many data sets as one pandas DataFrame.

    ``data_sets``: their ids, in the order wanted; by default every ``OUT/<id>`` that has the
    file, by id. Written by ``--format parquet`` or ``asyncdl export``. ``columns`` reads only
    those. polars and DuckDB read the same files directly: ``OUT/*/points.parquet``.
    """
    require()
    try:
        import pandas  # noqa: F401
    except ImportError as exc:
        raise UsageError("read_parquet needs pandas: pip install 'asyncdl[parquet]'") from exc
    import pyarrow as pa
    import pyarrow.parquet as pq

    if table not in _FILES:
        raise UsageError(f"table must be 'points' or 'lines', got {table!r}")
    name, out = _FILES[table], Path(out_dir)
    if data_sets is None:
        ids = [i for i in data_set_folders(out) if (out / str(i) / name).is_file()]
        if not ids:
            raise UsageError(
                f"no {name} in {out}/<id>/ (fetch with --format parquet, or run asyncdl export)"
            )
    else:
        ids = list(dict.fromkeys(data_set_id(d) for d in data_sets))
    paths = [out / str(i) / name for i in ids]
    if missing := [str(p) for p in paths if not p.is_file()]:
        raise UsageError(f"no {missing[0]} (fetch with --format parquet, or run asyncdl export)")
    try:  # one dataset of all the files: pyarrow reads them in parallel, in this order
        arrow = pq.read_table([str(p) for p in paths], columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"cannot read {name}: {exc}") from exc
    frame: pd.DataFrame = arrow.to_pandas()
    return frame
