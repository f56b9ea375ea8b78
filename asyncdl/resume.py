"""What to do with a data set, given what an earlier run left in its folder (pure, no I/O).

The store reads ``OUT/<id>/`` into an ``Earlier``; ``decide`` judges it against this run's
parameters. It is asked twice: before the volumes are downloaded (``targets=None``), when it can
already say SKIP (complete with these parameters) or REFUSE (other parameters); and once the
targets are known, when it says FRESH, RESUME (with the ranks already answered) or REFUSE (the
targets changed under the same parameters, so the old answers cannot be matched to them).
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
class Earlier:
    """What an earlier run left in a data set's folder, read but not judged."""

    #: ``run.json``: None if there is none, ``{}`` if it cannot be read or is not an object.
    manifest: Mapping[str, Any] | None = None
    #: ``summary.json``, if it reads as an object.
    summary: Mapping[str, Any] | None = None
    has_data: bool = False
    #: Ranks with an answer in ``lines.ndjson`` (only when the store was asked to scan it).
    answered: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Decision:
    action: Action
    #: Why REFUSE, in a sentence that names what differs.
    reason: str = ""
    #: RESUME: the ranks already answered.
    done: frozenset[int] = frozenset()
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
    old = earlier.manifest
    if restart or old is None:
        return Decision(Action.FRESH)
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
    summary = earlier.summary
    if summary is not None and summary.get("complete") is True and earlier.has_data:
        return Decision(Action.SKIP, summary=summary)
    if expected is not None and dict(old) != dict(expected):
        return Decision(
            Action.REFUSE,
            "its targets differ from those of the interrupted run (did the server's volumes "
            "change?)",
        )
    return Decision(Action.RESUME, done=earlier.answered)
