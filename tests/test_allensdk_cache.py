"""--allensdk-cache: the volumes an AllenSDK MouseConnectivityCache holds are used, once checked,
instead of being downloaded; anything missing or wrong in it is downloaded as usual.

Two layouts: one made by AllenSDK itself pointed at the emulator (when allensdk is installed: the
oldest-versions run of .ci/run installs AllenSDK 2.16.2), and one built from ``allensdk_manifest.json``,
the manifest AllenSDK 2.16.2 writes (``MouseConnectivityCache(manifest_file=...)``, saved verbatim),
with the files put where it says, for the runs where AllenSDK cannot be installed (numpy >= 1.24).
"""

import shutil
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import orjson
import pytest

import asyncdl
from asyncdl import FetchOptions, UsageError
from asyncdl.allensdk_cache import AllenSdkCache

from .conftest import SEED_ID, run_cli, server_args

MANIFEST = Path(__file__).with_name("allensdk_manifest.json")
OPTIONS = FetchOptions(concurrency=8, density_range=(0.1, 0.12))
VOLUME_ROUTES = {"grid_nrrd", "annotation"}


def download(url, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as resp:
        path.write_bytes(resp.read())


def layout_from_manifest(root, emulator, data_set=SEED_ID, *, annotation=True):
    """A MouseConnectivityCache folder as AllenSDK 2.16.2 lays it out, with the emulator's files."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MANIFEST, root / "mouse_connectivity_manifest.json")
    grids = root / f"experiment_{data_set}"
    for image, volume in (("projection_density", "density"), ("injection_fraction", "injection")):
        download(emulator.endpoints.grid_nrrd(data_set, volume), grids / f"{image}_100.nrrd")
    if annotation:
        download(
            emulator.endpoints.annotation_nrrd(), root / "annotation/ccf_2017/annotation_25.nrrd"
        )
    emulator.stats.reset()  # those downloads were the test's own
    return root


@pytest.fixture(scope="module")
def expected(emulator_server, tmp_path_factory):
    """data.json of a fetch that downloads everything."""
    out = tmp_path_factory.mktemp("plain")
    asyncdl.fetch_sync([SEED_ID], out, options=OPTIONS, endpoints=emulator_server.endpoints)
    return (out / str(SEED_ID) / "data.json").read_bytes()


def fetch_with(cache, out, emulator):
    emulator.stats.reset()
    options = FetchOptions(**{**vars(OPTIONS), "allensdk_cache": cache})
    [result] = asyncdl.fetch_sync([SEED_ID], out, options=options, endpoints=emulator.endpoints)
    assert result.complete
    return (out / str(SEED_ID) / "data.json").read_bytes()


def volume_requests(emulator):
    return {route: n for route, n in emulator.stats.requests.items() if route in VOLUME_ROUTES}


def test_the_manifest_resolves_as_allensdk_does(tmp_path):
    root = tmp_path / "mcc"
    root.mkdir()
    shutil.copyfile(MANIFEST, root / "mouse_connectivity_manifest.json")
    for where in (root, root / "mouse_connectivity_manifest.json"):
        cache = AllenSdkCache.open(where)
        assert cache.grid(SEED_ID, "density") == (
            root / f"experiment_{SEED_ID}" / "projection_density_100.nrrd"
        )
        assert cache.grid(SEED_ID, "injection") == (
            root / f"experiment_{SEED_ID}" / "injection_fraction_100.nrrd"
        )
        assert cache.annotation() == root / "annotation" / "ccf_2017" / "annotation_25.nrrd"
    assert cache.path("NO_SUCH_KEY") is None
    assert cache.path("PROJECTION_DENSITY", "not an int", 100) is None


def test_resolution_agrees_with_allensdk_itself(tmp_path):
    manifest_module = allensdk_or_skip("allensdk.config.manifest")
    entries = orjson.loads(MANIFEST.read_bytes())["manifest"]
    theirs = manifest_module.Manifest(entries, str(tmp_path), version=1.3)
    ours = AllenSdkCache.open(MANIFEST).specs
    ours = {key: spec.replace(str(MANIFEST.parent), str(tmp_path)) for key, spec in ours.items()}
    for key, spec in ours.items():
        assert theirs.get_path(key) == spec, key


def test_fetch_uses_the_cached_volumes_and_downloads_none(emulator, expected, tmp_path):
    root = layout_from_manifest(tmp_path / "mcc", emulator)
    before = {p: p.read_bytes() for p in root.rglob("*.nrrd")}
    assert fetch_with(root, tmp_path / "out", emulator) == expected
    assert volume_requests(emulator) == {}
    assert emulator.stats.requests["query"] > 50  # the spatial searches still go to the server
    cached = tmp_path / "out" / ".cache" / f"grid_{SEED_ID}_density.nrrd"
    sdk = root / f"experiment_{SEED_ID}" / "projection_density_100.nrrd"
    assert cached.read_bytes() == sdk.read_bytes()
    assert {p: p.read_bytes() for p in root.rglob("*.nrrd")} == before  # AllenSDK's untouched
    # The cache records it like a download, so a second run trusts it without the AllenSDK cache.
    emulator.stats.reset()
    asyncdl.fetch_sync(
        [SEED_ID], tmp_path / "out", options=FetchOptions(**{**vars(OPTIONS), "restart": True}),
        endpoints=emulator.endpoints,
    )  # fmt: skip
    assert volume_requests(emulator) == {}


@pytest.mark.parametrize(
    "damage",
    ["truncated", "html", "other grid", "missing"],
)
def test_a_file_that_is_not_the_volume_is_downloaded_instead(emulator, expected, tmp_path, damage):
    root = layout_from_manifest(tmp_path / "mcc", emulator)
    density = root / f"experiment_{SEED_ID}" / "projection_density_100.nrrd"
    if damage == "truncated":
        density.write_bytes(density.read_bytes()[:-1000])
    elif damage == "html":
        density.write_bytes(b"<html><body>Service temporarily unavailable</body></html>")
    elif damage == "other grid":  # a whole, valid NRRD, but the 25 um annotation's grid
        shutil.copyfile(root / "annotation/ccf_2017/annotation_25.nrrd", density)
    else:
        density.unlink()
    assert fetch_with(root, tmp_path / "out", emulator) == expected
    assert volume_requests(emulator) == {"grid_nrrd": 1}  # that one file, and only it
    assert not list((tmp_path / "out" / ".cache").glob(".*.tmp"))


def test_a_cache_without_the_annotation_still_gives_the_grids(emulator, expected, tmp_path):
    root = layout_from_manifest(tmp_path / "mcc", emulator, annotation=False)
    assert fetch_with(root, tmp_path / "out", emulator) == expected
    assert volume_requests(emulator) == {"annotation": 1}


def test_made_by_allensdk_itself(emulator, expected, tmp_path, monkeypatch):
    mcc_module = allensdk_or_skip("allensdk.core.mouse_connectivity_cache")
    api_module = allensdk_or_skip("allensdk.api.api")
    monkeypatch.setattr(api_module.Api, "download_url", emulator.base_url)  # the archive host
    manifest = tmp_path / "mcc" / "mouse_connectivity_manifest.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AllenSDK's own deprecation warnings
        grids = mcc_module.MouseConnectivityCache(
            resolution=100, manifest_file=str(manifest), base_uri=emulator.base_url
        )
        density, _ = grids.get_projection_density(SEED_ID)
        grids.get_injection_fraction(SEED_ID)
        atlas = mcc_module.MouseConnectivityCache(
            resolution=25, manifest_file=str(manifest), base_uri=emulator.base_url
        )
        annotation, _ = atlas.get_annotation_volume()
    assert density.shape == (132, 80, 114) and annotation.shape == (528, 320, 456)
    assert orjson.loads(manifest.read_bytes()) == orjson.loads(MANIFEST.read_bytes())
    assert fetch_with(manifest.parent, tmp_path / "out", emulator) == expected
    assert volume_requests(emulator) == {}
    read = asyncdl.read_streamlines(tmp_path / "out" / str(SEED_ID))
    assert len(read.paths) > 50 and np.isfinite(read.injection).all()


def allensdk_or_skip(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip(module, reason="allensdk is not installed (needs numpy<1.24)")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "no AllenSDK manifest at"),
        (b"{", "is not an AllenSDK cache manifest"),
        (b'{"manifest": {"key": 1}}', "is not an AllenSDK cache manifest"),
        (b'{"manifest": [{"key": "A", "type": "file", "spec": "a", "parent_key": "B"}]}', "'B'"),
    ],
)
def test_a_folder_that_is_not_an_allensdk_cache_is_a_usage_error(tmp_path, body, message):
    if body is not None:
        (tmp_path / "mouse_connectivity_manifest.json").write_bytes(body)
    with pytest.raises(UsageError, match=message):
        AllenSdkCache.open(tmp_path)


async def test_checked_before_any_request(emulator, tmp_path):
    options = FetchOptions(allensdk_cache=tmp_path / "nowhere")
    with pytest.raises(UsageError, match="no AllenSDK manifest"):
        await asyncdl.fetch(
            [SEED_ID], tmp_path / "out", options=options, endpoints=emulator.endpoints
        )
    assert emulator.stats.requests.total() == 0
    with pytest.raises(UsageError, match="--volumes nrrd"):
        FetchOptions(allensdk_cache=tmp_path, volumes="legacy")


def test_on_the_command_line(emulator, expected, tmp_path):
    root = layout_from_manifest(tmp_path / "mcc", emulator)
    args = ["fetch", SEED_ID, "-o", tmp_path / "out", "--density-range", "0.1", "0.12"]
    proc = run_cli(*args, "--allensdk-cache", root, *server_args(emulator))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / str(SEED_ID) / "data.json").read_bytes() == expected
    assert volume_requests(emulator) == {}
    proc = run_cli(*args, "--allensdk-cache", tmp_path, "--restart", *server_args(emulator))
    assert proc.returncode == 2
    assert proc.stderr.startswith("asyncdl: error: no AllenSDK manifest at ")
