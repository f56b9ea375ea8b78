"""A picture of a fetched data set: ``OUT/<id>/preview.png``, its streamlines seen from above and side.

Two projections of every path, horizontal (AP x ML) and sagittal (AP x DV, dorsal up), each segment
coloured by projection density on a log scale, the injection site marked. matplotlib is an optional
extra (``pip install 'asyncdl[preview]'``), imported only here, and only its Agg canvas is used, so
no global backend is switched and no display is needed.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .datafile import Array, Streamlines, read_streamlines
from .errors import UsageError
from .files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure

PREVIEW = "preview.png"
FIGSIZE = (14.0, 6.0)  # inches
DPI = 100
#: The PNG's width and height in pixels.
SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
#: The CCF's extent in um (AP, DV, ML): the 10 um template is 1320 x 800 x 1140 voxels.
CCF_EXTENT = (13200.0, 8000.0, 11400.0)
AP, DV, ML = 0, 1, 2
#: Densities are shown from here to 1 on a log scale: paths cross much tissue at ~0.01.
DENSITY_FLOOR = 3e-3
CMAP = "inferno"
BACKGROUND = "#0b0b12"
INJECTION = "#36c5f0"


def render_preview(directory: Path) -> Path:
    """Draw ``directory/data.json`` into ``directory/preview.png`` (written atomically); return it."""
    mpl = _matplotlib()
    lines = read_streamlines(directory)
    buffer = io.BytesIO()
    _figure(mpl, lines).savefig(buffer, format="png", dpi=DPI)
    out = Path(directory) / PREVIEW
    atomic_write(out, [buffer.getvalue()])
    return out


def _figure(mpl: dict[str, Any], lines: Streamlines) -> Figure:
    """The two projections side by side, one colorbar, a title with the id and the counts."""
    figure: Figure = mpl["Figure"](figsize=FIGSIZE, dpi=DPI, layout="constrained")
    mpl["FigureCanvasAgg"](figure)
    horizontal, sagittal = figure.subplots(1, 2)
    segments, density = _segments(lines.paths)
    norm = mpl["LogNorm"](vmin=DENSITY_FLOOR, vmax=1.0, clip=True)
    cmap = _colormap(mpl)
    for axes, (across, up) in ((horizontal, (AP, ML)), (sagittal, (AP, DV))):
        collection = mpl["LineCollection"](
            segments[:, :, [across, up]], array=density, cmap=cmap, norm=norm
        )
        collection.set(linewidths=0.6, alpha=0.7)
        axes.add_collection(collection)
        _mark_injection(axes, lines.injection[:, [across, up]])
        _frame(axes, across, up)
    horizontal.axhline(CCF_EXTENT[ML] / 2, color="0.6", lw=0.8, ls="--", label="midline")
    legend = horizontal.legend(loc="lower right", fontsize=8, facecolor=BACKGROUND)
    for text in legend.get_texts():
        text.set_color("0.9")
    colorbar = figure.colorbar(
        _mappable(mpl, norm, cmap), ax=[horizontal, sagittal], shrink=0.85, aspect=30
    )
    colorbar.set_label("projection density (log scale)")
    figure.suptitle(_title(lines), fontsize=12)
    return figure


def _matplotlib() -> dict[str, Any]:
    """The few matplotlib names used, or a ``UsageError`` saying how to install it."""
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.cm import ScalarMappable
        from matplotlib.collections import LineCollection
        from matplotlib.colors import ListedColormap, LogNorm
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UsageError("previews need matplotlib: pip install 'asyncdl[preview]'") from exc
    return {
        "Figure": Figure,
        "FigureCanvasAgg": FigureCanvasAgg,
        "LineCollection": LineCollection,
        "LogNorm": LogNorm,
        "ListedColormap": ListedColormap,
        "colormaps": colormaps,
        "ScalarMappable": ScalarMappable,
    }


def _segments(paths: list[Array]) -> tuple[Array, Array]:
    """Every path's consecutive point pairs, (n, 2, 3), and each one's density, low ones first.

    A segment takes the larger density of its two ends: a path's first and last points (the seed
    and the injection coordinate) carry density 0 in the API's answers. Sorting puts the dense
    segments on top where lines overlap.
    """
    pairs = [np.stack([p[:-1, :3], p[1:, :3]], axis=1) for p in paths if len(p) > 1]
    values = [np.maximum(p[:-1, 3], p[1:, 3]) for p in paths if len(p) > 1]
    if not pairs:
        return np.zeros((0, 2, 3)), np.zeros(0)
    segments, density = np.concatenate(pairs), np.concatenate(values)
    order = np.argsort(density, kind="stable")
    return segments[order], density[order]


def _mark_injection(axes: Axes, points: Array) -> None:
    if not len(points):
        return
    x, y = points[:, 0], points[:, 1]
    axes.scatter(x, y, s=7, marker="s", fc="none", ec=INJECTION, alpha=0.35, lw=0.5, zorder=4)
    axes.scatter(
        [x.mean()],
        [y.mean()],
        s=180,
        marker="*",
        color=INJECTION,
        ec="white",
        lw=0.8,
        zorder=5,
        label="injection site",
    )


def _frame(axes: Axes, across: int, up: int) -> None:
    """CCF extent, equal scales, anterior left; DV grows downward as in the atlas's sections."""
    names = {AP: "AP", DV: "DV", ML: "ML"}
    axes.set_facecolor(BACKGROUND)
    axes.set_xlim(0, CCF_EXTENT[across])
    axes.set_ylim((CCF_EXTENT[up], 0) if up == DV else (0, CCF_EXTENT[up]))
    axes.set_aspect("equal")
    axes.set_xlabel(f"{names[across]} (µm, anterior → posterior)")
    axes.set_ylabel(f"{names[up]} (µm{', dorsal ↑' if up == DV else ''})")
    axes.set_title("horizontal (from above)" if up == ML else "sagittal (from the side)")
    axes.tick_params(labelsize=8)
    axes.grid(color="white", alpha=0.08, lw=0.5)


def _colormap(mpl: dict[str, Any]) -> Colormap:
    """``CMAP`` without its darkest quarter, so that faint paths still show on the dark ground."""
    base = mpl["colormaps"][CMAP]
    cmap: Colormap = mpl["ListedColormap"](base(np.linspace(0.25, 1.0, 256)), name=f"{CMAP}_b")
    return cmap


def _mappable(mpl: dict[str, Any], norm: Normalize, cmap: Colormap) -> Any:
    mappable = mpl["ScalarMappable"](norm=norm, cmap=cmap)
    mappable.set_array([])
    return mappable


def _title(lines: Streamlines) -> str:
    where = f", injection in {lines.structure}" if lines.structure else ""
    return (
        f"Data set {lines.data_set}{where}: {len(lines.paths):,} streamlines, "
        f"{len(lines.injection):,} injection voxels"
    )
