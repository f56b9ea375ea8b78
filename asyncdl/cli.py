"""The command line: argument parsing, then library calls, then exit codes. Nothing else lives here.

Exit status: 0 everything fetched; 1 some targets or data sets failed (the rest is written);
2 usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import NoReturn

from . import __version__
from .config import DEFAULT_ARCHIVE_URL, DEFAULT_BASE_URL, FetchOptions
from .errors import AsyncdlError, UsageError
from .pipeline import DataSetResult, fetch
from .urls import Endpoints, data_set_id

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

FETCH_EXAMPLES = """\
examples:
  asyncdl fetch 156394513 --emulator -o data          # against the bundled emulator
  asyncdl fetch 156394513 100141219 -c 64 -o data     # against api.brain-map.org
  asyncdl fetch --ids-file ids.txt --volumes legacy -o data
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"asyncdl: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="asyncdl", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.description = (
        "Fast, reliable, asynchronous bulk downloads of Allen Mouse Connectivity streamlines."
    )
    parser.add_argument("--version", action="version", version=f"asyncdl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    f = sub.add_parser(
        "fetch",
        help="download the streamlines of one or more data sets",
        description="For each data set, select target voxels from its projection density and "
        "download the spatial-search streamlines to each, into OUT/<id>/data.json.",
        epilog=FETCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("ids", nargs="*", metavar="ID", help="data set (experiment) ids")
    f.add_argument("-o", "--out", required=True, type=Path, help="output directory")
    f.add_argument("--ids-file", type=Path, help="file with more ids, one per line (# comments)")
    f.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=32,
        help="requests in flight at once, across all data sets (default 32)",
    )
    f.add_argument(
        "--retries", type=int, default=5, help="retries of a failing request (default 5)"
    )
    f.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per request attempt (default 60)"
    )
    f.add_argument(
        "--density-range",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=(0.04, 0.3),
        help="target density range, inclusive (default 0.04 0.3)",
    )
    f.add_argument(
        "--injection-threshold",
        type=float,
        default=0.5,
        help="injection fraction above which a voxel is in the injection (default 0.5)",
    )
    f.add_argument(
        "--volumes",
        choices=("nrrd", "legacy"),
        default="nrrd",
        help="NRRD grid files + CCF annotation (default), or the seed's zipped MetaImage",
    )
    f.add_argument("--base-url", default=None, help=f"API server (default {DEFAULT_BASE_URL})")
    f.add_argument(
        "--archive-url",
        default=None,
        help=f"file archive holding the CCF annotation (default {DEFAULT_ARCHIVE_URL})",
    )
    f.add_argument("--cache-dir", type=Path, help="where volumes are cached (default OUT/.cache)")
    f.add_argument(
        "--emulator",
        action="store_true",
        help="start the bundled Allen API emulator on loopback and fetch from it",
    )
    f.add_argument("--latency-ms", type=float, default=0.0, help=argparse.SUPPRESS)

    e = sub.add_parser(
        "emulate",
        help="run the bundled Allen API emulator",
        description="Serve the Allen API emulator until interrupted.",
    )
    e.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    e.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    e.add_argument(
        "--latency-ms", type=float, default=0.0, help="mean added latency per request (default 0)"
    )
    e.add_argument(
        "--latency-spread",
        type=float,
        default=0.2,
        help="latency varies uniformly by this fraction either way (default 0.2; 0 = fixed)",
    )
    return parser


def read_ids(args: argparse.Namespace) -> list[int]:
    raw: list[str] = list(args.ids)
    if args.ids_file is not None:
        try:
            text = args.ids_file.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read ids file {args.ids_file}: {exc.strerror}") from exc
        raw += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    ids = [data_set_id(value) for value in raw if value]
    if not ids:
        raise UsageError("no data set ids given (as arguments or with --ids-file)")
    return ids


def report(result: DataSetResult) -> None:
    if result.targets == 0 and result.error:
        print(f"{result.data_set}: FAILED: {result.error}", file=sys.stderr)
        return
    state = "ok" if result.complete else "INCOMPLETE"
    print(
        f"{result.data_set}: {state}: {result.targets} targets, {result.lines} lines, "
        f"{result.requests} requests, {result.retries} retries, {result.failures} failures, "
        f"{result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s"
        + (f" ({result.error})" if result.error else ""),
        file=sys.stderr,
    )


async def run_fetch(args: argparse.Namespace) -> int:
    ids = read_ids(args)
    if args.emulator and (args.base_url or args.archive_url):
        raise UsageError("--emulator serves both API and archive; drop --base-url/--archive-url")
    options = FetchOptions(
        concurrency=args.concurrency,
        retries=args.retries,
        timeout=args.timeout,
        density_range=tuple(args.density_range),
        injection_threshold=args.injection_threshold,
        volumes=args.volumes,
    )
    endpoints = Endpoints(
        args.base_url or DEFAULT_BASE_URL, args.archive_url or DEFAULT_ARCHIVE_URL
    )
    async with AsyncExitStack() as stack:
        if args.emulator:
            from .emulator import Emulator

            emu = await stack.enter_async_context(Emulator(latency_ms=args.latency_ms))
            endpoints = emu.endpoints
            print(f"asyncdl: emulator on {emu.base_url}", file=sys.stderr)
        started = time.monotonic()
        results = await fetch(
            ids,
            args.out,
            options=options,
            endpoints=endpoints,
            cache_dir=args.cache_dir,
            on_result=report,
        )
    seconds = time.monotonic() - started
    done = sum(r.complete for r in results)
    requests = sum(r.requests for r in results)
    print(
        f"asyncdl: {done} of {len(results)} data sets complete, "
        f"{sum(r.lines for r in results)} lines, {requests} requests in {seconds:.1f} s "
        f"({requests / max(seconds, 1e-9):.0f}/s) -> {args.out}",
        file=sys.stderr,
    )
    return EXIT_OK if done == len(results) else EXIT_FAILED


async def run_emulate(args: argparse.Namespace) -> int:
    from .emulator import serve

    await serve(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        latency_spread=args.latency_spread,
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = run_fetch if args.command == "fetch" else run_emulate
    try:
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        if args.command == "emulate":  # Ctrl-C is how an emulator is meant to stop
            return EXIT_OK
        print("asyncdl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"asyncdl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AsyncdlError as exc:
        print(f"asyncdl: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"asyncdl: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
