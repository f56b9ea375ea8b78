"""Finished output is verified, never just trusted: a damaged folder is repaired to the bytes of an
uninterrupted run (rebuilt from the journal, else fetched again, with a note), ``asyncdl verify``
finds what a size check cannot, and the journal goes once data.json is written and verified.

Every run is against the emulator on a loopback socket; each scenario is one the issue reproduced.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

import asyncdl
from asyncdl import FetchOptions
from asyncdl.emulator import Emulator, FaultPlan

from .conftest import SEED_ID, Recorder, run_cli, server_args

OTHER_ID = 100141219
IDS = (SEED_ID, OTHER_ID)
SMALL = (0.1, 0.12)  # a few hundred targets per data set: quick runs
OPTIONS = FetchOptions(concurrency=8, density_range=SMALL)


@pytest.fixture(scope="module")
def uninterrupted(
    emulator_server: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, bytes]:
    """data.json of each of IDS from a run that nothing interrupted or damaged."""
    out = tmp_path_factory.mktemp("uninterrupted")
    results = asyncdl.fetch_sync(IDS, out, options=OPTIONS, endpoints=emulator_server.endpoints)
    assert all(r.complete for r in results)
    return {data_set: (out / str(data_set) / "data.json").read_bytes() for data_set in IDS}


async def fetch(
    out: Path, emulator: Emulator, ids: tuple[int, ...] = (SEED_ID,), **changes: Any
) -> tuple[list[asyncdl.DataSetResult], list[tuple[int, str, str]]]:
    """A run's results, and its repair notes: (data set, damage, remedy) each."""
    recorder = Recorder()
    options = replace(OPTIONS, **changes)
    results = await asyncdl.fetch(
        ids, out, options=options, endpoints=emulator.endpoints, events=recorder
    )
    notes = [(n["data_set"], n["damage"], n["remedy"]) for n in recorder.of("repairing")]
    return results, notes


def folder(out: Path, data_set: int = SEED_ID) -> Path:
    return out / str(data_set)


# -- damaged final files -------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "empty", "missing"])
async def test_a_damaged_data_json_is_fetched_again_to_the_same_bytes(
    emulator, uninterrupted, tmp_path, damage
):
    [first], _ = await fetch(tmp_path, emulator)
    assert first.complete
    data = folder(tmp_path) / "data.json"
    if damage == "missing":
        data.unlink()
    else:  # cut short (a copy that ran out of space), or emptied with a complete summary.json
        os.truncate(data, data.stat().st_size // 2 if damage == "truncated" else 0)
    emulator.stats.reset()
    [again], notes = await fetch(tmp_path, emulator)
    assert again.complete and not again.skipped
    assert data.read_bytes() == uninterrupted[SEED_ID]
    # The journal went when the data set finished: every target is asked again.
    assert emulator.stats.requests["query"] == again.targets == first.targets
    [(data_set, what, remedy)] = notes
    assert data_set == SEED_ID and "data.json" in what and f"fetching its {first.targets}" in remedy
    emulator.stats.reset()
    [third], notes = await fetch(tmp_path, emulator)
    assert third.skipped and not notes and sum(emulator.stats.requests.values()) == 0


async def test_with_the_journal_kept_a_damaged_data_json_is_rebuilt_without_a_request(
    emulator, uninterrupted, tmp_path
):
    [first], _ = await fetch(tmp_path, emulator, keep_journal=True)
    journal = folder(tmp_path) / "lines.ndjson"
    assert first.complete and journal.stat().st_size > 0
    data = folder(tmp_path) / "data.json"
    os.truncate(data, 1000)
    emulator.stats.reset()
    [again], notes = await fetch(tmp_path, emulator, keep_journal=True)
    assert again.complete and again.resumed == again.targets and again.requests <= 3  # volumes
    assert emulator.stats.requests["query"] == 0
    assert data.read_bytes() == uninterrupted[SEED_ID]
    [(_, what, remedy)] = notes
    assert "data.json is 1,000 bytes" in what and "rebuilding data.json from" in remedy


async def test_a_damaged_brainrender_file_is_made_again_from_data_json_without_a_request(
    emulator, tmp_path
):
    [first], _ = await fetch(tmp_path, emulator, formats=("brainrender",))
    assert first.complete
    viewer = folder(tmp_path) / f"streamlines_{SEED_ID}.json"
    written = viewer.read_bytes()
    recorded = orjson.loads((folder(tmp_path) / "summary.json").read_bytes())["files"]
    assert recorded[viewer.name] == {
        "size": len(written),
        "sha256": hashlib.sha256(written).hexdigest(),
    }
    os.truncate(viewer, len(written) - 10)
    emulator.stats.reset()
    [again], notes = await fetch(tmp_path, emulator, formats=("brainrender",))
    assert again.skipped and sum(emulator.stats.requests.values()) == 0 and not notes
    assert viewer.read_bytes() == written
    assert orjson.loads((folder(tmp_path) / "summary.json").read_bytes())["files"] == recorded
    # Without --format brainrender, its file is not the rerun's business (verify still reads it).
    viewer.unlink()
    [third], _ = await fetch(tmp_path, emulator)
    assert third.skipped and not viewer.exists()


async def test_the_journal_goes_once_data_json_is_verified_and_stays_while_unfinished(
    emulator, tmp_path
):
    # Spatial searches fail for good 30% of the time: an unfinished data set keeps its journal.
    plan = FaultPlan(rate=0.3, seed=5, kinds=("503",), routes=frozenset({"query"}))
    async with Emulator(faults=plan) as faulty:
        [first], _ = await fetch(tmp_path, faulty, retries=0)
    journal = folder(tmp_path) / "lines.ndjson"
    assert not first.complete and journal.stat().st_size > 0
    [second], _ = await fetch(tmp_path, emulator)
    assert second.complete and second.resumed == first.targets - first.failures
    assert not journal.exists()
    summary = orjson.loads((folder(tmp_path) / "summary.json").read_bytes())
    data = (folder(tmp_path) / "data.json").read_bytes()
    assert summary["files"] == {
        "data.json": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    }


async def test_a_journal_left_behind_goes_on_a_rerun_once_data_json_is_verified(emulator, tmp_path):
    await fetch(tmp_path, emulator, keep_journal=True)
    journal = folder(tmp_path) / "lines.ndjson"
    data = folder(tmp_path) / "data.json"
    body = bytearray(data.read_bytes())
    body[len(body) // 2] ^= 1  # same size: only a byte-for-byte check sees it
    data.write_bytes(bytes(body))
    emulator.stats.reset()
    [again], notes = await fetch(tmp_path, emulator)  # without --keep-journal
    # data.json was checked before its journal could go: it is rebuilt from it instead.
    assert again.complete and emulator.stats.requests["query"] == 0
    [(_, what, _)] = notes
    assert "SHA-256" in what and not journal.exists()
    [third], notes = await fetch(tmp_path, emulator)
    assert third.skipped and not notes


async def test_a_summary_of_an_older_asyncdl_is_vouched_for_by_rebuilding_from_the_journal(
    emulator, uninterrupted, tmp_path
):
    await fetch(tmp_path, emulator, keep_journal=True)
    path = folder(tmp_path) / "summary.json"
    summary = orjson.loads(path.read_bytes())
    del summary["files"]  # as asyncdl 0.2 wrote it
    path.write_bytes(orjson.dumps(summary))
    emulator.stats.reset()
    [again], notes = await fetch(tmp_path, emulator)
    assert again.complete and emulator.stats.requests["query"] == 0
    assert (folder(tmp_path) / "data.json").read_bytes() == uninterrupted[SEED_ID]
    [(_, what, _)] = notes
    assert "records no size and SHA-256 of data.json" in what
    assert "data.json" in orjson.loads(path.read_bytes())["files"]


# -- damaged run.json and summary.json: damage to one data set, never "other parameters" --------


def test_garbage_in_run_json_is_repaired_and_the_other_ids_go_on(emulator, uninterrupted, tmp_path):
    args = ("fetch", *IDS, "-o", tmp_path, "-c", 8, "--density-range", *SMALL)
    first = run_cli(*args, *server_args(emulator))
    assert first.returncode == 0, first.stderr
    (folder(tmp_path) / "run.json").write_bytes(b'{"format": 1, "params": {"density_ra\x00\xff')
    emulator.stats.reset()
    again = run_cli(*args, *server_args(emulator))
    assert again.returncode == 0, again.stderr
    lines = again.stderr.strip().splitlines()
    [note] = [line for line in lines if "repairing" in line]
    assert note.startswith(f"{SEED_ID}: repairing (run.json cannot be read)")
    assert any(line.startswith(f"{OTHER_ID}: already complete") for line in lines)
    for data_set in IDS:
        assert (folder(tmp_path, data_set) / "data.json").read_bytes() == uninterrupted[data_set]
    # Only the damaged data set was asked again (its journal had gone with completion).
    assert {ds for _, ds, _, _ in emulator.stats.log or [] if ds} <= {SEED_ID}


async def test_an_unreadable_summary_json_is_repaired_and_the_other_ids_go_on(
    emulator, uninterrupted, tmp_path
):
    await fetch(tmp_path, emulator, IDS)
    (folder(tmp_path) / "summary.json").write_bytes(b"\x00" * 100)
    [damaged, other], notes = await fetch(tmp_path, emulator, IDS)
    assert damaged.complete and not damaged.skipped and other.skipped
    assert [(ds, what) for ds, what, _ in notes] == [(SEED_ID, "summary.json cannot be read")]
    for data_set in IDS:
        assert (folder(tmp_path, data_set) / "data.json").read_bytes() == uninterrupted[data_set]


async def test_a_deleted_run_json_keeps_the_answers_that_belong_to_the_targets(
    emulator, uninterrupted, tmp_path
):
    plan = FaultPlan(rate=0.3, seed=5, kinds=("503",), routes=frozenset({"query"}))
    async with Emulator(faults=plan) as faulty:
        [first], _ = await fetch(tmp_path, faulty, retries=0)
    assert not first.complete and first.failures > 10
    (folder(tmp_path) / "run.json").unlink()
    emulator.stats.reset()
    [again], notes = await fetch(tmp_path, emulator)
    assert again.complete and again.resumed == first.targets - first.failures
    assert emulator.stats.requests["query"] == first.failures  # the answers on disk were kept
    assert (folder(tmp_path) / "data.json").read_bytes() == uninterrupted[SEED_ID]
    [(_, what, remedy)] = notes
    assert what == "run.json is missing"
    assert remedy == (
        f"keeping the {again.resumed} answers in lines.ndjson, fetching the other {first.failures}"
    )


async def test_a_deleted_run_json_says_that_answers_of_other_targets_are_dropped(
    emulator, uninterrupted, tmp_path
):
    plan = FaultPlan(rate=0.3, seed=5, kinds=("503",), routes=frozenset({"query"}))
    async with Emulator(faults=plan) as faulty:  # answers to other targets: another range
        [first], _ = await fetch(tmp_path, faulty, retries=0, density_range=(0.2, 0.22))
    answered = first.targets - first.failures
    assert not first.complete and answered > 10
    (folder(tmp_path) / "run.json").unlink()
    emulator.stats.reset()
    [again], notes = await fetch(tmp_path, emulator)
    assert again.complete and again.resumed == 0
    assert emulator.stats.requests["query"] == again.targets
    assert (folder(tmp_path) / "data.json").read_bytes() == uninterrupted[SEED_ID]
    [(_, what, remedy)] = notes
    assert what == (
        f"run.json is missing; lines.ndjson holds {answered} line(s) that do not belong to its "
        "targets"
    )
    assert remedy == f"dropped them, fetching its {again.targets} targets"


# -- asyncdl verify --------------------------------------------------------------------------------


def test_verify_finds_a_changed_byte_and_the_next_fetch_repairs_it(
    emulator, uninterrupted, tmp_path
):
    fetch_args = ("fetch", *IDS, "-o", tmp_path, "-c", 8, "--density-range", *SMALL)
    assert run_cli(*fetch_args, *server_args(emulator)).returncode == 0
    ok = run_cli("verify", tmp_path)
    assert ok.returncode == 0 and ok.stdout == "", ok.stderr
    assert "2 data sets, 2 verified, 0 damaged" in ok.stderr

    data = folder(tmp_path) / "data.json"
    body = bytearray(data.read_bytes())
    body[100] ^= 0x20  # same size: a rerun's size check cannot see it, verify must
    data.write_bytes(bytes(body))
    found = run_cli("verify", tmp_path)
    assert found.returncode == 5, found.stderr
    assert found.stdout.splitlines() == [
        f"{SEED_ID}: DAMAGED: data.json does not match the SHA-256 summary.json records"
    ]
    assert run_cli("verify", tmp_path, OTHER_ID).returncode == 0  # only the ids asked for

    repaired = run_cli(*fetch_args, *server_args(emulator))
    assert repaired.returncode == 0, repaired.stderr
    assert f"{SEED_ID}: repairing (data.json does not match" in repaired.stderr
    assert data.read_bytes() == uninterrupted[SEED_ID]
    assert run_cli("verify", tmp_path).returncode == 0


def test_verify_of_unfinished_and_unknown_folders(tmp_path):
    assert run_cli("verify", tmp_path / "nowhere").returncode == 2
    assert run_cli("verify", tmp_path).returncode == 2  # no data set folders
    (tmp_path / str(SEED_ID)).mkdir()
    unfinished = run_cli("verify", tmp_path, SEED_ID, OTHER_ID)
    assert unfinished.returncode == 1
    assert unfinished.stdout.splitlines() == [
        f"{SEED_ID}: UNFINISHED: no summary.json: its fetch has not finished",
        f"{OTHER_ID}: UNFINISHED: not fetched",
    ]
