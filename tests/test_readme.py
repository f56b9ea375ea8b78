"""The README's commands, run as written: the quick start, the test command CI runs, and the
"Common tasks" section, in order, in a fresh folder.

The section's ``sh`` blocks run as real ``asyncdl`` processes, each with ``--emulator`` added (the
README's commands are the ones for the real servers); its Python blocks run with ``exec``.
brainrender (vtk, a GPU) and AllenSDK are not installed here: stand-ins that read data as
brainrender's actor does and build the experiment table as AllenSDK does are put in sys.modules
instead.
"""

import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from . import allensdk_standin, brainrender_standin
from .conftest import SEED_ID, run_cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "Common tasks"
OTHER_ID = 100141219  # fetched by the AllenSDK example; the seed's data set is there already


def section(title):
    """The text of the README's section ``## title``, up to the next one."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def section_blocks():
    """The fenced blocks of the section: (language, code), in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```$", section(SECTION), re.M | re.S)


def quick_start():
    """The quick start's two commands (install and fetch, then the tests), and the output shown."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", section("Quick start"), re.M | re.S)
    [fetch, tests] = [code.strip() for language, code in blocks if language == "sh"]
    [shown] = [code for language, code in blocks if not language]
    return fetch, tests, shown.splitlines()


def masked(line):
    """An output line without what changes from run to run: the port, times and rates."""
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
    return re.sub(r"\d+\.\d+ s\b", "T s", re.sub(r"\(\d+/s\)", "(R/s)", line))


def commands(script):
    """The asyncdl commands of a sh block, those that ask a server pointed at a bundled emulator."""
    for line in script.splitlines():
        if line.strip() and not line.strip().startswith("#"):
            argv = shlex.split(line)
            assert argv[0] == "asyncdl", line
            talks_to_a_server = argv[1] in ("fetch", "list")
            yield [*argv[1:], "--emulator"] if talks_to_a_server else argv[1:]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Run the section; return the folder and, per block, its processes or its namespace."""
    work = tmp_path_factory.mktemp("readme")
    results: list[tuple[str, str, Any]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        brainrender_standin.install(mp)
        allensdk_standin.install(mp, [SEED_ID, OTHER_ID])
        for language, code in section_blocks():
            if language == "sh":
                procs = [run_cli(*argv, timeout=600) for argv in commands(code)]
                results.append((language, code, procs))
            else:
                assert language == "python"
                namespace = {"__name__": "readme"}
                exec(compile(code, str(README), "exec"), namespace)
                results.append((language, code, namespace))
        scenes, calls = list(brainrender_standin.SCENES), list(allensdk_standin.CALLS)
    return work, results, scenes, calls


def block(ran, word):
    [found] = [result for language, code, result in ran[1] if language == "python" and word in code]
    return found


def commands_of(ran, word):
    [found] = [result for language, code, result in ran[1] if language == "sh" and word in code]
    return found


def data_json(work, data_set=SEED_ID):
    return orjson.loads((work / "data" / str(data_set) / "data.json").read_bytes())


def test_the_section_shows_the_three_hand_offs_and_every_command_works(ran):
    _, results, _, _ = ran
    assert [language for language, _, _ in results] == (
        ["sh", "python"] * 2 + ["python", "sh"] + ["sh", "python"]
    )
    for language, code, procs in results:
        if language == "sh":
            assert procs
            for proc in procs:
                assert proc.returncode == 0, (code, proc.stderr)
                assert "Traceback" not in proc.stderr


def test_pandas_and_numpy(ran):
    work, *_ = ran
    ns = block(ran, "read_streamlines")
    data = data_json(work)
    coords = [point["coord"] for record in data["lines"] for point in record["path"]]
    assert len(data["lines"]) > 1000
    np.testing.assert_array_equal(ns["points"][["x", "y", "z"]].to_numpy(), coords)
    assert ns["points"]["line"].nunique() == len(data["lines"])
    firsts = [record["path"][0]["coord"] for record in data["lines"]]
    np.testing.assert_array_equal(ns["targets"][["x", "y", "z"]].to_numpy(), firsts)
    np.testing.assert_array_equal(ns["injection"].to_numpy(), data["injectionCoordinates"])


def test_brainrender(ran):
    work, _, scenes, _ = ran
    data = data_json(work)
    [scene] = scenes
    assert scene.rendered
    [actor] = scene.actors
    assert len(actor.tubes) == len(data["lines"]) > 1000
    for tube, record in zip(actor.tubes, data["lines"], strict=True):
        np.testing.assert_array_equal(tube, np.rint([p["coord"] for p in record["path"]]))
    np.testing.assert_array_equal(actor.injection, np.rint(data["injectionCoordinates"]))


def test_ids_from_allensdk(ran):
    work, _, _, calls = ran
    assert calls == [{"dataframe": True, "cre": False, "injection_structure_ids": [385]}]
    header = (work / "experiments.csv").read_text().splitlines()[0]
    assert header.startswith("id,") and header.split(",").count("id") == 2  # AllenSDK's CSV
    [fetch] = commands_of(ran, "--ids-file")
    assert f"{SEED_ID}: already complete" in fetch.stderr
    assert f"{OTHER_ID}: ok: " in fetch.stderr
    assert "2 of 2 data sets complete" in fetch.stderr
    assert data_json(work, OTHER_ID)["lines"]


def test_parquet_one_liners(ran):
    work, *_ = ran
    [export] = commands_of(ran, "export")
    assert export.stdout.splitlines() == [
        f"{data_set}: wrote points.parquet, lines.parquet" for data_set in (OTHER_ID, SEED_ID)
    ]
    ns = block(ran, "read_parquet")
    data = {data_set: data_json(work, data_set) for data_set in sorted([SEED_ID, OTHER_ID])}
    expected = [
        (data_set, line, point, *p["coord"], p["density"], p["intensity"])
        for data_set, doc in data.items()
        for line, record in enumerate(doc["lines"])
        for point, p in enumerate(record["path"])
    ]
    points = ns["points"]
    assert list(points.itertuples(index=False, name=None)) == expected
    assert ns["same"].equals(points)
    assert ns["also"].rows() == expected  # polars
    counts = dict(ns["per_data_set"].itertuples(index=False, name=None))  # DuckDB
    assert counts == {
        data_set: sum(len(r["path"]) for r in doc["lines"]) for data_set, doc in data.items()
    }


def test_the_quick_start_runs_as_written_and_prints_what_it_shows(tmp_path):
    fetch, _, shown = quick_start()
    install, command_line = (part.strip() for part in fetch.split("&&"))
    assert install == "pip install ."  # this suite runs from such an install
    argv = shlex.split(command_line)
    assert argv[0] == "asyncdl" and "--emulator" in argv
    proc = run_cli(*argv[1:], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert [masked(line) for line in proc.stderr.splitlines()] == [masked(s) for s in shown]
    assert data_json(tmp_path)["lines"]


def test_ci_runs_the_readmes_test_command():
    _, tests, _ = quick_start()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
    assert "exit 10" in ci  # a failed install has its own status
