"""Global image–report contrastive losses: symmetric InfoNCE (CLIP) and sigmoid (SigLIP).

Inputs: image embeddings ``u: [B, E]`` and report embeddings ``t: [B, E]``, already
L2-normalised, row i of one matching row i of the other; and ``logit_scale`` θ, a scalar tensor
held by the model, with scale s = exp(θ).

Logit-scale policy (one policy for every loss here)
---------------------------------------------------
The model owns θ (:func:`init_logit_scale`, ln(1/0.07) for InfoNCE, ln 10 for SigLIP). The
training loop calls :func:`clamp_logit_scale_` on it after every optimiser step, as open_clip
does, so θ stays ≤ ln 100 and always receives a gradient. The losses also clamp in the forward,
s = exp(min(θ, ln 100)), purely as a guard for callers that skip the post-step clamp (the guard
is a no-op when θ ≤ ln 100; above it the gradient to θ is zero).

Across processes (``gather=True``) see :mod:`radalign.pretrain.distributed` for why these losses
give exactly the single-process gradients after DDP averaging. All ranks must hold equal batch
sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from radalign.pretrain.distributed import all_gather_no_grad, all_gather_with_grad, world_info
from torch import Tensor, nn

__all__ = [
    "LOGIT_SCALE_MAX",
    "GlobalContrastiveLoss",
    "SigLIPLoss",
    "clamp_logit_scale_",
    "init_logit_scale",
    "logit_scale_value",
]

LOGIT_SCALE_MAX = 100.0


def init_logit_scale(value: float = 1 / 0.07) -> nn.Parameter:
    """A learnable θ with exp(θ) = ``value`` (1/0.07 for InfoNCE, 10 for SigLIP)."""
    if value <= 0:
        raise ValueError(f"logit scale must be positive, got {value}")
    return nn.Parameter(torch.tensor(math.log(value)))


@torch.no_grad()
def clamp_logit_scale_(theta: Tensor, max_scale: float = LOGIT_SCALE_MAX) -> Tensor:
    """Clamp θ in place to [0, ln max_scale]; call after each optimiser step."""
    return theta.clamp_(0.0, math.log(max_scale))


def logit_scale_value(theta: Tensor, max_scale: float = LOGIT_SCALE_MAX) -> Tensor:
    """s = exp(min(θ, ln max_scale)), the forward guard described in the module docstring."""
    return theta.clamp(max=math.log(max_scale)).exp()


class GlobalContrastiveLoss(nn.Module):
    """Symmetric InfoNCE: logits = s·U Tᵀ, targets on the diagonal, mean of both cross-entropies.

    Args:
        gather: use the other ranks' pairs as negatives (all-gather with gradient).
        local_loss: with ``gather``, each rank scores only its own rows against all gathered
            columns (B×N instead of N×N logits; labels offset by rank·B). The mean over ranks of
            the per-rank losses equals the full loss, and gradients after DDP averaging are the
            same; only the value printed on one rank differs.
        label_smoothing: passed to ``F.cross_entropy``.
        max_logit_scale: cap on s (see the module docstring).

    ``forward(u, t, logit_scale, return_logits=False, hard_negatives=None)`` returns the scalar
    loss, or ``(loss, logits_per_image)`` where ``logits_per_image`` is the matrix the
    image→report cross-entropy used (``[B, B]`` single-process, ``[N, N]`` gathered, ``[B, N]``
    local). ``hard_negatives = (h [B, E], valid [B] bool)``: one extra report per image (e.g. its
    own report with left and right swapped) that enters only image i's row of the image→report
    cross-entropy as one more column, s·u_i·h_i (−inf where ``valid`` is False); gathered like
    ``t`` across processes.
    """

    def __init__(
        self,
        gather: bool = True,
        local_loss: bool = False,
        label_smoothing: float = 0.0,
        max_logit_scale: float = LOGIT_SCALE_MAX,
    ) -> None:
        super().__init__()
        self.gather = gather
        self.local_loss = local_loss
        self.label_smoothing = label_smoothing
        self.max_logit_scale = max_logit_scale

    def forward(
        self,
        u: Tensor,
        t: Tensor,
        logit_scale: Tensor,
        return_logits: bool = False,
        hard_negatives: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        _check_pairs(u, t)
        s = logit_scale_value(logit_scale, self.max_logit_scale)
        rank, world = world_info()
        gathered = self.gather and world > 1
        if gathered and self.local_loss:  # own rows against every rank's columns
            all_u, all_t = all_gather_with_grad(u), all_gather_with_grad(t)
            rows_u = u  # the images whose rows the image→report cross-entropy scores
            logits_img = s * u @ all_t.T
            logits_txt = s * t @ all_u.T
            labels = torch.arange(u.shape[0], device=u.device) + rank * u.shape[0]
        else:  # the full square: every rank's pairs when gathered, else this rank's
            rows_u, cols_t = (
                (all_gather_with_grad(u), all_gather_with_grad(t)) if gathered else (u, t)
            )
            if gathered and hard_negatives is not None:
                h, valid = hard_negatives
                hard_negatives = (all_gather_with_grad(h), all_gather_no_grad(valid))
            logits_img = s * rows_u @ cols_t.T
            logits_txt = logits_img.T
            labels = torch.arange(rows_u.shape[0], device=u.device)
        logits_i2t = logits_img
        if hard_negatives is not None:
            h, valid = hard_negatives
            _check_pairs(rows_u, h)
            extra = (s * (rows_u * h).sum(dim=1)).masked_fill(~valid.bool(), float("-inf"))
            logits_i2t = torch.cat([logits_img, extra[:, None]], dim=1)
        ls = self.label_smoothing
        loss = 0.5 * (
            F.cross_entropy(logits_i2t, labels, label_smoothing=ls)
            + F.cross_entropy(logits_txt, labels, label_smoothing=ls)
        )
        return (loss, logits_img) if return_logits else loss


class SigLIPLoss(nn.Module):
    """Sigmoid pairwise loss (Zhai et al., 2023).

    loss = −(1/B) Σ_i Σ_j log σ(z_ij · (s·u_i·t_j + b)), z_ij = +1 on matching pairs, −1 otherwise.

    The bias b is owned by this module (``self.logit_bias``, init ``init_bias`` = −10); the scale
    θ comes from the model like every other loss here (initialise it with
    ``init_logit_scale(10.0)`` for SigLIP). Passing ``logit_bias=`` to forward overrides the
    owned parameter (for a model that prefers to own both). Because the loss holds a parameter,
    under DDP make it a submodule of the wrapped model (e.g. ``model.criterion = SigLIPLoss()``)
    so that the bias gradient is averaged over ranks like every other parameter.

    Distributed (``gather=True``): each rank gathers the report embeddings of all ranks (with
    gradient) and scores its own B images against all N reports, normalised by its own B, as in
    the paper; the mean over ranks of the per-rank losses is the single-process loss on all N
    pairs, and gradients after DDP averaging match it exactly.
    """

    def __init__(
        self,
        gather: bool = True,
        init_bias: float = -10.0,
        max_logit_scale: float = LOGIT_SCALE_MAX,
    ) -> None:
        super().__init__()
        self.gather = gather
        self.max_logit_scale = max_logit_scale
        self.logit_bias = nn.Parameter(torch.tensor(float(init_bias)))

    def forward(
        self,
        u: Tensor,
        t: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
        return_logits: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        _check_pairs(u, t)
        s = logit_scale_value(logit_scale, self.max_logit_scale)
        b = self.logit_bias if logit_bias is None else logit_bias
        rank, world = world_info()
        offset = 0
        if self.gather and world > 1:
            t = all_gather_with_grad(t)
            offset = rank * u.shape[0]
        logits = s * u @ t.T + b.to(u.dtype)
        signs = -torch.ones_like(logits)
        rows = torch.arange(u.shape[0], device=u.device)
        signs[rows, rows + offset] = 1.0
        loss = -F.logsigmoid(signs * logits).sum() / u.shape[0]
        return (loss, logits) if return_logits else loss


def _check_pairs(u: Tensor, t: Tensor) -> None:
    if u.ndim != 2 or t.ndim != 2 or u.shape != t.shape:
        raise ValueError(
            f"expected image and report embeddings of equal shape [B, E], got {tuple(u.shape)} "
            f"and {tuple(t.shape)}"
        )
