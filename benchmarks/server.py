"""The emulator in a process of its own (``python -m asyncdl emulate``), for the benchmarks and the
tests: a contender's CPU time and memory stay its own, and a test can stop a server it shares.

Standard library only, and it does not import asyncdl: the benchmark runner imports it, and the
runner's memory is a floor under each contender's peak RSS (see ``measure``); ``import asyncdl``
(aiohttp, numpy) would double it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from .procstat import cpu_seconds

if TYPE_CHECKING:
    from asyncdl.urls import Endpoints

ANNOTATION = "/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/annotation_25.nrrd"
STRUCTURE_GRAPH = "/api/v2/structure_graph_download/1.json"
GRID = "/grid_data/download_file/{id}?image={image}&resolution=100"
TARGET = (
    "/api/v2/data/query.json?criteria=service::mouse_connectivity_target_spatial"
    "[seed_point$eq{x},{y},{z}][section_data_set$eq{id}]"
)
#: Points inside the synthetic brain: a few per data set make the server build its density grid.
_WARM_POINTS = ((6600, 3900, 5700), (5000, 4000, 3000), (8000, 3000, 8000))

# What `asyncdl emulate` prints when it is ready (asyncdl.emulator.serve); whole lines only, so
# that a port or a path is never read half-written.
_LISTENING = re.compile(r"^asyncdl emulator listening on (\S+)[^\n]*\n", re.M)
_CA_FILE = re.compile(r"^asyncdl emulator's CA certificate: (\S+)[^\n]*\n", re.M)

# Resets SIGINT to its default, then becomes the command given after it.
_SIGINT_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def interruptible(argv: Sequence[str]) -> list[str]:
    """``argv`` started with SIGINT at its default action, so that a Ctrl-C (SIGINT) reaches it.

    A shell without job control starts a background job (``pytest &`` in a script) with SIGINT
    ignored, and every child inherits that, so Python would not even turn a Ctrl-C into a
    ``KeyboardInterrupt``. A terminal's foreground job has SIGINT at its default, as here.
    """
    return [sys.executable, "-c", _SIGINT_DEFAULT, *argv]


class EmulatorProcess:
    """``python -m asyncdl emulate --port 0 OPTIONS`` in a process of its own; use as ``with``.

    ``options`` are the command's own (``"--latency-ms", 20``, ``"--tls"``), so a new option of
    ``emulate`` needs no change here. Entering waits until it says where it listens (and, with
    ``--tls``, where its CA file is); leaving stops it with SIGINT, as a Ctrl-C would, then SIGKILL.
    Its output goes to ``log`` (an anonymous temporary file by default), never to a pipe, so
    nothing it prints can ever block it.
    """

    def __init__(
        self,
        *options: object,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.argv = [sys.executable, "-m", "asyncdl", "emulate", "--port", "0", *map(str, options)]
        self.log = log
        self._env = env
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._out: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        #: ``http(s)://127.0.0.1:PORT``, once started.
        self.base_url = ""
        #: The CA certificate (PEM) that clients must trust, when serving https.
        self.ca_file: Path | None = None

    def __enter__(self) -> EmulatorProcess:
        self._out = self.log.open("w+b") if self.log is not None else tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                interruptible(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                env=self._env,
            )
            self._wait_until_listening()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            text = self.output()
            if listening := _LISTENING.search(text):
                self.base_url = listening.group(1)
                if not self.base_url.startswith("https:"):
                    return
                if ca_file := _CA_FILE.search(text):
                    self.ca_file = Path(ca_file.group(1))
                    return
            assert self._proc is not None
            exited = self._proc.poll() is not None
            if exited or time.monotonic() > deadline:
                how = "exited" if exited else f"did not start within {self._start_timeout:g} s"
                raise RuntimeError(f"asyncdl emulate {how}; its output:\n{text}")
            time.sleep(0.05)

    def stop(self) -> int:
        """Stop it (SIGINT, then SIGKILL after ``stop_timeout`` s) and return its exit status."""
        assert self._proc is not None, "emulator was never started"
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(self._stop_timeout)
        return self._proc.returncode

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._proc is not None:
                self.stop()
        finally:
            if self._out is not None:
                self._out.close()

    def output(self) -> str:
        """Everything it has printed so far (stdout and stderr), while inside the ``with``."""
        assert self._out is not None, "emulator was never started"
        fd = self._out.fileno()
        # pread: the child shares this file's offset, which a read or seek here would move.
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    @property
    def pid(self) -> int:
        assert self._proc is not None, "emulator is not running"
        return self._proc.pid

    @property
    def endpoints(self) -> Endpoints:
        """The API and the file archive, both served here (for asyncdl's Python API)."""
        from asyncdl.urls import Endpoints  # only for its callers: see the module's docstring

        return Endpoints(self.base_url, self.base_url, name="asyncdl-emulator")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=60) as response:
            body: bytes = response.read()
            return body

    def stats(self) -> dict[str, Any]:
        """The emulator's counters: ``requests`` per route, ``in_flight``, ``peak_in_flight``."""
        stats: dict[str, Any] = json.loads(self.get("/__emulator__/stats"))
        return stats

    def cpu_seconds(self) -> float:
        """CPU time its process has used so far."""
        return cpu_seconds(self.pid)

    def target_requests(self) -> int:
        """Spatial searches served so far (the emulator names that route ``query``)."""
        return int(self.stats()["requests"].get("query", 0))

    def warm_up(self, data_sets: Iterable[int]) -> None:
        """Have the server build every file and cache it would otherwise build in a timed run."""
        self.get(ANNOTATION)
        self.get(STRUCTURE_GRAPH)
        for data_set in data_sets:
            for image in ("projection_density", "injection_fraction"):
                self.get(GRID.format(id=data_set, image=image))
            for x, y, z in _WARM_POINTS:
                self.get(TARGET.format(x=x, y=y, z=z, id=data_set))
