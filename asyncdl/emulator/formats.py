"""Writers for the files the Allen servers send: gzip NRRD and zipped MetaImage (.mhd + .raw).

Headers are written field by field as the real servers write them; data goes out in Fortran order
(first axis fastest). Large volumes are written slab by slab so they are never whole in memory.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

Slabs = Iterable[npt.NDArray[np.generic]]


def fortran_slabs(array: npt.NDArray[np.generic]) -> Slabs:
    """The slabs (one per index of the last axis) of ``array``, in file order."""
    return (array[:, :, k] for k in range(array.shape[2]))


def _slab_bytes(slab: npt.NDArray[np.generic], dtype: str) -> bytes:
    return np.asarray(slab, dtype).tobytes(order="F")


def nrrd_bytes(
    slabs: Slabs,
    shape: tuple[int, int, int],
    nrrd_type: str,
    dtype: str,
    spacing: float,
    level: int = 1,
) -> bytes:
    """A gzip-encoded NRRD file as the grid service and the CCF archive send them."""
    s = f"{spacing:g}"
    header = (
        "NRRD0004\n"
        "# Complete NRRD file format specification at:\n"
        "# http://teem.sourceforge.net/nrrd/format.html\n"
        f"type: {nrrd_type}\n"
        "dimension: 3\n"
        "space: left-posterior-superior\n"
        f"sizes: {shape[0]} {shape[1]} {shape[2]}\n"
        f"space directions: ({s},0,0) (0,{s},0) (0,0,{s})\n"
        "kinds: domain domain domain\n"
        "endian: little\n"
        "encoding: gzip\n"
        "space origin: (0,0,0)\n\n"
    )
    gz = zlib.compressobj(level, zlib.DEFLATED, 31)
    parts = [header.encode("ascii")]
    parts.extend(gz.compress(_slab_bytes(slab, dtype)) for slab in slabs)
    parts.append(gz.flush())
    return b"".join(parts)


def metaimage_zip(
    name: str,
    slabs: Slabs,
    shape: tuple[int, int, int],
    element_type: str,
    dtype: str,
    spacing: float,
) -> bytes:
    """A zip holding ``{name}.mhd`` and ``{name}.raw``, as the legacy grid service sends it."""
    s = f"{spacing:g}"
    header = (
        "ObjectType = Image\n"
        "NDims = 3\n"
        "BinaryData = True\n"
        "BinaryDataByteOrderMSB = False\n"
        "CompressedData = False\n"
        "TransformMatrix = 1 0 0 0 1 0 0 0 1\n"
        "Offset = 0 0 0\n"
        "CenterOfRotation = 0 0 0\n"
        f"ElementSpacing = {s} {s} {s}\n"
        f"DimSize = {shape[0]} {shape[1]} {shape[2]}\n"
        f"ElementType = {element_type}\n"
        f"ElementDataFile = {name}.raw\n"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(f"{name}.mhd", header)
        with zf.open(f"{name}.raw", "w", force_zip64=True) as raw:
            for slab in slabs:
                raw.write(_slab_bytes(slab, dtype))
    return buf.getvalue()


def slabs_from(make: Callable[[int], npt.NDArray[np.generic]], count: int) -> Slabs:
    """Slabs computed one at a time by ``make(k)``."""
    return (make(k) for k in range(count))
