"""Where a run's volumes come from: download into a verified cache, read, and build the tract mask.

Two sources, as ``--volumes`` chooses: ``nrrd`` (grid NRRD files, the CCF 2017 annotation and the
structure tree; a fiber tract is any label in the 1009 subtree) and ``legacy`` (the seed's zipped
MetaImage files and its 25 um fiber-tract mask). The shared files are fetched once per run, and the
tract mask is built once per coarse grid and kept in the cache beside the volumes, keyed by the
digest of the file it was built from (and of the tract ids) and by the grid, so later runs read a
1 MB mask instead of decoding the 300 MB annotation. A cached file that does not read is dropped
from the cache, so a rerun fetches it again instead of failing forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from .aio import all_of, both
from .allensdk_cache import ANNOTATION_RESOLUTION, GRID_RESOLUTION, AllenSdkCache
from .config import FetchOptions, VolumeKind
from .errors import ENDS_THE_RUN, AsyncdlError, VolumeError
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
from .volumes import (
    Volume,
    metaimage_layout_of,
    nrrd_layout_of,
    read_metaimage_zip,
    read_nrrd,
    verify_nrrd,
)

FIBER_MEMBER = "annotationFiber"
T = TypeVar("T")


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
        allensdk: Path | None = None,
    ) -> None:
        self.client = client
        self.endpoints = endpoints
        self.cache = FileCache(client, cache_dir, endpoints.key)
        self.kind = kind
        #: An AllenSDK MouseConnectivityCache whose volumes are used instead of downloads.
        self.allensdk = None if allensdk is None else AllenSdkCache.open(allensdk)
        #: The fiber-tract ids (nrrd), when another process already read them from the tree.
        self.tract_ids = tract_ids
        self._masks: dict[tuple[object, ...], BoolArray] = {}
        self._mask_lock = asyncio.Lock()

    async def prefetch_shared(self, tally: Tally, data_set: int) -> None:
        """Bring in what every data set needs, once, before a run is spread over processes that
        then share it: the fiber volume, the tract ids, and the tract mask of ``data_set``'s grid
        (the grid all data sets share), which goes into the cache for the others to read."""
        await self.cache.get(*self._fiber_file(), tally, local=self._fiber_local())
        await self._tract_ids(tally)
        try:
            await self.allowed_mask(await self.data_set_volume(data_set, "density", tally), tally)
        except ENDS_THE_RUN:
            raise
        except AsyncdlError:
            pass  # that data set's own task reports what is wrong with it

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
        ds = data_set_id(data_set)
        if self.kind == "nrrd":
            url = self.endpoints.grid_nrrd(ds, volume, GRID_RESOLUTION)
            local = None
            if self.allensdk is not None and (path := self.allensdk.grid(ds, volume)) is not None:
                local = LocalCopy(path, GRID_RESOLUTION)
            return await self._read(url, f"grid_{ds}_{volume}.nrrd", tally, read_nrrd, local)
        url = self.endpoints.grid_legacy(ds, volume)
        return await self._read(
            url, f"grid_{ds}_{volume}.zip", tally, lambda path: read_metaimage_zip(path, volume)
        )

    async def select(
        self, data_set: int, options: FetchOptions, tally: Tally
    ) -> tuple[Targets, npt.NDArray[np.float64]]:
        """A data set's targets and injection coordinates, from its volumes."""
        volumes = [
            self.data_set_volume(data_set, "density", tally),
            self.data_set_volume(data_set, "injection", tally),
        ]
        fiber_url, fiber_name = self._fiber_file()
        if not self._masks and self.cache.digest(fiber_url, fiber_name) is None:
            # The first data set of a cold cache brings the shared fiber volume in with its own.
            download = self.cache.get(fiber_url, fiber_name, tally, local=self._fiber_local())
            (density, injection), _ = await both(all_of(*volumes), download)
        else:
            density, injection = await all_of(*volumes)
        allowed = await self.allowed_mask(density, tally)
        targets = await asyncio.to_thread(select_targets, density, allowed, options.density_range)
        return targets, injection_coordinates(injection, options.injection_threshold)

    async def _read(
        self,
        url: str,
        name: str,
        tally: Tally,
        read: Callable[[Path], T],
        local: LocalCopy | None = None,
    ) -> T:
        """Fetch ``url`` through the cache and ``read`` it off the loop; a file that does not
        read is dropped from the cache, so a later run downloads it again."""
        path = await self.cache.get(url, name, tally, local=local)
        try:
            return await asyncio.to_thread(read, path)
        except VolumeError:
            self.cache.forget(name)
            raise

    async def allowed_mask(self, density: Volume, tally: Tally) -> BoolArray:
        """Per voxel of ``density``'s grid: inside the fiber volume and not in a fiber tract."""
        grid = (density.array.shape, tuple(density.spacing.tolist()))
        async with self._mask_lock:
            if grid not in self._masks:
                self._masks[grid] = await self._cached_mask(density, tally)
            return self._masks[grid]

    async def _cached_mask(self, density: Volume, tally: Tally) -> BoolArray:
        """The mask from the cache if it was built from the same file and tract ids for this grid;
        otherwise built (which downloads the fiber volume if needed) and cached."""
        fiber_url, fiber_name = self._fiber_file()
        tract_ids = await self._tract_ids(tally)
        ids = hashlib.sha256(repr(sorted(tract_ids)).encode()).hexdigest()
        shape = density.array.shape

        def entry() -> tuple[str, str] | None:
            """The mask's cache key and name, from the recorded digest of its source file."""
            source = self.cache.digest(fiber_url, fiber_name)
            if source is None:
                return None
            key = f"fiber-mask|{source}|{ids}|{shape}|{density.spacing.tolist()}"
            return key, f"fiber_mask_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"

        cached = entry()
        if cached is not None and await asyncio.to_thread(self.cache.has, *cached):
            try:
                return await asyncio.to_thread(_read_mask, self.cache.dir / cached[1], shape)
            except VolumeError:
                self.cache.forget(cached[1])
        mask = await self._build_mask(density, tract_ids, tally)  # verifies the source file
        built = entry()
        if built is not None:
            await asyncio.to_thread(self.cache.put, *built, _mask_bytes(mask))
        return mask

    async def _build_mask(
        self, density: Volume, tract_ids: frozenset[int], tally: Tally
    ) -> BoolArray:
        shape, spacing = density.array.shape, density.spacing
        if self.kind == "legacy":

            def legacy_mask(path: Path) -> BoolArray:
                fine = metaimage_layout_of(path, FIBER_MEMBER)
                plan = plan_fine_lookup(shape, spacing, fine.shape, fine.spacing)
                labels = read_metaimage_zip(path, FIBER_MEMBER, plan.sample).array
                return plan.allowed(labels != 0)

            return await self._read(*self._fiber_file(), tally, legacy_mask)

        def nrrd_mask(path: Path) -> BoolArray:
            fine = nrrd_layout_of(path)
            plan = plan_fine_lookup(shape, spacing, fine.shape, fine.spacing)
            labels = read_nrrd(path, plan.sample).array
            return plan.allowed(in_tract_labels(labels, tract_ids))

        return await self._read(*self._fiber_file(), tally, nrrd_mask, self._fiber_local())

    def _fiber_local(self) -> LocalCopy | None:
        """The annotation in the AllenSDK cache, if one was given and it has it."""
        if self.kind == "legacy" or self.allensdk is None:
            return None
        path = self.allensdk.annotation()
        return None if path is None else LocalCopy(path, ANNOTATION_RESOLUTION)

    def _fiber_file(self) -> tuple[str, str]:
        """URL and cache name of the shared volume that says where the fiber tracts are."""
        if self.kind == "legacy":
            return self.endpoints.fiber_tracts_legacy(), "fiber_tracts_197646984.zip"
        return self.endpoints.annotation_nrrd(ANNOTATION_RESOLUTION), "annotation_25.nrrd"


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

    Files are written by temp file + rename, and their record after them, so processes sharing a
    cache never see a half-written file; a file whose record does not match is fetched again.
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
        self, url: str, name: str, tally: Tally, *, local: LocalCopy | None = None
    ) -> Path:
        """The cached file for ``url``, downloading it if it is missing or does not verify, unless
        ``local`` holds it (checked as a volume first)."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            path = self.dir / name
            key = self.key(url)
            if await asyncio.to_thread(_verified, path, self._meta(name), key):
                return path
            with writing(self.dir):
                self.dir.mkdir(parents=True, exist_ok=True)
            if local is not None and await asyncio.to_thread(self._adopt, local, name, key):
                return path
            size = await self.client.download(url, path, tally)
            digest = await asyncio.to_thread(_sha256, path)
            await asyncio.to_thread(self._record, name, key, size, digest)
            return path

    def _adopt(self, local: LocalCopy, name: str, key: str) -> bool:
        """Take ``local`` into the cache as ``name`` if it is the volume asked for: hard-linked
        (no second copy on disk) or else copied beside its final path, checked there, then
        renamed and recorded like a download. False if it is missing or is not that volume."""
        path = self.dir / name
        tmp = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            try:
                os.link(local.path, tmp)
            except FileNotFoundError:
                return False
            except OSError:  # another file system, or not allowed to link: copy it
                shutil.copyfile(local.path, tmp)
            verify_nrrd(tmp, local.resolution)
            with writing(path):
                os.replace(tmp, path)
        except (VolumeError, OSError):  # unreadable, or not that volume: download it instead
            return False
        finally:
            tmp.unlink(missing_ok=True)
        self._record(name, key, path.stat().st_size, _sha256(path))
        return True

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


@dataclass(frozen=True)
class LocalCopy:
    """A file on this machine that may already be the volume a URL serves (an AllenSDK cache's):
    an NRRD volume on the CCF grid at ``resolution``."""

    path: Path
    resolution: int


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
