import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asyncdl import VolumeError
from asyncdl.emulator.ontology import structure_tree
from asyncdl.targets import (
    fiber_tract_ids,
    injection_coordinates,
    plan_fine_lookup,
    select_targets,
)
from asyncdl.volumes import Volume

from .conftest import SHARED


def seed_loop(densityArr, densitySpacing, ftArr, ftSpacing, densityRange):
    """download_data.DownloadLines, literally, minus the download."""
    ftScale = densitySpacing / ftSpacing.astype(np.float32)
    indices = np.argwhere((densityArr >= densityRange[0]) & (densityArr <= densityRange[1]))
    out = []
    for index in indices:
        ftIndex = np.array(index * ftScale, dtype=np.int64)
        try:
            ftVal = ftArr[ftIndex[0], ftIndex[1], ftIndex[2]]
        except IndexError:
            continue
        if ftVal == 0:
            out.append((index.tolist(), (index * densitySpacing).tolist()))
    return out


def vectorized(density, density_spacing, fiber, fiber_spacing, density_range):
    plan = plan_fine_lookup(density.shape, density_spacing, fiber.shape, fiber_spacing)
    allowed = plan.allowed(fiber[np.ix_(*plan.sample)] != 0)
    targets = select_targets(Volume(density, density_spacing), allowed, density_range)
    return list(zip(targets.index.tolist(), targets.coord.tolist(), strict=True))


bounds = st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 0.5)).map(sorted)
spacing = st.one_of(
    st.sampled_from([100.0, 25.0, 10.0, 50.0]),
    st.floats(1.0, 200.0, allow_nan=False).map(lambda v: round(v, 3)),
)


@st.composite
def volumes(draw):
    lo, hi = draw(bounds)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6))
    # Values at, just inside and just outside the bounds (as the volume's dtype holds them, which is
    # what the selection compares), plus anything in between.
    edges = [float(dtype(lo)), float(dtype(hi))]
    for b in (lo, hi):
        edges += [float(np.nextafter(dtype(b), dtype(-1))), float(np.nextafter(dtype(b), dtype(1)))]
    element = st.one_of(st.sampled_from(edges), st.floats(0.0, 0.5, width=32))
    density = draw(hnp.arrays(dtype, shape, elements=element))
    coarse = np.array([draw(spacing) for _ in range(3)])
    # Fine spacings that divide the coarse one (almost) exactly are where float32 rounding of the
    # fine spacing decides the truncated index, as in the seed's ``ftSpacing.astype(np.float32)``.
    fine = np.array(
        [c / draw(st.integers(1, 9)) if draw(st.booleans()) else draw(spacing) for c in coarse]
    )
    # Fine volumes sometimes too small for the coarse grid, so some fine indices fall outside.
    reach = [
        max(1, int(n * c / f) + draw(st.integers(-3, 2)))
        for n, c, f in zip(shape, coarse, fine, strict=True)
    ]
    fiber = draw(
        hnp.arrays(
            draw(st.sampled_from([np.uint8, np.uint32])),
            tuple(reach),
            elements=st.sampled_from([0, 0, 1, 7]),
        )
    )
    return density, coarse, fiber, fine, (lo, hi)


@settings(max_examples=400, deadline=None)
@given(volumes())
def test_vectorized_selection_equals_the_seed_loop(case):
    density, coarse, fiber, fine, density_range = case
    assert vectorized(density, coarse, fiber, fine, density_range) == seed_loop(
        density, coarse, fiber, fine, density_range
    )


def test_bounds_are_inclusive_and_compared_in_the_volume_dtype():
    # 0.3 is not a float32; the seed's numpy compares float32(0.3), so a float32 volume holding
    # float32(0.3) (which is > 0.3 as a double) is in range.
    density = np.array([0.04, 0.3, 0.0399, 0.30001], np.float32).reshape(4, 1, 1)
    fiber = np.zeros((8, 1, 1), np.uint8)
    for bounds in [(0.04, 0.3), (np.float64(0.04), np.float64(0.3))]:
        got = vectorized(density, np.array([2.0, 1, 1]), fiber, np.array([1.0, 1, 1]), bounds)
        assert [index for index, _ in got] == [[0, 0, 0], [1, 0, 0]]
    assert float(np.float32(0.3)) > 0.3


def test_out_of_bounds_and_tract_voxels_are_skipped():
    density = np.full((3, 1, 1), 0.1)
    fiber = np.array([0, 0, 0, 0, 5]).reshape(5, 1, 1)  # coarse 0 -> fine 0, 1 -> 2, 2 -> 4
    got = vectorized(density, np.array([100.0, 1, 1]), fiber, np.array([50.0, 1, 1]), (0.04, 0.3))
    assert got == [([0, 0, 0], [0.0, 0.0, 0.0]), ([1, 0, 0], [100.0, 0.0, 0.0])]
    small = fiber[:4]  # coarse 2 -> fine 4 is now outside: skipped, not an error
    got = vectorized(density, np.array([100.0, 1, 1]), small, np.array([50.0, 1, 1]), (0.04, 0.3))
    assert [index for index, _ in got] == [[0, 0, 0], [1, 0, 0]]


def test_injection_coordinates_are_argwhere_times_spacing():
    arr = np.zeros((3, 3, 3))
    arr[2, 0, 1] = 0.9
    arr[0, 1, 2] = 0.5  # not above the threshold
    arr[1, 2, 0] = 0.51
    got = injection_coordinates(Volume(arr, np.array([100.0, 100.0, 100.0])), 0.5)
    assert got.tolist() == [[100.0, 200.0, 0.0], [200.0, 0.0, 100.0]]


def test_fiber_tract_ids_of_the_emulator_tree():
    ids = fiber_tract_ids(structure_tree())
    assert {1009, 776, 956, 6, 436} <= ids
    assert not {997, 8, 73, 81, 385} & ids


def test_fiber_tract_ids_of_the_real_ontology():
    path = SHARED / "reference" / "allen_structure_tree_graph1_brainrender.json"
    if not path.exists():
        pytest.skip("../shared/reference is not beside this checkout")
    flat = json.loads(path.read_text())
    nodes = {s["id"]: {"id": s["id"], "children": []} for s in flat}
    roots: list[dict[str, Any]] = []
    for s in flat:
        path_ids = s["structure_id_path"]
        (nodes[path_ids[-2]]["children"] if len(path_ids) > 1 else roots).append(nodes[s["id"]])
    ids = fiber_tract_ids(roots)
    assert len(ids) == 191
    assert ids == {s["id"] for s in flat if 1009 in s["structure_id_path"]}


def test_tree_without_fiber_tracts_is_an_error():
    with pytest.raises(VolumeError, match="1009"):
        fiber_tract_ids([{"id": 997, "children": [{"id": 8, "children": []}]}])
    with pytest.raises(VolumeError, match="malformed"):
        fiber_tract_ids([{"name": "no id"}])
