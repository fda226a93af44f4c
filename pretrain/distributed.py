"""Small helpers for cross-process negatives: rank/world size and all-gathers.

Gradient scaling, worked out once for every loss in this package
----------------------------------------------------------------
Let the global batch of N = W·B pairs be split over W processes, each holding B rows, and let
L be the single-process loss on the concatenated batch.

* :func:`all_gather_with_grad` returns the concatenation of every rank's tensor; in backward each
  rank receives the **sum over ranks** of the gradient flowing into its own slice (the same
  semantics as ``torch.distributed.nn.functional.all_gather``).
* Full-loss mode (every rank computes L over the gathered features): each rank's copy of L sends
  ∂L/∂x_r into slice r, so after the sum rank r holds W·∂L/∂x_r.
* Local-loss mode (rank r computes L_r on its own rows against all gathered columns, with
  L = mean_r L_r): rank r receives Σ_q ∂L_q/∂x_r = W·∂L/∂x_r as well.
* DDP then **averages** parameter gradients over ranks: (1/W)·Σ_r W·∂L/∂θ|_{via slice r} =
  ∂L/∂θ, exactly the single-process gradient. Parameters used by the loss directly (logit
  scale, SigLIP bias) get ∂L/∂θ on every rank in full mode and ∂L_r/∂θ in local mode; their
  average is again ∂L/∂θ.

So no extra factor is needed as long as (a) the gather's backward sums and (b) the optimiser sees
DDP-averaged gradients. Two consequences worth knowing: the gradient w.r.t. a rank's *input
features* (before DDP) is W × the single-process one, and in local-loss mode the loss value on
one rank is L_r, whose mean over ranks is L. An all-gather whose backward only keeps the local
slice (no sum) would give parameter gradients W times too small in full-loss mode.

Why not ``torch.distributed.nn.functional.all_gather`` directly: in torch ≥ 2.6 it emits a
``FutureWarning`` on every call and points to a private module; the few lines below have the same
forward and backward (the 2-process test checks they agree) and use only ``all_gather`` and
``all_reduce``, which every backend (gloo, NCCL) supports.

All ranks must pass tensors of the same shape (use ``drop_last=True`` in the data loader).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from radalign.encoders.processes import world_info
from torch import Tensor

__all__ = ["all_gather_no_grad", "all_gather_with_grad", "all_reduce_max_int", "world_info"]


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate ``x`` from all ranks along dim 0; backward sums gradients over ranks."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.rows = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()  # all_reduce is in place; never touch autograd's buffer
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """All ranks' ``x`` concatenated along dim 0, rank order; gradients reach each own slice.

    Identity (same tensor object) when not distributed or world size is 1.
    """
    _, world = world_info()
    if world == 1:
        return x
    return _AllGatherWithGrad.apply(x)


@torch.no_grad()
def all_gather_no_grad(x: Tensor) -> Tensor:
    """All ranks' ``x`` concatenated along dim 0, detached (labels, masks, metrics)."""
    _, world = world_info()
    if world == 1:
        return x
    dtype = x.dtype
    send = x.to(torch.uint8) if dtype == torch.bool else x  # bool is not a collective dtype
    parts = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(parts, send.contiguous())
    out = torch.cat(parts, dim=0)
    return out.to(dtype) if dtype == torch.bool else out


def all_reduce_max_int(value: int, device: torch.device | str = "cpu") -> int:
    """The maximum of an integer over ranks (e.g. the longest padded report length)."""
    _, world = world_info()
    if world == 1:
        return int(value)
    buf = torch.tensor([int(value)], dtype=torch.long, device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return int(buf.item())
