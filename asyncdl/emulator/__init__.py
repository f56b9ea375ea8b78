"""A local emulator of the Allen API, for tests, benchmarks, demos and offline work.

async with Emulator(latency_ms=50) as emu:
    await asyncdl.fetch([156394513], "out", endpoints=emu.endpoints)

With ``tls=True`` it serves https with a certificate made for it (needs the ``emulator-tls``
extra); clients trust it through the CA file ``emu.ca_file``, e.g. ``FetchOptions(ca_bundle=...)``.

With ``capacity=K`` it works on at most K requests at once, each for the latency, and queues the
rest; with ``shed_queue=Q`` too, it answers 503 to a request that finds Q queued. ``emu.stats.queue``
(and ``/__emulator__/stats``) says what waits it imposed.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from aiohttp import web

from ..urls import Endpoints
from .app import EmulatorApp, Stats
from .capacity import QueueStats
from .catalog import CATALOGUE_IDS, TotalRows
from .faults import KINDS as FAULT_KINDS
from .faults import FaultPlan
from .synthetic import DATA_SET_IDS
from .tls import Certificates, make_certificates

__all__ = [
    "CATALOGUE_IDS",
    "DATA_SET_IDS",
    "FAULT_KINDS",
    "Certificates",
    "Emulator",
    "FaultPlan",
    "QueueStats",
    "Stats",
    "make_certificates",
    "serve",
]


class Emulator:
    """The emulator as a real server on a loopback socket (port 0 picks a free one).

    ``tls``: serve https, with a certificate made now (``True``) or the given ``Certificates``.
    """

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
        tls: bool | Certificates = False,
        capacity: int | None = None,
        shed_queue: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        #: The certificates served over https; None for plain http.
        self.certificates = make_certificates() if tls is True else tls or None
        self.app = EmulatorApp(
            latency_ms=latency_ms,
            latency_spread=latency_spread,
            data_sets=data_sets,
            record=record,
            faults=faults,
            search_total_rows=search_total_rows,
            capacity=capacity,
            shed_queue=shed_queue,
        )
        self._runner: web.AppRunner | None = None
        self._tls_dir: Path | None = None

    @property
    def stats(self) -> Stats:
        return self.app.stats

    @property
    def base_url(self) -> str:
        scheme = "https" if self.certificates is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        """The PEM file of the CA that signed the server's certificate, while serving https."""
        return self._tls_dir / "ca.pem" if self._tls_dir is not None else None

    @property
    def endpoints(self) -> Endpoints:
        """Both the API and the file archive are served here."""
        return Endpoints(base_url=self.base_url, archive_url=self.base_url, name="asyncdl-emulator")

    async def start(self) -> None:
        context = self._tls_context() if self.certificates is not None else None
        runner = web.AppRunner(self.app.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner, self.host, self.port, backlog=1024, reuse_address=True, ssl_context=context
        )
        await site.start()
        self._runner = runner
        if self.port == 0:
            self.port = runner.addresses[0][1]

    def _tls_context(self) -> ssl.SSLContext:
        """Write the CA (for clients) and the server's PEM to a private directory, and load it."""
        assert self.certificates is not None
        self._tls_dir = Path(tempfile.mkdtemp(prefix="asyncdl-emulator-"))
        (self._tls_dir / "ca.pem").write_bytes(self.certificates.ca_pem)
        context = self.certificates.server_context(self._tls_dir)
        stats = self.app.stats

        def handshake(connection: object, server_name: str | None, ctx: object) -> None:
            # Called at every ClientHello, SNI or not: the connections a client opened, counted
            # at the server, even those whose certificate the client then refused.
            stats.tls_handshakes += 1

        context.sni_callback = handshake
        return context

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

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
    tls: bool = False,
    capacity: int | None = None,
    shed_queue: int | None = None,
) -> None:
    """Run the emulator until cancelled, printing where it listens (and its CA file, for https)."""
    async with Emulator(
        host=host,
        port=port,
        latency_ms=latency_ms,
        latency_spread=latency_spread,
        faults=faults,
        tls=tls,
        capacity=capacity,
        shed_queue=shed_queue,
    ) as emu:
        print(
            f"asyncdl emulator listening on {emu.base_url} ({len(emu.app.data_sets)} data sets, "
            f"e.g. {', '.join(map(str, DATA_SET_IDS))})",
            flush=True,
        )
        if capacity is not None:
            shedding = f", shedding at {shed_queue} queued" if shed_queue is not None else ""
            print(
                f"asyncdl emulator capacity: {capacity} at once, the rest queued{shedding}; "
                f"queue waits in {emu.base_url}/__emulator__/stats",
                flush=True,
            )
        if emu.ca_file is not None:
            print(
                f"asyncdl emulator's CA certificate: {emu.ca_file} "
                "(give it to clients with --ca-bundle or SSL_CERT_FILE)",
                flush=True,
            )
        await asyncio.Event().wait()
