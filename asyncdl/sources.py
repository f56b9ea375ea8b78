"""Where a run's volumes come from: download into a verified cache, read, and build the tract mask.

Two sources, as ``--volumes`` chooses: ``nrrd`` (grid NRRD files, the CCF 2017 annotation and the
structure tree; a fiber tract is any label in the 1009 subtree) and ``legacy`` (the seed's zipped
MetaImage files and its 25 um fiber-tract mask). A volume enters the cache only once it has been
read whole from a temp file and found on the grid its URL serves (``GRIDS``): a maintenance page,
a garbled file or a volume of another grid is retried and never cached. The shared files are
fetched once per run, and the tract mask is built once and kept in the cache beside the volumes,
keyed by the digest of the file it was built from (and of the tract ids) and by the grid, so later
runs read a 1 MB mask instead of decoding the 300 MB annotation. A cached file that no longer
reads is dropped from the cache and fetched again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from .aio import all_of, both
from .config import FetchOptions, VolumeKind
from .errors import VolumeError
from .fetcher import HttpClient, Tally
from .files import atomic_write, writing
from .responses import rows
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
from .volumes import Grid, Volume, read_metaimage_zip, read_nrrd

FIBER_MEMBER = "annotationFiber"
T = TypeVar("T")

#: The grid of each volume the Allen servers send (AP, DV, ML, microns), by ``--volumes``: the data
#: sets' grid, and that of the file saying where the fiber tracts are. A file on another grid is
#: refused from its header, before anything is decompressed.
GRIDS: dict[VolumeKind, tuple[Grid, Grid]] = {
    # grid_data NRRD files (CCF v3, 100 um); annotation_25.nrrd (CCF 2017)
    "nrrd": (Grid((132, 80, 114), 100.0), Grid((528, 320, 456), 25.0)),
    # the 2013 zipped MetaImage grids (CCF v2, 100 um); annotationFiber of file 197646984 (25 um)
    "legacy": (Grid((133, 81, 115), 100.0), Grid((528, 320, 456), 25.0)),
}


class VolumeSource:
    """Fetches and reads the volumes of a run, through a cache of verified files."""

    def __init__(
        self,
        client: HttpClient,
        endpoints: Endpoints,
        cache_dir: Path,
        kind: VolumeKind,
        *,
        tract_ids: frozenset[int] | None = None,
    ) -> None:
        self.client = client
        self.endpoints = endpoints
        self.cache = FileCache(client, cache_dir, endpoints.key)
        self.kind = kind
        self.grid, self.fiber_grid = GRIDS[kind]
        #: The fiber-tract ids (nrrd), when another process already read them from the tree.
        self.tract_ids = tract_ids
        self._mask: BoolArray | None = None
        self._mask_lock = asyncio.Lock()

    async def prefetch_shared(self, tally: Tally) -> None:
        """Bring in what every data set needs, once, before a run is spread over processes that
        then share it: the fiber volume, the tract ids, and the tract mask, which goes into the
        cache for the others to read."""
        await self.allowed_mask(tally)

    async def _tract_ids(self, tally: Tally) -> frozenset[int]:
        if self.kind == "legacy":
            return frozenset()  # the legacy fiber file is itself the tract mask
        if self.tract_ids is None:
            # The tree is small and its JSON is checked (and retried) on the way in: not cached.
            roots = await self.client.get_json(self.endpoints.structure_graph(), tally, rows)
            self.tract_ids = fiber_tract_ids(roots)
        return self.tract_ids

    async def data_set_volume(self, data_set: int, volume: str, tally: Tally) -> Volume:
        """A data set's ``density`` or ``injection`` volume."""
        ds, grid = data_set_id(data_set), self.grid
        read: Callable[[Path], Volume]
        if self.kind == "nrrd":
            url = self.endpoints.grid_nrrd(ds, volume)
            name = f"grid_{ds}_{volume}.nrrd"
            read = functools.partial(read_nrrd, grid=grid)
        else:
            url = self.endpoints.grid_legacy(ds, volume)
            name = f"grid_{ds}_{volume}.zip"
            read = functools.partial(read_metaimage_zip, name=volume, grid=grid)
        return await self.cache.get(url, name, tally, read, limit=grid.max_file_bytes)

    async def select(
        self, data_set: int, options: FetchOptions, tally: Tally
    ) -> tuple[Targets, npt.NDArray[np.float64]]:
        """A data set's targets and injection coordinates, from its volumes and the tract mask
        (built meanwhile the first time: it depends only on the grid)."""
        volumes = all_of(
            self.data_set_volume(data_set, "density", tally),
            self.data_set_volume(data_set, "injection", tally),
        )
        (density, injection), allowed = await both(volumes, self.allowed_mask(tally))
        targets = await asyncio.to_thread(select_targets, density, allowed, options.density_range)
        return targets, injection_coordinates(injection, options.injection_threshold)

    async def allowed_mask(self, tally: Tally) -> BoolArray:
        """Per voxel of the data sets' grid: inside the fiber volume and not in a fiber tract."""
        async with self._mask_lock:
            if self._mask is None:
                self._mask = await self._cached_mask(tally)
            return self._mask

    async def _cached_mask(self, tally: Tally) -> BoolArray:
        """The mask from the cache if it was built from the same file and tract ids for this grid;
        otherwise built (which downloads the fiber volume if needed) and cached."""
        fiber_url, fiber_name = self._fiber_file()
        tract_ids = await self._tract_ids(tally)
        ids = hashlib.sha256(repr(sorted(tract_ids)).encode()).hexdigest()
        shape, spacing = self.grid.shape, [self.grid.spacing] * 3

        def entry() -> tuple[str, str] | None:
            """The mask's cache key and name, from the recorded digest of its source file."""
            source = self.cache.digest(fiber_url, fiber_name)
            if source is None:
                return None
            key = f"fiber-mask|{source}|{ids}|{shape}|{spacing}"
            return key, f"fiber_mask_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"

        cached = entry()
        if cached is not None and await asyncio.to_thread(self.cache.has, *cached):
            try:
                return await asyncio.to_thread(_read_mask, self.cache.dir / cached[1], shape)
            except VolumeError:
                self.cache.forget(cached[1])
        mask = await self._build_mask(tract_ids, tally)  # verifies the source file
        built = entry()
        if built is not None:
            await asyncio.to_thread(self.cache.put, *built, _mask_bytes(mask))
        return mask

    async def _build_mask(self, tract_ids: frozenset[int], tally: Tally) -> BoolArray:
        """Read the fiber volume at the fine voxels the data sets' grid lands on, as the seed
        does; the read goes through the whole file, so it is also the check before caching it."""
        fine = self.fiber_grid
        plan = plan_fine_lookup(
            self.grid.shape, [self.grid.spacing] * 3, fine.shape, [fine.spacing] * 3
        )

        def mask(path: Path) -> BoolArray:
            if self.kind == "legacy":  # the legacy fiber file is itself the tract mask
                labels = read_metaimage_zip(path, FIBER_MEMBER, plan.sample, grid=fine).array
                return plan.allowed(labels != 0)
            labels = read_nrrd(path, plan.sample, grid=fine).array
            return plan.allowed(in_tract_labels(labels, tract_ids))

        url, name = self._fiber_file()
        return await self.cache.get(url, name, tally, mask, limit=fine.max_file_bytes)

    def _fiber_file(self) -> tuple[str, str]:
        """URL and cache name of the shared volume that says where the fiber tracts are."""
        if self.kind == "legacy":
            return self.endpoints.fiber_tracts_legacy(), "fiber_tracts_197646984.zip"
        return self.endpoints.annotation_nrrd(), "annotation_25.nrrd"


def _mask_bytes(mask: BoolArray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, mask, allow_pickle=False)
    return buffer.getvalue()


def _read_mask(path: Path, shape: tuple[int, ...]) -> BoolArray:
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise VolumeError(f"cached fiber mask {path.name} does not read: {exc}") from exc
    if mask.dtype != np.bool_ or mask.shape != shape:
        raise VolumeError(f"cached fiber mask {path.name} is not a {shape} boolean grid")
    return mask  # type: ignore[no-any-return]


class FileCache:
    """Cached files with their source key, size and SHA-256, reused only if all three still match.

    A download enters the cache only once it has been read whole from its temp file; then it is
    renamed into place and its record written after it, so processes sharing a cache never see a
    half-written or unchecked file; a file whose record does not match is fetched again.
    Downloads (``get``) and files derived from them (``put``, e.g. the fiber mask) are kept alike.
    """

    def __init__(self, client: HttpClient, directory: Path, key: Callable[[str], str]) -> None:
        self.client = client
        self.dir = directory
        self.key = key
        self._locks: dict[str, asyncio.Lock] = {}

    def _meta(self, name: str) -> Path:
        return self.dir / f"{name}.meta.json"

    async def get(
        self, url: str, name: str, tally: Tally, read: Callable[[Path], T], *, limit: int
    ) -> T:
        """``read`` (off the loop) of the file cached for ``url`` as ``name``.

        A file missing from the cache, not matching its record, or that no longer reads (damaged,
        or cached before volumes were checked) is downloaded (at most ``limit`` bytes) into a temp
        file and read there: only if it reads whole does it enter the cache. ``read`` raises
        ``VolumeError`` for a file that is not what was asked for; a download is then retried.
        """
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            path = self.dir / name
            key = self.key(url)
            if await asyncio.to_thread(_verified, path, self._meta(name), key):
                try:
                    return await asyncio.to_thread(read, path)
                except VolumeError:
                    self.forget(name)
            with writing(self.dir):
                self.dir.mkdir(parents=True, exist_ok=True)
            got = await self.client.download(url, path, tally, read, limit=limit)
            await asyncio.to_thread(self._record, name, key, got.size, got.sha256)
            return got.value

    def put(self, key: str, name: str, data: bytes) -> Path:
        """Cache ``data`` under ``name``, recorded with ``key`` (what it was made from)."""
        with writing(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / name
        atomic_write(path, [data])
        self._record(name, key, len(data), hashlib.sha256(data).hexdigest())
        return path

    def _record(self, name: str, key: str, size: int, digest: str) -> None:
        record = {"key": key, "size": size, "sha256": digest}
        atomic_write(self._meta(name), [orjson.dumps(record)])

    def has(self, key: str, name: str) -> bool:
        """Whether ``name`` is cached, recorded with ``key`` (as ``put`` was given it), and verifies."""
        return _verified(self.dir / name, self._meta(name), key)

    def digest(self, url: str, name: str) -> str | None:
        """The SHA-256 recorded when ``url`` was cached as ``name`` (the record, not the file)."""
        record = _record_of(self._meta(name))
        if record is None or record.get("key") != self.key(url):
            return None
        digest = record.get("sha256")
        return digest if isinstance(digest, str) else None

    def forget(self, name: str) -> None:
        """Stop trusting a cached file (its record goes; the file is replaced on next use)."""
        self._meta(name).unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _record_of(meta: Path) -> dict[str, object] | None:
    try:
        record = orjson.loads(meta.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _verified(path: Path, meta: Path, key: str) -> bool:
    record = _record_of(meta)
    try:
        return bool(
            record is not None
            and record.get("key") == key
            and path.stat().st_size == record.get("size")
            and _sha256(path) == record.get("sha256")
        )
    except OSError:
        return False
