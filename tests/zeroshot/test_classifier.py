"""PromptClassifier math against a plain numpy/torch reference on the ``tiny`` model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from radalign.zeroshot.classifier import MAX_LOGIT_SCALE, PromptClassifier, pair_probability
from radalign.zeroshot.prompts import PromptSet, load_prompt_set

SMALL = PromptSet(
    "small",
    {
        "Pleural Effusion": {
            "positive": ["Moderate left pleural effusion.", "Small bilateral effusions."],
            "negative": ["No pleural effusion."],
        },
        "Pneumothorax": {
            "positive": ["Large right pneumothorax."],
            "negative": ["No pneumothorax.", "There is no pneumothorax.", "Lungs expanded."],
        },
        "No Finding": {
            "positive": ["No acute cardiopulmonary process.", "The lungs are clear."],
            "negative": ["Right lower lobe consolidation.", "The heart is enlarged."],
        },
    },
)


def _swap(ps: PromptSet) -> PromptSet:
    return PromptSet(
        "swapped",
        {c: {"positive": v["negative"], "negative": v["positive"]} for c, v in ps.classes.items()},
    )


def _embed(model, texts) -> np.ndarray:
    with torch.inference_mode():
        return model.encode_text(model.tokenize(list(texts))).double().numpy()


def _reference(model, ps: PromptSet, x: np.ndarray, scale: float) -> np.ndarray:
    out = []
    for c in ps.class_names:
        t = []
        for texts in (ps.positive(c), ps.negative(c)):
            v = np.stack([_embed(model, [s])[0] for s in texts]).mean(0)  # one at a time
            t.append(v / np.linalg.norm(v))
        a, b = scale * (x @ t[0]), scale * (x @ t[1])
        out.append(np.exp(a) / (np.exp(a) + np.exp(b)))
    return np.stack(out, axis=1)


@pytest.fixture(scope="module")
def queries(tiny_model) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, tiny_model.config.embed_dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def small(tiny_model) -> PromptClassifier:
    return PromptClassifier(tiny_model, SMALL, precision="fp32")


def test_matches_reference(tiny_model, small, queries):
    scale = min(float(tiny_model.logit_scale.detach().exp()), MAX_LOGIT_SCALE)
    assert small.scale == pytest.approx(scale)
    probs = small.predict(queries)
    assert list(probs.columns) == SMALL.class_names
    np.testing.assert_allclose(
        probs.to_numpy(),
        _reference(tiny_model, SMALL, queries.astype(np.float64), scale),
        atol=1e-5,
    )


def test_class_index_holds_ensembled_unit_vectors(tiny_model, small):
    assert len(small.index) == 2 * len(SMALL.class_names)
    assert small.index.fingerprint == tiny_model.fingerprint()
    np.testing.assert_allclose(np.linalg.norm(small.positive_vectors, axis=1), 1.0, atol=1e-5)
    v = _embed(tiny_model, SMALL.negative("Pneumothorax")).mean(0)
    np.testing.assert_allclose(small.negative_vectors[1], v / np.linalg.norm(v), atol=1e-5)
    pos, neg = small.similarities(small.positive_vectors[:1])
    assert pos[0, 0] == pytest.approx(1.0, abs=1e-5)  # a class vector is closest to itself
    np.testing.assert_allclose(
        neg[0], small.negative_vectors @ small.positive_vectors[0], atol=1e-5
    )


def test_temperature_and_symmetry(tiny_model, small, queries):
    hot = PromptClassifier(tiny_model, SMALL, temperature=0.5, precision="fp32")
    assert hot.scale == 2.0
    pos, neg = small.similarities(queries)
    np.testing.assert_allclose(
        hot.predict(queries).to_numpy(), 1 / (1 + np.exp(-2.0 * (pos - neg))), atol=1e-6
    )
    swapped = PromptClassifier(tiny_model, _swap(SMALL), precision="fp32")
    swapped = swapped.predict(queries).to_numpy()
    probs = small.predict(queries).to_numpy()
    np.testing.assert_allclose(swapped, 1.0 - probs, atol=1e-5)
    assert ((probs > 0) & (probs < 1)).all()


def test_pair_probability_bounds_and_extremes():
    p = pair_probability(np.array([1.0, -1.0, 0.3]), np.array([-1.0, 1.0, 0.3]), 100.0)
    assert p[0] == pytest.approx(1.0) and p[1] == pytest.approx(0.0) and p[2] == 0.5
    assert ((p >= 0) & (p <= 1)).all()


def test_predict_texts_ids_and_decide(tiny_model, small):
    texts = ["Moderate left pleural effusion.", "No acute cardiopulmonary process."]
    got = small.predict_texts(texts, ids=["a", "b"])
    assert list(got.index) == ["a", "b"]
    np.testing.assert_allclose(
        got.to_numpy(), small.predict(_embed(tiny_model, texts).astype(np.float32)), atol=1e-5
    )
    probs = pd.DataFrame({"A": [0.2, 0.5, 0.9], "B": [0.6, 0.4, np.nan]})
    d = small.decide(probs, 0.5)
    assert d["A"].tolist() == [False, True, True] and d["B"].tolist() == [True, False, False]
    d2 = small.decide(probs, {"A": 0.95, "B": 0.1})
    assert d2["A"].tolist() == [False] * 3 and d2["B"].tolist() == [True, True, False]
    with pytest.raises(KeyError):
        small.decide(probs, {"A": 0.5})
    with pytest.raises(ValueError, match="ids"):
        small.predict(np.zeros((2, small.dim), np.float32) + 0.1, ids=["x"])


def test_chexpert_set_and_eval_mode_restored(tiny_model, queries):
    tiny_model.train()
    try:
        clf = PromptClassifier(tiny_model, "chexpert")
        assert tiny_model.training  # the caller's mode is put back
    finally:
        tiny_model.eval()
    assert clf.classes == load_prompt_set("chexpert").class_names
    probs = clf.predict(queries)
    assert probs.shape == (len(queries), 14)
    assert probs.notna().all().all() and ((probs >= 0) & (probs <= 1)).all().all()
    with pytest.raises(ValueError, match="temperature"):
        PromptClassifier(tiny_model, SMALL, temperature=0.0)
