"""A run of 40 data sets, as a whole-atlas run in small: a dry run that plans it, the run itself
(what it says while it goes, and when), a rerun with nothing to do, and ``asyncdl status``.

The emulator runs in a process of its own with a latency, so that the run's pace is the server's
(Little's law), not this machine's CPU, which other work may share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from asyncdl.emulator.catalog import CATALOGUE_IDS

from .conftest import EmulatorProcess, run_cli

IDS = CATALOGUE_IDS[:40]
CONCURRENCY = 16
LATENCY_MS = 20
#: About 250 targets a data set: 10,000 requests, some 13 s at 800 requests/s.
SELECTION = ("--density-range", "0.1", "0.13")


class Atlas:
    """The 40 data sets' runs, made once for the module's tests."""

    def __init__(self, tmp: Path, emulator: EmulatorProcess) -> None:
        self.out = tmp / "out"
        self.server = ["--base-url", emulator.base_url, "--archive-url", emulator.base_url]
        common = ["-o", self.out, "-c", CONCURRENCY, "--cache-dir", tmp / "cache", *SELECTION]
        self.common = [*common, *self.server]
        self.dry = run_cli("fetch", *IDS, *self.common, "--dry-run", "--progress-interval", 0.5)
        self.run = run_cli(
            "fetch", *IDS, *self.common, "--log-format", "json", "--progress-interval", 0.25
        )
        self.events = [orjson.loads(line) for line in self.run.stderr.splitlines()]
        self.rerun = run_cli("fetch", *IDS, *self.common)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> Atlas:
    with EmulatorProcess("--latency-ms", LATENCY_MS) as emulator:
        return Atlas(tmp_path_factory.mktemp("atlas"), emulator)


def test_the_run_completes(atlas):
    assert atlas.dry.returncode == 0, atlas.dry.stderr
    assert atlas.run.returncode == 0, atlas.run.stderr[-2000:]
    [summary] = atlas.of("summary")
    assert summary["complete"] == summary["data_sets"] == len(IDS)


def test_the_eta_halfway_is_within_a_quarter_of_the_time_left(atlas):
    # The first heartbeat once half the run's targets are done: its time left against the time
    # the run actually took from there to its end.
    [summary] = atlas.of("summary")
    total = sum(e["targets"] for e in atlas.of("data_set_done"))
    beats = atlas.of("progress")
    halfway = next(b for b in beats if b["done"] >= total / 2)
    actual = summary["time"] - halfway["time"]
    assert halfway["eta"] is not None and actual > 2, (halfway, actual)
    assert abs(halfway["eta"] - actual) <= 0.25 * actual, (halfway, actual)
    # Every data set counts from the start, estimated until each one's targets are known.
    assert all(b["data_sets"] == len(IDS) for b in beats)
    assert halfway["estimated"] and halfway["total"] is not None
    assert abs(halfway["total"] - total) <= 0.25 * total
    last = beats[-1]
    assert last["done"] <= total and (last["estimated"] is False or last["finished"] < len(IDS))


def test_each_data_set_counts_its_own_seconds(atlas):
    # From the run's start, 40 data sets would sum to about 20 times the run (the bug: one of
    # 3 s said 263.6 s). From their own starts, only the few in flight at once overlap.
    [summary] = atlas.of("summary")
    done = atlas.of("data_set_done")
    assert sum(d["seconds"] for d in done) <= 6 * summary["seconds"]
    for d in done:
        on_disk = orjson.loads(Path(d["directory"], "summary.json").read_bytes())
        assert on_disk["seconds"] == d["seconds"]


def test_the_run_says_it_began_and_beats_without_a_terminal(atlas):
    kinds = [e["event"] for e in atlas.events]
    assert kinds[0] == "start" and kinds[-1] == "summary"
    assert atlas.of("start")[0]["complete"] == []  # nothing was complete before
    assert len(atlas.of("progress")) >= 4


def test_a_rerun_with_nothing_to_do_prints_one_line(atlas):
    assert atlas.rerun.returncode == 0, atlas.rerun.stderr
    assert atlas.rerun.stderr.splitlines() == [f"asyncdl: {len(IDS)} data sets already complete"]


def test_the_dry_run_plans_the_run(atlas):
    *per_data_set, head, time, disk = atlas.dry.stdout.splitlines()
    assert len(per_data_set) == len(IDS)
    total = sum(e["targets"] for e in atlas.of("data_set_done"))
    assert head.startswith(f"dry run: {len(IDS)} data sets, {total:,} target requests")
    # Its time at -c from the median answer it measured, against the run's own.
    estimate = re.match(r"time: ~(\d+):(\d\d):(\d\d) at ", time)
    assert estimate, time
    hours, minutes, seconds = map(int, estimate.groups())
    [summary] = atlas.of("summary")
    assert 0.5 <= (3600 * hours + 60 * minutes + seconds) / summary["seconds"] <= 1.5, (
        time,
        summary["seconds"],
    )
    # Its disk estimate, against the data.json files written.
    written = sum(Path(atlas.out, str(i), "data.json").stat().st_size for i in IDS)
    size = re.match(r"disk: ~([\d.]+) (MB|kB) of data.json", disk)
    assert size, disk
    guessed = float(size.group(1)) * (1e6 if size.group(2) == "MB" else 1e3)
    assert 0.5 <= guessed / written <= 2, (disk, written)
    # It said how far it had got while it counted, on stderr (not a terminal).
    assert re.search(r"asyncdl: dry run: \d+/40 data sets counted", atlas.dry.stderr)
