"""Drift: does one time window (by study date) or one site/source differ from the rest?

Per window versus all other rows: a permutation-tested MMD (RBF kernel, median-heuristic
bandwidth, at most ``max_samples`` rows per side) and a classifier two-sample test (logistic
regression fitted on one half, AUROC on the other half with a label-permutation p-value) on the
image and the report embeddings; label prevalence (chi-square per label), sex (chi-square) and
age (Kolmogorov–Smirnov). All p-values of one audit are Holm-corrected together, so unshifted
windows raise no alarm at level ``alpha`` in at least 1 − alpha of archives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from radalign.audit.findings import Finding
from radalign.audit.knn import valid_rows
from scipy import stats as sps

__all__ = ["check_drift", "classifier_test", "holm", "mmd_test", "windows"]


def holm(p) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control)."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def _pdist2(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)


def _subsample(x: np.ndarray, g: np.ndarray, max_samples: int, rng) -> tuple:
    if len(x) <= max_samples:
        return x, g
    keep = rng.choice(len(x), max_samples, replace=False)
    return x[keep], g[keep]


def _groups(groups, n: int, offset: int = 0) -> np.ndarray:
    """Group codes (patients); every row its own group when ``groups`` is None."""
    if groups is None:
        return np.arange(offset, offset + n)
    return np.asarray(groups)


def _weights(inside: np.ndarray) -> np.ndarray:
    m, n = inside.sum(), (~inside).sum()
    return np.where(inside, 1 / max(m, 1), -1 / max(n, 1))


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_perm: int = 200,
    max_samples: int = 2000,
    seed: int = 0,
    groups_x=None,
    groups_y=None,
) -> tuple[float, float]:
    """(biased MMD², permutation p-value) between samples ``x`` and ``y`` (RBF kernel, bandwidth
    the median pairwise distance of the pooled sample). With ``groups_x``/``groups_y`` (patient
    ids) the permutations move whole groups, because one patient's studies are not independent:
    record-level permutations would call a window of a few patients a drift."""
    rng = np.random.default_rng(seed)
    x, gx = _subsample(x, _groups(groups_x, len(x)), max_samples, rng)
    y, gy = _subsample(y, _groups(groups_y, len(y), len(x)), max_samples, rng)
    z = np.concatenate([x, y]).astype(np.float64)
    d2 = _pdist2(z)
    med = np.median(d2[np.triu_indices(len(z), 1)])
    k = np.exp(-d2 / max(med, 1e-12))
    inside = np.r_[np.ones(len(x), bool), np.zeros(len(y), bool)]
    codes, g = np.unique(np.r_[gx.astype(str), gy.astype(str)], return_inverse=True)
    # a group's side: where most of its rows are (a patient split across windows stays so)
    side = np.bincount(g, weights=inside, minlength=len(codes)) > 0.5 * np.bincount(g)
    w = np.empty((len(z), n_perm + 1))
    w[:, 0] = _weights(inside)
    for j in range(1, n_perm + 1):
        w[:, j] = _weights(rng.permutation(side)[g])
    stat = np.einsum("ij,ij->j", w, k @ w)
    null = stat[1:]
    p_emp = (1 + (null >= stat[0]).sum()) / (n_perm + 1)
    # the permutation null resolves p only to 1/(n_perm+1); beyond that, a gamma fitted to the
    # permutation null's moments gives the tail (Gretton et al.'s gamma approximation)
    mean, var = null.mean(), null.var()
    if mean > 0 and var > 0 and p_emp <= 2 / (n_perm + 1):
        return float(stat[0]), float(sps.gamma.sf(stat[0], mean**2 / var, scale=var / mean))
    return float(stat[0]), float(p_emp)


def classifier_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    max_samples: int = 5000,
    seed: int = 0,
    groups_x=None,
    groups_y=None,
) -> tuple[float, float]:
    """(held-out AUROC, p-value) of a logistic regression telling ``x`` from ``y``, fitted on one
    random half and scored on the other. The p-value is the one-sided Mann–Whitney test of the
    held-out scores, i.e. the label-permutation distribution of the AUROC (exact for small
    samples, its normal limit otherwise), so it resolves p far below 1/n_perm."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    x, gx = _subsample(x, _groups(groups_x, len(x)), max_samples, rng)
    y, gy = _subsample(y, _groups(groups_y, len(y), len(x)), max_samples, rng)
    z = np.concatenate([x, y])
    lab = np.r_[np.ones(len(x)), np.zeros(len(y))]
    # split by group (patient) and test on one score per group: rows of one patient are not
    # independent evidence
    codes, g = np.unique(np.r_[gx.astype(str), gy.astype(str)], return_inverse=True)
    in_test = rng.permutation(len(codes)) % 2 == 1
    tr, te = ~in_test[g], in_test[g]
    if len(set(lab[tr])) < 2 or len(set(lab[te])) < 2:
        return 0.5, 1.0
    clf = LogisticRegression(C=1.0, max_iter=500).fit(z[tr], lab[tr])
    s = clf.decision_function(z[te])
    auc = roc_auc_score(lab[te], s)
    per = pd.DataFrame({"g": g[te], "s": s, "lab": lab[te]}).groupby("g").mean()
    pos, neg = per["s"][per["lab"] > 0.5], per["s"][per["lab"] <= 0.5]
    if len(pos) < 2 or len(neg) < 2:
        return float(auc), 1.0
    p = sps.mannwhitneyu(pos, neg, alternative="greater").pvalue
    return float(auc), float(p)


def windows(
    frame: pd.DataFrame, window: str = "auto", *, min_size: int = 30, max_windows: int = 8
) -> tuple[str, pd.Series]:
    """(how, window name per row; None where a row has no window). ``window``: ``"site"``,
    ``"date"`` (equal-count date windows), a pandas period code (``"Y"``, ``"Q"``, ``"M"``) or
    ``"auto"`` (sites when there are ≥ 2 sites of ``min_size`` rows, else date windows)."""
    none = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    if window in ("auto", "site") and "site" in frame:
        sites = frame["site"].where(frame["site"].notna(), None).astype(object)
        counts = sites.value_counts()
        if (counts >= min_size).sum() >= 2:
            return "site", sites.where(sites.map(counts).fillna(0) >= min_size, None)
        if window == "site":
            return "site", none
    if "study_date" not in frame:
        return "date", none
    dates = pd.to_datetime(frame["study_date"], errors="coerce")
    ok = dates.notna()
    if ok.sum() < 2 * min_size:
        return "date", none
    if window in ("auto", "date"):
        nw = int(min(max_windows, ok.sum() // min_size))
        if nw < 2 or dates[ok].nunique() < 2:
            return "date", none
        t0 = dates[ok].min()
        secs = (dates[ok] - t0).dt.total_seconds().to_numpy()
        edges = np.unique(np.quantile(secs, np.linspace(0, 1, nw + 1)))
        codes = np.clip(np.searchsorted(edges, secs, side="right") - 1, 0, len(edges) - 2)
        lo = [t0 + pd.Timedelta(seconds=float(e)) for e in edges[:-1]]
        hi = [t0 + pd.Timedelta(seconds=float(e)) for e in edges[1:]]
        names = [f"{a:%Y-%m-%d}..{b:%Y-%m-%d}" for a, b in zip(lo, hi, strict=True)]
        out = none.copy()
        out[ok] = [names[c] for c in codes]
        return "date", out
    per = dates[ok].dt.to_period(window).astype(str)
    out = none.copy()
    out[ok] = per
    counts = out.value_counts()
    return "date", out.where(out.map(counts).fillna(0) >= min_size, None)


def _label_frame(frame: pd.DataFrame) -> pd.DataFrame:
    if "labels" not in frame:
        return pd.DataFrame(index=frame.index)
    rows = [lab if isinstance(lab, dict) else {} for lab in frame["labels"]]
    lf = pd.DataFrame(rows, index=frame.index)
    return lf.apply(pd.to_numeric, errors="coerce")


def _patients(frame: pd.DataFrame) -> np.ndarray:
    """Patient id per row, the record id where there is none."""
    ids = frame["id"].astype(str)
    if "patient_id" not in frame:
        return ids.to_numpy()
    pid = frame["patient_id"].astype("string").fillna("").str.strip()
    return pid.where(pid != "", "record:" + ids).astype(str).to_numpy()


def _tests(frame, inside, image_emb, report_emb, seed, n_perm) -> list[tuple[str, float, str]]:
    out = []
    for what, emb in (("image_embedding", image_emb), ("report_embedding", report_emb)):
        if emb is None:
            continue
        ok = valid_rows(emb)
        x, y = emb[inside & ok], emb[~inside & ok]
        if len(x) < 10 or len(y) < 10:
            continue
        groups = _patients(frame)
        gx, gy = groups[inside & ok], groups[~inside & ok]
        mmd, p_mmd = mmd_test(x, y, n_perm=n_perm, seed=seed, groups_x=gx, groups_y=gy)
        auc, p_auc = classifier_test(x, y, seed=seed, groups_x=gx, groups_y=gy)
        out.append((f"{what}_mmd", p_mmd, f"{what.replace('_', ' ')} MMD² {mmd:.4f}"))
        out.append(
            (f"{what}_classifier", p_auc, f"{what.replace('_', ' ')} classifier AUROC {auc:.3f}")
        )
    lf = _label_frame(frame)
    for col in lf.columns:
        v = lf[col]
        pos_in, pos_out = (v[inside] == 1).sum(), (v[~inside] == 1).sum()
        n_in, n_out = v[inside].notna().sum(), v[~inside].notna().sum()
        if n_in < 10 or n_out < 10 or pos_in + pos_out == 0 or pos_in + pos_out == n_in + n_out:
            continue
        tab = np.array([[pos_in, n_in - pos_in], [pos_out, n_out - pos_out]])
        p = sps.chi2_contingency(tab)[1]
        out.append(
            (
                f"label_{col}",
                float(p),
                f"{col} prevalence {pos_in / n_in:.1%} vs {pos_out / n_out:.1%} elsewhere",
            )
        )
    if "sex" in frame:
        s = frame["sex"].where(frame["sex"].isin(["F", "M"]))
        tab = pd.crosstab(inside[s.notna()], s[s.notna()])
        if tab.shape == (2, 2) and tab.to_numpy().min() >= 0 and tab.sum(axis=1).min() >= 10:
            p = sps.chi2_contingency(tab.to_numpy())[1]
            fi = (s[inside] == "F").mean()
            out.append(
                (
                    "sex",
                    float(p),
                    f"female share {fi:.1%} vs {(s[~inside] == 'F').mean():.1%} elsewhere",
                )
            )
    if "age" in frame:
        a = pd.to_numeric(frame["age"], errors="coerce")
        ai, ao = a[inside].dropna(), a[~inside].dropna()
        if len(ai) >= 10 and len(ao) >= 10:
            p = sps.ks_2samp(ai, ao).pvalue
            out.append(("age", float(p), f"median age {ai.median():.0f} vs {ao.median():.0f}"))
    return out


def check_drift(
    table,
    image_emb: np.ndarray | None = None,
    report_emb: np.ndarray | None = None,
    *,
    window: str = "auto",
    alpha: float = 0.01,
    min_size: int = 30,
    n_perm: int = 200,
    seed: int = 0,
) -> list[Finding]:
    """One ``drift`` finding per (window, test) that rejects after Holm correction at ``alpha``;
    ``ids`` are the window's records."""
    frame = table.frame.reset_index(drop=True)
    how, win = windows(frame, window, min_size=min_size)
    names = [w for w in pd.unique(win.dropna())]
    if len(names) < 2:
        return []
    img = None if image_emb is None else np.asarray(image_emb, np.float64)
    rep = None if report_emb is None else np.asarray(report_emb, np.float64)
    results = []
    for wi, name in enumerate(names):
        inside = (win == name).to_numpy()
        in_window = win.notna().to_numpy()
        sub = frame[in_window].reset_index(drop=True)
        for test, p, what in _tests(
            sub,
            inside[in_window],
            None if img is None else img[in_window],
            None if rep is None else rep[in_window],
            seed + wi,
            n_perm,
        ):
            results.append((name, test, p, what, inside))
    if not results:
        return []
    p_adj = holm([r[2] for r in results])
    reject = p_adj < alpha
    out = []
    for (name, test, p, what, inside), rej, pa in zip(results, reject, p_adj, strict=True):
        if not rej:
            continue
        ids = frame["id"].astype(str)[inside].tolist()
        out.append(
            Finding(
                "drift",
                f"{test}_shift",
                "medium",
                f"{how} window {name} ({inside.sum()} records) differs from the rest: "
                f"{what} (p {p:.2g}, Holm-adjusted {pa:.2g})",
                ids,
                (),
                float(-np.log10(max(pa, 1e-300))),
            )
        )
    return out
