"""A data.json like the one ``asyncdl fetch`` writes, made straight from the emulator's synthetic
experiment (no server, a fraction of a second), for the converters and the preview."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from asyncdl.emulator.synthetic import Experiment


def write_data_json(directory: Path, data_set: int, every: int = 1) -> dict[str, Any]:
    """Write ``directory/data.json`` with the streamlines to every ``every``-th target voxel."""
    exp = Experiment(data_set)
    density = exp.projection_density()
    targets = np.argwhere((density >= 0.04) & (density <= 0.3))[::every] * 100
    records = [r for t in targets.tolist() for r in exp.spatial_search(tuple(t))]
    injection = (np.argwhere(exp.injection_fraction() > 0.5) * 100.0).tolist()
    data = {"lines": records, "injectionCoordinates": injection}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data.json").write_bytes(orjson.dumps(data))
    return data
