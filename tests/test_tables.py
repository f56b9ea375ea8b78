"""``asyncdl list --json`` and ``--csv``: the service's records, loaded with pandas."""

import io
import json
from typing import Any

import pandas as pd
import pytest

from asyncdl.catalog import Experiment
from asyncdl.emulator.catalog import catalogue
from asyncdl.emulator.ontology import BY_ACRONYM
from asyncdl.tables import write_csv, write_json_lines

from .conftest import run_cli, server_args

SERVICE_FIELDS = [
    "id",
    "transgenic-line",
    "structure-abbrev",
    "structure-name",
    "injection-volume",
    "injection-structures",
    "injection-coordinates",
]


def listing(emulator, *options):
    proc = run_cli(
        "list",
        "--injection-structure",
        "VISp",
        "--primary-only",
        *options,
        *server_args(emulator),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def visp():
    """The emulator's own records of the experiments with a primary injection in VISp."""
    records = [e.record for e in catalogue() if BY_ACRONYM["VISp"] in e.primary]
    assert len(records) > 10
    return records


def test_json_lines_load_with_pandas(emulator, visp):
    frame = pd.read_json(io.StringIO(listing(emulator, "--json")), lines=True)
    assert set(SERVICE_FIELDS) <= set(frame.columns)
    assert frame.columns.tolist() == list(visp[0])  # the service's names, in its order
    assert frame["id"].tolist() == [r["id"] for r in visp]
    assert (frame["structure-abbrev"] == "VISp").all()
    assert frame["injection-coordinates"].tolist() == [r["injection-coordinates"] for r in visp]
    assert frame["injection-volume"].tolist() == pytest.approx(
        [r["injection-volume"] for r in visp]
    )


def test_csv_loads_with_pandas(emulator, visp):
    frame = pd.read_csv(io.StringIO(listing(emulator, "--csv")))
    assert frame.columns.tolist() == list(visp[0])
    assert frame["id"].tolist() == [r["id"] for r in visp]
    assert frame["transgenic-line"].fillna("").tolist() == [r["transgenic-line"] for r in visp]
    assert frame["injection-volume"].tolist() == pytest.approx(
        [r["injection-volume"] for r in visp]
    )
    # nested values are JSON text
    assert [json.loads(v) for v in frame["injection-coordinates"]] == [
        r["injection-coordinates"] for r in visp
    ]
    assert [json.loads(v) for v in frame["injection-structures"]] == [
        r["injection-structures"] for r in visp
    ]


def test_json_and_csv_are_exclusive(emulator):
    proc = run_cli("list", "--injection-structure", "VISp", "--json", "--csv", timeout=60)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "not allowed with argument" in line


def test_csv_cells():
    records: list[dict[str, Any]] = [
        {"id": 1, "transgenic-line": "", "injection-volume": 0.5, "flag": True, "note": 'a, "b"'},
        {"id": 2, "transgenic-line": None, "injection-coordinates": [1, 2.5, 3], "extra": {"k": 1}},
    ]
    out = io.StringIO()
    write_csv([Experiment.from_record(r) for r in records], out)
    assert out.getvalue().splitlines() == [
        "id,transgenic-line,injection-volume,flag,note,injection-coordinates,extra",
        '1,,0.5,true,"a, ""b""",,',
        '2,,,,,"[1,2.5,3]","{""k"":1}"',
    ]
    out = io.StringIO()
    write_json_lines([Experiment.from_record(r) for r in records], out)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == records
