"""Parquet results: points.parquet and lines.parquet hold exactly what data.json holds, in its order,
typed as documented; written atomically from the answers on disk; read back for many data sets."""

import dataclasses
import hashlib
import os
import shutil
import sys

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import asyncdl
from asyncdl import DataSetResult, FetchOptions, UsageError, outputs, parquet
from asyncdl.parquet import RECORD_FIELDS, lines_schema, points_schema, write_parquet
from asyncdl.store import DATA, DataSetStore

from .conftest import SEED_ID, run_cli, server_args
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
    """A data set folder as a finished fetch leaves it (its summary.json vouching for data.json),
    for data made without a server."""
    store = DataSetStore(directory.parent, data_set)
    store.record(DataSetResult(data_set, True, targets=lines, lines=lines), {}, [DATA])
    return store


def recorded(directory):
    """The files summary.json records: name -> (size, sha256)."""
    files = load(directory / "summary.json")["files"]
    return {name: (entry["size"], entry["sha256"]) for name, entry in files.items()}


def on_disk(directory, *names):
    """The size and SHA-256 of files as they are: name -> (size, sha256)."""
    return {
        name: (len(body), hashlib.sha256(body).hexdigest())
        for name in names
        for body in [(directory / name).read_bytes()]
    }


PARQUET = ("points.parquet", "lines.parquet")
OPTIONS = FetchOptions(concurrency=16, density_range=(0.1, 0.2), formats=("parquet",))


@pytest.fixture(scope="module")
def fetched(emulator_server, tmp_path_factory):
    """A data set fetched with --format parquet and --keep-journal, to compare with its journal."""
    out = tmp_path_factory.mktemp("out")
    options = dataclasses.replace(OPTIONS, keep_journal=True)
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


async def test_without_keep_journal_parquet_is_written_before_the_journal_goes_and_recorded(
    fetched, emulator, tmp_path
):
    directory, _ = fetched
    [plain] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints
    )
    folder = tmp_path / str(SEED_ID)
    assert plain.complete and not (folder / "lines.ndjson").exists()
    for name in PARQUET:  # the ranks came from the journal, as with --keep-journal
        assert (folder / name).read_bytes() == (directory / name).read_bytes()
    assert recorded(folder) == on_disk(folder, DATA, *PARQUET)
    assert asyncdl.verify(tmp_path) == [asyncdl.Verdict(SEED_ID, "verified")]
    body = bytearray((folder / "lines.parquet").read_bytes())
    body[len(body) // 2] ^= 1  # one bit: the same size, so only a check of every byte finds it
    (folder / "lines.parquet").write_bytes(bytes(body))
    [verdict] = asyncdl.verify(tmp_path)  # verify reads every format's files
    assert verdict.status == "damaged" and "lines.parquet does not match" in verdict.problem


def test_from_data_json_alone_the_same_but_rank_is_null(fetched, tmp_path):
    # Once the journal is gone, data.json is the source: the targets are the paths' seed points.
    directory, result = fetched
    copy = tmp_path / str(SEED_ID)
    shutil.copytree(directory, copy)
    (copy / "lines.ndjson").unlink()
    for name in PARQUET:
        (copy / name).unlink()
    done = outputs.export(tmp_path, SEED_ID, ("parquet",))
    assert done == outputs.Exported(SEED_ID, "written", "points.parquet, lines.parquet")
    # points.parquet has no rank: the same file, byte for byte, whatever it was made from.
    assert (copy / "points.parquet").read_bytes() == (directory / "points.parquet").read_bytes()
    ours, theirs = (pq.read_table(d / "lines.parquet").to_pylist() for d in (copy, directory))
    assert [line["rank"] for line in ours] == [None] * result.lines
    assert [dict(line, rank=None) for line in theirs] == ours
    meta = pq.read_schema(copy / "lines.parquet").metadata[b"asyncdl"]
    assert orjson.loads(meta)["from"] == "data.json"
    assert recorded(copy) == on_disk(copy, DATA, *PARQUET)  # export records what it wrote


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
        assert outputs.export(tmp_path, data_set, ("parquet",)).status == "written"
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
    assert recorded(directory) == on_disk(directory, DATA, *PARQUET)
    stamp = (directory / "points.parquet").stat().st_ino
    await asyncdl.fetch([SEED_ID], tmp_path, **with_parquet)
    assert (directory / "points.parquet").stat().st_ino == stamp  # there already: left alone


async def test_a_damaged_parquet_file_is_made_again_from_data_json_without_requests(
    emulator, tmp_path
):
    [first] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints
    )
    directory = tmp_path / str(SEED_ID)
    assert first.complete and not (directory / "lines.ndjson").exists()
    written = {name: (directory / name).read_bytes() for name in PARQUET}
    files = recorded(directory)

    async def rerun():
        emulator.stats.reset()
        [again] = await asyncdl.fetch(
            [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints
        )
        assert again.complete and again.skipped and emulator.stats.requests.total() == 0
        assert recorded(directory) == on_disk(directory, DATA, *PARQUET)

    os.truncate(directory / "points.parquet", 100)  # cut short: its size says so
    await rerun()
    # Made again alone, the same file; lines.parquet, intact, is left as it is (with its ranks).
    assert {name: (directory / name).read_bytes() for name in PARQUET} == written
    assert recorded(directory) == files

    (directory / "lines.parquet").unlink()
    await rerun()
    # From data.json, whose lines do not give the ranks back: the rest is the same.
    remade = pq.read_table(directory / "lines.parquet").to_pylist()
    original = pq.read_table(pa.BufferReader(written["lines.parquet"])).to_pylist()
    assert {line["rank"] for line in original} != {None}
    assert [dict(line, rank=None) for line in original] == remade
    assert (directory / "points.parquet").read_bytes() == written["points.parquet"]


async def test_a_damaged_data_json_is_not_read_for_parquet(emulator, tmp_path):
    # A rerun that would make Parquet from data.json checks it byte for byte first: a changed
    # byte (same size) is found, the data set is fetched again, and Parquet comes from the answers.
    plain = dataclasses.replace(OPTIONS, formats=())
    [first] = await asyncdl.fetch([SEED_ID], tmp_path, options=plain, endpoints=emulator.endpoints)
    data = tmp_path / str(SEED_ID) / "data.json"
    body = data.read_bytes()
    changed = bytearray(body)
    at = body.index(b'"density":') + len(b'"density":')
    changed[at] = ord("9") if changed[at] != ord("9") else ord("8")
    data.write_bytes(bytes(changed))
    emulator.stats.reset()
    [again] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints
    )
    assert again.complete and not again.skipped
    assert emulator.stats.requests["query"] == first.targets  # the journal had gone: asked again
    assert data.read_bytes() == body
    assert rows(data.parent / "points.parquet") == expected_points(load(data), SEED_ID)


async def test_starting_over_drops_the_files_made_from_the_old_data_json(emulator, tmp_path):
    [first] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints
    )
    directory = tmp_path / str(SEED_ID)
    assert all((directory / name).is_file() for name in PARQUET)
    other = FetchOptions(concurrency=16, density_range=(0.1, 0.15), restart=True)
    [again] = await asyncdl.fetch([SEED_ID], tmp_path, options=other, endpoints=emulator.endpoints)
    assert again.complete and again.lines != first.lines
    assert not any((directory / name).exists() for name in PARQUET)  # they held the old answers
    assert set(recorded(directory)) == {DATA}


async def test_a_format_that_cannot_be_written_leaves_the_data_set_incomplete(
    emulator, tmp_path, monkeypatch
):
    def refuse(store, lines, names):
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
    assert set(summary["files"]) == {DATA}  # only what was written is vouched for
    assert (tmp_path / str(SEED_ID) / "lines.ndjson").is_file()  # unfinished: the journal stays


async def test_fetch_without_pyarrow_is_refused_before_any_request(emulator, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    options = FetchOptions(formats=("parquet",))
    with pytest.raises(UsageError, match=r"pip install 'asyncdl\[parquet\]'"):
        await asyncdl.fetch([SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints)
    assert emulator.stats.requests.total() == 0


def test_cli_fetch_with_several_formats_and_export(emulator, tmp_path):
    out = tmp_path / "data"
    proc = run_cli(
        "fetch", SEED_ID, "-o", out, "--format", "parquet,brainrender", "--density-range", "0.1",
        "0.11", *server_args(emulator),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = outputs.final_files(SEED_ID, ("parquet", "brainrender"))
    assert all((out / str(SEED_ID) / name).is_file() for name in names)
    both = (out / str(SEED_ID) / "points.parquet").read_bytes()

    proc = run_cli("export", out, "--format", "parquet", "--format", "seed")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{SEED_ID}: wrote points.parquet, lines.parquet\n"
    assert proc.stderr == "asyncdl: exported 1 of 1 data sets\n"
    assert rows(out / str(SEED_ID) / "points.parquet") == rows_of(both, tmp_path)

    proc = run_cli("export", out, SEED_ID, 42, "--format", "parquet")
    assert proc.returncode == 1
    assert "42: FAILED: not fetched\n" in proc.stderr
    assert "exported 1 of 2 data sets" in proc.stderr and "Traceback" not in proc.stderr
    assert recorded(out / str(SEED_ID)) == on_disk(
        out / str(SEED_ID), *outputs.final_files(SEED_ID, ("brainrender", "parquet"))
    )


def test_cli_export_does_not_read_a_damaged_data_json(two_data_sets):
    out, _ = two_data_sets
    data = out / str(SEED_ID) / "data.json"
    body = bytearray(data.read_bytes())
    at = body.rindex(b".0]") + 1  # the last coordinate's decimal: same size, another number
    body[at] = ord("5")
    data.write_bytes(bytes(body))
    before = (out / str(SEED_ID) / "points.parquet").read_bytes()
    proc = run_cli("export", out, "--format", "parquet")
    assert proc.returncode == 5  # Exit.DAMAGED
    assert proc.stdout == f"{OTHER_ID}: wrote points.parquet, lines.parquet\n"
    assert proc.stderr.splitlines() == [
        f"{SEED_ID}: DAMAGED: data.json does not match the SHA-256 summary.json records",
        "asyncdl: exported 1 of 2 data sets; run the same fetch again to repair the damaged",
    ]
    assert (out / str(SEED_ID) / "points.parquet").read_bytes() == before
    assert load(out / str(SEED_ID) / "summary.json")["status"] == "damaged"  # for the next fetch


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
    proc = run_cli(*(a.format(out=tmp_path) for a in args))
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_export_without_pyarrow_says_what_to_install(two_data_sets, tmp_path_factory):
    out, _ = two_data_sets
    hidden = tmp_path_factory.mktemp("no_pyarrow")  # first on the path: pyarrow does not import
    (hidden / "pyarrow").mkdir()
    (hidden / "pyarrow" / "__init__.py").write_text("raise ImportError('no pyarrow here')\n")
    proc = run_cli("export", out, "--format", "parquet", env={"PYTHONPATH": str(hidden)})
    assert proc.returncode == 2
    assert proc.stderr == (
        "asyncdl: error: Parquet output needs pyarrow: pip install 'asyncdl[parquet]'\n"
    )


def test_read_parquet_without_pandas_says_what_to_install(two_data_sets, monkeypatch):
    out, _ = two_data_sets
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(UsageError, match=r"read_parquet needs pandas: pip install"):
        asyncdl.read_parquet(out)
