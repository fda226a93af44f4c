"""Grounding metrics on hand-made maps and masks, and the sanity-check logic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from radalign.explain.evaluate import (
    centre_prior,
    cnr,
    iou,
    miou,
    pointing_hit,
    randomized_copy,
    rank_correlation,
    region_hit,
    sanity_check,
    score_map,
    summarise,
)


def _mask(shape=(10, 10), rows=slice(2, 5), cols=slice(2, 5)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[rows, cols] = True
    return m


def test_pointing_game_hit_and_miss():
    mask = _mask()
    heat = np.zeros((10, 10))
    heat[3, 3] = 1.0
    assert pointing_hit(heat, mask)
    heat[8, 8] = 2.0
    assert not pointing_hit(heat, mask)


def test_iou_exact_values():
    mask = _mask()  # 9 pixels
    heat = np.zeros((10, 10))
    heat[2:5, 2:5] = 1.0
    assert iou(heat, mask, 0.5) == 1.0
    heat[2:5, 5] = 1.0  # 3 more kept pixels outside: 9 / 12
    assert iou(heat, mask, 0.3) == pytest.approx(9 / 12)
    heat = np.zeros((10, 10))
    heat[2:5, 2:5] = 0.25  # below 0.5 of... its own max is 0.25: normalised to 1
    heat[0, 0] = 1.0
    assert iou(heat, mask, 0.2) == pytest.approx(9 / 10)  # kept: mask + (0, 0)
    assert iou(heat, mask, 0.5) == 0.0  # kept: (0, 0) only
    assert miou(heat, mask, (0.2, 0.5)) == pytest.approx(0.45)
    assert iou(np.ones((10, 10)), mask, 0.1) == 0.0  # a flat map keeps nothing


def test_region_hit_needs_half_the_kept_area_inside():
    mask = _mask()
    heat = np.zeros((10, 10))
    heat[2:5, 2:5] = 1.0
    heat[2:5, 5:8] = 1.0  # 9 inside, 9 outside: exactly half
    assert region_hit(heat, mask, 0.5)
    heat[2:5, 8] = 1.0  # 9 inside, 12 outside
    assert not region_hit(heat, mask, 0.5)


def test_cnr_exact():
    mask = _mask()
    heat = np.where(mask, 1.0, 0.0)
    assert cnr(heat, mask) == math.inf  # perfect separation, no spread
    rng = np.random.default_rng(0)
    heat = rng.random((10, 10))
    heat[0, 0], heat[9, 9] = 0.0, 1.0  # min-max normalisation is then the identity
    inside, outside = heat[mask], heat[~mask]
    want = abs(inside.mean() - outside.mean()) / math.sqrt(inside.var() + outside.var())
    assert cnr(heat, mask) == pytest.approx(want)
    assert cnr(heat * 5 + 3, mask) == pytest.approx(want)  # scale-free
    assert cnr(np.zeros((10, 10)), mask) == 0.0


def test_centre_prior_peaks_at_centre_and_scores():
    prior = centre_prior((9, 9))
    assert prior.shape == (9, 9)
    assert np.unravel_index(prior.argmax(), prior.shape) == (4, 4)
    assert prior.min() == pytest.approx(0.0)
    central = _mask((9, 9), slice(3, 6), slice(3, 6))
    corner = _mask((9, 9), slice(0, 2), slice(0, 2))
    assert score_map(prior, central)["pointing"]
    assert not score_map(prior, corner)["pointing"]


def test_bad_pairs_raise():
    with pytest.raises(ValueError, match="shape"):
        iou(np.zeros((4, 4)), np.ones((5, 5), bool), 0.5)
    with pytest.raises(ValueError, match="empty"):
        pointing_hit(np.zeros((4, 4)), np.zeros((4, 4), bool))


def test_summarise_means():
    s = [{"pointing": True, "hit": False, "miou": 0.5, "cnr": 1.0},
         {"pointing": False, "hit": False, "miou": 0.1, "cnr": float("inf")}]  # fmt: skip
    g = summarise(s, [0.1, 0.3])
    assert (g.n, g.pointing, g.hit) == (2, 0.5, 0.0)
    assert g.miou == pytest.approx(0.3) and g.cnr == 1.0 and g.chance == pytest.approx(0.2)


def test_rank_correlation():
    a = np.arange(16.0).reshape(4, 4)
    assert rank_correlation(a, a**3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.ones((4, 4))) == 0.0


def test_sanity_check_logic():
    shares = [0.1] * 200
    # a randomised model that still "points" every time fails (not at chance)
    bad = sanity_check([True] * 200, shares, [0.9] * 200)
    assert not bad.at_chance and not bad.low_correlation and not bad.passed
    # at chance (20/200 = 0.1) and uncorrelated passes
    rng = np.random.default_rng(0)
    hits = [True] * 20 + [False] * 180
    good = sanity_check(hits, shares, rng.uniform(-0.2, 0.2, 200))
    assert good.at_chance and good.low_correlation and good.passed
    assert good.p_value > 0.5
    # below chance counts as at chance; high correlation alone fails
    assert sanity_check([False] * 200, shares, [0.0] * 200).at_chance
    assert not sanity_check(hits, shares, [0.95] * 200).passed
    assert np.isnan(good.rank_corr_raw)
    assert sanity_check(hits, shares, [0.0] * 200, raw_rank_corrs=[0.2, 0.4]).rank_corr_raw == (
        pytest.approx(0.3)
    )
    with pytest.raises(ValueError):
        sanity_check([True], [0.1, 0.2], [0.0])


def test_randomized_copy_changes_every_weight_but_keeps_the_model(tiny_model):
    rnd = randomized_copy(tiny_model, seed=3)
    again = randomized_copy(tiny_model, seed=3)
    assert rnd is not tiny_model and not rnd.training
    trained = dict(tiny_model.named_parameters())
    changed = [n for n, p in rnd.named_parameters() if not torch.equal(p, trained[n])]
    conv = [n for n, p in trained.items() if p.ndim == 4]  # conv kernels (norms reset to 1)
    assert conv
    assert set(conv) <= set(changed)
    assert all(torch.equal(p, q) for p, q in zip(rnd.parameters(), again.parameters()))
    assert torch.equal(rnd.logit_scale, tiny_model.logit_scale)
