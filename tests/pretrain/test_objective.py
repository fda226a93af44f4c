"""The objective: weighted sum of the configured losses, each logged, switched off at weight 0."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from radalign.encoders.model import ImageFeatures, TextFeatures
from radalign.pretrain.config import LossConfig
from radalign.pretrain.global_loss import GlobalContrastiveLoss
from radalign.pretrain.local_loss import WordRegionLoss
from radalign.pretrain.objective import Objective
from radalign.pretrain.token_loss import TokenAlignmentLoss

pytestmark = pytest.mark.usefixtures("one_thread")


def features(b=4, r=6, w=5, d=8, e=7):
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(b, w, dtype=torch.bool)
    for i, n in enumerate([5, 2, 0, 3]):  # report 2 has no word: the objective keeps one
        mask[i, :n] = True
    image = ImageFeatures(
        F.normalize(torch.randn(b, e, generator=g), dim=-1),
        torch.randn(b, r, d, generator=g),
        (2, 3),
    )
    text = TextFeatures(
        F.normalize(torch.randn(b, e, generator=g), dim=-1), torch.randn(b, w, d, generator=g), mask
    )
    return image, text, torch.tensor(math.log(10.0))


def test_weighted_sum_of_components():
    image, text, theta = features()
    cfg = LossConfig(global_weight=0.5, local_weight=2.0, token_weight=0.25)
    total, parts = Objective(cfg)(image, text, theta)
    mask = text.word_mask.clone()
    mask[2, 0] = True
    g = GlobalContrastiveLoss(gather=False)(image.embedding, text.embedding, theta)
    loc = WordRegionLoss(chunk_size=cfg.local_chunk)(image.regions, text.words, mask)
    tok = TokenAlignmentLoss()(image.regions, text.words, mask)
    torch.testing.assert_close(parts["global"], g)
    torch.testing.assert_close(parts["local"], loc)
    torch.testing.assert_close(parts["token"], tok)
    torch.testing.assert_close(total, 0.5 * g + 2.0 * loc + 0.25 * tok)
    assert parts["loss"].item() == pytest.approx(total.item())
    image.regions.requires_grad_(True)
    total, parts = Objective(cfg)(image, text, theta)
    assert total.requires_grad and not any(v.requires_grad for v in parts.values())


def test_zero_weight_components_are_not_computed():
    image, text, theta = features()
    total, parts = Objective(LossConfig(local_weight=0.0, token_weight=0.0))(image, text, theta)
    assert set(parts) == {"global", "loss"}
    torch.testing.assert_close(total, parts["global"])
    assert not Objective(LossConfig(local_weight=0.0, token_weight=0.0)).uses_words


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="global_kind"):
        Objective(LossConfig(global_kind="nope"))
    with pytest.raises(ValueError, match="flip_negatives"):
        Objective(LossConfig(global_kind="siglip", flip_negatives=True))
