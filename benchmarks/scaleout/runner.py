"""``python -m benchmarks.scaleout``: start the clusters and the emulator, run the rounds, write
results.json and print the medians.

The clusters are started once and run through every round, as a lab's cluster does: a
scheduler on core 0 (with the asyncdl client), and worker processes of two threads each on
uvloop, on core 0 too; in the machines part each worker is in a cgroup of ``--quota`` of a core
(cgroup v1 ``cpu``, named after this benchmark and removed after it), and the emulator has core
1 to itself. Every run is ``asyncdl fetch IDS --scheduler ADDRESS -c C --log-format json`` with
a fresh output folder and cache, so each worker reads its data sets' volumes as a first run does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import cgroups, machine
from ..capacity.analysis import Poll
from ..capacity.runner import poll as capacity_poll
from ..capacity.settings import Server
from ..procstat import cpu_seconds
from ..server import EmulatorProcess
from . import analysis
from .analysis import Run, Task

#: Twelve data sets the emulator knows (its hand-picked ten, then two of its catalogue): 23,802
#: target requests at the default density range.
DATA_SETS = (
    156394513, 100141219, 112514202, 126862385, 127866392, 139520203,
    180436360, 183174303, 272697944, 307297141, 100051575, 100083392,
)  # fmt: skip
#: In the machines part, the client, the Dask schedulers and the workers run on the first core,
#: the emulator on the second; in the server part, wherever the kernel puts them.
CLIENT_CPU, SERVER_CPU = 0, 1
POLL_S = 0.1
RESULTS = Path(__file__).resolve().parent / "results.json"
MACHINES, SERVER = "machines", "server"


@dataclass(frozen=True)
class Settings:
    parts: tuple[str, ...] = (MACHINES, SERVER)
    rounds: int = 3
    latency_ms: float = 50.0
    data_sets: tuple[int, ...] = DATA_SETS
    #: Machines: each worker's share of a core, the workers of each cluster, the -c compared.
    quota: float = 0.2
    workers: tuple[int, ...] = (1, 2, 3)
    concurrencies: tuple[str, ...] = ("512", "auto")
    #: Server: its handlers (K) and the workers of each cluster (-c auto, the default).
    server: Server = field(default_factory=lambda: Server(64))
    server_workers: tuple[int, ...] = (2, 3)
    #: The server part's steady figures leave out this much of its target phase (seconds).
    settle_s: float = 2.0
    timeout_s: float = 900.0


def main(argv: Sequence[str] | None = None) -> int:
    settings, out = _parse(argv)
    if MACHINES in settings.parts and (why := cgroups.available()) is not None:
        print(f"benchmarks.scaleout: {why}", file=sys.stderr)
        return 2
    env = _env()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="asyncdl-scaleout-") as tmp:
        work = Path(tmp)
        info = machine.describe(env, work)
        for part in settings.parts:
            runs += _part(part, settings, work, env)
    info["load_average_at_end"] = machine.load_average()
    summary = summarize(runs, settings)
    doc = {
        "machine": info,
        "settings": asdict(settings),
        "summary": summary,
        "runs": [_as_dict(r, settings) for r in runs],
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(markdown(summary))
    return 0 if all(r.exit_code == 0 for r in runs) else 1


def _part(part: str, settings: Settings, work: Path, env: dict[str, str]) -> list[Run]:
    """Every setup of ``part``, in interleaved rounds."""
    if part == MACHINES:
        setups = [(n, c) for n in settings.workers for c in settings.concurrencies]
        options: list[object] = []
        quota: float | None = settings.quota
    else:
        setups = [(n, "auto") for n in settings.server_workers]
        options = ["--capacity", settings.server.handlers]
        if settings.server.shed_queue is not None:
            options += ["--shed-queue", settings.server.shed_queue]
        quota = None
    runs = []
    with _machines(part, settings, options, quota, work, env) as (emu, clusters):
        for rnd in range(1, settings.rounds + 1):
            for n, c in setups:
                folder = work / f"{part}-r{rnd}-{n}x{c}"
                folder.mkdir()
                run = run_once(part, clusters[n], emu, settings, c, rnd, folder, env)
                runs.append(run)
                _say(f"{part}, round {rnd}: {run.setup}: {_brief(run, settings)}")
    return runs


@contextmanager
def _machines(
    part: str,
    settings: Settings,
    options: list[object],
    quota: float | None,
    work: Path,
    env: dict[str, str],
) -> Iterator[tuple[EmulatorProcess, dict[int, Cluster]]]:
    sizes = settings.workers if part == MACHINES else settings.server_workers
    with ExitStack() as stack:
        emu = stack.enter_context(
            EmulatorProcess(
                *("--latency-ms", settings.latency_ms, "--latency-spread", 0, *options),
                log=work / f"emulator-{part}.log",
                env=env,
            )
        )
        if quota is not None:
            cgroups.pin(emu.pid, [SERVER_CPU])
        _say(f"{part}: emulator at {emu.base_url} {' '.join(map(str, options))}; warming up")
        emu.warm_up(settings.data_sets)
        clusters = {
            n: stack.enter_context(Cluster(f"{part}{n}", n, quota, work, env)) for n in sizes
        }
        each = f", {quota} core each" if quota is not None else ""
        _say(f"{part}: clusters of {', '.join(map(str, clusters))} workers up{each}")
        yield emu, clusters


class Cluster:
    """A running Dask cluster: its scheduler, and ``workers`` worker processes (two threads each,
    uvloop); with a ``quota``, each worker in a cgroup of that much of a core, and all of them on
    the client's core."""

    def __init__(
        self, name: str, workers: int, quota: float | None, work: Path, env: dict[str, str]
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
        self._spawn(self.pinned(argv), f"{self.name}-scheduler")
        deadline = time.monotonic() + 120
        while not self.address:
            try:
                self.address = json.loads(file.read_text())["address"]
            except (OSError, ValueError, KeyError):  # not written yet, or not whole
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the Dask scheduler did not start; see {self.work}"
                    ) from None
                time.sleep(0.1)
        for i in range(self.size):
            argv = [sys.executable, "-m", "distributed.cli.dask_worker", self.address]
            argv += ["--nthreads", "2", "--no-nanny", "--no-dashboard", "--name", f"w{i}"]
            argv = self.pinned(argv)
            if self.quota is not None:
                name = f"asyncdl-cluster-bench-{os.getpid()}-{self.name}-w{i}"
                quota = self._stack.enter_context(cgroups.CpuQuota(name, self.quota))
                self.quotas.append(quota)
                argv = quota.command(argv)
            self.pids.append(self._spawn(argv, f"{self.name}-w{i}"))
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

    def pinned(self, argv: list[str]) -> list[str]:
        """``argv`` on the client's core, if this cluster's workers are small machines."""
        return argv if self.quota is None else cgroups.pinned([CLIENT_CPU], argv)

    def cpu(self) -> list[float]:
        """Each worker's CPU seconds so far."""
        return [cpu_seconds(pid) for pid in self.pids]

    def throttled(self) -> list[float]:
        return [q.throttled_s() for q in self.quotas]

    def tasks(self, epoch: float) -> list[Task]:
        """The asyncdl tasks computed since ``epoch`` (time.time()), in seconds from it."""
        out = []
        for record in self.client.get_task_stream(start=epoch):
            key = str(record["key"])
            if not key.startswith("asyncdl-"):
                continue
            for s in record["startstops"]:
                if s["action"] == "compute":
                    data_set = int(key.rsplit("-", 1)[1])
                    out.append(
                        Task(record["worker"], data_set, s["start"] - epoch, s["stop"] - epoch)
                    )
        return out


def run_once(
    part: str,
    cluster: Cluster,
    emu: EmulatorProcess,
    settings: Settings,
    concurrency: str,
    rnd: int,
    folder: Path,
    env: dict[str, str],
) -> Run:
    argv = [sys.executable, "-m", "asyncdl", "fetch", *map(str, settings.data_sets)]
    argv += ["-o", str(folder / "out"), "--cache-dir", str(folder / "cache")]
    argv += ["--scheduler", cluster.address, "-c", concurrency, "--log-format", "json"]
    argv += ["--base-url", emu.base_url, "--archive-url", emu.base_url]
    cpu0, throttled0 = cluster.cpu(), cluster.throttled()
    answered0 = emu.target_requests()
    answered: list[tuple[float, int]] = []
    polls: list[Poll] = []
    log = folder / "events.ndjson"
    with log.open("wb") as events:
        epoch, started = time.time(), time.monotonic()
        proc = subprocess.Popen(
            cluster.pinned(argv),
            stdout=subprocess.DEVNULL,
            stderr=events,
            env=env,
        )
        while True:
            now = time.monotonic() - started
            if part == SERVER:
                polls.append(capacity_poll(emu, started))
                answered.append((now, polls[-1].answered - answered0))
            else:
                answered.append((now, emu.target_requests() - answered0))
            if proc.poll() is not None:
                break
            if now > settings.timeout_s:
                proc.kill()
            time.sleep(POLL_S)
        wall = time.monotonic() - started
    run = Run(
        part=part,
        workers=cluster.size,
        concurrency=concurrency,
        round=rnd,
        exit_code=proc.returncode,
        wall_s=wall,
        answered=answered,
        tasks=cluster.tasks(epoch),
        requests={},
        server=settings.server if part == SERVER else None,
        polls=polls,
        worker_cpu_s=[b - a for a, b in zip(cpu0, cluster.cpu(), strict=True)],
        throttled_s=[b - a for a, b in zip(throttled0, cluster.throttled(), strict=True)],
    )
    _read_events(log, epoch, run)
    return run


def _read_events(log: Path, epoch: float, run: Run) -> None:
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        at, kind = event["time"] - epoch, event["event"]
        if kind == "shares":
            run.shares.append((at, {str(w): int(n) for w, n in event["shares"].items()}))
        elif kind == "limit":
            run.limits.append((at, int(event["limit"])))
        elif kind == "retry":
            run.retries.append(at)
        elif kind == "data_set_done":
            run.requests[int(event["data_set"])] = int(event["requests"])


# -- results --------------------------------------------------------------------------------------


def figures(run: Run, settings: Settings) -> dict[str, Any]:
    if run.part == MACHINES:
        return analysis.machines_figures(run)
    return analysis.server_figures(run, settings.latency_ms, settings.settle_s)


def summarize(runs: Sequence[Run], settings: Settings) -> dict[str, Any]:
    """Medians per setup over the rounds that ended well, and the goals."""
    summary: dict[str, Any] = {}
    for part in settings.parts:
        by_setup: dict[str, list[dict[str, Any]]] = {}
        for run in runs:
            if run.part == part and run.exit_code == 0:
                by_setup.setdefault(run.setup, []).append(figures(run, settings))
        medians = {setup: analysis.medians(rows) for setup, rows in by_setup.items()}
        goals = (analysis.machines_goals if part == MACHINES else analysis.server_goals)(medians)
        summary[part] = {"medians": medians, "goals": goals}
    return summary


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    for part, found in summary.items():
        rows = found["medians"]
        if not rows:
            continue
        keys = [k for k in next(iter(rows.values())) if k != "runs"]
        lines += [f"## {part}", "", "| setup | " + " | ".join(keys) + " | runs |"]
        lines.append("|---" * (len(keys) + 2) + "|")
        for setup, row in rows.items():
            cells = [_cell(row[k]) for k in keys]
            lines.append(f"| {setup} | " + " | ".join(cells) + f" | {row['runs']} |")
        lines += [
            "",
            *(f"- {g}: {v} ({'yes' if ok else 'NO'})" for g, (v, ok) in found["goals"].items()),
        ]
        lines.append("")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _brief(run: Run, settings: Settings) -> str:
    f = figures(run, settings)
    shown = ", ".join(f"{k} {_cell(v)}" for k, v in f.items())
    return f"{shown}; wall {run.wall_s:.1f} s, exit {run.exit_code}, load {os.getloadavg()[0]:.2f}"


def _as_dict(run: Run, settings: Settings) -> dict[str, Any]:
    doc = asdict(run)
    doc.pop("polls")  # the figures hold what they say
    doc["answered"] = [(round(t, 2), n) for t, n in run.answered]
    doc["figures"] = figures(run, settings)
    return doc


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [p for p in [env.get("PYTHONPATH", ""), str(machine.REPO)] if p]
    )
    return env


def _parse(argv: Sequence[str] | None) -> tuple[Settings, Path]:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaleout",
        description="asyncdl on running Dask clusters of 1-3 workers: small machines against a "
        "big server, and workers sharing a server of K handlers.",
    )
    parser.add_argument("--parts", nargs="+", choices=(MACHINES, SERVER), default=defaults.parts)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--quota", type=float, default=defaults.quota, help="cores per worker")
    parser.add_argument("--workers", type=int, nargs="+", default=defaults.workers)
    parser.add_argument("-c", nargs="+", default=defaults.concurrencies, dest="concurrencies")
    parser.add_argument("--capacity", type=int, default=defaults.server.handlers)
    parser.add_argument("--shed-queue", type=int)
    parser.add_argument("--server-workers", type=int, nargs="+", default=defaults.server_workers)
    parser.add_argument(
        "--data-sets",
        type=int,
        default=len(DATA_SETS),
        help="how many: fewer than the twelve for a smoke run, more (from the emulator's "
        "catalogue) for a long one",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    settings = Settings(
        parts=tuple(args.parts),
        rounds=args.rounds,
        data_sets=data_sets(args.data_sets),
        quota=args.quota,
        workers=tuple(args.workers),
        concurrencies=tuple(args.concurrencies),
        server=Server(args.capacity, args.shed_queue),
        server_workers=tuple(args.server_workers),
    )
    return settings, args.out


def data_sets(count: int) -> tuple[int, ...]:
    """The first ``count`` of the twelve, then of the rest of the emulator's catalogue."""
    from asyncdl.emulator import CATALOGUE_IDS

    rest = [i for i in CATALOGUE_IDS if i not in DATA_SETS]
    return (*DATA_SETS, *rest)[:count]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
