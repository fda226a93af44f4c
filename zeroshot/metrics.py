"""Evaluation of per-class probabilities against labels: AUROC, bootstrap CIs, accuracy, F1.

AUROC is the Mann–Whitney statistic: the chance that a random positive scores above a random
negative, ties counting one half.  :func:`auroc` is the one AUROC of the package (scikit-learn's
``roc_auc_score``); the bootstrap computes the same statistic from per-score-level counts, all
resamples at once.  A class whose labels hold only one value has no AUROC: the functions return
NaN and :func:`auroc_reason` says why, instead of raising (``roc_auc_score`` would raise).  Labels follow the
CheXpert convention (1 positive, 0 negative, -1 uncertain); :func:`evaluate` leaves out -1 and
missing labels class by class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

__all__ = ["auroc", "auroc_reason", "bootstrap_ci", "evaluate"]

_MAX_BOOT_CELLS = 4_000_000  # resample indices held at once (int64: 32 MB)


def auroc_reason(y_true) -> str | None:
    """Why AUROC is undefined for these labels (``None`` when it is defined)."""
    y = np.asarray(y_true)
    if y.size == 0:
        return "no labelled cases"
    n_pos = int((y == 1).sum())
    if n_pos == 0:
        return "no positive cases"
    if n_pos == y.size:
        return "no negative cases"
    return None


def auroc(y_true, score) -> float:
    """Area under the ROC curve of binary labels (0/1) by score; ties count 1/2.

    scikit-learn's ``roc_auc_score``, but NaN (not an exception) when only one class is
    present; see :func:`auroc_reason`.
    """
    from sklearn.metrics import roc_auc_score

    y, s = _check_binary(y_true, score)
    if auroc_reason(y) is not None:
        return float("nan")
    return float(roc_auc_score(y, s))


def _auroc_from_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC from per-score-level counts ``[..., G]`` (levels ascending); NaN if one class.

    The bootstrap's vectorised form of :func:`auroc` (a loop of ``roc_auc_score`` over 1000
    resamples is ~200x slower); tests check the two agree.
    """
    g = max(pos.shape[-1], neg.shape[-1])
    pos = _pad(pos, g).astype(np.float64)
    neg = _pad(neg, g).astype(np.float64)
    below = np.cumsum(neg, axis=-1) - neg  # negatives strictly below each level
    wins = (pos * (below + 0.5 * neg)).sum(axis=-1)
    pairs = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)


def _pad(a: np.ndarray, g: int) -> np.ndarray:
    if a.shape[-1] == g:
        return a
    width = [(0, 0)] * (a.ndim - 1) + [(0, g - a.shape[-1])]
    return np.pad(a, width)


def bootstrap_ci(
    y_true,
    score,
    metric: Callable[[np.ndarray, np.ndarray], float] = auroc,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile ``1 - alpha`` interval of ``metric`` over ``n`` case resamples.

    Resamples holding one class only (or where ``metric`` is NaN) are skipped; ``(nan, nan)``
    when none is usable.  :func:`auroc` runs vectorised; other metrics one resample at a time.
    """
    y, s = _check_binary(y_true, score)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n < 1 or y.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if metric is auroc:
        values = _bootstrap_auroc(y, s, n, rng)
    else:
        values = np.empty(n)
        for b in range(n):
            idx = rng.integers(0, y.size, y.size)
            yb = y[idx]
            values[b] = np.nan if auroc_reason(yb) else metric(yb, s[idx])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _bootstrap_auroc(y: np.ndarray, s: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """AUROC of ``n`` resamples from per-level counts, a chunk of resamples at a time."""
    _, inv = np.unique(s, return_inverse=True)
    g = int(inv.max()) + 1
    cell = inv + g * y.astype(np.int64)  # level, offset by g for positives
    size = y.size
    chunk = max(1, _MAX_BOOT_CELLS // size)
    out = np.empty(n)
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        idx = rng.integers(0, size, (b, size))
        flat = cell[idx] + (2 * g) * np.arange(b)[:, None]
        counts = np.bincount(flat.ravel(), minlength=2 * g * b).reshape(b, 2, g)
        out[start : start + b] = _auroc_from_counts(counts[:, 1], counts[:, 0])
    return out


def evaluate(
    probs: pd.DataFrame,
    labels: pd.DataFrame,
    threshold: float | Mapping[str, float] = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per class shared by ``probs`` and ``labels`` (rows matched by index), plus
    ``macro``.

    Columns: ``class, n_pos, n_neg, auroc, ci_low, ci_high, accuracy, f1, threshold, note``.
    Per class, rows whose label is -1 or missing (or whose probability is NaN) are left out.
    Decisions are ``prob >= threshold``.  The macro row averages AUROC (and accuracy, F1) over
    the classes where both labels occur; its ``n_pos``/``n_neg`` are sums.
    """
    classes = [c for c in probs.columns if c in labels.columns]
    if not classes:
        raise ValueError(
            f"no class in common between predictions {list(probs.columns)} and labels "
            f"{list(labels.columns)}"
        )
    common = probs.index.intersection(labels.index)
    if probs.index.has_duplicates or labels.index.has_duplicates:
        raise ValueError("predictions and labels need unique row ids (index) to be matched")
    if len(common) == 0:
        raise ValueError("no rows in common between predictions and labels (match by index)")
    rows = []
    for c in classes:
        thr = float(threshold[c]) if isinstance(threshold, Mapping) else float(threshold)
        y = pd.to_numeric(labels.loc[common, c], errors="coerce").to_numpy(dtype=np.float64)
        p = pd.to_numeric(probs.loc[common, c], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isin(y[np.isfinite(y)], (-1.0, 0.0, 1.0))
        if bad.any():
            raise ValueError(f"labels of {c!r} must be 1, 0, -1 or blank")
        keep = np.isin(y, (0.0, 1.0)) & np.isfinite(p)
        y, p = y[keep].astype(np.int64), p[keep]
        reason = auroc_reason(y)
        pred = p >= thr
        tp = int((pred & (y == 1)).sum())
        fp = int((pred & (y == 0)).sum())
        fn = int((~pred & (y == 1)).sum())
        rows.append(
            {
                "class": c,
                "n_pos": int((y == 1).sum()),
                "n_neg": int((y == 0).sum()),
                "auroc": auroc(y, p) if reason is None else np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "accuracy": float((pred == (y == 1)).mean()) if y.size else np.nan,
                "f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else np.nan,
                "threshold": thr,
                "note": reason or "",
            }
        )
        if reason is None and n_boot > 0:
            rows[-1]["ci_low"], rows[-1]["ci_high"] = bootstrap_ci(
                y, p, n=n_boot, seed=seed, alpha=alpha
            )
    table = pd.DataFrame(rows)
    ok = table["auroc"].notna()
    macro = {
        "class": "macro",
        "n_pos": int(table["n_pos"].sum()),
        "n_neg": int(table["n_neg"].sum()),
        "auroc": float(table.loc[ok, "auroc"].mean()) if ok.any() else np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "accuracy": float(table.loc[ok, "accuracy"].mean()) if ok.any() else np.nan,
        "f1": float(table.loc[ok, "f1"].mean()) if ok.any() else np.nan,
        "threshold": np.nan,
        "note": f"mean over {int(ok.sum())} of {len(table)} classes with both labels",
    }
    return pd.concat([table, pd.DataFrame([macro])], ignore_index=True)


def _check_binary(y_true, score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1 (drop uncertain/missing labels first)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(np.int64), s
