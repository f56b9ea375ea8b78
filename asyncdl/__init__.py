"""asyncdl: fast, reliable, asynchronous bulk downloads of Allen Mouse Connectivity streamlines."""

from .catalog import Experiment, find_experiments
from .config import FetchOptions
from .datafile import Streamlines, read_streamlines
from .errors import (
    ApiError,
    AsyncdlError,
    FetchError,
    HTTPStatusError,
    TransientError,
    UsageError,
    VolumeError,
)
from .events import Events
from .idsfile import read_ids_file
from .pipeline import DataSetResult, Survey, fetch, fetch_sync, survey
from .urls import Endpoints

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncdlError",
    "DataSetResult",
    "Endpoints",
    "Events",
    "Experiment",
    "FetchError",
    "FetchOptions",
    "HTTPStatusError",
    "Streamlines",
    "Survey",
    "TransientError",
    "UsageError",
    "VolumeError",
    "__version__",
    "fetch",
    "fetch_sync",
    "find_experiments",
    "read_ids_file",
    "read_streamlines",
    "survey",
]
