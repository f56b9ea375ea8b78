"""What an output folder holds, data set by data set, and what a rerun would do with it.

``asyncdl status OUT`` prints it (``folder_status``); a run reads the same (``outlook``) before any
volume is in, to count what it has ahead of it: the data sets complete already, and the targets an
earlier run found for those it began. Reading only, through the store's readers; what a rerun does
is ``resume.decide``'s call, asked as the rerun would ask it (with the parameters in run.json).
A state is one row of ``STATES``: a state added there (held by another process) gets its line in
``describe_status`` without further change.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .events import size
from .resume import Action, Earlier, decide
from .store import DATA, LINES, DataSetStore

#: Each state of a data set's folder, and what a rerun does with one, in the order shown.
STATES: dict[str, str] = {
    "complete": "a rerun skips them",
    "damaged": "a rerun repairs them (from their journal, else by fetching them again)",
    "partial": "a rerun keeps their answers and asks the rest",
    "incomplete": "a rerun asks their failed targets again",
    "failed": "a rerun tries them again",
}


@dataclass(frozen=True)
class DataSetState:
    """One data set's folder as an earlier run left it."""

    data_set: int
    #: A key of ``STATES``.
    state: str
    #: Its targets, if an earlier run got as far as knowing them (run.json or summary.json).
    targets: int | None = None
    #: Targets answered on disk (complete: all of them; partial: as its journal says, if read).
    answered: int | None = None
    #: Targets that failed for good (incomplete), or why it failed (what is damaged).
    failures: int = 0
    error: str | None = None


def _count(mapping: Mapping[str, Any] | None, key: str) -> int | None:
    value = (mapping or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def data_set_state(out: Path, data_set: int, *, journal: bool = False) -> DataSetState | None:
    """The state of ``OUT/<id>``, None if no run has left anything there. With ``journal``, the
    answers in a partial data set's journal are counted (it is read whole)."""
    store = DataSetStore(out, data_set)
    earlier = store.read()
    if earlier.manifest is None and earlier.summary is None:
        return None
    return _state(store, earlier, journal=journal)


def _state(store: DataSetStore, earlier: Earlier, *, journal: bool) -> DataSetState:
    summary, manifest = earlier.summary or {}, earlier.manifest or {}
    targets = _count(manifest, "targets")
    if targets is None:
        targets = _count(summary, "targets") or None
    params = manifest.get("params") if isinstance(manifest.get("params"), Mapping) else {}
    rerun = decide(earlier, params or {}, restart=False)
    error = summary.get("error") if isinstance(summary.get("error"), str) else None
    if rerun.action is Action.SKIP:
        return DataSetState(store.data_set, "complete", targets, targets)
    if rerun.reason:  # RESUME or FRESH that repairs what is damaged
        return DataSetState(store.data_set, "damaged", targets, None, 0, rerun.reason)
    if summary and summary.get("complete") is not True:  # the last run finished, not complete
        if _count(summary, "targets"):
            failures = _count(summary, "failures") or 0
            return DataSetState(store.data_set, "incomplete", targets, None, failures, error)
        return DataSetState(store.data_set, "failed", targets, None, 0, error)
    answered = None
    if journal and targets is not None:
        answered = store.answered(targets)
    return DataSetState(store.data_set, "partial", targets, answered)


def data_set_ids(out: Path) -> list[int]:
    """The data sets with a folder in ``out``, by id (other entries are not asyncdl's)."""
    try:
        names = [entry.name for entry in os.scandir(out) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    return sorted(int(name) for name in names if name.isdigit() and not name.startswith("0"))


@dataclass(frozen=True)
class Outlook:
    """What a run has ahead of it as far as its output folder says, before any volume is in."""

    #: Data sets complete already: a rerun skips them.
    complete: frozenset[int] = frozenset()
    #: The targets of data sets an earlier run began (from their run.json).
    targets: Mapping[int, int] = field(default_factory=dict)


def outlook(out: Path, data_sets: Iterable[int], *, restart: bool) -> Outlook:
    """What ``data_sets`` have ahead of them in ``out`` (nothing is known with ``restart``)."""
    if restart:
        return Outlook()
    complete, targets = set(), {}
    for data_set in data_sets:
        state = data_set_state(out, data_set)
        if state is None:
            continue
        if state.state == "complete":
            complete.add(data_set)
        elif state.targets is not None:
            targets[data_set] = state.targets
    return Outlook(frozenset(complete), targets)


@dataclass(frozen=True)
class DiskUse:
    """Bytes on disk (allocated, as ``du`` counts) in an output folder, by kind of file."""

    total: int = 0
    data: int = 0
    journals: int = 0
    #: Under ``OUT/.cache``: an older asyncdl's volume cache, which nothing reads now.
    cache: int = 0


def disk_use(out: Path) -> DiskUse:
    """What ``out`` takes on disk, walking it once (links are not followed)."""
    sizes: Counter[str] = Counter()

    def walk(directory: str, kind: str) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, "cache" if kind == "top" and entry.name == ".cache" else kind)
                    continue
                used = entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
            sizes["total"] += used
            if kind == "cache":
                sizes["cache"] += used
            elif entry.name == DATA:
                sizes["data"] += used
            elif entry.name == LINES:
                sizes["journals"] += used

    walk(str(out), "top")
    return DiskUse(sizes["total"], sizes["data"], sizes["journals"], sizes["cache"])


@dataclass(frozen=True)
class FolderStatus:
    """``asyncdl status OUT``: each data set's state, and the disk the folder takes."""

    out: Path
    states: Sequence[DataSetState]
    #: Ids asked about that have no folder yet: a rerun fetches them.
    new: Sequence[int]
    disk: DiskUse


def folder_status(out: Path, data_sets: Iterable[int] | None = None) -> FolderStatus:
    """The state of every data set in ``out`` (or of ``data_sets``), and its disk use."""
    ids = data_set_ids(out) if data_sets is None else list(dict.fromkeys(data_sets))
    states, new = [], []
    for data_set in ids:
        state = data_set_state(out, data_set, journal=True)
        if state is None:
            new.append(data_set)
        else:
            states.append(state)
    return FolderStatus(out, states, new, disk_use(out))


def describe_status(status: FolderStatus) -> list[str]:
    """The lines of ``asyncdl status``: a count per state and what a rerun does, then the disk."""
    by_state: dict[str, list[DataSetState]] = {}
    for state in status.states:
        by_state.setdefault(state.state, []).append(state)
    total = len(status.states) + len(status.new)
    lines = [f"{status.out}: {total:,} data set{'s' if total != 1 else ''}"]
    for name, rerun in STATES.items():
        group = by_state.get(name, [])
        if not group:
            continue
        lines.append(f"  {name:<10} {len(group):>7,}  {_detail(name, group, rerun)}")
    if status.new:
        lines.append(f"  {'not begun':<10} {len(status.new):>7,}  a rerun fetches them")
    disk = status.disk
    parts = [f"data.json {size(disk.data)}"]
    if disk.journals:  # unfinished data sets', or kept with --keep-journal
        parts.append(f"journals {size(disk.journals)}")
    if disk.cache:  # the volumes live in the user's cache now (asyncdl cache info)
        parts.append(f"OUT/.cache {size(disk.cache)}: an older asyncdl's volumes, safe to delete")
    lines.append(f"disk: {size(disk.total)} in all ({', '.join(parts)})")
    return lines


def _detail(name: str, group: Sequence[DataSetState], rerun: str) -> str:
    """What a state's data sets hold between them, and what a rerun does with them."""
    targets = sum(s.targets or 0 for s in group)
    if name == "complete":
        return f"{targets:,} targets; {rerun}"
    if name == "partial":
        answered = sum(s.answered or 0 for s in group)
        return f"{answered:,} of {targets:,} targets answered; {rerun}"
    if name == "incomplete":
        return f"{sum(s.failures for s in group):,} of {targets:,} targets failed; {rerun}"
    first = next((s for s in group if s.error), None)
    return f"{rerun}; e.g. {first.data_set}: {first.error}" if first else rerun
