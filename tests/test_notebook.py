"""asyncdl in a real Jupyter kernel: notebooks executed by nbclient on ipykernel, whose cells run
while the kernel's event loop runs, against the test's emulator (each notebook gets its URL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from .conftest import SEED_ID, answers_written

CONCURRENCY = 2  # the interrupted run: slow enough to be caught half-way


def setup_cell(emulator: Any, out: Any) -> str:
    return f"""\
import asyncio, logging, sys, threading
import asyncdl
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
ENDPOINTS = asyncdl.Endpoints({emulator.base_url!r}, {emulator.base_url!r})
OUT = {str(out)!r}
asyncio.get_running_loop().is_running()  # where asyncio.run and run_until_complete refuse to run"""


@pytest.fixture
async def kernel(tmp_path) -> AsyncIterator[Any]:
    """A kernel started for the test, and the notebook ``execute`` adds cells to."""
    nb = new_notebook()
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=240,
        allow_error_names=["KeyboardInterrupt"],
        resources={"metadata": {"path": str(tmp_path)}},
    )
    async with client.async_setup_kernel():
        yield client


async def execute(client: NotebookClient, source: str) -> Any:
    """Run one more cell in the client's kernel; its outputs, as nbformat nodes."""
    nb = client.nb
    nb.cells.append(new_code_cell(source))
    index = len(nb.cells) - 1
    await client.async_execute_cell(nb.cells[index], index)
    return nb.cells[index].outputs


def text(outputs: Any, kind: str) -> str:
    """What the outputs of ``kind`` show: a stream's name (stdout, stderr) or ``display``."""
    parts = []
    for output in outputs:
        if output.output_type == "stream" and output.name == kind:
            parts.append(output.text)
        elif output.output_type in ("display_data", "execute_result") and kind == "display":
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def errors(outputs: Any) -> list[str]:
    return [output.ename for output in outputs if output.output_type == "error"]


async def test_fetch_sync_in_a_cell_with_progress_and_logging(
    kernel, emulator, seed_reference, tmp_path
):
    out = tmp_path / "data"
    [loop] = await execute(kernel, setup_cell(emulator, out))
    assert loop.data["text/plain"] == "True"  # the premise: the cell runs inside a running loop
    outputs = await execute(
        kernel,
        f"[result] = asyncdl.fetch_sync([{SEED_ID}], OUT, endpoints=ENDPOINTS, progress=True)\n"
        "print(result.status, result.targets, result.lines)",
    )
    assert errors(outputs) == []
    data = orjson.loads((out / str(SEED_ID) / "data.json").read_bytes())
    assert data == seed_reference()
    summary = orjson.loads((out / str(SEED_ID) / "summary.json").read_bytes())
    targets = summary["targets"]
    assert text(outputs, "stdout") == f"ok {targets} {summary['lines']}\n"
    # The log: an INFO record per finished data set and one for the run, as configured above.
    log = text(outputs, "stderr").splitlines()
    assert log[0].startswith(f"INFO asyncdl: {SEED_ID}: ok: {targets} targets")
    assert log[-1].startswith("INFO asyncdl: 1 of 1 data sets complete")
    # The progress: the bars drawn in place (one output, updated through its display id) and
    # left complete, then the data set's line and the table.
    shown = text(outputs, "display")
    assert "1/1 sets" in shown and f"{targets}/{targets}" in shown and "req/s" in shown
    assert shown.count(f"{SEED_ID}: ok: {targets} targets") == 1
    assert "data set" in shown and "status" in shown
    assert "ipywidgets" not in str(outputs)  # no widget needed, no warning about one


async def test_an_interrupted_cell_stops_the_run_and_the_next_one_resumes(
    kernel, emulator, seed_reference, tmp_path
):
    out = tmp_path / "data"
    await execute(kernel, setup_cell(emulator, out))
    fetch = (
        f"[result] = asyncdl.fetch_sync([{SEED_ID}], OUT, endpoints=ENDPOINTS, "
        f"options=asyncdl.FetchOptions(concurrency={CONCURRENCY}))"
    )
    cell = asyncio.create_task(execute(kernel, fetch))
    try:
        await answers_written([out / str(SEED_ID) / "lines.ndjson"], lambda: not cell.done())
        await kernel.km.interrupt_kernel()  # the notebook's stop button: SIGINT to the kernel
        interrupted = time.monotonic()
        outputs = await asyncio.wait_for(cell, 120)
    finally:
        cell.cancel()
    assert errors(outputs) == ["KeyboardInterrupt"]
    # The run stopped, not just the cell: the server saw no more than the requests already on
    # their way when it was cancelled, and the worker thread is gone.
    after = [entry for entry in emulator.stats.log or [] if entry[2] > interrupted]
    assert len(after) <= 4 * CONCURRENCY, f"{len(after)} requests after the interrupt"
    threads = await execute(kernel, "[t.name for t in threading.enumerate()]")
    assert "asyncdl-run" not in threads[0].data["text/plain"]
    assert not (out / str(SEED_ID) / "data.json").exists()
    # The same call resumes, and the result is the one an uninterrupted run makes.
    outputs = await execute(kernel, fetch + "\nprint(result.status, result.resumed)")
    status, resumed = text(outputs, "stdout").split()
    assert status == "ok" and int(resumed) > 0
    assert orjson.loads((out / str(SEED_ID) / "data.json").read_bytes()) == seed_reference()
