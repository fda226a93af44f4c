"""Which process this is in a multi-process job (torchrun, ``accelerate launch``): one answer
shared by training, index building and embedding."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["world_info"]


def world_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is absent or not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
