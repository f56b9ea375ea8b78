"""Reading a fetched data set back: ``OUT/<id>/data.json`` as arrays, for converters and previews.

``data.json`` is the seed's format: ``{"lines": [record, ...], "injectionCoordinates": [[x, y, z], ...]}``
where each record's ``path`` runs from the target voxel to the injection site in CCF microns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from .errors import UsageError
from .store import DATA
from .urls import data_set_id

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Streamlines:
    """One data set's streamlines: each path an (n, 5) array of x, y, z, density, intensity."""

    data_set: int
    paths: list[Array]
    injection: Array  # (m, 3) injection voxel coordinates, um
    structure: str  # the primary injection structure's acronym, "" if the records do not say


def read_streamlines(directory: Path) -> Streamlines:
    """Load ``directory/data.json``; ``UsageError`` if it is missing or not asyncdl's format."""
    path = Path(directory) / DATA
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"no {DATA} in {directory} (fetch the data set first)") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    try:
        return _parse(data, Path(directory))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise UsageError(f"{path} is not a data.json of streamlines ({exc})") from exc


def _parse(data: Any, directory: Path) -> Streamlines:
    records = data["lines"]
    if not isinstance(records, list):
        raise TypeError("'lines' is not a list")
    paths = [_path_array(record["path"]) for record in records]
    injection = np.array(data["injectionCoordinates"], dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(injection).all():
        raise ValueError("injection coordinates are not finite numbers")
    structure = str(records[0].get("structure-abbrev") or "") if records else ""
    return Streamlines(_data_set(directory, records), paths, injection, structure)


def _path_array(path: Any) -> Array:
    if not isinstance(path, list) or not path:
        raise ValueError("a record's path is empty")
    rows = [[*point["coord"], point["density"], point["intensity"]] for point in path]
    array = np.array(rows, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 5 or not np.isfinite(array).all():
        raise ValueError("a path point is not {coord: [x, y, z], density, intensity}")
    return array


def _data_set(directory: Path, records: list[Any]) -> int:
    """The data set id: the directory's name (``OUT/<id>``), else the records' own id."""
    if directory.resolve().name.isdigit():
        return data_set_id(directory.resolve().name)
    if records and isinstance(records[0], dict):
        return data_set_id(records[0].get("id"))
    raise ValueError(f"cannot tell the data set id: {directory.name!r} is not one")
