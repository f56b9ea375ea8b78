"""Shared fixtures and helpers: the emulator and hand-written servers on loopback sockets, the
seed's reference output, a recording sleep, a recording ``Events``, and subprocess helpers that
never block unbounded (``run_cli``; ``EmulatorProcess``, shared with the benchmarks)."""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import asyncdl
import asyncdl.cache
from asyncdl.emulator import Emulator
from asyncdl.events import HOOKS

# Shared with the benchmarks (which must not import tests), and imported by the tests from here.
from benchmarks.server import EmulatorProcess as EmulatorProcess
from benchmarks.server import interruptible as interruptible

from .seed_port import SeedReference

SHARED = Path(__file__).resolve().parents[2] / "shared"
SEED_ID = 156394513


def command(*args: object) -> list[str]:
    """The argv of ``python -m asyncdl ARGS``, for subprocess tests."""
    return [sys.executable, "-m", "asyncdl", *map(str, args)]


def run_cli(
    *args: object,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 300,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m asyncdl ARGS`` to its end, its output captured as text; killed (and the test
    failed) after ``timeout`` seconds.

    Warnings are errors in it, as in the tests (``PYTHONWARNINGS=error``). ``env`` adds to or
    replaces variables of this process's environment. Its stdin is ``input``, or empty: never the
    terminal, so a command that reads it cannot wait for one.
    """
    return subprocess.run(
        command(*args),
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "error", **(env or {})},
    )


def server_args(emulator: Emulator) -> list[str]:
    """The options that point a command at ``emulator`` (API and archive)."""
    return ["--base-url", emulator.base_url, "--archive-url", emulator.base_url]


def _written(paths: Sequence[Path], min_bytes: int) -> bool:
    return any(p.exists() and p.stat().st_size >= min_bytes for p in paths)


def wait_for_answers(
    paths: Sequence[Path], running: Callable[[], bool], *, min_bytes: int = 1, seconds: float = 120
) -> None:
    """Until one of these ``lines.ndjson`` holds ``min_bytes`` (answers are being written): the
    moment to interrupt a run. Fails if the run ends first or nothing comes within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not _written(paths, min_bytes):
        assert running(), "the run ended before any answer was written"
        assert time.monotonic() < deadline, f"no answer was written within {seconds:g} s"
        time.sleep(0.02)


async def answers_written(
    paths: Sequence[Path], running: Callable[[], bool], *, seconds: float = 120
) -> None:
    """``wait_for_answers`` for async tests: the run goes on in the same event loop meanwhile."""
    deadline = time.monotonic() + seconds
    while not _written(paths, 1):
        assert running(), "the run ended before any answer was written"
        assert time.monotonic() < deadline, f"no answer was written within {seconds:g} s"
        await asyncio.sleep(0.02)


class Recorder(asyncdl.Events):
    """Records every hook a run calls, in order: ``calls`` holds ``(hook, {argument: value})``.

    Each hook of ``Events`` is recorded, those added later too, with its arguments copied
    (shallowly) when called, so a mapping the run changes afterwards is kept as it was.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def of(self, hook: str) -> list[dict[str, Any]]:
        """The arguments of each call of ``hook``, in order."""
        assert callable(getattr(asyncdl.Events, hook, None)), f"Events has no hook {hook!r}"
        return [arguments for name, arguments in self.calls if name == hook]

    @property
    def retries(self) -> list[dict[str, Any]]:
        """Each retry: ``data_set``, ``url``, ``error``, ``wait``."""
        return self.of("retry")

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Each target failed for good: ``data_set``, ``rank``, ``error``."""
        return self.of("target_failed")

    @property
    def done(self) -> list[asyncdl.DataSetResult]:
        """The result of each finished data set, in the order they finished."""
        return [call["result"] for call in self.of("data_set_done")]

    @property
    def shares(self) -> list[dict[str, int]]:
        """Each new sharing of -c among Dask workers (by address)."""
        return [call["shares"] for call in self.of("shares_changed")]


def _recording(hook: str) -> Callable[..., None]:
    signature = inspect.signature(getattr(asyncdl.Events, hook))

    def record(self: Recorder, *args: Any, **kwargs: Any) -> None:
        arguments = signature.bind(self, *args, **kwargs).arguments
        del arguments["self"]
        self.calls.append((hook, {k: copy.copy(v) for k, v in arguments.items()}))

    return record


for _hook in HOOKS:
    setattr(Recorder, _hook, _recording(_hook))


class Sleeps:
    """An injectable sleep that records the waits instead of waiting (retry tests run instantly)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """``await serve(handler)``: a real server on a loopback port answering every GET with
    ``handler``; returns its base URL (no trailing slash). Closed after the test."""
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


class EmulatorThread:
    """An ``Emulator`` running in its own thread and event loop, usable from sync and async tests."""

    def __init__(self, **kwargs: Any) -> None:
        self.emulator = Emulator(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.emulator:
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Emulator:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("emulator did not start")
        return self.emulator

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="session", autouse=True)
def _no_user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Nothing in a test session touches the real user cache (~/.cache/asyncdl): the variables
    that place it point at a temporary folder, for this process and every process it starts
    (``run_cli``, ``EmulatorProcess`` and Dask workers inherit ``os.environ``), and for fixtures
    of any scope."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(asyncdl.cache.ENV_VAR, str(tmp_path_factory.mktemp("session-cache")))
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield Path(os.environ[asyncdl.cache.ENV_VAR])


@pytest.fixture(autouse=True)
def user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache a test's runs use by default: its own, empty (as each test's OUT/.cache was),
    outside ``tmp_path`` so that listing it finds only what the test wrote."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv(asyncdl.cache.ENV_VAR, str(cache))
    return cache


def source_dir(cache: Path, endpoints: asyncdl.Endpoints) -> Path:
    """The folder of ``endpoints``' data source in a cache folder."""
    return cache / asyncdl.cache.source_folder(endpoints.name)


#: The variables that send requests through a proxy (urllib, and so asyncdl, reads either case).
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


@pytest.fixture(scope="session", autouse=True)
def no_proxy_from_outside() -> Iterator[None]:
    """Every test talks to its servers directly unless it sets a proxy itself (with monkeypatch,
    or in a subprocess's environment, so that it cannot leak into the next test): a proxy set
    on the machine running the suite must not reroute it."""
    with pytest.MonkeyPatch.context() as mp:
        for name in PROXY_VARIABLES:
            mp.delenv(name, raising=False)
            mp.delenv(name.upper(), raising=False)
        yield


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    with EmulatorThread(latency_ms=2.0, latency_spread=0.9, record=True) as emu:
        yield emu


@pytest.fixture
def emulator(emulator_server: Emulator) -> Emulator:
    """The session's emulator with its statistics reset for this test."""
    emulator_server.stats.reset()
    return emulator_server


@pytest.fixture(scope="module")
def https_server() -> Iterator[Emulator]:
    """An https emulator (a certificate made at start) for a test module."""
    with EmulatorThread(tls=True) as emu:
        yield emu


@pytest.fixture
def https(https_server: Emulator) -> Emulator:
    """The module's https emulator with its counters reset for this test."""
    https_server.stats.reset()
    return https_server


@pytest.fixture(scope="session")
def seed_reference(emulator_server: Emulator) -> Iterator[Any]:
    """``reference(id, volumes)``: the seed's data.json for a data set, computed once per session."""
    ref = SeedReference(emulator_server.base_url)
    cache: dict[tuple[int, str], dict[str, Any]] = {}

    def reference(data_set: int = SEED_ID, volumes: str = "nrrd") -> dict[str, Any]:
        if (data_set, volumes) not in cache:
            cache[(data_set, volumes)] = ref.data(data_set, volumes)
        return cache[(data_set, volumes)]

    yield reference
