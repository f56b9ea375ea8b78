"""``python -m benchmarks.hostile``: peak memory of ``asyncdl fetch`` against hostile servers.

The goals (issue 14, item 6): at most 300 MB against a hostile server at ``-c 64``, at most 150 MB
for a normal run. Each scenario is one emulator process, in a hostile mode or healthy, and one
client process, ``python -m asyncdl fetch IDS -c C -q --retries 1`` with a fresh output folder and
cache. The client's peak RSS is its ``VmHWM``, sampled from /proc every 20 ms while it runs (its
``ru_maxrss`` would start at this runner's own peak). Writes hostile.json and hostile.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import machine, procstat
from .server import ANNOTATION, GRID, STRUCTURE_GRAPH, EmulatorProcess
from .settings import BULK_IDS, RESULTS_DIR

IDS = BULK_IDS[:3]
#: A run that takes longer is stopped and reported as such.
TIMEOUT_S = 600.0
SAMPLE_S = 0.02


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str
    #: ``asyncdl emulate`` options that make the server so.
    emulate: tuple[str, ...]
    concurrency: int
    #: The client's ``--density-range`` (None: the default), to keep hostile runs short.
    density_range: tuple[float, float] | None
    goal_mb: float


SCENARIOS = (
    Scenario("normal", "healthy", (), 64, None, 150),
    Scenario(
        "huge answers",
        "every spatial search answers 200 MB, chunked, without Content-Length",
        ("--huge-answers", "200000000"),
        64,
        (0.1, 0.12),
        300,
    ),
    Scenario(
        "huge answers, -c 256",
        "the same, four times as many requests in flight",
        ("--huge-answers", "200000000"),
        256,
        (0.1, 0.12),
        300,
    ),
    Scenario(
        "1 GiB headers",
        "density and injection NRRD headers declare 1024x1024x128 doubles (1 GiB), data to match",
        ("--wrong-grid", "1024", "1024", "128", "--fault-routes", "grid_nrrd"),
        64,
        None,
        300,
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    env = machine.child_env()
    with tempfile.TemporaryDirectory(prefix="asyncdl-hostile-") as tmp:
        work = Path(tmp)
        info = machine.describe(env, work)
        runs = [measure(scenario, work, env) for scenario in SCENARIOS]
    results = {"machine": info, "data_sets": list(IDS), "runs": runs}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "hostile.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "hostile.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if all(run["met"] for run in runs) else 1


def measure(scenario: Scenario, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """One scenario: its emulator, warmed up, and one client run against it."""
    slug = scenario.name.replace(" ", "_").replace(",", "")
    log = work / f"{slug}.emulator.log"
    with EmulatorProcess(*scenario.emulate, log=log, env=env) as server:
        _say(f"{scenario.name}: emulator at {server.base_url}; warming up")
        warm_up(server)
        out = work / slug
        argv = [sys.executable, "-m", "asyncdl", "fetch", *map(str, IDS), "-o", str(out), "-q"]
        argv += ["-c", str(scenario.concurrency), "--retries", "1"]
        argv += ["--cache-dir", str(work / f"{slug}.cache")]  # fresh, never the user's
        argv += ["--base-url", server.base_url, "--archive-url", server.base_url]
        if scenario.density_range is not None:
            argv += ["--density-range", *map(str, scenario.density_range)]
        peak_mb, wall_s, status = run_sampled(argv, env, work)
    data_sets = [_summary(out / str(data_set)) for data_set in IDS]
    met = peak_mb <= scenario.goal_mb and status in (0, 1)
    _say(f"{scenario.name}: peak RSS {peak_mb:.0f} MB, {wall_s:.1f} s, exit {status}")
    return {
        **asdict(scenario),
        "peak_rss_mb": round(peak_mb, 1),
        "wall_s": round(wall_s, 2),
        "exit": status,
        "met": met,
        "data_set_results": data_sets,
    }


def warm_up(server: EmulatorProcess) -> None:
    """Have the server build its files before the timed run (the 1 GiB one takes seconds)."""
    server.get(ANNOTATION)
    server.get(STRUCTURE_GRAPH)
    for data_set in IDS:
        for image in ("projection_density", "injection_fraction"):
            server.get(GRID.format(id=data_set, image=image))


def run_sampled(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """Run ``argv`` in ``cwd`` (where it imports the asyncdl of ``env``'s PYTHONPATH, not the one
    of this folder) to its end: the largest VmHWM of its process tree in MB, its wall time, its
    exit status (-9 if it had to be killed after ``TIMEOUT_S``)."""
    started = time.monotonic()
    with (cwd / "client.log").open("ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    peak = 0.0
    while proc.poll() is None:
        peak = max([peak, *(sample.peak_rss_mb for sample in procstat.tree(proc.pid))])
        if time.monotonic() - started > TIMEOUT_S:
            proc.kill()
        time.sleep(SAMPLE_S)
    return peak, time.monotonic() - started, proc.wait()


def _summary(directory: Path) -> dict[str, Any]:
    try:
        summary: dict[str, Any] = json.loads((directory / "summary.json").read_text())
    except (OSError, ValueError):
        return {"data_set": directory.name, "status": "no summary"}
    keys = ("data_set", "status", "targets", "lines", "failures", "error")
    result = {key: summary.get(key) for key in keys}
    failures = directory / "failures.ndjson"
    if failures.exists():
        lines = failures.read_text().splitlines()
        result["first_failure"] = json.loads(lines[0])["error"] if lines else None
    return result


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    rows = [
        "| scenario | server | -c | client peak RSS | goal | wall | exit | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        goal = f"≤ {run['goal_mb']:.0f} MB: {'met' if run['met'] else '**missed**'}"
        rows.append(
            f"| {run['name']} | {run['server']} | {run['concurrency']} | "
            f"{run['peak_rss_mb']:.0f} MB | {goal} | {run['wall_s']:.1f} s | {run['exit']} | "
            f"{_outcome(run['data_set_results'])} |"
        )
    load = ", ".join(f"{x:g}" for x in info["load_average_at_start"])
    return (
        "# Hostile servers: peak memory\n\n"
        "Written by `python -m benchmarks.hostile` (how: [README](README.md#hostile-servers)); "
        "a new run replaces it.\n\n"
        f"Run {info['date']}, commit {info['commit']}"
        f"{' (modified)' if info['asyncdl_modified'] else ''}, {info['cpu']} ({info['nproc']} "
        f"cores), Python {info['python']}, aiohttp {info['versions']['aiohttp']}; load average "
        f"at the start {load}. Data sets {', '.join(map(str, results['data_sets']))}, "
        "`--retries 1`, fresh cache.\n\n" + "\n".join(rows) + "\n"
    )


def _outcome(data_sets: list[dict[str, Any]]) -> str:
    """What became of the data sets, in a few words."""
    complete = sum(d.get("status") == "ok" for d in data_sets)
    failed = [d for d in data_sets if d.get("status") == "failed"]
    targets = sum(d.get("targets") or 0 for d in data_sets)
    lost = sum(d.get("failures") or 0 for d in data_sets)
    parts = [f"{complete} of {len(data_sets)} complete"]
    if lost:
        first = next(d["first_failure"] for d in data_sets if d.get("first_failure"))
        parts.append(f"{lost} of {targets} targets failed ({_short(first)})")
    if failed:
        parts.append(f"{len(failed)} failed ({_short(failed[0].get('error') or '')})")
    return "; ".join(parts)


def _short(error: str) -> str:
    """An error without its URL, which names the emulator's port."""
    return error.split(" (http")[0].replace("|", "/")[:140]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
