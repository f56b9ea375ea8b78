"""results.json (everything, raw measurements included) and results.md (the tables, then an
analysis written by hand, which a new run keeps)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .analysis import Results, Row
from .machine import REPO
from .settings import Settings

_COLUMNS = (
    "contender",
    "data sets",
    "C",
    "wall (s)",
    "target req/s",
    "ideal (s)",
    "ideal / actual",
    "strict ideal / actual",
    "start → 1st target (s)",
    "target phase (s)",
    "client CPU (µs/req)",
    "server CPU (µs/req)",
    "CPU busy client / server",
    "peak RSS (MB), per process",
    "same data.json",
    "runs",
)
_NOTES = (
    "Wall and throughput are end to end (process start to exit) over the N target requests; "
    "ideal = T_vol + N·L/C. CPU per request and busy fractions (1.0 = one core) cover the target "
    "phase only, from the first target request to exit. Values are medians over the runs; peak "
    "RSS is the largest. ≈: sampled, extrapolated as the time to the first target request plus "
    "N times the time per request of the sample. Same data.json: equal in content to asyncdl's. "
    "Strict ideal = T_dry + N·L/C, T_dry being a separate `asyncdl fetch --dry-run` on an empty "
    "cache. CPU is that of all the contender's processes (with --workers: the client, which also "
    "runs the Dask scheduler and nannies, and each worker; with --scheduler: the client, plus what "
    "the running cluster's processes used during the run); peak RSS per process is each one's "
    "VmHWM, sampled every 20 ms (the largest per kind of process; a running cluster's is over its "
    "whole life)."
)


#: The line that opens results.md's analysis, written by hand: everything from it on is kept when
#: a new run rewrites the tables above it. It names the commit of the run the analysis discusses.
_ANALYSIS = re.compile(r"^<!-- analysis of the run at commit (\S+):.*-->$", re.M)
ANALYSIS_MARK = (
    "<!-- analysis of the run at commit {commit}: written by hand; benchmarks/report.py keeps "
    "everything from this line on when it rewrites the tables above -->"
)
_STALE = re.compile(r"^> \*\*This analysis discusses the run at commit .*\n\n", re.M)


def write(settings: Settings, machine: dict[str, Any], results: Results, folder: Path) -> None:
    settings_dict = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    document = {"machine": machine, "settings": settings_dict, **results.as_dict()}
    (folder / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    path = folder / "results.md"
    earlier = path.read_text() if path.exists() else ""
    path.write_text(
        markdown(settings, machine, results) + kept_analysis(earlier, machine["commit"])
    )


def kept_analysis(earlier: str, commit: str) -> str:
    """The hand-written analysis at the end of an ``earlier`` results.md, to follow new tables;
    if it discusses another run than the one at ``commit``, a note at its top says so."""
    found = _ANALYSIS.search(earlier)
    if found is None:
        return ""
    body = _STALE.sub("", earlier[found.end() :].lstrip("\n"), count=1)
    if found[1] != commit:
        body = (
            f"> **This analysis discusses the run at commit {found[1]}; the tables above are "
            f"from commit {commit}.** Check its figures against them, then update the commit in "
            "the line above.\n\n" + body
        )
    return f"\n{found[0]}\n\n{body}"


def markdown(settings: Settings, machine: dict[str, Any], results: Results) -> str:
    lines = ["# asyncdl benchmark results", "", *_preamble(settings, machine, results), ""]
    lines += ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += [_table_row(row) for row in results.rows]
    lines += ["", _NOTES, "", "![throughput against concurrency](throughput.png)"]
    if results.fixed_costs:
        lines += ["", "Runs with nothing left to do (every data set already complete):", ""]
        lines += ["| contender | data sets | wall (s) | CPU (s) | peak RSS (MB) | runs |"]
        lines += ["|---|---|---|---|---|---|"]
        lines += [
            f"| {c.label}{'' if c.ok else ' **FAILED**'} | {c.job} | {c.wall_s:.2f} | "
            f"{c.cpu_s:.2f} | {_by_role(c.peak_rss_by_role)} | {c.runs} |"
            for c in results.fixed_costs
        ]
    lines += ["", "| goal (issue 4 unless said) | measured | met |", "|---|---|---|"]
    lines += [f"| {g.goal} | {g.measured} | {_yes_no(g.met)} |" for g in results.goals]
    return "\n".join(lines) + "\n"


def _preamble(settings: Settings, machine: dict[str, Any], results: Results) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    commit = machine["commit"] + (" + local changes" if machine["asyncdl_modified"] else "")
    if not str(machine["asyncdl_source"]).startswith(str(REPO)):
        commit += f" (asyncdl imported from {machine['asyncdl_source']})"
    lines = [
        "How these figures are measured, and what each column means: [the benchmarks' README](README.md).",
        "",
        f"{machine['date']}: {machine['nproc']} cores ({machine['cpu']}), Python "
        f"{machine['python']}, {versions}; commit {commit}; load average at start "
        f"{machine['load_average_at_start'][0]}. The emulator runs in its own process on "
        f"loopback with a fixed latency L = {settings.latency_ms:g} ms.",
        "",
    ]
    for job in results.jobs.values():
        lines.append(
            f"- {job.name} ({' '.join(map(str, job.data_sets))}): N = {job.targets} target "
            f"requests; asyncdl makes its first {job.volume_s:.2f} s after it starts (T_vol)"
            + (
                "."
                if job.dry_run_s is None
                else f"; its dry run on an empty cache takes {job.dry_run_s:.2f} s (T_dry)."
            )
        )
    lines += [
        f"- {row.label}: {row.per_request_ms:.1f} ms per target request over a sample of "
        f"{row.sample} at C = {row.concurrency}, so {row.wall_s:.0f} s for N = {row.requests}."
        for row in results.rows
        if row.sample is not None
    ]
    return lines


def _table_row(row: Row) -> str:
    label = row.label + (f" (sample of {row.sample})" if row.sample else "")
    cells = [
        label if row.ok else f"{label} **FAILED**",
        str(row.data_sets),
        str(row.concurrency),
        f"{row.wall_s:.2f}" if row.sample is None else f"≈ {row.wall_s:.1f}",
        f"{row.req_per_s:.0f}",
        f"{row.ideal_s:.2f}",
        f"{row.ideal_over_actual:.2f}",
        "-" if row.strict_ideal_over_actual is None else f"{row.strict_ideal_over_actual:.2f}",
        f"{row.volume_s:.2f}",
        f"{row.target_phase_s:.2f}",
        f"{row.cpu_us_per_request:.0f}",
        f"{row.server_cpu_us_per_request:.0f}",
        f"{row.client_busy:.2f} / {row.server_busy:.2f}",
        _by_role(row.peak_rss_by_role)
        if len(row.peak_rss_by_role) > 1
        else f"{row.peak_rss_mb:.0f}",
        _yes_no(row.verified),
        str(row.runs),
    ]
    return "| " + " | ".join(cells) + " |"


def _by_role(peaks: dict[str, float]) -> str:
    """Peak RSS per kind of process. ``other`` is left out: a child seen only between fork and exec
    (or after exit), whose VmHWM is a copy-on-write image of its parent's (kept in results.json)."""
    return ", ".join(f"{role} {mb:.0f}" for role, mb in peaks.items() if role != "other")


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "NO"
