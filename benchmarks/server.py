"""The emulator as a separate process, so that a contender's CPU time and memory are its own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from .procstat import cpu_seconds

ANNOTATION = "/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/annotation_25.nrrd"
STRUCTURE_GRAPH = "/api/v2/structure_graph_download/1.json"
GRID = "/grid_data/download_file/{id}?image={image}&resolution=100"
TARGET = (
    "/api/v2/data/query.json?criteria=service::mouse_connectivity_target_spatial"
    "[seed_point$eq{x},{y},{z}][section_data_set$eq{id}]"
)
_START_TIMEOUT_S = 60.0
#: Points inside the synthetic brain: a few per data set make the server build its density grid.
_WARM_POINTS = ((6600, 3900, 5700), (5000, 4000, 3000), (8000, 3000, 8000))


class EmulatorProcess:
    """``python -m asyncdl emulate`` on a free loopback port, fixed latency (or varying by
    ``spread``), of unlimited capacity or ``capacity`` handlers (shedding at ``shed_queue``);
    use as ``with``."""

    def __init__(
        self,
        latency_ms: float,
        log: Path,
        env: dict[str, str] | None = None,
        *,
        spread: float = 0.0,
        capacity: int | None = None,
        shed_queue: int | None = None,
    ) -> None:
        self.latency_ms = latency_ms
        self.log = log
        self._env = env
        self._options = ["--latency-ms", str(latency_ms), "--latency-spread", str(spread)]
        if capacity is not None:
            self._options += ["--capacity", str(capacity)]
        if shed_queue is not None:
            self._options += ["--shed-queue", str(shed_queue)]
        self._proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def __enter__(self) -> EmulatorProcess:
        argv = [sys.executable, "-m", "asyncdl", "emulate", "--port", "0", *self._options]
        # Output goes to a file, not a pipe, so that nothing the server prints can ever block it.
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self._env)
        deadline = time.monotonic() + _START_TIMEOUT_S
        banner = re.compile(r"(http://[\w.:]+).*\n")  # a whole line: the port is complete
        while not (match := banner.search(self.log.read_text(errors="replace"))):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"emulator did not start; see {self.log}")
            time.sleep(0.05)
        self.base_url = match.group(1)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=30)
            self._proc = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "emulator is not running"
        return self._proc.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=60) as response:
            body: bytes = response.read()
            return body

    def stats(self) -> dict[str, Any]:
        """The emulator's counters: ``requests`` per route, ``in_flight``, ``peak_in_flight``."""
        stats: dict[str, Any] = json.loads(self.get("/__emulator__/stats"))
        return stats

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
