import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asyncdl import UsageError, brainrender, read_streamlines
from asyncdl.brainrender import streamlines_file, write_brainrender

from .brainrender_standin import Streamlines, drawn
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


def row(doc):
    """The one row of pandas' "columns" layout: ``{"lines": {"0": X}, ...}`` -> ``{"lines": X, ...}``."""
    assert {key: list(column) for key, column in doc.items()} == {
        "lines": ["0"],
        "injection_sites": ["0"],
    }
    return {key: column["0"] for key, column in doc.items()}


def test_schema_is_the_real_examples(written):
    # The reference is the viewer's plain layout (what brainrender read with lines=True); ours
    # holds exactly that as row "0" of pandas' "columns" layout.
    if not EXAMPLE.exists():
        pytest.skip("../shared/reference is not beside this checkout")
    real = schema(json.loads(EXAMPLE.read_bytes()))
    ours = schema(row(json.loads(written[0].read_bytes())))
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


def test_layout_is_what_pandas_makes_of_the_viewers_file(written):
    # brainrender (before 2.1.20) read the viewer's file with read_json(lines=True) and cached it
    # with to_json(): that cache file and ours have one layout, and read back to the same frame.
    if not EXAMPLE.exists():
        pytest.skip("../shared/reference is not beside this checkout")
    with pytest.raises(ValueError, match="same length"):
        pd.read_json(EXAMPLE)  # the plain layout is not a frame
    viewer = pd.read_json(EXAMPLE, lines=True)
    cached = json.loads(viewer.to_json())
    ours = json.loads(written[0].read_bytes())
    theirs, mine = schema(row(cached)), schema(row(ours))  # row() checks the "0" layout
    for key in ["keys", "lines", "line", "point_keys", "site_keys", "site_kinds"]:
        assert mine[key] == theirs[key]
    frame = pd.read_json(written[0])
    assert frame.columns.tolist() == viewer.columns.tolist() == ["lines", "injection_sites"]
    assert frame.index.tolist() == viewer.index.tolist() == [0]


def test_pandas_reads_it_as_brainrender_does(written, fetched):
    path, data = written
    frame = pd.read_json(path)  # brainrender's call, no lines=True
    assert frame.shape == (1, 2)
    streamlines = read_streamlines(fetched[0])
    lines = frame["lines"][0]
    assert len(lines) == len(data["lines"]) == len(streamlines.paths) > 100
    for line, record, array in zip(lines, data["lines"], streamlines.paths, strict=True):
        assert [[p["x"], p["y"], p["z"]] for p in line] == np.rint(array[:, :3]).tolist()
        assert [[p["x"], p["y"], p["z"]] for p in line] == [
            [round(c) for c in point["coord"]] for point in record["path"]
        ]
        # pandas' default float parser (precise_float=False) keeps 15 decimals; the exact values
        # are checked with json in test_content_is_the_fetched_paths
        values = [[p["density"], p["intensity"]] for p in line]
        np.testing.assert_allclose(values, array[:, 3:], rtol=1e-9, atol=1e-15)
    assert frame["injection_sites"][0] == [
        {"x": round(x), "y": round(y), "z": round(z)} for x, y, z in data["injectionCoordinates"]
    ]


def test_the_actor_draws_one_tube_per_line_and_the_injection(written, fetched):
    path, data = written
    streamlines = read_streamlines(fetched[0])
    for actor in [Streamlines(pd.read_json(path)), Streamlines(path), Streamlines(str(path))]:
        assert len(actor.tubes) == len(data["lines"])
        for tube, array in zip(actor.tubes, streamlines.paths, strict=True):
            np.testing.assert_array_equal(tube, np.rint(array[:, :3]))
        np.testing.assert_array_equal(actor.injection, np.rint(streamlines.injection))
        assert len(actor.injection) == len(data["injectionCoordinates"]) > 10


def test_the_old_plain_layout_is_what_the_actor_cannot_read(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"lines": [[{"x": 1, "y": 2, "z": 3}]] * 2, "injection_sites": []}))
    with pytest.raises(ValueError, match="same length"):
        Streamlines(plain)


def test_one_json_object_on_one_line(written):
    # As pandas' DataFrame.to_json() writes it.
    body = written[0].read_bytes()
    assert b"\n" not in body.rstrip(b"\n")
    assert isinstance(json.loads(body), dict)


def test_a_data_set_without_lines_still_loads(tmp_path):
    directory = tmp_path / str(SEED_ID)
    directory.mkdir()
    (directory / "data.json").write_text(
        json.dumps({"lines": [], "injectionCoordinates": [[100.0, 200.0, 300.0]]})
    )
    frame = pd.read_json(write_brainrender(directory))
    tubes, injection = drawn(frame)
    assert tubes == [] and injection.tolist() == [[100, 200, 300]]


def test_content_is_the_fetched_paths(written):
    path, data = written
    doc = row(json.loads(path.read_bytes()))
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
