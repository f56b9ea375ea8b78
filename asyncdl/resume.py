"""What to do with a data set, given what an earlier run left in its folder (pure, no I/O).

The store reads ``OUT/<id>/`` into an ``Earlier``; ``decide`` judges it against this run's
parameters. It is asked twice: before the volumes are downloaded (``expected=None``), when it can
already say SKIP (complete with these parameters, its final files of the recorded sizes) or REFUSE
(``run.json`` records other parameters); and once the targets are known, when it says FRESH,
RESUME (with the answers to keep) or REFUSE (the targets changed under the same parameters).

The state flows one way: ``Earlier.journal`` (what ``lines.ndjson`` holds that belongs to the
targets) becomes ``Decision.keep``, which the store carries out and the data set counts from.
Damage (an unreadable ``run.json`` or ``summary.json``, a final file of the wrong size) is never
a refusal: the decision repairs that one data set and says what was wrong in ``reason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: Version of the manifest's layout; a manifest of another version is not resumed.
MANIFEST_FORMAT = 1


class Action(StrEnum):
    SKIP = "skip"  # complete already: request nothing
    RESUME = "resume"  # keep the answers on disk, request the rest
    FRESH = "fresh"  # start the data set (over)
    REFUSE = "refuse"  # the folder holds results that cannot be mixed with this run's


@dataclass(frozen=True)
class Journal:
    """The answers in ``lines.ndjson`` that belong to this run's targets: each line's rank, index
    and coordinates are those of the target at that rank."""

    #: Where each answered rank's line is in the file: ``rank -> (offset, length)``.
    lines: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    #: The spatial-search records those answers hold (data.json's lines).
    records: int = 0
    #: Whole lines that do not belong to the targets, or do not read: they are dropped. (A line
    #: cut at the end of the file by a crash is not counted: it is what a kill leaves.)
    dropped: int = 0

    @property
    def ranks(self) -> frozenset[int]:
        return frozenset(self.lines)


@dataclass(frozen=True)
class Earlier:
    """What an earlier run left in a data set's folder, read but not judged."""

    #: ``run.json``: None if there is none, ``{}`` if it cannot be read or is not an object.
    manifest: Mapping[str, Any] | None = None
    #: ``summary.json``: None if there is none, ``{}`` if it cannot be read or is not an object.
    summary: Mapping[str, Any] | None = None
    #: What is wrong with the final files a complete summary vouches for ("" if nothing): a
    #: missing file, a size other than the recorded one, no record at all.
    damage: str = ""
    #: The usable part of ``lines.ndjson`` (read only once the targets are known).
    journal: Journal = field(default_factory=Journal)


@dataclass(frozen=True)
class Decision:
    action: Action
    #: REFUSE: why, in a sentence that names what differs. FRESH or RESUME: the damage being
    #: repaired, in a phrase ("" if there is none).
    reason: str = ""
    #: The answers on disk to keep (RESUME only), and how many are dropped.
    keep: Journal = field(default_factory=Journal)
    #: SKIP: the earlier run's summary.
    summary: Mapping[str, Any] | None = field(default=None, compare=False)


def manifest(data_set: int, params: Mapping[str, Any], targets: int, digest: str) -> dict[str, Any]:
    """The manifest a run with these parameters and targets writes, and a resumed run must find."""
    return {
        "format": MANIFEST_FORMAT,
        "data_set": data_set,
        "params": dict(params),
        "targets": targets,
        "targets_sha256": digest,
    }


def decide(
    earlier: Earlier,
    params: Mapping[str, Any],
    *,
    restart: bool,
    expected: Mapping[str, Any] | None = None,
) -> Decision:
    """What to do with a data set. ``expected`` is this run's ``manifest(...)`` once the targets
    are known; before that, a RESUME answer still has to be confirmed with them."""
    if restart:
        return Decision(Action.FRESH)
    old = earlier.manifest
    if old:  # only a readable run.json can say the results were made with other parameters
        old_params = old.get("params")
        old_params = old_params if isinstance(old_params, Mapping) else {}
        if dict(old_params) != dict(params):
            changed = ", ".join(
                f"{key} {old_params.get(key)!r} -> {value!r}"
                for key, value in params.items()
                if old_params.get(key) != value
            )
            return Decision(
                Action.REFUSE, f"it holds results fetched with other parameters ({changed})"
            )
    damage = _damage(earlier)
    summary = earlier.summary
    if old and not damage and summary is not None and summary.get("complete") is True:
        return Decision(Action.SKIP, summary=summary)
    if expected is None:
        return Decision(Action.RESUME, damage)  # provisional: confirmed once the targets are known
    if old and dict(old) != dict(expected):
        return Decision(
            Action.REFUSE,
            "its targets differ from those of the interrupted run (did the server's volumes "
            "change?)",
        )
    journal = earlier.journal
    if journal.dropped:
        lines = f"lines.ndjson holds {journal.dropped} line(s) that do not belong to its targets"
        damage = f"{damage}; {lines}" if damage else lines
    if not old and not journal.lines:
        # Nothing there can be vouched for: a new data set, or one whose run.json is lost and
        # whose answers, if any, do not belong to these targets.
        return Decision(Action.FRESH, damage, keep=journal)  # nothing to keep; some dropped
    return Decision(Action.RESUME, damage, keep=journal)


def _damage(earlier: Earlier) -> str:
    """What is wrong with the folder that a repair must mend ("" if nothing is)."""
    found = []
    if earlier.manifest is None:
        # Missing is damage only where a run got as far as writing it: answers, or a summary
        # with targets (a data set that failed before its targets were known has none).
        journal, summary = earlier.journal, earlier.summary or {}
        if journal.lines or journal.dropped or summary.get("targets"):
            found.append("run.json is missing")
    elif not earlier.manifest:
        found.append("run.json cannot be read")
    if earlier.summary is not None and not earlier.summary:
        found.append("summary.json cannot be read")
    if earlier.damage:
        found.append(earlier.damage)
    return "; ".join(found)
