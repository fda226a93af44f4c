"""The training objective: weighted global, local (GLoRIA) and in-pair token losses.

``Objective(LossConfig)(image_features, text_features, logit_scale)`` returns the weighted total
and every component (detached, for logging) under its own name: ``global``, ``local``, ``token``
and ``loss`` (the total). A component with weight 0 is not computed.

Across processes: the global loss gathers every rank's embeddings with gradient (``gather``)
so each pair sees the whole global batch as negatives. The word–region loss is computed on each
process's own batch by default (its cost grows with the square of the batch it sees);
``local_gather: true`` scores against all ranks' reports and images instead. The token loss is
in-pair, so it needs nothing from other ranks.
"""

from __future__ import annotations

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
        self, image: ImageFeatures, text: TextFeatures, logit_scale: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.config
        parts: dict[str, Tensor] = {}
        total = image.embedding.new_zeros(())
        if c.global_weight > 0:
            g = self.global_loss(image.embedding.float(), text.embedding.float(), logit_scale)
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


def _at_least_one_word(word_mask: Tensor) -> Tensor:
    """A report whose mask has no word (all punctuation) keeps its first token ([CLS]) as one,
    so the local losses stay defined; such reports are rare and carry no word signal anyway."""
    mask = word_mask.bool()
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        mask = mask.clone()
        mask[empty, 0] = True
    return mask
