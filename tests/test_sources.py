"""The volume cache: the fiber-tract mask is built once and reused, verified like any cached file."""

from __future__ import annotations

import hashlib

import orjson

import asyncdl
from asyncdl import FetchOptions

from .conftest import SEED_ID, source_dir

OPTIONS = FetchOptions(density_range=(0.1, 0.12))
#: The same, keeping the data set's grids in the cache once it is complete.
KEEP = FetchOptions(density_range=(0.1, 0.12), keep_volumes=True)


async def fetch(emulator, out, cache, options=OPTIONS):
    results = await asyncdl.fetch(
        [SEED_ID], out, options=options, endpoints=emulator.endpoints, cache_dir=cache
    )
    assert results[0].complete
    return (out / str(SEED_ID) / "data.json").read_bytes()


async def test_the_fiber_mask_is_cached_and_rebuilt_only_when_it_does_not_verify(
    emulator, tmp_path
):
    cache = tmp_path / "cache"
    first = await fetch(emulator, tmp_path / "1", cache)
    assert emulator.stats.requests["annotation"] == 1
    folder = source_dir(cache, emulator.endpoints)
    (mask,) = folder.glob("fiber_mask_*.npy")
    assert (folder / f"{mask.name}.meta.json").is_file()

    # The annotation is broken on disk: a run that decoded it again would have to fetch it again.
    annotation = folder / "annotation_25.nrrd"
    annotation.write_bytes(annotation.read_bytes()[:1000])
    emulator.stats.reset()
    assert await fetch(emulator, tmp_path / "2", cache) == first
    assert emulator.stats.requests["annotation"] == 0  # the cached mask was used

    # A mask that does not verify is rebuilt, from a fresh annotation.
    data = mask.read_bytes()
    mask.write_bytes(data[:-10] + bytes(b ^ 1 for b in data[-10:]))
    emulator.stats.reset()
    assert await fetch(emulator, tmp_path / "3", cache) == first
    assert emulator.stats.requests["annotation"] == 1
    assert [p.name for p in folder.glob("fiber_mask_*.npy")] == [mask.name]


async def test_the_mask_is_keyed_by_the_grid_and_volume_kind(emulator, tmp_path):
    cache = tmp_path / "cache"
    await fetch(emulator, tmp_path / "nrrd", cache)
    legacy = FetchOptions(density_range=(0.1, 0.12), volumes="legacy")
    results = await asyncdl.fetch(
        [SEED_ID],
        tmp_path / "legacy",
        options=legacy,
        endpoints=emulator.endpoints,
        cache_dir=cache,
    )
    assert results[0].complete
    assert len(list(source_dir(cache, emulator.endpoints).glob("fiber_mask_*.npy"))) == 2


async def test_a_cached_file_that_does_not_read_is_fetched_again_in_the_same_run(
    emulator, tmp_path
):
    # A maintenance page recorded as a volume (as caches filled before volumes were checked
    # hold): its record matches, but it does not read, so it is fetched again at once.
    cache = tmp_path / "cache"
    first = await fetch(emulator, tmp_path / "1", cache, KEEP)
    page = b"<html><body>Down for maintenance</body></html>"
    grids = source_dir(cache, emulator.endpoints) / "grids"
    name = f"grid_{SEED_ID}_density.nrrd"
    (grids / name).write_bytes(page)
    meta = grids / f"{name}.meta.json"
    record = orjson.loads(meta.read_bytes())
    record.update(size=len(page), sha256=hashlib.sha256(page).hexdigest())
    meta.write_bytes(orjson.dumps(record))
    emulator.stats.reset()
    assert await fetch(emulator, tmp_path / "2", cache, KEEP) == first
    assert emulator.stats.requests["grid_nrrd"] == 1
    assert (grids / name).read_bytes().startswith(b"NRRD0004")
