"""The HTTP engine: one ``ClientSession`` per run, a global bound on requests in flight, retries.

Every request of a run, volume or spatial search, takes one of ``concurrency`` slots for each attempt
and gives it back before a retry sleeps, so the server never sees more than ``concurrency`` requests
of ours at once. Retries use full-jitter exponential backoff (tenacity), built afresh for each request
because tenacity's retry state must not be shared between tasks. aiohttp's errors are mapped to
asyncdl's here and nowhere else.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

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

from .config import MAX_JSON_BYTES, MAX_VOLUME_BYTES, FetchOptions
from .errors import FetchError, HTTPStatusError, TransientError

T = TypeVar("T")
R = TypeVar("R")
_CHUNK = 256 * 1024
_USER_AGENT = "asyncdl/0.1 (+https://github.com/asyncdl)"


@dataclass
class Tally:
    """Counters for one data set (or any unit of work): what its requests cost."""

    requests: int = 0
    retries: int = 0
    bytes: int = 0

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.retries += other.retries
        self.bytes += other.bytes


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
        self._slots = asyncio.Semaphore(options.concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpClient:
        connector = aiohttp.TCPConnector(limit=self.options.concurrency, limit_per_host=0)
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

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpClient is not open; use 'async with HttpClient(...)'")
        return self._session

    def _retrying(self, tally: Tally) -> AsyncRetrying:
        def count(_state: RetryCallState) -> None:
            tally.retries += 1

        opts = self.options
        return AsyncRetrying(
            stop=stop_after_attempt(opts.retries + 1),
            wait=wait_random_exponential(multiplier=opts.backoff_base, max=opts.backoff_max),
            retry=retry_if_exception_type(TransientError),
            before_sleep=count,
            sleep=self._sleep,
            reraise=True,
        )

    async def get_json(self, url: str, tally: Tally, parse: Callable[[Any, str], T]) -> T:
        """GET ``url``, decode its JSON body and ``parse(payload, url)`` it, retrying what is transient.

        A body that does not decode, or that ``parse`` rejects with ``TransientError``, is retried.
        """
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        async for attempt in self._retrying(tally):
            with attempt:
                body = await self._attempt(url, tally, timeout, self._read_body)
                try:
                    payload = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise TransientError(f"invalid JSON ({exc})", url) from exc
                return parse(payload, url)
        raise AssertionError("unreachable")  # pragma: no cover

    async def download(self, url: str, dest: Path, tally: Tally) -> int:
        """Stream ``url`` to ``dest`` (temp file + rename, never half-written); return its size."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.options.timeout, sock_read=self.options.timeout
        )

        async def save(response: aiohttp.ClientResponse, url: str) -> tuple[int, int]:
            size = await _stream_to_file(response, url, dest)
            return size, size

        async for attempt in self._retrying(tally):
            with attempt:
                return await self._attempt(url, tally, timeout, save)
        raise AssertionError("unreachable")  # pragma: no cover

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
            try:
                async with self.session.get(URL(url, encoded=True), timeout=timeout) as resp:
                    _check_status(resp, url)
                    result, size = await consume(resp, url)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise TransientError(_describe(exc), url) from exc
            except aiohttp.ClientError as exc:
                raise FetchError(_describe(exc), url) from exc
        tally.bytes += size
        return result

    @staticmethod
    async def _read_body(resp: aiohttp.ClientResponse, url: str) -> tuple[bytes, int]:
        _check_length(resp, url, MAX_JSON_BYTES)
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > MAX_JSON_BYTES:
                raise FetchError(f"response larger than {MAX_JSON_BYTES} bytes", url)
        return bytes(body), len(body)


def _check_status(resp: aiohttp.ClientResponse, url: str) -> None:
    status = resp.status
    if status == 429 or status >= 500:
        raise TransientError(f"HTTP {status} {resp.reason or ''}".rstrip(), url)
    if status >= 400:
        raise HTTPStatusError(f"HTTP {status} {resp.reason or ''}".rstrip(), url, status)


def _check_length(resp: aiohttp.ClientResponse, url: str, limit: int) -> None:
    if resp.content_length is not None and resp.content_length > limit:
        raise FetchError(f"response of {resp.content_length} bytes exceeds the {limit} limit", url)


async def _stream_to_file(resp: aiohttp.ClientResponse, url: str, dest: Path) -> int:
    _check_length(resp, url, MAX_VOLUME_BYTES)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    size = 0
    try:
        with tmp.open("wb") as fh:
            async for chunk in resp.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > MAX_VOLUME_BYTES:
                    raise FetchError(f"download larger than {MAX_VOLUME_BYTES} bytes", url)
                fh.write(chunk)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
