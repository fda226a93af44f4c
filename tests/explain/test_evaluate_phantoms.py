"""``evaluate_cases`` on two small phantoms with the tiny model and its randomised copy."""

from __future__ import annotations

import numpy as np
import pytest
from radalign.explain.evaluate import evaluate_cases, phantom_cases, randomized_copy


def test_phantom_cases_have_masks():
    cases = phantom_cases(3, seed=11, size=64)
    assert len(cases) == 3
    assert all(any(m.any() for m in c.masks.values()) for c in cases)
    again = phantom_cases(3, seed=11, size=64)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(cases, again))
    with pytest.raises(ValueError):
        phantom_cases(0)


def test_evaluate_cases_rows_and_sanity(tiny_model, single_thread):
    cases = phantom_cases(2, seed=3, size=64)
    result = evaluate_cases(
        tiny_model, cases, random_model=randomized_copy(tiny_model, seed=1), steps=2
    )
    rows = result["rows"]
    n_masks = sum(1 for c in cases for m in c.masks.values() if m.any() and not m.all())
    pooled = {r["method"]: r for r in rows if r["finding"] == "all"}
    assert set(pooled) == {
        "attention", "gradients", "centre prior", "random attention", "random gradients"
    }  # fmt: skip
    for r in pooled.values():
        assert r["n"] == n_masks
        assert 0 <= r["pointing"] <= 1 and 0 <= r["hit"] <= 1 and 0 <= r["miou"] <= 1
        assert 0 < r["chance"] < 1
    assert set(result["sanity"]) == {"attention", "gradients"}
    for s in result["sanity"].values():
        assert s["n"] == n_masks and -1 <= s["rank_corr"] <= 1 and -1 <= s["rank_corr_raw"] <= 1
    assert rows[-1]["finding"] == "all"  # pooled rows come last
