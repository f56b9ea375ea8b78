"""Output files: seed order whatever the arrival order, atomic writes, resume and its refusals."""

import hashlib
import random

import numpy as np
import orjson
import pytest

from asyncdl import DataSetResult, StorageError, UsageError
from asyncdl.dataset import refuse_mixing
from asyncdl.resume import Action, decide, manifest
from asyncdl.store import DataSetStore, FileRecord, read_summary, targets_digest
from asyncdl.targets import Targets

PARAMS = {
    "density_range": [0.04, 0.3],
    "injection_threshold": 0.5,
    "volumes": "nrrd",
    "source": "x",
}
INDEX = np.arange(150, dtype=np.int64).reshape(50, 3)
TARGETS = Targets(INDEX, (INDEX * 100.0).astype(np.float64))
INJECTION = np.array([[100.0, 200.0, 300.0]])
ANSWERS = [(rank, [{"rank": rank, "k": k} for k in range(rank % 3)]) for rank in range(50)]


def begin(store, params, targets=TARGETS, restart=False):
    """Open a store as a run does: ask ``decide`` with the targets, then carry it out."""
    expected = manifest(store.data_set, params, len(targets), targets_digest(targets.index))
    decision = decide(store.read(targets), params, restart=restart, expected=expected)
    assert decision.action in (Action.FRESH, Action.RESUME), decision
    store.open(decision, expected)
    return decision


def completed(store, params):
    """The earlier summary if ``decide`` says the data set can be skipped."""
    decision = decide(store.read(), params, restart=False)
    return decision.summary if decision.action is Action.SKIP else None


def write(store, answers):
    for rank, records in answers:
        store.add_lines(rank, INDEX[rank].tolist(), (INDEX[rank] * 100.0).tolist(), records)


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def expected_lines(answers=ANSWERS):
    return [rec for _, records in sorted(answers) for rec in records]


def test_data_json_order_does_not_depend_on_arrival_order(tmp_path):
    outputs = []
    for seed in (1, 2):
        store = DataSetStore(tmp_path / str(seed), 7)
        begin(store, PARAMS)
        shuffled = ANSWERS[:]
        random.Random(seed).shuffle(shuffled)
        write(store, shuffled)
        store.close()
        assert store.finalize(50, INJECTION) == len(expected_lines())
        outputs.append((store.dir / "data.json").read_bytes())
    assert outputs[0] == outputs[1]
    data = orjson.loads(outputs[0])
    assert data == {"lines": expected_lines(), "injectionCoordinates": [[100.0, 200.0, 300.0]]}
    assert sorted(p.name for p in (tmp_path / "1" / "7").iterdir()) == [
        "data.json",
        "lines.ndjson",
        "run.json",
    ]


def test_resume_keeps_answers_repairs_a_cut_line_and_forgets_failures(tmp_path):
    store = DataSetStore(tmp_path, 7)
    begin(store, PARAMS)
    write(store, ANSWERS[:20])
    store.add_failure(20, [60, 61, 62], [6000.0, 6100.0, 6200.0], "HTTP 503", 6)
    store.close()
    lines = tmp_path / "7" / "lines.ndjson"
    good_size = lines.stat().st_size
    with lines.open("ab") as fh:  # a crash in the middle of a write
        fh.write(b'{"rank":21,"index":[63,64,65],"coord":[6300.0,')
    cut_size = lines.stat().st_size
    (tmp_path / "7" / ".data.json.123.abcd.tmp").write_bytes(b'{"lines":[')  # a killed finalize

    again = DataSetStore(tmp_path, 7)
    refuse_mixing(tmp_path, [7], PARAMS, restart=False)
    decision = begin(again, PARAMS)
    assert decision.action is Action.RESUME and decision.reason == ""  # a cut line is no damage
    assert decision.keep.ranks == frozenset(range(20)) and decision.keep.dropped == 0
    assert decision.keep.records == len(expected_lines(ANSWERS[:20]))
    assert cut_size > good_size == lines.stat().st_size
    assert not (tmp_path / "7" / "failures.ndjson").exists()
    assert not list((tmp_path / "7").glob(".*.tmp"))
    write(again, ANSWERS[20:])
    again.close()
    assert again.finalize(50, INJECTION) == len(expected_lines())
    assert orjson.loads((tmp_path / "7" / "data.json").read_bytes())["lines"] == expected_lines()


def test_other_parameters_are_refused_unless_restarting(tmp_path):
    store = DataSetStore(tmp_path, 7)
    begin(store, PARAMS)
    write(store, ANSWERS[:5])
    store.close()
    other = {**PARAMS, "density_range": [0.1, 0.2]}
    with pytest.raises(UsageError, match=r"other parameters \(density_range .* --restart"):
        refuse_mixing(tmp_path, [7], other, restart=False)
    refuse_mixing(tmp_path, [7], other, restart=True)
    fresh = DataSetStore(tmp_path, 7)
    assert begin(fresh, other, restart=True).keep.ranks == frozenset()
    fresh.close()
    assert (tmp_path / "7" / "lines.ndjson").stat().st_size == 0
    assert orjson.loads((tmp_path / "7" / "run.json").read_bytes())["params"] == other


def test_changed_targets_are_refused(tmp_path):
    store = DataSetStore(tmp_path, 7)
    begin(store, PARAMS)
    store.close()
    again = DataSetStore(tmp_path, 7)
    expected = manifest(7, PARAMS, len(INDEX) - 1, targets_digest(INDEX[:-1]))
    decision = decide(again.read(TARGETS), PARAMS, restart=False, expected=expected)
    assert decision.action is Action.REFUSE
    assert "targets differ" in decision.reason


def test_completed_needs_matching_parameters_a_complete_summary_and_data(tmp_path):
    store = DataSetStore(tmp_path, 7)
    begin(store, PARAMS)
    write(store, ANSWERS)
    store.close()
    assert completed(store, PARAMS) is None  # no summary yet
    store.finalize(50, INJECTION)
    store.record(DataSetResult(7, True, targets=50, lines=49), PARAMS, ["data.json"])
    assert completed(store, PARAMS)["lines"] == 49
    assert completed(store, {**PARAMS, "volumes": "legacy"}) is None
    data = tmp_path / "7" / "data.json"
    data.write_bytes(data.read_bytes() + b" ")  # a size other than the recorded one
    assert completed(store, PARAMS) is None
    assert store.read().damage.startswith("data.json is ")
    store.write_summary({"complete": False, "targets": 50, "lines": 40})
    assert completed(store, PARAMS) is None


def test_paths_come_only_from_validated_ids(tmp_path):
    with pytest.raises(UsageError):
        DataSetStore(tmp_path, "../../etc")  # type: ignore[arg-type]


def test_a_zombie_attempt_never_interleaves_with_the_attempt_that_resumed_it(tmp_path):
    zombie = DataSetStore(tmp_path, 7)
    begin(zombie, PARAMS)
    write(zombie, ANSWERS[:10])
    # Another attempt resumes the data set while the first one is still running.
    current = DataSetStore(tmp_path, 7)
    assert begin(current, PARAMS).keep.ranks == frozenset(range(10))
    write(zombie, ANSWERS[10:30])  # the zombie writes on, into the file it opened
    write(current, ANSWERS[10:])
    zombie.close()
    current.close()
    lines = (tmp_path / "7" / "lines.ndjson").read_bytes().splitlines()
    assert [orjson.loads(line)["rank"] for line in lines] == list(range(50))
    assert current.finalize(50, INJECTION) == len(expected_lines())


def test_only_answers_to_these_targets_are_kept_and_the_others_are_counted(tmp_path):
    store = DataSetStore(tmp_path, 7)
    begin(store, PARAMS)
    write(store, ANSWERS[:10])
    store.close()
    lines = tmp_path / "7" / "lines.ndjson"
    with lines.open("ab") as fh:
        fh.write(b"not json\n")  # damaged in the middle: the lines after it still count
        bad = {"rank": 11, "index": [0, 0, 0], "coord": [0.0, 0.0, 0.0], "msg": []}
        fh.write(orjson.dumps(bad) + b"\n")  # another target's answer at rank 11
        fh.write(orjson.dumps({"rank": 99, "index": [], "coord": [], "msg": []}) + b"\n")
    write_more = DataSetStore(tmp_path, 7)
    write_more._lines = lines.open("ab", buffering=0)
    write(write_more, ANSWERS[12:14])
    write_more.close()
    with lines.open("ab") as fh:
        fh.write(b'{"rank":14,')  # cut by a crash: not counted as dropped

    again = DataSetStore(tmp_path, 7)
    decision = begin(again, PARAMS)
    again.close()
    assert decision.keep.ranks == {*range(10), 12, 13} and decision.keep.dropped == 3
    assert "3 line(s) that do not belong" in decision.reason
    kept = [orjson.loads(line)["rank"] for line in lines.read_bytes().splitlines()]
    assert kept == [*range(10), 12, 13]  # the journal now holds only what was kept


def test_the_summary_records_each_final_file_as_it_reads_back(tmp_path):
    store = DataSetStore(tmp_path, 7)
    begin(store, PARAMS)
    write(store, ANSWERS)
    store.close()
    assert store.finalize(50, INJECTION) == len(expected_lines())
    data = tmp_path / "7" / "data.json"
    (tmp_path / "7" / "extra.json").write_bytes(b"{}")
    result = DataSetResult(7, True, targets=50, lines=len(expected_lines()))
    store.record(result, PARAMS, ["data.json", "extra.json"])
    summary = read_summary(tmp_path / "7")
    assert summary is not None and summary.status == "ok" and summary.complete
    assert summary.parameters == PARAMS and summary.lines == result.lines
    assert summary.files == {
        "data.json": FileRecord("data.json", data.stat().st_size, sha256(data.read_bytes())),
        "extra.json": FileRecord("extra.json", 2, sha256(b"{}")),
    }
    # data.json must read back as it was written, or its journal could not go.
    data.write_bytes(data.read_bytes().replace(b"{", b"[", 1))
    with pytest.raises(StorageError, match="reads back other than written"):
        store.record(result, PARAMS, ["data.json"])


def test_a_summary_names_no_path_to_read_and_an_unreadable_one_says_so(tmp_path):
    store = DataSetStore(tmp_path, 7)
    entry = {"size": 1, "sha256": "0" * 64}
    files = {
        "../../etc/passwd": entry,
        ".hidden": entry,
        "data.json": {"size": -1},
        "ok.json": entry,
    }
    store.write_summary({"complete": True, "status": "ok", "files": files})
    summary = read_summary(store.dir)
    assert summary is not None and list(summary.files) == ["ok.json"]
    assert read_summary(tmp_path / "8") is None
    (store.dir / "summary.json").write_bytes(b"[1, 2")
    unreadable = read_summary(store.dir)
    assert unreadable is not None and unreadable.status == "unreadable" and not unreadable.complete


def test_verify_reads_every_byte_and_marks_a_damaged_data_set(tmp_path):
    store = DataSetStore(tmp_path, 7)
    assert store.verify().problem == "not fetched"
    begin(store, PARAMS)
    write(store, ANSWERS)
    store.close()
    store.finalize(50, INJECTION)
    assert store.verify().status == "unfinished"
    store.record(DataSetResult(7, True, targets=50, lines=49), PARAMS, ["data.json"])
    assert store.verify().status == "verified"
    data = tmp_path / "7" / "data.json"
    data.write_bytes(data.read_bytes().replace(b"[", b"(", 1))
    assert store.read().damage == ""  # the size is the same: only verify can tell
    verdict = store.verify()
    assert verdict.status == "damaged" and "SHA-256" in verdict.problem
    summary = read_summary(store.dir)
    assert summary is not None and summary.status == "damaged" and not summary.complete
    assert "data.json" in summary.files  # what it should be is still there, for the repair
    assert store.read().damage == verdict.problem  # the next fetch repairs it, saying why
    assert store.verify() == verdict


def test_refusals_name_each_data_set_and_garbage_is_no_refusal(tmp_path):
    for data_set in (7, 8, 9):
        store = DataSetStore(tmp_path, data_set)
        begin(store, PARAMS)
        store.close()
    other = {**PARAMS, "volumes": "legacy"}
    (tmp_path / "9" / "run.json").write_bytes(b"\x00garbage")  # damage: repaired, not refused
    with pytest.raises(UsageError) as refused:
        refuse_mixing(tmp_path, [7, 8, 9, 10], other, restart=False)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / '7'}: it holds results fetched with other parameters")
    assert message.endswith(
        "(and 1 more data set); to start them over, rerun with --restart and only 7 8"
    )
    refuse_mixing(tmp_path, [9, 10], other, restart=False)
