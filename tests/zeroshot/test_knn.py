"""kNN label transfer on a hand-built index of 'reports'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from radalign.retrieval.index import Index
from radalign.zeroshot.knn import knn_label_transfer, label_matrix


def _index() -> Index:
    # four reports on the unit circle (2-D): angles 0, 10, 90, 180 degrees
    ang = np.deg2rad([0.0, 10.0, 90.0, 180.0])
    vectors = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    meta = pd.DataFrame(
        {
            "id": ["r0", "r1", "r2", "r3"],
            "Edema": [1.0, 0.0, np.nan, 0.0],
            "Pneumonia": [-1.0, 1.0, 1.0, np.nan],
            "report": ["a", "b", "c", "d"],
        }
    )
    return Index.build(vectors, meta, fingerprint="test", factory="Flat")


def _reference(index, labels: np.ndarray, q: np.ndarray, k: int, t: float) -> np.ndarray:
    sims = index.vectors @ (q / np.linalg.norm(q))
    top = np.argsort(-sims, kind="stable")[:k]
    w = np.exp((sims[top] - sims[top].max()) / t)
    out = []
    for c in range(labels.shape[1]):
        y = labels[top, c]
        ok = np.isfinite(y)
        out.append((w[ok] * y[ok]).sum() / w[ok].sum() if ok.any() else np.nan)
    return np.array(out)


@pytest.mark.parametrize(("k", "t"), [(1, 0.1), (2, 0.1), (3, 0.5), (4, 10.0)])
def test_matches_numpy_reference(k, t):
    index = _index()
    q = np.array([[1.0, 0.05], [0.0, 1.0], [-1.0, 0.2]])
    got = knn_label_transfer(index, ["Edema", "Pneumonia"], q, k=k, temperature=t)
    labels = np.array([[1.0, 1.0], [0.0, 1.0], [np.nan, 1.0], [0.0, np.nan]])  # -1 -> 1 (U-Ones)
    for i in range(len(q)):
        np.testing.assert_allclose(got.iloc[i].to_numpy(), _reference(index, labels, q[i], k, t))


def test_nearest_neighbour_dominates_at_low_temperature():
    index = _index()
    q = np.array([[1.0, 0.0]])  # r0 exactly; r1 at 10 degrees
    sharp = knn_label_transfer(index, ["Edema"], q, k=2, temperature=0.001)
    flat = knn_label_transfer(index, ["Edema"], q, k=2, temperature=100.0)
    assert sharp.loc[0, "Edema"] == pytest.approx(1.0)
    assert flat.loc[0, "Edema"] == pytest.approx(0.5, abs=1e-3)


def test_uncertain_and_unknown_labels():
    index = _index()
    q = np.array([[1.0, 0.0]])
    ones = knn_label_transfer(index, ["Pneumonia"], q, k=1)
    zeros = knn_label_transfer(index, ["Pneumonia"], q, k=1, uncertain=0.0)
    ignored = knn_label_transfer(index, ["Pneumonia"], q, k=1, uncertain=np.nan)
    assert ones.loc[0, "Pneumonia"] == 1.0
    assert zeros.loc[0, "Pneumonia"] == 0.0
    assert np.isnan(ignored.loc[0, "Pneumonia"])  # the only neighbour's label is uncertain
    # r2 (90 deg) has no Edema label: with k=1 it is unknown, NaN
    up = knn_label_transfer(index, ["Edema"], np.array([[0.0, 1.0]]), k=1)
    assert np.isnan(up.loc[0, "Edema"])


def test_label_frame_by_id_and_by_position():
    index = _index()
    q = np.array([[0.0, 1.0], [-1.0, 0.0]])
    frame = pd.DataFrame({"id": ["r3", "r2", "r1", "r0"], "X": [1, 0, 0, 0]})
    by_id = knn_label_transfer(index, frame, q, k=1, ids=["up", "left"])
    assert list(by_id.index) == ["up", "left"]
    assert by_id["X"].tolist() == [0.0, 1.0]  # r3 (180 deg) is X-positive
    by_pos = knn_label_transfer(index, pd.DataFrame({"X": [0, 0, 0, 1]}), q, k=1)
    assert by_pos["X"].tolist() == [0.0, 1.0]


def test_k_capped_and_errors():
    index = _index()
    q = np.array([[1.0, 0.0]])
    big = knn_label_transfer(index, ["Edema"], q, k=50, temperature=1e6)
    assert big.loc[0, "Edema"] == pytest.approx(1 / 3)  # all three known labels, equal weights
    with pytest.raises(KeyError, match="Hernia"):
        knn_label_transfer(index, ["Hernia"], q)
    with pytest.raises(ValueError, match="1, 0, -1"):
        knn_label_transfer(index, ["report"], q)
    with pytest.raises(ValueError, match="temperature"):
        knn_label_transfer(index, ["Edema"], q, temperature=0)
    with pytest.raises(ValueError, match="k must"):
        knn_label_transfer(index, ["Edema"], q, k=0)
    with pytest.raises(ValueError, match="rows for an index"):
        knn_label_transfer(index, pd.DataFrame({"X": [1, 0]}), q)
    with pytest.raises(ValueError, match="no labels"):
        label_matrix(index, pd.DataFrame({"id": ["r0"], "X": [1]}))
