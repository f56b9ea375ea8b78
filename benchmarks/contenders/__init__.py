"""The contenders, each a program run in its own process by the runner.

``seed`` holds the 2013 script's steps without any I/O; ``sequential``, ``thread_pool`` and
``naive_asyncio`` wrap those steps in three ways of doing the I/O. asyncdl itself runs as its
command line, ``python -m asyncdl fetch``: in one process, over a local Dask cluster of two
workers (``--workers 2``), over a running cluster of two workers that outlives the runs
(``--scheduler``, see ``warm_cluster``), and in one process without uvloop (hidden from it, see
``hides``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Spec:
    """One run's job, as the runner hands it to a contender."""

    base_url: str
    data_sets: tuple[int, ...]
    out: Path
    cache: Path
    concurrency: int
    #: Target requests to time (None: the whole job); asyncdl cannot be sampled.
    sample: int | None = None
    #: Only the volume phase and the count of targets (asyncdl's ``--dry-run``).
    dry_run: bool = False
    #: The address of the running Dask cluster (for a contender that needs one).
    scheduler: str | None = None


@dataclass(frozen=True)
class Contender:
    """A contender's name in results, its label in tables, and the command line of a run."""

    key: str
    label: str
    command: Callable[[Spec], list[str]]
    #: Modules the run must not find: the runner puts a folder first on its PYTHONPATH where
    #: importing each raises ImportError, as if it were not installed.
    hides: tuple[str, ...] = ()
    #: Runs on the benchmark's running Dask cluster (``Spec.scheduler``), whose CPU counts as its.
    on_warm_cluster: bool = False


def _asyncdl(*options: str) -> Callable[[Spec], list[str]]:
    def command(spec: Spec) -> list[str]:
        if spec.sample is not None:
            raise ValueError("asyncdl always does the whole job")
        ids = [str(d) for d in spec.data_sets]
        return [
            *(sys.executable, "-m", "asyncdl", "fetch", *ids, "-o", str(spec.out)),
            *("-c", str(spec.concurrency), "--cache-dir", str(spec.cache)),
            *("--base-url", spec.base_url, "--archive-url", spec.base_url),
            *options,
            *(["--dry-run"] if spec.dry_run else []),
        ]

    return command


def _asyncdl_on_cluster(spec: Spec) -> list[str]:
    if spec.scheduler is None:
        raise ValueError("this contender needs the benchmark's running Dask cluster")
    return _asyncdl("--scheduler", spec.scheduler)(spec)


def _seed_like(module: str) -> Callable[[Spec], list[str]]:
    def command(spec: Spec) -> list[str]:
        if spec.dry_run:
            raise ValueError("only asyncdl has a dry run")
        ids = [str(d) for d in spec.data_sets]
        argv = [sys.executable, "-m", f"{__name__}.{module}", *ids, "-o", str(spec.out)]
        argv += ["-c", str(spec.concurrency), "--base-url", spec.base_url]
        return argv + ([] if spec.sample is None else ["--sample", str(spec.sample)])

    return command


#: In the order they appear in tables and plots.
CONTENDERS = {
    c.key: c
    for c in (
        Contender("seed", "seed, sequential (urllib)", _seed_like("sequential")),
        Contender("thread_pool", "thread pool (urllib)", _seed_like("thread_pool")),
        Contender("naive_asyncio", "naive asyncio (aiohttp)", _seed_like("naive_asyncio")),
        Contender("asyncdl", "asyncdl", _asyncdl()),
        Contender("asyncdl_workers", "asyncdl --workers 2", _asyncdl("--workers", "2")),
        Contender(
            "asyncdl_cluster",
            "asyncdl --scheduler (a running cluster of 2)",
            _asyncdl_on_cluster,
            on_warm_cluster=True,
        ),
        Contender("asyncdl_no_uvloop", "asyncdl without uvloop", _asyncdl(), hides=("uvloop",)),
    )
}
