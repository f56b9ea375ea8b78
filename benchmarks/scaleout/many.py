"""``python -m benchmarks.scaleout.many``: many workers' controllers against one server, simulated.

What two cores cannot show: N Dask workers under ``-c auto``, each its own controller, against
one server of K handlers at L = 50 ms, for N up to 100. The simulation is the controller tests'
own (``benchmarks/queue_model.py``: the real ``Controller``, simulated time, a FIFO server, each
client with a CPU of its own at asyncdl's 218 µs an answer). Over the last two thirds of each run: the
throughput as a fraction of K/L, the mean queue wait in units of L, and Jain's index over the
workers' throughputs. (A server that sheds is left out: the model's clients do not wait out a
Retry-After, as asyncdl does.) Writes ``many.json`` beside this file and prints a table. Deterministic.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..queue_model import simulate
from .analysis import jain

LATENCY = 0.05
SECONDS = 30.0
SETUPS = [(n, k) for k in (64, 256) for n in (1, 2, 3, 10, 30, 100)]
OUT = Path(__file__).resolve().parent / "many.json"


def figures(workers: int, handlers: int) -> dict[str, float]:
    out = simulate(
        handlers=handlers, service=LATENCY, seconds=SECONDS, clients=workers, cpu_per_answer=218e-6
    )
    start = SECONDS / 3
    rates = [out.rate(start, SECONDS, c) for c in range(workers)]
    return {
        "workers": workers,
        "handlers": handlers,
        "throughput_of_k_over_l": sum(rates) / (handlers / LATENCY),
        "mean_wait_l": out.mean_wait(start, SECONDS) / LATENCY,
        "jain": jain(rates),
    }


def main() -> int:
    rows = [figures(n, k) for n, k in SETUPS]
    OUT.write_text(json.dumps(rows, indent=1) + "\n")
    print("| workers | K | throughput / (K/L) | mean wait (L) | Jain's index |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['handlers']} | {r['throughput_of_k_over_l']:.2f} | "
            f"{r['mean_wait_l']:.2f} | {r['jain']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
