"""Validation Recall@K: tie-pessimistic, and the same numbers as retrieval evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from radalign.pretrain.validation import recall_at_k
from radalign.retrieval import evaluate


def test_collapsed_model_gets_no_credit():
    # every embedding equal: every partner ties with every other item, so none ranks first
    emb = torch.nn.functional.normalize(torch.ones(6, 4), dim=1)
    assert recall_at_k(emb @ emb.T, ks=(1, 5, 6)) == {1: 0.0, 5: 0.0, 6: 1.0}
    assert recall_at_k(torch.zeros(3, 3), ks=(1, 3)) == {1: 0.0, 3: 1.0}


def test_hand_made_ties_and_nan():
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.5, 0.5, 0.0], [0.3, float("nan"), 0.1]])
    # row 0 first; row 1 tied with column 0 -> 2nd; row 2 below 0.3 and a NaN -> 3rd
    assert recall_at_k(sim, ks=(1, 2, 3)) == {
        1: pytest.approx(1 / 3),
        2: pytest.approx(2 / 3),
        3: 1.0,
    }
    assert recall_at_k(torch.full((2, 2), float("nan")), ks=(1, 2)) == {1: 0.0, 2: 1.0}


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_retrieval_on_tied_scores(seed):
    # one-hot rows over 3 axes: unit vectors whose cosines are exactly 0 or 1, so ties abound
    rng = np.random.default_rng(seed)
    n, ks = 40, (1, 2, 5, 10)
    q = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    g = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    g[: n // 4] = q[: n // 4]  # some partners tie for first with others on the same axis
    ret = evaluate.recall_at_k(q, g, ks)
    sim = torch.from_numpy(q) @ torch.from_numpy(g).T
    assert {f"R@{k}": v for k, v in recall_at_k(sim, ks).items()} == ret["query_to_gallery"]
    assert {f"R@{k}": v for k, v in recall_at_k(sim.T, ks).items()} == ret["gallery_to_query"]
    # and ties are really there: the rank with `>` would give higher recall at 1
    assert ret["query_to_gallery"]["R@1"] < float(np.mean(q.argmax(1) == g.argmax(1)))


def test_agrees_with_retrieval_on_continuous_scores():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((30, 8)).astype(np.float32)
    g = q + rng.standard_normal((30, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    ret = evaluate.recall_at_k(q, g, (1, 5, 10))["query_to_gallery"]
    mine = recall_at_k(torch.from_numpy(q) @ torch.from_numpy(g).T, (1, 5, 10))
    assert {f"R@{k}": v for k, v in mine.items()} == ret
    assert 0.0 < ret["R@1"] < 1.0
