"""``python -m benchmarks.parquet``: Parquet against data.json for analyses over many data sets.

Fetches N data sets from the emulator with ``--format parquet`` (not timed), then measures:

- size: points.parquet + lines.parquet against data.json, per data set (goal: <= 0.25);
- load: all N data sets into one table, each way in a fresh interpreter: imports timed apart,
  then the load repeated (median; the first load is reported too, as a notebook's first cell
  sees it). Goal: read_parquet into pandas in <= 0.2 s for 20 data sets;
- a query: the lines that pass through a 500 um box, in pandas over data.json and in DuckDB over
  Parquet.

Writes ``benchmarks/parquet_results.json`` and prints a Markdown summary. Run it under the shared
lock on an otherwise idle machine: ``flock /work/.heavy.lock python -m benchmarks.parquet``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .machine import REPO, describe, load_average

RESULTS = REPO / "benchmarks" / "parquet_results.json"
#: A 500 um box that lines of the first data sets pass through (CCF um: AP, DV, ML).
BOX = ((3500, 4000), (1500, 2000), (4000, 4500))

#: Each way of loading, as the code a user would write: (imports, load). ``OUT`` is the folder.
LOADERS: dict[str, tuple[str, str]] = {
    "data.json -> pandas (read_streamlines, the README's recipe)": (
        "import asyncdl, numpy as np, pandas as pd",
        """
frames = []
for d in sorted(OUT.iterdir()):
    if not d.name.isdigit():
        continue
    s = asyncdl.read_streamlines(d)
    f = pd.DataFrame(np.vstack(s.paths), columns=["x", "y", "z", "density", "intensity"])
    f["line"] = np.repeat(np.arange(len(s.paths)), [len(p) for p in s.paths])
    f["data_set"] = s.data_set
    frames.append(f)
result = pd.concat(frames, ignore_index=True)
""",
    ),
    # read_parquet imports pyarrow and pandas on its first call: imported here to time them apart.
    "asyncdl.read_parquet -> pandas": (
        "import asyncdl, pandas, pyarrow.parquet",
        "result = asyncdl.read_parquet(OUT)",
    ),
    "pd.concat(pd.read_parquet(f) for f in glob)": (
        "import pandas as pd",
        "result = pd.concat(map(pd.read_parquet, sorted(OUT.glob('*/points.parquet'))), "
        "ignore_index=True)",
    ),
    "polars.read_parquet(glob)": (
        "import polars as pl",
        "result = pl.read_parquet(str(OUT / '*' / 'points.parquet'))",
    ),
    "box query: data.json -> pandas": (
        "import asyncdl, numpy as np, pandas as pd",
        """
hits = set()
for d in sorted(OUT.iterdir()):
    if not d.name.isdigit():
        continue
    s = asyncdl.read_streamlines(d)
    f = pd.DataFrame(np.vstack(s.paths)[:, :3], columns=["x", "y", "z"])
    f["line"] = np.repeat(np.arange(len(s.paths)), [len(p) for p in s.paths])
    inside = f.x.between(*BOX[0]) & f.y.between(*BOX[1]) & f.z.between(*BOX[2])
    hits |= {(s.data_set, int(n)) for n in f.line[inside].unique()}
result = sorted(hits)
""",
    ),
    "box query: DuckDB over Parquet": (
        "import duckdb",
        """
result = sorted(duckdb.sql(f'''
    SELECT DISTINCT data_set, line FROM '{OUT}/*/points.parquet'
    WHERE x BETWEEN {BOX[0][0]} AND {BOX[0][1]} AND y BETWEEN {BOX[1][0]} AND {BOX[1][1]}
      AND z BETWEEN {BOX[2][0]} AND {BOX[2][1]}''').fetchall())
""",
    ),
}


def child(name: str, out: Path, repeats: int) -> dict[str, Any]:
    """In a fresh interpreter: time the imports, then the load ``repeats`` times."""
    imports, load = LOADERS[name]
    scope: dict[str, Any] = {"OUT": out, "BOX": BOX}
    started = time.perf_counter()
    exec(imports, scope)
    imported = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        exec(load, scope)
        times.append(time.perf_counter() - started)
    result = scope["result"]
    return {"import_s": imported, "load_s": times, "rows": len(result)}


def fetch(out: Path, count: int) -> list[int]:
    """Fetch ``count`` of the emulator's data sets into ``out`` with --format parquet."""
    import asyncio

    import asyncdl
    from asyncdl.emulator import CATALOGUE_IDS, Emulator

    ids = list(CATALOGUE_IDS[:count])

    async def run() -> None:
        async with Emulator() as emu:
            options = asyncdl.FetchOptions(concurrency=64, formats=("parquet",))
            results = await asyncdl.fetch(ids, out, options=options, endpoints=emu.endpoints)
        assert all(r.complete for r in results), results

    asyncio.run(run())
    return ids


def sizes(out: Path, ids: list[int]) -> dict[str, Any]:
    per = []
    for data_set in ids:
        d = out / str(data_set)
        data = (d / "data.json").stat().st_size
        points, lines = ((d / n).stat().st_size for n in ("points.parquet", "lines.parquet"))
        per.append({"data_set": data_set, "data_json": data, "points": points, "lines": lines})
    ratios = [(p["points"] + p["lines"]) / p["data_json"] for p in per]
    return {
        "per_data_set": per,
        "ratio_median": statistics.median(ratios),
        "ratio_max": max(ratios),
        "data_json_total": sum(p["data_json"] for p in per),
        "parquet_total": sum(p["points"] + p["lines"] for p in per),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parquet", description=__doc__)
    parser.add_argument("--data-sets", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", nargs=2, metavar=("LOADER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.repeats)))
        return 0
    machine = describe(dict(os.environ), REPO)
    with tempfile.TemporaryDirectory(prefix="asyncdl-parquet-") as tmp:
        out = Path(tmp)
        ids = fetch(out, args.data_sets)
        results: dict[str, Any] = {"machine": machine, "data_sets": ids, "size": sizes(out, ids)}
        loads = {}
        for name in LOADERS:
            argv_ = [sys.executable, "-m", "benchmarks.parquet", "--repeats", str(args.repeats)]
            done = subprocess.run(
                [*argv_, "--child", name, str(out)], capture_output=True, text=True, check=True
            )
            loads[name] = json.loads(done.stdout)
        results["load"] = loads
    results["load_average_at_end"] = load_average()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    return 0


def summary(results: dict[str, Any]) -> str:
    size = results["size"]
    lines = [
        f"{len(results['data_sets'])} data sets, commit {results['machine']['commit']}, load "
        f"{results['machine']['load_average_at_start'][0]} -> {results['load_average_at_end'][0]}",
        "",
        f"size: Parquet / data.json median {size['ratio_median']:.3f}, max "
        f"{size['ratio_max']:.3f} ({size['parquet_total'] / 1e6:.1f} MB against "
        f"{size['data_json_total'] / 1e6:.1f} MB)",
        "",
        "| way | rows | import (s) | first load (s) | load, median (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, got in results["load"].items():
        times = got["load_s"]
        lines.append(
            f"| {name} | {got['rows']:,} | {got['import_s']:.2f} | {times[0]:.3f} | "
            f"{statistics.median(times):.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
