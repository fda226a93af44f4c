"""The training objective: weighted global, local (GLoRIA) and in-pair token losses.

``Objective(LossConfig)(image_features, text_features, logit_scale)`` returns the weighted total
and every component (detached, for logging) under its own name: ``global``, ``local``, ``token``
and ``loss`` (the total). A component with weight 0 is not computed.

Across processes: the global loss gathers every rank's embeddings with gradient (``gather``)
so each pair sees the whole global batch as negatives. The word–region loss is computed on each
process's own batch by default (its cost grows with the square of the batch it sees);
``local_gather: true`` scores against all ranks' reports and images instead. The token loss is
in-pair, so it needs nothing from other ranks.

Precision: under bf16/fp16 autocast the towers run in reduced precision, but every loss here
(the logits, the logit scale, the softmaxes and the word-region attention) is computed in
float32 with autocast switched off: the features are cast up with ``.float()`` first.
"""

from __future__ import annotations

import contextlib

import torch
from radalign.encoders.model import ImageFeatures, TextFeatures
from radalign.pretrain.config import LossConfig
from radalign.pretrain.global_loss import GlobalContrastiveLoss, SigLIPLoss
from radalign.pretrain.local_loss import WordRegionLoss
from radalign.pretrain.token_loss import TokenAlignmentLoss
from torch import Tensor, nn

GLOBAL_KINDS = ("clip", "siglip")


class Objective(nn.Module):
    """Weighted sum of the configured losses; see the module docstring."""

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        if config.global_kind not in GLOBAL_KINDS:
            raise ValueError(
                f"loss.global_kind must be one of {GLOBAL_KINDS}, not {config.global_kind!r}"
            )
        if config.flip_negatives and config.global_kind != "clip":
            raise ValueError("loss.flip_negatives needs loss.global_kind: clip")
        self.config = config
        if config.global_kind == "siglip":
            self.global_loss: nn.Module = SigLIPLoss(gather=config.gather)
        else:
            self.global_loss = GlobalContrastiveLoss(
                gather=config.gather, local_loss=config.local_rows
            )
        self.local_loss = WordRegionLoss(
            tau1=config.local_tau1,
            tau2=config.local_tau2,
            tau3=config.local_tau3,
            aggregation=config.local_aggregation,
            form=config.local_form,
            normalize=config.local_normalize,
            chunk_size=config.local_chunk,
            gather=config.local_gather,
        )
        self.token_loss = TokenAlignmentLoss()

    @property
    def uses_words(self) -> bool:
        """Whether a loss needs the region grid and word features."""
        return self.config.local_weight > 0 or self.config.token_weight > 0

    def forward(
        self,
        image: ImageFeatures,
        text: TextFeatures,
        logit_scale: Tensor,
        hard_negatives: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``hard_negatives``: ``(embeddings [B, E], valid [B])``, one extra report per image
        for the global image→report loss (``loss.flip_negatives``; InfoNCE only)."""
        c = self.config
        parts: dict[str, Tensor] = {}
        with _no_autocast(image.embedding.device):
            total = image.embedding.new_zeros((), dtype=torch.float32)
            if c.global_weight > 0:
                extra = {}
                if hard_negatives is not None:
                    extra = {"hard_negatives": (hard_negatives[0].float(), hard_negatives[1])}
                g = self.global_loss(
                    image.embedding.float(), text.embedding.float(), logit_scale.float(), **extra
                )
                parts["global"], total = g.detach(), total + c.global_weight * g
            if self.uses_words:
                regions, words = image.regions.float(), text.words.float()
                mask = _at_least_one_word(text.word_mask)
                if c.local_weight > 0:
                    loc = self.local_loss(regions, words, mask)
                    parts["local"], total = loc.detach(), total + c.local_weight * loc
                if c.token_weight > 0:
                    tok = self.token_loss(regions, words, mask)
                    parts["token"], total = tok.detach(), total + c.token_weight * tok
        parts["loss"] = total.detach()
        return total, parts


def _no_autocast(device: torch.device):
    """Autocast off on ``device`` (float32 maths inside a bf16/fp16 autocast region)."""
    available = getattr(torch.amp, "is_autocast_available", lambda t: t in ("cpu", "cuda"))
    if available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _at_least_one_word(word_mask: Tensor) -> Tensor:
    """A report whose mask has no word (all punctuation) keeps its first token ([CLS]) as one,
    so the local losses stay defined; such reports are rare and carry no word signal anyway."""
    mask = word_mask.bool()
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        mask = mask.clone()
        mask[empty, 0] = True
    return mask
