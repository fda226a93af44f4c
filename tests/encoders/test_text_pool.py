"""``text_pool_heads``: a learned-query attention pool added to the pooled report feature."""

from __future__ import annotations

import dataclasses

import torch
from radalign.encoders.checkpoint import _fingerprint_config
from radalign.encoders.model import RadAlignModel

REPORTS = ["Small left pleural effusion.", "Right upper lobe nodule. No pneumothorax."]


def _with_pool(tiny_model, heads: int) -> RadAlignModel:
    config = dataclasses.replace(tiny_model.config, text_pool_heads=heads)
    model = RadAlignModel(config, load_weights=False)
    model.load_state_dict(tiny_model.state_dict(), strict=False)
    return model.eval()


def test_pool_starts_as_the_plain_feature_and_trains(tiny_model):
    model = _with_pool(tiny_model, 2)
    tokens = model.tokenize(REPORTS)
    with torch.no_grad():
        want = tiny_model.text_features(tokens).embedding
    got = model.text_features(tokens).embedding
    torch.testing.assert_close(got, want)  # zero output projection: nothing added yet
    torch.testing.assert_close(model.encode_text(tokens), got)
    got.sum().backward()
    pool = model.text_pool
    assert pool.attention.out_proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        pool.attention.out_proj.weight.normal_()
        assert not torch.allclose(model.text_features(tokens).embedding, want)
        # the word features of the local losses do not go through the pool
        torch.testing.assert_close(
            model.text_features(tokens).words, tiny_model.text_features(tokens).words
        )


def test_report_without_words_still_pools(tiny_model):
    model = _with_pool(tiny_model, 2)
    words = torch.randn(2, 3, model.text_tower.num_features)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert torch.isfinite(model.text_pool(words, mask)).all()


def test_fingerprint_ignores_text_pool_heads_only_at_its_default(tiny_model):
    assert "text_pool_heads" not in _fingerprint_config(tiny_model.config)
    config = dataclasses.replace(tiny_model.config, text_pool_heads=2)
    assert _fingerprint_config(config)["text_pool_heads"] == 2
    assert "word_layer" not in _fingerprint_config(tiny_model.config)["text"]
