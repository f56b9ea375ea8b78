"""Defaults and limits in one place, as frozen dataclasses validated when built.

``FetchOptions`` is also where the command line takes its defaults and help texts from, so that a
default is stated once.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal, get_args

from .errors import UsageError
from .proxies import proxy_url

#: Both hosts serve https; plain http would let anyone on the path change the data.
DEFAULT_BASE_URL = "https://api.brain-map.org"
DEFAULT_ARCHIVE_URL = "https://download.alleninstitute.org"

#: The seed's defaults (download_data.py).
DEFAULT_DENSITY_RANGE = (0.04, 0.3)
DEFAULT_INJECTION_THRESHOLD = 0.5

#: Largest spatial-search answer accepted (a larger one fails its target, not retried). Real ones
#: weigh kilobytes: the recorded real answer (2 records, paths of 35 and 38 points) is 6.2 KB as
#: query.json; one record of the longest real streamline (128 points in the brainrender
#: reference) about 12.6 KB; the emulator's, over 900 targets, 1.3 KB median and 6.7 KB at most.
#: An answer about one data set holds 0 or 1 record, so 1 MiB is 80 times the largest seen.
MAX_SEARCH_BYTES = 1 << 20
#: Largest other JSON answer: the structure tree (about 0.5 MB for the 1,327 real structures, 532 KB
#: in the reference dump) and pages of the experiment search (2,000 rows: 0.9 MB from the
#: emulator, about 1.4 MB at the real rows' 700 bytes). 16 MiB is ten times the largest.
MAX_JSON_BYTES = 16 << 20
#: Bytes of answers a run may hold in memory at once, across all its requests: an answer reserves
#: its Content-Length (or its cap, when it has none) before its body is read, and waits for room.
#: At least the largest cap; 64 answers at the spatial-search cap, where normal ones take 1/80th.
MAX_BYTES_IN_FLIGHT = 64 << 20
#: Redirects followed for one request (each one is reported), never from https to http.
MAX_REDIRECTS = 5

#: Where the volumes come from: the NRRD grid files + CCF annotation, or the seed's zipped MetaImage.
VolumeKind = Literal["nrrd", "legacy"]
VOLUME_KINDS: tuple[VolumeKind, ...] = get_args(VolumeKind)
LEGACY_WARNING = (
    "--volumes legacy asks for the 2013 zipped MetaImage grids (old CCF v2 frame), which the Allen "
    "servers may no longer serve, and the spatial search now answers in CCF v3 coordinates; "
    "--volumes nrrd is the current data"
)


#: ``-c auto``: the number of requests in flight follows the server (``controller``).
AUTO: Final = "auto"
Concurrency = int | Literal["auto"]

#: What a data set's folder holds besides data.json (always written): ``outputs`` says which files.
OutputFormat = Literal["brainrender", "parquet"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)


class LegacyVolumesWarning(UserWarning):
    """``volumes="legacy"`` against the real Allen servers (``LEGACY_WARNING`` says why)."""


def _help(text: str) -> dict[str, str]:
    """A field's command-line help text (the CLI adds the default)."""
    return {"help": text}


@dataclass(frozen=True)
class FetchOptions:
    """How one run fetches: concurrency, retry policy, selection parameters, volume source."""

    concurrency: Concurrency = field(
        default=AUTO,
        metadata=_help(
            "requests in flight at once, across all data sets: a number, or auto to follow the "
            "server (as many as it answers without a queue forming)"
        ),
    )
    max_concurrency: int = field(
        default=256, metadata=_help("the most requests in flight at once with -c auto")
    )
    retries: int = field(
        default=5,
        metadata=_help(
            "retries of a failing request (0: none at all); a server's 429 and 503 are waited "
            "out without counting (see --patience)"
        ),
    )
    #: Retries may be at most this share of the requests of the last few seconds (``retries``).
    retry_budget: float = 0.2
    patience: float = field(
        default=300.0,
        metadata=_help(
            "seconds a busy server (429, 503) is waited out, for each request and only while it "
            "answers others; after that its busy answers count against --retries"
        ),
    )
    timeout: float = field(
        default=60.0,
        metadata=_help(
            "seconds a request may go without receiving anything (connecting, waiting for its "
            "answer, reading it) before it is retried"
        ),
    )
    min_rate: float = field(
        default=50_000.0,
        metadata=_help(
            "bytes a second a transfer must average once its first --timeout seconds are over; "
            "a server that sends slower (a drip) is given up on and retried"
        ),
    )
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    #: A server's Retry-After is honoured up to this many seconds.
    retry_after_max: float = 60.0
    rate: float | None = field(
        default=None,
        metadata=_help("at most this many requests per second across the run, for shared servers"),
    )
    density_range: tuple[float, float] = field(
        default=DEFAULT_DENSITY_RANGE, metadata=_help("target density range, inclusive")
    )
    injection_threshold: float = field(
        default=DEFAULT_INJECTION_THRESHOLD,
        metadata=_help("injection fraction above which a voxel is in the injection"),
    )
    volumes: VolumeKind = field(
        default="nrrd",
        metadata=_help(
            "nrrd: NRRD grid files + CCF 2017 annotation. legacy: the seed's 2013 zipped "
            "MetaImage grids (133x81x115, old CCF v2 frame), which the Allen servers may no longer "
            "serve, while the spatial search answers in CCF v3 coordinates"
        ),
    )
    #: Data sets whose volumes are read ahead of the one whose targets are being queued.
    prefetch: int = 2
    restart: bool = field(
        default=False,
        metadata=_help(
            "start the data sets over instead of resuming them (needed to change parameters)"
        ),
    )
    wait: bool = field(
        default=False,
        metadata=_help(
            "wait for data sets that another process is fetching, then finish them, instead of "
            "leaving them to it"
        ),
    )
    keep_volumes: bool = field(
        default=False,
        metadata=_help(
            "keep each data set's own grids in the cache once it is complete (by default they are "
            "removed then; the annotation, structure tree and tract masks always stay)"
        ),
    )
    formats: tuple[OutputFormat, ...] = field(
        default=(),
        metadata=_help(
            "also write these beside data.json (which is always written), comma-separated: "
            "brainrender (OUT/<id>/streamlines_<id>.json, for brainrender's Streamlines actor), "
            "parquet (OUT/<id>/points.parquet and lines.parquet, for pandas, polars and DuckDB; "
            "pip install 'asyncdl[parquet]')"
        ),
    )
    allensdk_cache: Path | None = field(
        default=None,
        metadata=_help(
            "use the volumes an AllenSDK MouseConnectivityCache already holds (its folder or its "
            "manifest file): the 100 um grids of a cache made with resolution=100 and the 25 um "
            "annotation, each checked as a whole volume on the CCF grid, instead of downloading "
            "them (--volumes nrrd)"
        ),
    )
    keep_journal: bool = field(
        default=False,
        metadata=_help(
            "keep OUT/<id>/lines.ndjson, the answers as they came, once data.json is written and "
            "verified (it is a second copy of them; by default it goes)"
        ),
    )
    #: PEM file of the CAs to trust instead of the system's (SSL_CERT_FILE/SSL_CERT_DIR otherwise).
    #: Certificates are always verified; there is no way to turn that off.
    ca_bundle: Path | None = None
    proxy: str | None = field(
        default=None,
        metadata=_help(
            "send every request through this http proxy (default: HTTPS_PROXY and HTTP_PROXY; "
            "hosts in NO_PROXY are reached directly; '' for none)"
        ),
    )

    progress_interval: float = field(
        default=30.0,
        metadata=_help(
            "seconds between two progress lines (done/total, rate, time left) when stderr is not "
            "a terminal, e.g. in a batch job's log; 0 for none"
        ),
    )

    def __post_init__(self) -> None:
        if self.concurrency != AUTO and (
            not isinstance(self.concurrency, int) or self.concurrency < 1
        ):
            raise UsageError(f"concurrency must be at least 1 or auto, got {self.concurrency!r}")
        if self.max_concurrency < 1:
            raise UsageError(f"max concurrency must be at least 1, got {self.max_concurrency}")
        if not self.retry_budget >= 0:
            raise UsageError(f"retry budget must be 0 or more, got {self.retry_budget}")
        if not self.patience >= 0:
            raise UsageError(f"patience must be 0 or more, got {self.patience}")
        if self.retries < 0:
            raise UsageError(f"retries must be 0 or more, got {self.retries}")
        if not self.timeout > 0:
            raise UsageError(f"timeout must be positive, got {self.timeout}")
        if not self.min_rate > 0:
            raise UsageError(f"min_rate must be positive, got {self.min_rate}")
        if min(self.backoff_base, self.backoff_max, self.retry_after_max) < 0:
            raise UsageError("backoff times must be 0 or more")
        if self.rate is not None and not self.rate > 0:
            raise UsageError(f"rate must be positive, got {self.rate}")
        lo, hi = self.density_range
        if not lo <= hi:
            raise UsageError(f"density range is empty or inverted: [{lo}, {hi}]")
        if not 0.0 <= self.injection_threshold <= 1.0:
            raise UsageError(
                f"injection threshold must be in [0, 1], got {self.injection_threshold}"
            )
        if self.volumes not in VOLUME_KINDS:
            raise UsageError(f"volumes must be one of {VOLUME_KINDS}, got {self.volumes!r}")
        given: object = self.formats  # a lone string would pass as a tuple of letters
        if isinstance(given, str):
            raise UsageError(f"formats is a tuple of names, e.g. ({given!r},)")
        if unknown := [f for f in self.formats if f not in OUTPUT_FORMATS]:
            raise UsageError(f"formats must be among {OUTPUT_FORMATS}, got {unknown}")
        if self.allensdk_cache is not None and self.volumes != "nrrd":
            raise UsageError("an AllenSDK cache holds NRRD volumes: use it with --volumes nrrd")
        if not self.progress_interval >= 0:
            raise UsageError(f"progress interval must be 0 or more, got {self.progress_interval}")
        if self.prefetch < 1:
            raise UsageError(f"prefetch must be at least 1, got {self.prefetch}")
        if self.proxy:
            proxy_url(self.proxy, "--proxy")

    @property
    def adaptive(self) -> bool:
        """``-c auto``: the limit follows the server."""
        return self.concurrency == AUTO

    @property
    def max_in_flight(self) -> int:
        """The most requests in flight at once: ``-c N``, or ``--max-concurrency`` with auto."""
        return self.max_concurrency if isinstance(self.concurrency, str) else self.concurrency

    def rate_share(self, concurrency: int) -> float | None:
        """The part of ``rate`` that goes with ``concurrency`` of the ``max_in_flight`` slots."""
        return None if self.rate is None else self.rate * concurrency / self.max_in_flight

    @staticmethod
    def describe(name: str) -> tuple[Any, str]:
        """A command-line option's default and help text (with the default), from the field."""
        (spec,) = (f for f in fields(FetchOptions) if f.name == name)
        default = None if spec.default is MISSING else spec.default
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        suffix = f" (default {shown})" if default not in (None, False, ()) else ""
        return default, spec.metadata["help"] + suffix
