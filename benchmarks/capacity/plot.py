"""capacity.png: each server's throughput, queue wait and requests in flight over time, per
contender (the run of median throughput)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from . import analysis
from .analysis import Row, Run
from .settings import AUTO, Settings

_COLOURS = {
    "8": "tab:gray",
    "32": "tab:orange",
    "128": "tab:purple",
    "512": "tab:red",
    AUTO: "tab:blue",
}


def write(settings: Settings, runs: list[Run], rows: list[Row], path: Path) -> None:
    servers = settings.servers
    fig, axes = plt.subplots(len(servers), 3, figsize=(16, 3.4 * len(servers)), squeeze=False)
    for (rate_ax, wait_ax, flight_ax), server in zip(axes, servers, strict=True):
        for contender in settings.contenders:
            mine = [r for r in runs if r.server == server and r.contender == contender]
            if not mine:
                continue
            mine.sort(key=lambda r: analysis.figures(r, settings).capacity_fraction)
            s = analysis.series(mine[len(mine) // 2], settings)
            style = {
                "color": _COLOURS.get(contender, "black"),
                "label": f"-c {contender}",
                "linewidth": 2.2 if contender == AUTO else 1.1,
            }
            rate_ax.plot(s["t"], s["throughput"], **style)
            wait_ax.plot(s["t"], s["wait"], **style)
            flight_ax.plot(s["t"], s["in_flight"], **style)
        rate_ax.axhline(0.9, color="black", linestyle=":", linewidth=0.8)
        wait_ax.axhline(0.5, color="black", linestyle=":", linewidth=0.8)
        flight_ax.axhline(server.handlers, color="black", linestyle=":", linewidth=0.8)
        rate_ax.set_ylabel(f"{server.label}\nthroughput / (K/L)")
        wait_ax.set_ylabel("mean queue wait (L)")
        wait_ax.set_yscale("symlog", linthresh=1.0)
        wait_ax.set_ylim(bottom=0)
        flight_ax.set_ylabel("requests at the server")
        flight_ax.set_yscale("log")
        rate_ax.set_ylim(0, 1.15)
    for ax in axes[-1]:
        ax.set_xlabel("seconds from the first target request")
    axes[0][0].legend(loc="lower right", fontsize="small")
    fig.suptitle(
        f"asyncdl -c auto against fixed -c, servers of K handlers at L = {settings.latency_ms:g} ms "
        "(dotted: 0.9 K/L, 0.5 L, K)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
