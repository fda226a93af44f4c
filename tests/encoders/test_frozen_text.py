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


def test_split_forward_equals_tower(tiny_model):
    """``forward_top(encode_bottom(tokens, n))`` is the tower's own forward pass, for every n."""
    import pytest

    tower = tiny_model.text_tower
    tokens = tiny_model.tokenize(REPORTS)
    with torch.inference_mode():
        want = tower(tokens)
        for n in range(1, len(tower.blocks()) + 1):
            got = tower.forward_top(tower.encode_bottom(tokens, n))
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for bad in (0, len(tower.blocks()) + 1):
            with pytest.raises(ValueError, match="top layers"):
                tower.encode_bottom(tokens, bad)


def test_bottom_cache_runs_the_trainable_top():
    """A cached frozen bottom: the top layer runs (and trains) on the cached states, giving the
    uncached model's features; gradients reach the top layer and nothing below it."""
    config = TrainConfig(model="tiny")
    config.optim.text_trainable_layers = 1
    config.optim.cache_text_bottom = True
    model = _build_model(config).eval()
    from radalign.pretrain.trainer import frozen_text_cache

    cache = frozen_text_cache(model, config)
    assert cache is not None and cache.top_layers == 1
    cache.warm(REPORTS[:2], "cpu")
    batch = [REPORTS[2], REPORTS[0], REPORTS[1]]
    tokens = model.tokenize(batch)
    with torch.no_grad():
        want = model.text_features(tokens)
    got = model.text_features(tokens, cache(batch, "cpu"))
    torch.testing.assert_close(got.embedding, want.embedding, rtol=1e-5, atol=1e-6)
    m = want.word_mask
    torch.testing.assert_close(got.word_mask, m)
    torch.testing.assert_close(got.words[m], want.words[m], rtol=1e-5, atol=1e-6)
    (got.embedding.sum() + got.words.sum()).backward()
    text = model.text_tower
    top = {id(p) for p in text.blocks()[-1].parameters()}
    with_grad = {id(p) for p in text.parameters() if p.grad is not None}
    assert with_grad == top
    config.optim.cache_text_bottom = False
    assert frozen_text_cache(model, config) is None


def test_word_layer_takes_words_from_a_lower_layer():
    """``text.word_layer=-2``: word features are the layer below's, in both forward paths;
    the pooled feature still comes from the last layer."""
    import pytest
    from radalign.encoders.text_tower import merge_word_pieces

    import radalign

    model = radalign.load("tiny").eval()
    tower = model.text_tower
    tokens = model.tokenize(REPORTS)
    with torch.no_grad():
        last = tower(tokens)
        tower.config.word_layer = -2
        pooled, words, mask = tower(tokens)
        states = tower.model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            output_hidden_states=True,
        ).hidden_states
        want, _ = merge_word_pieces(states[-2], tokens["word_index"])
        torch.testing.assert_close(words, want)
        torch.testing.assert_close(pooled, last[0])
        assert not torch.allclose(words, last[1])
        split = tower.forward_top(tower.encode_bottom(tokens, 1))
        for a, b in zip(split, (pooled, words, mask), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        tower.config.word_layer = -3  # below the one cached layer's input
        with pytest.raises(ValueError, match="word_layer"):
            tower.forward_top(tower.encode_bottom(tokens, 1))
