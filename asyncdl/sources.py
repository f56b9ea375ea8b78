"""Where a run's volumes come from: download into a verified cache, read, and build the tract mask.

Two sources, as ``--volumes`` chooses: ``nrrd`` (grid NRRD files, the CCF 2017 annotation and the
structure tree; a fiber tract is any label in the 1009 subtree) and ``legacy`` (the seed's zipped
MetaImage files and its 25 um fiber-tract mask). The shared files are fetched once per run, and the
tract mask once per coarse grid, however many data sets ask for them at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import orjson

from .errors import VolumeError
from .fetcher import HttpClient, Tally
from .responses import rows
from .store import atomic_write
from .targets import BoolArray, fiber_tract_ids, in_tract_labels, plan_fine_lookup
from .urls import Endpoints, data_set_id
from .volumes import (
    Volume,
    metaimage_layout_of,
    nrrd_layout_of,
    read_metaimage_zip,
    read_nrrd,
)

FIBER_MEMBER = "annotationFiber"


class VolumeSource:
    """Fetches and reads the volumes of a run, through a cache of verified files."""

    def __init__(
        self, client: HttpClient, endpoints: Endpoints, cache_dir: Path, kind: str
    ) -> None:
        if kind not in ("nrrd", "legacy"):
            raise ValueError(f"unknown volume source {kind!r}")
        self.client = client
        self.endpoints = endpoints
        self.cache = FileCache(client, cache_dir)
        self.kind = kind
        self._masks: dict[tuple[object, ...], BoolArray] = {}
        self._mask_lock = asyncio.Lock()

    async def data_set_volume(self, data_set: int, volume: str, tally: Tally) -> Volume:
        """A data set's ``density`` or ``injection`` volume."""
        ds = data_set_id(data_set)
        if self.kind == "nrrd":
            url = self.endpoints.grid_nrrd(ds, volume)
            path = await self.cache.get(url, f"grid_{ds}_{volume}.nrrd", tally)
            return await asyncio.to_thread(read_nrrd, path)
        url = self.endpoints.grid_legacy(ds, volume)
        path = await self.cache.get(url, f"grid_{ds}_{volume}.zip", tally)
        return await asyncio.to_thread(read_metaimage_zip, path, volume)

    async def allowed_mask(self, density: Volume, tally: Tally) -> BoolArray:
        """Per voxel of ``density``'s grid: inside the fiber volume and not in a fiber tract."""
        key = (density.array.shape, tuple(density.spacing.tolist()))
        async with self._mask_lock:
            if key not in self._masks:
                self._masks[key] = await self._build_mask(density, tally)
            return self._masks[key]

    async def _build_mask(self, density: Volume, tally: Tally) -> BoolArray:
        shape, spacing = density.array.shape, density.spacing
        if self.kind == "nrrd":
            async with asyncio.TaskGroup() as tg:
                annotation = tg.create_task(
                    self.cache.get(self.endpoints.annotation_nrrd(), "annotation_25.nrrd", tally)
                )
                tree = tg.create_task(self._tract_ids(tally))
            path, tract_ids = annotation.result(), tree.result()

            def build() -> BoolArray:
                fine = nrrd_layout_of(path)
                plan = plan_fine_lookup(shape, spacing, fine.shape, fine.spacing)
                labels = read_nrrd(path, plan.sample).array
                return plan.allowed(in_tract_labels(labels, tract_ids))

        else:
            path = await self.cache.get(
                self.endpoints.fiber_tracts_legacy(), "fiber_tracts_197646984.zip", tally
            )

            def build() -> BoolArray:
                fine = metaimage_layout_of(path, FIBER_MEMBER)
                plan = plan_fine_lookup(shape, spacing, fine.shape, fine.spacing)
                labels = read_metaimage_zip(path, FIBER_MEMBER, plan.sample).array
                return plan.allowed(labels != 0)

        return await asyncio.to_thread(build)

    async def _tract_ids(self, tally: Tally) -> frozenset[int]:
        url = self.endpoints.structure_graph()
        path = await self.cache.get(url, "structure_graph_1.json", tally)
        try:
            payload = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise VolumeError(f"structure tree is not JSON: {exc}") from exc
        return fiber_tract_ids(rows(payload, url))


class FileCache:
    """Downloaded files with their URL, size and SHA-256, reused only if all three still match."""

    def __init__(self, client: HttpClient, directory: Path) -> None:
        self.client = client
        self.dir = directory
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, url: str, name: str, tally: Tally) -> Path:
        """The cached file for ``url``, downloading it if it is missing or does not verify."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            path = self.dir / name
            meta = self.dir / f"{name}.meta.json"
            if await asyncio.to_thread(_verified, path, meta, url):
                return path
            self.dir.mkdir(parents=True, exist_ok=True)
            size = await self.client.download(url, path, tally)
            digest = await asyncio.to_thread(_sha256, path)
            record = {"url": url, "size": size, "sha256": digest}
            atomic_write(meta, [orjson.dumps(record)])
            return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verified(path: Path, meta: Path, url: str) -> bool:
    try:
        record = orjson.loads(meta.read_bytes())
        return bool(
            record.get("url") == url
            and path.stat().st_size == record.get("size")
            and _sha256(path) == record.get("sha256")
        )
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return False
