"""``python -m benchmarks.display``: what the live display costs in throughput.

The same fetch (same ids, warm volume cache, a fresh output folder each time) runs with its stderr
on a pseudo-terminal, once with the bars and once with ``-q`` (a line per data set on the same
terminal), alternately, ``--repeats`` times each; the medians of the request rate asyncdl reports
for each are compared. The emulator runs in a process of its own, with a fixed latency at which
``-c 256`` asks up to 5,120 requests a second (about 2,800 on 2 cores, the emulator beside the
client). Writes ``benchmarks/display.json``; the figures are discussed in results.md's analysis.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import pty
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

from .server import EmulatorProcess

HERE = Path(__file__).resolve().parent
#: What asyncdl prints at the end of a run: "... N requests in S s (R/s)".
_RUN_LINE = re.compile(r"(\d+) requests in ([\d.]+) s \((\d+)/s\)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: The catalogue's first ids (``asyncdl list --injection-structure grey --emulator``): no more
#: than the 16 data sets the emulator keeps at hand, which it would otherwise build again in each
#: run (its CPU, not the client's, would then set the pace).
IDS = [
    *("100051575", "100083392", "100141219", "100216959", "100704610", "100764865"),
    *("100990169", "101021444", "101057487", "101291291", "101398789", "101419895"),
]


def on_pty(
    argv: list[str], *, env: dict[str, str] | None = None, columns: int = 140, rows: int = 40
) -> tuple[str, float]:
    """Run ``argv`` with stdout and stderr on a new pseudo-terminal; its output and wall time."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:  # as a terminal would: read everything, at once
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last holder of the other end has closed it
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    try:
        proc.wait(timeout=600)
    finally:
        proc.kill()
    wall = time.monotonic() - began
    reader.join(30)
    os.close(master)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {b''.join(chunks)[-2000:]!r}")
    return b"".join(chunks).decode(errors="replace"), wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.display", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-sets", type=int, default=len(IDS))
    parser.add_argument("-c", "--concurrency", type=int, default=256)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=HERE / "display.json")
    parser.add_argument(
        "--before",
        type=Path,
        metavar="TREE",
        help="also run the bars of the asyncdl in this source tree (put first on PYTHONPATH)",
    )
    args = parser.parse_args(argv)
    ids = IDS[: args.data_sets]
    load = os.getloadavg()
    variants = ["bars", "quiet"] + (["before"] if args.before else [])
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    before = {**os.environ, "PYTHONPATH": str(args.before)} if args.before else None
    with (
        tempfile.TemporaryDirectory(prefix="asyncdl-display-") as tmp,
        EmulatorProcess("--latency-ms", args.latency_ms, "--latency-spread", 0) as emu,
    ):
        cache = Path(tmp, "cache")
        servers = ["--base-url", emu.base_url, "--archive-url", emu.base_url]

        def fetch(n: int, *extra: str) -> list[str]:
            out = Path(tmp, f"out{n}")
            return [
                *(sys.executable, "-m", "asyncdl", "fetch", *ids, "-o", str(out)),
                *("-c", str(args.concurrency), "--cache-dir", str(cache), *servers, *extra),
            ]

        on_pty(fetch(0, "-q"))  # warm: the emulator's grids, the cache, the page cache
        n = 1
        for repeat in range(args.repeats):
            order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]
            for variant in order:
                extra = ["-q"] if variant == "quiet" else []
                text, wall = on_pty(fetch(n, *extra), env=before if variant == "before" else None)
                n += 1
                requests, seconds, rate = _RUN_LINE.findall(_ANSI.sub("", text))[-1]
                runs[variant].append(
                    {
                        "wall_s": wall,
                        "requests": int(requests),
                        "seconds": float(seconds),
                        "rate": int(rate),
                    }
                )
                print(f"{variant:>5}: {rate} req/s, wall {wall:.2f} s", file=sys.stderr)
    medians = {v: statistics.median(r["rate"] for r in rs) for v, rs in runs.items()}
    result = {
        "command": "python -m benchmarks.display " + " ".join(argv or sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.processor() or platform.machine(),
        "load_before": load,
        "load_after": os.getloadavg(),
        "data_sets": len(ids),
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "median_rate": medians,
        "display_cost": 1 - medians["bars"] / medians["quiet"],
        "display_cost_before": 1 - medians["before"] / medians["quiet"] if args.before else None,
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    figures = ", ".join(f"{variant} {rate:.0f}" for variant, rate in medians.items())
    print(f"median req/s: {figures}; the display costs {100 * result['display_cost']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
