"""Where a run's volumes come from: download into a verified cache, read, and build the tract mask.

Two sources, as ``--volumes`` chooses: ``nrrd`` (grid NRRD files, the CCF 2017 annotation and the
structure tree; a fiber tract is any label in the 1009 subtree) and ``legacy`` (the seed's zipped
MetaImage files and its 25 um fiber-tract mask). A volume enters the cache only once it has been
read whole from a temp file and found on the grid its URL serves (``GRIDS``): a maintenance page,
a garbled file or a volume of another grid is retried and never cached. The files every data set
needs (the fiber volume, the structure tree) are fetched once per machine into the user's cache
(``cache``), and the tract mask is built once and kept there beside them, keyed by the digest of
the file it was built from (and of the tract ids) and by the grid, so later runs read a 1 MB mask
instead of decoding the 300 MB annotation. A data set's own grids leave the cache once it is
complete (unless ``keep_volumes``). A cached file that no longer reads is fetched again. Given an
AllenSDK cache (``allensdk_cache``), a volume it holds enters the cache instead of a download, once
it passes the same check.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from .aio import all_of, both
from .allensdk_cache import AllenSdkCache
from .cache import (
    STRUCTURE_TREE,
    EntryLock,
    grid_entry,
    mask_entry,
    meta_path,
    remove_entry,
    remove_temp_files,
    source_folder,
    tag,
)
from .config import MAX_JSON_BYTES, FetchOptions, VolumeKind
from .errors import FetchError, VolumeError
from .fetcher import Downloaded, HttpClient, Tally
from .files import atomic_write, temp_path, writing
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
        allensdk: Path | None = None,
    ) -> None:
        self.client = client
        self.endpoints = endpoints
        self.cache = FileCache(client, cache_dir, endpoints.name, endpoints.key)
        self.kind = kind
        self.grid, self.fiber_grid = GRIDS[kind]
        #: An AllenSDK MouseConnectivityCache whose volumes are used instead of downloads.
        self.allensdk = None if allensdk is None else AllenSdkCache.open(allensdk)
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
            url = self.endpoints.structure_graph()
            read = functools.partial(_read_tract_ids, url=url)
            self.tract_ids = await self.cache.get(
                url, STRUCTURE_TREE, tally, read, limit=MAX_JSON_BYTES
            )
        return self.tract_ids

    async def data_set_volume(self, data_set: int, volume: str, tally: Tally) -> Volume:
        """A data set's ``density`` or ``injection`` volume."""
        ds, grid = data_set_id(data_set), self.grid
        read: Callable[[Path], Volume]
        local = None
        if self.kind == "nrrd":
            url = self.endpoints.grid_nrrd(ds, volume)
            read = functools.partial(read_nrrd, grid=grid)
            if self.allensdk is not None:
                local = self.allensdk.grid(ds, volume)
        else:
            url = self.endpoints.grid_legacy(ds, volume)
            read = functools.partial(read_metaimage_zip, name=volume, grid=grid)
        name = self._grid_entry(ds, volume)
        return await self.cache.get(url, name, tally, read, limit=grid.max_file_bytes, local=local)

    def _grid_entry(self, data_set: int, volume: str) -> str:
        return _grid_name(self.kind, data_set, volume)

    async def drop_grids(self, data_set: int) -> None:
        """Take a data set's own grids out of the cache (once it is complete): what every data set
        needs stays. A grid another process is reading or fetching is left to that process."""
        for volume in ("density", "injection"):
            await self.cache.remove(self._grid_entry(data_set, volume))

    async def download(self, data_set: int, tally: Tally) -> None:
        """A data set's volumes into the cache, checked on the way in as for a run; what the
        check read is let go at once (a dry run downloads many at a time and keeps none)."""
        await all_of(
            *(self.data_set_volume(data_set, volume, tally) for volume in ("density", "injection"))
        )

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

    async def note_targets(
        self, data_set: int, density_range: tuple[float, float], targets: int
    ) -> None:
        """Keep a dry run's count of a data set's targets in its density grid's record, for a
        later run to estimate its total from (``counted_targets``)."""
        name = self._grid_entry(data_set, "density")
        await self.cache.annotate(name, _TARGETS, {_range_key(density_range): targets})

    async def allowed_mask(self, tally: Tally) -> BoolArray:
        """Per voxel of the data sets' grid: inside the fiber volume and not in a fiber tract.

        Built by one process at a time (the others then read it from the cache), as decoding the
        annotation takes seconds of CPU and its memory."""
        async with self._mask_lock:
            if self._mask is None:
                async with self.cache.locked(f"fiber_mask_{self.kind}"):
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
            return key, mask_entry(key)

        cached = entry()
        if cached is not None and await asyncio.to_thread(self.cache.has, *cached):
            try:
                return await asyncio.to_thread(_read_mask, self.cache.dir / cached[1], shape)
            except VolumeError:
                self.cache.forget(cached[1])
        mask = await self._build_mask(tract_ids, tally)  # verifies the source file
        built = entry()
        if built is not None:
            await self.cache.put(*built, _mask_bytes(mask))
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
        local = (
            None if self.kind == "legacy" or self.allensdk is None else self.allensdk.annotation()
        )
        return await self.cache.get(url, name, tally, mask, limit=fine.max_file_bytes, local=local)

    def _fiber_file(self) -> tuple[str, str]:
        """URL and cache name of the shared volume that says where the fiber tracts are."""
        if self.kind == "legacy":
            return self.endpoints.fiber_tracts_legacy(), "fiber_tracts_197646984.zip"
        return self.endpoints.annotation_nrrd(), "annotation_25.nrrd"


#: The field of a density grid's record holding its target counts, by density range.
_TARGETS = "targets"


def _grid_name(kind: VolumeKind, data_set: int, volume: str) -> str:
    """The cache entry of a data set's ``density`` or ``injection`` grid, in ``kind``'s format."""
    return grid_entry(data_set, volume, "nrrd" if kind == "nrrd" else "zip")


def _range_key(density_range: tuple[float, float]) -> str:
    return ",".join(map(repr, density_range))


def counted_targets(
    cache_dir: Path,
    endpoints: Endpoints,
    kind: VolumeKind,
    data_sets: Iterable[int],
    density_range: tuple[float, float],
) -> dict[int, int]:
    """The targets a dry run counted (``VolumeSource.note_targets``) from each data set's density
    grid still in the cache at ``cache_dir``, at ``density_range``: how a run's progress estimates
    the data sets whose volumes are not in yet. Only the grids' records are read, without their
    locks (records are written whole; an estimate may be a moment old)."""
    folder, key = cache_dir / source_folder(endpoints.name), _range_key(density_range)
    counted = {}
    for data_set in data_sets:
        record = _record_of(meta_path(folder / _grid_name(kind, data_set, "density")))
        known = None if record is None else record.get(_TARGETS)
        n = known.get(key) if isinstance(known, dict) else None
        if type(n) is int and n >= 0:
            counted[data_set] = n
    return counted


def _read_tract_ids(path: Path, url: str) -> frozenset[int]:
    """The fiber-tract ids of a structure tree file; ``VolumeError`` if it is not a usable tree
    (so that it is fetched again, never cached)."""
    try:
        return fiber_tract_ids(rows(orjson.loads(path.read_bytes()), url))
    except orjson.JSONDecodeError as exc:
        raise VolumeError(f"structure tree is not JSON ({exc})") from exc
    except FetchError as exc:  # an answer that is not the API's envelope, or success: false
        raise VolumeError(f"not a structure tree: {exc}") from exc


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
    """A data source's folder in the user's cache: files with their source key, size and SHA-256,
    reused only if all three still match.

    A download enters the cache only once it has been read whole from its temp file; then it is
    renamed into place and its record written after it. Each entry is fetched, written or removed
    under its lock (``cache.EntryLock``), which a process waiting for it holds next: so processes
    sharing the cache download an entry once, never see a half-written or unchecked file, and
    never remove another's temp files. Downloads (``get``) and files derived from them (``put``,
    e.g. the fiber mask) are kept alike.
    """

    def __init__(
        self, client: HttpClient, root: Path, source: str, key: Callable[[str], str]
    ) -> None:
        self.client = client
        self.root = root
        self.dir = root / source_folder(source)
        self.key = key
        self._locks: dict[str, asyncio.Lock] = {}

    def _meta(self, name: str) -> Path:
        return meta_path(self.dir / name)

    @asynccontextmanager
    async def locked(self, name: str) -> AsyncIterator[Path]:
        """Hold entry ``name`` (waiting for any task or process that holds it); its path.
        What a writer of it left half-written, which only a dead one can have, is removed."""
        path = self.dir / name
        async with self._locks.setdefault(name, asyncio.Lock()):
            await asyncio.to_thread(self._make_folder, path.parent)
            async with EntryLock(path):
                await asyncio.to_thread(remove_temp_files, path)
                yield path

    def _make_folder(self, folder: Path) -> None:
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
            tag(self.root)

    async def get(
        self,
        url: str,
        name: str,
        tally: Tally,
        read: Callable[[Path], T],
        *,
        limit: int,
        local: Path | None = None,
    ) -> T:
        """``read`` (off the loop) of the file cached for ``url`` as ``name``.

        A file missing from the cache, not matching its record, or that no longer reads (damaged,
        or cached before volumes were checked) is taken from ``local`` (a file on this machine that
        may hold it: an AllenSDK cache's) or else downloaded (at most ``limit`` bytes), into a temp
        file, and read there: only if it reads whole does it enter the cache. ``read`` raises
        ``VolumeError`` for a file that is not what was asked for; a download is then retried.
        """
        async with self.locked(name) as path:
            key = self.key(url)
            if await asyncio.to_thread(_verified, path, self._meta(name), key):
                try:
                    return await asyncio.to_thread(read, path)
                except VolumeError:
                    self.forget(name)
            got = None if local is None else await asyncio.to_thread(_adopt, local, path, read)
            if got is None:
                got = await self.client.download(url, path, tally, read, limit=limit)
            await asyncio.to_thread(self._record, name, key, got.size, got.sha256)
            return got.value

    async def put(self, key: str, name: str, data: bytes) -> Path:
        """Cache ``data`` under ``name``, recorded with ``key`` (what it was made from)."""
        async with self.locked(name) as path:
            await asyncio.to_thread(atomic_write, path, [data])
            digest = hashlib.sha256(data).hexdigest()
            await asyncio.to_thread(self._record, name, key, len(data), digest)
            return path

    async def remove(self, name: str) -> bool:
        """Remove entry ``name`` unless another process holds it (it is using it); whether done."""
        path = self.dir / name
        async with self._locks.setdefault(name, asyncio.Lock()):
            lock = EntryLock(path)
            if not await asyncio.to_thread(lock.try_acquire):
                return False
            try:
                await asyncio.to_thread(remove_entry, path)
            finally:
                lock.release(remove=True)
            return True

    async def annotate(self, name: str, field: str, value: dict[str, object]) -> None:
        """Merge ``value`` into ``field`` of entry ``name``'s record, which goes with the entry
        (and is written afresh with a new download), if the entry is still recorded."""

        def merge() -> None:
            record = _record_of(self._meta(name))
            if record is not None:
                known = record.get(field)
                merged = {**(known if isinstance(known, dict) else {}), **value}
                atomic_write(self._meta(name), [orjson.dumps({**record, field: merged})])

        async with self.locked(name):
            await asyncio.to_thread(merge)

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


def _adopt(local: Path, path: Path, read: Callable[[Path], T]) -> Downloaded[T] | None:
    """``local`` put in place at ``path`` if it is what ``read`` accepts there, as a download
    would be: hard-linked (no second copy on disk), or else copied, to a temp file beside
    ``path``, read whole there, then renamed. None if it is missing, unreadable or not that file
    (it is downloaded instead). Call only while holding ``path``'s entry lock."""
    tmp = temp_path(path)
    try:
        try:
            os.link(local, tmp)
        except FileNotFoundError:
            return None
        except OSError:  # another file system, or not allowed to link: copy it
            shutil.copyfile(local, tmp)
        value = read(tmp)
        with writing(path):
            os.replace(tmp, path)
    except (VolumeError, OSError):
        return None
    finally:
        tmp.unlink(missing_ok=True)
    return Downloaded(value, path.stat().st_size, _sha256(path))


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
