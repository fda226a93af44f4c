"""Temporal head over a patient's ordered studies.

Input: per-study fused embeddings ``x [P, T, D]`` (e.g. image ⊕ report) with a mask
``[P, T]`` of real studies (patients padded to the longest).  A per-study encoder (Linear ->
ReLU) feeds a causal GRU; from each step it predicts the study's labels (``[P, T, C]``, BCE)
and, for every step after the first, the change of each label since the previous study
(``[P, T, C, 4]``, CE over :data:`CHANGE_CLASSES`).  ``history=False`` is the no-history
baseline: the same head with the GRU replaced by the current study alone, so change must be
guessed from one study.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from radalign.heads.train import fit_early_stopping
from radalign.zeroshot.metrics import auroc, bootstrap_ci
from torch import nn

__all__ = [
    "CHANGE_CLASSES",
    "TimelineHead",
    "change_class",
    "TimelineFit",
    "build_timeline",
    "evaluate_timeline",
    "train_timeline",
]

CHANGE_CLASSES = ("unchanged", "new", "worsened", "resolved")
IGNORE = -100


def change_class(prev: float, cur: float) -> int:
    """Index into :data:`CHANGE_CLASSES` for a severity going ``prev`` -> ``cur`` (0 = absent).

    Absent in both counts as unchanged; a smaller but still present finding as unchanged too
    (the phantom reports call it "improved", which is not one of the four classes)."""
    if prev == 0 and cur > 0:
        return 1
    if prev > 0 and cur == 0:
        return 3
    if cur > prev:
        return 2
    return 0


class TimelineHead(nn.Module):
    """Study encoder -> causal GRU (or none) -> label logits and change logits."""

    def __init__(self, dim: int, n_labels: int, hidden: int = 128, history: bool = True):
        super().__init__()
        self.history = history
        self.n_labels = n_labels
        self.encode = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.1))
        self.gru = nn.GRU(hidden, hidden, batch_first=True) if history else None
        self.labels = nn.Linear(hidden, n_labels)
        self.change = nn.Linear(hidden, n_labels * len(CHANGE_CLASSES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        if self.gru is not None:
            h, _ = self.gru(h)  # unidirectional: step t sees studies 0..t only
        p, t = x.shape[:2]
        return self.labels(h), self.change(h).view(p, t, self.n_labels, len(CHANGE_CLASSES))


def build_timeline(config: dict[str, Any]) -> TimelineHead:
    """The (untrained) head a saved timeline config describes."""
    return TimelineHead(
        sum(config["dims"]), config["n_out"], config.get("hidden", 128), config.get("history", True)
    )


@dataclass
class TimelineFit:
    """A fitted timeline head with its config (:mod:`radalign.heads.io` saves and loads it)."""

    module: TimelineHead
    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(label probabilities [P, T, C], change probabilities [P, T, C, 4])`` for fused
        per-study embeddings ``x [P, T, D]`` (step ``t`` depends only on studies ``0..t``)."""
        x = np.asarray(x, np.float32)
        if x.ndim != 3 or x.shape[2] != sum(self.config["dims"]):
            raise ValueError(
                f"timeline input must be [P, T, {sum(self.config['dims'])}], got {x.shape}"
            )
        self.module.eval()
        with torch.no_grad():
            lab, ch = self.module(torch.from_numpy(x))
        return torch.sigmoid(lab).numpy(), torch.softmax(ch, -1).numpy()


def _tensors(x, mask, labels, changes):
    x = torch.as_tensor(np.asarray(x, np.float32))
    mask = torch.as_tensor(np.asarray(mask, bool))
    y = torch.as_tensor(np.asarray(labels, np.float32))
    c = torch.as_tensor(np.asarray(changes, np.int64))
    if x.ndim != 3 or mask.shape != x.shape[:2] or y.shape[:2] != x.shape[:2]:
        raise ValueError(f"want x [P, T, D], mask [P, T], labels [P, T, C]; got {x.shape}, "
                         f"{tuple(mask.shape)}, {tuple(y.shape)}")  # fmt: skip
    if c.shape != y.shape:
        raise ValueError(f"changes must match labels' shape {tuple(y.shape)}, got {tuple(c.shape)}")
    c = c.masked_fill(~mask[..., None], IGNORE)
    c[:, 0] = IGNORE  # the first study has no prior
    return x, mask, y, c


def _loss(module, x, mask, y, c) -> torch.Tensor:
    lab, ch = module(x)
    bce = nn.functional.binary_cross_entropy_with_logits(lab, y, reduction="none").mean(-1)
    bce = (bce * mask).sum() / mask.sum().clamp(min=1)
    ce = nn.functional.cross_entropy(
        ch.reshape(-1, len(CHANGE_CLASSES)), c.reshape(-1), ignore_index=IGNORE
    )
    return bce + ce


def train_timeline(
    train: tuple, val: tuple, *, history: bool = True, lr: float = 1e-3, batch_size: int = 8,
    max_epochs: int = 300, patience: int = 30, seed: int = 0, hidden: int = 128,
    dims: Sequence[int] | None = None, columns: Sequence[str] | None = None,
) -> TimelineFit:  # fmt: skip
    """Fit on ``train = (x, mask, labels, changes)``; early-stops on ``val`` loss.

    ``batch_size`` counts patients; small batches matter when there are only ~100 patients.
    ``dims`` (the widths of the fused modalities, summing to ``D``) and ``columns`` (label
    names) go into the config."""
    x, m, y, c = _tensors(*train)
    vx, vm, vy, vc = _tensors(*val)
    if vx.shape[2] != x.shape[2] or vy.shape[2] != y.shape[2]:
        raise ValueError(f"val sequences [.., {vx.shape[2]}] do not match train [.., {x.shape[2]}]")
    dims = [int(d) for d in dims] if dims is not None else [int(x.shape[2])]
    if sum(dims) != x.shape[2]:
        raise ValueError(f"dims {dims} do not sum to the input width {x.shape[2]}")
    cols = list(columns) if columns is not None else [str(j) for j in range(y.shape[2])]
    config = {"head": "timeline", "dims": dims, "n_out": int(y.shape[2]), "columns": cols,
              "hidden": hidden, "history": history}  # fmt: skip
    torch.manual_seed(seed)
    module = build_timeline(config)
    start = time.perf_counter()
    hist, best = fit_early_stopping(
        module,
        lambda i: _loss(module, x[i], m[i], y[i], c[i]),
        lambda: _loss(module, vx, vm, vy, vc),
        len(x),
        lr=lr, batch_size=batch_size, max_epochs=max_epochs, patience=patience, seed=seed,
    )  # fmt: skip
    config.update(lr=lr, batch_size=batch_size, epochs_run=len(hist), best_val_loss=best, seed=seed)
    return TimelineFit(module, config, hist, time.perf_counter() - start)


def evaluate_timeline(fit: TimelineFit, data: tuple, n_boot: int = 200) -> dict[str, Any]:
    """Per-study label AUROC (per label with bootstrap 95 % CI, and macro) and change detection
    AUROC: changed vs unchanged, scored by ``1 - p(unchanged)``, over every (study after the
    first, label) pair, with its CI; plus per change class one-vs-rest AUROC."""
    x, m, y, c = _tensors(*data)
    lab, prob = fit.predict(x.numpy())
    real, yv = m.numpy(), y.numpy()
    per_label = {}
    for j, name in enumerate(fit.config["columns"]):
        t, s = yv[..., j][real], lab[..., j][real]
        lo, hi = bootstrap_ci(t, s, n=n_boot)
        per_label[name] = {"auroc": auroc(t, s), "ci_low": lo, "ci_high": hi, "n_pos": int(t.sum())}
    valid = c.numpy() != IGNORE
    cv, pv = c.numpy()[valid], prob[valid]
    changed = (cv != 0).astype(int)
    score = 1 - pv[:, 0]
    lo, hi = bootstrap_ci(changed, score, n=n_boot)
    per_class = {
        name: auroc((cv == k).astype(int), pv[:, k]) for k, name in enumerate(CHANGE_CLASSES)
    }
    finite = [v["auroc"] for v in per_label.values() if np.isfinite(v["auroc"])]
    return {
        "label_auroc": per_label,
        "label_auroc_macro": float(np.mean(finite)) if finite else float("nan"),
        "change_auroc": auroc(changed, score),
        "change_ci": [lo, hi],
        "change_auroc_per_class": per_class,
        "change_accuracy": float((pv.argmax(1) == cv).mean()) if len(cv) else float("nan"),
        "n_transitions": int(valid.sum()),
        "n_changed": int(changed.sum()),
    }
