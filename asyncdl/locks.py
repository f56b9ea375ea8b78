"""One process at a time in a data set's folder: a kernel lock on ``OUT/<id>/.lock``.

The lock is ``flock``'s: the kernel holds it for an open file and drops it when the process ends,
however it ends (SIGKILL, a crash, a lost Dask worker), so there is never a stale lock to clean up.
Who holds it (pid, host, since when, doing what) is written into the file for messages only; the
lock itself is never read from the file. On Linux, ``flock`` on NFS is carried by NFS's own
byte-range locks, so the lock also holds between machines that share ``OUT``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

#: The lock file in each data set's folder.
LOCK = ".lock"
#: How often a run that waits for a data set (``--wait``) tries its lock again.
POLL_SECONDS = 0.5
#: Enough for any holder record; a longer file is not one of ours.
_MAX_RECORD = 1024


@dataclass(frozen=True)
class Holder:
    """The process that holds a lock, as it wrote itself down (any field may be unknown)."""

    pid: int | None = None
    host: str | None = None
    since: datetime | None = None
    #: What it is doing with the data set: ``fetching``, ``verifying``, ``exporting``.
    doing: str | None = None

    def __str__(self) -> str:
        who = f"process {self.pid}" if self.pid is not None else "another process"
        if self.host:
            who += f" on {self.host}"
        if self.since is not None:
            who += f" (since {self.since.astimezone():%Y-%m-%d %H:%M:%S})"
        if self.doing is not None:
            who += f", which is {self.doing} it"
        return who


class FolderLock:
    """The lock of one folder, taken without waiting (``acquire``) and held until ``release``.

    Two ``FolderLock`` objects on one folder exclude each other even within one process (on a
    local file system; NFS's locks are per process).
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, doing: str) -> Holder | None:
        """Take the lock if it is free (``None``), for ``doing`` (e.g. ``"fetching"``: what a
        process that finds it held is told); otherwise leave it and say who holds it.

        Taking a lock already held here returns ``None`` too. The folder is created if needed.
        """
        if self._fd is not None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            return holder
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now().astimezone().isoformat(timespec="seconds"),
            "doing": doing,
        }
        with contextlib.suppress(OSError):  # a full disk: the lock holds; the message says less
            os.ftruncate(fd, 0)
            os.pwrite(fd, orjson.dumps(record), 0)
        return None

    def release(self) -> None:
        """Let the lock go (its record is emptied first: a free lock names nobody)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor of the open file drops the flock


def _open(path: Path) -> int:
    """The lock file, made if needed (with the umask's permissions, as any other file of the data
    set). Not truncated: that would wipe the holder's record before the lock says who won. A file
    that another user made and this one may not write is locked read-only (flock allows it), and
    its record is then not written."""
    flags = os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, os.O_RDWR | flags, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY | flags, 0o666)


def _read_holder(fd: int) -> Holder:
    """What the holder wrote about itself; whatever cannot be read is left unknown."""
    try:
        record = orjson.loads(os.pread(fd, _MAX_RECORD, 0))
    except (OSError, orjson.JSONDecodeError):
        return Holder()  # not written yet (it has only just taken the lock), or damaged
    if not isinstance(record, dict):
        return Holder()
    pid, host, since, doing = (record.get(k) for k in ("pid", "host", "since", "doing"))
    try:
        when = datetime.fromisoformat(since) if isinstance(since, str) else None
    except ValueError:
        when = None
    if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(host, str):
        return Holder()
    if host == socket.gethostname() and not _alive(pid):
        return Holder()  # an earlier holder's record: the one holding it now has not written yet
    known = isinstance(doing, str) and doing.isalpha() and len(doing) <= 20  # a word, no more
    return Holder(pid, host, when, doing if known else None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's, say)
    return True
