"""Streamlines as brainrender and the neuroinformatics.nl Allen connectivity viewer read them.

``OUT/<id>/streamlines_<id>.json`` holds ``{"lines": [[{"x", "y", "z", "density", "intensity"},
...], ...], "injection_sites": [{"x", "y", "z"}, ...]}``: CCF microns as integers, densities and
intensities as numbers, each line from the target voxel to the injection site, as in the viewer's
own ``streamlines_<id>.json.gz``. It is one JSON object on one line, because brainrender reads these
files with ``pandas.read_json(..., lines=True)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

from .datafile import Array, Streamlines, read_streamlines
from .files import atomic_write


def streamlines_file(directory: Path, data_set: int) -> Path:
    """Where a data set's viewer file goes: ``OUT/<id>/streamlines_<id>.json``."""
    return Path(directory) / f"streamlines_{int(data_set)}.json"


def write_brainrender(directory: Path) -> Path:
    """Write ``directory/streamlines_<id>.json`` from ``directory/data.json``; return its path.

    Written atomically (temp file, then rename) and a line at a time, never one giant string.
    """
    lines = read_streamlines(directory)
    out = streamlines_file(directory, lines.data_set)
    atomic_write(out, _chunks(lines))
    return out


def _chunks(lines: Streamlines) -> Iterator[bytes]:
    yield b'{"lines":['
    for n, path in enumerate(lines.paths):
        yield (b"," if n else b"") + orjson.dumps(_points(path))
    yield b'],"injection_sites":'
    xyz = np.rint(lines.injection).astype(np.int64).tolist()
    yield orjson.dumps([{"x": x, "y": y, "z": z} for x, y, z in xyz])
    yield b"}"


def _points(path: Array) -> list[dict[str, int | float]]:
    """A path's points: coordinates rounded to whole microns, as the viewer's files have them."""
    xyz = np.rint(path[:, :3]).astype(np.int64).tolist()
    values = path[:, 3:].tolist()
    return [
        {"x": x, "y": y, "z": z, "density": d, "intensity": i}
        for (x, y, z), (d, i) in zip(xyz, values, strict=True)
    ]
