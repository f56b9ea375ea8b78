"""Data set ids from a file, in the forms users already have them.

- one id per line, ``#`` comments and blank lines allowed;
- a CSV with an ``id`` column: what AllenSDK's
  ``MouseConnectivityCache().get_experiments(dataframe=True).to_csv(path)`` writes (the frame is
  indexed by id and keeps the column, so ``id`` heads the first column and a later one);
- JSON experiment records, as a list (``json.dump(mcc.get_experiments(), f)``, or AllenSDK's
  cached ``experiments.json``, whose raw rows call the id ``data_set_id``) or one per line (what
  ``asyncdl list --json`` prints); a JSON list of plain ids works too.

Parsed with the standard library only, from at most ``MAX_IDS_FILE_BYTES``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson

from .errors import UsageError
from .urls import data_set_id

#: Far more than every experiment of the atlas in any of the forms (AllenSDK's experiments.json
#: for all ~3,000 experiments is a few MB): a larger file is not an ids file.
MAX_IDS_FILE_BYTES = 64 * 2**20
FORMS = (
    "one id per line (# comments), a CSV with an 'id' column, "
    "or JSON records with 'id' (a list, or one per line)"
)


def read_ids_file(path: str | Path) -> list[int]:
    """The data set ids in ``path``, in file order; ``UsageError`` (one line) if it has none of
    the accepted forms, is too large, or holds an invalid id."""
    text = _read(Path(path))
    first = next((line.strip() for line in text.splitlines() if _uncommented(line)), "")
    try:
        if first.startswith(("[", "{")):
            return _json_ids(text, first.startswith("["))
        if _is_csv_header(first):
            return _csv_ids(text)
        return _line_ids(text)
    except UsageError as exc:
        raise UsageError(f"ids file {path}: {exc}; an ids file is {FORMS}") from exc


def _read(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            body = fh.read(MAX_IDS_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read ids file {path}: {exc.strerror}") from exc
    if len(body) > MAX_IDS_FILE_BYTES:
        raise UsageError(f"ids file {path} is larger than {MAX_IDS_FILE_BYTES // 2**20} MiB")
    try:
        return body.decode("utf-8-sig")  # a spreadsheet's CSV may start with a byte-order mark
    except UnicodeDecodeError:
        raise UsageError(f"ids file {path} is not UTF-8 text; an ids file is {FORMS}") from None


def _uncommented(line: str) -> str:
    """What a line of the one-id-per-line form says: the part before any ``#``, stripped."""
    return line.split("#", 1)[0].strip()


def _is_csv_header(line: str) -> bool:
    """A first line with several fields, or the single field ``id``, starts a CSV."""
    fields = next(csv.reader([line]), [])
    return len(fields) > 1 or [f.strip() for f in fields] == ["id"]


def _line_ids(text: str) -> list[int]:
    ids = []
    for number, line in enumerate(text.splitlines(), 1):
        value = _uncommented(line)
        if value:
            ids.append(_id(value, f"line {number}"))
    return ids


def _csv_ids(text: str) -> list[int]:
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise UsageError(f"not a readable CSV ({exc})") from None
    start = next((n for n, row in enumerate(rows) if any(cell.strip() for cell in row)), 0)
    header = [name.strip() for name in rows[start]]
    columns = [n for n, name in enumerate(header) if name == "id"]
    if not columns:
        shown = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "")
        raise UsageError(f"a CSV without an 'id' column (columns: {shown[:200]})")
    ids = []
    for number, row in enumerate(rows[start + 1 :], start + 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= columns[-1]:
            raise UsageError(f"row {number} has {len(row)} fields, fewer than the header")
        values = {row[n].strip() for n in columns}
        if len(values) > 1:  # AllenSDK's index and its id column are the same id
            raise UsageError(f"row {number}: its 'id' columns disagree ({sorted(values)})")
        ids.append(_id(values.pop(), f"row {number}"))
    return ids


def _json_ids(text: str, is_list: bool) -> list[int]:
    if is_list:
        items = _json(text, "the file")
        return [_record_id(item, f"item {n}") for n, item in enumerate(items, 1)]
    lines = enumerate(text.splitlines(), 1)
    return [_record_id(_json(line, f"line {n}"), f"line {n}") for n, line in lines if line.strip()]


def _json(text: str, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{where} is not valid JSON ({exc})") from None


def _record_id(item: Any, where: str) -> int:
    """A record's id: ``data_set_id`` when present (AllenSDK's raw rows, where it is the id that
    ``get_experiments`` returns as ``id``), else ``id``; a plain integer is an id itself."""
    if isinstance(item, int) and not isinstance(item, bool):
        return _id(item, where)
    if not isinstance(item, dict):
        raise UsageError(f"{where} is not an experiment record or an id")
    for key in ("data_set_id", "id"):
        if key in item:
            return _id(item[key], where)
    keys = ", ".join(map(str, list(item)[:8]))
    raise UsageError(f"{where} has no 'id' (keys: {keys[:200] or 'none'})")


def _id(value: object, where: str) -> int:
    try:
        return data_set_id(value)
    except UsageError:
        raise UsageError(f"{where}: not a data set id: {str(value)[:40]!r}") from None
