"""``python -m benchmarks``: runs the plan against one emulator process, then writes the results.

The runner keeps its own memory small on purpose: on Linux a child's peak RSS (``ru_maxrss``) starts
at its parent's high-water mark, so anything big (parsing outputs, matplotlib) happens in another
process or after the last contender has run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from . import analysis, machine, report
from .contenders import CONTENDERS, Spec
from .measure import run_measured
from .server import EmulatorProcess
from .settings import Settings, parse_args
from .trials import DRY_RUN, FETCH, NOTHING_TO_DO, Run, Trial, plan
from .warm_cluster import WarmCluster


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    env = child_env()
    trials = plan(settings)
    with tempfile.TemporaryDirectory(prefix="asyncdl-bench-") as tmp:
        work = Path(tmp)
        info = machine.describe(env, work)
        latency = ("--latency-ms", settings.latency_ms, "--latency-spread", 0)  # fixed
        with (
            EmulatorProcess(*latency, log=work / "emulator.log", env=env) as server,
            ExitStack() as stack,
        ):
            _say(f"emulator at {server.base_url}, latency {settings.latency_ms:g} ms; warming up")
            server.warm_up(sorted({d for t in trials for d in t.data_sets}))
            cluster = None
            if any(CONTENDERS[t.contender].on_warm_cluster for t in trials):
                cluster = stack.enter_context(WarmCluster(work / "cluster.log", env))
                _say(f"a running Dask cluster of 2 workers at {cluster.address}")
            runs = execute(trials, server, settings, work, env, cluster)
    results = analysis.analyse(settings, runs)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    report.write(settings, info, results, settings.out_dir)
    from . import plot  # matplotlib only now that no contender is left to spawn (see above)

    plot.write(settings, results, settings.out_dir / "throughput.png")
    print(report.markdown(settings, info, results))
    return 0 if all(row.ok for row in results.rows) else 1


def execute(
    trials: list[Trial],
    server: EmulatorProcess,
    settings: Settings,
    work: Path,
    env: dict[str, str],
    cluster: WarmCluster | None = None,
) -> list[Run]:
    """Every trial ``repeats`` times, repeats interleaved so that slow drift spreads over all."""
    order = [t for r in range(max(t.repeats for t in trials)) for t in trials if r < t.repeats]
    runs = []
    for n, trial in enumerate(order, 1):
        folder = work / f"run{n}"
        folder.mkdir()
        run = _run(trial, server, settings, folder, env, cluster)
        runs.append(run)
        _say(f"[{n}/{len(order)}] {_describe(run)}")
        if run.measurement.exit_code != 0:
            _say((folder / "output.log").read_text(errors="replace")[-2000:])
        shutil.rmtree(folder)
    return runs


def _run(
    trial: Trial,
    server: EmulatorProcess,
    settings: Settings,
    folder: Path,
    env: dict[str, str],
    cluster: WarmCluster | None,
) -> Run:
    contender = CONTENDERS[trial.contender]
    warm = cluster if contender.on_warm_cluster else None
    spec = Spec(
        server.base_url,
        trial.data_sets,
        out=folder / "out",
        cache=folder / "cache",
        concurrency=trial.concurrency,
        sample=trial.sample,
        dry_run=trial.kind == DRY_RUN,
        scheduler=warm.address if warm is not None else None,
    )
    argv = contender.command(spec)
    env = _hiding(contender.hides, env, folder)
    if trial.kind == NOTHING_TO_DO:  # the job done first, unmeasured
        with (folder / "first.log").open("wb") as log:
            subprocess.run(argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    measurement = run_measured(
        argv,
        cwd=folder,
        env=env,
        server=server,
        latency_s=settings.latency_ms / 1000,
        timeout_s=settings.timeout_s,
        helpers=warm.pid if warm is not None else None,
    )
    if trial.sample or trial.kind != FETCH:  # no data.json worth comparing
        return Run(trial, measurement, {})
    digests = _digests([spec.out / str(d) / "data.json" for d in trial.data_sets], env)
    return Run(trial, measurement, dict(zip(trial.data_sets, digests, strict=True)))


def _hiding(modules: tuple[str, ...], env: dict[str, str], folder: Path) -> dict[str, str]:
    """``env`` with a folder first on PYTHONPATH in which importing any of ``modules`` raises
    ImportError, as if it were not installed (Dask's worker processes inherit it)."""
    if not modules:
        return env
    shim = folder / "hidden"
    for module in modules:
        (shim / module).mkdir(parents=True)
        (shim / module / "__init__.py").write_text(f"raise ImportError('{module} is hidden')\n")
    return {**env, "PYTHONPATH": os.pathsep.join([str(shim), env.get("PYTHONPATH", "")])}


def _digests(paths: list[Path], env: dict[str, str]) -> list[str]:
    """Content digests of data.json files, computed in a child process (see the module doc)."""
    argv = [sys.executable, "-m", "benchmarks.digest", *map(str, paths)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()


def _describe(run: Run) -> str:
    t, m = run.trial, run.measurement
    first = "-" if m.first_target_s is None else f"{m.first_target_s:.2f} s"
    return (
        f"{t.contender} {t.job} C={t.concurrency}"
        + (f" sample={t.sample}" if t.sample else "")
        + (f" ({t.kind})" if t.kind != FETCH else "")
        + f": {m.wall_s:.2f} s, {m.requests} target requests, first at {first}, "
        f"CPU {m.cpu_s:.2f} s, peak RSS {m.peak_rss_mb:.0f} MB ({len(m.processes)} processes), "
        f"exit {m.exit_code}"
    )


def child_env() -> dict[str, str]:
    """The environment of every child: this one, with the repository importable (for contenders)."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(machine.REPO)])
    return env


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
