"""Centring and orthogonal Procrustes reduce the modality gap and recover rotations."""

from __future__ import annotations

import numpy as np
from radalign.heads.alignment import (
    fit_aligner,
    fit_procrustes,
    modality_gap,
    normalise,
    recall_at_k,
)
from scipy.stats import ortho_group


def _paired(n=300, d=32, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    rot = ortho_group.rvs(d, random_state=seed)
    shift = np.zeros(d)
    shift[0] = 3.0
    image = normalise(z + shift)
    text = normalise((z + 0.3 * rng.normal(size=(n, d))) @ rot - shift)
    return image, text, rot


def test_procrustes_recovers_known_rotation():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(200, 16))
    rot = ortho_group.rvs(16, random_state=3)
    r = fit_procrustes(a, a @ rot)
    np.testing.assert_allclose(r, rot, atol=1e-8)
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-10)


def test_alignment_reduces_gap_and_improves_retrieval():
    image, text, _ = _paired()
    tr, te = slice(0, 200), slice(200, 300)
    none = fit_aligner(image[tr], text[tr], "none")
    cen = fit_aligner(image[tr], text[tr], "centre")
    pro = fit_aligner(image[tr], text[tr], "procrustes")
    gaps = [modality_gap(a.image(image[te]), a.text(text[te])) for a in (none, cen, pro)]
    assert gaps[1] < 0.5 * gaps[0] and gaps[2] < 0.5 * gaps[0]
    r_none = recall_at_k(none.image(image[te]), none.text(text[te]))
    r_pro = recall_at_k(pro.image(image[te]), pro.text(text[te]))
    assert r_pro["R@1"] > r_none["R@1"] + 0.3
    assert r_pro["R@10"] >= r_pro["R@1"]


def test_recall_identity_is_one():
    x = normalise(np.random.default_rng(0).normal(size=(50, 8)))
    assert recall_at_k(x, x) == {"R@1": 1.0, "R@10": 1.0}
