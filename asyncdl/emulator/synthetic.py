"""Deterministic synthetic atlas data, seeded by the data set id: volumes, annotation, streamlines.

A brain is an ellipsoid in the CCF box (AP, DV, ML in microns). Its annotation has cortex, nuclei,
ventricles and fiber tracts (a callosal sheet, internal capsules, fornix, optic nerves) defined
analytically, so the 25 um labels are exact wherever they are sampled. An experiment has an
injection blob and a few projection fields with multiplicative noise; its spatial-search paths are
smooth curves from the seed point to the injection site, about 100 um a step, like the real ones.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from .ontology import BY_ACRONYM, BY_ID

#: Grid shapes as the real services send them (AP, DV, ML).
GRID_SHAPE = (132, 80, 114)
LEGACY_GRID_SHAPE = (133, 81, 115)
ANNOTATION_SHAPE = (528, 320, 456)
GRID_SPACING = 100.0
ANNOTATION_SPACING = 25.0
_GRID_LIMITS = np.array(GRID_SHAPE)

#: Data sets the emulator knows. 156394513 is the seed's example.
DATA_SET_IDS = (
    156394513,
    100141219,
    112514202,
    126862385,
    127866392,
    139520203,
    180436360,
    183174303,
    272697944,
    307297141,
)

_CENTER = np.array([6600.0, 3900.0, 5700.0])
_RADII = np.array([5900.0, 3300.0, 5000.0])
_MIDLINE = _CENTER[2]

# Injection anchors: (acronym, AP, DV, |ML offset from the midline|) in microns.
_SITES = (
    ("VISp", 9300.0, 1300.0, 2600.0),
    ("VISrl", 7700.0, 1500.0, 3600.0),
    ("SSp-bfd", 6400.0, 1700.0, 3900.0),
    ("MOp", 3600.0, 1400.0, 1700.0),
    ("ACAd", 4300.0, 1300.0, 450.0),
    ("CP", 5000.0, 4000.0, 2400.0),
    ("TH", 7000.0, 4000.0, 1200.0),
)
_LINES = ("", "Rbp4-Cre_KL100", "Cux2-IRES-Cre", "Nr5a1-Cre", "Sim1-Cre_KJ18", "Emx1-IRES-Cre")
#: Structures an injection at a site may spill into: its neighbours on the synthetic cortex map.
_NEIGHBOURS = {
    "VISp": ("VISrl", "VISpor"),
    "VISrl": ("VISp", "SSp-bfd"),
    "SSp-bfd": ("VISrl", "MOp"),
    "MOp": ("SSp-bfd", "ACAd"),
    "ACAd": ("MOp",),
    "CP": ("int",),
}


def _mirror(point: tuple[float, float, float]) -> tuple[float, float, float]:
    return (point[0], point[1], 2 * _MIDLINE - point[2])


# Tubes of fiber: (acronym, start, end, radius), each on both sides of the midline.
_TUBES = (
    ("int", (4600.0, 3200.0, 4100.0), (7600.0, 5200.0, 4700.0), 260.0),
    ("fx", (5200.0, 2600.0, 5500.0), (6800.0, 5600.0, 5450.0), 180.0),
    ("IIn", (1700.0, 6500.0, 4300.0), (5200.0, 6700.0, 5300.0), 200.0),
)
_SEGMENTS = tuple(
    (BY_ACRONYM[acronym], np.array(a), np.array(b), radius)
    for acronym, start, end, radius in _TUBES
    for a, b in ((start, end), (_mirror(start), _mirror(end)))
)
_X = np.arange(ANNOTATION_SHAPE[0]) * ANNOTATION_SPACING
_Y = np.arange(ANNOTATION_SHAPE[1]) * ANNOTATION_SPACING


def annotation_slab(k: int) -> npt.NDArray[np.uint32]:
    """Labels of the 25 um annotation at ML index ``k``: a (528, 320) plane (AP, DV).

    Deep structures by position, then cortex, then the callosum, ventricles and tubes of fiber.
    """
    z = k * ANNOTATION_SPACING
    u = ((_X - _CENTER[0]) / _RADII[0])[:, None]
    v = ((_Y - _CENTER[1]) / _RADII[1])[None, :]
    w = (z - _CENTER[2]) / _RADII[2]
    side = abs(z - _MIDLINE)
    r2 = u * u + v * v + w * w
    lab = np.full(r2.shape, BY_ACRONYM["HB"], np.uint32)
    lab[np.broadcast_to(u < 0.45, lab.shape)] = BY_ACRONYM["MB"]
    lab[(u < 0.25) & (v > 0.25)] = BY_ACRONYM["HY"]
    lab[(u < 0.25) & (v <= 0.25)] = BY_ACRONYM["TH"]
    lab[np.broadcast_to(u < -0.1, lab.shape)] = BY_ACRONYM["CP"]
    lab[(u > 0.55) & (v < 0.0)] = BY_ACRONYM["CB"]
    areas: tuple[tuple[float, str], ...]
    if side < 700:
        areas = ((0.25, "VISp"), (0.1, "VISrl"), (-99.0, "ACAd"))
    elif side > 3300:
        areas = (
            (0.35, "VISpor"),
            (0.25, "VISp"),
            (0.05, "VISrl"),
            (-0.3, "SSp-bfd"),
            (-99.0, "MOp"),
        )
    else:
        areas = ((0.25, "VISp"), (0.05, "VISrl"), (-0.3, "SSp-bfd"), (-99.0, "MOp"))
    area = np.full(u.shape, BY_ACRONYM[areas[-1][1]], np.uint32)
    for limit, acronym in reversed(areas[:-1]):
        area[u > limit] = BY_ACRONYM[acronym]
    shell = (v < 0.15) & (u <= 0.55)
    cortex = shell & (r2 > 0.84**2)
    lab = np.where(cortex, area, lab)
    callosum = shell & (r2 > 0.78**2) & ~cortex
    lab[callosum & (u < -0.45)] = BY_ACRONYM["fa"]
    lab[callosum & (u >= -0.45)] = BY_ACRONYM["ccb"]
    if abs(side - 1100) < 250:
        lab[np.ix_(np.abs(_X - 5200) < 900, np.abs(_Y - 2900) < 350)] = BY_ACRONYM["VL"]
    for label, a, b, radius in _SEGMENTS:
        if min(a[2], b[2]) - radius <= z <= max(a[2], b[2]) + radius:
            lab[_tube_distance(a, b, z) < radius] = label
    lab[r2 > 1.0] = 0
    return lab


def _tube_distance(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], z: float
) -> npt.NDArray[np.float64]:
    """Distance from each (AP, DV) point of the slab at ``z`` to the segment ``a``-``b``."""
    ab = b - a
    px, py = (_X - a[0])[:, None], (_Y - a[1])[None, :]
    pz = z - a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / float(ab @ ab), 0.0, 1.0)
    dist2 = (px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2
    return np.sqrt(dist2)  # type: ignore[no-any-return]


def _grid_points(shape: tuple[int, int, int]) -> tuple[npt.NDArray[np.float64], ...]:
    return tuple(
        (np.arange(n, dtype=np.float64) * GRID_SPACING).reshape(
            [-1 if a == i else 1 for a in range(3)]
        )
        for i, n in enumerate(shape)
    )


def _stable_seed(*parts: int) -> int:
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class Experiment:
    """One synthetic experiment: everything derives from its id."""

    data_set_id: int

    @cached_property
    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(_stable_seed(self.data_set_id))

    @cached_property
    def _layout(self) -> dict[str, Any]:
        rng = self._rng
        acronym, ap, dv, ml = _SITES[int(rng.integers(len(_SITES)))]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        center = np.array([ap, dv, _MIDLINE + sign * ml]) + rng.normal(0, 150, 3)
        reach = float(np.linalg.norm((center - _CENTER) / _RADII))
        if reach > 0.9:  # keep the injection inside the brain
            center = _CENTER + (center - _CENTER) * (0.9 / reach)
        sigma = float(rng.uniform(270, 330))
        fields = []
        for _ in range(int(rng.integers(2, 5))):
            # Projection fields: mostly ipsilateral, some contralateral, all inside the brain.
            while True:
                p = _CENTER + rng.uniform(-0.8, 0.8, 3) * _RADII
                if float(np.sum(((p - _CENTER) / _RADII) ** 2)) < 0.75:
                    break
            if rng.random() < 0.7 and (p[2] - _MIDLINE) * sign < 0:
                p[2] = 2 * _MIDLINE - p[2]
            fields.append((p, float(rng.uniform(0.2, 0.9)), float(rng.uniform(120, 210))))
        return {
            "acronym": acronym,
            "center": center,
            "sigma": sigma,
            "fields": fields,
            "line": _LINES[int(rng.integers(len(_LINES)))],
            "female": bool(rng.random() < 0.4),
            "volume": float(rng.uniform(0.02, 0.45)),
            "number": int(rng.integers(1000, 9999)),
        }

    @property
    def injection_center(self) -> npt.NDArray[np.float64]:
        center: npt.NDArray[np.float64] = self._layout["center"]
        return center

    def injection_fraction(
        self, shape: tuple[int, int, int] = GRID_SHAPE
    ) -> npt.NDArray[np.float64]:
        """Fraction of each voxel inside the injection: a Gaussian blob, > 0.5 in ~200 voxels."""
        x, y, z = _grid_points(shape)
        c, s = self.injection_center, self._layout["sigma"]
        d2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
        return np.exp(-d2 / (2 * s * s)) * _inside(x, y, z)  # type: ignore[no-any-return]

    def projection_density(
        self, shape: tuple[int, int, int] = GRID_SHAPE
    ) -> npt.NDArray[np.float64]:
        """Projection density in [0, 1]: injection core plus projection fields, with noise."""
        x, y, z = _grid_points(shape)
        c, s = self.injection_center, self._layout["sigma"]
        dens = np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
        for p, amp, width in self._layout["fields"]:
            d2 = (x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2
            dens = dens + amp * np.exp(-d2 / (2 * width * width))
        noise = np.random.default_rng(_stable_seed(self.data_set_id, 1)).lognormal(
            0.0, 0.3, dens.shape
        )
        background = 0.012 * np.random.default_rng(_stable_seed(self.data_set_id, 2)).random(
            dens.shape
        )
        out = np.clip(dens * noise + background, 0.0, 1.0) * _inside(x, y, z)
        return out  # type: ignore[no-any-return]

    def density_at(self, points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Projection density of the voxels holding ``points`` (n, 3) in um; 0 outside the grid."""
        idx = (points // GRID_SPACING).astype(np.intp)
        inside = ((idx >= 0) & (idx < _GRID_LIMITS)).all(axis=1)
        out = np.zeros(len(points))
        i, j, k = idx[inside].T
        out[inside] = self._density_grid[i, j, k]
        return out

    @cached_property
    def _density_grid(self) -> npt.NDArray[np.float64]:
        return self.projection_density()

    @property
    def structure_id(self) -> int:
        """The primary injection structure."""
        return BY_ACRONYM[self._layout["acronym"]]

    def injection_structure_ids(self) -> list[int]:
        """The primary injection structure and the neighbours the injection spilled into, by id.

        Drawn from a stream of their own, so the layout (and every volume) is unchanged by them.
        Sorted by id, as the real service's lists appear to be (the primary is not always first).
        """
        rng = np.random.default_rng(_stable_seed(self.data_set_id, 3))
        spill = [
            BY_ACRONYM[acronym]
            for acronym in _NEIGHBOURS.get(self._layout["acronym"], ())
            if rng.random() < 0.3
        ]
        return sorted({self.structure_id, *spill})

    def injection_structures(self) -> list[dict[str, Any]]:
        return [
            {
                "id": sid,
                "abbreviation": BY_ID[sid][0],
                "name": BY_ID[sid][1],
                "color": BY_ID[sid][2],
            }
            for sid in self.injection_structure_ids()
        ]

    def metadata(self) -> dict[str, Any]:
        """The experiment as the Allen services describe it, in the real record's key order.

        The target-spatial and injection-structure services share these fields, so an experiment
        listed by the one is the same experiment the other answers for.
        """
        return dict(self._metadata)  # the nested lists are shared: read them, do not change them

    @cached_property
    def _metadata(self) -> dict[str, Any]:
        lay = self._layout
        sid = self.structure_id
        acronym, name, colour = BY_ID[sid]
        line = lay["line"]
        return {
            "id": self.data_set_id,
            "transgenic-line": line,
            "product-id": 5 if line else 31,
            "structure-id": sid,
            "structure-abbrev": acronym,
            "structure-name": name,
            "structure-color": colour.lower(),
            "name": f"{line or 'C57BL/6J'}-{lay['number']}",
            "injection-volume": round(lay["volume"], 10),
            "injection-structures": self.injection_structures(),
            "gender": "F" if lay["female"] else "M",
            "strain": "B6.FVB" if line else "C57BL/6J",
            "injection-coordinates": self.injection_coordinates(),
        }

    def injection_coordinates(self) -> list[int]:
        """The injection centre in um, rounded to 10 um as the real records give it."""
        return [int(round(v / 10.0) * 10) for v in self.injection_center]

    def spatial_search(self, seed_point: tuple[int, int, int]) -> list[dict[str, Any]]:
        """The records the target-spatial service returns for ``seed_point`` (um): 0 or 1 of them."""
        rng = np.random.default_rng(_stable_seed(self.data_set_id, *seed_point))
        if rng.random() < 0.04:
            return []
        record = self.metadata()
        seed = np.array(seed_point, np.float64)
        points = self._curve(seed, np.array(record["injection-coordinates"], np.float64), rng)
        # One lookup for the seed point (the record's density) and the path's inner points.
        density = self.density_at(np.vstack([seed, points]))
        intensity = np.round(density[1:] * 5000.0 * rng.uniform(0.8, 1.2, len(points)), 4)
        record["density"] = float(density[0])
        path: list[dict[str, Any]] = [{"coord": seed.tolist(), "density": 0.0, "intensity": 0.0}]
        path += [
            {"coord": coord, "density": d, "intensity": i}
            for coord, d, i in zip(
                points.tolist(), density[1:].tolist(), intensity.tolist(), strict=True
            )
        ]
        path.append({"coord": record["injection-coordinates"], "density": 0, "intensity": 0})
        record["path"] = path
        return [record]

    @staticmethod
    def _curve(
        seed: npt.NDArray[np.float64], end: npt.NDArray[np.float64], rng: np.random.Generator
    ) -> npt.NDArray[np.float64]:
        """Inner points of a smooth curve from ``seed`` to ``end`` (a quadratic Bezier), rounded
        to whole microns, about 100 um apart."""
        chord = end - seed
        length = math.hypot(*chord.tolist())
        bend = rng.normal(0.0, 0.18 * length, 3)
        bend -= chord * float(bend @ chord) / max(length * length, 1.0)
        control = (seed + end) / 2 + bend
        steps = max(2, math.ceil(length / rng.uniform(85.0, 115.0)))
        t = (np.arange(1, steps) / steps)[:, None]
        return np.round((1 - t) ** 2 * seed + 2 * (1 - t) * t * control + t * t * end)


def _inside(x: Any, y: Any, z: Any) -> npt.NDArray[np.float64]:
    u, v, w = ((c - _CENTER[i]) / _RADII[i] for i, c in enumerate((x, y, z)))
    return (u * u + v * v + w * w <= 1.0).astype(np.float64)  # type: ignore[no-any-return]
