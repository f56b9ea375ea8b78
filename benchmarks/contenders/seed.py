"""The 2013 seed's steps (download_data.py, api.py) without any I/O, for the seed-like contenders.

Volumes are decoded whole, as the seed did (the 25 um annotation is 300 MB in memory), and targets
are chosen by the seed's own Python loop over voxels. What differs between the contenders is only
how the bytes are fetched. The URLs and the output are the real API's and the seed's, so the runner
can check that every contender wrote the same data.json as asyncdl.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nrrd
import numpy as np
import numpy.typing as npt

DENSITY_RANGE = (0.04, 0.3)
INJECTION_THRESHOLD = 0.5
FIBER_TRACTS = 1009

ANNOTATION = "/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/annotation_25.nrrd"
STRUCTURE_GRAPH = "/api/v2/structure_graph_download/1.json"
_GRID = "/grid_data/download_file/%d?image=%s&resolution=100"
_TARGET = (
    "/api/v2/data/query.json?criteria=service::mouse_connectivity_target_spatial"
    "[seed_point$eq%d,%d,%d][section_data_set$eq%d]"
)


@dataclass(frozen=True)
class Job:
    """What a contender is asked to do; the runner passes it on the command line."""

    base_url: str
    data_sets: tuple[int, ...]
    out: Path
    concurrency: int
    #: Stop after this many target requests (None: do the whole job).
    sample: int | None


def parse_job(argv: Sequence[str] | None = None) -> Job:
    parser = argparse.ArgumentParser(description="Run one seed-like benchmark contender.")
    parser.add_argument("data_sets", type=int, nargs="+")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("--sample", type=int)
    args = parser.parse_args(argv)
    return Job(args.base_url, tuple(args.data_sets), args.out, args.concurrency, args.sample)


def grid_url(base: str, data_set: int, volume: str) -> str:
    image = {"density": "projection_density", "injection": "injection_fraction"}[volume]
    return base + _GRID % (data_set, image)


def target_url(base: str, coord: npt.NDArray[np.float64], data_set: int) -> str:
    return base + _TARGET % (coord[0], coord[1], coord[2], data_set)


def decode_nrrd(body: bytes) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """A whole NRRD volume and its voxel spacing (um), as pynrrd reads it."""
    fh = io.BytesIO(body)
    header = nrrd.read_header(fh)
    array = nrrd.read_data(header, fh)
    spacing = np.linalg.norm(np.asarray(header["space directions"], float), axis=1)
    return array, spacing


def fiber_tract_ids(structure_graph: bytes) -> frozenset[int]:
    """Structure 1009 ("fiber tracts") and all its descendants, from the nested structure tree."""
    found: set[int] = set()
    stack = [(node, False) for node in json.loads(structure_graph)["msg"]]
    while stack:
        node, inside = stack.pop()
        inside = inside or node["id"] == FIBER_TRACTS
        if inside:
            found.add(node["id"])
        stack += [(child, inside) for child in node["children"]]
    return frozenset(found)


@dataclass(frozen=True)
class FiberTracts:
    """The 25 um annotation and which of its labels are fiber tracts."""

    labels: npt.NDArray[Any]
    spacing: npt.NDArray[np.float64]
    tract_ids: frozenset[int]


def target_coords(
    density: npt.NDArray[Any], spacing: npt.NDArray[np.float64], fiber: FiberTracts
) -> Iterator[npt.NDArray[np.float64]]:
    """The seed's loop: voxels in the density range, outside fiber tracts, as micron coordinates."""
    scale = spacing / fiber.spacing.astype(np.float32)
    lo, hi = DENSITY_RANGE
    for index in np.argwhere((density >= lo) & (density <= hi)):
        fine = np.array(index * scale, dtype=np.int64)
        try:
            label = fiber.labels[fine[0], fine[1], fine[2]]
        except IndexError:  # outside the annotation: the seed skips it
            continue
        if int(label) not in fiber.tract_ids:
            yield index * spacing


def injection_coordinates(
    injection: npt.NDArray[Any], spacing: npt.NDArray[np.float64]
) -> list[list[float]]:
    coords: list[list[float]] = (np.argwhere(injection > INJECTION_THRESHOLD) * spacing).tolist()
    return coords


def write_data(out: Path, data_set: int, lines: list[Any], injection: list[list[float]]) -> None:
    """``OUT/<id>/data.json`` with the seed's keys."""
    folder = out / str(data_set)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "data.json").open("w") as fh:
        json.dump({"lines": lines, "injectionCoordinates": injection}, fh)


def lines_of(answer: bytes) -> list[Any]:
    """The records of a spatial-search answer (the seed kept ``msg``); a failure is an error."""
    payload = json.loads(answer)
    if payload.get("success") is not True:
        raise RuntimeError(f"spatial search failed: {str(payload.get('msg'))[:200]}")
    records: list[Any] = payload["msg"]
    return records
