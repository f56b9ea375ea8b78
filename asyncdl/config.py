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
    density_range: tuple[float, float] = DEFAULT_DENSITY_RANGE
    injection_threshold: float = DEFAULT_INJECTION_THRESHOLD
    volumes: str = "nrrd"
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.retries < 0:
            raise UsageError(f"retries must be 0 or more, got {self.retries}")
        if not self.timeout > 0:
            raise UsageError(f"timeout must be positive, got {self.timeout}")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise UsageError("backoff times must be 0 or more")
        lo, hi = self.density_range
        if not lo <= hi:
            raise UsageError(f"density range is empty: [{lo}, {hi}]")
        if self.volumes not in ("nrrd", "legacy"):
            raise UsageError(f"volumes must be 'nrrd' or 'legacy', got {self.volumes!r}")
        if self.prefetch < 1:
            raise UsageError(f"prefetch must be at least 1, got {self.prefetch}")
