"""The contenders, each a program run in its own process by the runner.

``seed`` holds the 2013 script's steps without any I/O; ``sequential``, ``thread_pool`` and
``naive_asyncio`` wrap those steps in three ways of doing the I/O. asyncdl itself runs as its
command line, ``python -m asyncdl fetch``.
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


@dataclass(frozen=True)
class Contender:
    """A contender's name in results, its label in tables, and the command line of a run."""

    key: str
    label: str
    command: Callable[[Spec], list[str]]


def _asyncdl(spec: Spec) -> list[str]:
    if spec.sample is not None:
        raise ValueError("asyncdl always does the whole job")
    ids = [str(d) for d in spec.data_sets]
    return [
        *(sys.executable, "-m", "asyncdl", "fetch", *ids, "-o", str(spec.out)),
        *("-c", str(spec.concurrency), "--cache-dir", str(spec.cache)),
        *("--base-url", spec.base_url, "--archive-url", spec.base_url),
    ]


def _seed_like(module: str) -> Callable[[Spec], list[str]]:
    def command(spec: Spec) -> list[str]:
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
        Contender("asyncdl", "asyncdl", _asyncdl),
    )
}
