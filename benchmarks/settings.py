"""What one benchmark run measures: latency, concurrencies, data sets, samples and repeats."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .contenders import CONTENDERS

#: The seed's example data set, and a bulk run of six (all known to the emulator).
SINGLE_ID = 156394513
BULK_IDS = (156394513, 100141219, 112514202, 126862385, 127866392, 139520203)
RESULTS_DIR = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a run depends on; written into results.json so a result says how it was made."""

    latency_ms: float = 50.0
    contenders: tuple[str, ...] = tuple(CONTENDERS)
    concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    #: Concurrencies of the bulk run (asyncdl at each; the thread pool at the first).
    bulk_concurrencies: tuple[int, ...] = (64, 256)
    single_ids: tuple[int, ...] = (SINGLE_ID,)
    bulk_ids: tuple[int, ...] = BULK_IDS
    #: Target requests timed for the sampled contenders (the sequential seed; pools at C = 1).
    sample: int = 200
    #: Runs of each fast trial (median reported); trials that take minutes run once.
    repeats: int = 3
    #: A contender that takes longer than this is stopped and reported as failed.
    timeout_s: float = 600.0
    out_dir: Path = RESULTS_DIR


#: ``--quick``: a smoke run of about a minute (two concurrencies, small samples, a bulk run of two).
QUICK = Settings(
    concurrencies=(16, 256),
    bulk_concurrencies=(256,),
    bulk_ids=BULK_IDS[:2],
    sample=50,
    repeats=1,
)


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the command line of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark asyncdl against the seed script and naive variants on the emulator.",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about a minute)")
    parser.add_argument(
        "--contenders", nargs="+", choices=tuple(CONTENDERS), help="which to run (all)"
    )
    parser.add_argument("--latency-ms", type=float, help="emulator latency per request (50)")
    parser.add_argument(
        "-c", "--concurrency", type=int, nargs="+", dest="concurrencies", help="C list"
    )
    parser.add_argument(
        "--bulk-concurrency", type=int, nargs="*", dest="bulk_concurrencies", help="bulk C list"
    )
    parser.add_argument("--bulk-ids", type=int, nargs="*", help="data sets of the bulk run")
    parser.add_argument("--sample", type=int, help="target requests timed when sampling (200)")
    parser.add_argument("--repeats", type=int, help="runs per fast trial; medians reported (3)")
    parser.add_argument("--out-dir", type=Path, help="where results go (benchmarks/)")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in vars(args).items()
        if key != "quick" and value is not None
    }
    settings = dataclasses.replace(QUICK if args.quick else Settings(), **overrides)
    if min(settings.concurrencies + settings.bulk_concurrencies, default=1) < 1:
        parser.error("concurrency must be at least 1")
    if settings.sample < 1 or settings.repeats < 1 or settings.latency_ms < 0:
        parser.error("--sample and --repeats must be positive, --latency-ms not negative")
    return settings
