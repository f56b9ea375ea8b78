"""Output files: seed order whatever the arrival order, atomic writes, resume and its refusals."""

import random

import numpy as np
import orjson
import pytest

from asyncdl import UsageError
from asyncdl.dataset import refuse_mixing
from asyncdl.resume import Action, decide, manifest
from asyncdl.store import DataSetStore, targets_digest

PARAMS = {
    "density_range": [0.04, 0.3],
    "injection_threshold": 0.5,
    "volumes": "nrrd",
    "source": "x",
}
INDEX = np.arange(150, dtype=np.int64).reshape(50, 3)
INJECTION = np.array([[100.0, 200.0, 300.0]])
ANSWERS = [(rank, [{"rank": rank, "k": k} for k in range(rank % 3)]) for rank in range(50)]


def begin(store, params, index, restart=False):
    """Open a store as a run does: take its lock, ask ``decide`` with the targets, carry it out."""
    assert store.lock() is None
    expected = manifest(store.data_set, params, len(index), targets_digest(index))
    decision = decide(store.read(scan=True), params, restart=restart, expected=expected)
    assert decision.action in (Action.FRESH, Action.RESUME), decision
    return store.open(decision, expected)


def completed(store, params):
    """The earlier summary if ``decide`` says the data set can be skipped."""
    decision = decide(store.read(), params, restart=False)
    return decision.summary if decision.action is Action.SKIP else None


def end(store):
    """Close a store and let its lock go, as a run does when it is done with a data set."""
    store.close()
    store.unlock()


def write(store, answers):
    for rank, records in answers:
        store.add_lines(rank, INDEX[rank].tolist(), (INDEX[rank] * 100.0).tolist(), records)


def expected_lines(answers=ANSWERS):
    return [rec for _, records in sorted(answers) for rec in records]


def test_data_json_order_does_not_depend_on_arrival_order(tmp_path):
    outputs = []
    for seed in (1, 2):
        store = DataSetStore(tmp_path / str(seed), 7)
        begin(store, PARAMS, INDEX)
        shuffled = ANSWERS[:]
        random.Random(seed).shuffle(shuffled)
        write(store, shuffled)
        store.close()
        assert store.finalize(50, INJECTION) == len(expected_lines())
        store.unlock()
        outputs.append((store.dir / "data.json").read_bytes())
    assert outputs[0] == outputs[1]
    data = orjson.loads(outputs[0])
    assert data == {"lines": expected_lines(), "injectionCoordinates": [[100.0, 200.0, 300.0]]}
    assert sorted(p.name for p in (tmp_path / "1" / "7").iterdir()) == [
        ".lock",
        "data.json",
        "lines.ndjson",
        "run.json",
    ]


def test_resume_keeps_answers_repairs_a_cut_line_and_forgets_failures(tmp_path):
    store = DataSetStore(tmp_path, 7)
    begin(store, PARAMS, INDEX)
    write(store, ANSWERS[:20])
    store.add_failure(20, [60, 61, 62], [6000.0, 6100.0, 6200.0], "HTTP 503", 6)
    end(store)
    lines = tmp_path / "7" / "lines.ndjson"
    good_size = lines.stat().st_size
    with lines.open("ab") as fh:  # a crash in the middle of a write
        fh.write(b'{"rank":21,"index":[63,64,65],"coord":[6300.0,')
    cut_size = lines.stat().st_size
    (tmp_path / "7" / ".data.json.123.abcd.tmp").write_bytes(b'{"lines":[')  # a killed finalize

    again = DataSetStore(tmp_path, 7)
    refuse_mixing(tmp_path, 7, PARAMS, restart=False)
    progress = begin(again, PARAMS, INDEX)
    assert progress.done == frozenset(range(20))
    assert progress.lines == len(expected_lines(ANSWERS[:20]))
    assert progress.repaired_bytes == cut_size - good_size > 0
    assert lines.stat().st_size == good_size
    assert not (tmp_path / "7" / "failures.ndjson").exists()
    assert not list((tmp_path / "7").glob(".*.tmp"))
    write(again, ANSWERS[20:])
    again.close()
    assert again.finalize(50, INJECTION) == len(expected_lines())
    assert orjson.loads((tmp_path / "7" / "data.json").read_bytes())["lines"] == expected_lines()


def test_other_parameters_are_refused_unless_restarting(tmp_path):
    store = DataSetStore(tmp_path, 7)
    begin(store, PARAMS, INDEX)
    write(store, ANSWERS[:5])
    end(store)
    other = {**PARAMS, "density_range": [0.1, 0.2]}
    with pytest.raises(UsageError, match=r"other parameters \(density_range .* --restart"):
        refuse_mixing(tmp_path, 7, other, restart=False)
    refuse_mixing(tmp_path, 7, other, restart=True)
    fresh = DataSetStore(tmp_path, 7)
    assert begin(fresh, other, INDEX, restart=True).done == frozenset()
    fresh.close()
    assert (tmp_path / "7" / "lines.ndjson").stat().st_size == 0
    assert orjson.loads((tmp_path / "7" / "run.json").read_bytes())["params"] == other


def test_changed_targets_are_refused(tmp_path):
    store = DataSetStore(tmp_path, 7)
    begin(store, PARAMS, INDEX)
    end(store)
    again = DataSetStore(tmp_path, 7)
    expected = manifest(7, PARAMS, len(INDEX) - 1, targets_digest(INDEX[:-1]))
    decision = decide(again.read(scan=True), PARAMS, restart=False, expected=expected)
    assert decision.action is Action.REFUSE
    assert "targets differ" in decision.reason


def test_completed_needs_matching_parameters_a_complete_summary_and_data(tmp_path):
    store = DataSetStore(tmp_path, 7)
    begin(store, PARAMS, INDEX)
    write(store, ANSWERS)
    store.close()
    assert completed(store, PARAMS) is None  # no summary yet
    store.finalize(50, INJECTION)
    store.write_summary({"complete": True, "targets": 50, "lines": 49})
    assert completed(store, PARAMS) == {"complete": True, "targets": 50, "lines": 49}
    assert completed(store, {**PARAMS, "volumes": "legacy"}) is None
    store.write_summary({"complete": False, "targets": 50, "lines": 40})
    assert completed(store, PARAMS) is None


def test_paths_come_only_from_validated_ids(tmp_path):
    with pytest.raises(UsageError):
        DataSetStore(tmp_path, "../../etc")  # type: ignore[arg-type]


def test_a_zombie_attempt_never_interleaves_with_the_attempt_that_resumed_it(tmp_path):
    zombie = DataSetStore(tmp_path, 7)
    begin(zombie, PARAMS, INDEX)
    write(zombie, ANSWERS[:10])
    # Another attempt resumes the data set while the first one is still running: its lock was
    # lost under it (NFS drops the locks of a machine cut off from the server for too long).
    zombie.unlock()
    current = DataSetStore(tmp_path, 7)
    assert begin(current, PARAMS, INDEX).done == frozenset(range(10))
    write(zombie, ANSWERS[10:30])  # the zombie writes on, into the file it opened
    write(current, ANSWERS[10:])
    zombie.close()
    current.close()
    lines = (tmp_path / "7" / "lines.ndjson").read_bytes().splitlines()
    assert [orjson.loads(line)["rank"] for line in lines] == list(range(50))
    assert current.finalize(50, INJECTION) == len(expected_lines())
