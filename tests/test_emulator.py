import asyncio
import csv
import gzip
import json
import statistics
import time
import urllib.error
import urllib.request
import zipfile

import nrrd
import numpy as np
import pytest

from asyncdl import UsageError
from asyncdl.emulator import DATA_SET_IDS, Emulator, FaultPlan
from asyncdl.emulator.ontology import BY_ID, FIBER_TRACT_IDS
from asyncdl.emulator.synthetic import Experiment, annotation_slab
from asyncdl.targets import in_tract_labels, plan_fine_lookup, select_targets
from asyncdl.volumes import Volume

from .conftest import SEED_ID, SHARED

QUERY = (
    "/api/v2/data/query.json?criteria=service::mouse_connectivity_target_spatial"
    "[seed_point$eq{x},{y},{z}][section_data_set$eq{id}]"
)
RECORD_KEYS = {
    "id",
    "transgenic-line",
    "product-id",
    "structure-id",
    "structure-abbrev",
    "structure-name",
    "structure-color",
    "name",
    "injection-volume",
    "injection-structures",
    "gender",
    "strain",
    "injection-coordinates",
    "density",
    "path",
}


def get(emulator, path):
    with urllib.request.urlopen(emulator.base_url + path, timeout=30) as response:
        return response.status, response.headers, response.read()


def header_lines(body: bytes) -> list[str]:
    return body[: body.index(b"\n\n")].decode().splitlines()


def test_grid_nrrd_is_sent_as_the_real_server_sends_it(emulator, tmp_path):
    status, _, body = get(
        emulator, f"/grid_data/download_file/{SEED_ID}?image=projection_density&resolution=100"
    )
    assert status == 200
    lines = header_lines(body)
    assert lines[0] == "NRRD0004"
    for field in [
        "type: double",
        "dimension: 3",
        "space: left-posterior-superior",
        "sizes: 132 80 114",
        "space directions: (100,0,0) (0,100,0) (0,0,100)",
        "kinds: domain domain domain",
        "endian: little",
        "encoding: gzip",
        "space origin: (0,0,0)",
    ]:
        assert field in lines
    path = tmp_path / "d.nrrd"
    path.write_bytes(body)
    data, _ = nrrd.read(str(path))  # pynrrd's own reader: an independent check
    assert data.shape == (132, 80, 114) and data.dtype == np.float64
    assert data.min() >= 0.0 and data.max() <= 1.0
    _, _, body = get(
        emulator, f"/grid_data/download_file/{SEED_ID}?image=injection_fraction&resolution=100"
    )
    assert header_lines(body)[0] == "NRRD0004"


def test_legacy_grid_zip_holds_a_metaimage(emulator, tmp_path):
    _, headers, body = get(emulator, f"/grid_data/download/{SEED_ID}?include=density")
    assert headers["Content-Type"] == "application/zip"
    path = tmp_path / "d.zip"
    path.write_bytes(body)
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["density.mhd", "density.raw"]
        meta = dict(line.split(" = ") for line in zf.read("density.mhd").decode().splitlines())
        raw = zf.read("density.raw")
    assert meta["DimSize"] == "133 81 115"
    assert meta["ElementType"] == "MET_FLOAT"
    assert meta["ElementSpacing"] == "100 100 100"
    assert meta["BinaryDataByteOrderMSB"] == "False"
    assert len(raw) == 133 * 81 * 115 * 4


def test_shared_volumes(emulator):
    _, _, body = get(
        emulator,
        "/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/annotation_25.nrrd",
    )
    lines = header_lines(body)
    assert "type: unsigned int" in lines and "sizes: 528 320 456" in lines
    assert "space directions: (25,0,0) (0,25,0) (0,0,25)" in lines
    _, _, body = get(emulator, "/api/v2/well_known_file_download/197646984")
    assert body[:2] == b"PK"
    _, _, body = get(emulator, "/api/v2/structure_graph_download/1.json")
    tree = json.loads(body)
    assert tree["success"] is True and len(tree["msg"]) == 1
    root = tree["msg"][0]
    assert root["id"] == 997 and {"id", "acronym", "name", "children"} <= set(root)


def test_annotation_labels_are_real_structures_with_fiber_tracts_and_ventricles():
    labels = np.unique(np.concatenate([annotation_slab(k).ravel() for k in range(0, 456, 8)]))
    assert set(labels.tolist()) - {0} <= set(BY_ID)
    assert len(set(labels.tolist()) & FIBER_TRACT_IDS) >= 4
    assert 81 in labels  # lateral ventricle: labelled but not a fiber tract


def test_spatial_search_records_look_like_the_real_service(emulator):
    coords = [
        (x, y, z)
        for x in range(3000, 10000, 1000)
        for y in (2000, 4000)
        for z in (3000, 5700, 8000)
    ]
    lengths, steps, empty = [], [], 0
    for x, y, z in coords:
        _, _, body = get(emulator, QUERY.format(x=x, y=y, z=z, id=SEED_ID))
        answer = json.loads(body)
        assert answer["success"] is True
        assert answer["num_rows"] == answer["total_rows"] == len(answer["msg"])
        empty += not answer["msg"]
        for record in answer["msg"]:
            assert set(record) == RECORD_KEYS
            path = record["path"]
            assert path[0]["coord"] == [x, y, z]
            assert path[-1] == {
                "coord": record["injection-coordinates"],
                "density": 0,
                "intensity": 0,
            }
            assert all(isinstance(v, int) for v in path[-1]["coord"])
            assert record["id"] == SEED_ID
            lengths.append(len(path))
            pts = np.array([p["coord"] for p in path], float)
            steps += np.linalg.norm(np.diff(pts, axis=0), axis=1).tolist()
    assert empty < len(coords) / 4
    assert 80 < statistics.median(steps) < 130  # real paths: ~100 um a step
    assert 10 < statistics.median(lengths) < 80


def test_record_keys_are_those_of_the_real_recorded_response():
    path = SHARED / "reference" / "target_spatial_VISrl_VISpor_9500_2700_9800.csv"
    if not path.exists():
        pytest.skip("../shared/reference is not beside this checkout")
    with path.open() as fh:
        real = set(next(csv.reader(fh)))
    assert real >= RECORD_KEYS


def test_unknown_data_set_and_bad_queries(emulator):
    _, _, body = get(emulator, QUERY.format(x=1, y=2, z=3, id=42))
    answer = json.loads(body)
    assert answer["success"] is False and isinstance(answer["msg"], str)
    for path in [
        "/grid_data/download_file/42?image=projection_density&resolution=100",
        "/grid_data/download/42?include=density",
    ]:
        with pytest.raises(urllib.error.HTTPError) as err:
            get(emulator, path)
        err.value.close()
        assert err.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as err:
        get(emulator, "/api/v2/data/query.json?criteria=model::Nothing")
    err.value.close()
    assert err.value.code == 400


@pytest.mark.parametrize("data_set", DATA_SET_IDS)
def test_each_data_set_selects_a_realistic_number_of_targets(data_set):
    exp = Experiment(data_set)
    density = Volume(exp.projection_density(), np.full(3, 100.0))
    plan = plan_fine_lookup(density.array.shape, density.spacing, (528, 320, 456), np.full(3, 25.0))
    ii, jj, kk = plan.sample
    labels = np.stack([annotation_slab(int(k))[np.ix_(ii, jj)] for k in kk], axis=2)
    allowed = plan.allowed(in_tract_labels(labels, FIBER_TRACT_IDS))
    targets = select_targets(density, allowed, (0.04, 0.3))
    assert 1000 <= len(targets) <= 3000
    assert 100 <= int((exp.injection_fraction() > 0.5).sum()) <= 400
    assert (~allowed).sum() > 0  # fiber tracts do exclude voxels


async def test_latency_knob():
    async with Emulator(latency_ms=60, latency_spread=0.1) as emu:
        start = time.monotonic()
        await _aget(emu.base_url + QUERY.format(x=1, y=2, z=3, id=SEED_ID))
        assert time.monotonic() - start >= 0.054


async def _aget(url):
    import aiohttp
    from yarl import URL

    async with aiohttp.ClientSession() as session, session.get(URL(url, encoded=True)) as resp:
        return await resp.read()


# -- hostile modes ---------------------------------------------------------------------------------

GRID_URL = "/grid_data/download_file/{id}?image=projection_density&resolution=100"


async def _answer(url, **kwargs):
    """Status, headers and body of a GET that follows no redirect."""
    import aiohttp
    from yarl import URL

    async with (
        aiohttp.ClientSession() as session,
        session.get(URL(url, encoded=True), allow_redirects=False, **kwargs) as resp,
    ):
        return resp.status, resp.headers, await resp.read()


async def test_an_html_window_covers_the_first_volumes_then_closes():
    async with Emulator(faults=FaultPlan(html_requests=2)) as emu:
        answers = [await _answer(emu.base_url + GRID_URL.format(id=SEED_ID)) for _ in range(3)]
        tree = await _answer(emu.base_url + "/api/v2/structure_graph_download/1.json")
    types = [headers["Content-Type"].split(";")[0] for _, headers, _ in answers]
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert types == ["text/html", "text/html", "application/octet-stream"]
    assert answers[2][2].startswith(b"NRRD0004")
    assert tree[1]["Content-Type"].startswith("application/json")  # not a volume: not in it


async def test_a_redirect_keeps_the_path_and_query_as_sent():
    path = QUERY.format(x=1, y=2, z=3, id=SEED_ID).replace("[", "%5B").replace("]", "%5D")
    async with Emulator(faults=FaultPlan(redirect="http://localhost:9/")) as emu:
        status, headers, _ = await _answer(emu.base_url + path)
    assert status == 302 and headers["Location"] == "http://localhost:9" + path


async def test_huge_answers_are_chunked_without_a_length_and_made_as_sent():
    async with Emulator(faults=FaultPlan(huge_answers=3_000_000)) as emu:
        status, headers, body = await _answer(
            emu.base_url + QUERY.format(x=1, y=2, z=3, id=SEED_ID)
        )
    assert status == 200 and "Content-Length" not in headers
    assert headers["Transfer-Encoding"] == "chunked" and len(body) == 3_000_000
    assert json.loads(body)["success"] is True


async def test_a_wrong_grid_is_declared_and_its_data_matches():
    async with Emulator(faults=FaultPlan(wrong_grid=(3, 4, 5))) as emu:
        _, _, body = await _answer(emu.base_url + GRID_URL.format(id=SEED_ID))
    assert "sizes: 3 4 5" in header_lines(body)
    data = gzip.decompress(body[body.index(b"\n\n") + 2 :])
    assert len(data) == 3 * 4 * 5 * 8 and not any(data)


async def test_a_drip_sends_the_declared_length_slowly():
    async with Emulator(faults=FaultPlan(drip=2000.0, routes=frozenset({"query"}))) as emu:
        started = time.monotonic()
        status, headers, body = await _answer(
            emu.base_url + QUERY.format(x=1, y=2, z=3, id=SEED_ID)
        )
        took = time.monotonic() - started
    assert status == 200 and int(headers["Content-Length"]) == len(body) > 1000
    assert took >= len(body) / 2000 * 0.9


def test_unknown_routes_and_bad_modes_are_refused():
    with pytest.raises(UsageError, match="unknown routes grids"):
        FaultPlan(routes=frozenset({"grids"}))
    with pytest.raises(UsageError, match="drip rate"):
        FaultPlan(drip=0)
    with pytest.raises(UsageError, match="three positive sizes"):
        FaultPlan(wrong_grid=(0, 1, 2))


async def _statuses(url: str, count: int) -> list[tuple[int, str | None]]:
    import aiohttp
    from yarl import URL

    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, str | None]:
            async with session.get(URL(url, encoded=True)) as resp:
                await resp.read()
                return resp.status, resp.headers.get("Retry-After")

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_a_server_of_limited_capacity_queues_what_it_cannot_take():
    # 2 handlers, 100 ms each: 6 requests at once take three rounds at least.
    async with Emulator(latency_ms=100, latency_spread=0.0, capacity=2) as emu:
        url = emu.base_url + QUERY.format(x=1, y=2, z=3, id=SEED_ID)
        await _aget(url)  # the data set's grid is built: the requests below take their latency
        emu.stats.reset()
        started = time.monotonic()
        statuses = await _statuses(url, 6)
        elapsed = time.monotonic() - started
        queue = emu.stats.queue
        assert queue is not None
        assert queue.busy == queue.queued == 0
        stats = json.loads(await _aget(emu.base_url + "/__emulator__/stats"))["queue"]
    assert statuses == [(200, None)] * 6
    assert elapsed >= 0.3 and queue.peak_busy == 2
    assert queue.served == 6 and queue.sheds == 0 and queue.wait_seconds > 0
    assert stats["served"] == 6 and stats["handlers"] == 2 and stats["shed_queue"] is None
    assert stats["mean_wait_ms"] == pytest.approx(queue.wait_seconds / 6 * 1000)
    # Each request held a handler for its 100 ms at least, and never more than 2 were in use.
    assert 6 * 0.1 <= stats["busy_seconds"] <= 2 * elapsed


async def test_the_queue_is_first_come_first_served():
    from asyncdl.emulator.capacity import Capacity

    capacity, served, release = Capacity(1), [], asyncio.Event()

    async def request(n: int) -> None:
        async with capacity.handler():
            served.append(n)
            await release.wait()

    tasks = []
    for n in range(5):
        tasks.append(asyncio.create_task(request(n)))
        await asyncio.sleep(0)  # each arrives after the one before
    await asyncio.sleep(0.01)
    assert served == [0] and capacity.stats.queued == 4
    tasks[2].cancel()  # a request whose client left takes nothing with it
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert served == [0, 1, 3, 4] and capacity.stats.busy == capacity.stats.queued == 0


async def test_a_server_that_sheds_answers_503_with_retry_after_when_its_queue_is_full():
    async with Emulator(latency_ms=1000, latency_spread=0.0, capacity=1, shed_queue=1) as emu:
        statuses = await _statuses(emu.base_url + QUERY.format(x=1, y=2, z=3, id=SEED_ID), 5)
        queue = emu.stats.queue
        assert queue is not None
        requests = dict(emu.stats.requests)
    # One served at once, one queued, three turned away.
    assert sorted(statuses) == [(200, None)] * 2 + [(503, "1")] * 3
    assert queue.sheds == 3 and queue.served == 2
    assert requests == {"query": 2}  # answered; sheds are counted apart


def test_the_queue_waits_percentile_is_read_from_its_histogram():
    from asyncdl.emulator.capacity import WAIT_EDGES, QueueStats, percentile

    stats = QueueStats(handlers=1, shed_queue=None)
    for wait in [0.0] * 98 + [0.5, 2.0]:
        stats.record(wait)
    assert percentile(stats.histogram, 0.5) == WAIT_EDGES[0]
    assert 0.5 <= percentile(stats.histogram, 0.99) <= 0.5 * 2 ** (1 / 8)
    assert percentile([0] * len(stats.histogram), 0.99) == 0.0
    stats.reset()
    assert stats.served == 0 and sum(stats.histogram) == 0


def test_shedding_needs_a_capacity():
    with pytest.raises(UsageError, match="needs a capacity"):
        Emulator(shed_queue=4)
