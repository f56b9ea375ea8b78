"""``python -m benchmarks.scaleout``: Dask workers on simulated small machines.

How a run's rate grows with its workers when each worker is a small machine and the server is
big: each Dask worker runs in a cgroup of its own with ``--quota`` of a core (0.2), all on core 0
beside the Dask scheduler and the asyncdl client, while the emulator has core 1 to itself. The
workers' CPU, not the server's, is then what limits, as with many machines against one server.

Three running clusters, of 1, 2 and 3 workers, are started once; then each configuration
(workers, ``-c``) runs the same data sets with ``asyncdl fetch --scheduler``, a fresh output
folder and cache each time, in ``--rounds`` interleaved rounds: a throttled worker's one-second
rate swings widely, so no single run is a measurement. Per run:

- **steady rate**: the mean of the one-second counts of target requests answered by the server,
  over the middle 80 % of the span from the first answer to the last (the start, when the
  workers read their first volumes, and the end, when they run out of work, are left out);
- **the tail**, from Dask's task stream: how long the first worker to run out of data sets
  waited for the last one, and what the workers' idle time at the end cost: their idle seconds
  over N times the span (0 when all finish together);
- each worker's CPU, and how long its cgroup held it back; the limits the run reported.

Every run goes to ``--out`` (``benchmarks/scaleout.json``), the medians to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import cgroups, machine
from .procstat import cpu_seconds
from .server import EmulatorProcess

#: Twelve data sets the emulator knows (the hand-picked ten, then two of its catalogue).
DATA_SETS = (
    156394513, 100141219, 112514202, 126862385, 127866392, 139520203,
    180436360, 183174303, 272697944, 307297141, 100051575, 100083392,
)  # fmt: skip
#: The client, the Dask scheduler and the workers run on the first; the emulator on the second.
CLIENT_CPU, SERVER_CPU = 0, 1
POLL_S = 0.1
#: The share of a run's span whose one-second counts make its steady rate.
MIDDLE = 0.8
OUT = Path(__file__).resolve().parent / "scaleout.json"


@dataclass(frozen=True)
class Settings:
    latency_ms: float = 50.0
    quota: float = 0.2
    workers: tuple[int, ...] = (1, 2, 3)
    concurrencies: tuple[str, ...] = ("512", "auto")
    rounds: int = 3
    data_sets: tuple[int, ...] = DATA_SETS
    #: More options of ``asyncdl emulate`` (e.g. ``--capacity 64``).
    emulator_args: tuple[str, ...] = ()
    timeout_s: float = 900.0


# -- what a run's figures mean (pure) -------------------------------------------------------------


def steady_rate(samples: Sequence[tuple[float, int]], middle: float = MIDDLE) -> list[float]:
    """The one-second counts over the ``middle`` of a run's span, from ``(time, answered so
    far)`` samples: the span runs from the last sample before the first answer to the first
    sample with every answer in. Their mean is the steady rate."""
    base, final = samples[0][1], samples[-1][1]
    if final == base:
        return []
    start = max(t for t, n in samples if n == base)
    end = min(t for t, n in samples if n == final)
    trim = (1 - middle) / 2 * (end - start)
    lo, hi = start + trim, end - trim
    seconds = math.floor(hi - lo)
    if seconds < 1:
        return [(_answered(samples, hi) - _answered(samples, lo)) / (hi - lo)]
    edges = [_answered(samples, lo + k) for k in range(seconds + 1)]
    return [b - a for a, b in itertools.pairwise(edges)]


def _answered(samples: Sequence[tuple[float, int]], at: float) -> float:
    """Answers by ``at``, interpolated between the samples around it."""
    for (t0, n0), (t1, n1) in itertools.pairwise(samples):
        if t0 <= at <= t1:
            return n0 + (n1 - n0) * (at - t0) / (t1 - t0) if t1 > t0 else n1
    return samples[-1][1] if at > samples[-1][0] else samples[0][1]


@dataclass(frozen=True)
class Tail:
    """The end of a run on several workers: from the first worker out of data sets to the last
    data set done (``seconds``), and the workers' idle time in it over N times the whole span
    (``lost``: what it cost, 0 when all finish together)."""

    seconds: float
    lost: float
    span: float


def tail(tasks: Sequence[tuple[str, float, float]]) -> Tail:
    """From each task's (worker, start, stop)."""
    start, end = min(t[1] for t in tasks), max(t[2] for t in tasks)
    last: dict[str, float] = {}
    for worker, _, stop in tasks:
        last[worker] = max(last.get(worker, stop), stop)
    span = end - start
    idle = sum(end - t for t in last.values())
    return Tail(end - min(last.values()), idle / (len(last) * span) if span > 0 else 0.0, span)


def jain(xs: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one has everything."""
    total, squares = sum(xs), sum(x * x for x in xs)
    return total * total / (len(xs) * squares) if squares > 0 else 1.0


# -- the machines ---------------------------------------------------------------------------------


class Cluster:
    """A running Dask cluster: its scheduler on the client's core, and ``workers`` worker
    processes (two threads each, uvloop), each in a cgroup of ``quota`` of a core."""

    def __init__(
        self, name: str, workers: int, quota: float, work: Path, env: dict[str, str]
    ) -> None:
        self.name, self.size, self.quota = name, workers, quota
        self.work, self.env = work, {**env, "DASK_DISTRIBUTED__ADMIN__EVENT_LOOP": "uvloop"}
        self.address = ""
        self.quotas: list[cgroups.CpuQuota] = []
        self.pids: list[int] = []
        self._stack = ExitStack()
        self.client: Any = None  # a distributed.Client, for the task stream

    def __enter__(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        import distributed

        file = self.work / f"{self.name}.json"
        argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
        argv += ["--port", "0", "--no-dashboard", "--scheduler-file", str(file)]
        self._spawn(cgroups.pinned([CLIENT_CPU], argv), f"{self.name}-scheduler")
        deadline = time.monotonic() + 120
        while not file.exists() or not file.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Dask scheduler did not start; see {self.work}")
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written whole (json.dump) but not atomically
        self.address = json.loads(file.read_text())["address"]
        for i in range(self.size):
            quota = self._stack.enter_context(
                cgroups.CpuQuota(
                    f"asyncdl-cluster-bench-{os.getpid()}-{self.name}-w{i}", self.quota
                )
            )
            argv = [sys.executable, "-m", "distributed.cli.dask_worker", self.address]
            argv += ["--nthreads", "2", "--no-nanny", "--no-dashboard", "--name", f"w{i}"]
            self.pids.append(
                self._spawn(quota.command(cgroups.pinned([CLIENT_CPU], argv)), f"{self.name}-w{i}")
            )
            self.quotas.append(quota)
        self.client = distributed.Client(self.address, timeout="60s")
        self._stack.callback(self.client.close)
        self.client.wait_for_workers(self.size, timeout=300)
        self.client.get_task_stream()  # the scheduler records the task stream from now on

    def _spawn(self, argv: list[str], log: str) -> int:
        with (self.work / f"{log}.log").open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        self._stack.callback(stop)
        return proc.pid

    def cpu(self) -> list[float]:
        """Each worker's CPU seconds so far."""
        return [cpu_seconds(pid) for pid in self.pids]

    def throttled(self) -> list[float]:
        return [q.throttled_s() for q in self.quotas]

    def tasks(self, since: float) -> list[tuple[str, float, float]]:
        """(worker, start, stop) of each asyncdl task computed since ``since`` (time.time())."""
        out = []
        for record in self.client.get_task_stream(start=since):
            if not str(record["key"]).startswith("asyncdl-"):
                continue
            for s in record["startstops"]:
                if s["action"] == "compute":
                    out.append((record["worker"], s["start"], s["stop"]))
        return out


# -- the runs -------------------------------------------------------------------------------------


@dataclass
class Run:
    workers: int
    concurrency: str
    round: int
    exit_code: int
    wall_s: float
    answered: int
    per_second: list[float]
    steady: float
    tail_s: float
    tail_lost: float
    span_s: float
    worker_cpu_s: list[float]
    throttled_s: list[float]
    #: The limits the run reported (``limit`` events of its JSON log), in order.
    limits: list[int] = field(default_factory=list)


def run_once(
    cluster: Cluster,
    server: EmulatorProcess,
    settings: Settings,
    concurrency: str,
    rnd: int,
    folder: Path,
    env: dict[str, str],
) -> Run:
    argv = [sys.executable, "-m", "asyncdl", "fetch", *map(str, settings.data_sets)]
    argv += ["-o", str(folder / "out"), "--cache-dir", str(folder / "cache")]
    argv += ["--scheduler", cluster.address, "-c", concurrency, "--log-format", "json"]
    argv += ["--base-url", server.base_url, "--archive-url", server.base_url]
    cpu0, throttled0 = cluster.cpu(), cluster.throttled()
    since = time.time()
    answered0 = server.target_requests()
    samples = [(time.monotonic(), 0)]
    with (folder / "fetch.log").open("wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            cgroups.pinned([CLIENT_CPU], argv), stdout=log, stderr=subprocess.STDOUT, env=env
        )
        while proc.poll() is None:
            if time.monotonic() - started > settings.timeout_s:
                proc.kill()
            time.sleep(POLL_S)
            samples.append((time.monotonic(), server.target_requests() - answered0))
        wall = time.monotonic() - started
    counts = steady_rate(samples)
    tasks = cluster.tasks(since)
    t = tail(tasks) if tasks else Tail(0.0, 0.0, 0.0)
    return Run(
        workers=cluster.size,
        concurrency=concurrency,
        round=rnd,
        exit_code=proc.returncode,
        wall_s=round(wall, 3),
        answered=samples[-1][1],
        per_second=[round(c, 1) for c in counts],
        steady=round(statistics.fmean(counts), 1) if counts else 0.0,
        tail_s=round(t.seconds, 3),
        tail_lost=round(t.lost, 4),
        span_s=round(t.span, 3),
        worker_cpu_s=[round(b - a, 2) for a, b in zip(cpu0, cluster.cpu(), strict=True)],
        throttled_s=[round(b - a, 2) for a, b in zip(throttled0, cluster.throttled(), strict=True)],
        limits=_limits(folder / "fetch.log"),
    )


def _limits(log: Path) -> list[int]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "limit":
                out.append(int(event["limit"]))
    return out


def summarize(runs: Sequence[Run], settings: Settings) -> dict[str, Any]:
    """Medians per configuration, and the ratios the goals are about."""
    med: dict[str, dict[str, float]] = {}
    for c in settings.concurrencies:
        for n in settings.workers:
            mine = [r for r in runs if r.concurrency == c and r.workers == n and r.exit_code == 0]
            if not mine:
                continue
            med[f"{n}x{c}"] = {
                "steady": statistics.median(r.steady for r in mine),
                "wall_s": statistics.median(r.wall_s for r in mine),
                "tail_s": statistics.median(r.tail_s for r in mine),
                "tail_lost": statistics.median(r.tail_lost for r in mine),
                "runs": len(mine),
            }
    ratios = {}
    for c in settings.concurrencies:
        one = med.get(f"1x{c}", {}).get("steady")
        for n in settings.workers:
            if one and f"{n}x{c}" in med and n > 1:
                ratios[f"{n}x{c} / 1x{c}"] = round(med[f"{n}x{c}"]["steady"] / one, 2)
    if "1xauto" in med and "1x512" in med:
        ratios["1xauto / 1x512"] = round(med["1xauto"]["steady"] / med["1x512"]["steady"], 2)
    return {"medians": med, "ratios": ratios}


def table(summary: dict[str, Any]) -> str:
    rows = ["| workers x -c | steady req/s | wall (s) | tail (s) | tail cost | runs |"]
    rows.append("|---|---|---|---|---|---|")
    for key, m in summary["medians"].items():
        rows.append(
            f"| {key} | {m['steady']:.0f} | {m['wall_s']:.1f} | {m['tail_s']:.2f} | "
            f"{m['tail_lost']:.1%} | {m['runs']} |"
        )
    rows += ["", *(f"- {k}: {v:.2f}" for k, v in summary["ratios"].items())]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    settings, out = _parse(argv)
    if (why := cgroups.available()) is not None:
        print(f"benchmarks.scaleout: {why}", file=sys.stderr)
        return 2
    env = _env()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="asyncdl-scaleout-") as tmp:
        work = Path(tmp)
        info = machine.describe(env, work)
        with _machines(settings, work, env) as (server, clusters):
            order = [(n, c) for n in settings.workers for c in settings.concurrencies]
            for rnd in range(1, settings.rounds + 1):
                for n, c in order:
                    folder = work / f"r{rnd}-{n}x{c}"
                    folder.mkdir()
                    run = run_once(clusters[n], server, settings, c, rnd, folder, env)
                    runs.append(run)
                    _say(
                        f"round {rnd}: {n} x -c {c}: steady {run.steady:.0f}/s, "
                        f"wall {run.wall_s:.1f} s, tail {run.tail_s:.2f} s "
                        f"({run.tail_lost:.1%}), exit {run.exit_code}, load {os.getloadavg()[0]:.2f}"
                    )
    summary = summarize(runs, settings)
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "machine": info,
        "settings": asdict(settings),
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(summary))
    return 0 if all(r.exit_code == 0 for r in runs) else 1


@contextmanager
def _machines(
    settings: Settings, work: Path, env: dict[str, str]
) -> Iterator[tuple[EmulatorProcess, dict[int, Cluster]]]:
    with ExitStack() as stack:
        server = stack.enter_context(
            EmulatorProcess(
                *("--latency-ms", settings.latency_ms, "--latency-spread", 0),
                *settings.emulator_args,
                log=work / "emulator.log",
                env=env,
            )
        )
        cgroups.pin(server.pid, [SERVER_CPU])
        _say(f"emulator at {server.base_url}; warming up")
        server.warm_up(settings.data_sets)
        clusters = {
            n: stack.enter_context(Cluster(f"c{n}", n, settings.quota, work, env))
            for n in settings.workers
        }
        _say(f"clusters of {', '.join(map(str, clusters))} workers up, {settings.quota} core each")
        yield server, clusters


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [p for p in [env.get("PYTHONPATH", ""), str(machine.REPO)] if p]
    )
    return env


def _parse(argv: Sequence[str] | None) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__)
    parser.add_argument("--rounds", type=int, default=Settings.rounds)
    parser.add_argument("--quota", type=float, default=Settings.quota, help="cores per worker")
    parser.add_argument("--workers", type=int, nargs="+", default=list(Settings.workers))
    parser.add_argument("-c", nargs="+", default=list(Settings.concurrencies), dest="conc")
    parser.add_argument("--latency-ms", type=float, default=Settings.latency_ms)
    parser.add_argument(
        "--data-sets", type=int, default=len(DATA_SETS), help="how many of the twelve (a smoke run)"
    )
    parser.add_argument("--emulator-args", nargs=argparse.REMAINDER, default=[])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    settings = Settings(
        latency_ms=args.latency_ms,
        quota=args.quota,
        workers=tuple(args.workers),
        concurrencies=tuple(args.conc),
        rounds=args.rounds,
        data_sets=DATA_SETS[: args.data_sets],
        emulator_args=tuple(args.emulator_args),
    )
    return settings, args.out


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
