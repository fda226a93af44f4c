"""Integrated gradients: completeness on the tiny model, batching, baselines, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from radalign.explain.gradients import input_embedding, pixel_ig, word_ig


@pytest.fixture(scope="module")
def inputs(tiny_model):
    torch.manual_seed(0)
    x = torch.rand(3, 64, 64) * 2 - 1
    tokens = tiny_model.tokenize(["Moderate left pleural effusion with a small pneumothorax."])
    with torch.no_grad():
        text = tiny_model.encode_text(tokens)[0]
        image = tiny_model.encode_image(x[None])[0]
    return x, tokens, text, image


def test_pixel_ig_completeness_improves_with_steps(tiny_model, inputs, single_thread):
    x, _, text, _ = inputs
    coarse = pixel_ig(tiny_model, x, text, steps=4, batch_size=4)
    fine = pixel_ig(tiny_model, x, text, steps=64, batch_size=16)
    assert fine.values.shape == (3, 64, 64) and np.isfinite(fine.values).all()
    target = fine.f_input - fine.f_baseline
    assert abs(target) > 1e-3  # the test means something
    assert fine.gap < 0.01 * abs(target) + 1e-5
    assert fine.gap <= coarse.gap
    with torch.no_grad():
        f = float(tiny_model.encode_image(x[None])[0] @ text)
    assert fine.f_input == pytest.approx(f, abs=1e-5)


def test_pixel_ig_batching_does_not_change_the_result(tiny_model, inputs, single_thread):
    x, _, text, _ = inputs
    a = pixel_ig(tiny_model, x, text, steps=8, batch_size=8).values
    b = pixel_ig(tiny_model, x, text, steps=8, batch_size=3).values
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8)


def test_pixel_ig_is_zero_at_the_baseline(tiny_model, inputs, single_thread):
    x, _, text, _ = inputs
    att = pixel_ig(tiny_model, x, text, baseline=x.clone(), steps=4)
    assert np.abs(att.values).max() == 0.0 and att.gap < 1e-6
    with pytest.raises(ValueError, match="baseline shape"):
        pixel_ig(tiny_model, x, text, baseline=torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="steps"):
        pixel_ig(tiny_model, x, text, steps=0)


def test_word_ig_completeness_per_word(tiny_model, inputs, single_thread):
    _, tokens, _, image = inputs
    att = word_ig(tiny_model, tokens, image, steps=64, batch_size=32)
    n_words = int(tokens["word_index"].max()) + 1
    assert att.values.shape == (n_words,) and np.isfinite(att.values).all()
    target = att.f_input - att.f_baseline
    assert abs(target) > 1e-4
    assert att.gap < 0.01 * abs(target) + 1e-6
    with torch.no_grad():
        f = float(tiny_model.encode_text(tokens)[0] @ image)
    assert att.f_input == pytest.approx(f, abs=1e-5)
    # the hook is removed afterwards
    layer = input_embedding(tiny_model.text_tower)
    assert not layer._forward_hooks


def test_word_ig_refuses_batches_and_empty_reports(tiny_model, inputs):
    _, _, _, image = inputs
    with pytest.raises(ValueError, match="one report"):
        word_ig(tiny_model, tiny_model.tokenize(["a b", "c d"]), image)
    with pytest.raises(ValueError, match="no words"):
        word_ig(tiny_model, tiny_model.tokenize(["..."]), image)
