"""``python -m benchmarks.capacity``: every contender against every server, repeats interleaved.

One emulator process per server, warmed up (it builds each data set's files and grid on first
use), and one volume cache per server, filled by an unmeasured ``--dry-run``: the runs measure
the target phase. Each run is ``asyncdl fetch`` in a process of its own with a fresh output
folder and the JSON log, stopped (SIGTERM, as a batch system would) ``seconds`` after it started;
meanwhile the server's counters are read every ``poll_s``. A run starts once the server has
answered everything the one before left in its queue.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from .. import machine
from ..server import EmulatorProcess
from . import analysis, report
from .analysis import Poll, Run
from .settings import AUTO, Server, Settings, parse_args


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    env = machine.child_env()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="asyncdl-capacity-") as tmp:
        work = Path(tmp)
        info = machine.describe(env, work)
        for server in settings.servers:
            runs += _server_runs(server, settings, work, env)
        info["load_average_at_end"] = machine.load_average()
    rows = analysis.rows(runs, settings)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    report.write(settings, info, runs, rows, settings.out_dir)
    from . import plot  # matplotlib only now that every run is over

    plot.write(settings, runs, rows, settings.out_dir / "capacity.png")
    print(report.markdown(settings, info, rows))
    return 0


def _server_runs(server: Server, settings: Settings, work: Path, env: dict[str, str]) -> list[Run]:
    log = work / f"emulator-{server.handlers}-{server.shed_queue}.log"
    shedding = ["--shed-queue", server.shed_queue] if server.shed_queue is not None else []
    with EmulatorProcess(
        *("--latency-ms", settings.latency_ms, "--latency-spread", settings.latency_spread),
        *("--capacity", server.handlers, *shedding),
        log=log,
        env=env,
    ) as emu:
        _say(f"{server.label}: emulator at {emu.base_url}; warming up")
        emu.warm_up(settings.data_sets)
        cache = work / f"cache-{server.handlers}-{server.shed_queue}"
        subprocess.run(
            [*_argv(settings, emu.base_url, work / "dry", cache, None), "--dry-run"],
            env=env,
            capture_output=True,
            check=True,
        )
        runs: list[Run] = []
        for repeat in range(settings.repeats):
            for contender in settings.contenders:
                folder = work / f"run-{len(runs)}"
                run = _run(server, contender, repeat, settings, emu, cache, folder, env)
                runs.append(run)
                f = analysis.figures(run, settings)
                _say(
                    f"{server.label}, -c {contender} #{repeat + 1}: {f.capacity_fraction:.2f} of K/L, "
                    f"wait {f.mean_wait_l:.2f} L (p99 {f.p99_wait_l:.2f}), {f.sheds} sheds, "
                    f"{f.retries} retries, converged {f.converged_s}, exit {run.exit_code}"
                )
                shutil.rmtree(folder, ignore_errors=True)
    return runs


def _argv(settings: Settings, url: str, out: Path, cache: Path, contender: str | None) -> list[str]:
    lo, hi = settings.density_range
    return [
        *(sys.executable, "-m", "asyncdl", "fetch", *map(str, settings.data_sets)),
        *("-o", str(out), "--cache-dir", str(cache), "--base-url", url, "--archive-url", url),
        *("--density-range", str(lo), str(hi), "--log-format", "json"),
        *([] if contender in (None, AUTO) else ["-c", str(contender)]),
    ]


def _drained(emu: EmulatorProcess, timeout: float = 120.0) -> None:
    """Until the server has nothing in service or queued (what a stopped run left behind)."""
    deadline = time.monotonic() + timeout
    while emu.stats()["in_flight"] > 1:  # this reading is one
        if time.monotonic() > deadline:
            raise RuntimeError("the emulator did not drain its queue")
        time.sleep(0.1)


def _run(
    server: Server,
    contender: str,
    repeat: int,
    settings: Settings,
    emu: EmulatorProcess,
    cache: Path,
    folder: Path,
    env: dict[str, str],
) -> Run:
    folder.mkdir()
    _drained(emu)
    argv = _argv(settings, emu.base_url, folder / "out", cache, contender)
    polls: list[Poll] = []
    with (folder / "events.ndjson").open("wb") as events:
        epoch, started = time.time(), time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=events)
        while True:
            polls.append(poll(emu, started))
            if proc.poll() is not None:
                polls.append(poll(emu, started))  # done: what its last requests did
                break
            if time.monotonic() - started >= settings.seconds:
                proc.terminate()  # the readings end here: its shutdown is no part of the run
                proc.wait(timeout=60)
                break
            time.sleep(max(0.0, settings.poll_s - (time.monotonic() - started - polls[-1].at)))
        wall = time.monotonic() - started
    retries, limits = [], []
    for line in (folder / "events.ndjson").read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # the line of a run stopped by SIGTERM
        if event.get("event") == "retry":
            retries.append(event["time"] - epoch)
        elif event.get("event") == "limit":
            limits.append((event["time"] - epoch, int(event["limit"])))
    return Run(server, contender, repeat, polls, retries, limits, proc.returncode, wall)


def poll(emu: EmulatorProcess, started: float) -> Poll:
    stats = emu.stats()
    queue = stats["queue"]
    return Poll(
        at=time.monotonic() - started,
        answered=int(stats["requests"].get("query", 0)),
        served=int(queue["served"]),
        wait_s=float(queue["wait_seconds"]),
        histogram=tuple(queue["histogram"]),
        sheds=int(queue["sheds"]),
        in_flight=int(stats["in_flight"]) - 1,  # this reading is one of them
        busy_s=float(queue["busy_seconds"]),
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
