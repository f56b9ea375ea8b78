"""Shared fixtures: the emulator as a real server on a loopback socket, and the seed's reference output."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncdl.emulator import Emulator

from .seed_port import SeedReference

SHARED = Path(__file__).resolve().parents[2] / "shared"
SEED_ID = 156394513


def command(*args: object) -> list[str]:
    """The argv of ``python -m asyncdl ARGS``, for subprocess tests."""
    return [sys.executable, "-m", "asyncdl", *map(str, args)]


def server_args(emulator: Emulator) -> list[str]:
    """The options that point a command at ``emulator`` (API and archive)."""
    return ["--base-url", emulator.base_url, "--archive-url", emulator.base_url]


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


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    with EmulatorThread(latency_ms=2.0, latency_spread=0.9, record=True) as emu:
        yield emu


@pytest.fixture
def emulator(emulator_server: Emulator) -> Emulator:
    """The session's emulator with its statistics reset for this test."""
    emulator_server.stats.reset()
    return emulator_server


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
