"""A local emulator of the Allen API, for tests, benchmarks, demos and offline work.

async with Emulator(latency_ms=50) as emu:
    await asyncdl.fetch([156394513], "out", endpoints=emu.endpoints)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType

from aiohttp import web

from ..urls import Endpoints
from .app import EmulatorApp, Stats
from .catalog import CATALOGUE_IDS, TotalRows
from .faults import KINDS as FAULT_KINDS
from .faults import FaultPlan
from .synthetic import DATA_SET_IDS

__all__ = [
    "CATALOGUE_IDS",
    "DATA_SET_IDS",
    "FAULT_KINDS",
    "Emulator",
    "FaultPlan",
    "Stats",
    "serve",
]


class Emulator:
    """The emulator as a real server on a loopback socket (port 0 picks a free one)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        latency_spread: float = 0.2,
        data_sets: Iterable[int] = CATALOGUE_IDS,
        record: bool = False,
        faults: FaultPlan | None = None,
        search_total_rows: TotalRows = "matches",
    ) -> None:
        self.host = host
        self.port = port
        self.app = EmulatorApp(
            latency_ms=latency_ms,
            latency_spread=latency_spread,
            data_sets=data_sets,
            record=record,
            faults=faults,
            search_total_rows=search_total_rows,
        )
        self._runner: web.AppRunner | None = None

    @property
    def stats(self) -> Stats:
        return self.app.stats

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def endpoints(self) -> Endpoints:
        """Both the API and the file archive are served here."""
        return Endpoints(base_url=self.base_url, archive_url=self.base_url, name="asyncdl-emulator")

    async def start(self) -> None:
        runner = web.AppRunner(self.app.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024, reuse_address=True)
        await site.start()
        self._runner = runner
        if self.port == 0:
            server = site._server
            assert isinstance(server, asyncio.Server)
            self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    latency_ms: float = 0.0,
    latency_spread: float = 0.2,
    faults: FaultPlan | None = None,
) -> None:
    """Run the emulator until cancelled, printing where it listens."""
    async with Emulator(
        host=host, port=port, latency_ms=latency_ms, latency_spread=latency_spread, faults=faults
    ) as emu:
        print(
            f"asyncdl emulator listening on {emu.base_url} ({len(emu.app.data_sets)} data sets, "
            f"e.g. {', '.join(map(str, DATA_SET_IDS))})",
            flush=True,
        )
        await asyncio.Event().wait()
