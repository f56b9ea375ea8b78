"""Volume readers: NRRD (as the grid service and the CCF archive send it) and the legacy zipped MetaImage.

Both formats store a 3-D array with the first axis fastest (Fortran order), so both readers share one
decoder that streams the data one slab (one index of the last axis) at a time. That lets a reader keep
only the voxels it is asked for (``sample``): the 25 um annotation is 300 MB decoded, but the fiber-tract
lookup needs only the few voxels that 100 um grid positions land on. Headers are validated and the
decoded size is checked against ``sizes x type`` before anything is allocated.
"""

from __future__ import annotations

import gzip
import math
import re
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast

import nrrd
import numpy as np
import numpy.typing as npt

from .errors import VolumeError

#: Index arrays, one per axis: the reader returns ``volume[np.ix_(*sample)]``.
Sample = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]

MAX_HEADER_BYTES = 64 * 1024
MAX_DECODED_BYTES = 1 << 30
_READ_CHUNK = 1 << 20

_NRRD_TYPES = {
    "i1": ("signed char", "int8", "int8_t"),
    "u1": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "i2": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "u2": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "i4": ("int", "signed int", "int32", "int32_t"),
    "u4": ("uint", "unsigned int", "uint32", "uint32_t"),
    "i8": (
        "longlong",
        "long long",
        "long long int",
        "signed long long",
        "signed long long int",
        "int64",
        "int64_t",
    ),
    "u8": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "f4": ("float",),
    "f8": ("double",),
}
NRRD_TYPE_CODES = {name: code for code, names in _NRRD_TYPES.items() for name in names}
METAIMAGE_TYPE_CODES = {
    "MET_CHAR": "i1",
    "MET_UCHAR": "u1",
    "MET_SHORT": "i2",
    "MET_USHORT": "u2",
    "MET_INT": "i4",
    "MET_UINT": "u4",
    "MET_LONG_LONG": "i8",
    "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}


class Stream(Protocol):
    """A binary stream to decode from: a file, a ``GzipFile``, a zip member."""

    def read(self, size: int = -1, /) -> bytes: ...
    def readinto(self, buffer: memoryview, /) -> int | None: ...


@dataclass(frozen=True)
class Volume:
    """A 3-D array (axis order AP, DV, ML) and its voxel spacing in microns."""

    array: npt.NDArray[np.generic]
    spacing: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Layout:
    """What a header says about the data that follows it."""

    shape: tuple[int, int, int]
    dtype: np.dtype[np.generic]
    spacing: tuple[float, float, float]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def make_layout(
    sizes: Sequence[object], code: str, big_endian: bool, spacing: Sequence[object]
) -> Layout:
    """Validate a header's geometry: three positive sizes, a known type, finite spacing > 0."""
    try:
        shape = tuple(int(s) for s in sizes)  # type: ignore[call-overload]
        steps = tuple(float(s) for s in spacing)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"bad sizes or spacing: {sizes!r}, {spacing!r}") from exc
    if len(shape) != 3 or len(steps) != 3:
        raise VolumeError(f"expected a 3-D volume, got sizes {list(shape)}")
    if min(shape) < 1:
        raise VolumeError(f"implausible volume sizes {list(shape)}")
    if not all(math.isfinite(s) and s > 0 for s in steps):
        raise VolumeError(f"voxel spacing must be finite and positive, got {list(steps)}")
    dtype = np.dtype(code).newbyteorder(">" if big_endian else "<")
    layout = Layout(shape, dtype, steps)
    if layout.nbytes > MAX_DECODED_BYTES:
        raise VolumeError(f"volume of {layout.nbytes} bytes exceeds the {MAX_DECODED_BYTES} limit")
    return layout


def decode(stream: Stream, layout: Layout, sample: Sample | None = None) -> Volume:
    """Read ``layout.nbytes`` of Fortran-ordered data from ``stream``, optionally keeping only ``sample``.

    The stream must hold exactly that many bytes: short data is truncated, extra data is malformed.
    """
    nx, ny, nz = layout.shape
    slab_len = nx * ny * layout.dtype.itemsize
    if sample is None:
        flat = np.empty(math.prod(layout.shape), layout.dtype)
        _read_exactly(stream, flat.data.cast("B"), layout.nbytes)
        array: npt.NDArray[np.generic] = flat.reshape(layout.shape, order="F")
    else:
        ii, jj, kk = (np.asarray(ix, np.int64) for ix in sample)
        for ix, n in zip((ii, jj, kk), layout.shape, strict=True):
            if ix.size and (ix.min() < 0 or ix.max() >= n):
                raise VolumeError("sample index outside the volume")
        array = np.empty((ii.size, jj.size, kk.size), layout.dtype)
        wanted: dict[int, list[int]] = {}
        for pos, k in enumerate(kk.tolist()):
            wanted.setdefault(k, []).append(pos)
        last = max(wanted, default=-1)
        slab = np.empty(nx * ny, layout.dtype)
        view = slab.data.cast("B")
        plane = slab.reshape((nx, ny), order="F")
        rows = np.ix_(ii, jj)
        for k in range(last + 1):
            _read_exactly(stream, view, slab_len)
            for pos in wanted.get(k, ()):
                array[:, :, pos] = plane[rows]
        _skip_exactly(stream, (nz - 1 - last) * slab_len)
    if stream.read(1):
        raise VolumeError("volume has more data than its header declares")
    native = array.astype(array.dtype.newbyteorder("="), copy=False)
    return Volume(native, np.array(layout.spacing, np.float64))


def _read_exactly(stream: Stream, buf: memoryview, size: int) -> None:
    got = 0
    while got < size:
        n = stream.readinto(buf[got : min(size, got + _READ_CHUNK)])
        if not n:
            raise VolumeError(f"volume data is truncated ({got} of {size} bytes)")
        got += n


def _skip_exactly(stream: Stream, size: int) -> None:
    scratch = memoryview(bytearray(min(size, _READ_CHUNK) or 1))
    while size > 0:
        n = min(size, len(scratch))
        _read_exactly(stream, scratch, n)
        size -= n


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Turn the many ways a broken file fails (zlib, zip, pynrrd, EOF) into one ``VolumeError``."""
    try:
        yield
    except VolumeError:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
        nrrd.NRRDError,
    ) as exc:
        raise VolumeError(f"{what}: {exc}") from exc


# -- NRRD -------------------------------------------------------------------------------------------


def nrrd_layout(header: dict[str, object]) -> Layout:
    """Validate a pynrrd header and say how its data is laid out."""
    if int(header.get("dimension", 0)) != 3:  # type: ignore[call-overload]
        raise VolumeError(f"expected dimension 3, got {header.get('dimension')!r}")
    for field in ("data file", "datafile", "line skip", "lineskip", "byte skip", "byteskip"):
        if header.get(field) not in (None, 0):
            raise VolumeError(f"unsupported NRRD field {field!r}")
    code = NRRD_TYPE_CODES.get(str(header.get("type")))
    if code is None:
        raise VolumeError(f"unsupported NRRD type {header.get('type')!r}")
    if "space directions" in header:
        directions = np.asarray(header["space directions"], np.float64)
        if directions.shape != (3, 3):
            raise VolumeError("NRRD space directions must be three 3-vectors")
        spacing: Sequence[object] = np.linalg.norm(directions, axis=1).tolist()
    else:
        spacing = list(header.get("spacings", (1.0, 1.0, 1.0)))  # type: ignore[call-overload]
    endian = header.get("endian", "little")
    if endian not in ("little", "big"):
        raise VolumeError(f"bad NRRD endian {endian!r}")
    return make_layout(header.get("sizes", ()), code, endian == "big", spacing)  # type: ignore[arg-type]


def _nrrd_header(fh: IO[bytes]) -> tuple[dict[str, Any], Layout]:
    """Parse and validate the header at the start of ``fh``; leave ``fh`` at the data."""
    head = fh.read(MAX_HEADER_BYTES)
    end = head.find(b"\n\n")
    if not head.startswith(b"NRRD000") or end < 0:
        raise VolumeError("not an NRRD file (no magic line or no end of header)")
    header = nrrd.read_header([line.decode("ascii") for line in head[:end].split(b"\n")])
    fh.seek(end + 2)
    return header, nrrd_layout(header)


def nrrd_layout_of(path: Path) -> Layout:
    """The validated layout of an NRRD file, from its header alone."""
    with _reading(f"NRRD {path.name}"), path.open("rb") as fh:
        return _nrrd_header(fh)[1]


def read_nrrd(path: Path, sample: Sample | None = None) -> Volume:
    """Read an NRRD file with attached raw or gzip data."""
    with _reading(f"NRRD {path.name}"), path.open("rb") as fh:
        header, layout = _nrrd_header(fh)
        encoding = header.get("encoding")
        if encoding == "raw":
            return decode(fh, layout, sample)
        if encoding in ("gzip", "gz"):
            with gzip.GzipFile(fileobj=fh, mode="rb") as body:
                return decode(body, layout, sample)
        raise VolumeError(f"unsupported NRRD encoding {encoding!r}")


#: The CCF 2017 grids asyncdl reads, by resolution in um: (AP, DV, ML) voxels.
CCF_GRIDS = {100: (132, 80, 114), 25: (528, 320, 456)}
_NOTHING: Sample = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))


def verify_nrrd(path: Path, resolution: int) -> None:
    """``VolumeError`` unless ``path`` is a whole NRRD volume on the CCF grid at ``resolution``:
    its header declares that grid, and its data decodes to exactly the declared size (streamed
    through, nothing kept: the 25 um annotation would be 300 MB)."""
    layout = nrrd_layout_of(path)
    grid, spacing = CCF_GRIDS[resolution], (float(resolution),) * 3
    if layout.shape != grid or layout.spacing != spacing:
        raise VolumeError(
            f"{path.name} is a {layout.shape} grid at {layout.spacing} um, not the CCF's {grid} "
            f"at {resolution} um"
        )
    read_nrrd(path, _NOTHING)


# -- MetaImage in a zip (the legacy grid and fiber-tract files) --------------------------------------

_MHD_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_metaimage_header(text: str) -> dict[str, str]:
    """Parse ``Key = Value`` lines of a MetaImage header."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _MHD_LINE.match(line)
        if match is None:
            raise VolumeError(f"bad MetaImage header line {line[:80]!r}")
        fields[match.group(1)] = match.group(2)
    return fields


def metaimage_layout(fields: dict[str, str]) -> Layout:
    """Validate a MetaImage header: NDims 3, DimSize, ElementSpacing, ElementType, byte order."""
    if fields.get("NDims", "3").strip() != "3":
        raise VolumeError(f"expected NDims = 3, got {fields.get('NDims')!r}")
    if fields.get("CompressedData", "False").lower() == "true":
        raise VolumeError("compressed MetaImage data is not supported")
    code = METAIMAGE_TYPE_CODES.get(fields.get("ElementType", ""))
    if code is None or fields.get("ElementNumberOfChannels", "1").strip() != "1":
        raise VolumeError(f"unsupported MetaImage ElementType {fields.get('ElementType')!r}")
    order = fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False"))
    spacing = fields.get("ElementSpacing", fields.get("ElementSize", "1 1 1")).split()
    if "DimSize" not in fields:
        raise VolumeError("MetaImage header has no DimSize")
    return make_layout(fields["DimSize"].split(), code, order.lower() == "true", spacing)


def _metaimage_header(zf: zipfile.ZipFile, name: str) -> Layout:
    info = zf.getinfo(f"{name}.mhd")
    if info.file_size > MAX_HEADER_BYTES:
        raise VolumeError(f"{name}.mhd is too large to be a header")
    fields = parse_metaimage_header(zf.read(info).decode("ascii"))
    data_file = fields.get("ElementDataFile", f"{name}.raw")
    if data_file != f"{name}.raw":
        raise VolumeError(f"unexpected ElementDataFile {data_file!r}")
    return metaimage_layout(fields)


def metaimage_layout_of(path: Path, name: str) -> Layout:
    """The validated layout of ``{name}.mhd`` in a zip, from its header alone."""
    with _reading(f"zip {path.name}"), zipfile.ZipFile(path) as zf:
        return _metaimage_header(zf, name)


def read_metaimage_zip(path: Path, name: str, sample: Sample | None = None) -> Volume:
    """Read ``{name}.mhd`` + ``{name}.raw`` from a zip; other members are never opened."""
    with _reading(f"zip {path.name}"), zipfile.ZipFile(path) as zf:
        layout = _metaimage_header(zf, name)
        raw = zf.getinfo(f"{name}.raw")
        if raw.file_size != layout.nbytes:
            raise VolumeError(
                f"{name}.raw holds {raw.file_size} bytes, header says {layout.nbytes}"
            )
        with zf.open(raw) as body:  # a ZipExtFile: a BufferedIOBase, so it has readinto
            return decode(cast(Stream, body), layout, sample)
