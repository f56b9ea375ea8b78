"""The Allen API's endpoints, built from validated parameters (pure, no I/O).

The paths and query strings are exactly those of api.brain-map.org and
download.alleninstitute.org, so pointing ``Endpoints`` at the real hosts works unchanged. RMA
queries go out percent-encoded the way AllenSDK sends them (``Api.retrieve_parsed_json_over_http``
quotes every query URL with ``quote(url, ';/?:@&=+$,')``): a criterion's ``[`` and ``]`` become
``%5B`` and ``%5D``. The HTTP client sends these strings as they are (``encoded=True``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from .config import DEFAULT_ARCHIVE_URL, DEFAULT_BASE_URL
from .errors import FetchError, InsecureRedirectError, UsageError

#: The seed's fiber-tract annotation (legacy zipped MetaImage, 25 um).
FIBER_TRACT_FILE_ID = 197646984
#: The adult mouse structure graph (CCF 2017 ontology).
STRUCTURE_GRAPH_ID = 1
#: The real Allen API's host: legacy volumes served from here get a warning (see ``is_allen_api``).
ALLEN_API_HOST = "api.brain-map.org"
#: What AllenSDK leaves unescaped when it percent-encodes a query URL (allensdk/api/api.py).
RMA_SAFE = ";/?:@&=+$,"
#: The spatial search up to its seed point, already encoded: the hot path only appends to it.
_SPATIAL_QUERY = (
    "/api/v2/data/query.json?criteria=service::mouse_connectivity_target_spatial%5Bseed_point$eq"
)
#: ``image=`` names of the NRRD grid files and ``include=`` names of the legacy zips.
NRRD_IMAGES = {"density": "projection_density", "injection": "injection_fraction"}
LEGACY_INCLUDES = {"density": "density", "injection": "injection"}


def data_set_id(value: object) -> int:
    """Validate a data set id (a positive int, or a string of one); ids are all a path is built from."""
    if isinstance(value, bool):
        raise UsageError(f"not a data set id: {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        number = int(value.strip())
    else:
        raise UsageError(f"not a data set id: {value!r}")
    if not 0 < number < 2**63:
        raise UsageError(f"not a data set id: {value!r}")
    return number


#: An acronym a query can carry as it is; the few others ("fiber tracts") are named by id.
QUERY_SAFE_ACRONYM = re.compile(r"[A-Za-z0-9/-]+")
#: The longest list of structures a search takes, in characters.
MAX_STRUCTURES_CHARS = 500
#: Acronyms or ids, comma-separated: nothing that could close a criterion and start another.
_STRUCTURE_LIST = re.compile(rf"{QUERY_SAFE_ACRONYM.pattern}(?:,{QUERY_SAFE_ACRONYM.pattern})*")
#: The most rows the Allen API's services send in one answer.
MAX_PAGE_ROWS = 2000


def injection_structure(value: object) -> str:
    """Validate a structure acronym or id, or a comma-separated list of them, for a query."""
    if (
        not isinstance(value, str)
        or len(value) > MAX_STRUCTURES_CHARS
        or not _STRUCTURE_LIST.fullmatch(value)
    ):
        raise UsageError(
            f"not a structure acronym or id (letters, digits, '-', '/', ','): {str(value)[:80]!r}"
        )
    return value


def rma_query(criteria: str) -> str:
    """The path and query of an RMA ``query.json`` call, percent-encoded as AllenSDK encodes it."""
    return quote(f"/api/v2/data/query.json?criteria={criteria}", RMA_SAFE)


def is_allen_api(url: str) -> bool:
    """Whether ``url`` is on the real Allen API host (any scheme or port), not an emulator."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host is not None and host.rstrip(".") == ALLEN_API_HOST


def host_of(url: str) -> str:
    """``host`` or ``host:port`` (as written) of an http(s) URL, to name a server in a message."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or url


def follow_redirect(url: str, location: str) -> str:
    """The absolute URL a redirect from ``url`` to ``location`` (absolute or relative) leads to.

    Never from https to plain http (``InsecureRedirectError``: it would undo TLS), and only to
    http(s) (``FetchError``).
    """
    target = urljoin(url, location.strip())
    try:
        parts = urlsplit(target)
    except ValueError as exc:
        raise FetchError(f"redirect to a malformed URL {location[:200]!r}", url) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"redirect to {location[:200]!r}, not an http(s) URL", url)
    if urlsplit(url).scheme == "https" and parts.scheme == "http":
        raise InsecureRedirectError(
            f"{url} redirected to plain http, {target}: refused, as it would undo TLS (the server "
            "or a proxy in between is misconfigured)",
            url,
            host_of(url),
        )
    return target


def _base(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"not an http(s) URL: {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True)
class Endpoints:
    """Where the API and the file archive live; every URL asyncdl requests is built here.

    ``name`` identifies the data source for caches and resumed runs; it defaults to the two URLs.
    The bundled emulator names itself, so its data is recognised whatever port it listens on.
    """

    base_url: str = DEFAULT_BASE_URL
    archive_url: str = DEFAULT_ARCHIVE_URL
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", _base(self.base_url))
        object.__setattr__(self, "archive_url", _base(self.archive_url))
        if not self.name:
            object.__setattr__(self, "name", f"{self.base_url} {self.archive_url}")

    @property
    def is_allen_api(self) -> bool:
        """Whether the API (grid files, spatial search) is the real Allen host."""
        return is_allen_api(self.base_url)

    def key(self, url: str) -> str:
        """``url`` with its host replaced by ``name``: the same key for the same data anywhere."""
        for prefix in (self.base_url, self.archive_url):
            if url.startswith(prefix + "/"):
                return f"{self.name}|{url[len(prefix) :]}"
        return url

    def grid_nrrd(self, data_set: int, volume: str, resolution: int = 100) -> str:
        """A data set's projection density or injection fraction as NRRD."""
        image = NRRD_IMAGES[volume]
        return (
            f"{self.base_url}/grid_data/download_file/{data_set_id(data_set)}"
            f"?image={image}&resolution={int(resolution)}"
        )

    def grid_legacy(self, data_set: int, volume: str) -> str:
        """A data set's density or injection volume as the legacy zipped MetaImage."""
        include = LEGACY_INCLUDES[volume]
        return f"{self.base_url}/grid_data/download/{data_set_id(data_set)}?include={include}"

    def fiber_tracts_legacy(self) -> str:
        """The seed's 25 um fiber-tract mask (zip of annotationFiber.mhd/.raw)."""
        return f"{self.base_url}/api/v2/well_known_file_download/{FIBER_TRACT_FILE_ID}"

    def annotation_nrrd(self, resolution: int = 25) -> str:
        """The CCF 2017 structure annotation (uint32 labels) on the archive host."""
        res = int(resolution)
        return (
            f"{self.archive_url}/informatics-archive/current-release/mouse_ccf/annotation/"
            f"ccf_2017/annotation_{res}.nrrd"
        )

    def structure_graph(self, graph_id: int = STRUCTURE_GRAPH_ID) -> str:
        """The nested structure tree."""
        return f"{self.base_url}/api/v2/structure_graph_download/{int(graph_id)}.json"

    def target_spatial(self, coordinate: Sequence[float], data_set: int) -> str:
        """Spatial search: streamlines from ``data_set``'s injection site to ``coordinate`` (um).

        Coordinates are formatted with ``%d`` (truncation), exactly as the seed does. Built
        encoded (``%5B``/``%5D``) by concatenation: this runs for every target, thousands a second,
        and digits, ``-`` and ``,`` are what ``quote`` leaves alone (the tests check it equals
        ``base_url + rma_query(...)`` of the plain criteria).
        """
        x, y, z = coordinate
        return (
            f"{self.base_url}{_SPATIAL_QUERY}{'%d,%d,%d' % (x, y, z)}"  # noqa: UP031 (seed's %d)
            f"%5D%5Bsection_data_set$eq{data_set_id(data_set)}%5D"
        )

    def injection_structure_search(
        self, structure: str, primary_only: bool, start_row: int, num_rows: int
    ) -> str:
        """Experiments injected in ``structure`` (or its descendants): rows ``start_row`` on.

        ``primary_only`` counts only each experiment's primary injection structure; without it the
        parameter is not sent at all, as AllenSDK's ``experiment_source_search`` sends only what it
        is given (the service then matches primary and secondary injection structures).
        """
        if not (isinstance(start_row, int) and start_row >= 0):
            raise UsageError(f"start_row must be 0 or more, got {start_row!r}")
        if not (isinstance(num_rows, int) and 1 <= num_rows <= MAX_PAGE_ROWS):
            raise UsageError(f"num_rows must be in [1, {MAX_PAGE_ROWS}], got {num_rows!r}")
        primary = "[primary_structure_only$eqtrue]" if primary_only else ""
        return self.base_url + rma_query(
            "service::mouse_connectivity_injection_structure"
            f"[injection_structures$eq{injection_structure(structure)}]{primary}"
            f"[start_row$eq{start_row}][num_rows$eq{num_rows}]"
        )
