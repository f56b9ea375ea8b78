"""Streamlines as brainrender reads them: ``Streamlines(pd.read_json(path))``.

``OUT/<id>/streamlines_<id>.json`` is pandas' own "columns" layout of a one-row DataFrame, the
layout of the files brainrender caches and reads back with ``pandas.read_json(path)`` (no
``lines=True``)::

    {"lines": {"0": [[{"x", "y", "z", "density", "intensity"}, ...], ...]},
     "injection_sites": {"0": [{"x", "y", "z"}, ...]}}

Row ``"0"`` holds what the neuroinformatics.nl Allen connectivity viewer's ``streamlines_<id>.json.gz``
held at the top level: CCF microns as integers, densities and intensities as numbers, each line from
the target voxel to the injection site. brainrender's ``Streamlines`` actor draws
``frame["lines"][0]`` (one tube per line) and ``frame["injection_sites"][0]``. The viewer's plain
layout cannot be read that way: ``pandas.read_json`` refuses two columns of different lengths.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

from .datafile import Array, Streamlines, read_streamlines
from .files import atomic_write

#: How the file starts: the one row's label is "0", as ``DataFrame.to_json()`` writes a default index.
HEAD = b'{"lines":{"0":['


def streamlines_file(directory: Path, data_set: int) -> Path:
    """Where a data set's brainrender file goes: ``OUT/<id>/streamlines_<id>.json``."""
    return Path(directory) / f"streamlines_{int(data_set)}.json"


def has_brainrender(directory: Path, data_set: int) -> bool:
    """Whether the data set's brainrender file is there in this layout. asyncdl 0.1.0 wrote the
    viewer's plain layout, which brainrender cannot read: a rerun replaces such a file."""
    try:
        with streamlines_file(directory, data_set).open("rb") as fh:
            return fh.read(len(HEAD)) == HEAD
    except OSError:
        return False


def write_brainrender(directory: Path) -> Path:
    """Write ``directory/streamlines_<id>.json`` from ``directory/data.json``; return its path.

    Written atomically (temp file, then rename) and a line at a time, never one giant string.
    """
    lines = read_streamlines(directory)
    out = streamlines_file(directory, lines.data_set)
    atomic_write(out, _chunks(lines))
    return out


def _chunks(lines: Streamlines) -> Iterator[bytes]:
    yield HEAD
    for n, path in enumerate(lines.paths):
        yield (b"," if n else b"") + orjson.dumps(_points(path))
    yield b']},"injection_sites":{"0":'
    xyz = np.rint(lines.injection).astype(np.int64).tolist()
    yield orjson.dumps([{"x": x, "y": y, "z": z} for x, y, z in xyz])
    yield b"}}"


def _points(path: Array) -> list[dict[str, int | float]]:
    """A path's points: coordinates rounded to whole microns, as the viewer's files have them."""
    xyz = np.rint(path[:, :3]).astype(np.int64).tolist()
    values = path[:, 3:].tolist()
    return [
        {"x": x, "y": y, "z": z, "density": d, "intensity": i}
        for (x, y, z), (d, i) in zip(xyz, values, strict=True)
    ]
