"""Target selection, vectorized: which 100 um voxels to ask the spatial search about (pure numpy).

Semantics are the seed's (download_data.py) exactly: density in [lo, hi] inclusive, compared in the
volume's own dtype; the fine (25 um) index of a coarse voxel is ``int64(index * coarse / float32(fine))``
per axis; voxels whose fine index falls outside the fiber volume are skipped, as are voxels in a fiber
tract; targets come in ``np.argwhere`` order; coordinates in microns are ``index * spacing``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import VolumeError
from .volumes import Sample, Volume

#: The root of the fiber-tract subtree in the Allen mouse ontology.
FIBER_TRACTS_ID = 1009

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Targets:
    """Target voxels in the seed's order: their coarse indices and micron coordinates."""

    index: npt.NDArray[np.int64]
    coord: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.index)


@dataclass(frozen=True)
class FinePlan:
    """Which fine voxels a coarse grid needs: in-bounds fine indices per axis, and whom they serve."""

    coarse_shape: tuple[int, int, int]
    sample: Sample
    in_bounds: tuple[BoolArray, BoolArray, BoolArray]

    def allowed(self, in_tract: BoolArray) -> BoolArray:
        """Coarse mask of voxels that may be targets, given ``in_tract`` for the sampled fine voxels."""
        mask = np.zeros(self.coarse_shape, np.bool_)
        mask[np.ix_(*self.in_bounds)] = ~in_tract
        return mask


def plan_fine_lookup(
    coarse_shape: Sequence[int],
    coarse_spacing: npt.ArrayLike,
    fine_shape: Sequence[int],
    fine_spacing: npt.ArrayLike,
) -> FinePlan:
    """Map each coarse index to its fine index the way the seed does, and drop out-of-bounds ones."""
    scale = np.asarray(coarse_spacing, np.float64) / np.asarray(fine_spacing, np.float64).astype(
        np.float32
    )
    sample = []
    in_bounds = []
    for n, s, limit in zip(coarse_shape, scale, fine_shape, strict=True):
        fine = (np.arange(n, dtype=np.int64) * s).astype(np.int64)
        inside = (fine >= 0) & (fine < limit)
        sample.append(fine[inside])
        in_bounds.append(inside)
    shape = tuple(int(n) for n in coarse_shape)
    return FinePlan(shape, tuple(sample), tuple(in_bounds))  # type: ignore[arg-type]


def _bound(array: npt.NDArray[np.generic], value: float) -> Any:
    """A Python float compared with a float array is cast to the array's dtype (NumPy's rules)."""
    return array.dtype.type(value) if np.issubdtype(array.dtype, np.floating) else float(value)


def select_targets(
    density: Volume, allowed: BoolArray, density_range: tuple[float, float]
) -> Targets:
    """Voxels with density in ``density_range`` (inclusive) that ``allowed`` permits, in argwhere order."""
    arr = density.array
    if allowed.shape != arr.shape:
        raise VolumeError(f"fiber mask shape {allowed.shape} does not match {arr.shape}")
    lo, hi = density_range
    hit = (arr >= _bound(arr, lo)) & (arr <= _bound(arr, hi)) & allowed
    index = np.argwhere(hit).astype(np.int64)
    return Targets(index, index * density.spacing)


def injection_coordinates(injection: Volume, threshold: float) -> npt.NDArray[np.float64]:
    """Micron coordinates of voxels above ``threshold``, in argwhere order (the seed's second output)."""
    arr = injection.array
    coords: npt.NDArray[np.float64] = np.argwhere(arr > _bound(arr, threshold)) * injection.spacing
    return coords


def fiber_tract_ids(
    roots: Iterable[Mapping[str, object]], top: int = FIBER_TRACTS_ID
) -> frozenset[int]:
    """Ids of ``top`` and all its descendants in a nested structure tree (``children`` lists)."""
    found: set[int] = set()
    stack: list[tuple[Mapping[str, object], bool]] = [(node, False) for node in roots]
    while stack:
        node, inside = stack.pop()
        try:
            node_id = int(node["id"])  # type: ignore[call-overload]
            children = node.get("children") or []
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VolumeError(f"malformed structure tree node: {exc}") from exc
        inside = inside or node_id == top
        if inside:
            found.add(node_id)
        if not isinstance(children, list):
            raise VolumeError("malformed structure tree: children is not a list")
        stack.extend((child, inside) for child in children)
    if top not in found:
        raise VolumeError(f"structure tree has no structure {top} (fiber tracts)")
    return frozenset(found)


def in_tract_labels(labels: npt.NDArray[np.generic], tract_ids: frozenset[int]) -> BoolArray:
    """Which annotation labels belong to a fiber tract."""
    return np.isin(labels, np.fromiter(tract_ids, np.int64, len(tract_ids)))
