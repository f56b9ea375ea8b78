"""Defaults and limits in one place, as frozen dataclasses validated when built."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

DEFAULT_BASE_URL = "http://api.brain-map.org"
DEFAULT_ARCHIVE_URL = "http://download.alleninstitute.org"

#: The seed's defaults (download_data.py).
DEFAULT_DENSITY_RANGE = (0.04, 0.3)
DEFAULT_INJECTION_THRESHOLD = 0.5

#: Largest body accepted for one spatial-search answer and for one volume download.
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_VOLUME_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class FetchOptions:
    """How one run fetches: concurrency, retry policy, selection parameters, volume source."""

    concurrency: int = 32
    retries: int = 5
    timeout: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    #: A server's Retry-After is honoured up to this many seconds.
    retry_after_max: float = 60.0
    #: Requests per second across the run (None: as fast as ``concurrency`` allows).
    rate: float | None = None
    density_range: tuple[float, float] = DEFAULT_DENSITY_RANGE
    injection_threshold: float = DEFAULT_INJECTION_THRESHOLD
    volumes: str = "nrrd"
    prefetch: int = 2
    #: Start every data set over instead of resuming it (needed when parameters change).
    restart: bool = False
    #: Also write ``streamlines_<id>.json``, the layout brainrender reads (``asyncdl.brainrender``).
    brainrender: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.retries < 0:
            raise UsageError(f"retries must be 0 or more, got {self.retries}")
        if not self.timeout > 0:
            raise UsageError(f"timeout must be positive, got {self.timeout}")
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
        if self.volumes not in ("nrrd", "legacy"):
            raise UsageError(f"volumes must be 'nrrd' or 'legacy', got {self.volumes!r}")
        if self.prefetch < 1:
            raise UsageError(f"prefetch must be at least 1, got {self.prefetch}")
