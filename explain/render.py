"""Maps for people: denoise a map, circle its regions, and draw overlays (PNG bytes).

:func:`denoise` turns a raw map (attention or integrated gradients, at the scan's size) into a
heatmap in [0, 1]: the positive part (evidence *for* the text), Gaussian-smoothed with a sigma
of ``smooth`` × the scan's longer side, divided by its maximum, and zeroed below ``threshold``
(the user's denoising threshold: 0 keeps everything, 0.5 keeps what is at least half the peak).
:func:`circled_regions` are the connected components of the kept part, each with the circle
around it (centroid and the largest centroid-to-pixel distance); components smaller than
``min_area`` of the scan are noise and dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = ["Region", "circled_regions", "denoise", "normalise", "overlay_figure", "words_figure"]


@dataclass
class Region:
    """One circled region: centre ``(row, col)`` and ``radius`` in pixels of the scan, its
    ``area`` (pixels), ``peak`` and ``mass`` (sum of the heatmap over it)."""

    row: float
    col: float
    radius: float
    area: int
    peak: float
    mass: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def _check_unit(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def normalise(heat: np.ndarray) -> np.ndarray:
    """``heat`` clipped at 0 and divided by its maximum (all zeros stays zeros), float32."""
    pos = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64)), 0.0, None)
    top = pos.max() if pos.size else 0.0
    return (pos / top if top > 0 else pos).astype(np.float32)


def denoise(raw: np.ndarray, threshold: float = 0.5, smooth: float = 0.02) -> np.ndarray:
    """The heatmap in [0, 1] of a raw map ``[H, W]`` (see the module docstring)."""
    threshold = _check_unit("threshold", threshold)
    smooth = _check_unit("smooth", smooth)
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2:
        raise ValueError(f"a map must be 2-D, got shape {raw.shape}")
    pos = np.clip(np.nan_to_num(raw), 0.0, None)
    sigma = smooth * max(raw.shape)
    if sigma > 0:
        pos = ndimage.gaussian_filter(pos, sigma=sigma, mode="nearest")
    heat = normalise(pos)
    heat[heat < threshold] = 0.0
    return heat


def circled_regions(heat: np.ndarray, min_area: float = 0.002) -> list[Region]:
    """Connected components of ``heat > 0`` (8-connected), largest mass first."""
    heat = np.asarray(heat, dtype=np.float64)
    labels, n = ndimage.label(heat > 0, structure=np.ones((3, 3), dtype=bool))
    smallest = max(1, int(round(min_area * heat.size)))
    out = []
    for k in range(1, n + 1):
        rows, cols = np.nonzero(labels == k)
        if rows.size < smallest:
            continue
        r0, c0 = rows.mean(), cols.mean()
        radius = float(np.sqrt(((rows - r0) ** 2 + (cols - c0) ** 2).max())) + 0.5
        vals = heat[rows, cols]
        out.append(Region(r0, c0, radius, int(rows.size), float(vals.max()), float(vals.sum())))
    return sorted(out, key=lambda r: -r.mass)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def overlay_figure(
    image: np.ndarray,
    heat: np.ndarray,
    regions: Sequence[Region],
    title: str,
    mask: np.ndarray | None = None,
) -> bytes:
    """Two panels: the heatmap over the scan, and the scan with the kept regions' contours and
    circles (and a ground-truth ``mask`` outlined in white, when given)."""
    from matplotlib.patches import Circle

    fig = _figure(6.0, 3.3)
    left, right = fig.subplots(1, 2)
    for ax in (left, right):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    shown = np.ma.masked_where(heat <= 0, heat)
    left.imshow(shown, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    left.set_title("heatmap", fontsize=9)
    if (heat > 0).any() and not (heat > 0).all():
        right.contour((heat > 0).astype(float), levels=[0.5], colors="yellow", linewidths=1.0)
    for reg in regions:
        right.add_patch(Circle((reg.col, reg.row), reg.radius, fill=False, color="red", lw=1.5))
    if mask is not None and mask.any() and not mask.all():
        for ax in (left, right):
            ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.0)
    for ax in (left, right):  # circles near the border must not rescale the axes
        ax.set_xlim(-0.5, image.shape[1] - 0.5)
        ax.set_ylim(image.shape[0] - 0.5, -0.5)
    right.set_title(f"circled regions ({len(regions)})", fontsize=9)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def words_figure(words: Sequence[str], values: np.ndarray, title: str) -> bytes:
    """Horizontal bars of one attribution per word (red for, blue against)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    n = max(len(words), 1)
    fig = _figure(5.0, 0.6 + 0.22 * n)
    ax = fig.subplots()
    y = np.arange(len(words))
    ax.barh(y, values, color=["#c0392b" if v >= 0 else "#2e86c1" for v in values])
    ax.set_yticks(y, labels=list(words), fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", lw=0.6)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    return _png(fig)
