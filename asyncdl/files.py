"""Writing files safely: a final path never holds a half-written file, and a failed write is a
``StorageError`` that names the path (never a bare ``OSError`` from deep inside a run)."""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import StorageError

#: Temp files are ``.<name>.<pid>.<random>.tmp`` beside their final path; stale ones match this.
TEMP_GLOB = ".*.tmp"


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into a ``StorageError`` naming it."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}", str(path)) from exc


def temp_path(path: Path) -> Path:
    """A new temp file's path beside ``path`` (``TEMP_GLOB``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


class AtomicFile:
    """A temp file in the same folder as ``path``; ``publish`` fsyncs it and renames it there.

    Only opening, syncing and renaming are mapped to ``StorageError`` here; the caller wraps its
    own writes in ``writing`` (an ``OSError`` in its body may be a network error, not the disk's).
    """

    def __init__(self, path: Path, *, buffering: int = -1) -> None:
        self.path = path
        self.tmp = temp_path(path)
        with writing(path):
            self.fh: BinaryIO = self.tmp.open("wb", buffering=buffering)

    def publish(self, *, keep_open: bool = False) -> None:
        """Make the file whole at ``path``; with ``keep_open``, go on appending through ``fh``."""
        with writing(self.path):
            self.fh.flush()
            os.fsync(self.fh.fileno())
            if not keep_open:
                self.fh.close()
            os.replace(self.tmp, self.path)

    def discard(self) -> None:
        try:
            self.fh.close()  # flushes what is buffered, which fails again on a full disk
        except OSError:
            pass
        finally:
            self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file to write that appears at ``path`` only when whole: temp file in the same folder,
    fsync, rename. On any error the temp file is removed and ``path`` is left as it was."""
    file = AtomicFile(path)
    try:
        yield file.fh
        file.publish()
    except BaseException:
        file.discard()
        raise


@asynccontextmanager
async def atomic_file_async(path: Path) -> AsyncIterator[BinaryIO]:
    """``atomic_file`` for the event loop: the fsync and the rename run in a thread."""
    file = AtomicFile(path)
    try:
        yield file.fh
        await asyncio.to_thread(file.publish)
    except BaseException:
        file.discard()
        raise


def atomic_write(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` atomically (see ``atomic_file``)."""
    with atomic_file(path) as fh:
        for chunk in chunks:
            with writing(path):
                fh.write(chunk)


def append(fh: BinaryIO, data: bytes, path: Path) -> None:
    """Append all of ``data`` to an unbuffered file: a raw write may be partial (disk full)."""
    view = memoryview(data)
    with writing(path):
        while view:
            written = fh.write(view)
            if not written:
                raise OSError(errno.EIO, "a write made no progress")
            view = view[written:]
