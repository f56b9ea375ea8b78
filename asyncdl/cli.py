"""The command line: argument parsing, then library calls, then exit statuses (``exits.Exit``).
Nothing else lives here."""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import sys
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import orjson

from . import __version__, cache, outputs
from .aio import every, in_thread, run
from .api import fetch, legacy_warning, plan_run, verify
from .catalog import Experiment, find_experiments
from .config import (
    AUTO,
    DEFAULT_ARCHIVE_URL,
    DEFAULT_BASE_URL,
    OUTPUT_FORMATS,
    VOLUME_KINDS,
    Concurrency,
    FetchOptions,
    LegacyVolumesWarning,
    OutputFormat,
)
from .crashes import crash_line
from .errors import AsyncdlError, StorageError, TLSError, UsageError
from .events import Events, JsonReporter, LineReporter, Tee, size
from .exits import Exit, help_text
from .idsfile import read_ids_file
from .planning import describe_forecast
from .results import DataSetResult, Survey, Verdict
from .status import describe_status, folder_status
from .stopping import Stopper
from .store import chosen_data_sets
from .tables import write_csv, write_json_lines
from .tracker import RunTracker
from .urls import Endpoints, data_set_id

if TYPE_CHECKING:
    from argparse import _ArgumentGroup as Group  # what add_argument_group returns

FETCH_EXAMPLES = f"""\
examples:
  asyncdl fetch 156394513 --emulator -o data          # against the bundled emulator
  asyncdl fetch 156394513 100141219 -c 64 -o data     # against api.brain-map.org
  asyncdl fetch --injection-structure VISp --primary-only --dry-run -o data
  asyncdl fetch --ids-file ids.txt --volumes legacy --format brainrender -o data
  asyncdl fetch --ids-file ids.txt --format parquet -o data   # + points/lines.parquet
  asyncdl fetch --ids-file ids.txt --workers 8 -c 512 -o /shared/data   # a local Dask cluster
  asyncdl fetch --ids-file experiments.csv -o data    # AllenSDK's get_experiments(...).to_csv()

{help_text()}"""
CACHE_DIR_HELP = (
    f"the cache of volumes (default ${cache.ENV_VAR} if set, else the user's cache folder: "
    "~/.cache/asyncdl on Linux; asyncdl cache info says where)"
)
CACHE_EXAMPLES = f"""\
examples:
  asyncdl cache info                  # where it is, and what it holds
  asyncdl cache list grids            # the data sets' grids, one a line
  asyncdl cache remove grids          # only the data sets' grids
  asyncdl cache remove 156394513      # one data set's grids
  asyncdl cache purge                 # everything

{help_text((Exit.OK, Exit.USAGE, Exit.STORAGE))}"""
#: What ``asyncdl export`` can end with: DAMAGED when a data.json does not check out, BUSY when
#: another process holds a data set.
EXPORT_EXITS = (
    Exit.OK,
    Exit.FAILED,
    Exit.USAGE,
    Exit.STORAGE,
    Exit.DAMAGED,
    Exit.SOFTWARE,
    Exit.BUSY,
    Exit.INTERRUPTED,
    Exit.TERMINATED,
)
EXPORT_EXAMPLES = f"""\
examples:
  asyncdl export data --format parquet                 # every data set in data/
  asyncdl export data 156394513 --format parquet,brainrender

{help_text(EXPORT_EXITS)}"""
#: What --format takes: "seed" is data.json alone, which is always written.
FORMAT_CHOICES = ("seed", *OUTPUT_FORMATS)
LIST_EXAMPLES = f"""\
examples:
  asyncdl list --injection-structure VISp --primary-only
  asyncdl list --injection-structure grey --transgenic-line Rbp4-Cre_KL100 --json
  asyncdl list --injection-structure VISp --csv > visp.csv

{help_text((Exit.OK, Exit.FAILED, Exit.USAGE, Exit.TLS, Exit.SOFTWARE, Exit.INTERRUPTED, Exit.TERMINATED))}"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(Exit.USAGE, f"asyncdl: error: {message} (see '{self.prog} --help')\n")


def _option(group: Group, name: str, *flags: str, **kwargs: Any) -> None:
    """An option whose default and help text are ``FetchOptions``' field ``name``."""
    default, text = FetchOptions.describe(name)
    flags = flags or (f"--{name.replace('_', '-')}",)
    group.add_argument(*flags, default=default, help=text, **kwargs)


def _format_names(text: str) -> list[str]:
    """``--format``'s value: names, comma-separated."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in FORMAT_CHOICES:
            raise argparse.ArgumentTypeError(
                f"unknown format {name!r} (choose from {', '.join(FORMAT_CHOICES)})"
            )
    return names


def _add_format(group: Group, *, required: bool) -> None:
    """``--format``, with several values: repeated, or comma-separated."""
    group.add_argument(
        "--format",
        type=_format_names,
        action="extend",
        required=required,
        default=[],
        metavar="FORMAT[,FORMAT]",
        help=FetchOptions.describe("formats")[1]
        + ("" if required else "; seed: data.json alone (the default)")
        + "; repeat the option or separate names with commas to write several",
    )


def chosen_formats(args: argparse.Namespace) -> tuple[OutputFormat, ...]:
    """The formats asked for with ``--format``, each once (``seed`` is data.json, always written)."""
    return tuple(dict.fromkeys(name for name in args.format if name != "seed"))


def _add_search(group: Group, *, required: bool) -> None:
    """Which experiments: the injection-structure search."""
    group.add_argument(
        "--injection-structure",
        required=required,
        metavar="ACRONYM",
        help="experiments injected in this structure or below it (acronym or id, e.g. VISp)",
    )
    group.add_argument(
        "--primary-only",
        action="store_true",
        help="match the primary injection structure only (default: primary or secondary)",
    )
    group.add_argument(
        "--transgenic-line",
        action="append",
        metavar="LINE",
        help="keep only this transgenic line (repeatable; 0 = wild type)",
    )


def _add_what_to_fetch(parser: _Parser) -> None:
    group = parser.add_argument_group("what to fetch")
    group.add_argument("ids", nargs="*", metavar="ID", help="data set (experiment) ids")
    group.add_argument(
        "-i",
        "--ids-file",
        type=Path,
        metavar="FILE",
        help="file with more ids: one per line (# comments), a CSV with an 'id' column (e.g. "
        "AllenSDK's get_experiments(dataframe=True).to_csv()), or JSON records with 'id'",
    )
    _add_search(group, required=False)
    _option(group, "density_range", nargs=2, type=float, metavar=("LO", "HI"))
    _option(group, "injection_threshold", type=float, metavar="FRACTION")
    _option(group, "volumes", choices=VOLUME_KINDS)


def _add_speed(parser: _Parser) -> None:
    group = parser.add_argument_group("speed")
    _option(group, "concurrency", "-c", "--concurrency", type=_concurrency, metavar="N|auto")
    _option(group, "max_concurrency", type=int, metavar="N")
    _option(group, "rate", type=float, metavar="N")
    _option(group, "retries", type=int, metavar="N")
    _option(group, "patience", type=float, metavar="SECONDS")
    _option(group, "timeout", type=float, metavar="SECONDS")
    _option(group, "min_rate", type=float, metavar="BYTES")
    spread = group.add_mutually_exclusive_group()
    spread.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="spread the run over N worker processes of a Dask cluster started for it "
        "(pip install 'asyncdl[dask]'); -c and --rate are shared out between them",
    )
    spread.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="spread the run over a running Dask cluster, e.g. tcp://head:8786; OUT must be on a "
        "file system all its workers see",
    )


def _add_fetch_output(parser: _Parser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder")
    _add_format(group, required=False)
    group.add_argument("--cache-dir", type=Path, metavar="DIR", help=CACHE_DIR_HELP)
    _option(group, "allensdk_cache", type=Path, metavar="DIR")
    _option(group, "keep_volumes", action="store_true")
    _option(group, "restart", action="store_true")
    _option(group, "wait", action="store_true")
    _option(group, "keep_journal", action="store_true")
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="download only the volumes; say how many requests a real run would make",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars: a line per data set"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also a line per retry and per target that failed for good",
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON event per line on stderr, for batch systems",
    )
    _option(group, "progress_interval", type=float, metavar="SECONDS")


def _add_server(parser: _Parser, *, archive: bool) -> None:
    """Where the data comes from, and how to get there; ``archive``: the command downloads
    volumes (from the archive)."""
    group = parser.add_argument_group("server")
    group.add_argument("--base-url", metavar="URL", help=f"API server (default {DEFAULT_BASE_URL})")
    # Accepted but not offered where unused: a script may give both commands the same servers.
    group.add_argument(
        "--archive-url",
        metavar="URL",
        help=f"archive holding the CCF annotation (default {DEFAULT_ARCHIVE_URL})"
        if archive
        else argparse.SUPPRESS,
    )
    _option(group, "proxy", metavar="URL")
    group.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="FILE",
        help="trust the CAs in this PEM file instead of the system's (for a proxy or private CA; "
        "SSL_CERT_FILE and SSL_CERT_DIR are honoured without it); certificates are always checked",
    )
    group.add_argument(
        "--emulator",
        action="store_true",
        help="start the bundled Allen API emulator on loopback (plain http) and use it",
    )
    # For demos and tests of the emulator: its latency and fault rate.
    group.add_argument("--latency-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    group.add_argument("--fault-rate", type=float, default=0.0, help=argparse.SUPPRESS)
    group.add_argument("--fault-seed", type=int, default=0, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="asyncdl",
        description="Fast, reliable, asynchronous bulk downloads of Allen Mouse Brain "
        "Connectivity streamlines.",
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"asyncdl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    f = sub.add_parser(
        "fetch",
        help="download the streamlines of one or more data sets",
        description="For each data set, select target voxels from its projection density and "
        "download the spatial-search streamlines to each, into OUT/<id>/data.json. "
        "Running the same command again resumes it.",
        epilog=FETCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_what_to_fetch(f)
    _add_speed(f)
    _add_fetch_output(f)
    _add_server(f, archive=True)

    ls = sub.add_parser(
        "list",
        help="find data sets by injection structure",
        description="List the experiments injected in a structure (all pages of the search).",
        epilog=LIST_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_search(ls.add_argument_group("which experiments"), required=True)
    output = ls.add_argument_group("output").add_mutually_exclusive_group()
    output.add_argument(
        "--json",
        action="store_true",
        help="the service's records, one JSON object per line (pandas.read_json(f, lines=True))",
    )
    output.add_argument(
        "--csv",
        action="store_true",
        help="the same fields as CSV, nested values as JSON text (pandas.read_csv(f))",
    )
    _add_server(ls, archive=False)

    st = sub.add_parser(
        "status",
        help="say what an output folder holds and what running fetch again would do",
        description="Summarise an output folder: its data sets complete, partial (interrupted), "
        "incomplete (targets that failed for good) and failed, what a rerun of fetch would do with "
        "each, and the disk it takes. It only reads.",
        epilog=help_text((Exit.OK, Exit.USAGE)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument("out", type=Path, metavar="OUT", help="output folder (fetch -o)")
    st.add_argument("ids", nargs="*", metavar="ID", help="only these data sets (default: all)")
    st.add_argument(
        "--json", action="store_true", help="one JSON object per data set, then one for the folder"
    )

    v = sub.add_parser(
        "verify",
        help="check fetched data sets against the SHA-256 of their files",
        description="Read every final file of each data set in OUT (data.json, and the "
        "brainrender file if written) and compare it with the size and SHA-256 its summary.json "
        "recorded when it was written. Prints a line per damaged or unfinished data set; a "
        "damaged one is marked so in its summary.json, and the next fetch repairs it.",
        epilog=help_text(
            (Exit.OK, Exit.FAILED, Exit.USAGE, Exit.DAMAGED, Exit.SOFTWARE, Exit.BUSY)
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("out", type=Path, metavar="OUT", help="the output folder of fetch (-o)")
    v.add_argument("ids", nargs="*", metavar="ID", help="data set ids (default: every OUT/<id>)")

    x = sub.add_parser(
        "export",
        help="write Parquet (or brainrender) files of data sets already fetched",
        description="Write the files of --format for data sets already fetched into OUT, from "
        "what is on disk, and record them in each summary.json; nothing is downloaded. A data set "
        "is exported as its last fetch left it, once its data.json checks out against the "
        "SHA-256 its summary.json records; a damaged one is marked so, and the next fetch "
        "repairs it.",
        epilog=EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    x.add_argument("out", type=Path, metavar="OUT", help="the output folder of fetch (-o)")
    x.add_argument("ids", nargs="*", metavar="ID", help="data set ids (default: every OUT/<id>)")
    _add_format(x.add_argument_group("output"), required=True)

    _cache_parser(sub)

    pv = sub.add_parser(
        "preview",
        help="draw OUT/<id>/preview.png from a fetched data set",
        description="Render the streamlines of fetched data sets, projected on the horizontal "
        "and sagittal planes and coloured by density (needs: pip install 'asyncdl[preview]').",
    )
    pv.add_argument("dirs", nargs="+", type=Path, metavar="OUT/ID", help="data set folders")

    e = sub.add_parser(
        "emulate",
        help="run the bundled Allen API emulator",
        description="Serve the Allen API emulator until interrupted.",
    )
    e.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    e.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    e.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="mean added latency per request (default 0)",
    )
    e.add_argument(
        "--latency-spread",
        type=float,
        default=0.2,
        metavar="FRACTION",
        help="latency varies uniformly by this fraction either way (default 0.2; 0 = fixed)",
    )
    e.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="fraction of responses that go wrong, reproducibly (default 0)",
    )
    e.add_argument(
        "--fault-seed", type=int, default=0, metavar="SEED", help="seed of the faults (default 0)"
    )
    e.add_argument(
        "--tls",
        action="store_true",
        help="serve https with a certificate made at start for 127.0.0.1 and localhost; prints "
        "the path of its CA certificate to pass to --ca-bundle (needs: pip install "
        "'asyncdl[emulator-tls]')",
    )
    e.add_argument(
        "--faults",
        metavar="KINDS",
        help="comma-separated fault kinds, of: 503,429,500,502,drop,truncate,badjson,slow,apierror "
        "(default: all but apierror)",
    )
    e.add_argument(
        "--fault-routes",
        metavar="ROUTES",
        help="comma-separated routes the faults and hostile modes apply to (default: all), of: "
        "grid_nrrd,grid_legacy,well_known_file,annotation,structure_graph,query",
    )
    hostile = e.add_argument_group("hostile modes (each on every response of its routes)")
    hostile.add_argument(
        "--drip", type=float, metavar="BYTES", help="send every answer at this many bytes a second"
    )
    hostile.add_argument(
        "--html-requests",
        type=int,
        default=0,
        metavar="N",
        help="a 200 text/html maintenance page instead of the first N volumes, then healthy",
    )
    hostile.add_argument(
        "--html-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="the same for S seconds from the first volume request",
    )
    hostile.add_argument(
        "--redirect",
        metavar="URL",
        help="answer 302 to the same path and query under this base URL (e.g. http://localhost:8001)",
    )
    hostile.add_argument(
        "--huge-answers",
        type=int,
        default=0,
        metavar="BYTES",
        help="query.json answers of this many bytes, chunked, without Content-Length",
    )
    hostile.add_argument(
        "--wrong-grid",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="NRRD volumes whose header declares this grid (1024 1024 128: 1 GiB of doubles)",
    )
    e.add_argument(
        "--capacity",
        type=int,
        metavar="K",
        help="work on at most K requests at once, each for the latency, and queue the rest in "
        "order of arrival (default: no limit); /__emulator__/stats reports the queue waits",
    )
    e.add_argument(
        "--shed-queue",
        type=int,
        metavar="Q",
        help="with --capacity: answer 503 with Retry-After to a request that finds Q queued",
    )
    return parser


def _cache_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    where = _Parser(add_help=False)
    where.add_argument("--cache-dir", type=Path, metavar="DIR", help=CACHE_DIR_HELP)
    c = sub.add_parser(
        "cache",
        help="show or clear the volume cache",
        description="The cache holds the volumes runs download, shared by every output folder "
        "and every run on this machine: the files all data sets need (the annotation, the "
        "structure tree, the fiber-tract masks), and the grids of data sets not yet complete.",
        epilog=CACHE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = c.add_subparsers(dest="action", required=True, parser_class=_Parser)
    actions.add_parser("dir", parents=[where], help="print where the cache is")
    actions.add_parser(
        "info", parents=[where], help="where the cache is, its size, and what it holds"
    )
    ls = actions.add_parser("list", parents=[where], help="list the entries, one a line")
    ls.add_argument("what", nargs="*", metavar="WHAT", help="only these (as for remove)")
    rm = actions.add_parser(
        "remove",
        parents=[where],
        help="remove some entries",
        description="Remove the entries named; an entry a running asyncdl is using is left.",
    )
    rm.add_argument(
        "what",
        nargs="+",
        metavar="WHAT",
        help="grids (every data set's grids), shared (the files all data sets need), a data set "
        "id (its grids), or a pattern of names (e.g. 'grid_1563*', 'fiber_mask_*')",
    )
    actions.add_parser(
        "purge",
        parents=[where],
        help="remove everything (an entry a running asyncdl is using is left)",
    )


def _concurrency(value: str) -> Concurrency:
    """``-c``: a number, or ``auto``."""
    if value == AUTO:
        return AUTO
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or {AUTO}, got {value!r}") from None


def read_ids(args: argparse.Namespace) -> list[int]:
    ids = [data_set_id(value) for value in args.ids]
    if args.ids_file is not None:
        ids += read_ids_file(args.ids_file)
    return ids


@asynccontextmanager
async def serving(args: argparse.Namespace) -> AsyncIterator[Endpoints]:
    """The endpoints to use: the given servers, or a bundled emulator started for the command."""
    if not args.emulator:
        yield Endpoints(args.base_url or DEFAULT_BASE_URL, args.archive_url or DEFAULT_ARCHIVE_URL)
        return
    if args.base_url or args.archive_url:
        raise UsageError("--emulator serves both API and archive; drop --base-url/--archive-url")
    from .emulator import Emulator, FaultPlan

    faults = FaultPlan(rate=args.fault_rate, seed=args.fault_seed) if args.fault_rate else None
    async with Emulator(latency_ms=args.latency_ms, faults=faults) as emu:
        print(f"asyncdl: emulator on {emu.base_url}", file=sys.stderr)
        try:
            yield emu.endpoints
        finally:
            if faults is not None:
                kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(faults.injected.items()))
                print(
                    f"asyncdl: emulator injected {faults.injected.total()} faults ({kinds})",
                    file=sys.stderr,
                )


def warn(args: argparse.Namespace, message: str) -> None:
    """One warning line on stderr (a JSON event with ``--log-format json``)."""
    if args.log_format == "json":
        print(orjson.dumps({"event": "warning", "message": message}).decode(), file=sys.stderr)
    else:
        print(f"asyncdl: warning: {message}", file=sys.stderr)


async def search(
    args: argparse.Namespace, endpoints: Endpoints, options: FetchOptions
) -> list[Experiment]:
    return await find_experiments(
        args.injection_structure,
        endpoints=endpoints,
        options=options,
        primary_only=args.primary_only,
        transgenic_lines=args.transgenic_line,
    )


async def reporter(args: argparse.Namespace, interval: float, stack: AsyncExitStack) -> Events:
    """JSON events if asked; live bars on a terminal; otherwise a line per data set. Where stderr
    is not a terminal, a heartbeat every ``interval`` seconds too."""
    shown: JsonReporter | LineReporter
    if args.log_format == "json":
        shown = JsonReporter()
    elif args.quiet or not sys.stderr.isatty():
        shown = LineReporter(verbose=args.verbose)
    else:
        from .progress import RichProgress

        return stack.enter_context(RichProgress(verbose=args.verbose))
    if sys.stderr.isatty() or not interval:
        return shown
    tracker = RunTracker()
    await stack.enter_async_context(every(interval, lambda: shown.progress(tracker.snapshot())))
    return Tee(tracker, shown)


async def run_fetch(args: argparse.Namespace) -> int:
    ids = read_ids(args)
    options = FetchOptions(
        concurrency=args.concurrency,
        max_concurrency=args.max_concurrency,
        retries=args.retries,
        patience=args.patience,
        timeout=args.timeout,
        min_rate=args.min_rate,
        density_range=tuple(args.density_range),
        injection_threshold=args.injection_threshold,
        volumes=args.volumes,
        rate=args.rate,
        restart=args.restart,
        wait=args.wait,
        keep_volumes=args.keep_volumes,
        keep_journal=args.keep_journal,
        formats=chosen_formats(args),
        allensdk_cache=args.allensdk_cache,
        ca_bundle=args.ca_bundle,
        proxy=args.proxy,
        progress_interval=args.progress_interval,
    )
    async with serving(args) as endpoints, AsyncExitStack() as stack:
        if (legacy := legacy_warning(options, endpoints)) is not None:
            warn(args, legacy)
            warnings.filterwarnings("ignore", category=LegacyVolumesWarning)  # said: once is enough
        if args.injection_structure:
            ids += [experiment.id for experiment in await search(args, endpoints, options)]
        if not ids:
            raise UsageError("no data set ids given (as arguments, --ids-file or a search)")
        if args.dry_run:
            return await dry_run(ids, args, options, endpoints)
        results = await fetch(
            ids,
            args.out,
            options=options,
            endpoints=endpoints,
            cache_dir=args.cache_dir,
            events=await reporter(args, options.progress_interval, stack),
            workers=args.workers,
            scheduler=args.scheduler,
        )
    return outcome(args, results)


def outcome(args: argparse.Namespace, results: Sequence[DataSetResult]) -> Exit:
    """FAILED if anything failed; else BUSY if data sets were left to another process (with
    what to do about them); else OK."""
    busy = sum(r.status == "busy" for r in results)
    if any(not r.complete and r.status != "busy" for r in results):
        return Exit.FAILED
    if busy:
        if args.log_format == "text":
            print(
                f"asyncdl: {busy} data set(s) left to another process; run the same command "
                "again once it has ended to finish them, or add --wait",
                file=sys.stderr,
            )
        return Exit.BUSY
    return Exit.OK


async def dry_run(
    ids: list[int], args: argparse.Namespace, options: FetchOptions, endpoints: Endpoints
) -> int:
    async with counting(args, options.progress_interval, len(ids)) as counted:
        surveys, ahead, measures = await plan_run(
            ids, options=options, endpoints=endpoints, cache_dir=args.cache_dir, on_survey=counted
        )
    # Under -c auto the forecast assumes the server takes --max-concurrency without a queue.
    at = f"-c {options.concurrency}" + (
        f" ({options.max_concurrency} at most)" if options.adaptive else ""
    )
    for s in surveys:
        if s.error:
            print(f"{s.data_set}: FAILED: {s.error}")
        else:
            when = f", ~{s.estimate_seconds:.1f} s" if s.estimate_seconds is not None else ""
            print(f"{s.data_set}: {s.targets} target requests{when} at {at}")
    print("\n".join(describe_forecast(ahead, measures, at)))
    return Exit.OK if not any(s.error for s in surveys) else Exit.FAILED


@asynccontextmanager
async def counting(
    args: argparse.Namespace, interval: float, total: int
) -> AsyncIterator[Callable[[Survey], None]]:
    """A dry run's progress on stderr, as data sets are counted: a bar on a terminal, else a
    line (or a JSON ``progress`` event) every ``interval`` seconds."""
    counted: list[Survey] = []
    if sys.stderr.isatty() and not args.quiet and args.log_format == "text":
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("counting targets", total=total)
            yield lambda survey: bar.advance(task)
        return

    def say() -> None:
        targets = sum(s.targets for s in counted)
        if args.log_format == "json":
            event = {"event": "progress", "counted": len(counted), "data_sets": total}
            line = orjson.dumps({**event, "targets": targets}).decode()
        else:
            line = f"asyncdl: dry run: {len(counted):,}/{total:,} data sets counted, {targets:,} targets"
        print(line, file=sys.stderr, flush=True)

    async with every(interval, say):
        yield counted.append


async def run_list(args: argparse.Namespace) -> int:
    async with serving(args) as endpoints:
        options = FetchOptions(ca_bundle=args.ca_bundle, proxy=args.proxy)
        experiments = await search(args, endpoints, options)
    if args.json or args.csv:
        (write_json_lines if args.json else write_csv)(experiments, sys.stdout)
        return Exit.OK
    print(f"{'id':>10}  {'structure':<10}  {'transgenic line':<24}  injection volume")
    for x in experiments:
        volume = f"{x.injection_volume:.4f}" if x.injection_volume is not None else "-"
        print(f"{x.id:>10}  {x.structure:<10}  {x.transgenic_line or '(wild type)':<24}  {volume}")
    print(f"{len(experiments)} experiments", file=sys.stderr)
    return Exit.OK


async def run_status(args: argparse.Namespace) -> int:
    if not args.out.is_dir():
        raise UsageError(f"{args.out} is not a folder")
    ids = [data_set_id(value) for value in args.ids] or None
    status = await asyncio.to_thread(folder_status, args.out, ids)
    if not args.json:
        print("\n".join(describe_status(status)))
        return Exit.OK
    for state in status.states:
        print(orjson.dumps(state).decode())
    counts = Counter(state.state for state in status.states)
    disk = status.disk
    print(
        orjson.dumps(
            {"out": str(args.out), **counts, "not_begun": len(status.new), "disk": disk}
        ).decode()
    )
    return Exit.OK


async def run_cache(args: argparse.Namespace) -> int:
    root, origin = cache.locate(args.cache_dir)
    if args.action == "dir":
        print(root)
        return Exit.OK
    found = await asyncio.to_thread(cache.entries, root)
    if args.action == "info":
        print(cache_info(root, origin, found), end="")
        return Exit.OK
    if args.action == "list":
        chosen = _chosen(found, args.what) if args.what else found
        for entry in chosen:
            print(f"{size(entry.size):>10}  {entry.label:<56}  {entry.what}")
        return Exit.OK
    if not cache.is_cache(root):
        raise UsageError(f"{root} is not an asyncdl cache (it has no {cache.TAG}): nothing removed")
    chosen = found if args.action == "purge" else _chosen(found, args.what)
    for what in args.what if args.action == "remove" else ():
        if not cache.select(found, what):
            print(f"asyncdl: nothing in the cache matches {what!r}", file=sys.stderr)
    done = await asyncio.to_thread(cache.remove, chosen)
    if args.action == "purge":
        await asyncio.to_thread(cache.tidy, root)
    print(f"removed {_entries(done.removed)} ({size(done.freed)}) from {root}")
    if done.busy:
        names = ", ".join(entry.label for entry in done.busy)
        print(f"left {_entries(len(done.busy))} that a running asyncdl is using: {names}")
    return Exit.OK


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _chosen(found: list[cache.Entry], whats: Sequence[str]) -> list[cache.Entry]:
    """The entries any of ``whats`` names, each once, in the cache's order."""
    chosen = {entry.label for what in whats for entry in cache.select(found, what)}
    return [entry for entry in found if entry.label in chosen]


def cache_info(root: Path, origin: str, found: Sequence[cache.Entry]) -> str:
    """What ``asyncdl cache info`` prints: where, how big, and what, by data source."""
    why = {
        "default": "the user's cache folder",
        "ASYNCDL_CACHE_DIR": f"from ${cache.ENV_VAR}",
        "--cache-dir": "from --cache-dir",
    }[origin]
    total = sum(entry.size for entry in found)
    lines = [
        f"cache: {root} ({why})",
        f"size: {size(total)} in {_entries(len(found))}",
    ]
    kinds = {
        "shared": "needed by every data set",
        "grid": "data sets' own grids",
        "unfinished": "unfinished downloads",
        "other": "files asyncdl did not write",
    }
    for source in dict.fromkeys(entry.source for entry in found):
        lines.append(f"{source}:")
        mine = [entry for entry in found if entry.source == source]
        for kind, label in kinds.items():
            those = [entry for entry in mine if entry.kind == kind]
            if not those:
                continue
            used = size(sum(entry.size for entry in those))
            if kind == "grid":
                data_sets = len({entry.data_set for entry in those})
                detail = f"{data_sets} data set{'' if data_sets == 1 else 's'}"
            else:
                detail = ", ".join(entry.name for entry in those)
            lines.append(f"  {label + ':':<28}{len(those):>5} {used:>10}  {detail}")
    return "\n".join(lines) + "\n"


async def run_verify(args: argparse.Namespace) -> int:
    def show(v: Verdict) -> None:
        if v.status != "verified":
            print(f"{v.data_set}: {v.status.upper()}: {v.problem}", flush=True)

    ids = [data_set_id(value) for value in args.ids] or None
    verdicts = await asyncio.to_thread(verify, args.out, ids, each=show)
    counts: Counter[str] = Counter(v.status for v in verdicts)
    print(
        f"verify: {len(verdicts)} data sets, {counts['verified']} verified, "
        f"{counts['damaged']} damaged, {counts['unfinished']} unfinished"
        + (f", {counts['busy']} busy" if counts["busy"] else "")
        + ("; run the same fetch again to repair them" if counts["damaged"] else "")
        + ("; verify the busy ones again once that process has ended" if counts["busy"] else ""),
        file=sys.stderr,
    )
    return _checked_exit(counts, failed="unfinished")


def _checked_exit(counts: Counter[str], *, failed: str) -> Exit:
    """How verify and export end: DAMAGED before FAILED (data sets counted as ``failed``) before
    BUSY (left to another process) before OK."""
    if counts["damaged"]:
        return Exit.DAMAGED
    if counts[failed]:
        return Exit.FAILED
    return Exit.BUSY if counts["busy"] else Exit.OK


async def run_export(args: argparse.Namespace) -> int:
    formats = chosen_formats(args)
    if not formats:
        raise UsageError(
            "--format seed is data.json, which is there already: name a format to write"
        )
    outputs.require(formats)
    ids = chosen_data_sets(args.out, args.ids or None)
    counts: Counter[str] = Counter()
    for data_set in ids:
        done = await in_thread(outputs.export, args.out, data_set, formats)
        counts[done.status] += 1
        if done.status == "written":
            print(f"{data_set}: wrote {done.detail}", flush=True)
        else:
            print(f"{data_set}: {done.status.upper()}: {done.detail}", file=sys.stderr)
    print(
        f"asyncdl: exported {counts['written']} of {len(ids)} data sets"
        + ("; run the same fetch again to repair the damaged" if counts["damaged"] else "")
        + ("; export the busy ones again once that process has ended" if counts["busy"] else ""),
        file=sys.stderr,
    )
    return _checked_exit(counts, failed="failed")


async def run_preview(args: argparse.Namespace) -> int:
    from .preview import render_preview

    for directory in args.dirs:
        print(await asyncio.to_thread(render_preview, directory))
    return Exit.OK


async def run_emulate(args: argparse.Namespace) -> int:
    from .emulator import FaultPlan, serve
    from .emulator.faults import DEFAULT_KINDS

    kinds = tuple(args.faults.split(",")) if args.faults else DEFAULT_KINDS
    faults = FaultPlan(
        args.fault_rate,
        args.fault_seed,
        kinds,
        routes=frozenset(args.fault_routes.split(",")) if args.fault_routes else None,
        drip=args.drip,
        html_requests=args.html_requests,
        html_seconds=args.html_seconds,
        redirect=args.redirect,
        huge_answers=args.huge_answers,
        wrong_grid=tuple(args.wrong_grid) if args.wrong_grid else None,
    )
    await serve(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        latency_spread=args.latency_spread,
        faults=faults,
        tls=args.tls,
        capacity=args.capacity,
        shed_queue=args.shed_queue,
    )
    return Exit.OK


COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "fetch": run_fetch,
    "list": run_list,
    "status": run_status,
    "cache": run_cache,
    "verify": run_verify,
    "export": run_export,
    "preview": run_preview,
    "emulate": run_emulate,
}


def _reader_gone(stream: TextIO) -> bool:
    """Whether ``stream`` is a pipe whose reader has closed it (``| head``): poll says POLLERR."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(mask & select.POLLERR for _, mask in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, no file descriptor
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Every way a command ends is an exit status (``exits.Exit``) and at most one line of error:
    a bug's traceback goes to a crash log (``crashes``). Ctrl-C and SIGTERM: see ``stopping``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with Stopper() as stopper:
        args = build_parser().parse_args(argv)
        try:
            status = run(stopper.run(COMMANDS[args.command](args)))
            sys.stdout.flush()  # here, not at exit: a reader that has gone is seen below
            return status
        except BrokenPipeError as exc:
            if not _reader_gone(sys.stdout):
                print(f"asyncdl: error: {exc}", file=sys.stderr)
                return Exit.FAILED
            # `asyncdl list ... | head`: the reader has what it wanted. As Python's documentation
            # advises for SIGPIPE, what is left for stdout goes to /dev/null, so that the flush at
            # exit does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return Exit.OK
        except (KeyboardInterrupt, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and stopper.signal is None:
                print(crash_line(exc, argv), file=sys.stderr)  # cancelled, not by a signal: a bug
                return Exit.SOFTWARE
            if args.command == "emulate":  # a signal is how an emulator is meant to stop
                return Exit.OK
            print(f"asyncdl: {stopper.how}; run the same command again to resume", file=sys.stderr)
            return stopper.status
        except TLSError as exc:
            print(f"asyncdl: error: {exc}", file=sys.stderr)
            return Exit.TLS
        except UsageError as exc:
            print(f"asyncdl: error: {exc}", file=sys.stderr)
            return Exit.USAGE
        except StorageError as exc:
            print(
                f"asyncdl: error: {exc}; run the same command again once it is fixed",
                file=sys.stderr,
            )
            return Exit.STORAGE
        except (AsyncdlError, OSError) as exc:
            print(f"asyncdl: error: {exc}", file=sys.stderr)
            return Exit.FAILED
        except Exception as exc:  # anything else is a bug
            print(crash_line(exc, argv), file=sys.stderr)
            return Exit.SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
