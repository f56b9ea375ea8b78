"""asyncdl: fast, reliable, asynchronous bulk downloads of Allen Mouse Connectivity streamlines."""

import logging

from ._version import __version__
from .api import fetch, fetch_sync, survey, verify
from .catalog import Experiment, find_experiments
from .config import FetchOptions, LegacyVolumesWarning
from .datafile import Streamlines, read_streamlines
from .errors import (
    ApiError,
    AsyncdlError,
    CertificateError,
    FetchError,
    HTTPStatusError,
    StorageError,
    TLSError,
    TransientError,
    UsageError,
    VolumeError,
)
from .events import Events
from .idsfile import read_ids_file
from .parquet import read_parquet
from .results import DataSetResult, Survey, Verdict
from .urls import Endpoints

# A library leaves its log's handling to the application (the logging HOWTO): records of the
# "asyncdl" logger go where the application's logging sends them, and nowhere if it has none.
logging.getLogger("asyncdl").addHandler(logging.NullHandler())

__all__ = [
    "ApiError",
    "AsyncdlError",
    "CertificateError",
    "DataSetResult",
    "Endpoints",
    "Events",
    "Experiment",
    "FetchError",
    "FetchOptions",
    "HTTPStatusError",
    "LegacyVolumesWarning",
    "StorageError",
    "Streamlines",
    "Survey",
    "TLSError",
    "TransientError",
    "UsageError",
    "Verdict",
    "VolumeError",
    "__version__",
    "fetch",
    "fetch_sync",
    "find_experiments",
    "read_ids_file",
    "read_parquet",
    "read_streamlines",
    "survey",
    "verify",
]
