"""What goes on the wire, and what changes against the real Allen host: encoded queries, the
User-Agent, unknown structures on the command line, the legacy-volumes warning."""

import json
import re
import urllib.request
from urllib.parse import quote, unquote

import orjson
import pytest

import asyncdl
from asyncdl import Endpoints, FetchOptions, UsageError, cli
from asyncdl.api import _warn_if_legacy
from asyncdl.config import LEGACY_WARNING, LegacyVolumesWarning

from .conftest import SEED_ID, run_cli, server_args

SAFE = ";/?:@&=+$,"  # AllenSDK: quote(url, ';/?:@&=+$,') before every GET (allensdk/api/api.py)
SPATIAL = "/api/v2/data/query.json?criteria=service::mouse_connectivity_target_spatial"
SEED_FORM = re.compile(
    re.escape(SPATIAL) + r"\[seed_point\$eq(-?\d+),(-?\d+),(-?\d+)\]\[section_data_set\$eq(\d+)\]"
)


async def test_spatial_searches_go_out_encoded_with_asyncdls_user_agent(emulator, tmp_path):
    [result] = await asyncdl.fetch(
        [SEED_ID],
        tmp_path,
        options=FetchOptions(density_range=(0.1, 0.11), keep_journal=True),  # it has the coords
        endpoints=emulator.endpoints,
    )
    assert result.complete and result.targets > 50
    wire = emulator.stats.wire
    searches = [raw for raw, _ in wire if raw.startswith(SPATIAL)]
    # Exactly the URLs asyncdl built for its targets, byte for byte as AllenSDK would quote them.
    lines = (tmp_path / str(SEED_ID) / "lines.ndjson").read_bytes().splitlines()
    coords = [orjson.loads(line)["coord"] for line in lines]
    base = len(emulator.base_url)
    built = sorted(emulator.endpoints.target_spatial(c, SEED_ID)[base:] for c in coords)
    assert sorted(searches) == built and len(searches) == result.targets
    for raw in searches:
        assert "[" not in raw and "]" not in raw and "%5B" in raw
        assert quote(unquote(raw), SAFE) == raw
        assert SEED_FORM.fullmatch(unquote(raw))
    # Every request, volumes included, names asyncdl and its version, and no made-up URL.
    assert {agent for _, agent in wire} == {f"asyncdl/{asyncdl.__version__}"}
    assert len(wire) > len(searches)


def test_the_emulator_takes_both_forms_alike(emulator):
    plain = f"{SPATIAL}[seed_point$eq7000,2000,5700][section_data_set$eq{SEED_ID}]"
    encoded = quote(plain, SAFE)
    bodies = []
    for target in (plain, encoded):
        with urllib.request.urlopen(emulator.base_url + target, timeout=30) as response:
            bodies.append(json.loads(response.read()))
    assert bodies[0] == bodies[1] and bodies[0]["success"] is True and bodies[0]["msg"]
    assert [raw for raw, _ in emulator.stats.wire] == [plain, encoded]  # as sent, not rewritten


def test_list_sends_primary_structure_only_only_when_asked(emulator):
    searches = []
    for extra in ([], ["--primary-only"]):
        emulator.stats.reset()
        proc = run_cli("list", "--injection-structure", "VISp", *extra, *server_args(emulator))
        assert proc.returncode == 0, proc.stderr
        searches.append([unquote(raw) for raw, _ in emulator.stats.wire if "criteria=" in raw])
    anywhere, primary = searches
    assert len(anywhere) == len(primary) == 1
    assert "primary_structure_only" not in anywhere[0]
    assert "[injection_structures$eqVISp][primary_structure_only$eqtrue][" in primary[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["list", "--injection-structure", "VISq"],
            "asyncdl: error: unknown structure acronym 'VISq' (not in the structure tree); "
            "close matches: VISp, VS, VISrl, VISpor",
        ),
        (
            ["fetch", "-o", "out", "--injection-structure", "Isocortex,Thalamus"],
            "asyncdl: error: unknown structure acronym 'Thalamus' (not in the structure tree); "
            "no close match",
        ),
        (
            ["list", "--injection-structure", "385,999999"],
            "asyncdl: error: unknown structure id 999999: not in the structure tree",
        ),
    ],
)
def test_unknown_structures_are_one_line_and_exit_2(emulator, tmp_path, args, message):
    proc = run_cli(*args, *server_args(emulator), timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]
    assert proc.stdout == ""
    assert "query" not in emulator.stats.requests  # refused before any search
    assert not (tmp_path / "out").exists()


def test_no_legacy_warning_against_another_server(emulator, tmp_path):
    proc = run_cli(
        "fetch", SEED_ID, "--volumes", "legacy", "--dry-run", "-o", tmp_path, *server_args(emulator)
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    assert "legacy" not in proc.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("base_url", ["http://api.brain-map.org", "https://api.brain-map.org/"])
def test_legacy_volumes_warn_against_the_real_host(
    monkeypatch, capsys, tmp_path, log_format, base_url
):
    # The real host is never contacted in tests: the run itself is replaced, after the CLI's checks.
    calls = []

    async def no_run(ids, out, **kwargs):
        calls.append(kwargs["options"].volumes)
        # What fetch says to Python callers; the command line has said it already, once.
        _warn_if_legacy(kwargs["options"], kwargs["endpoints"])
        return []

    monkeypatch.setattr(cli, "fetch", no_run)
    for volumes in ("legacy", "nrrd"):
        argv = ["fetch", "1", "-o", str(tmp_path), "--volumes", volumes, "--base-url", base_url]
        assert cli.main([*argv, "--log-format", log_format]) == 0
        lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
        if volumes == "nrrd":
            assert lines == []
            continue
        [line] = lines
        if log_format == "json":
            event = json.loads(line)
            assert event["event"] == "warning" and event["message"] == LEGACY_WARNING
        else:
            assert line == f"asyncdl: warning: {LEGACY_WARNING}"
        assert "CCF v2" in line and "CCF v3" in line
    assert calls == ["legacy", "nrrd"]


async def test_python_callers_are_warned_of_legacy_volumes_from_the_real_host(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")  # the output directory cannot be made: the run stops before any request
    real = Endpoints("https://api.brain-map.org")
    with pytest.warns(LegacyVolumesWarning, match="CCF v3"), pytest.raises(UsageError):
        await asyncdl.fetch(
            [SEED_ID], blocked, options=FetchOptions(volumes="legacy"), endpoints=real
        )
    with pytest.raises(
        UsageError
    ):  # nrrd, or another server: no warning (warnings are errors here)
        await asyncdl.fetch([SEED_ID], blocked, endpoints=real)


def test_help_says_what_legacy_volumes_are():
    proc = run_cli("fetch", "--help")
    text = " ".join(proc.stdout.split())
    assert "133x81x115, old CCF v2 frame" in text and "CCF v3 coordinates" in text
    assert "may no longer serve" in text
