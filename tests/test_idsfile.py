"""``--ids-file`` / ``read_ids_file``: one id per line, AllenSDK's CSV and JSON, and bad files."""

import json

import pytest

from asyncdl import UsageError, idsfile, read_ids_file
from asyncdl.emulator.catalog import catalogue

from .allensdk_standin import experiments, raw_rows, to_dataframe
from .conftest import SEED_ID, run_cli, server_args

IDS = [SEED_ID, 100141219, 112514202]


def get_experiments(ids):
    """AllenSDK's records and DataFrame for ``ids`` (see allensdk_standin)."""
    records = experiments(raw_rows(ids))
    return records, to_dataframe(records)


def test_one_id_per_line_with_comments(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text(f"# experiments\n{IDS[0]}  # the seed's\n\n   {IDS[1]}\n{IDS[2]}#\n")
    assert read_ids_file(path) == IDS
    path.write_text("")
    assert read_ids_file(path) == []


def test_allensdk_csv(tmp_path):
    _, frame = get_experiments(IDS)
    path = tmp_path / "experiments.csv"
    frame.to_csv(path)
    header, first, *_ = path.read_text().splitlines()
    # What makes it a test of the real thing: the index and the column are both "id", and the
    # list and the quoted name are quoted fields with commas inside.
    assert header.split(",").count("id") == 2 and header.startswith("id,")
    assert '"[385, 593]"' in first and '"experiment 0, ""quoted"""' in first
    assert read_ids_file(path) == IDS
    frame.to_csv(path, index=False)
    assert read_ids_file(path) == IDS
    frame[["id"]].to_csv(path, index=False)  # one column: the header is just "id"
    assert read_ids_file(path) == IDS
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))  # Excel's
    assert read_ids_file(path) == IDS


def test_allensdk_json(tmp_path):
    records, frame = get_experiments(IDS)
    path = tmp_path / "experiments.json"
    path.write_text(json.dumps(raw_rows(IDS), indent=2))  # AllenSDK's cached experiments.json
    assert read_ids_file(path) == IDS
    path.write_text(json.dumps(records))  # json.dump(mcc.get_experiments(), f)
    assert read_ids_file(path) == IDS
    frame.to_json(path, orient="records")
    assert read_ids_file(path) == IDS
    path.write_text(json.dumps(IDS))
    assert read_ids_file(path) == IDS


def test_json_lines_of_records(tmp_path):
    # What `asyncdl list --json` prints: the service's own records, one per line.
    records = [entry.record for entry in catalogue()[:5]]
    path = tmp_path / "experiments.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_ids_file(path) == [r["id"] for r in records]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"hello world\n", "line 1: not a data set id: 'hello world'"),
        (b"156394513\n-4\n", "line 2: not a data set id: '-4'"),
        (b"name,volume\nx,1\n", "a CSV without an 'id' column (columns: name, volume)"),
        (b"id,name\n12,a\nnope,b\n", "row 3: not a data set id: 'nope'"),
        (b"id,name,id\n12,a,13\n", "row 2: its 'id' columns disagree"),
        (b"name,id\nx\n", "row 2 has 1 fields, fewer than the header"),
        (b'[{"name": "x"}]', "item 1 has no 'id' (keys: name)"),
        (b'[{"id": true}]', "item 1: not a data set id"),
        (b'["156394513"]', "item 1 is not an experiment record or an id"),
        (b'[{"id": 1},', "the file is not valid JSON"),
        (b'{"id": 1}\n{"name": 2}\n', "line 2 has no 'id'"),
        (b'{"a": [1,\n2]}\n', "line 1 is not valid JSON"),
    ],
)
def test_bad_files_are_one_line_usage_errors(tmp_path, body, message):
    path = tmp_path / "ids"
    path.write_bytes(body)
    with pytest.raises(UsageError) as info:
        read_ids_file(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"ids file {path}: ")
    assert message in text
    assert text.endswith(f"an ids file is {idsfile.FORMS}")


def test_unreadable_binary_and_oversize_files(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match=r"cannot read ids file .*: No such file"):
        read_ids_file(tmp_path / "missing")
    binary = tmp_path / "ids.gz"
    binary.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe")
    with pytest.raises(UsageError, match="is not UTF-8 text; an ids file is one id per line"):
        read_ids_file(binary)
    big = tmp_path / "big.txt"
    big.write_text(f"{SEED_ID}\n" * 100)
    monkeypatch.setattr(idsfile, "MAX_IDS_FILE_BYTES", 999)
    with pytest.raises(UsageError, match="is larger than"):
        read_ids_file(big)
    monkeypatch.setattr(idsfile, "MAX_IDS_FILE_BYTES", 1000)
    assert read_ids_file(big) == [SEED_ID] * 100


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("prose.txt", b"the experiments I want: VISp ones\n"),
        ("no-id.csv", b"experiment,volume\n156394513,0.2\n"),
        ("records.json", b'[{"experiment": 156394513}]'),
        ("binary.bin", b"\x00\xff\xfe\x00"),
    ],
)
def test_cli_bad_ids_file_exits_2_with_one_line(tmp_path, name, body):
    (tmp_path / name).write_bytes(body)
    proc = run_cli("fetch", "--ids-file", name, "-o", "out", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"asyncdl: error: ids file {name}")
    assert "a CSV with an 'id' column" in line
    assert not (tmp_path / "out").exists()


def test_cli_reads_allensdk_files(emulator, tmp_path):
    # A dry run only downloads the volumes, and names every data set it was given.
    _, frame = get_experiments(IDS[:2])
    frame.to_csv(tmp_path / "experiments.csv")
    (tmp_path / "experiments.json").write_text(json.dumps(raw_rows(IDS[:2])))
    for name in ["experiments.csv", "experiments.json"]:
        proc = run_cli(
            "fetch",
            "--ids-file",
            tmp_path / name,
            "--dry-run",
            "-o",
            tmp_path / "out",
            *server_args(emulator),
        )
        assert proc.returncode == 0, proc.stderr
        listed = [line.split(":")[0] for line in proc.stdout.splitlines()[:-1]]
        assert listed == [str(i) for i in IDS[:2]]
