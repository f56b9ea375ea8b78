"""The emulator's experiment catalogue and its ``mouse_connectivity_injection_structure`` service.

The catalogue is large enough to need paging (``grey`` matches all of it, more than the 2000 rows
the real service returns a call). Every record is ``synthetic.Experiment(id).metadata()``, so an id
listed here is one the emulator then serves volumes and spatial searches for, with the same
structure, transgenic line and injection.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from .envelope import failure, success
from .ontology import BY_ACRONYM, BY_ID, lineage
from .synthetic import DATA_SET_IDS, Experiment

SERVICE = "service::mouse_connectivity_injection_structure"
#: The most rows the real service sends in one answer, whatever ``num_rows`` asks.
MAX_ROWS = 2000
CATALOGUE_SIZE = 2600

#: What an answer's ``total_rows`` says (undocumented for the real connected services): the number
#: of matches, the number of rows in this page, or nothing at all.
TotalRows = Literal["matches", "page", "absent"]

_PARAMS = re.compile(r"(?:\[[a-z_]+\$eq[^\[\]]*\])*")
_PARAM = re.compile(r"\[([a-z_]+)\$eq([^\[\]]*)\]")
_KNOWN = frozenset({"injection_structures", "primary_structure_only", "start_row", "num_rows"})


def _catalogue_ids(size: int) -> tuple[int, ...]:
    """``size`` ids in the real ids' range, from a hash (stable across Python and numpy versions)."""
    ids = set(DATA_SET_IDS)
    k = 0
    while len(ids) < size:
        digest = hashlib.blake2b(f"catalogue,{k}".encode(), digest_size=8).digest()
        ids.add(100_000_000 + int.from_bytes(digest, "little") % 600_000_000)
        k += 1
    return tuple(sorted(ids))


#: Every experiment the emulator knows, in the order the service lists them (by id).
#: ``synthetic.DATA_SET_IDS`` (the small, hand-picked list) is among them.
CATALOGUE_IDS = _catalogue_ids(CATALOGUE_SIZE)


@dataclass(frozen=True)
class _Entry:
    record: dict[str, Any]
    primary: frozenset[int]  # the primary injection structure and its ancestors
    any: frozenset[int]  # the same for every injection structure


@lru_cache(maxsize=1)
def catalogue() -> tuple[_Entry, ...]:
    """The records of every catalogued experiment, with what each is "in" (built once, ~0.5 s)."""
    entries = []
    for data_set in CATALOGUE_IDS:
        exp = Experiment(data_set)
        entries.append(
            _Entry(
                record=exp.metadata(),
                primary=frozenset(lineage(exp.structure_id)),
                any=frozenset(s for sid in exp.injection_structure_ids() for s in lineage(sid)),
            )
        )
    return tuple(entries)


class BadQuery(ValueError):
    """Criteria the service cannot run: an HTTP 400, as for any unsupported query."""


def answer(criteria: str, total_rows: TotalRows = "matches") -> dict[str, Any]:
    """The service's answer to ``criteria``: a page of matching records, or ``success: false``.

    Raises ``BadQuery`` for criteria that are not a well-formed call of this service.
    ``total_rows`` chooses what the answer's ``total_rows`` holds, for clients' tests.
    """
    params = _parse(criteria)
    try:
        structures = _structures(params["injection_structures"])
    except LookupError as exc:
        return failure(str(exc))
    primary_only = params.get("primary_structure_only", "false").lower() == "true"
    start = _count(params, "start_row", 0)
    size = min(_count(params, "num_rows", MAX_ROWS), MAX_ROWS)
    matches = [
        entry.record
        for entry in catalogue()
        if structures & (entry.primary if primary_only else entry.any)
    ]
    page = success(matches[start : start + size], start, len(matches))
    if total_rows == "page":
        page["total_rows"] = page["num_rows"]
    elif total_rows == "absent":
        del page["total_rows"]
    return page


def _parse(criteria: str) -> dict[str, str]:
    if not criteria.startswith(SERVICE) or not _PARAMS.fullmatch(criteria, len(SERVICE)):
        raise BadQuery(f"Unsupported criteria: {criteria[:200]}")
    params = dict(_PARAM.findall(criteria, len(SERVICE)))
    unknown = set(params) - _KNOWN
    if unknown:
        raise BadQuery(f"Unsupported parameters: {', '.join(sorted(unknown))}")
    if "injection_structures" not in params:
        raise BadQuery("injection_structures is required")
    if params.get("primary_structure_only", "false").lower() not in ("true", "false"):
        raise BadQuery("primary_structure_only must be true or false")
    return params


def _structures(value: str) -> frozenset[int]:
    """Structure ids from a comma-separated list of acronyms or ids; ``LookupError`` if unknown."""
    by_lower = {acronym.lower(): sid for acronym, sid in BY_ACRONYM.items()}
    ids = set()
    for item in value.split(","):
        if item.isdigit() and int(item) in BY_ID:
            ids.add(int(item))
        elif item.lower() in by_lower:
            ids.add(by_lower[item.lower()])
        else:
            raise LookupError(f"Unknown structure: {item[:60]!r}")
    return frozenset(ids)


def _count(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not raw.isascii():
        raise BadQuery(f"{name} must be a non-negative integer")
    return int(raw)
