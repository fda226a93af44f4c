"""Train fusion heads (:mod:`radalign.heads.blocks`) on frozen embeddings and score them.

Multilabel targets are ``[N, C]`` 0/1 (BCE with logits, optional ``pos_weight``); multiclass
targets are ``[N]`` class indices (cross-entropy, optional class weights). AdamW, lr 1e-3,
batch 64, early stopping on validation loss (:func:`fit_early_stopping`, shared with the
timeline head); the best epoch's weights are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from radalign.heads.blocks import build_head
from radalign.zeroshot.metrics import auroc, bootstrap_ci
from sklearn.metrics import f1_score
from torch import nn

__all__ = [
    "TASKS",
    "TrainedHead",
    "check_inputs",
    "class_weights",
    "fit_early_stopping",
    "score",
    "train_head",
]

TASKS = ("multilabel", "multiclass")


@dataclass
class TrainedHead:
    """A fitted head with what is needed to rebuild it (:mod:`radalign.heads.io`)."""

    module: nn.Module
    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0

    def predict_proba(self, xs: Sequence[np.ndarray], batch_size: int = 1024) -> np.ndarray:
        """Probabilities ``[N, C]``: sigmoid (multilabel) or softmax (multiclass)."""
        xs = check_inputs(xs, self.config["dims"])
        self.module.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(xs[0]), batch_size):
                logits = self.module([torch.from_numpy(x[s : s + batch_size]) for x in xs])
                out.append(
                    torch.sigmoid(logits)
                    if self.config.get(
                        "activation",
                        "sigmoid" if self.config["task"] == "multilabel" else "softmax",
                    )
                    == "sigmoid"
                    else torch.softmax(logits, 1)
                )
        return torch.cat(out).numpy().astype(np.float64)


def check_inputs(xs: Sequence[np.ndarray], dims: Sequence[int] | None = None) -> list[np.ndarray]:
    """float32 ``[N, d_i]`` arrays with equal ``N``; ``ValueError`` naming what is wrong."""
    arrs = [np.ascontiguousarray(np.asarray(x, dtype=np.float32)) for x in xs]
    if not arrs:
        raise ValueError("no embedding inputs given")
    for i, a in enumerate(arrs):
        if a.ndim != 2:
            raise ValueError(f"embedding input {i} must be 2-D [N, E], got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"embedding input {i} holds NaN or infinite values")
    if len({len(a) for a in arrs}) != 1:
        raise ValueError(f"embedding inputs have different row counts {[len(a) for a in arrs]}")
    if dims is not None:
        got = [a.shape[1] for a in arrs]
        if got != list(dims):
            raise ValueError(f"embedding dims {got} do not match the head's dims {list(dims)}")
    return arrs


def _check_y(y: np.ndarray, task: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if len(y) != n:
        raise ValueError(f"labels have {len(y)} rows but the embeddings {n}")
    if task == "multilabel":
        y = y.reshape(n, -1).astype(np.float64)
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("multilabel targets must hold only 0 and 1")
        return y.astype(np.float32)
    if y.ndim != 1 or not np.all(np.equal(np.mod(y, 1), 0)) or (y < 0).any():
        raise ValueError("multiclass targets must be a 1-D array of class indices >= 0")
    return y.astype(np.int64)


def class_weights(y: np.ndarray, task: str, n_classes: int) -> torch.Tensor:
    """BCE ``pos_weight`` (negatives / positives per column) or CE weights ``N / (K n_k)``."""
    if task == "multilabel":
        pos = y.sum(0)
        return torch.tensor((len(y) - pos) / np.maximum(pos, 1), dtype=torch.float32)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(y) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def fit_early_stopping(
    module: nn.Module,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    val_loss: Callable[[], torch.Tensor],
    n: int,
    *,
    lr: float = 1e-3,
    batch_size: int = 64,
    max_epochs: int = 200,
    patience: int = 10,
    seed: int = 0,
    min_batch: int = 1,
) -> tuple[list[dict[str, float]], float]:
    """AdamW over shuffled batches of ``n`` rows (``batch_loss(row indices)``), early stopping
    on ``val_loss()``; the best epoch's weights are loaded back. Returns ``(history, best)``.

    Batches smaller than ``min_batch`` are skipped (BatchNorm needs 2 rows)."""
    opt = torch.optim.AdamW(module.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, bad, history = float("inf"), None, 0, []
    for epoch in range(max_epochs):
        module.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            if len(idx) < min_batch:
                continue
            opt.zero_grad()
            loss = batch_loss(idx)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        module.eval()
        with torch.no_grad():
            v = float(val_loss())
        history.append({"epoch": epoch, "train_loss": total / n, "val_loss": v})
        if v < best - 1e-6:
            best, bad = v, 0
            best_state = {k: t.detach().clone() for k, t in module.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history, best


def train_head(
    kind: str,
    train_x: Sequence[np.ndarray],
    train_y: np.ndarray,
    val_x: Sequence[np.ndarray],
    val_y: np.ndarray,
    *,
    task: str = "multilabel",
    n_classes: int | None = None,
    use_class_weights: bool = False,
    lr: float = 1e-3,
    batch_size: int = 64,
    max_epochs: int = 200,
    patience: int = 10,
    seed: int = 0,
    columns: Sequence[str] | None = None,
) -> TrainedHead:
    """Fit a ``linear``, ``early`` or ``late`` head.

    ``early``/``late`` early-stop on validation loss (best weights kept); ``linear`` is the
    package's linear probe (:func:`radalign.zeroshot.linear_probe.fit_linear_probe`, C chosen on
    the validation rows, one-vs-rest for multiclass) on the concatenated modalities."""
    xs = check_inputs(train_x)
    dims = [x.shape[1] for x in xs]
    vxs = check_inputs(val_x, dims)
    y = _check_y(train_y, task, len(xs[0]))
    vy = _check_y(val_y, task, len(vxs[0]))
    if task == "multilabel":
        n_out = y.shape[1]
        if vy.shape[1] != n_out:
            raise ValueError(f"val labels have {vy.shape[1]} columns, train {n_out}")
    else:
        n_out = int(n_classes or max(y.max(), vy.max()) + 1)
        if max(y.max(), vy.max()) >= n_out:
            raise ValueError(f"class index >= n_classes={n_out}")
    cols = list(columns) if columns is not None else [str(j) for j in range(n_out)]
    config = {"head": kind, "task": task, "dims": dims, "n_out": n_out, "columns": cols}
    if kind == "linear":
        return _fit_linear(xs, y, vxs, vy, task, config)
    torch.manual_seed(seed)
    module = build_head(kind, dims, n_out)
    weight = class_weights(y, task, n_out) if use_class_weights else None
    loss_fn = (
        nn.BCEWithLogitsLoss(pos_weight=weight)
        if task == "multilabel"
        else nn.CrossEntropyLoss(weight=weight)
    )
    tx = [torch.from_numpy(x) for x in xs]
    ty = torch.from_numpy(y)
    vtx = [torch.from_numpy(x) for x in vxs]
    vty = torch.from_numpy(vy)
    start = time.perf_counter()
    history, best = fit_early_stopping(
        module,
        lambda idx: loss_fn(module([t[idx] for t in tx]), ty[idx]),
        lambda: loss_fn(module(vtx), vty),
        len(ty),
        lr=lr, batch_size=batch_size, max_epochs=max_epochs, patience=patience, seed=seed,
        min_batch=2,
    )  # fmt: skip
    config.update(
        class_weights=bool(use_class_weights),
        lr=lr,
        batch_size=batch_size,
        epochs_run=len(history),
        best_val_loss=best,
        seed=seed,
    )
    return TrainedHead(module, config, history, time.perf_counter() - start)


def _fit_linear(xs, y, vxs, vy, task: str, config: dict[str, Any]) -> TrainedHead:
    from radalign.zeroshot.linear_probe import fit_linear_probe

    if task == "multiclass":
        eye = np.eye(config["n_out"])
        y, vy = eye[y], eye[vy]
    start = time.perf_counter()
    probe = fit_linear_probe(np.hstack(xs), y, np.hstack(vxs), vy)
    seconds = time.perf_counter() - start
    module = build_head("linear", config["dims"], y.shape[1])
    with torch.no_grad():
        module.classifier.weight.copy_(
            torch.tensor(np.vstack([m.coef_ for m in probe.models]), dtype=torch.float32)
        )
        module.classifier.bias.copy_(
            torch.tensor(np.concatenate([m.intercept_ for m in probe.models]), dtype=torch.float32)
        )
    module.eval()
    config.update(
        activation="sigmoid",
        class_weights=True,  # the probe weights classes "balanced"
        chosen_C=[float(c) for c in probe.chosen_C],
    )
    return TrainedHead(module, config, [], seconds)


def score(
    probs: np.ndarray,
    y: np.ndarray,
    task: str,
    columns: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, macro F1 and per-class AUROC with bootstrap 95 % CIs (plus their macro mean).

    Multilabel: decisions at 0.5, accuracy averaged over columns. Multiclass: argmax accuracy,
    one-vs-rest AUROC per class."""
    probs = np.asarray(probs, dtype=np.float64)
    if task == "multilabel":
        yb = np.asarray(y).reshape(len(y), -1).astype(int)
        pred = (probs >= 0.5).astype(int)
        acc = float((pred == yb).mean())
        f1 = float(f1_score(yb, pred, average="macro", zero_division=0))
    else:
        yi = np.asarray(y).astype(int)
        yb = np.eye(probs.shape[1], dtype=int)[yi]
        pred = probs.argmax(1)
        acc = float((pred == yi).mean())
        f1 = float(f1_score(yi, pred, average="macro", zero_division=0))
    per_class = {}
    for j, name in enumerate(columns):
        a = auroc(yb[:, j], probs[:, j])
        lo, hi = bootstrap_ci(yb[:, j], probs[:, j], n=n_boot, seed=seed)
        per_class[str(name)] = {
            "auroc": a,
            "ci_low": lo,
            "ci_high": hi,
            "n_pos": int(yb[:, j].sum()),
        }
    vals = [v["auroc"] for v in per_class.values() if np.isfinite(v["auroc"])]
    return {
        "accuracy": acc,
        "f1_macro": f1,
        "auroc_macro": float(np.mean(vals)) if vals else float("nan"),
        "per_class": per_class,
    }
