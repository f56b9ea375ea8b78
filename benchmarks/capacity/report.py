"""results.json (settings, machine, medians, each run's figures and series) and results.md (the
tables, then an analysis written by hand, which a new run keeps, as benchmarks/report.py does)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..report import kept_analysis
from . import analysis
from .analysis import Row, Run
from .settings import Settings


def write(
    settings: Settings, info: dict[str, Any], runs: list[Run], rows: list[Row], out: Path
) -> None:
    doc = {
        "settings": {**asdict(settings), "out_dir": str(settings.out_dir)},
        "machine": info,
        "rows": [analysis.as_dict(row) for row in rows],
        "runs": [
            {
                "server": asdict(run.server),
                "contender": run.contender,
                "repeat": run.repeat,
                "exit_code": run.exit_code,
                "wall_s": run.wall_s,
                "figures": asdict(analysis.figures(run, settings)),
                "limits": run.limits,
                "series": {
                    name: [round(v, 3) for v in values]
                    for name, values in analysis.series(run, settings).items()
                },
            }
            for run in runs
        ],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    path = out / "results.md"
    earlier = path.read_text() if path.exists() else ""
    path.write_text(markdown(settings, info, rows) + kept_analysis(earlier, info["commit"]))


def markdown(settings: Settings, info: dict[str, Any], rows: list[Row]) -> str:
    lines = [
        "# Capacity benchmark",
        "",
        f"{info['date']}, {info['nproc']} cores ({info['cpu']}), Python {info['python']}, commit "
        f"{info['commit']}{' (modified)' if info['asyncdl_modified'] else ''}; load average "
        f"{info['load_average_at_start'][0]} at the start, "
        f"{info.get('load_average_at_end', ['?'])[0]} at the end. L = {settings.latency_ms:g} ms "
        f"(± {settings.latency_spread:.0%}), runs of {settings.seconds:g} s, medians of "
        f"{settings.repeats}; steady figures leave out the first {settings.settle_s:g} s of the "
        "target phase.",
        "",
        "| server | -c | throughput / (K/L) | whole run | mean wait (L) | p99 wait (L) | in flight "
        "| handlers in use | held (L) | sheds | retries | converged (s) | settled (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        f = row.figures
        lines.append(
            f"| {row.server.label} | {row.contender} | {f.capacity_fraction:.2f} "
            f"| {f.whole_fraction:.2f} | {f.mean_wait_l:.2f} | {f.p99_wait_l:.2f} "
            f"| {f.in_flight:.0f} | {f.handler_use:.2f} | {f.held_l:.2f} "
            f"| {f.sheds:.0f} ({f.shed_fraction:.1%}) | {f.retries:.0f} "
            f"| {_seconds(f.converged_s)} | {_seconds(f.settled_s)} |"
        )
    lines += ["", "Goals for -c auto, on every server, with no tuning:", ""]
    for row in rows:
        if analysis.is_auto(row):
            met = ", ".join(
                f"{goal} {'yes' if ok else 'NO'}" for goal, ok in analysis.goals(row).items()
            )
            lines.append(f"- {row.server.label}: {met}")
    lines += [
        "",
        "Throughput: spatial searches answered a second, over the steady part (whole run: from "
        "the first target request). Waits: in the server's queue, before a handler took the "
        "request. In flight: requests at the server (in service or queued), median over the "
        "steady part. Handlers in use: the share of the handlers' time in use over the steady "
        "part; held: how long a request held one (a server short of CPU holds them longer "
        "than L, and then falls short of K/L with every handler in use). Converged: from the "
        "first target request to when every later second (in quarter-second steps) served at "
        "least 0.9 K/L with a mean queue wait of at most 0.5 L (-: never for good); settled: "
        "the same against 0.9 of the run's own steady throughput, for when the machine rather "
        "than the server is the limit.",
        "",
        "![throughput, queue wait and requests at the server over time](capacity.png)",
        "",
    ]
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
