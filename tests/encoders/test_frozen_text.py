"""Cached features of a frozen report tower equal the tower's own output."""

from __future__ import annotations

import torch
from radalign.encoders.frozen_text import FrozenTextCache
from radalign.pretrain.config import TrainConfig
from radalign.pretrain.trainer import _build_model

REPORTS = [
    "Small left pleural effusion.",
    "No acute cardiopulmonary process. Heart size is normal, lungs are clear.",
    "Right upper lobe opacity, concerning for pneumonia; no pneumothorax.",
]


def test_cache_equals_tower(tiny_model):
    cache = FrozenTextCache(tiny_model, batch_size=2)
    cache.warm(REPORTS[:2], "cpu")
    assert len(cache.rows) == 2
    batch = [REPORTS[2], REPORTS[0], REPORTS[2]]
    cached = cache(batch, "cpu")
    assert cache.misses == 1 and cache.hits == 2
    with torch.inference_mode():
        tokens = tiny_model.tokenize(batch)
        want = tiny_model.text_features(tokens)
        got = tiny_model.text_features(tokens, cached)
    torch.testing.assert_close(got.embedding, want.embedding, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.word_mask, want.word_mask)
    m = want.word_mask
    torch.testing.assert_close(got.words[m], want.words[m], rtol=1e-5, atol=1e-6)


def test_cache_limit_still_answers(tiny_model):
    cache = FrozenTextCache(tiny_model, max_reports=1)
    out = cache(REPORTS, "cpu")
    assert len(cache.rows) == 1 and out[0].shape[0] == 3


def test_trainable_text_layers():
    config = TrainConfig(model="tiny")
    config.optim.text_trainable_layers = 1
    model = _build_model(config)
    trainable = {n for n, p in model.text_tower.named_parameters() if p.requires_grad}
    layers = model.text_tower.model.encoder.layer
    assert trainable == {
        f"model.encoder.layer.{len(layers) - 1}.{n}" for n, _ in layers[-1].named_parameters()
    }
    assert all(p.requires_grad for p in model.image_tower.parameters())
    config.optim.freeze_text = True
    assert not any(p.requires_grad for p in _build_model(config).text_tower.parameters())
