"""``python -m benchmarks.rerun``: a rerun with nothing to do, over thousands of complete data sets.

Such a rerun checks each data set's final files against the sizes its summary.json records, and
must stay under a second for thousands of data sets (issue #11). One data set is fetched from the
emulator; its folder is then copied to N data set ids (data.json hard-linked: the check reads
sizes, not bytes), and ``asyncdl fetch --ids-file IDS -o OUT -q`` runs again over all of them with
no server listening, so that a single request would fail the run. Timed R times as a command
(interpreter start and imports included) and as ``asyncdl.fetch`` in this process; the medians and
the machine's load go to ``benchmarks/rerun.json``.

    python -m benchmarks.rerun --data-sets 3000 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

import asyncdl
from asyncdl.emulator import Emulator

RESULTS = Path(__file__).with_name("rerun.json")
SEED_ID = 156394513
FIRST_ID = 900_000_000  # the copies' ids: never a real experiment
DENSITY = (0.1, 0.12)  # a small data set: the rerun reads sizes only, whatever the size
PORT = 9700  # nothing listens there during the reruns


def _fabricate(out: Path, count: int) -> list[int]:
    """One data set fetched for real, then copied to ``count`` ids; their ids."""
    options = asyncdl.FetchOptions(density_range=DENSITY)

    async def fetch_one() -> None:
        async with Emulator(port=PORT) as emu:  # named by its URL, as --base-url names it
            endpoints = asyncdl.Endpoints(emu.base_url, emu.base_url)
            [result] = await asyncdl.fetch(
                [SEED_ID], out / "seed", options=options, endpoints=endpoints
            )
        assert result.complete, result.error

    asyncio.run(fetch_one())
    seed = out / "seed" / str(SEED_ID)
    ids = list(range(FIRST_ID, FIRST_ID + count))
    for data_set in ids:
        folder = out / str(data_set)
        folder.mkdir()
        os.link(seed / "data.json", folder / "data.json")
        for name in ("run.json", "summary.json"):
            record = orjson.loads((seed / name).read_bytes())
            record["data_set"] = data_set
            (folder / name).write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    (out / "ids.txt").write_text("".join(f"{data_set}\n" for data_set in ids))
    return ids


def _command(out: Path) -> float:
    url = f"http://127.0.0.1:{PORT}"
    argv = [sys.executable, "-m", "asyncdl", "fetch", "--ids-file", str(out / "ids.txt")]
    argv += ["-o", str(out), "-q", "--density-range", *map(str, DENSITY)]
    argv += ["--base-url", url, "--archive-url", url]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or " 0 requests" not in done.stderr.splitlines()[-1]:
        raise RuntimeError(f"the rerun did something: {done.stderr[-2000:]}")
    return seconds


def _library(out: Path, ids: list[int]) -> float:
    url = f"http://127.0.0.1:{PORT}"
    options = asyncdl.FetchOptions(density_range=DENSITY)
    endpoints = asyncdl.Endpoints(url, url)
    start = time.perf_counter()
    results = asyncdl.fetch_sync(ids, out, options=options, endpoints=endpoints)
    seconds = time.perf_counter() - start
    assert all(r.skipped for r in results)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rerun", description=__doc__)
    parser.add_argument("--data-sets", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="asyncdl-integrity-rerun-"))
    try:
        load = os.getloadavg()
        ids = _fabricate(work, args.data_sets)
        command = [_command(work) for _ in range(args.repeats)]
        library = [_library(work, ids) for _ in range(args.repeats)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    result: dict[str, Any] = {
        "data_sets": args.data_sets,
        "repeats": args.repeats,
        "command_s": {"median": statistics.median(command), "all": command},
        "library_s": {"median": statistics.median(library), "all": library},
        "load_average_at_start": load,
        "commit": commit,
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(
        f"rerun with nothing to do, {args.data_sets} data sets: command "
        f"{result['command_s']['median']:.2f} s, asyncdl.fetch {result['library_s']['median']:.2f} s "
        f"(medians of {args.repeats}; load {load[0]:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
