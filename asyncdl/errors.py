"""The exception tree. Every error asyncdl raises on purpose is an ``AsyncdlError``.

AsyncdlError
├── UsageError (ValueError)         bad options or ids given by the user
├── VolumeError (ValueError)        a volume or structure tree that cannot be trusted or parsed
├── StorageError                    results or the cache cannot be written (disk full, permissions)
└── FetchError                      a request that did not give usable data
    ├── TransientError              worth retrying: connection, timeout, 5xx, 429, bad body
    ├── HTTPStatusError             a status that retrying will not change (4xx but 429)
    ├── ApiError                    the API answered ``success: false``
    └── TLSError                    TLS with the server cannot work (no retry can fix it): stops the run
        ├── CertificateError        the server's TLS certificate did not verify
        └── InsecureRedirectError   an https URL redirected to plain http, which would undo TLS
"""

from __future__ import annotations


class AsyncdlError(Exception):
    """Root of every error asyncdl raises on purpose."""


class UsageError(AsyncdlError, ValueError):
    """The caller asked for something that cannot be done (bad option, bad id)."""


class VolumeError(AsyncdlError, ValueError):
    """A downloaded volume (NRRD, MetaImage, zip) or structure tree is malformed, truncated or too large."""


class StorageError(AsyncdlError):
    """Writing results or the cache failed (disk full, permissions, read-only, too many open files).

    It ends the whole run: everything answered so far is on disk, and the same call resumes once the
    cause is gone. ``path`` says where; the ``OSError`` is chained as the cause.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class FetchError(AsyncdlError):
    """A request failed; ``url`` says which."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url


#: The statuses of a server too busy to take a request now (it declined it; nothing failed).
BUSY_STATUSES = frozenset({429, 503})


class TransientError(FetchError):
    """A failure that may go away on retry (network, timeout, 5xx, 429, broken body).

    ``retry_after`` is the server's Retry-After in seconds, when it sent one; ``status`` its HTTP
    status, when it answered with one.
    """

    def __init__(
        self,
        message: str,
        url: str = "",
        retry_after: float | None = None,
        *,
        status: int | None = None,
    ) -> None:
        super().__init__(message, url)
        self.retry_after = retry_after
        self.status = status

    @property
    def busy(self) -> bool:
        """The server declined the request for now (429, 503): it is busy, not failing."""
        return self.status in BUSY_STATUSES


class HTTPStatusError(FetchError):
    """The server answered with a status that retrying will not change."""

    def __init__(self, message: str, url: str = "", status: int = 0) -> None:
        super().__init__(message, url)
        self.status = status


class ApiError(FetchError):
    """The Allen API answered ``success: false``; its message is kept."""


class TLSError(FetchError):
    """TLS with the server cannot work, e.g. an https URL for a server that speaks plain http.
    Never retried, and it stops the whole run: every other request to that host would fail the
    same way. ``host`` names the server."""

    def __init__(self, message: str, url: str = "", host: str = "") -> None:
        super().__init__(message, url)
        self.host = host


class CertificateError(TLSError):
    """The server's TLS certificate did not verify."""


class InsecureRedirectError(TLSError):
    """An https URL redirected to plain http: following it would undo TLS, so it is refused before
    anything is sent there, and the run stops as for any ``TLSError``."""


#: Errors that no other data set or target would escape either: they stop a run at once.
ENDS_THE_RUN = (StorageError, TLSError)
