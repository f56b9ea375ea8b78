import gzip
import zipfile

import nrrd
import numpy as np
import pytest

from asyncdl import VolumeError
from asyncdl.emulator import formats
from asyncdl.volumes import NOTHING, Grid, read_metaimage_zip, read_nrrd

RNG = np.random.default_rng(7)


def _write_nrrd(path, arr, encoding="gzip", endian="little", spacing=(100.0, 100.0, 100.0)):
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag(spacing),
        "kinds": ["domain"] * 3,
        "encoding": encoding,
        "endian": endian,
    }
    nrrd.write(str(path), arr, header)


@pytest.mark.parametrize("dtype", ["<f8", "<f4", "<u4", "u1", "<i2"])
@pytest.mark.parametrize("encoding", ["gzip", "raw"])
def test_read_nrrd_matches_pynrrd_writer(tmp_path, dtype, encoding):
    arr = (RNG.random((7, 5, 6)) * 200).astype(dtype)
    path = tmp_path / "v.nrrd"
    _write_nrrd(path, arr, encoding, spacing=(100.0, 50.0, 25.0))
    vol = read_nrrd(path)
    assert vol.array.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_array_equal(vol.spacing, [100.0, 50.0, 25.0])


def test_read_nrrd_big_endian(tmp_path):
    arr = RNG.random((4, 3, 5))
    path = tmp_path / "v.nrrd"
    _write_nrrd(path, arr.astype(">f8"), "raw", endian="big")
    np.testing.assert_array_equal(read_nrrd(path).array, arr)


def test_sampled_read_equals_full_read_indexed(tmp_path):
    arr = RNG.integers(0, 1000, (20, 9, 13)).astype("<u4")
    path = tmp_path / "labels.nrrd"
    _write_nrrd(path, arr)
    sample = (np.array([0, 4, 4, 19]), np.array([8, 1]), np.array([12, 0, 5, 5]))
    got = read_nrrd(path, sample).array
    np.testing.assert_array_equal(got, arr[np.ix_(*sample)])
    empty = read_nrrd(path, (np.array([1]), np.array([1]), np.array([], np.int64))).array
    assert empty.shape == (1, 1, 0)


def test_emulator_nrrd_is_read_back_exactly(tmp_path):
    arr = RNG.random((6, 4, 5))
    path = tmp_path / "grid.nrrd"
    path.write_bytes(
        formats.nrrd_bytes(formats.fortran_slabs(arr), arr.shape, "double", "<f8", 100)
    )
    np.testing.assert_array_equal(read_nrrd(path).array, arr)
    read_nrrd(path, NOTHING, grid=Grid(arr.shape, 100.0))  # its header declares that grid


def test_metaimage_zip_round_trip_and_sample(tmp_path):
    arr = RNG.random((9, 4, 7)).astype("<f4")
    path = tmp_path / "density.zip"
    path.write_bytes(
        formats.metaimage_zip(
            "density", formats.fortran_slabs(arr), arr.shape, "MET_FLOAT", "<f4", 100
        )
    )
    vol = read_metaimage_zip(path, "density")
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_array_equal(vol.spacing, [100.0] * 3)
    sample = (np.array([8, 0]), np.array([3]), np.array([6, 2]))
    np.testing.assert_array_equal(
        read_metaimage_zip(path, "density", sample).array, arr[np.ix_(*sample)]
    )


def _zip(tmp_path, header: str, raw: bytes, name="density"):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}.mhd", header)
        zf.writestr(f"{name}.raw", raw)
    return path


MHD = (
    "NDims = 3\nDimSize = 2 2 2\nElementSpacing = 100 100 100\nElementType = {t}\n"
    "BinaryDataByteOrderMSB = {msb}\nElementDataFile = {f}\n"
)


def test_metaimage_big_endian_header_is_honoured(tmp_path):
    arr = np.arange(8, dtype=">f4").reshape((2, 2, 2), order="F")
    path = _zip(
        tmp_path, MHD.format(t="MET_FLOAT", msb="True", f="density.raw"), arr.tobytes(order="F")
    )
    np.testing.assert_array_equal(read_metaimage_zip(path, "density").array, arr)


@pytest.mark.parametrize(
    ("header", "raw", "message"),
    [
        (MHD.format(t="MET_FLOAT", msb="False", f="density.raw"), b"\0" * 31, "holds 31 bytes"),
        (MHD.format(t="MET_WHAT", msb="False", f="density.raw"), b"\0" * 8, "ElementType"),
        (
            MHD.format(t="MET_UCHAR", msb="False", f="../../etc/passwd"),
            b"\0" * 8,
            "ElementDataFile",
        ),
        (
            MHD.format(t="MET_UCHAR", msb="False", f="density.raw").replace(
                "NDims = 3", "NDims = 2"
            ),
            b"\0" * 8,
            "NDims",
        ),
        (
            MHD.format(t="MET_UCHAR", msb="False", f="density.raw").replace(
                "100 100 100", "100 0 100"
            ),
            b"\0" * 8,
            "spacing",
        ),
        ("this is not a header", b"", "header line"),
    ],
)
def test_bad_metaimage_is_a_volume_error(tmp_path, header, raw, message):
    with pytest.raises(VolumeError, match=message):
        read_metaimage_zip(_zip(tmp_path, header, raw), "density")


def test_zip_without_the_expected_member(tmp_path):
    path = _zip(tmp_path, MHD.format(t="MET_UCHAR", msb="False", f="other.raw"), b"", name="other")
    with pytest.raises(VolumeError, match=r"density\.mhd"):
        read_metaimage_zip(path, "density")


def test_not_a_zip(tmp_path):
    path = tmp_path / "page.zip"
    path.write_text("<html><body>Service unavailable</body></html>")
    with pytest.raises(VolumeError, match="zip"):
        read_metaimage_zip(path, "density")


NRRD_HEAD = (
    "NRRD0004\ntype: {t}\ndimension: {d}\nsizes: {s}\nspace directions: (100,0,0) (0,100,0) "
    "(0,0,100)\nendian: little\nencoding: {e}\n\n"
)


def _nrrd(tmp_path, head: str, body: bytes):
    path = tmp_path / "bad.nrrd"
    path.write_bytes(head.encode() + body)
    return path


@pytest.mark.parametrize(
    ("head", "body", "message"),
    [
        (NRRD_HEAD.format(t="double", d=3, s="2 2 2", e="raw"), b"\0" * 63, "truncated"),
        (NRRD_HEAD.format(t="double", d=3, s="2 2 2", e="raw"), b"\0" * 65, "more data"),
        (
            NRRD_HEAD.format(t="double", d=3, s="2 2 2", e="gzip"),
            gzip.compress(b"\0" * 40),
            "truncated",
        ),
        (NRRD_HEAD.format(t="double", d=3, s="2 2 2", e="gzip"), b"garbage" * 10, "gzip"),
        (NRRD_HEAD.format(t="block", d=3, s="2 2 2", e="raw"), b"", "type"),
        (NRRD_HEAD.format(t="double", d=3, s="2 2 2", e="bzip2"), b"", "encoding"),
        (NRRD_HEAD.format(t="double", d=3, s="100000 100000 100000", e="gzip"), b"", "limit"),
        ("<html>Not found</html>\n\n", b"", "not an NRRD"),
        ("NRRD0004\n" + "# comment\n" * 10000, b"", "not an NRRD"),
    ],
)
def test_bad_nrrd_is_a_volume_error(tmp_path, head, body, message):
    with pytest.raises(VolumeError, match=message):
        read_nrrd(_nrrd(tmp_path, head, body))


def test_two_dimensional_nrrd_is_rejected(tmp_path):
    path = tmp_path / "flat.nrrd"
    nrrd.write(str(path), np.zeros((3, 4)), {"encoding": "raw"})
    with pytest.raises(VolumeError, match="dimension 3"):
        read_nrrd(path)


def test_sample_outside_the_volume_is_rejected(tmp_path):
    path = tmp_path / "v.nrrd"
    _write_nrrd(path, np.zeros((2, 2, 2)))
    with pytest.raises(VolumeError, match="outside"):
        read_nrrd(path, (np.array([2]), np.array([0]), np.array([0])))


def test_gzip_bomb_is_bounded_by_the_header(tmp_path):
    # The header promises 8 bytes; a body that inflates to 50 MB must be refused, not inflated.
    body = gzip.compress(b"\0" * 50_000_000)
    path = _nrrd(tmp_path, NRRD_HEAD.format(t="double", d=3, s="1 1 1", e="gzip"), body)
    with pytest.raises(VolumeError, match="more data"):
        read_nrrd(path)


# -- the grid a file must be on --------------------------------------------------------------------

GRID = Grid((6, 4, 5), 100.0)


def test_a_file_on_its_grid_reads_whole_even_when_nothing_is_kept(tmp_path):
    arr = RNG.random(GRID.shape)
    path = tmp_path / "grid.nrrd"
    path.write_bytes(
        formats.nrrd_bytes(formats.fortran_slabs(arr), GRID.shape, "double", "<f8", 100)
    )
    np.testing.assert_array_equal(read_nrrd(path, grid=GRID).array, arr)
    assert read_nrrd(path, NOTHING, grid=GRID).array.size == 0
    # Keeping nothing still reads to the end: a file cut short, or with more, does not pass.
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    with pytest.raises(VolumeError):
        read_nrrd(path, NOTHING, grid=GRID)
    path.write_bytes(data + b"trailing junk")
    with pytest.raises(VolumeError):
        read_nrrd(path, NOTHING, grid=GRID)


@pytest.mark.parametrize(
    ("sizes", "spacing", "message"),
    [
        (
            "1000 1000 1000",
            100,
            "declares a 1000x1000x1000 grid at 100 um, expected 6x4x5 at 100 um",
        ),
        ("6 4 5", 25, "declares a 6x4x5 grid at 25 um, expected 6x4x5 at 100 um"),
    ],
)
def test_a_header_off_the_grid_is_refused_before_any_data_is_read(
    tmp_path, sizes, spacing, message
):
    # 1 GB of uchar is within what a header may declare at all; its "data" is not even gzip, so
    # a reader that got as far as decompressing would fail otherwise.
    head = (
        f"NRRD0004\ntype: uchar\ndimension: 3\nsizes: {sizes}\nspace directions: ({spacing},0,0) "
        f"(0,{spacing},0) (0,0,{spacing})\nendian: little\nencoding: gzip\n\n"
    )
    path = _nrrd(tmp_path, head, b"not gzip at all")
    with pytest.raises(VolumeError, match=message):
        read_nrrd(path, grid=GRID)


def test_a_zip_off_the_grid_is_refused_before_its_data_is_opened(tmp_path):
    header = MHD.format(t="MET_UCHAR", msb="False", f="density.raw").replace("2 2 2", "6 4 4")
    with pytest.raises(VolumeError, match="declares a 6x4x4 grid at 100 um, expected 6x4x5"):
        read_metaimage_zip(_zip(tmp_path, header, b"short"), "density", grid=GRID)


def test_a_grid_bounds_the_size_of_its_file():
    assert GRID.max_file_bytes == 6 * 4 * 5 * 8 + (1 << 20)
    assert str(GRID) == "6x4x5 at 100 um"
