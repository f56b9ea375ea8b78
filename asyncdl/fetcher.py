"""The HTTP engine: one ``ClientSession`` per run, a bound on requests in flight, retries.

Every request of a run, volume or spatial search, takes a slot (``limits``) for each attempt and
gives it back before a retry sleeps, so the server never sees more of ours at once than the limit:
``-c N``, or under ``-c auto`` what the controller learns from the server's answers. An optional
``rate`` spaces their starts. Retries follow the run's policy (``retries``: backoff, Retry-After,
busy answers waited out, a retry budget), with tenacity's retry loop built afresh for each request
because its retry state must not be shared between tasks. aiohttp's errors are mapped to asyncdl's
here and nowhere else.

TLS: one ``ssl.SSLContext`` per run, always verifying. It trusts ``FetchOptions.ca_bundle`` if
given, else OpenSSL's default paths, which honour ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` (read when
the run starts, unlike aiohttp's own default context, which is built once at import).

Proxies (``proxies``): chosen once per run and per host, not by aiohttp's ``trust_env``, which
reads the environment and ``~/.netrc`` again in a thread for every request.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.request import getproxies_environment

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from yarl import URL

from ._version import __version__
from .config import MAX_JSON_BYTES, MAX_VOLUME_BYTES, FetchOptions
from .errors import (
    CertificateError,
    FetchError,
    HTTPStatusError,
    TLSError,
    TransientError,
    UsageError,
)
from .files import atomic_file_async, writing
from .limits import Limits
from .proxies import Proxies
from .retries import Retries, RetryPolicy

T = TypeVar("T")
R = TypeVar("R")
_CHUNK = 256 * 1024
#: Who is asking, for the server's logs: the package and its version (it has no public home page).
_USER_AGENT = f"asyncdl/{__version__}"


@dataclass
class Tally:
    """Counters for one data set (or any unit of work): what its requests cost."""

    requests: int = 0
    retries: int = 0
    bytes: int = 0
    #: Told of each retry: the error and the wait before the next attempt.
    on_retry: Callable[[BaseException, float], None] | None = field(default=None, repr=False)

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.retries += other.retries
        self.bytes += other.bytes


class HttpClient:
    """Bounded, retrying GETs over one ``aiohttp.ClientSession``; use as ``async with``.

    ``on_limit`` is told how many requests may be in flight (``Events.limit_changed``); ``sleep``
    and ``clock`` can be replaced in tests.
    """

    def __init__(
        self,
        options: FetchOptions,
        *,
        on_limit: Callable[[int], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.limits = Limits(options, clock=clock, sleep=sleep, on_limit=on_limit)
        self._retries = RetryPolicy(
            options, answering=self.limits.answering, clock=self.limits.clock, sleep=sleep
        )
        self._session: aiohttp.ClientSession | None = None
        self._proxies = Proxies()
        self._proxy_of: dict[tuple[str, str | None, int | None], URL | None] = {}
        # Per attempt: a JSON answer must be whole in time; a download must keep flowing.
        self._json_timeout = aiohttp.ClientTimeout(total=options.timeout)
        self._download_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=options.timeout, sock_read=options.timeout
        )

    async def __aenter__(self) -> HttpClient:
        self._proxies = Proxies.choose(self.options.proxy, getproxies_environment())
        connector = aiohttp.TCPConnector(
            limit=self.options.max_in_flight,
            limit_per_host=0,
            ssl=tls_context(self.options.ca_bundle),
        )
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": _USER_AGENT}, raise_for_status=False
        )
        self.limits.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.limits.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def fastest_answer(self) -> float:
        """The quickest any answer's headers came back, in seconds: a floor on the server's latency."""
        return self.limits.fastest_answer

    async def share(self, concurrency: int) -> None:
        """Keep to ``concurrency`` of the run's ``options.max_in_flight`` requests at once, and to
        as much of its ``rate``; return once no more than that is in use. ``0`` pauses requests."""
        await self.limits.share(concurrency)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpClient is not open; use 'async with HttpClient(...)'")
        return self._session

    def _retrying(self, tally: Tally, retries: Retries) -> AsyncRetrying:
        """The retry loop of one request (see ``retries``), telling ``tally`` of each retry."""

        def count(state: RetryCallState) -> None:
            tally.retries += 1
            if tally.on_retry is not None and state.outcome is not None:
                wait = state.next_action.sleep if state.next_action is not None else 0.0
                tally.on_retry(state.outcome.exception() or RuntimeError("retry"), wait)

        return AsyncRetrying(
            stop=retries.stop,
            wait=retries.wait,
            retry=retry_if_exception_type(TransientError),
            before_sleep=count,
            sleep=retries.sleep,
            reraise=True,
        )

    async def _call(self, once: Callable[[], Awaitable[T]], tally: Tally) -> T:
        """``once()``, retried while it fails with a ``TransientError`` (see ``retries``).

        Most calls succeed at once, and tenacity's machinery costs tens of microseconds to build,
        so it is built only after a first failure, which it is then handed as its first attempt.
        """
        retries = self._retries.request()  # counted from the first attempt (cheap, unlike tenacity)
        try:
            return await once()
        except TransientError as exc:
            replay = [exc]
        async for attempt in self._retrying(tally, retries):
            with attempt:
                if replay:
                    raise replay.pop()
                return await once()
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_json(self, url: str, tally: Tally, parse: Callable[[Any, str], T]) -> T:
        """GET ``url``, decode its JSON body and ``parse(payload, url)`` it, retrying what is transient.

        A body that does not decode, or that ``parse`` rejects with ``TransientError``, is retried.
        """

        async def once() -> T:
            body = await self._attempt(url, tally, self._json_timeout, self._read_body)
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise TransientError(f"invalid JSON ({exc})", url) from exc
            return parse(payload, url)

        return await self._call(once, tally)

    async def download(self, url: str, dest: Path, tally: Tally) -> int:
        """Stream ``url`` to ``dest`` (temp file + rename, never half-written); return its size."""

        async def save(response: aiohttp.ClientResponse, url: str) -> tuple[int, int]:
            size = await _stream_to_file(response, url, dest)
            return size, size

        return await self._call(
            lambda: self._attempt(url, tally, self._download_timeout, save), tally
        )

    async def _attempt(
        self,
        url: str,
        tally: Tally,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's own per-request timeout)
        consume: Callable[[aiohttp.ClientResponse, str], Awaitable[tuple[R, int]]],
    ) -> R:
        """One request in one slot, its outcome mapped to asyncdl's errors.

        ``consume`` reads the response and returns its result and the number of bytes it read.
        """
        tally.requests += 1
        # The controller learns from the spatial search's answers only: downloads are long
        # transfers whose first byte says little of the server's queue, most from another host.
        async with self.limits.slot(sample=timeout is self._json_timeout) as slot:
            try:
                target = URL(url, encoded=True)
                proxy = self._proxy(target)
                async with self.session.get(target, timeout=timeout, proxy=proxy) as resp:
                    slot.answered(resp)
                    _check_status(resp, url)
                    result, size = await consume(resp, url)
            # Before the connection errors it is one of: no retry can make a certificate verify.
            except (aiohttp.ClientConnectorCertificateError, ssl.CertificateError) as exc:
                raise _untrusted(exc, url, self.options.ca_bundle) from exc
            except aiohttp.ClientConnectorSSLError as exc:
                if getattr(exc.os_error, "reason", None) in _NOT_TLS:
                    raise _not_tls(exc, url) from exc
                raise TransientError(_describe(exc), url) from exc  # e.g. cut mid-handshake
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise TransientError(_describe(exc), url) from exc
            except aiohttp.ClientError as exc:
                raise FetchError(_describe(exc), url) from exc
        tally.bytes += size
        return result

    def _proxy(self, url: URL) -> URL | None:
        """The proxy for ``url``'s host (a run asks for a few hosts, millions of times)."""
        key = (url.scheme, url.host, url.port)
        if key not in self._proxy_of:
            self._proxy_of[key] = self._proxies.for_url(url)
        return self._proxy_of[key]

    @staticmethod
    async def _read_body(resp: aiohttp.ClientResponse, url: str) -> tuple[bytes, int]:
        _check_length(resp, url, MAX_JSON_BYTES)
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > MAX_JSON_BYTES:
                raise FetchError(f"response larger than {MAX_JSON_BYTES} bytes", url)
        return bytes(body), len(body)


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_bundle`` (PEM), or the default paths without it.

    A CA bundle that cannot be read or holds no certificate is the user's mistake: ``UsageError``.
    """
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except ssl.SSLError as exc:
        raise UsageError(f"CA bundle {ca_bundle} holds no PEM certificate ({exc.reason})") from exc
    except OSError as exc:
        raise UsageError(f"cannot read CA bundle {ca_bundle}: {exc.strerror}") from exc


#: OpenSSL's reasons for a handshake whose other end does not speak TLS at all (plain http, most
#: often: an https URL for an http server). Other handshake failures may pass and are retried.
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"}
)


def _host(url: str) -> str:
    parts = URL(url, encoded=True)
    return f"{parts.host}:{parts.explicit_port}" if parts.explicit_port else str(parts.host)


def _not_tls(exc: aiohttp.ClientConnectorSSLError, url: str) -> TLSError:
    """The one-line ``TLSError`` for a server that does not speak TLS, naming the host."""
    host = _host(url)
    return TLSError(
        f"{host} does not speak TLS ({exc.os_error.reason}); if it is a plain http server, give "
        f"its URL as http://{host}",
        url,
        host,
    )


def _untrusted(exc: Exception, url: str, ca_bundle: Path | None) -> CertificateError:
    """The one-line ``CertificateError`` for a certificate that did not verify, naming the host."""
    cause = getattr(exc, "certificate_error", exc)  # aiohttp keeps ssl's error there
    reason = getattr(cause, "verify_message", None) or _describe(cause)
    host = _host(url)
    from_env = [name for name in ("SSL_CERT_FILE", "SSL_CERT_DIR") if os.environ.get(name)]
    if ca_bundle is not None:
        trusted = f"the CAs of {ca_bundle}"
    elif from_env:
        trusted = f"the CAs of {' and '.join(from_env)}"
    else:
        trusted = "the system's CAs"
    return CertificateError(
        f"the TLS certificate of {host} did not verify against {trusted} ({reason}); "
        "if a proxy or private CA signs it, give its CA bundle with --ca-bundle FILE or SSL_CERT_FILE",
        url,
        host,
    )


def _check_status(resp: aiohttp.ClientResponse, url: str) -> None:
    status = resp.status
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        message = f"HTTP {status} {resp.reason or ''}".rstrip()
        raise TransientError(message, url, retry_after, status=status)
    if status >= 400:
        raise HTTPStatusError(f"HTTP {status} {resp.reason or ''}".rstrip(), url, status)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _check_length(resp: aiohttp.ClientResponse, url: str, limit: int) -> None:
    if resp.content_length is not None and resp.content_length > limit:
        raise FetchError(f"response of {resp.content_length} bytes exceeds the {limit} limit", url)


async def _stream_to_file(resp: aiohttp.ClientResponse, url: str, dest: Path) -> int:
    _check_length(resp, url, MAX_VOLUME_BYTES)
    size = 0
    async with atomic_file_async(dest) as fh:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > MAX_VOLUME_BYTES:
                raise FetchError(f"download larger than {MAX_VOLUME_BYTES} bytes", url)
            with writing(dest):
                fh.write(chunk)
    return size


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
