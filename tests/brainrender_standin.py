"""What brainrender's ``Streamlines`` actor takes from its data, without brainrender (vtk, a GPU).

It mirrors brainglobe/brainrender ``brainrender/actors/streamlines.py`` (``Streamlines.__init__``
and ``_make_mesh``; the file is unchanged since June 2023, through v2.1.20 and the default
branch at 9251a52): a path is read with ``pd.read_json(path)``;
anything else must be a DataFrame; with one row, ``data["lines"][0]`` is the list of lines, each
drawn as a tube through ``[p["x"], p["y"], p["z"]]``; the injection sites are
``np.vstack([list(p.values()) for p in data.injection_sites.iloc[0]])``, drawn as spheres.
``install`` puts a ``brainrender`` module with this actor and a recording ``Scene`` in sys.modules,
so the README's brainrender example runs as written.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def drawn(data: pd.DataFrame, show_injection: bool = True) -> tuple[list[np.ndarray], np.ndarray]:
    """The tubes' points and the injection spheres' centres the actor would build from ``data``."""
    lines_data = data["lines"][0] if len(data["lines"]) == 1 else data["lines"]
    tubes = [np.array([[p["x"], p["y"], p["z"]] for p in line], dtype=float) for line in lines_data]
    injection = np.empty((0, 3))
    if show_injection:
        injection = np.vstack([list(p.values()) for p in data.injection_sites.iloc[0]])
    return tubes, injection


class Streamlines:
    """The actor's reading of its data: a path or a DataFrame, nothing else."""

    def __init__(self, data: Any, radius: float = 10, color: str = "salmon", alpha: float = 1,
                 show_injection: bool = True, name: str | None = None) -> None:  # fmt: skip
        if isinstance(data, str | Path):
            data = pd.read_json(data)
        elif not isinstance(data, pd.DataFrame):
            raise TypeError("Input data should be a dataframe")
        self.tubes, self.injection = drawn(data, show_injection)


class Scene:
    """Records what is added and whether it was rendered; every Scene made is in ``SCENES``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.actors: list[Any] = []
        self.rendered = False
        SCENES.append(self)

    def add(self, *items: Any, **kwargs: Any) -> Any:
        self.actors.extend(items)
        return items[0] if len(items) == 1 else items

    def render(self, *args: Any, **kwargs: Any) -> None:
        self.rendered = True


SCENES: list[Scene] = []


def install(monkeypatch: Any) -> None:
    """Make ``import brainrender`` and ``from brainrender.actors import Streamlines`` give these."""
    package = types.ModuleType("brainrender")
    actors = types.ModuleType("brainrender.actors")
    package.Scene = Scene  # type: ignore[attr-defined]
    package.actors = actors  # type: ignore[attr-defined]
    actors.Streamlines = Streamlines  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "brainrender", package)
    monkeypatch.setitem(sys.modules, "brainrender.actors", actors)
    SCENES.clear()
