"""The temporal head beats its no-history twin on a synthetic change task."""

from __future__ import annotations

import numpy as np
import pytest
from radalign.heads.timeline import CHANGE_CLASSES, change_class, evaluate_timeline, train_timeline


def _sequences(p=300, t=5, c=3, d=24, seed=0):
    rng = np.random.default_rng(seed)
    sev = np.zeros((p, t, c))
    sev[:, 0] = rng.integers(0, 3, (p, c))
    for s in range(1, t):
        step = rng.choice([-1, 0, 1], size=(p, c), p=[0.3, 0.4, 0.3])
        sev[:, s] = np.clip(sev[:, s - 1] + step, 0, 2)
    w = rng.normal(size=(c, d))
    x = (sev @ w + 0.3 * rng.normal(size=(p, t, d))).astype(np.float32)
    lengths = rng.integers(3, t + 1, p)
    mask = np.arange(t)[None] < lengths[:, None]
    x[~mask] = 0
    labels = (sev > 0).astype(np.float32)
    changes = np.zeros((p, t, c), np.int64)
    for s in range(1, t):
        changes[:, s] = np.vectorize(change_class)(sev[:, s - 1], sev[:, s])
    return x, mask, labels, changes


def test_change_class():
    assert [change_class(*pc) for pc in [(0, 0), (0, 1), (1, 2), (2, 0), (2, 1)]] == [0, 1, 2, 3, 0]
    assert CHANGE_CLASSES[1] == "new"


def test_history_beats_no_history(single_thread):
    data = _sequences()
    split = lambda a, s: tuple(v[s] for v in a)  # noqa: E731
    tr, va, te = (
        split(data, slice(0, 200)),
        split(data, slice(200, 250)),
        split(data, slice(250, 300)),
    )
    with_h = train_timeline(tr, va, history=True, max_epochs=80, batch_size=64, patience=15)
    without = train_timeline(tr, va, history=False, max_epochs=80, batch_size=64, patience=15)
    a, b = evaluate_timeline(with_h, te, n_boot=50), evaluate_timeline(without, te, n_boot=50)
    assert a["label_auroc_macro"] > 0.9 and b["label_auroc_macro"] > 0.9
    assert a["change_auroc"] > b["change_auroc"] + 0.1, (a, b)
    assert a["change_ci"][0] <= a["change_auroc"] <= a["change_ci"][1]


def test_bad_shapes():
    x, m, y, c = _sequences(p=10)
    with pytest.raises(ValueError, match="changes must match"):
        train_timeline((x, m, y, c[..., :1]), (x, m, y, c), max_epochs=1)
    with pytest.raises(ValueError, match="want x"):
        train_timeline((x[0], m, y, c), (x, m, y, c), max_epochs=1)
