"""Reduce the image-report modality gap of frozen embeddings without retraining the towers.

* :func:`centre`: subtract each modality's mean (fitted on training rows), renormalise.
* :func:`fit_procrustes`: an orthogonal map ``R`` (``scipy.linalg.orthogonal_procrustes``)
  taking image vectors onto their paired report vectors; apply as ``image @ R``.
* :func:`modality_gap`: distance between the two modalities' centroids;
  :func:`recall_at_k`: image->report retrieval recall among the paired rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from scipy.linalg import orthogonal_procrustes

__all__ = [
    "ALIGN_FILE",
    "Aligner",
    "load_aligner",
    "save_aligner",
    "centre",
    "fit_aligner",
    "fit_procrustes",
    "modality_gap",
    "normalise",
    "recall_at_k",
]

ALIGN_FILE = "align.safetensors"


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows left at zero)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def centre(x: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """``normalise(x - mean)``; ``mean`` defaults to ``x``'s own column mean."""
    x = np.asarray(x, dtype=np.float64)
    return normalise(x - (x.mean(0) if mean is None else mean))


def fit_procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Orthogonal ``R`` minimising ``||source @ R - target||_F`` over paired rows."""
    a, b = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired embeddings must have equal 2-D shapes, got {a.shape}, {b.shape}")
    r, _ = orthogonal_procrustes(a, b)
    return r


def modality_gap(image: np.ndarray, text: np.ndarray) -> float:
    """Euclidean distance between the image centroid and the report centroid."""
    return float(np.linalg.norm(np.mean(image, 0) - np.mean(text, 0)))


def recall_at_k(
    image: np.ndarray, text: np.ndarray, ks: Sequence[int] = (1, 10)
) -> dict[str, float]:
    """Image->report recall@k where row ``i`` of ``text`` is the match of row ``i`` of ``image``."""
    sims = normalise(image) @ normalise(text).T
    rank = (sims > np.diag(sims)[:, None]).sum(1)  # reports scoring strictly above the match
    return {f"R@{k}": float((rank < k).mean()) for k in ks}


@dataclass
class Aligner:
    """Fitted alignment: ``method`` in ``none``, ``centre``, ``procrustes`` (centre, then R)."""

    method: str
    image_mean: np.ndarray
    text_mean: np.ndarray
    rotation: np.ndarray | None = None

    def image(self, x: np.ndarray) -> np.ndarray:
        if self.method == "none":
            return normalise(x)
        out = centre(x, self.image_mean)
        return normalise(out @ self.rotation) if self.rotation is not None else out

    def text(self, x: np.ndarray) -> np.ndarray:
        return normalise(x) if self.method == "none" else centre(x, self.text_mean)


def fit_aligner(image: np.ndarray, text: np.ndarray, method: str = "procrustes") -> Aligner:
    """Fit ``none`` / ``centre`` / ``procrustes`` on paired training rows."""
    if method not in ("none", "centre", "procrustes"):
        raise ValueError(f"unknown alignment {method!r}; choose none, centre or procrustes")
    im, tx = np.asarray(image, np.float64), np.asarray(text, np.float64)
    al = Aligner(method, im.mean(0), tx.mean(0))
    if method == "procrustes":
        al.rotation = fit_procrustes(centre(im, al.image_mean), centre(tx, al.text_mean))
    return al


def save_aligner(al: Aligner, path: str | os.PathLike) -> None:
    """Write the fitted means (and rotation) as safetensors; the method goes in the metadata."""
    tensors = {"image_mean": al.image_mean, "text_mean": al.text_mean}
    if al.rotation is not None:
        tensors["rotation"] = al.rotation
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), {"method": al.method}
    )


def load_aligner(path: str | os.PathLike) -> Aligner:
    """Read what :func:`save_aligner` wrote."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no alignment file")
    with safe_open(str(path), "np") as fh:
        method = (fh.metadata() or {}).get("method", "centre")
        t = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    return Aligner(method, t["image_mean"], t["text_mean"], t.get("rotation"))
