"""In-pair token alignment in the spirit of MGCA's cross-modal token-level alignment.

Wang et al., "Multi-Granularity Cross-modal Alignment for Generalized Medical Visual
Representation Learning", NeurIPS 2022. Only the matched image and report of each pair interact,
so the cost is O(B·L·R·D) (+ O(B·R²·D) for the region side), not O(B²·…) as in the GLoRIA loss.
This is an independent implementation of the idea, with exact masks; it is not MGCA's code.

Math, for one pair with unit-normalised words ŵ_l (real words l = 1..L) and regions v̂_r
------------------------------------------------------------------------------------------
Word side:
    a_{l,r} = softmax_r(ŵ_l·v̂_r / τ_a)                      word l attends over the regions
    o_l     = Σ_r a_{l,r} v̂_r,   ô_l = o_l / ‖o_l‖          its visual context
    M_{l,m} = ŵ_l · ô_m / τ                                  words × contexts, same report only
    ℓ_l     = ½ [−log softmax_m(M_{l,·})_l − log softmax_m(M_{·,l})_l]
    L_word  = Σ_l ω_l ℓ_l,   ω = word weights normalised over the real words (uniform default)
Region side (``bidirectional=True``), the same with roles swapped:
    b_{r,l} = softmax_l(v̂_r·ŵ_l / τ_a) over real words,  q_r = Σ_l b_{r,l} ŵ_l,  q̂_r = q_r/‖q_r‖
    N_{r,s} = v̂_r · q̂_s / τ;  ℓ_r symmetric InfoNCE over the regions of the same image
    L_region = Σ_r ρ_r ℓ_r,  ρ = region weights normalised (uniform default)
Pair loss = ½ (L_word + L_region) (or L_word alone); the loss is the mean over pairs.

Each word must pick out *its own* attended context among the contexts of the other words of
the same report (and vice versa), which pushes word-specific, localised attention. MGCA weights
tokens by the [CLS] attention of the last transformer layer; pass such ``word_weights`` /
``region_weights`` to do the same. Defaults τ = 0.1 (MGCA's local temperature) and τ_a = 0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TokenAlignmentLoss"]


class TokenAlignmentLoss(nn.Module):
    """MGCA-style in-pair token alignment; see the module docstring for the math.

    Args:
        temperature: τ of the token-level InfoNCE.
        attn_temperature: τ_a of the cross-attention (on cosines).
        bidirectional: add the region→word side.
        eps: floor of the norms.

    ``forward(v, w, word_mask, word_weights=None, region_weights=None)``: ``v [B, R, D]``,
    ``w [B, L, D]``, ``word_mask [B, L]`` bool (True = real word), optional non-negative weights
    ``[B, L]`` / ``[B, R]`` → scalar. Every report needs ≥ 1 real word.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        attn_temperature: float = 0.1,
        bidirectional: bool = True,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.attn_temperature = float(attn_temperature)
        self.bidirectional = bidirectional
        self.eps = eps

    def forward(
        self,
        v: Tensor,
        w: Tensor,
        word_mask: Tensor,
        word_weights: Tensor | None = None,
        region_weights: Tensor | None = None,
    ) -> Tensor:
        if v.ndim != 3 or w.ndim != 3 or v.shape[0] != w.shape[0] or v.shape[2] != w.shape[2]:
            raise ValueError(
                f"expected [B, R, D] and [B, L, D], got {tuple(v.shape)}, {tuple(w.shape)}"
            )
        mask = word_mask.bool()
        if tuple(mask.shape) != tuple(w.shape[:2]):
            raise ValueError(f"word_mask {tuple(mask.shape)} does not match words {tuple(w.shape)}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every report needs at least one real word (word_mask row all False)")
        zero = torch.zeros((), dtype=w.dtype, device=w.device)
        w = F.normalize(torch.where(mask[..., None], w, zero), dim=-1, eps=self.eps)
        v = F.normalize(v, dim=-1, eps=self.eps)
        sim = torch.bmm(w, v.transpose(1, 2))  # [B, L, R] cosines

        # word side: each real word against the contexts of the real words of its report
        attn = (sim / self.attn_temperature).softmax(dim=-1)
        ctx = F.normalize(torch.bmm(attn, v), dim=-1, eps=self.eps)  # [B, L, D]
        logits = torch.bmm(w, ctx.transpose(1, 2)) / self.temperature  # [B, L, L]
        word_term = _symmetric_nll(logits, mask)
        word_loss = (word_term * _weights(word_weights, mask, w.dtype)).sum(dim=1)
        if not self.bidirectional:
            return word_loss.mean()

        # region side: each region attends over the real words, against the other regions
        simt = sim.transpose(1, 2).masked_fill(~mask[:, None, :], float("-inf"))
        attn_t = (simt / self.attn_temperature).softmax(dim=-1)  # [B, R, L]
        ctx_t = F.normalize(torch.bmm(attn_t, w), dim=-1, eps=self.eps)  # [B, R, D]
        logits_t = torch.bmm(v, ctx_t.transpose(1, 2)) / self.temperature  # [B, R, R]
        all_regions = torch.ones(v.shape[:2], dtype=torch.bool, device=v.device)
        region_term = _symmetric_nll(logits_t, all_regions)
        region_loss = (region_term * _weights(region_weights, all_regions, v.dtype)).sum(dim=1)
        return 0.5 * (word_loss + region_loss).mean()


def _symmetric_nll(logits: Tensor, mask: Tensor) -> Tensor:
    """½(row-wise + column-wise) InfoNCE on the diagonal of ``[B, n, n]``; 0 at masked tokens.

    Row-wise softmax runs over the real columns, column-wise over the real rows, so every
    softmax has at least one finite entry and padded tokens never enter a denominator.
    """
    neg_inf = float("-inf")
    rows = logits.masked_fill(~mask[:, None, :], neg_inf).log_softmax(dim=2)
    cols = logits.masked_fill(~mask[:, :, None], neg_inf).log_softmax(dim=1)
    rows, cols = rows.diagonal(dim1=1, dim2=2), cols.diagonal(dim1=1, dim2=2)
    nll = -0.5 * (rows + cols)
    return torch.where(mask, nll, torch.zeros((), dtype=nll.dtype, device=nll.device))


def _weights(weights: Tensor | None, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Token weights normalised to sum to 1 over the real tokens of each sample."""
    base = mask.to(dtype) if weights is None else weights.to(dtype).clamp_min(0)
    base = torch.where(mask, base, torch.zeros((), dtype=base.dtype, device=base.device))
    return base / base.sum(dim=1, keepdim=True).clamp_min(torch.finfo(base.dtype).tiny)
