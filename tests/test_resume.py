"""The resume decision, as a pure function: every outcome, without touching the disk."""

import pytest

from asyncdl.resume import Action, Decision, Earlier, Journal, decide, manifest

PARAMS = {
    "density_range": [0.04, 0.3],
    "injection_threshold": 0.5,
    "volumes": "nrrd",
    "source": "x",
}
EXPECTED = manifest(7, PARAMS, 50, "abc")
COMPLETE = {"complete": True, "targets": 50, "lines": 49}
JOURNAL = Journal({0: (0, 10), 3: (10, 12)}, records=5)


def test_nothing_there_is_fresh_before_and_after_the_volumes():
    assert decide(Earlier(), PARAMS, restart=False).action is Action.RESUME  # provisional
    assert decide(Earlier(), PARAMS, restart=False, expected=EXPECTED) == Decision(Action.FRESH)


def test_restart_is_fresh_whatever_is_there():
    earlier = Earlier(manifest={"params": {"other": 1}}, summary=COMPLETE, damage="x")
    assert decide(earlier, PARAMS, restart=True) == Decision(Action.FRESH)


def test_complete_with_the_same_parameters_is_skipped_with_its_summary():
    decision = decide(Earlier(manifest=EXPECTED, summary=COMPLETE), PARAMS, restart=False)
    assert decision.action is Action.SKIP
    assert decision.summary == COMPLETE


@pytest.mark.parametrize(
    ("summary", "damage"),
    [
        (None, ""),
        ({**COMPLETE, "complete": False}, ""),
        (COMPLETE, "data.json is 0 bytes, not the 1,000 summary.json records"),
        ({}, "summary.json cannot be read"),
    ],
)
def test_not_complete_or_damaged_is_resumed_keeping_the_journal(summary, damage):
    earlier = Earlier(EXPECTED, summary, damage if summary else "", JOURNAL)
    assert decide(earlier, PARAMS, restart=False).action is Action.RESUME
    decision = decide(earlier, PARAMS, restart=False, expected=EXPECTED)
    assert decision == Decision(Action.RESUME, damage, keep=JOURNAL)
    assert decision.keep.ranks == {0, 3}


def test_other_parameters_are_refused_naming_what_changed():
    earlier = Earlier(manifest=EXPECTED, summary=COMPLETE)
    other = {**PARAMS, "density_range": [0.1, 0.2]}
    decision = decide(earlier, other, restart=False)
    assert decision.action is Action.REFUSE
    assert "density_range [0.04, 0.3] -> [0.1, 0.2]" in decision.reason


@pytest.mark.parametrize(("run_json", "damage"), [({}, "cannot be read"), (None, "is missing")])
def test_a_lost_run_json_is_damage_never_other_parameters(run_json, damage):
    earlier = Earlier(manifest=run_json, summary=COMPLETE, journal=JOURNAL)
    early = decide(earlier, PARAMS, restart=False)
    assert early == Decision(Action.RESUME, f"run.json {damage}")  # never SKIP, never REFUSE
    # The answers that belong to the targets are kept; without any, it starts over.
    after = decide(earlier, PARAMS, restart=False, expected=EXPECTED)
    assert after == Decision(Action.RESUME, f"run.json {damage}", keep=JOURNAL)
    lost = Earlier(manifest=run_json, summary=COMPLETE)
    assert decide(lost, PARAMS, restart=False, expected=EXPECTED) == Decision(
        Action.FRESH, f"run.json {damage}"
    )


def test_a_data_set_that_failed_before_its_targets_were_known_has_no_run_json_to_miss():
    failed = Earlier(summary={"complete": False, "status": "failed", "targets": 0, "error": "404"})
    assert decide(failed, PARAMS, restart=False, expected=EXPECTED) == Decision(Action.FRESH)


def test_answers_that_do_not_belong_to_the_targets_are_dropped_and_said():
    dropped = Journal(dropped=4)
    decision = decide(Earlier(journal=dropped), PARAMS, restart=False, expected=EXPECTED)
    assert decision == Decision(
        Action.FRESH,
        "run.json is missing; lines.ndjson holds 4 line(s) that do not belong to its targets",
        keep=dropped,
    )
    mixed = Journal(JOURNAL.lines, JOURNAL.records, dropped=1)
    decision = decide(Earlier(EXPECTED, journal=mixed), PARAMS, restart=False, expected=EXPECTED)
    assert decision.action is Action.RESUME and decision.keep == mixed
    assert decision.reason == "lines.ndjson holds 1 line(s) that do not belong to its targets"


def test_changed_targets_under_the_same_parameters_are_refused():
    earlier = Earlier(manifest=EXPECTED, journal=JOURNAL)
    changed = manifest(7, PARAMS, 49, "def")
    decision = decide(earlier, PARAMS, restart=False, expected=changed)
    assert decision.action is Action.REFUSE
    assert "targets differ" in decision.reason
    # Before the targets are known, the same folder can only be resumed provisionally.
    assert decide(earlier, PARAMS, restart=False).action is Action.RESUME


def test_a_manifest_of_another_format_is_not_resumed():
    earlier = Earlier(manifest={**EXPECTED, "format": 0})
    assert decide(earlier, PARAMS, restart=False, expected=EXPECTED).action is Action.REFUSE
