"""The volumes an AllenSDK ``MouseConnectivityCache`` already holds, found through its manifest.

AllenSDK writes ``mouse_connectivity_manifest.json`` beside the files it caches: a list of path
specs (``{"key", "type": "dir"|"file", "spec", "parent_key"}``) with ``%d``/``%s`` holes, resolved
as ``allensdk.config.manifest.Manifest`` does (a spec joined to its parent's, relative to the
manifest's folder). asyncdl reads three of them, the files a run would otherwise download
(``allensdk/core/mouse_connectivity_cache.py`` and ``reference_space_cache.py``, AllenSDK 2.16)::

    PROJECTION_DENSITY  experiment_%d/projection_density_%d.nrrd   (id, 100)   the density grid
    INJECTION_FRACTION  experiment_%d/injection_fraction_%d.nrrd   (id, 100)   the injection grid
    ANNOTATION          %s/annotation_%d.nrrd          ("annotation/ccf_2017", 25)   the CCF annotation

A cache made with ``resolution=100`` holds the grids; any resolution holds the annotation once
``get_annotation_volume`` ran at 25 um. Nothing here is trusted: a file is used only once it reads
as a whole volume on the grid asyncdl asks the server for (``volumes.verify_nrrd``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import UsageError
from .urls import data_set_id

MANIFEST_NAME = "mouse_connectivity_manifest.json"
#: The grid resolution asyncdl's targets come from, and the annotation's (um).
GRID_RESOLUTION = 100
ANNOTATION_RESOLUTION = 25
CCF_VERSION = "annotation/ccf_2017"  # ReferenceSpaceApi.CCF_2017, the annotation asyncdl reads
_GRID_KEYS = {"density": "PROJECTION_DENSITY", "injection": "INJECTION_FRACTION"}
_MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True)
class AllenSdkCache:
    """Where a MouseConnectivityCache keeps each kind of file: manifest key -> path spec."""

    manifest: Path
    specs: Mapping[str, str]

    @classmethod
    def open(cls, where: str | Path) -> AllenSdkCache:
        """From the manifest file, or the folder that holds ``mouse_connectivity_manifest.json``;
        ``UsageError`` if there is none or it is not an AllenSDK manifest."""
        path = Path(where)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            with path.open("rb") as fh:
                entries = orjson.loads(fh.read(_MAX_MANIFEST_BYTES + 1))["manifest"]
            return cls(path, resolve(entries, path.parent))
        except FileNotFoundError:
            raise UsageError(f"no AllenSDK manifest at {path}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"{path} is not an AllenSDK cache manifest ({exc})") from exc

    def path(self, key: str, *args: object) -> Path | None:
        """The file for ``key`` with ``args`` in its spec's holes; None if the manifest has no such
        key or its spec does not take these arguments."""
        spec = self.specs.get(key)
        if spec is None:
            return None
        try:
            return Path(spec % args)
        except (TypeError, ValueError):
            return None

    def grid(self, data_set: int, volume: str) -> Path | None:
        """A data set's ``density`` or ``injection`` grid at 100 um."""
        return self.path(_GRID_KEYS[volume], data_set_id(data_set), GRID_RESOLUTION)

    def annotation(self) -> Path | None:
        """The CCF 2017 annotation at 25 um."""
        return self.path("ANNOTATION", CCF_VERSION, ANNOTATION_RESOLUTION)


def resolve(entries: Any, base: Path) -> dict[str, str]:
    """Each key's absolute path spec, as AllenSDK's ``Manifest.load_config`` resolves them."""
    if not isinstance(entries, list):
        raise TypeError("'manifest' is not a list")
    specs: dict[str, str] = {}
    for entry in entries:
        kind = entry.get("type")
        if kind not in ("dir", "file"):
            continue  # the manifest_version entry
        key, spec, parent = entry["key"], entry["spec"], entry.get("parent_key")
        if not (isinstance(key, str) and isinstance(spec, str) and spec):
            raise TypeError(f"entry {entry!r} has no key or spec")
        if parent is not None:
            if parent not in specs:
                raise KeyError(f"{key!r} refers to {parent!r}, which comes nowhere before it")
            path = os.path.join(specs[parent], *spec.split("/"))
        elif kind == "file" and not spec.startswith("/"):
            path = os.path.join(os.curdir, *spec.split("/"))  # AllenSDK: the current directory
        else:
            path = spec
        specs[key] = os.path.abspath(path if kind == "file" else os.path.join(base, path))
    return specs
