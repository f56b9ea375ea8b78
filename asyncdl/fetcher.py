"""The HTTP engine: one ``ClientSession`` per run, a global bound on requests in flight, retries.

Every request of a run, volume or spatial search, takes one of ``concurrency`` slots for each attempt
and gives it back before a retry sleeps, so the server never sees more than ``concurrency`` requests
of ours at once; an optional ``rate`` spaces their starts. Retries use full-jitter exponential
backoff (tenacity), stretched to a server's Retry-After (capped), built afresh for each request
because tenacity's retry state must not be shared between tasks. aiohttp's errors are mapped to
asyncdl's here and nowhere else.

TLS: one ``ssl.SSLContext`` per run, always verifying. It trusts ``FetchOptions.ca_bundle`` if
given, else OpenSSL's default paths, which honour ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` (read when
the run starts, unlike aiohttp's own default context, which is built once at import).

Proxies (``proxies``): chosen once per run and per host, not by aiohttp's ``trust_env``, which
reads the environment and ``~/.netrc`` again in a thread for every request.
"""

from __future__ import annotations

import asyncio
import math
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
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from yarl import URL

from ._version import __version__
from .aio import Slots
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
from .proxies import Proxies

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


class RateLimiter:
    """Spaces request starts at least ``1 / rate`` seconds apart across all tasks (no bursts)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf

    async def wait(self) -> None:
        # Reserve the next start time before sleeping: no await between the read and the write.
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await self._sleep(start - now)

    async def set_rate(self, rate: float) -> None:
        """Space later starts ``1 / rate`` apart; return once the starts reserved before have passed,
        so that a rate given up is really free."""
        reserved = self._next
        self.interval = 1.0 / rate
        if (wait := reserved - self._clock()) > 0:
            await self._sleep(wait)


class HttpClient:
    """Bounded, retrying GETs over one ``aiohttp.ClientSession``; use as ``async with``."""

    def __init__(
        self,
        options: FetchOptions,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self._sleep = sleep
        self._slots = Slots(options.concurrency)
        self._rate = RateLimiter(options.rate, sleep=sleep) if options.rate else None
        self._session: aiohttp.ClientSession | None = None
        self._proxies = Proxies()
        self._proxy_of: dict[tuple[str, str | None, int | None], URL | None] = {}
        #: The quickest any answer's headers came back, in seconds: a floor on the server's latency.
        self.fastest_answer = math.inf
        # Per attempt: a JSON answer must be whole in time; a download must keep flowing.
        self._json_timeout = aiohttp.ClientTimeout(total=options.timeout)
        self._download_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=options.timeout, sock_read=options.timeout
        )

    async def __aenter__(self) -> HttpClient:
        self._proxies = Proxies.choose(self.options.proxy, getproxies_environment())
        connector = aiohttp.TCPConnector(
            limit=self.options.concurrency,
            limit_per_host=0,
            ssl=tls_context(self.options.ca_bundle),
        )
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": _USER_AGENT}, raise_for_status=False
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def share(self, concurrency: int) -> None:
        """Keep to ``concurrency`` of the run's ``options.concurrency`` requests at once, and to as
        much of its ``rate``; return once no more than that is in use. ``0`` pauses requests."""
        if not 0 <= concurrency <= self.options.concurrency:
            raise ValueError(f"share {concurrency} is not within -c {self.options.concurrency}")
        rate = self.options.rate_share(concurrency)
        if self._rate is not None and rate:  # 0 slots: nothing goes out, the rate may stay
            await self._rate.set_rate(rate)
        await self._slots.resize(concurrency)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpClient is not open; use 'async with HttpClient(...)'")
        return self._session

    def _retrying(self, tally: Tally) -> AsyncRetrying:
        def count(state: RetryCallState) -> None:
            tally.retries += 1
            if tally.on_retry is not None and state.outcome is not None:
                wait = state.next_action.sleep if state.next_action is not None else 0.0
                tally.on_retry(state.outcome.exception() or RuntimeError("retry"), wait)

        opts = self.options
        jitter = wait_random_exponential(multiplier=opts.backoff_base, max=opts.backoff_max)

        def wait(state: RetryCallState) -> float:
            delay: float = jitter(state)
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, TransientError) and exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, opts.retry_after_max))
            return delay

        return AsyncRetrying(
            stop=stop_after_attempt(opts.retries + 1),
            wait=wait,
            retry=retry_if_exception_type(TransientError),
            before_sleep=count,
            sleep=self._sleep,
            reraise=True,
        )

    async def _call(self, once: Callable[[], Awaitable[T]], tally: Tally) -> T:
        """``once()``, retried while it fails with a ``TransientError``.

        Most calls succeed at once, and tenacity's machinery costs tens of microseconds to build,
        so it is built only after a first failure, which it is then handed as its first attempt.
        """
        try:
            return await once()
        except TransientError as exc:
            replay = [exc]
        async for attempt in self._retrying(tally):
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
        async with self._slots:
            if self._rate is not None:
                await self._rate.wait()
            try:
                sent = time.monotonic()
                target = URL(url, encoded=True)
                proxy = self._proxy(target)
                async with self.session.get(target, timeout=timeout, proxy=proxy) as resp:
                    self.fastest_answer = min(self.fastest_answer, time.monotonic() - sent)
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
        raise TransientError(f"HTTP {status} {resp.reason or ''}".rstrip(), url, retry_after)
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
