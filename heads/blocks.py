"""Fusion heads over frozen embeddings: early fusion (concatenate, then one block) and late
fusion (two blocks per modality, then concatenate).  A block is Linear -> Dropout -> ReLU ->
BatchNorm, as the issue specifies."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "HEAD_KINDS",
    "EarlyFusionHead",
    "LateFusionHead",
    "LinearHead",
    "block",
    "build_head",
]

HEAD_KINDS = ("linear", "early", "late")


def block(d_in: int, d_out: int, dropout: float = 0.2) -> nn.Sequential:
    """Linear(d_in, d_out) -> Dropout -> ReLU -> BatchNorm1d."""
    return nn.Sequential(
        nn.Linear(d_in, d_out), nn.Dropout(dropout), nn.ReLU(), nn.BatchNorm1d(d_out)
    )


class EarlyFusionHead(nn.Module):
    """Concatenate the modalities, one 256-unit block, then a linear classifier."""

    def __init__(self, dims: Sequence[int], n_out: int, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.body = block(sum(self.dims), hidden, dropout)
        self.classifier = nn.Linear(hidden, n_out)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.body(torch.cat(list(xs), dim=1)))


class LateFusionHead(nn.Module):
    """Per modality 2 x 128-unit blocks; the branch outputs concatenated -> linear classifier."""

    def __init__(self, dims: Sequence[int], n_out: int, hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.branches = nn.ModuleList(
            nn.Sequential(block(d, hidden, dropout), block(hidden, hidden, dropout))
            for d in self.dims
        )
        self.classifier = nn.Linear(hidden * len(self.dims), n_out)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(torch.cat([b(x) for b, x in zip(self.branches, xs)], dim=1))


class LinearHead(nn.Module):
    """Concatenated modalities -> one linear layer: the saved form of a fitted linear probe."""

    def __init__(self, dims: Sequence[int], n_out: int):
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.classifier = nn.Linear(sum(self.dims), n_out)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(torch.cat(list(xs), dim=1))


def build_head(kind: str, dims: Sequence[int], n_out: int) -> nn.Module:
    """``linear``, ``early`` or ``late`` head for modalities of widths ``dims`` and ``n_out`` outputs."""
    if kind == "linear":
        return LinearHead(dims, n_out)
    if kind == "early":
        return EarlyFusionHead(dims, n_out)
    if kind == "late":
        return LateFusionHead(dims, n_out)
    raise ValueError(f"unknown head {kind!r}; choose one of {HEAD_KINDS}")
