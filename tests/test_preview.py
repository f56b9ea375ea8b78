import struct
import sys

import numpy as np
import orjson
import pytest

from asyncdl import UsageError
from asyncdl.preview import PREVIEW, SIZE, render_preview

from .conftest import SEED_ID
from .streamline_data import write_data_json

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(body: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk, which must come first."""
    assert body[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", body[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", body[16:24])


def bright_pixels(path) -> int:
    """Pixels of the panels (not the colorbar) in the colormap's warm half: dense streamlines."""
    from matplotlib.image import imread

    rgb = imread(path)[:, : int(SIZE[0] * 0.9), :3]
    return int(((rgb[..., 0] > 0.8) & (rgb[..., 1] > 0.4) & (rgb[..., 2] < 0.5)).sum())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    directory = tmp_path_factory.mktemp("out") / str(SEED_ID)
    write_data_json(directory, SEED_ID, every=3)
    return render_preview(directory)


def test_png_of_the_expected_size(rendered):
    assert rendered.name == PREVIEW
    body = rendered.read_bytes()
    assert png_size(body) == SIZE == (1400, 600)
    assert len(body) > 50_000
    assert not [p for p in rendered.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_streamlines_are_drawn(rendered, tmp_path):
    empty = tmp_path / str(SEED_ID)
    empty.mkdir()
    (empty / "data.json").write_bytes(orjson.dumps({"lines": [], "injectionCoordinates": []}))
    blank = render_preview(empty)
    assert png_size(blank.read_bytes()) == SIZE
    assert bright_pixels(blank) < 100 < 1_000 < bright_pixels(rendered)


def test_image_is_not_noise(rendered):
    # A projection map is mostly dark ground with bundles: many pixels share the background colour.
    from matplotlib.image import imread

    rgb = (imread(rendered)[..., :3] * 255).astype(np.uint32).reshape(-1, 3)
    colours = rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]
    _, counts = np.unique(colours, return_counts=True)
    assert counts.max() > 0.3 * len(colours)


def test_missing_matplotlib_says_how_to_install_it(rendered, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match=r"pip install 'asyncdl\[preview\]'"):
        render_preview(rendered.parent)


def test_missing_data_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="fetch the data set first"):
        render_preview(tmp_path / "42")
