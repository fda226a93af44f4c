"""Linear probes on frozen embeddings: one logistic regression per label column.

:func:`fit_linear_probe` takes ``x`` ``[N, E]`` and binary labels ``y`` ``[N]`` (one task) or
``[N, C]`` (multi-label, one independent regression per column). The inverse regularisation
``C`` is chosen per column from ``Cs`` by validation AUROC when validation data are given (then
the model is refitted on train + val), else by stratified 3-fold cross-validation on train (no
selection for a single ``C``).
Classes are weighted ``"balanced"``; no standardisation, as L2-normalised embeddings are already
on one scale. Fits are deterministic (fixed ``random_state``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from radalign.zeroshot.metrics import auroc
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

__all__ = ["DEFAULT_CS", "LinearProbe", "fit_linear_probe"]

DEFAULT_CS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
SEED = 0
_CV_FOLDS = 3


@dataclass
class LinearProbe:
    """Fitted per-column logistic regressions; ``chosen_C[j]`` and ``selection_auroc[j]`` record
    the pick for column ``j`` (AUROC on val, or mean cross-validated AUROC)."""

    models: list[LogisticRegression]
    columns: list[str]
    chosen_C: list[float]
    selection_auroc: list[float]
    multilabel: bool
    n_features: int
    scores: list[dict[float, float]] = field(default_factory=list, repr=False)

    def predict_proba(self, x) -> np.ndarray:
        """Positive-class probabilities: ``[N]`` for a 1-D ``y`` at fit time, else ``[N, C]``."""
        x = _check_x(x, "x")
        if x.shape[1] != self.n_features:
            raise ValueError(
                f"x has {x.shape[1]} features, the probe was fitted on {self.n_features}"
            )
        probs = np.column_stack([m.predict_proba(x)[:, 1] for m in self.models])
        return probs if self.multilabel else probs[:, 0]


def fit_linear_probe(
    train_x,
    train_y,
    val_x=None,
    val_y=None,
    Cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 2000,
) -> LinearProbe:
    """Fit one balanced logistic regression per label column, ``C`` chosen from ``Cs``.

    Raises ``ValueError`` for bad shapes, non-binary labels, a column with one class only (in
    train, or in val when val is given), or an empty or non-positive ``Cs``.
    """
    cs = _check_cs(Cs)
    x, y, columns, multilabel = _check_xy(train_x, train_y, "train")
    has_val = val_x is not None or val_y is not None
    if has_val:
        if val_x is None or val_y is None:
            raise ValueError("give both val_x and val_y, or neither")
        vx, vy, _, val_multi = _check_xy(val_x, val_y, "val", columns)
        if vx.shape[1] != x.shape[1] or val_multi != multilabel or vy.shape[1] != y.shape[1]:
            raise ValueError(
                f"val shapes {vx.shape}, {vy.shape} do not match train {x.shape}, {y.shape}"
            )
    models, chosen, best_scores, all_scores = [], [], [], []
    for j, name in enumerate(columns):
        if len(cs) == 1 and not has_val:
            scores = {cs[0]: float("nan")}  # nothing to choose
        elif has_val:
            scores = {c: _val_auroc(x, y[:, j], vx, vy[:, j], c, max_iter) for c in cs}
        else:
            scores = {c: _cv_auroc(x, y[:, j], c, max_iter, name) for c in cs}
        best = max(cs, key=lambda c: (scores[c], -abs(np.log10(c))))  # ties: closest to C=1
        fx, fy = (
            (np.vstack([x, vx]), np.concatenate([y[:, j], vy[:, j]])) if has_val else (x, y[:, j])
        )
        models.append(_logreg(best, max_iter).fit(fx, fy))
        chosen.append(best)
        best_scores.append(scores[best])
        all_scores.append(scores)
    return LinearProbe(models, columns, chosen, best_scores, multilabel, x.shape[1], all_scores)


def _logreg(c: float, max_iter: int) -> LogisticRegression:
    return LogisticRegression(
        C=c, class_weight="balanced", max_iter=max_iter, random_state=SEED, solver="lbfgs"
    )


def _val_auroc(x, y, vx, vy, c: float, max_iter: int) -> float:
    model = _logreg(c, max_iter).fit(x, y)
    return auroc(vy, model.predict_proba(vx)[:, 1])


def _cv_auroc(x, y, c: float, max_iter: int, name: str) -> float:
    folds = min(_CV_FOLDS, int(np.bincount(y).min()))
    if folds < 2:
        raise ValueError(
            f"column {name!r}: fewer than 2 cases of one class, too few to choose C by "
            "cross-validation; give val_x/val_y"
        )
    cv = StratifiedKFold(folds, shuffle=True, random_state=SEED)
    return float(cross_val_score(_logreg(c, max_iter), x, y, cv=cv, scoring=_scorer).mean())


def _scorer(model: LogisticRegression, x, y) -> float:
    """Fold AUROC for ``cross_val_score`` (what its ``"roc_auc"`` scorer computes)."""
    return auroc(y, model.decision_function(x))


def _check_cs(cs: Sequence[float]) -> list[float]:
    values = [float(c) for c in cs]
    if not values:
        raise ValueError("Cs is empty")
    if any(not np.isfinite(c) or c <= 0 for c in values):
        raise ValueError(f"every C must be a positive number, got {values}")
    return sorted(set(values))


def _check_x(x, where: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{where} must be 2-D [N, E], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where} holds NaN or infinite values")
    return arr


def _check_xy(x, y, where: str, columns: list[str] | None = None):
    """``(x [N, E], y [N, C] int, column names, multilabel)`` after shape and value checks."""
    xa = _check_x(x, f"{where}_x")
    names = [str(c) for c in y.columns] if isinstance(y, pd.DataFrame) else None
    ya = np.asarray(y, dtype=np.float64)
    if ya.ndim not in (1, 2):
        raise ValueError(f"{where}_y must be [N] or [N, C], got shape {ya.shape}")
    multilabel = ya.ndim == 2
    ya = ya.reshape(len(ya), -1)
    if len(ya) != len(xa):
        raise ValueError(f"{where}_x has {len(xa)} rows but {where}_y has {len(ya)}")
    if ya.shape[1] == 0:
        raise ValueError(f"{where}_y has no label columns")
    if not np.isin(ya, (0.0, 1.0)).all():
        raise ValueError(f"{where}_y must hold only 0 and 1 (drop uncertain or missing labels)")
    names = columns or names or [str(j) for j in range(ya.shape[1])]
    for j, name in enumerate(names[: ya.shape[1]]):
        if np.unique(ya[:, j]).size < 2:
            raise ValueError(f"{where}_y column {name!r} holds one class only ({int(ya[0, j])})")
    return xa, ya.astype(np.int64), names, multilabel
