"""``asyncdl status OUT``: what an output folder holds, and that a rerun does what it says."""

from dataclasses import replace

import orjson

import asyncdl
from asyncdl import FetchOptions
from asyncdl.emulator import Emulator, FaultPlan
from asyncdl.status import data_set_ids, describe_status, folder_status, outlook

from .conftest import SEED_ID, Recorder, run_cli

OPTIONS = FetchOptions(concurrency=8, density_range=(0.1, 0.11))
PARTIAL, INCOMPLETE, FAILED = 100141219, 112514202, 42


async def test_status_says_what_a_rerun_does(emulator, tmp_path):
    out = tmp_path / "out"
    options = OPTIONS
    await asyncdl.fetch(
        [SEED_ID, PARTIAL, FAILED], out, options=replace(options, keep_journal=True),
        endpoints=emulator.endpoints,
    )  # fmt: skip
    # An interrupted data set: its answers in the journal, no summary.json nor data.json yet.
    for name in ("summary.json", "data.json"):
        (out / str(PARTIAL) / name).unlink()
    # Targets that failed for good: a server that fails a third of its spatial searches.
    faults = FaultPlan(rate=0.3, kinds=("500",), routes=frozenset({"query"}))
    failing = FetchOptions(concurrency=8, density_range=(0.1, 0.11), retries=0)
    async with Emulator(faults=faults) as faulty:
        [incomplete] = await asyncdl.fetch(
            [INCOMPLETE], out, options=failing, endpoints=faulty.endpoints
        )
    assert incomplete.status == "incomplete" and incomplete.failures > 0

    status = folder_status(out)
    by_id = {s.data_set: s for s in status.states}
    assert data_set_ids(out) == sorted(by_id) == sorted([SEED_ID, PARTIAL, INCOMPLETE, FAILED])
    assert {i: s.state for i, s in by_id.items()} == {
        SEED_ID: "complete",
        PARTIAL: "partial",
        INCOMPLETE: "incomplete",
        FAILED: "failed",
    }
    partial = by_id[PARTIAL]
    assert partial.targets and partial.answered == partial.targets  # every answer is on disk
    assert by_id[INCOMPLETE].failures == incomplete.failures
    # The volumes are in the user's cache, not in OUT.
    assert status.disk.data > 0 and status.disk.journals > 0 and status.disk.cache == 0
    assert status.disk.total >= status.disk.data + status.disk.journals
    assert "OUT/.cache" not in describe_status(status)[-1]
    # An older asyncdl's cache in OUT is counted apart, as what it is.
    old_cache = out / ".cache"
    old_cache.mkdir()
    (old_cache / "grid_1_density.nrrd").write_bytes(bytes(8192))
    assert folder_status(out).disk.cache >= 8192

    proc = run_cli("status", out)
    assert proc.returncode == 0, proc.stderr
    head, *states, disk = proc.stdout.splitlines()
    assert head == f"{out}: 4 data sets"
    assert [line.split()[:2] for line in states] == [
        ["complete", "1"],
        ["partial", "1"],
        ["incomplete", "1"],
        ["failed", "1"],
    ]
    assert f"{partial.answered:,} of {partial.targets:,} targets answered" in states[1]
    assert f"{incomplete.failures} of {incomplete.targets} targets failed" in states[2]
    assert "e.g. 42: HTTP 404" in states[3]
    assert disk.startswith("disk: ") and "data.json" in disk
    assert "OUT/.cache 8.2 kB: an older asyncdl's volumes, safe to delete" in disk
    proc = run_cli("status", out, SEED_ID, 999, "--json")
    *records, folder = map(orjson.loads, proc.stdout.splitlines())
    assert [(r["data_set"], r["state"]) for r in records] == [(SEED_ID, "complete")]
    assert folder["complete"] == 1 and folder["not_begun"] == 1

    # A run knows the same before it begins: what is complete, and the targets of the others.
    ahead = outlook(out, [SEED_ID, PARTIAL, INCOMPLETE, FAILED, 999], restart=False)
    assert ahead.complete == {SEED_ID}
    assert ahead.targets == {PARTIAL: partial.targets, INCOMPLETE: incomplete.targets}
    assert outlook(out, [SEED_ID], restart=True).complete == frozenset()

    # What a rerun does is what status said.
    recorder = Recorder()
    results = await asyncdl.fetch(
        [SEED_ID, PARTIAL, INCOMPLETE, FAILED], out, options=options, endpoints=emulator.endpoints,
        events=recorder,
    )  # fmt: skip
    by_id_now = {r.data_set: r for r in results}
    assert by_id_now[SEED_ID].skipped
    assert by_id_now[PARTIAL].resumed == partial.answered
    assert not [c for c in recorder.of("target_done") if c["data_set"] == PARTIAL]
    rerun = by_id_now[INCOMPLETE]
    assert rerun.complete and rerun.resumed == incomplete.targets - incomplete.failures
    assert by_id_now[FAILED].status == "failed"
    [plan] = recorder.of("planned")
    assert list(plan["complete"]) == [SEED_ID]


async def test_status_names_damage_that_a_rerun_repairs(emulator, tmp_path):
    out = tmp_path / "out"
    await asyncdl.fetch([SEED_ID], out, options=OPTIONS, endpoints=emulator.endpoints)
    data = out / str(SEED_ID) / "data.json"
    data.write_bytes(data.read_bytes()[:-1])
    [state] = folder_status(out).states
    assert state.state == "damaged" and state.error and "data.json" in state.error
    proc = run_cli("status", out)
    assert proc.stdout.splitlines()[1].split()[:2] == ["damaged", "1"], proc.stdout
    [result] = await asyncdl.fetch([SEED_ID], out, options=OPTIONS, endpoints=emulator.endpoints)
    assert result.complete and not result.skipped
    assert [s.state for s in folder_status(out).states] == ["complete"]


def test_status_of_what_is_not_a_folder(tmp_path):
    proc = run_cli("status", tmp_path / "nothing")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"asyncdl: error: {tmp_path / 'nothing'} is not a folder"
