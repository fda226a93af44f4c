"""AUROC (against a pairwise reference and scikit-learn), bootstrap CIs and the evaluation table."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from radalign.zeroshot.metrics import auroc, auroc_reason, bootstrap_ci, evaluate


def pairwise_auroc(y, s) -> float:
    """O(n^2) reference: P(score_pos > score_neg) + 0.5 P(tie)."""
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_known_values():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    # one tie between a positive and a negative among 2 x 2 pairs
    assert auroc([0, 0, 1, 1], [0.1, 0.3, 0.3, 0.4]) == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_pairwise_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 60
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = rng.integers(0, 6, n) / 5.0  # few distinct values: many ties
    assert auroc(y, s) == pytest.approx(pairwise_auroc(y, s), abs=1e-12)


def test_auroc_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)
    assert auroc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)


def test_single_class_is_nan_with_reason():
    assert np.isnan(auroc([1, 1, 1], [0.2, 0.3, 0.4]))
    assert np.isnan(auroc([0, 0], [0.2, 0.3]))
    assert auroc_reason([1, 1, 1]) == "no negative cases"
    assert auroc_reason([0, 0]) == "no positive cases"
    assert auroc_reason([]) == "no labelled cases"
    assert auroc_reason([0, 1]) is None
    assert bootstrap_ci([1, 1, 1], [0.1, 0.2, 0.3], n=50) != bootstrap_ci([0, 1], [0, 1], n=50)
    assert all(np.isnan(bootstrap_ci([1, 1, 1], [0.1, 0.2, 0.3], n=50)))


def test_auroc_rejects_bad_input():
    with pytest.raises(ValueError, match="0 or 1"):
        auroc([0, -1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="labels but"):
        auroc([0, 1], [0.1])
    with pytest.raises(ValueError, match="finite"):
        auroc([0, 1], [0.1, np.nan])


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + 0.8 * y
    point = auroc(y, s)
    lo, hi = bootstrap_ci(y, s, n=500, seed=3)
    assert lo < point < hi
    assert lo >= 0.0 and hi <= 1.0
    assert hi - lo < 0.3
    assert bootstrap_ci(y, s, n=500, seed=3) == (lo, hi)
    assert bootstrap_ci(y, s, n=500, seed=4) != (lo, hi)
    # narrower at a lower confidence level
    lo90, hi90 = bootstrap_ci(y, s, n=500, seed=3, alpha=0.2)
    assert lo <= lo90 and hi90 <= hi and (hi90 - lo90) < (hi - lo)


def test_vectorised_bootstrap_matches_a_loop_over_resamples():
    """The fast AUROC path gives the same interval as calling a metric per resample."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 40)
    s = rng.integers(0, 5, 40).astype(float)
    fast = bootstrap_ci(y, s, n=200, seed=9)
    slow = bootstrap_ci(y, s, metric=lambda a, b: pairwise_auroc(a, b), n=200, seed=9)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_vectorised_bootstrap_matches_auroc_per_resample():
    """The bootstrap's count-based AUROC agrees with :func:`auroc` (scikit-learn) per resample."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 80)
    s = np.round(rng.normal(size=80) + y, 1)  # ties
    fast = bootstrap_ci(y, s, n=100, seed=1)
    slow = bootstrap_ci(y, s, metric=lambda a, b: auroc(a, b), n=100, seed=1)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_bootstrap_skips_single_class_resamples():
    # 1 positive in 30: many resamples miss it; the interval still comes from the rest
    y = np.zeros(30, dtype=int)
    y[0] = 1
    s = np.linspace(0, 1, 30)
    lo, hi = bootstrap_ci(y, s, n=300, seed=0)
    assert lo == pytest.approx(0.0) and hi == pytest.approx(0.0)


def test_evaluate_table():
    idx = pd.Index([f"s{i}" for i in range(8)], name="id")
    probs = pd.DataFrame(
        {
            "A": [0.9, 0.8, 0.7, 0.2, 0.1, 0.6, 0.3, 0.4],
            "B": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
            "C": np.full(8, 0.5),
            "Extra": np.zeros(8),
        },
        index=idx,
    )
    labels = pd.DataFrame(
        {
            "A": [1, 1, 1, 0, 0, -1, np.nan, 0],
            "B": [1, 1, 1, 1, 1, 1, 1, 1],
            "C": [0, 1, 0, 1, 0, 1, 0, 1],
        },
        index=idx,
    )
    # labels in reverse row order: rows are matched by id, not position
    table = evaluate(probs, labels.iloc[::-1], threshold=0.5, n_boot=200, seed=0)
    assert list(table["class"]) == ["A", "B", "C", "macro"]
    a = table.set_index("class").loc["A"]
    assert (a.n_pos, a.n_neg) == (3, 3)  # -1 and NaN rows left out
    assert a.auroc == 1.0
    assert a.accuracy == 1.0 and a.f1 == 1.0
    assert a.ci_low <= a.auroc <= a.ci_high
    b = table.set_index("class").loc["B"]
    assert np.isnan(b.auroc) and b.note == "no negative cases" and np.isnan(b.ci_low)
    c = table.set_index("class").loc["C"]
    assert c.auroc == 0.5  # constant score
    assert c.accuracy == 0.5  # all predicted positive (0.5 >= 0.5)
    assert c.f1 == pytest.approx(2 * 4 / (2 * 4 + 4))
    macro = table.set_index("class").loc["macro"]
    assert macro.auroc == pytest.approx((1.0 + 0.5) / 2)
    assert macro.n_pos == 3 + 8 + 4


def test_evaluate_errors():
    p = pd.DataFrame({"A": [0.1, 0.9]}, index=["x", "y"])
    with pytest.raises(ValueError, match="no class in common"):
        evaluate(p, pd.DataFrame({"B": [0, 1]}, index=["x", "y"]))
    with pytest.raises(ValueError, match="no rows in common"):
        evaluate(p, pd.DataFrame({"A": [0, 1]}, index=["u", "v"]))
    with pytest.raises(ValueError, match="1, 0, -1"):
        evaluate(p, pd.DataFrame({"A": [0, 2]}, index=["x", "y"]))
