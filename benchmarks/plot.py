"""throughput.png: target requests per second against concurrency, per contender, with the ideal."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from .analysis import Job, Results
from .contenders import CONTENDERS
from .settings import Settings
from .trials import SINGLE

#: Colour, marker and marker size; the seed's single point is drawn larger, on top of the others.
_STYLE = {
    "seed": ("tab:red", "s", 9.0),
    "thread_pool": ("tab:orange", "^", 6.0),
    "naive_asyncio": ("tab:purple", "D", 6.0),
    "asyncdl": ("tab:blue", "o", 6.0),
    "asyncdl_workers": ("tab:green", "v", 6.0),
    "asyncdl_cluster": ("tab:olive", "<", 6.0),
    "asyncdl_no_uvloop": ("tab:cyan", "x", 6.0),
}


def write(settings: Settings, results: Results, path: Path) -> None:
    jobs = list(results.jobs.values())
    fig, axes = plt.subplots(1, len(jobs), figsize=(6.5 * len(jobs), 5), squeeze=False)
    for ax, job in zip(axes[0], jobs, strict=True):
        _panel(ax, settings, results, job)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panel(ax: Axes, settings: Settings, results: Results, job: Job) -> None:
    """One job: the bounds, then one line per contender."""
    latency_s = settings.latency_ms / 1000
    c = np.geomspace(1, max(2, *(r.concurrency for r in results.rows)), 200)
    ax.plot(
        c,
        job.targets / (job.volume_s + job.targets * latency_s / c),
        color="black",
        label=f"ideal: N / (T_vol + N·L/C), T_vol = {job.volume_s:.2f} s",
    )
    if job.dry_run_s is not None:
        ax.plot(
            c,
            job.targets / (job.dry_run_s + job.targets * latency_s / c),
            color="black",
            linestyle="-.",
            label=f"strict ideal: T_dry = {job.dry_run_s:.2f} s (a dry run)",
        )
    ax.plot(c, c / latency_s, color="grey", linestyle=":", label="C / L (latency alone)")
    # The emulator serves on one core: at the least CPU per request it was seen to need in this
    # job, no contender can do better than this, whatever its C.
    served = [r.server_cpu_us_per_request for r in results.rows if r.job == job.name]
    if served:
        s = min(served) / 1e6
        ax.axhline(
            job.targets / (job.volume_s + job.targets * s),
            color="grey",
            linestyle="--",
            label=f"emulator CPU bound: N / (T_vol + N·s), s = {s * 1e6:.0f} µs per request",
        )
    for key, contender in CONTENDERS.items():
        rows = sorted(
            (r for r in results.rows if r.contender == key and r.job == job.name),
            key=lambda r: r.concurrency,
        )
        if rows:
            colour, marker, size = _STYLE[key]
            ax.plot(
                [r.concurrency for r in rows],
                [r.req_per_s for r in rows],
                color=colour,
                marker=marker,
                markersize=size,
                zorder=3 if key == "seed" else 2,
                label=contender.label + (" (sampled at C = 1)" if rows[0].sample else ""),
            )
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_yscale("log")
    ax.set_ylim(bottom=5, top=3 * job.targets / (job.volume_s + job.targets * latency_s / c[-1]))
    ax.set_xlabel("concurrency C (requests in flight)")
    ax.set_ylabel("target requests per second, end to end")
    what = "one data set" if job.name == SINGLE else f"bulk run of {len(job.data_sets)}"
    ax.set_title(f"{what}: N = {job.targets}, L = {settings.latency_ms:g} ms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
