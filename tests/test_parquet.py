"""Parquet results: points.parquet and lines.parquet hold exactly what data.json holds, in its order,
typed as documented; written atomically from the answers on disk; read back for many data sets."""

import dataclasses
import shutil
import subprocess
import sys

import orjson
import pyarrow.parquet as pq
import pytest

import asyncdl
from asyncdl import FetchOptions, UsageError, outputs, parquet
from asyncdl.parquet import RECORD_FIELDS, lines_schema, points_schema, write_parquet
from asyncdl.store import DataSetStore

from .conftest import SEED_ID, command, server_args
from .streamline_data import write_data_json

OTHER_ID = 100141219


def load(path):
    return orjson.loads(path.read_bytes())


def expected_points(data, data_set):
    return [
        (data_set, line, point, *p["coord"], p["density"], p["intensity"])
        for line, record in enumerate(data["lines"])
        for point, p in enumerate(record["path"])
    ]


def rows(path):
    """A Parquet file's rows as tuples, in file order."""
    table = pq.read_table(path)
    return list(zip(*(column.to_pylist() for column in table.columns), strict=True))


def journal_targets(directory):
    """(rank, coord) of every line, in data.json's order, from lines.ndjson."""
    answers = [
        orjson.loads(line) for line in (directory / "lines.ndjson").read_bytes().splitlines()
    ]
    return [
        (a["rank"], a["coord"]) for a in sorted(answers, key=lambda a: a["rank"]) for _ in a["msg"]
    ]


def finished(directory, data_set, lines):
    """A data set folder as a finished fetch leaves it, for data made without a server."""
    (directory / "summary.json").write_bytes(
        orjson.dumps({"data_set": data_set, "complete": True, "lines": lines})
    )
    return DataSetStore(directory.parent, data_set)


@pytest.fixture(scope="module")
def fetched(emulator_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    options = FetchOptions(concurrency=16, density_range=(0.1, 0.2), formats=("parquet",))
    [result] = asyncdl.fetch_sync(
        [SEED_ID], out, options=options, endpoints=emulator_server.endpoints
    )
    assert result.complete and result.lines > 300
    return out / str(SEED_ID), result


def test_points_are_data_json_in_its_order(fetched):
    directory, _ = fetched
    data = load(directory / "data.json")
    assert rows(directory / "points.parquet") == expected_points(data, SEED_ID)
    assert pq.read_schema(directory / "points.parquet").remove_metadata() == points_schema()


def test_lines_are_the_targets_and_the_records_scalar_fields(fetched):
    directory, result = fetched
    data = load(directory / "data.json")
    table = pq.read_table(directory / "lines.parquet")
    assert table.schema.remove_metadata() == lines_schema()
    assert orjson.loads(table.schema.metadata[b"asyncdl"]) == {"format": 1, "from": "lines.ndjson"}
    lines = table.to_pylist()
    assert len(lines) == len(data["lines"]) == result.lines
    for n, (line, record, (rank, coord)) in enumerate(
        zip(lines, data["lines"], journal_targets(directory), strict=True)
    ):
        assert (line["data_set"], line["line"], line["rank"]) == (SEED_ID, n, rank)
        assert [line["target_x"], line["target_y"], line["target_z"]] == coord
        assert coord == record["path"][0]["coord"]  # the seed point
        assert line["points"] == len(record["path"])
        for key, column, _ in RECORD_FIELDS:
            assert line[column] == record.get(key), key
        injection = [line["injection_x"], line["injection_y"], line["injection_z"]]
        assert injection == record["injection-coordinates"]
    assert lines[0]["structure_abbrev"] and lines[0]["injection_volume"] > 0
    assert {line["projection"] for line in lines} == {None}  # not in the emulator's records


def test_both_files_are_at_most_a_quarter_of_data_json(fetched):
    directory, _ = fetched
    parquet_bytes = sum((directory / n).stat().st_size for n in ("points.parquet", "lines.parquet"))
    assert parquet_bytes <= 0.25 * (directory / "data.json").stat().st_size


def test_the_final_files_are_listed_in_one_place(fetched):
    directory, _ = fetched
    assert outputs.final_files(SEED_ID, ("parquet",)) == [
        "data.json",
        "points.parquet",
        "lines.parquet",
    ]
    assert outputs.final_files(SEED_ID, ("brainrender", "parquet", "brainrender")) == [
        "data.json",
        f"streamlines_{SEED_ID}.json",
        "points.parquet",
        "lines.parquet",
    ]
    for name in outputs.final_files(SEED_ID, ("parquet",)):
        assert (directory / name).is_file()
    assert not list(directory.glob(".*.tmp"))


def test_from_data_json_alone_the_same_but_rank_is_null(fetched, tmp_path):
    # Once the journal is gone, data.json is the source: the targets are the paths' seed points.
    directory, result = fetched
    copy = tmp_path / str(SEED_ID)
    shutil.copytree(directory, copy)
    (copy / "lines.ndjson").unlink()
    for name in ("points.parquet", "lines.parquet"):
        (copy / name).unlink()
    assert outputs.export(tmp_path, SEED_ID, ("parquet",)) is None
    assert rows(copy / "points.parquet") == rows(directory / "points.parquet")
    ours, theirs = (pq.read_table(d / "lines.parquet").to_pylist() for d in (copy, directory))
    assert [line["rank"] for line in ours] == [None] * result.lines
    assert [dict(line, rank=None) for line in theirs] == ours
    meta = pq.read_schema(copy / "lines.parquet").metadata[b"asyncdl"]
    assert orjson.loads(meta)["from"] == "data.json"


def test_row_groups_change_nothing_but_the_layout(fetched, tmp_path, monkeypatch):
    directory, result = fetched
    copy = tmp_path / str(SEED_ID)
    shutil.copytree(directory, copy)
    monkeypatch.setattr(parquet, "ROWS_PER_GROUP", 1000)
    write_parquet(DataSetStore(tmp_path, SEED_ID), result.lines)
    assert pq.ParquetFile(copy / "points.parquet").metadata.num_row_groups > 3
    for name in ("points.parquet", "lines.parquet"):
        assert pq.read_table(copy / name).equals(pq.read_table(directory / name))
        assert pq.ParquetFile(copy / name).metadata.row_group(0).column(0).compression == "ZSTD"


def test_a_count_that_differs_from_the_summary_is_refused(fetched, tmp_path):
    directory, result = fetched
    copy = tmp_path / str(SEED_ID)
    shutil.copytree(directory, copy)
    before = (copy / "points.parquet").read_bytes()
    with pytest.raises(UsageError, match=rf"holds {result.lines} lines where data.json has 7"):
        write_parquet(DataSetStore(tmp_path, SEED_ID), 7)
    assert (copy / "points.parquet").read_bytes() == before  # the old file stays whole
    assert not list(copy.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num-voxels": "n/a"}, "'num-voxels' is 'n/a', not an integer"),
        ({"product-id": 1.5}, "'product-id' is 1.5, not an integer"),
        ({"product-id": True}, "'product-id' is True, not an integer"),
        ({"structure-abbrev": 5}, "'structure-abbrev' is 5, not a string"),
        ({"injection-volume": "big"}, "'injection-volume' is 'big', not a number"),
        ({"injection-coordinates": [1, 2]}, "injection-coordinates is not"),
        ({"path": []}, "path is empty"),
        ({"path": [{"coord": [1, 2, "x"], "density": 0, "intensity": 0}]}, "must be real number"),
        ({"path": [{"coord": [1, 2], "density": 0, "intensity": 0}]}, "not enough values"),
        ({"path": [{"coord": [1, 2, 3], "density": None, "intensity": 0}]}, "must be real number"),
    ],
)
def test_a_value_that_does_not_fit_its_column_is_one_line_and_writes_nothing(
    tmp_path, change, message
):
    directory = tmp_path / str(SEED_ID)
    data = write_data_json(directory, SEED_ID, every=40)
    data["lines"][3].update(change)
    (directory / "data.json").write_bytes(orjson.dumps(data))
    store = finished(directory, SEED_ID, len(data["lines"]))
    with pytest.raises(UsageError, match="line 3 does not convert") as error:
        write_parquet(store, len(data["lines"]))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert sorted(p.name for p in directory.iterdir()) == ["data.json", "summary.json"]


def test_values_that_fit_are_converted_and_missing_ones_are_null(tmp_path):
    directory = tmp_path / str(SEED_ID)
    data = write_data_json(directory, SEED_ID, every=40)
    data["lines"][0].update({"product-id": 5.0, "num-voxels": 12, "transgenic-line": None})
    del data["lines"][0]["gender"], data["lines"][0]["injection-coordinates"]
    (directory / "data.json").write_bytes(orjson.dumps(data))
    write_parquet(finished(directory, SEED_ID, len(data["lines"])), len(data["lines"]))
    first = pq.read_table(directory / "lines.parquet").to_pylist()[0]
    assert (first["product_id"], first["num_voxels"]) == (5, 12)
    assert first["transgenic_line"] is first["gender"] is first["injection_x"] is None


@pytest.fixture
def two_data_sets(tmp_path):
    """Two exported data sets made without a server; their data.json."""
    made = {}
    for data_set in (SEED_ID, OTHER_ID):
        directory = tmp_path / str(data_set)
        made[data_set] = write_data_json(directory, data_set, every=20)
        finished(directory, data_set, len(made[data_set]["lines"]))
        assert outputs.export(tmp_path, data_set, ("parquet",)) is None
    return tmp_path, made


def test_read_parquet_gives_one_frame_for_many_data_sets(two_data_sets):
    out, made = two_data_sets
    frame = asyncdl.read_parquet(out)
    expected = expected_points(made[OTHER_ID], OTHER_ID) + expected_points(made[SEED_ID], SEED_ID)
    assert list(frame.itertuples(index=False, name=None)) == expected  # by id, then in order
    assert frame.index.tolist() == list(range(len(expected)))
    assert [str(t) for t in frame.dtypes] == [
        "int64",
        "int32",
        "int32",
        *["float64"] * 5,
    ]
    chosen = asyncdl.read_parquet(out, [str(SEED_ID), OTHER_ID], columns=["data_set", "x"])
    assert chosen.columns.tolist() == ["data_set", "x"]
    assert chosen["data_set"].unique().tolist() == [SEED_ID, OTHER_ID]  # in the order given
    lines = asyncdl.read_parquet(out, table="lines")
    assert len(lines) == len(made[SEED_ID]["lines"]) + len(made[OTHER_ID]["lines"])
    assert lines["rank"].isna().all()  # exported from data.json alone


def test_read_parquet_errors_are_usage_errors(two_data_sets, tmp_path_factory):
    out, _ = two_data_sets
    with pytest.raises(UsageError, match=r"no .*/42/points\.parquet .*asyncdl export"):
        asyncdl.read_parquet(out, [SEED_ID, 42])
    with pytest.raises(UsageError, match="not a data set id"):
        asyncdl.read_parquet(out, ["../etc"])
    with pytest.raises(UsageError, match="table must be"):
        asyncdl.read_parquet(out, table="paths")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"no points\.parquet in"):
        asyncdl.read_parquet(tmp_path_factory.mktemp("empty"))
    (out / str(SEED_ID) / "points.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UsageError, match=r"cannot read points\.parquet"):
        asyncdl.read_parquet(out)


async def test_a_rerun_adds_parquet_to_a_complete_data_set_without_requests(emulator, tmp_path):
    options = FetchOptions(concurrency=8, density_range=(0.1, 0.11))
    fetch = dict(options=options, endpoints=emulator.endpoints)
    [first] = await asyncdl.fetch([SEED_ID], tmp_path, **fetch)
    directory = tmp_path / str(SEED_ID)
    assert first.complete and not (directory / "points.parquet").exists()
    requests = emulator.stats.requests.total()
    with_parquet = dict(fetch, options=FetchOptions(**{**vars(options), "formats": ("parquet",)}))
    [again] = await asyncdl.fetch([SEED_ID], tmp_path, **with_parquet)
    assert again.complete and again.skipped and again.requests == 0
    assert emulator.stats.requests.total() == requests
    assert len(pq.read_table(directory / "lines.parquet")) == first.lines
    stamp = (directory / "points.parquet").stat().st_ino
    await asyncdl.fetch([SEED_ID], tmp_path, **with_parquet)
    assert (directory / "points.parquet").stat().st_ino == stamp  # there already: left alone


async def test_a_format_that_cannot_be_written_leaves_the_data_set_incomplete(
    emulator, tmp_path, monkeypatch
):
    def refuse(store, lines):
        raise UsageError(f"{store.dir}/data.json: line 0 does not convert to Parquet (test)")

    refusing = dataclasses.replace(outputs.FORMATS["parquet"], write=refuse)
    monkeypatch.setitem(outputs.FORMATS, "parquet", refusing)
    options = FetchOptions(concurrency=8, density_range=(0.1, 0.11), formats=("parquet",))
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints
    )
    assert not result.complete and result.status == "incomplete"
    assert "does not convert to Parquet" in (result.error or "")
    summary = load(tmp_path / str(SEED_ID) / "summary.json")
    assert summary["complete"] is False and summary["lines"] == result.lines > 0
    assert (tmp_path / str(SEED_ID) / "data.json").is_file()  # the data itself is all there


async def test_fetch_without_pyarrow_is_refused_before_any_request(emulator, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    options = FetchOptions(formats=("parquet",))
    with pytest.raises(UsageError, match=r"pip install 'asyncdl\[parquet\]'"):
        await asyncdl.fetch([SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints)
    assert emulator.stats.requests.total() == 0


def run(*args):
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=300)


def test_cli_fetch_with_several_formats_and_export(emulator, tmp_path):
    out = tmp_path / "data"
    proc = run(
        "fetch", SEED_ID, "-o", out, "--format", "parquet,brainrender", "--density-range", "0.1",
        "0.11", *server_args(emulator),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = outputs.final_files(SEED_ID, ("parquet", "brainrender"))
    assert all((out / str(SEED_ID) / name).is_file() for name in names)
    both = (out / str(SEED_ID) / "points.parquet").read_bytes()

    proc = run("export", out, "--format", "parquet", "--format", "seed")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{SEED_ID}: wrote points.parquet, lines.parquet\n"
    assert proc.stderr == "asyncdl: exported 1 of 1 data sets\n"
    assert rows(out / str(SEED_ID) / "points.parquet") == rows_of(both, tmp_path)

    proc = run("export", out, SEED_ID, 42, "--format", "parquet")
    assert proc.returncode == 1
    assert f"42: FAILED: no data.json in {out / '42'} (not fetched" in proc.stderr
    assert "exported 1 of 2 data sets" in proc.stderr and "Traceback" not in proc.stderr


def rows_of(body, tmp_path):
    path = tmp_path / "copy.parquet"
    path.write_bytes(body)
    return rows(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "{out}", "--format", "seed"], "--format seed is data.json"),
        (["export", "{out}/nowhere", "--format", "parquet"], "is not a folder"),
        (["export", "{out}", "--format", "csv"], "unknown format 'csv'"),
        (["export", "{out}"], "the following arguments are required: --format"),
        (["export", "{out}", "x1", "--format", "parquet"], "not a data set id"),
        (["fetch", "1", "-o", "{out}", "--format", "parquet,json"], "unknown format 'json'"),
    ],
)
def test_cli_usage_errors_are_one_line(tmp_path, args, message):
    proc = run(*(a.format(out=tmp_path) for a in args))
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_export_without_pyarrow_says_what_to_install(two_data_sets):
    out, _ = two_data_sets
    script = (
        "import sys; sys.modules['pyarrow'] = None; from asyncdl.cli import main; "
        f"sys.exit(main(['export', {str(out)!r}, '--format', 'parquet']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "asyncdl: error: Parquet output needs pyarrow: pip install 'asyncdl[parquet]'\n"
    )


def test_read_parquet_without_pandas_says_what_to_install(two_data_sets, monkeypatch):
    out, _ = two_data_sets
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(UsageError, match=r"read_parquet needs pandas: pip install"):
        asyncdl.read_parquet(out)
