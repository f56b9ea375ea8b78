"""Experiment lists as tables, with the service's own field names, for pandas and spreadsheets.

The records are written as the injection-structure service sent them (``id``, ``structure-abbrev``,
``transgenic-line``, ``injection-volume``, ``injection-coordinates``, ...), so
``pandas.read_json(path, lines=True)`` or ``pandas.read_csv(path)`` loads them next to AllenSDK's
tables. In CSV, nested values (lists, records) and booleans are JSON text; a missing value is empty.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import orjson

from .catalog import Experiment


def write_json_lines(experiments: Iterable[Experiment], out: TextIO) -> None:
    """One JSON object per line: each experiment's record, unchanged."""
    for experiment in experiments:
        out.write(orjson.dumps(dict(experiment.record)).decode() + "\n")


def write_csv(experiments: Sequence[Experiment], out: TextIO) -> None:
    """A header of every field any record has (in order of first appearance), then a row each."""
    columns = list(dict.fromkeys(key for x in experiments for key in x.record))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for experiment in experiments:
        writer.writerow([_cell(experiment.record.get(key)) for key in columns])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()  # numbers as JSON writes them; lists and records as JSON
