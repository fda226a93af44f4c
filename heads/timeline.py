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
import pandas as pd
import torch
from radalign.zeroshot.metrics import auroc, bootstrap_ci
from torch import nn

__all__ = [
    "CHANGE_CLASSES",
    "TimelineHead",
    "change_class",
    "evaluate_timeline",
    "sequences_from_manifest",
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


@dataclass
class TimelineFit:
    module: TimelineHead
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


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
    max_epochs: int = 300, patience: int = 30, seed: int = 0,
) -> TimelineFit:  # fmt: skip
    """Fit on ``train = (x, mask, labels, changes)``; early-stops on ``val`` loss.

    ``batch_size`` counts patients; small batches matter when there are only ~100 patients."""
    x, m, y, c = _tensors(*train)
    vx, vm, vy, vc = _tensors(*val)
    torch.manual_seed(seed)
    module = TimelineHead(x.shape[2], y.shape[2], history=history)
    opt = torch.optim.AdamW(module.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    best, state, bad, hist = float("inf"), None, 0, []
    start = time.perf_counter()
    for epoch in range(max_epochs):
        module.train()
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch_size):
            i = perm[s : s + batch_size]
            opt.zero_grad()
            loss = _loss(module, x[i], m[i], y[i], c[i])
            loss.backward()
            opt.step()
        module.eval()
        with torch.no_grad():
            v = float(_loss(module, vx, vm, vy, vc))
        hist.append({"epoch": epoch, "val_loss": v})
        if v < best - 1e-6:
            best, bad = v, 0
            state = {k: t.detach().clone() for k, t in module.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if state is not None:
        module.load_state_dict(state)
    module.eval()
    return TimelineFit(module, hist, time.perf_counter() - start)


def evaluate_timeline(fit: TimelineFit, data: tuple, n_boot: int = 200) -> dict[str, Any]:
    """Per-study label AUROC (macro) and change detection AUROC: changed vs unchanged, scored
    by ``1 - p(unchanged)``, over every (study after the first, label) pair; plus per change
    class one-vs-rest AUROC."""
    x, m, y, c = _tensors(*data)
    with torch.no_grad():
        lab, ch = fit.module(x)
    lab = torch.sigmoid(lab).numpy()
    prob = torch.softmax(ch, -1).numpy()
    real = m.numpy()
    label_aurocs = [auroc(y.numpy()[..., j][real], lab[..., j][real]) for j in range(y.shape[2])]
    valid = c.numpy() != IGNORE
    cv, pv = c.numpy()[valid], prob[valid]
    changed = (cv != 0).astype(int)
    score = 1 - pv[:, 0]
    lo, hi = bootstrap_ci(changed, score, n=n_boot)
    per_class = {
        name: auroc((cv == k).astype(int), pv[:, k]) for k, name in enumerate(CHANGE_CLASSES)
    }
    finite = [a for a in label_aurocs if np.isfinite(a)]
    return {
        "label_auroc_macro": float(np.mean(finite)) if finite else float("nan"),
        "change_auroc": auroc(changed, score),
        "change_ci": [lo, hi],
        "change_auroc_per_class": per_class,
        "change_accuracy": float((pv.argmax(1) == cv).mean()),
        "n_transitions": int(valid.sum()),
    }


def sequences_from_manifest(
    manifest: pd.DataFrame,
    ids: Sequence[str],
    vectors: Sequence[np.ndarray],
    tracked: Sequence[str],
) -> tuple[tuple, list[str], list[str]]:
    """``((x, mask, labels, changes), patient ids, their split)`` from a longitudinal manifest
    (:mod:`radalign.data.synth_longitudinal`) and per-study embeddings (rows of ``vectors``
    matched to ``ids``; several modalities are concatenated). Studies are ordered by date."""
    row = {str(i): r for r, i in enumerate(ids)}
    df = manifest.assign(id=manifest["id"].astype(str))
    df = df[df["id"].isin(row)].sort_values(["patient_id", "study_date"])
    missing = [f"change:{k}" for k in tracked if f"change:{k}" not in df.columns]
    if missing:
        raise ValueError(f"manifest has no column(s) {missing}")
    fused = np.hstack([np.asarray(v, np.float32) for v in vectors])
    groups = list(df.groupby("patient_id", sort=True))
    t_max = max(len(g) for _, g in groups)
    p, c = len(groups), len(tracked)
    x = np.zeros((p, t_max, fused.shape[1]), np.float32)
    mask = np.zeros((p, t_max), bool)
    labels = np.zeros((p, t_max, c), np.float32)
    changes = np.zeros((p, t_max, c), np.int64)
    splits = []
    for i, (_, g) in enumerate(groups):
        n = len(g)
        x[i, :n] = fused[[row[s] for s in g["id"]]]
        mask[i, :n] = True
        for j, k in enumerate(tracked):
            labels[i, :n, j] = g[f"severity:{k}"].to_numpy() > 0
            names = g[f"change:{k}"].fillna("unchanged").replace("", "unchanged")
            changes[i, :n, j] = [CHANGE_CLASSES.index(v) for v in names]
        splits.append(str(g["split"].iloc[0]) if "split" in g.columns else "train")
    return (x, mask, labels, changes), [str(k) for k, _ in groups], splits
