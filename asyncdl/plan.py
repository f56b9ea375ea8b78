"""What a run is, decided once before it starts: ``RunPlan``.

Plain, frozen and picklable: the local pipeline reads it, and a Dask worker gets it whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .config import FetchOptions
from .errors import UsageError
from .urls import Endpoints, data_set_id


@dataclass(frozen=True)
class RunPlan:
    """The data sets of a run, where their results and the volumes go, and how they are fetched."""

    ids: tuple[int, ...]
    out: Path
    cache: Path
    options: FetchOptions = field(default_factory=FetchOptions)
    endpoints: Endpoints = field(default_factory=Endpoints)

    @cached_property
    def params(self) -> dict[str, Any]:
        """What a data set's results depend on; a resumed run must use the same."""
        return {
            "density_range": list(self.options.density_range),
            "injection_threshold": self.options.injection_threshold,
            "volumes": self.options.volumes,
            "source": self.endpoints.name,
        }

    @classmethod
    def make(
        cls,
        data_sets: Iterable[int | str],
        out_dir: str | Path,
        *,
        options: FetchOptions | None = None,
        endpoints: Endpoints | None = None,
        cache_dir: str | Path | None = None,
    ) -> RunPlan:
        """A plan from what a caller gives: ids validated and deduplicated (in order), the output
        folder created and checked writable, the cache folder defaulted (``OUT/.cache``)."""
        ids = tuple(dict.fromkeys(data_set_id(d) for d in data_sets))
        if not ids:
            raise UsageError("no data set ids given")
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create output directory {out}: {exc.strerror}") from exc
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"output directory {out} is not writable")
        cache = Path(cache_dir) if cache_dir is not None else out / ".cache"
        return cls(ids, out, cache, options or FetchOptions(), endpoints or Endpoints())
