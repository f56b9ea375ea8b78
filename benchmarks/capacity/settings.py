"""What the capacity benchmark measures: servers, contenders, how long and how often."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Server:
    """An emulated server: ``handlers`` at once (K), shedding when ``shed_queue`` wait (Q)."""

    handlers: int
    shed_queue: int | None = None

    @property
    def label(self) -> str:
        return f"K = {self.handlers}" + (
            f", sheds at Q = {self.shed_queue}" if self.shed_queue is not None else ""
        )


AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a run depends on; written into results.json."""

    latency_ms: float = 50.0
    #: The emulator's latency varies by this fraction either way, as a real server's does.
    latency_spread: float = 0.2
    servers: tuple[Server, ...] = (Server(16), Server(64), Server(256), Server(16, 8))
    #: ``-c`` of each contender: a number, or auto (the default).
    contenders: tuple[str, ...] = ("8", "32", "128", "512", AUTO)
    repeats: int = 3
    #: Each run is stopped this long after it started, done or not (seconds).
    seconds: float = 15.0
    #: The steady figures leave out this much of the start of the target phase (seconds).
    settle_s: float = 2.0
    #: Two data sets of about 68,000 targets each at this density range: more than any run does.
    data_sets: tuple[int, ...] = (156394513, 100141219)
    density_range: tuple[float, float] = (0.01, 1.0)
    #: How often the server's counters are read (seconds).
    poll_s: float = 0.1
    out_dir: Path = RESULTS_DIR

    @property
    def latency_s(self) -> float:
        return self.latency_ms / 1000


#: ``--quick``: a smoke run of about two minutes.
QUICK = Settings(contenders=("32", AUTO), repeats=1, seconds=8.0)


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.capacity",
        description="asyncdl -c auto against fixed -c on emulated servers of limited capacity.",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--servers",
        type=_server,
        nargs="+",
        metavar="K[:Q]",
        help="the servers: K handlers, shedding at Q queued (16 64 256 16:8)",
    )
    parser.add_argument("--latency-ms", type=float, help="the servers' latency L (50)")
    parser.add_argument("--repeats", type=int, help="runs of each contender on each server (3)")
    parser.add_argument("--seconds", type=float, help="each run is stopped after this long (15)")
    parser.add_argument("--out-dir", type=Path, help="where results go (benchmarks/capacity)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    overrides = {k: v for k, v in vars(args).items() if k != "quick" and v is not None}
    if "servers" in overrides:
        overrides["servers"] = tuple(overrides["servers"])
    settings = dataclasses.replace(settings, **overrides)
    if settings.repeats < 1 or settings.seconds <= settings.settle_s + 1:
        parser.error("--repeats must be positive and --seconds longer than the settling time")
    return settings


def _server(text: str) -> Server:
    """A server given as ``K`` or ``K:Q``."""
    handlers, _, queue = text.partition(":")
    try:
        return Server(int(handlers), int(queue) if queue else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"K or K:Q, two whole numbers; got {text!r}") from None
