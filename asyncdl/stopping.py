"""How a command stops on a signal: the first Ctrl-C or SIGTERM cancels it, so that what is open
gets closed and the same command resumes; a second one ends the process at once, quietly.

Ending at once is safe because everything asyncdl writes survives a SIGKILL: final files appear
whole or not at all (temp file, then rename), answers are appended a line at a time and a line cut
short is dropped on resume, and the kernel lets go of the data sets' locks. A temp file left behind
is removed by the next run that holds its data set's lock.

``asyncio.Runner``'s own Ctrl-C handling is not used: it puts the default handler back as soon as
the command's task has ended, while the loop is still being shut down (it waits for threads, such as
one writing ``data.json``), so a second Ctrl-C there raised ``KeyboardInterrupt`` inside the loop's
machinery (with uvloop, a traceback: "Event loop is closed").
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Awaitable
from types import FrameType, TracebackType
from typing import TypeVar

from .exits import Exit

T = TypeVar("T")

#: What each signal is called in messages, and the status a command stopped by it ends with.
STOPS = {
    signal.SIGINT: ("interrupted", Exit.INTERRUPTED),
    signal.SIGTERM: ("terminated", Exit.TERMINATED),
}


class Stopper:
    """Handles SIGINT and SIGTERM while entered (in the main thread; elsewhere it does nothing),
    and after, once a signal has stopped the command, until the process ends.

    A signal that was ignored when the process started stays ignored, as a shell's background job
    expects of its Ctrl-C.
    """

    def __init__(self) -> None:
        #: The first signal received, if any.
        self.signal: signal.Signals | None = None
        self._task: asyncio.Task[object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for signum in STOPS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.signal is not None:
            return  # stopped by a signal, the process is ending: a further one ends it at once
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    async def run(self, command: Awaitable[T]) -> T:
        """Await ``command`` as the task that the first signal cancels."""
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        try:
            return await command
        finally:
            self._task = None

    @property
    def how(self) -> str:
        """``interrupted`` or ``terminated``, as the first signal says."""
        return STOPS[self.signal or signal.SIGINT][0]

    @property
    def status(self) -> Exit:
        return STOPS[self.signal or signal.SIGINT][1]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal is None
        if first:
            self.signal = signal.Signals(signum)
        task, loop = self._task, self._loop
        if first and task is not None and loop is not None and not task.done():
            task.cancel()
            loop.call_soon_threadsafe(lambda: None)  # wake the loop if it waits in select()
            return
        # A second signal, or one with no command running to cancel: end now. os.write and
        # os._exit, not print and sys.exit: this may run in the middle of anything, even a print.
        how, status = STOPS[signal.Signals(signum)]
        again = " again" if not first else ""
        line = f"asyncdl: {how}{again}; stopped at once; run the same command again to resume\n"
        if sys.stderr is not None and sys.stderr.isatty():
            line = "\x1b[?25h\n" + line  # the progress display hides the cursor: show it
        try:
            os.write(2, line.encode())
        finally:
            os._exit(status)
