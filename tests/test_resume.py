"""The resume decision, as a pure function: every outcome, without touching the disk."""

import pytest

from asyncdl.resume import Action, Decision, Earlier, decide, manifest

PARAMS = {
    "density_range": [0.04, 0.3],
    "injection_threshold": 0.5,
    "volumes": "nrrd",
    "source": "x",
}
EXPECTED = manifest(7, PARAMS, 50, "abc")
COMPLETE = {"complete": True, "targets": 50, "lines": 49}


def test_nothing_there_is_fresh_before_and_after_the_volumes():
    assert decide(Earlier(), PARAMS, restart=False) == Decision(Action.FRESH)
    assert decide(Earlier(), PARAMS, restart=False, expected=EXPECTED) == Decision(Action.FRESH)


def test_restart_is_fresh_whatever_is_there():
    earlier = Earlier(manifest={"params": {"other": 1}}, summary=COMPLETE, has_data=True)
    assert decide(earlier, PARAMS, restart=True).action is Action.FRESH


def test_complete_with_the_same_parameters_is_skipped_with_its_summary():
    earlier = Earlier(manifest=EXPECTED, summary=COMPLETE, has_data=True)
    decision = decide(earlier, PARAMS, restart=False)
    assert decision.action is Action.SKIP
    assert decision.summary == COMPLETE


@pytest.mark.parametrize(
    ("summary", "has_data"),
    [(None, True), ({**COMPLETE, "complete": False}, True), (COMPLETE, False)],
)
def test_not_complete_is_resumed_with_what_is_done(summary, has_data):
    earlier = Earlier(EXPECTED, summary, has_data, answered=frozenset({0, 3}))
    decision = decide(earlier, PARAMS, restart=False, expected=EXPECTED)
    assert decision == Decision(Action.RESUME, done=frozenset({0, 3}))


def test_other_parameters_are_refused_naming_what_changed():
    earlier = Earlier(manifest=EXPECTED, summary=COMPLETE, has_data=True)
    other = {**PARAMS, "density_range": [0.1, 0.2]}
    decision = decide(earlier, other, restart=False)
    assert decision.action is Action.REFUSE
    assert "density_range [0.04, 0.3] -> [0.1, 0.2]" in decision.reason


def test_an_unreadable_manifest_vouches_for_nothing_and_is_refused():
    assert decide(Earlier(manifest={}), PARAMS, restart=False).action is Action.REFUSE


def test_changed_targets_under_the_same_parameters_are_refused():
    earlier = Earlier(manifest=EXPECTED, answered=frozenset({1}))
    changed = manifest(7, PARAMS, 49, "def")
    decision = decide(earlier, PARAMS, restart=False, expected=changed)
    assert decision.action is Action.REFUSE
    assert "targets differ" in decision.reason
    # Before the targets are known, the same folder can only be resumed provisionally.
    assert decide(earlier, PARAMS, restart=False).action is Action.RESUME


def test_a_manifest_of_another_format_is_not_resumed():
    earlier = Earlier(manifest={**EXPECTED, "format": 0})
    assert decide(earlier, PARAMS, restart=False, expected=EXPECTED).action is Action.REFUSE
