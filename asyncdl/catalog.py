"""Finding data sets: the experiments injected in a structure, from the injection-structure service.

The structures asked for are first checked against the structure tree, so a typo gets a one-line
error with the close matches rather than the service's bare "unknown". The service answers at most
2000 rows a call and what its ``total_rows`` means is not documented, so a search pages with
``start_row``/``num_rows`` until a page does not come back full, as AllenSDK's ``RmaPager`` does for
``total_rows='all'`` (allensdk/api/queries/rma_pager.py), and gives up after ``MAX_PAGES`` pages.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import FetchOptions
from .errors import FetchError, UsageError, VolumeError
from .fetcher import HttpClient, Tally
from .responses import rows
from .urls import MAX_PAGE_ROWS, MAX_STRUCTURES_CHARS, QUERY_SAFE_ACRONYM, Endpoints, data_set_id

#: At most this many pages a search: 200,000 rows at 2000 a page, far more than the whole Allen
#: connectivity atlas holds, so a server that never sends a short page cannot cause a flood.
MAX_PAGES = 100
#: The Allen convention (``transgenic_lines$eq0``): line "0" means wild type, no transgenic line.
WILD_TYPE = "0"
#: How many close matches an unknown acronym's error lists.
_SUGGESTIONS = 5


@dataclass(frozen=True)
class Experiment:
    """One experiment (data set) as the injection-structure service lists it."""

    id: int
    structure: str
    structure_name: str
    transgenic_line: str
    injection_volume: float | None
    record: Mapping[str, Any] = field(repr=False, compare=False, hash=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], url: str = "") -> Experiment:
        """Read a service row; a row without a valid id is a broken answer."""
        try:
            number = data_set_id(record.get("id"))
        except UsageError as exc:
            raise FetchError(f"experiment record without a valid id: {exc}", url) from exc
        volume = record.get("injection-volume")
        return cls(
            id=number,
            structure=str(record.get("structure-abbrev") or ""),
            structure_name=str(record.get("structure-name") or ""),
            transgenic_line=str(record.get("transgenic-line") or ""),
            injection_volume=float(volume) if isinstance(volume, int | float) else None,
            record=record,
        )


def _page(payload: Any, url: str) -> list[Experiment]:
    """One answer of the service as experiments (its ``total_rows`` is not used, see above)."""
    return [Experiment.from_record(r, url) for r in rows(payload, url)]


@dataclass(frozen=True)
class StructureNames:
    """The acronyms and ids of a structure tree: what an injection-structure search may name."""

    acronyms: frozenset[str]
    ids: frozenset[int]
    #: Each acronym's id, to name the few acronyms a query cannot carry ("fiber tracts", "CUL4, 5").
    id_of: Mapping[str, int] = field(default_factory=dict, compare=False)

    @classmethod
    def from_tree(cls, roots: Iterable[Mapping[str, Any]]) -> StructureNames:
        """Every node of a tree as ``structure_graph_download`` sends it (nested ``children``);
        a flat list of structures, as AllenSDK's ``StructureTree`` dumps it, works too."""
        id_of: dict[str, int] = {}
        ids: set[int] = set()
        stack = list(roots)
        while stack:
            node = stack.pop()
            try:
                acronym, number = node["acronym"], node["id"]
                children = node.get("children") or []
            except (KeyError, TypeError, AttributeError) as exc:
                raise VolumeError(f"malformed structure tree node: {exc!r}") from exc
            if not isinstance(acronym, str) or not isinstance(number, int):
                raise VolumeError(f"malformed structure tree node: id {number!r}, {acronym!r}")
            if not isinstance(children, list):
                raise VolumeError("malformed structure tree: children is not a list")
            id_of[acronym] = number
            ids.add(number)
            stack.extend(children)
        return cls(frozenset(id_of), frozenset(ids), id_of)

    def resolve(self, structures: str) -> str:
        """``structures`` (acronyms or ids, comma-separated) checked against the tree, for a query:
        acronyms as the tree spells them, or by id where a query cannot carry the acronym (a
        space or comma: "fiber tracts", "CUL4, 5"); ``UsageError`` naming the close matches for
        one that is not there.

        An acronym matches exactly, or else case-insensitively if only one does ("visp" is VISp;
        "cm" stays ambiguous, the tree has both CM and cm). Spaces around commas do not matter,
        and an acronym that holds a comma is found whole.
        """
        if not isinstance(structures, str) or not 0 < len(structures) <= MAX_STRUCTURES_CHARS:
            raise UsageError(f"not a structure acronym or id: {str(structures)[:80]!r}")
        pieces = structures.split(",")
        resolved: list[str] = []
        start = 0
        while start < len(pieces):
            # The longest run of pieces that names a structure (most are one piece).
            for end in range(len(pieces), start, -1):
                found = self._one(",".join(pieces[start:end]).strip())
                if found is not None:
                    break
            else:
                if not pieces[start].strip():
                    raise UsageError(f"an empty structure in {structures!r}")
                raise UsageError(self._unknown(pieces[start].strip()))
            resolved.append(found)
            start = end
        return ",".join(resolved)

    def _one(self, item: str) -> str | None:
        """One acronym or id as a query names it; None if the tree has no such structure."""
        if item.isdigit():
            return str(int(item)) if int(item) in self.ids else None
        same = [a for a in self.acronyms if a.lower() == item.lower()]
        if item not in self.acronyms and len(same) != 1:
            return None
        acronym = item if item in self.acronyms else same[0]
        return acronym if QUERY_SAFE_ACRONYM.fullmatch(acronym) else str(self.id_of[acronym])

    def _unknown(self, item: str) -> str:
        if item.isdigit():
            return f"unknown structure id {item}: not in the structure tree"
        same = [a for a in self.acronyms if a.lower() == item.lower()]
        if same:
            either = " or ".join(sorted(same))
            return f"structure acronym {item!r} is ambiguous: did you mean {either}?"
        by_lower: dict[str, list[str]] = {}
        for acronym in self.acronyms:
            by_lower.setdefault(acronym.lower(), []).append(acronym)
        close = difflib.get_close_matches(item.lower(), by_lower, n=_SUGGESTIONS)
        names = [a for lower in close for a in sorted(by_lower[lower])][:_SUGGESTIONS]
        hint = f"close matches: {', '.join(names)}" if names else "no close match"
        return f"unknown structure acronym {item!r} (not in the structure tree); {hint}"


async def structure_names(client: HttpClient, endpoints: Endpoints, tally: Tally) -> StructureNames:
    """The acronyms and ids of the server's structure tree (structure graph 1)."""
    return StructureNames.from_tree(await client.get_json(endpoints.structure_graph(), tally, rows))


async def list_experiments(
    client: HttpClient,
    endpoints: Endpoints,
    injection_structure: str,
    *,
    primary_only: bool = False,
    transgenic_lines: Sequence[str] | None = None,
    page_size: int = MAX_PAGE_ROWS,
    max_pages: int = MAX_PAGES,
    tally: Tally | None = None,
) -> list[Experiment]:
    """Every experiment injected in a structure (acronym or id, or a comma-separated list).

    An experiment matches when its injection structure is the structure or one of its descendants;
    with ``primary_only``, only its primary injection structure counts. ``transgenic_lines`` keeps
    those lines only (case-insensitive; ``"0"`` is wild type). Order is the service's, each id once.
    A structure that is not in the server's structure tree is a ``UsageError`` naming close matches.
    """
    wanted = _line_filter(transgenic_lines)
    tally = tally if tally is not None else Tally()
    names = await structure_names(client, endpoints, tally)
    structure = names.resolve(injection_structure)
    listed = await _search(client, endpoints, structure, primary_only, page_size, max_pages, tally)
    seen: set[int] = set()
    found = []
    for exp in listed:
        if exp.id not in seen and (wanted is None or exp.transgenic_line.lower() in wanted):
            seen.add(exp.id)
            found.append(exp)
    return found


async def _search(
    client: HttpClient,
    endpoints: Endpoints,
    structure: str,
    primary_only: bool,
    page_size: int,
    max_pages: int,
    tally: Tally,
) -> list[Experiment]:
    """The search's rows, page after page until one is not full (shorter, empty or, oddly, longer).

    Sequential on purpose: the atlas needs two pages, and only a page's length says whether
    another follows.
    """
    if max_pages < 1:
        raise UsageError(f"max_pages must be at least 1, got {max_pages}")
    found: list[Experiment] = []
    for number in range(max_pages):
        start = number * page_size
        url = endpoints.injection_structure_search(structure, primary_only, start, page_size)
        page = await client.get_json(url, tally, _page)
        found += page
        if len(page) != page_size:
            return found
    raise FetchError(f"the search still sent full pages after {max_pages}; giving up", url)


async def find_experiments(
    injection_structure: str,
    *,
    endpoints: Endpoints | None = None,
    options: FetchOptions | None = None,
    primary_only: bool = False,
    transgenic_lines: Sequence[str] | None = None,
) -> list[Experiment]:
    """``list_experiments`` with a client of its own: what a script or the command line calls."""
    async with HttpClient(options or FetchOptions()) as client:
        return await list_experiments(
            client,
            endpoints or Endpoints(),
            injection_structure,
            primary_only=primary_only,
            transgenic_lines=transgenic_lines,
        )


def _line_filter(lines: Sequence[str] | None) -> frozenset[str] | None:
    """The transgenic lines to keep, lower-cased; wild type is the empty line.

    Filtered here rather than with the service's ``transgenic_lines`` parameter: how the real
    service matches line names there (quoting, case, ids) is not documented well enough to rely on,
    and filtering the listed rows gives the same result at the cost of a few more rows.
    """
    if lines is None:
        return None
    if isinstance(lines, str):
        raise UsageError("transgenic_lines must be a sequence of names, not one string")
    if not lines or any(not line.strip() for line in lines):
        raise UsageError("a transgenic line name is empty (use '0' for wild type)")
    return frozenset("" if line.strip() == WILD_TYPE else line.strip().lower() for line in lines)
