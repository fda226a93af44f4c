"""Linear probe on synthetic separable data: near-perfect AUROC, C chosen by val, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from radalign.zeroshot.linear_probe import fit_linear_probe
from sklearn.metrics import roc_auc_score


def _blobs(n: int, dim: int = 8, seed: int = 0, shift: float = 1.5):
    """Two Gaussian blobs along the first axis, rows L2-normalised; labels 0/1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, dim))
    x[:, 0] += shift * (2 * y - 1)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_binary_separable_auroc_near_one():
    x, y = _blobs(200, seed=0, shift=4.0)
    vx, vy = _blobs(80, seed=1, shift=4.0)
    tx, ty = _blobs(100, seed=2, shift=4.0)
    probe = fit_linear_probe(x, y, vx, vy, Cs=(0.1, 1.0, 10.0))
    p = probe.predict_proba(tx)
    assert p.shape == (100,)
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(ty, p) > 0.98
    assert probe.chosen_C[0] in (0.1, 1.0, 10.0)
    assert set(probe.scores[0]) == {0.1, 1.0, 10.0}


def test_deterministic():
    x, y = _blobs(100)
    a = fit_linear_probe(x, y, Cs=(0.1, 1.0)).predict_proba(x)
    b = fit_linear_probe(x, y, Cs=(0.1, 1.0)).predict_proba(x)
    np.testing.assert_array_equal(a, b)


def test_c_picked_by_val():
    """The choice follows val: it has the best val AUROC, and flipping the val labels (which
    reverses every C's ranking of the val AUROCs) moves it to the other C."""
    rng = np.random.default_rng(5)
    x, y = _blobs(120, seed=5, shift=0.8)
    x = np.hstack([x, 0.3 * rng.normal(size=(120, 30))])  # noise features: C matters
    vx, vy = _blobs(120, seed=6, shift=0.8)
    vx = np.hstack([vx, 0.3 * rng.normal(size=(120, 30))])
    probe = fit_linear_probe(x, y, vx, vy, Cs=(1e-3, 1e3))
    flipped = fit_linear_probe(x, y, vx, 1 - vy, Cs=(1e-3, 1e3))
    for p in (probe, flipped):
        assert p.selection_auroc[0] == p.scores[0][p.chosen_C[0]] == max(p.scores[0].values())
    assert probe.scores[0][1e-3] != probe.scores[0][1e3]
    assert probe.chosen_C != flipped.chosen_C


def test_multilabel_one_model_per_column():
    x, y0 = _blobs(200, seed=7, shift=4.0)
    y1 = 1 - y0
    y = pd.DataFrame({"A": y0, "B": y1})
    probe = fit_linear_probe(x, y, Cs=(1.0,))
    p = probe.predict_proba(x)
    assert p.shape == (200, 2) and probe.columns == ["A", "B"] and len(probe.models) == 2
    assert roc_auc_score(y0, p[:, 0]) > 0.98 and roc_auc_score(y1, p[:, 1]) > 0.98


def test_cross_validation_without_val():
    x, y = _blobs(90, seed=8, shift=3.0)
    probe = fit_linear_probe(x, y, Cs=(0.1, 10.0))
    assert probe.chosen_C[0] in (0.1, 10.0) and probe.selection_auroc[0] > 0.9


def test_one_class_column_named():
    x, _ = _blobs(20)
    y = pd.DataFrame({"Pneumonia": np.r_[np.zeros(10), np.ones(10)], "Edema": np.zeros(20)})
    with pytest.raises(ValueError, match="'Edema'.*one class"):
        fit_linear_probe(x, y, Cs=(1.0,))
    with pytest.raises(ValueError, match="column '0'.*one class"):
        fit_linear_probe(x, np.ones(20), Cs=(1.0,))


def test_one_class_in_val_named():
    x, y = _blobs(40)
    with pytest.raises(ValueError, match="val_y column '0'"):
        fit_linear_probe(x, y, x[:5], np.zeros(5))


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros(10), np.r_[np.zeros(5), np.ones(5)], "2-D"),
        (np.zeros((10, 3)), np.zeros((10, 2, 2)), r"\[N\] or \[N, C\]"),
        (np.zeros((10, 3)), np.r_[np.zeros(4), np.ones(5)], "10 rows but train_y has 9"),
        (np.zeros((10, 3)), np.r_[np.zeros(5), np.full(5, 2)], "only 0 and 1"),
        (np.full((10, 3), np.nan), np.r_[np.zeros(5), np.ones(5)], "NaN"),
    ],
)
def test_bad_shapes(x, y, match):
    with pytest.raises(ValueError, match=match):
        fit_linear_probe(x, y, Cs=(1.0,))


def test_bad_cs_and_val_and_predict_shape():
    x, y = _blobs(40)
    with pytest.raises(ValueError, match="Cs is empty"):
        fit_linear_probe(x, y, Cs=())
    with pytest.raises(ValueError, match="positive"):
        fit_linear_probe(x, y, Cs=(0.0,))
    with pytest.raises(ValueError, match="both val_x and val_y"):
        fit_linear_probe(x, y, val_x=x)
    with pytest.raises(ValueError, match="do not match"):
        fit_linear_probe(x, y, x[:, :3], y)
    probe = fit_linear_probe(x, y, Cs=(1.0,))
    with pytest.raises(ValueError, match="fitted on 8"):
        probe.predict_proba(np.zeros((3, 5)))
