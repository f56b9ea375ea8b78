"""The Allen API's endpoints, built from validated parameters (pure, no I/O).

The paths and query strings are exactly those of api.brain-map.org and
download.alleninstitute.org, so pointing ``Endpoints`` at the real hosts works unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config import DEFAULT_ARCHIVE_URL, DEFAULT_BASE_URL
from .errors import UsageError

#: The seed's fiber-tract annotation (legacy zipped MetaImage, 25 um).
FIBER_TRACT_FILE_ID = 197646984
#: The adult mouse structure graph (CCF 2017 ontology).
STRUCTURE_GRAPH_ID = 1
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


def _base(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"not an http(s) URL: {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True)
class Endpoints:
    """Where the API and the file archive live; every URL asyncdl requests is built here."""

    base_url: str = DEFAULT_BASE_URL
    archive_url: str = DEFAULT_ARCHIVE_URL

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", _base(self.base_url))
        object.__setattr__(self, "archive_url", _base(self.archive_url))

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

        Coordinates are formatted with ``%d`` (truncation), exactly as the seed does.
        """
        x, y, z = coordinate
        return (
            f"{self.base_url}/api/v2/data/query.json?criteria="
            "service::mouse_connectivity_target_spatial"
            f"[seed_point$eq{'%d,%d,%d' % (x, y, z)}]"  # noqa: UP031 (the seed's %d)
            f"[section_data_set$eq{data_set_id(data_set)}]"
        )
