"""Finding data sets: the experiments injected in a structure, from the injection-structure service.

The service answers at most 2000 rows a call, so a search is paged with ``start_row``/``num_rows``
until ``total_rows``: the first page says how many there are, the others are then fetched at once
(the client bounds how many requests are in flight).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .aio import all_of
from .config import FetchOptions
from .errors import FetchError, TransientError, UsageError
from .fetcher import HttpClient, Tally
from .responses import rows
from .urls import MAX_PAGE_ROWS, Endpoints, data_set_id
from .urls import injection_structure as valid_structure

#: More rows than the whole Allen connectivity atlas holds, many times over: a larger ``total_rows``
#: is a broken answer, not a reason to send thousands of requests.
MAX_TOTAL_ROWS = 200_000
#: The Allen convention (``transgenic_lines$eq0``): line "0" means wild type, no transgenic line.
WILD_TYPE = "0"


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


@dataclass(frozen=True)
class _Page:
    experiments: list[Experiment]
    total_rows: int


def _page(payload: Any, url: str) -> _Page:
    """One answer of the service: its rows as experiments, and how many rows there are in all."""
    records = rows(payload, url)
    total = payload.get("total_rows")
    if not isinstance(total, int) or isinstance(total, bool) or not 0 <= total <= MAX_TOTAL_ROWS:
        raise TransientError(f"answer's total_rows is not a plausible count: {total!r}", url)
    return _Page([Experiment.from_record(r, url) for r in records], total)


async def list_experiments(
    client: HttpClient,
    endpoints: Endpoints,
    injection_structure: str,
    *,
    primary_only: bool = False,
    transgenic_lines: Sequence[str] | None = None,
    page_size: int = MAX_PAGE_ROWS,
    tally: Tally | None = None,
) -> list[Experiment]:
    """Every experiment injected in a structure (acronym or id, or a comma-separated list).

    An experiment matches when its injection structure is the structure or one of its descendants;
    with ``primary_only``, only its primary injection structure counts. ``transgenic_lines`` keeps
    those lines only (case-insensitive; ``"0"`` is wild type). Order is the service's, each id once.
    """
    structure = valid_structure(injection_structure)
    wanted = _line_filter(transgenic_lines)
    tally = tally if tally is not None else Tally()

    def get(start: int) -> Awaitable[_Page]:
        url = endpoints.injection_structure_search(structure, primary_only, start, page_size)
        return client.get_json(url, tally, _page)

    first = await get(0)
    starts = range(page_size, first.total_rows, page_size)
    pages = [first, *await all_of(*(get(start) for start in starts))]
    seen: set[int] = set()
    found = []
    for exp in (exp for page in pages for exp in page.experiments):
        if exp.id not in seen and (wanted is None or exp.transgenic_line.lower() in wanted):
            seen.add(exp.id)
            found.append(exp)
    return found


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
