import json
from pathlib import Path

import pytest

from asyncdl import UsageError, brainrender
from asyncdl.brainrender import streamlines_file, write_brainrender

from .conftest import SEED_ID, SHARED
from .streamline_data import write_data_json

EXAMPLE = SHARED / "reference" / "brainrender_example_streamlines.json"
POINT_KEYS = ["x", "y", "z", "density", "intensity"]


def kinds(values):
    """JSON kinds of values: 'int', 'float' (bool is not a number here)."""
    return {"bool" if isinstance(v, bool) else type(v).__name__ for v in values}


def schema(doc):
    """What a streamlines file looks like: keys, nesting, key order and value kinds per key."""
    points = [p for line in doc["lines"] for p in line]
    return {
        "keys": list(doc),
        "lines": type(doc["lines"]).__name__,
        "line": {type(line).__name__ for line in doc["lines"]},
        "point_keys": {tuple(p) for p in points},
        "point_kinds": {k: kinds(p[k] for p in points) for k in POINT_KEYS},
        "site_keys": {tuple(s) for s in doc["injection_sites"]},
        "site_kinds": {k: kinds(s[k] for s in doc["injection_sites"]) for k in "xyz"},
    }


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    directory = tmp_path_factory.mktemp("out") / str(SEED_ID)
    data = write_data_json(directory, SEED_ID, every=6)
    return directory, data


@pytest.fixture(scope="module")
def written(fetched):
    directory, data = fetched
    path = write_brainrender(directory)
    return path, data


def test_file_is_named_like_the_viewers(written):
    path, _ = written
    assert path == streamlines_file(path.parent, SEED_ID)
    assert path.name == f"streamlines_{SEED_ID}.json"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_schema_is_the_real_examples(written):
    if not EXAMPLE.exists():
        pytest.skip("../shared/reference is not beside this checkout")
    real = schema(json.loads(EXAMPLE.read_bytes()))
    ours = schema(json.loads(written[0].read_bytes()))
    assert ours["keys"] == real["keys"] == ["lines", "injection_sites"]
    assert ours["lines"] == real["lines"] == "list"
    assert ours["line"] == real["line"] == {"list"}
    assert ours["point_keys"] == real["point_keys"] == {tuple(POINT_KEYS)}
    assert ours["site_keys"] == real["site_keys"] == {("x", "y", "z")}
    for key in "xyz":  # whole microns in both
        assert ours["point_kinds"][key] == real["point_kinds"][key] == {"int"}
    for key in ["density", "intensity"]:  # numbers: the real file has floats, and ints for 0 and 1
        assert ours["point_kinds"][key] <= real["point_kinds"][key] == {"int", "float"}
    assert ours["site_kinds"] == real["site_kinds"] == {key: {"int"} for key in "xyz"}


def test_one_json_object_on_one_line(written):
    # brainrender reads these files with pandas.read_json(..., lines=True).
    body = written[0].read_bytes()
    assert b"\n" not in body.rstrip(b"\n")
    assert isinstance(json.loads(body), dict)


def test_content_is_the_fetched_paths(written):
    path, data = written
    doc = json.loads(path.read_bytes())
    assert len(doc["lines"]) == len(data["lines"]) > 100
    for line, record in zip(doc["lines"], data["lines"], strict=True):
        assert len(line) == len(record["path"])
        for point, source in zip(line, record["path"], strict=True):
            assert [point["x"], point["y"], point["z"]] == [round(c) for c in source["coord"]]
            assert point["density"] == source["density"]
            assert point["intensity"] == source["intensity"]
        # from the target voxel to the injection site, as the viewer's files run
        assert [line[-1][k] for k in "xyz"] == record["injection-coordinates"]
    assert doc["injection_sites"] == [
        {"x": round(x), "y": round(y), "z": round(z)} for x, y, z in data["injectionCoordinates"]
    ]


def test_written_in_pieces_not_one_string(fetched, monkeypatch):
    directory, data = fetched
    seen: list[int] = []

    def spy(path, chunks):
        seen.extend(len(chunk) for chunk in chunks)

    monkeypatch.setattr(brainrender, "atomic_write", spy)
    write_brainrender(directory)
    assert len(seen) >= len(data["lines"])
    assert max(seen) < 20_000


def test_errors_are_one_line_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="fetch the data set first"):
        write_brainrender(tmp_path / "123")
    bad = tmp_path / "456"
    bad.mkdir()
    for body in [b"{", b'{"lines": 3, "injectionCoordinates": []}', b'{"lines": [{"path": []}]}']:
        (bad / "data.json").write_bytes(body)
        with pytest.raises(UsageError, match=r"data\.json"):
            write_brainrender(bad)
    assert not list(bad.glob("streamlines_*"))


def test_id_comes_from_the_records_when_the_folder_is_renamed(fetched, tmp_path):
    directory, _ = fetched
    renamed = tmp_path / "my-experiment"
    renamed.mkdir()
    (renamed / "data.json").write_bytes((directory / "data.json").read_bytes())
    assert write_brainrender(renamed) == Path(renamed, f"streamlines_{SEED_ID}.json")
