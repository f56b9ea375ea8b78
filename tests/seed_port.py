"""A slow, sequential reference that follows the 2013 seed (download_data.py + api.py) step by step.

Blocking urllib, whole-file reads (pynrrd's own reader, zipfile + np.frombuffer), and the seed's
Python loop over voxels. It shares no code with asyncdl, so agreeing with it means something.
"""

from __future__ import annotations

import json
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import nrrd
import numpy as np

#: The seed's own URL, raw brackets and all, sent through urllib as the seed sent it (AllenSDK and
#: asyncdl send them as %5B/%5D): the end-to-end tests thus also check both forms get the same data.
LINES_FMT = (
    "%s/api/v2/data/query.json?criteria=service::mouse_connectivity_target_spatial["
    "seed_point$eq%d,%d,%d][section_data_set$eq%d]"
)
_MET_TYPES = {"MET_FLOAT": "<f4", "MET_UCHAR": "u1", "MET_DOUBLE": "<f8", "MET_UINT": "<u4"}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
        return body


def download_volume_legacy(url: str, volume: str) -> tuple[np.ndarray, np.ndarray]:
    """api.DownloadVolume, with the element type read from the header instead of assumed float32."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.zip"
        path.write_bytes(_get(url))
        with zipfile.ZipFile(path) as zf:
            header = zf.read(volume + ".mhd").decode()
            raw = zf.read(volume + ".raw")
    meta = dict(line.split(" = ") for line in header.split("\n") if line)
    arr = np.frombuffer(raw, dtype=_MET_TYPES[meta["ElementType"]])
    dims = [int(v) for v in meta["DimSize"].split(" ")]
    spacing = np.array([float(v) for v in meta["ElementSpacing"].split(" ")])
    return arr.reshape(dims, order="F"), spacing


def download_volume_nrrd(url: str) -> tuple[np.ndarray, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.nrrd"
        path.write_bytes(_get(url))
        arr, header = nrrd.read(str(path))
    spacing = np.linalg.norm(np.asarray(header["space directions"], float), axis=1)
    return arr, spacing


def fiber_ids(base: str) -> set[int]:
    tree = json.loads(_get(f"{base}/api/v2/structure_graph_download/1.json"))["msg"]
    found: set[int] = set()

    def walk(node: dict[str, Any], inside: bool) -> None:
        inside = inside or node["id"] == 1009
        if inside:
            found.add(node["id"])
        for child in node["children"]:
            walk(child, inside)

    for root in tree:
        walk(root, False)
    return found


class SeedReference:
    """The seed's results for a server, keeping the big fiber volume between data sets."""

    def __init__(self, base: str, archive: str | None = None) -> None:
        self.base = base
        self.archive = archive or base
        self._fiber: dict[str, tuple[np.ndarray, np.ndarray, Any]] = {}

    def fiber(self, volumes: str) -> tuple[np.ndarray, np.ndarray, Any]:
        if volumes not in self._fiber:
            if volumes == "legacy":
                arr, spacing = download_volume_legacy(
                    f"{self.base}/api/v2/well_known_file_download/197646984", "annotationFiber"
                )
                self._fiber[volumes] = (arr, spacing, lambda v: v != 0)
            else:
                arr, spacing = download_volume_nrrd(
                    f"{self.archive}/informatics-archive/current-release/mouse_ccf/annotation/"
                    "ccf_2017/annotation_25.nrrd"
                )
                ids = fiber_ids(self.base)
                self._fiber[volumes] = (arr, spacing, lambda v: int(v) in ids)
        return self._fiber[volumes]

    def data_set_volume(
        self, data_set: int, volume: str, volumes: str
    ) -> tuple[np.ndarray, np.ndarray]:
        if volumes == "legacy":
            url = f"{self.base}/grid_data/download/{data_set}?include={volume}"
            return download_volume_legacy(url, volume)
        image = {"density": "projection_density", "injection": "injection_fraction"}[volume]
        return download_volume_nrrd(
            f"{self.base}/grid_data/download_file/{data_set}?image={image}&resolution=100"
        )

    def download_lines(
        self, data_set: int, density_range: tuple[float, float], volumes: str
    ) -> list[Any]:
        densityArr, densitySpacing = self.data_set_volume(data_set, "density", volumes)
        ftArr, ftSpacing, in_tract = self.fiber(volumes)
        ftScale = densitySpacing / ftSpacing.astype(np.float32)
        indices = np.argwhere((densityArr >= density_range[0]) & (densityArr <= density_range[1]))
        lines: list[Any] = []
        for index in indices:
            ftIndex = np.array(index * ftScale, dtype=np.int64)
            try:
                ftVal = ftArr[ftIndex[0], ftIndex[1], ftIndex[2]]
            except IndexError:
                continue
            if not in_tract(ftVal):
                coord = index * densitySpacing
                url = LINES_FMT % (self.base, coord[0], coord[1], coord[2], data_set)
                response = json.loads(_get(url))
                # The seed drops a failed request; here one would be a test failure instead.
                assert response["success"] is True, response
                lines += response["msg"]
        return lines

    def injection_coordinates(self, data_set: int, threshold: float, volumes: str) -> list[Any]:
        arr, spacing = self.data_set_volume(data_set, "injection", volumes)
        coords: list[Any] = (np.argwhere(arr > threshold) * spacing).tolist()
        return coords

    def data(
        self,
        data_set: int,
        volumes: str = "nrrd",
        density_range: tuple[float, float] = (0.04, 0.3),
        threshold: float = 0.5,
    ) -> dict[str, Any]:
        return {
            "lines": self.download_lines(data_set, density_range, volumes),
            "injectionCoordinates": self.injection_coordinates(data_set, threshold, volumes),
        }
