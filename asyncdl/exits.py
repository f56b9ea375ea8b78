"""The command line's exit statuses: one table, read by the code, ``--help`` and the docs."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """What an ``asyncdl`` command's exit status means (``meaning`` says it in words)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    STORAGE = 3
    TLS = 4
    DAMAGED = 5
    INTERRUPTED = 130
    TERMINATED = 143

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]

    @property
    def resumable(self) -> bool:
        """Whether everything answered so far is on disk and the same command resumes."""
        return self in (Exit.STORAGE, Exit.INTERRUPTED, Exit.TERMINATED)


_MEANINGS = {
    Exit.OK: "everything asked for was done",
    Exit.FAILED: "some targets or data sets failed (the rest is written), or a search failed",
    Exit.USAGE: "usage error: a bad id, option or output folder",
    Exit.STORAGE: "results or cache could not be written (disk full, permissions); the line names "
    "the file",
    Exit.TLS: "the server's TLS certificate did not verify (see --ca-bundle), or it does not "
    "speak TLS",
    Exit.DAMAGED: "verify or export found damaged data sets (a line each); the next fetch "
    "repairs them",
    Exit.INTERRUPTED: "interrupted (Ctrl-C)",
    Exit.TERMINATED: "terminated (SIGTERM)",
}


def help_text(statuses: tuple[Exit, ...] = tuple(Exit)) -> str:
    """The ``exit status:`` block of a command's ``--help``, for the statuses it can end with."""
    rows = [f"  {int(status):<4} {status.meaning}" for status in statuses]
    again = [str(int(s)) for s in statuses if s.resumable]
    if again:
        rows.append(f"  after {', '.join(again)}: run the same command again to resume")
    return "exit status:\n" + "\n".join(rows) + "\n"
