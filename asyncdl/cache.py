"""The user's volume cache: where it is, how it is laid out, a lock per entry, what it holds.

One cache per user, shared by every output folder and every process on the machine::

    CACHE/                          --cache-dir, else $ASYNCDL_CACHE_DIR, else the user's cache
      CACHEDIR.TAG                  folder (platformdirs: ~/.cache/asyncdl on Linux, honouring
      <source>/                     $XDG_CACHE_HOME); then one folder per data source
        annotation_25.nrrd          files every data set needs: they stay
        structure_graph_1.json
        fiber_mask_<hash>.npy
        grids/grid_<id>_<volume>.nrrd    a data set's own grids: they go once it is complete
        NAME.meta.json              beside each entry: its source key, size and SHA-256 (and a
                                    density grid's target counts, for a run's estimate)
        .NAME.lock                  beside each entry: its lock

An entry is written, and its temp files removed, only by the process holding its lock (``flock``,
which the kernel drops when a process dies, however it dies). So a download is made once: a second
process waits for the first and then reads what it cached; a temp file is never removed while the
process writing it lives; and what a killed process leaves is never trusted (no record matches it)
and is removed by the next holder. A lock file goes only with its entry, by the holder; a waiter
that then finds its file unlinked locks the new one (the inode is checked after locking).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import fnmatch
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import platformdirs

from .files import atomic_write, writing

#: Overrides the default location (``--cache-dir`` overrides it in turn).
ENV_VAR = "ASYNCDL_CACHE_DIR"
#: The folder of a data source's per-data-set grids, inside its source folder.
GRIDS = "grids"
#: Shared entries (every data set of a source needs them).
STRUCTURE_TREE = "structure_graph_1.json"
#: How often a process waiting for another's entry tries its lock again, in seconds.
POLL_SECONDS = 0.1
#: Marks the folder as a cache (https://bford.info/cachedir/): backup tools skip it, and
#: ``asyncdl cache remove/purge`` touch only a folder that has it.
TAG = "CACHEDIR.TAG"
_TAG_TEXT = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by asyncdl.\n"
    b"# For information about cache directory tags, see https://bford.info/cachedir/\n"
)
_META = ".meta.json"
_TEMP = re.compile(r"^\.(?P<name>.+?)(?:\.meta\.json)?\.\d+\.[0-9a-f]+\.tmp$")
_LOCK = re.compile(r"^\.(?P<name>.+)\.lock$")

Origin = Literal["--cache-dir", "ASYNCDL_CACHE_DIR", "default"]


def locate(given: str | Path | None = None) -> tuple[Path, Origin]:
    """The cache folder (absolute) and what chose it: ``given`` (``--cache-dir``), else
    ``$ASYNCDL_CACHE_DIR``, else the user's cache folder from platformdirs."""
    if given is not None and str(given):
        return Path(os.path.abspath(Path(given).expanduser())), "--cache-dir"
    if env := os.environ.get(ENV_VAR):
        return Path(os.path.abspath(Path(env).expanduser())), "ASYNCDL_CACHE_DIR"
    return platformdirs.user_cache_path("asyncdl", appauthor=False), "default"


def cache_root(given: str | Path | None = None) -> Path:
    """The cache folder a run uses (see ``locate``): the one place that decides it."""
    return locate(given)[0]


def source_folder(name: str) -> str:
    """The folder of a data source (``Endpoints.name``) in the cache: readable, one path segment.

    Sources never share one: the emulator's annotation must not replace the real one.
    """
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", re.sub(r"[a-z]+://", "", name)).strip("._") or "source"
    if len(slug) > 80:
        slug = f"{slug[:70]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return slug


def grid_entry(data_set: int, volume: str, extension: str) -> str:
    """The entry of a data set's ``density`` or ``injection`` grid (``nrrd`` or ``zip``)."""
    return f"{GRIDS}/grid_{int(data_set)}_{volume}.{extension}"


def mask_entry(key: str) -> str:
    """The entry of a fiber-tract mask, named by the digest of what it was built from."""
    return f"fiber_mask_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"


def meta_path(path: Path) -> Path:
    """The record beside an entry's file: its source key, size and SHA-256."""
    return path.with_name(path.name + _META)


def tag(root: Path) -> None:
    """Mark ``root`` as a cache folder (``TAG``), once."""
    if not (root / TAG).exists():
        atomic_write(root / TAG, [_TAG_TEXT])


# -- the lock of an entry -------------------------------------------------------------------------


class EntryLock:
    """The exclusive lock of one cache entry: ``flock`` on ``.NAME.lock`` beside it.

    ``async with`` waits for it (polling, so that waiting can be cancelled); ``try_acquire`` does
    not wait. Two ``EntryLock`` objects exclude each other in one process too.
    """

    def __init__(self, entry: Path) -> None:
        self.entry = entry
        self.path = entry.with_name(f".{entry.name}.lock")
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; ``False`` if another holds it."""
        assert self._fd is None, "already held"
        while True:
            with writing(self.path):
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                fd = os.open(self.path, flags, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = os.fstat(fd)
                try:
                    now = os.stat(self.path)
                except FileNotFoundError:
                    now = None
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                self._fd = fd
                return True
            os.close(fd)  # its holder removed the entry meanwhile: lock the file there now

    async def acquire(self) -> None:
        # Polled: a thread blocked in flock could not be cancelled (Ctrl-C would wait for it).
        while not self.try_acquire():  # noqa: ASYNC110
            await asyncio.sleep(POLL_SECONDS)

    def release(self, *, remove: bool = False) -> None:
        """Let the lock go; with ``remove``, its file too (only with the entry it guards)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(fd)

    async def __aenter__(self) -> EntryLock:
        await self.acquire()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def remove_temp_files(entry: Path) -> None:
    """Remove what writers of ``entry`` left half-written: call only while holding its lock."""
    for tmp in entry.parent.glob(f".{_glob_escape(entry.name)}.*.tmp"):
        match = _TEMP.match(tmp.name)
        if match and match["name"] == entry.name:
            tmp.unlink(missing_ok=True)


def remove_entry(entry: Path) -> None:
    """Remove an entry's file, record and temp files: call only while holding its lock."""
    with writing(entry):
        meta_path(entry).unlink(missing_ok=True)  # first: a file without its record is not trusted
        entry.unlink(missing_ok=True)
        remove_temp_files(entry)


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# -- what the cache holds -------------------------------------------------------------------------

Kind = Literal["shared", "grid", "unfinished", "other"]


@dataclass(frozen=True)
class Entry:
    """One cache entry: its file, record and any temp files, as ``asyncdl cache`` shows them."""

    source: str
    #: Its path in the source folder, e.g. ``annotation_25.nrrd`` or ``grids/grid_1_density.nrrd``.
    name: str
    path: Path
    #: Bytes on disk: the file, its record and its temp files.
    size: int
    kind: Kind
    #: What it is, in words.
    what: str
    #: For a grid, its data set.
    data_set: int | None = None

    @property
    def label(self) -> str:
        return f"{self.source}/{self.name}"


_GRID = re.compile(r"^grid_(?P<id>\d+)_(?P<volume>density|injection)\.(?P<ext>nrrd|zip)$")
_SHARED = {
    "annotation_25.nrrd": "the CCF 2017 annotation, 25 um",
    STRUCTURE_TREE: "the structure tree, which says which labels are fiber tracts",
    "fiber_tracts_197646984.zip": "the 2013 fiber-tract mask, 25 um (--volumes legacy)",
}
_VOLUMES = {"density": "projection density", "injection": "injection fraction"}


def describe(name: str) -> tuple[Kind, str, int | None]:
    """What an entry is, from its name: its kind, a description, and its data set if a grid."""
    base = name.rpartition("/")[2]
    if (grid := _GRID.match(base)) and name.startswith(f"{GRIDS}/"):
        data_set = int(grid["id"])
        form = "NRRD" if grid["ext"] == "nrrd" else "zipped MetaImage (--volumes legacy)"
        return "grid", f"data set {data_set}: {_VOLUMES[grid['volume']]}, 100 um {form}", data_set
    if name in _SHARED:
        return "shared", _SHARED[name], None
    if re.fullmatch(r"fiber_mask_[0-9a-f]{16}\.npy", name):
        return "shared", "a fiber-tract mask of the 100 um grid, built from the annotation", None
    return "other", "not a file this version of asyncdl writes", None


def entries(root: Path) -> list[Entry]:
    """Every entry in the cache at ``root`` (none if it does not exist), sorted by source and name.

    A temp file whose entry has no file of its own is an ``unfinished`` download: in progress, or
    left by a process that stopped (the next to fetch that entry removes it).
    """
    found: list[Entry] = []
    for folder in _subfolders(root):
        sizes: dict[str, int] = {}
        whole: set[str] = set()
        for path in _files(folder):
            rel = path.relative_to(folder).as_posix()
            directory, _, base = rel.rpartition("/")
            prefix = f"{directory}/" if directory else ""
            if temp := _TEMP.match(base):
                name = prefix + temp["name"]
            elif _LOCK.match(base):
                continue
            elif base.endswith(_META):
                name = prefix + base.removesuffix(_META)
            else:
                name = rel
                whole.add(name)
            sizes[name] = sizes.get(name, 0) + _size(path)
        for name, size in sizes.items():
            kind, what, data_set = describe(name)
            if name not in whole:
                kind, what = "unfinished", f"an unfinished download ({what})"
            found.append(Entry(folder.name, name, folder / name, size, kind, what, data_set))
    return sorted(found, key=lambda e: (e.source, e.name))


def select(found: Iterable[Entry], what: str) -> list[Entry]:
    """The entries ``what`` names: ``grids``, ``shared``, a data set id (its grids), or a
    glob on names (``grid_1563*``, ``annotation_25.nrrd``, ``SOURCE/*``)."""
    if what == "grids":
        return [e for e in found if e.kind == "grid"]
    if what == "shared":
        return [e for e in found if e.kind == "shared"]
    if what.isdigit():
        return [e for e in found if e.data_set == int(what)]
    return [
        e
        for e in found
        if fnmatch.fnmatchcase(e.name.rpartition("/")[2], what)
        or fnmatch.fnmatchcase(e.name, what)
        or fnmatch.fnmatchcase(e.label, what)
    ]


@dataclass
class Removal:
    """What ``remove`` did: entries removed, bytes freed, and entries left because a running
    process holds them."""

    removed: int = 0
    freed: int = 0
    busy: list[Entry] = field(default_factory=list)


def remove(targets: Iterable[Entry]) -> Removal:
    """Remove ``targets``, each under its lock; an entry whose lock is held (a process is
    downloading or reading it) is left as it is, temp files included."""
    done = Removal()
    for entry in targets:
        lock = EntryLock(entry.path)
        if not lock.try_acquire():
            done.busy.append(entry)
            continue
        try:
            remove_entry(entry.path)
        finally:
            lock.release(remove=True)
        done.removed += 1
        done.freed += entry.size
    return done


def tidy(root: Path) -> None:
    """After a purge: drop lock files nobody holds, then the folders left empty."""
    for folder in _subfolders(root):
        for path in _files(folder):
            if (match := _LOCK.match(path.name)) is None:
                continue
            lock = EntryLock(path.with_name(match["name"]))
            if lock.try_acquire():
                lock.release(remove=True)
        for directory in (folder / GRIDS, folder):
            with contextlib.suppress(OSError):  # not empty, or gone
                directory.rmdir()


def is_cache(root: Path) -> bool:
    """Whether ``root`` is missing or marked as a cache (``TAG``): safe to remove entries from."""
    return not root.exists() or (root / TAG).is_file()


def _subfolders(root: Path) -> Iterator[Path]:
    try:
        children = sorted(root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return
    yield from (child for child in children if child.is_dir() and not child.is_symlink())


def _files(folder: Path) -> Iterator[Path]:
    for directory in (folder, folder / GRIDS):
        try:
            children = sorted(directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for child in children:
            if child.is_file() and not child.is_symlink():
                yield child


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
