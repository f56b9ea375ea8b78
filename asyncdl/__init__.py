"""asyncdl: fast, reliable, asynchronous bulk downloads of Allen Mouse Connectivity streamlines."""

from .config import FetchOptions
from .errors import (
    ApiError,
    AsyncdlError,
    FetchError,
    HTTPStatusError,
    TransientError,
    UsageError,
    VolumeError,
)
from .pipeline import DataSetResult, fetch, fetch_sync
from .urls import Endpoints

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncdlError",
    "DataSetResult",
    "Endpoints",
    "FetchError",
    "FetchOptions",
    "HTTPStatusError",
    "TransientError",
    "UsageError",
    "VolumeError",
    "__version__",
    "fetch",
    "fetch_sync",
]
