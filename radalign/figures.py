"""Matplotlib figures of a run, each returned as PNG bytes (Agg canvas, no pyplot state)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "attention_figure",
    "loss_curves",
    "metric_series",
    "recall_curves",
    "roc_curves",
    "roc_points",
    "thumbnail",
]

DPI = 100


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def metric_series(rows: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of ``key`` over metric rows; a step logged twice keeps its last value."""
    by_step: dict[float, float] = {}
    for row in rows:
        value = row.get(key)
        if "step" in row and isinstance(value, int | float) and math.isfinite(value):
            by_step[float(row["step"])] = float(value)
    steps = np.array(sorted(by_step))
    return steps, np.array([by_step[s] for s in steps])


def _components(rows: Sequence[Mapping], prefix: str) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith(prefix):
                seen[key[len(prefix) :]] = None
    return list(seen)


def loss_curves(rows: Sequence[Mapping]) -> bytes | None:
    """One panel per loss component (``train/<c>`` solid, ``val/<c>`` dashed), plus lr and
    logit scale when logged; None when no ``train/`` losses are present."""
    comps = _components(rows, "train/")
    extras = [k for k in ("lr", "logit_scale") if metric_series(rows, k)[0].size]
    if not comps:
        return None
    panels = [(c, f"train/{c}", f"val/{c}") for c in comps] + [(k, k, None) for k in extras]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = _figure(4.2 * cols, 3.0 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, (name, train_key, val_key) in zip(axes, panels, strict=False):
        x, y = metric_series(rows, train_key)
        ax.plot(x, y, marker="o" if len(x) < 20 else None, ms=3, label=train_key)
        if val_key:
            vx, vy = metric_series(rows, val_key)
            if len(vx):
                ax.plot(vx, vy, "--", marker="s", ms=4, label=val_key)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return _png(fig)


def recall_curves(rows: Sequence[Mapping]) -> bytes | None:
    """Validation image->report and report->image recall@k over steps; None without any."""
    directions = [("i2t", "image → report"), ("t2i", "report → image")]
    found = {
        d: [k for k in sorted(_components(rows, f"val/{d}_R@"), key=float)] for d, _ in directions
    }
    if not any(found.values()):
        return None
    fig = _figure(9, 3.4)
    axes = fig.subplots(1, 2)
    for ax, (d, title) in zip(axes, directions, strict=True):
        for k in found[d]:
            x, y = metric_series(rows, f"val/{d}_R@{k}")
            ax.plot(x, y, marker="o", ms=4, label=f"R@{k}")
        ax.set_title(f"validation {title}")
        ax.set_xlabel("step")
        ax.set_ylabel("recall")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if found[d]:
            ax.legend(fontsize=8)
    return _png(fig)


def roc_points(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` of a binary score; needs both labels present."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(y_true, dtype=int), np.asarray(scores, dtype=float))
    return fpr, tpr


def roc_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], labels: Mapping[str, str]
) -> bytes | None:
    """ROC curves, one line per finding; ``labels[finding]`` is its legend text (AUROC, CI)."""
    if not curves:
        return None
    fig = _figure(9.5, 5.5)
    ax = fig.subplots()
    cmap = _cmap("tab10")
    for i, (name, (fpr, tpr)) in enumerate(curves.items()):
        style = ("-", "--", ":")[(i // 10) % 3]
        ax.plot(fpr, tpr, style, color=cmap(i % 10), lw=1.6, label=labels.get(name, name))
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside right center")  # constrained layout makes room for it
    return _png(fig)


def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def thumbnail(image: np.ndarray, size: int = 160) -> bytes:
    """A gray PNG of ``image`` (float [0, 1]) with its longer side at most ``size`` pixels."""
    from PIL import Image

    arr = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0.0, 1.0)
    pil = Image.fromarray((arr * 255).round().astype(np.uint8), mode="L")
    pil.thumbnail((size, size))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def attention_figure(
    image: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
    title: str = "",
) -> bytes:
    """The scan, then one panel per ``(caption, map [H, W], mask [H, W] or None)``: the map
    overlaid on the scan, the planted mask outlined."""
    n = len(panels) + 1
    cols = min(n, 5)
    nrows = math.ceil(n / cols)
    fig = _figure(2.4 * cols, 2.6 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("scan", fontsize=9)
    for ax, (caption, heat, mask) in zip(axes[1:], panels, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.imshow(heat, cmap="jet", alpha=0.45)
        if mask is not None and mask.any() and not mask.all():
            ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.2)
        ax.set_title(caption, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9)
    return _png(fig)
