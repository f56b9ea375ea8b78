"""The HTTP engine: one ``ClientSession`` per run, a bound on requests in flight, retries.

Every request of a run, volume or spatial search, takes a slot (``limits``) for each attempt and
gives it back before a retry sleeps, so the server never sees more of ours at once than the limit:
``-c N``, or under ``-c auto`` what the controller learns from the server's answers. An optional
``rate`` spaces their starts. Retries follow the run's policy (``retries``: backoff, Retry-After,
busy answers waited out, a retry budget), with tenacity's retry loop built afresh for each request
because its retry state must not be shared between tasks.

Whatever the server does, an attempt ends and holds bounded memory: nothing received for
``timeout`` seconds ends it (aiohttp's timeouts), and so does averaging under ``min_rate`` bytes a
second once its first ``timeout`` seconds are over (``_Transfer``: a drip). An answer's body
is held within its own cap and within one budget of bytes for all the answers in flight
(``MAX_BYTES_IN_FLIGHT``). Redirects are followed here, a few hops at most, each reported, and
never from https to plain http. aiohttp's errors are mapped to asyncdl's in one place, ``_mapped``.

TLS: one ``ssl.SSLContext`` per run, always verifying. It trusts ``FetchOptions.ca_bundle`` if
given, else OpenSSL's default paths, which honour ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` (read when
the run starts, unlike aiohttp's own default context, which is built once at import). The first
request to each https server goes alone, the others once it is answered (``_Origins``): a server
whose TLS cannot work costs one handshake, and stops the run with nothing else connecting.

Proxies (``proxies``): chosen once per run and per host, not by aiohttp's ``trust_env``, which
reads the environment and ``~/.netrc`` again in a thread for every request.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.request import getproxies_environment

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from yarl import URL

from ._version import __version__
from .aio import Budget
from .config import MAX_BYTES_IN_FLIGHT, MAX_JSON_BYTES, MAX_REDIRECTS, FetchOptions
from .errors import (
    AsyncdlError,
    CertificateError,
    FetchError,
    HTTPStatusError,
    TLSError,
    TransientError,
    UsageError,
    VolumeError,
)
from .files import AtomicFile, writing
from .limits import Limits, Slot
from .proxies import Proxies
from .retries import Retries, RetryPolicy
from .urls import follow_redirect, host_of

T = TypeVar("T")
R = TypeVar("R")
_CHUNK = 256 * 1024
#: Who is asking, for the server's logs: the package and its version (it has no public home page).
_USER_AGENT = f"asyncdl/{__version__}"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_OPEN = "open"  # an origin whose first contact answered


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


class Downloaded(NamedTuple, Generic[T]):
    """A file ``HttpClient.download`` put in place: what reading it gave, its size and SHA-256."""

    value: T
    size: int
    sha256: str


class HttpClient:
    """Bounded, retrying GETs over one ``aiohttp.ClientSession``; use as ``async with``.

    ``on_limit`` is told how many requests may be in flight (``Events.limit_changed``),
    ``on_redirect`` every redirect followed: the URL asked and where it led. ``sleep`` and
    ``clock`` can be replaced in tests.
    """

    def __init__(
        self,
        options: FetchOptions,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_redirect: Callable[[str, str], None] | None = None,
        on_limit: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self._on_redirect = on_redirect
        self.limits = Limits(options, clock=clock, sleep=sleep, on_limit=on_limit)
        self._retries = RetryPolicy(
            options, answering=self.limits.answering, clock=self.limits.clock, sleep=sleep
        )
        self._budget = Budget(MAX_BYTES_IN_FLIGHT)
        self._session: aiohttp.ClientSession | None = None
        self._proxies = Proxies()
        self._proxy_of: dict[tuple[str, str | None, int | None], URL | None] = {}
        self._origins = _Origins(options.ca_bundle)
        # Time without progress: to connect (name lookup and TLS included), then between any two
        # reads of the answer, its headers included. The minimum rate is each transfer's own.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=options.timeout, sock_read=options.timeout
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

    async def get_json(
        self,
        url: str,
        tally: Tally,
        parse: Callable[[Any, str], T],
        *,
        limit: int = MAX_JSON_BYTES,
    ) -> T:
        """GET ``url``, decode its JSON body and ``parse(payload, url)`` it, retrying what is transient.

        A body that does not decode, or that ``parse`` rejects with ``TransientError``, is retried;
        one over ``limit`` bytes fails at once.
        """
        read = functools.partial(self._read_body, limit=limit)

        async def once() -> T:
            body = await self._attempt(url, tally, read, sample=True)
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise TransientError(f"invalid JSON ({exc})", url) from exc
            return parse(payload, url)

        return await self._call(once, tally)

    async def download(
        self, url: str, dest: Path, tally: Tally, read: Callable[[Path], T], *, limit: int
    ) -> Downloaded[T]:
        """Stream ``url`` into a temp file beside ``dest``, ``read`` it (off the loop), and only
        then rename it to ``dest``: what ``read`` refuses never appears there.

        ``read`` reads the whole file, raising ``VolumeError`` if it is not what was asked for.
        That, or an HTML page (``text/html``, what a server sends while down for maintenance), is
        transient: retried. A body over ``limit`` bytes fails at once.
        """
        stream = functools.partial(_stream_to_file, limit=limit)

        async def once() -> Downloaded[T]:
            file = AtomicFile(dest)
            try:
                save = functools.partial(stream, file=file)
                size, sha256 = await self._attempt(url, tally, save, sample=False)
                with writing(dest):
                    file.fh.flush()
                try:
                    value = await asyncio.to_thread(read, file.tmp)
                except VolumeError as exc:
                    raise TransientError(f"not a usable volume: {exc}", url) from exc
                await asyncio.to_thread(file.publish)
            except BaseException:
                file.discard()
                raise
            return Downloaded(value, size, sha256)

        return await self._call(once, tally)

    async def _attempt(
        self,
        url: str,
        tally: Tally,
        consume: Callable[[aiohttp.ClientResponse, _Transfer], Awaitable[tuple[R, int]]],
        *,
        sample: bool,
    ) -> R:
        """One request in one slot, redirects followed, its outcome mapped to asyncdl's errors.

        ``consume`` reads the response, telling the transfer each part it receives (which holds it
        to the minimum rate), and returns its result and the number of bytes it read. Only a
        ``sample``'s answers teach the controller of ``-c auto``: JSON answers, the spatial
        search's above all; a volume's download is a long transfer whose first byte says little
        of the server's queue, most often from another host.
        """
        tally.requests += 1
        # The wait for an https origin's first contact comes before the slot: a request waiting
        # there holds none (others, to other hosts, may go), and its round trip does not count it.
        target = URL(url, encoded=True)
        contact = self._origins.contact(target, url)
        async with contact, self.limits.slot(sample=sample) as slot:
            transfer = _Transfer(url, self.options)
            with _mapped(transfer, self.options.ca_bundle):
                async with self._response(transfer, target, slot, contact) as resp:
                    result, size = await consume(resp, transfer)
        tally.bytes += size
        return result

    @asynccontextmanager
    async def _response(
        self, transfer: _Transfer, url: URL, slot: Slot, contact: _Contact
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The answer to a GET of ``transfer.url`` (``url``, parsed), its status checked. Redirects
        are followed here, not by aiohttp, so that each is checked before anything is sent where it
        leads: ``MAX_REDIRECTS`` at most, each reported, never from https to plain http. The
        ``slot`` is told of each hop's answer as its headers come (the last one is what the
        controller reads)."""
        for _ in range(MAX_REDIRECTS + 1):
            request = self.session.get(
                url, timeout=self._timeout, proxy=self._proxy(url), allow_redirects=False
            )
            async with request as resp:
                slot.answered(resp)
                location = resp.headers.get("Location") if resp.status in _REDIRECTS else None
                if location is None:
                    contact.answered()
                    _check_status(resp, transfer.url)
                    yield resp
                    return
            target = follow_redirect(transfer.url, location)
            if self._on_redirect is not None:
                self._on_redirect(transfer.url, target)
            transfer.url = target
            url = URL(target, encoded=True)
        raise FetchError(f"more than {MAX_REDIRECTS} redirects", transfer.url)

    def _proxy(self, url: URL) -> URL | None:
        """The proxy for ``url``'s host (a run asks for a few hosts, millions of times)."""
        key = (url.scheme, url.host, url.port)
        if key not in self._proxy_of:
            self._proxy_of[key] = self._proxies.for_url(url)
        return self._proxy_of[key]

    async def _read_body(
        self, resp: aiohttp.ClientResponse, transfer: _Transfer, *, limit: int
    ) -> tuple[bytearray, int]:
        """The whole body, held within ``limit`` and within the run's budget of bytes in flight,
        of which it takes its Content-Length (``limit`` without one) before reading."""
        declared = resp.content_length
        _check_length(declared, limit, transfer.url)
        async with self._budget.hold(limit if declared is None else declared):
            body = bytearray()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                body += chunk
                transfer.got(len(chunk))
                if len(body) > limit:
                    raise FetchError(f"answer larger than the {limit} bytes allowed", transfer.url)
        return body, len(body)


class _Origins:
    """The first request to each https origin goes alone: the others wait for it to be answered
    (redirects followed), proof that TLS with that server works, before they connect. They wait
    before taking a slot, so that requests to other hosts are not held up meanwhile.

    A server whose TLS cannot work (an untrusted certificate, plain http behind an https URL, a
    redirect to plain http) then costs one handshake, whose failure the request awaiting it
    reports, and the requests that waited fail with the same ``TLSError`` without connecting.
    Were they let through at once, the first failure would end the run while their handshakes were
    under way, and uvloop mishandles a connection cancelled mid-handshake: it reports a failure
    nobody awaits, or a write to the closed socket, on stderr (MagicStack/uvloop#437).
    """

    def __init__(self, ca_bundle: Path | None) -> None:
        self._ca_bundle = ca_bundle
        #: By (host, port): ``_OPEN``, a first contact under way (set when it ends), or the
        #: ``TLSError`` that refused it. Absent: not tried yet, or its last try failed otherwise.
        self._state: dict[tuple[str | None, int | None], str | asyncio.Event | TLSError] = {}

    def contact(self, url: URL, text: str) -> _Contact:
        """A request's contact with ``url``'s origin (``text``: the URL as asked, for errors), to
        enter before it takes a slot."""
        origin = (url.host, url.port)
        if url.scheme != "https" or self._state.get(origin) is _OPEN:
            return _ANSWERED
        return _FirstContact(self._state, origin, text, self._ca_bundle)


class _Contact:
    """A request's contact with an origin that answered before (or over plain http): nothing to
    wait for, nothing to tell."""

    async def __aenter__(self) -> _Contact:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def answered(self) -> None:
        """The request got its answer's headers (after its redirects)."""


_ANSWERED = _Contact()


class _FirstContact(_Contact):
    """A request to an https origin not known to answer: it waits while another request is the
    origin's first contact, fails as that one did if it was refused, or is the first contact."""

    def __init__(
        self,
        state: dict[tuple[str | None, int | None], str | asyncio.Event | TLSError],
        origin: tuple[str | None, int | None],
        url: str,
        ca_bundle: Path | None,
    ) -> None:
        self._state = state
        self._origin = origin
        self._url = url
        self._ca_bundle = ca_bundle
        self._first: asyncio.Event | None = None  # while this request is the first contact

    async def __aenter__(self) -> _Contact:
        while isinstance(state := self._state.get(self._origin), asyncio.Event):
            await state.wait()
        if isinstance(state, TLSError):
            raise type(state)(str(state), self._url, state.host)
        if state is None:
            self._first = self._state[self._origin] = asyncio.Event()
        return self

    def answered(self) -> None:
        if self._first is not None:
            self._end(_OPEN)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._first is None:  # answered, or not the first contact
            return
        # Refused for good if TLS cannot work (an error seen as asyncdl's, mapped already, or as
        # aiohttp's); after any other failure a waiting request tries.
        refused = exc if isinstance(exc, TLSError) else None
        if refused is None and isinstance(exc, Exception):
            refused = _tls_failure(exc, self._url, self._ca_bundle)
        self._end(refused)

    def _end(self, state: str | TLSError | None) -> None:
        assert self._first is not None
        if state is None:
            del self._state[self._origin]
        else:
            self._state[self._origin] = state
        self._first.set()
        self._first = None


class _Transfer:
    """Where an attempt is (a redirect moves it), and the minimum rate it must keep: a part of the
    answer that arrives later than ``timeout`` seconds after the start, plus one second for every
    ``min_rate`` bytes before it, ends the attempt. The wait for each part is bounded by the socket
    timeout, so a drip fails after one or two ``timeout``, a transfer above ``min_rate`` never does
    however long it takes, and every transfer ends by ``2 * timeout + size / min_rate``. It costs
    a clock read per part, and no timer.
    """

    def __init__(self, url: str, options: FetchOptions) -> None:
        self.url = url
        self.received = 0
        self._options = options
        self._start = time.monotonic()

    def got(self, n: int) -> None:
        """``n`` more bytes came: ``TransientError`` if they came later than the rate allows."""
        opts = self._options
        elapsed = time.monotonic() - self._start
        if elapsed > opts.timeout + self.received / opts.min_rate:
            raise TransientError(
                f"Timeout: too slow, {self.received + n} bytes in {elapsed:.1f} s, under the "
                f"minimum rate of {opts.min_rate:g} bytes/s after the first {opts.timeout:g} s",
                self.url,
            )
        self.received += n


@contextmanager
def _mapped(transfer: _Transfer, ca_bundle: Path | None) -> Iterator[None]:
    """aiohttp's and ssl's errors as asyncdl's, chained, naming the URL (as httpx maps httpcore's).

    Transient: connection errors, timeouts, broken bodies. Final: a certificate that does not
    verify or a server that does not speak TLS (``TLSError``: they stop the run), other errors.
    """
    try:
        yield
    except AsyncdlError:
        raise
    except TimeoutError as exc:  # aiohttp's: nothing received for --timeout
        raise TransientError(_describe(exc), transfer.url) from exc
    except (aiohttp.ClientError, ssl.CertificateError) as exc:
        if (refused := _tls_failure(exc, transfer.url, ca_bundle)) is not None:
            raise refused from exc
        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
            raise TransientError(_describe(exc), transfer.url) from exc  # SSL: cut mid-handshake
        raise FetchError(_describe(exc), transfer.url) from exc


def _tls_failure(exc: BaseException, url: str, ca_bundle: Path | None) -> TLSError | None:
    """The ``TLSError`` that ``exc`` means (a certificate that did not verify, a server that does
    not speak TLS), or None: other handshake failures may pass, and are retried."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.CertificateError):
        return _untrusted(exc, url, ca_bundle)
    if isinstance(exc, aiohttp.ClientConnectorSSLError) and (
        getattr(exc.os_error, "reason", None) in _NOT_TLS
    ):
        return _not_tls(exc, url)
    return None


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


def _not_tls(exc: aiohttp.ClientConnectorSSLError, url: str) -> TLSError:
    """The one-line ``TLSError`` for a server that does not speak TLS, naming the host."""
    host = host_of(url)
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
    host = host_of(url)
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
    """Transient for 429 and 5xx; any other status but 2xx (a redirect without a Location too) is
    final."""
    status = resp.status
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        message = f"HTTP {status} {resp.reason or ''}".rstrip()
        raise TransientError(message, url, retry_after, status=status)
    if not 200 <= status < 300:
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


def _check_length(declared: int | None, limit: int, url: str) -> None:
    if declared is not None and declared > limit:
        raise FetchError(
            f"answer of {declared} bytes is larger than the {limit} bytes allowed", url
        )


async def _stream_to_file(
    resp: aiohttp.ClientResponse, transfer: _Transfer, *, file: AtomicFile, limit: int
) -> tuple[tuple[int, str], int]:
    """Write the body to ``file``; its size and SHA-256, computed on the way."""
    _check_length(resp.content_length, limit, transfer.url)
    if resp.content_type == "text/html":
        raise TransientError(
            "an HTML page (text/html) where a file was expected, as a server sends while it is "
            "down for maintenance",
            transfer.url,
        )
    digest = hashlib.sha256()
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        transfer.got(len(chunk))
        if size > limit:
            raise FetchError(f"file larger than the {limit} bytes allowed", transfer.url)
        digest.update(chunk)
        with writing(file.path):
            file.fh.write(chunk)
    return (size, digest.hexdigest()), size


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
