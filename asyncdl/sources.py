"""Where a run's volumes come from: download into a verified cache, read, and build the tract mask.

Two sources, as ``--volumes`` chooses: ``nrrd`` (grid NRRD files, the CCF 2017 annotation and the
structure tree; a fiber tract is any label in the 1009 subtree) and ``legacy`` (the seed's zipped
MetaImage files and its 25 um fiber-tract mask). The shared files are fetched once per run, and the
tract mask once per coarse grid, however many data sets ask for them at once. A cached file that
does not read is dropped from the cache, so a rerun fetches it again instead of failing forever.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from .aio import all_of
from .config import FetchOptions
from .errors import VolumeError
from .fetcher import HttpClient, Tally
from .responses import rows
from .store import atomic_write
from .targets import (
    BoolArray,
    Targets,
    fiber_tract_ids,
    in_tract_labels,
    injection_coordinates,
    plan_fine_lookup,
    select_targets,
)
from .urls import Endpoints, data_set_id
from .volumes import (
    Volume,
    metaimage_layout_of,
    nrrd_layout_of,
    read_metaimage_zip,
    read_nrrd,
)

FIBER_MEMBER = "annotationFiber"
T = TypeVar("T")


class VolumeSource:
    """Fetches and reads the volumes of a run, through a cache of verified files."""

    def __init__(
        self, client: HttpClient, endpoints: Endpoints, cache_dir: Path, kind: str
    ) -> None:
        if kind not in ("nrrd", "legacy"):
            raise ValueError(f"unknown volume source {kind!r}")
        self.client = client
        self.endpoints = endpoints
        self.cache = FileCache(client, cache_dir, endpoints.key)
        self.kind = kind
        self._masks: dict[tuple[object, ...], BoolArray] = {}
        self._mask_lock = asyncio.Lock()

    async def data_set_volume(self, data_set: int, volume: str, tally: Tally) -> Volume:
        """A data set's ``density`` or ``injection`` volume."""
        ds = data_set_id(data_set)
        if self.kind == "nrrd":
            url = self.endpoints.grid_nrrd(ds, volume)
            return await self._read(url, f"grid_{ds}_{volume}.nrrd", tally, read_nrrd)
        url = self.endpoints.grid_legacy(ds, volume)
        return await self._read(
            url, f"grid_{ds}_{volume}.zip", tally, lambda path: read_metaimage_zip(path, volume)
        )

    async def select(
        self, data_set: int, options: FetchOptions, tally: Tally
    ) -> tuple[Targets, npt.NDArray[np.float64]]:
        """A data set's targets and injection coordinates, from its volumes."""
        jobs: list[Awaitable[object]] = [
            self.data_set_volume(data_set, "density", tally),
            self.data_set_volume(data_set, "injection", tally),
        ]
        if not self._masks:  # the first data set also brings the shared fiber volume in
            jobs.append(self.cache.get(*self._fiber_file(), tally))
        density, injection, *_ = await all_of(*jobs)  # Volume, Volume[, Path]
        allowed = await self.allowed_mask(density, tally)
        targets = await asyncio.to_thread(select_targets, density, allowed, options.density_range)
        return targets, injection_coordinates(injection, options.injection_threshold)

    async def _read(self, url: str, name: str, tally: Tally, read: Callable[[Path], T]) -> T:
        """Fetch ``url`` through the cache and ``read`` it off the loop; a file that does not
        read is dropped from the cache, so a later run downloads it again."""
        path = await self.cache.get(url, name, tally)
        try:
            return await asyncio.to_thread(read, path)
        except VolumeError:
            self.cache.forget(name)
            raise

    async def allowed_mask(self, density: Volume, tally: Tally) -> BoolArray:
        """Per voxel of ``density``'s grid: inside the fiber volume and not in a fiber tract."""
        key = (density.array.shape, tuple(density.spacing.tolist()))
        async with self._mask_lock:
            if key not in self._masks:
                self._masks[key] = await self._build_mask(density, tally)
            return self._masks[key]

    async def _build_mask(self, density: Volume, tally: Tally) -> BoolArray:
        shape, spacing = density.array.shape, density.spacing
        if self.kind == "legacy":

            def legacy_mask(path: Path) -> BoolArray:
                fine = metaimage_layout_of(path, FIBER_MEMBER)
                plan = plan_fine_lookup(shape, spacing, fine.shape, fine.spacing)
                labels = read_metaimage_zip(path, FIBER_MEMBER, plan.sample).array
                return plan.allowed(labels != 0)

            return await self._read(*self._fiber_file(), tally, legacy_mask)

        # The tree is small and its JSON is checked (and retried) on the way in: not cached.
        roots = await self.client.get_json(self.endpoints.structure_graph(), tally, rows)
        tract_ids = fiber_tract_ids(roots)

        def nrrd_mask(path: Path) -> BoolArray:
            fine = nrrd_layout_of(path)
            plan = plan_fine_lookup(shape, spacing, fine.shape, fine.spacing)
            labels = read_nrrd(path, plan.sample).array
            return plan.allowed(in_tract_labels(labels, tract_ids))

        return await self._read(*self._fiber_file(), tally, nrrd_mask)

    def _fiber_file(self) -> tuple[str, str]:
        """URL and cache name of the shared volume that says where the fiber tracts are."""
        if self.kind == "legacy":
            return self.endpoints.fiber_tracts_legacy(), "fiber_tracts_197646984.zip"
        return self.endpoints.annotation_nrrd(), "annotation_25.nrrd"


class FileCache:
    """Downloaded files with their source, size and SHA-256, reused only if all three still match.

    Files are written by temp file + rename, and their record after them, so processes sharing a
    cache never see a half-written file; a file whose record does not match is downloaded again.
    """

    def __init__(self, client: HttpClient, directory: Path, key: Callable[[str], str]) -> None:
        self.client = client
        self.dir = directory
        self.key = key
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, url: str, name: str, tally: Tally) -> Path:
        """The cached file for ``url``, downloading it if it is missing or does not verify."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            path = self.dir / name
            meta = self.dir / f"{name}.meta.json"
            key = self.key(url)
            if await asyncio.to_thread(_verified, path, meta, key):
                return path
            self.dir.mkdir(parents=True, exist_ok=True)
            size = await self.client.download(url, path, tally)
            digest = await asyncio.to_thread(_sha256, path)
            record = {"key": key, "size": size, "sha256": digest}
            atomic_write(meta, [orjson.dumps(record)])
            return path

    def forget(self, name: str) -> None:
        """Stop trusting a cached file (its record goes; the file is replaced on next use)."""
        (self.dir / f"{name}.meta.json").unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verified(path: Path, meta: Path, key: str) -> bool:
    try:
        record = orjson.loads(meta.read_bytes())
        return bool(
            record.get("key") == key
            and path.stat().st_size == record.get("size")
            and _sha256(path) == record.get("sha256")
        )
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return False
