"""What training may ask of every tower, whatever its backend (timm, Hugging Face, open_clip).

Each image and report tower subclasses :class:`Tower`: besides ``forward`` it lists its
backbone's *blocks* (the repeated layers, bottom to top) and switches activation checkpointing
on them; :meth:`Tower.train_top_layers` freezes all but the top blocks. Code outside
``encoders`` (the trainer) uses only these three methods, never a tower's backbone attributes.
"""

from __future__ import annotations

from torch import nn


class Tower(nn.Module):
    """Base of the towers: ``blocks()``, ``set_grad_checkpointing()``, ``train_top_layers()``.

    Subclasses implement :meth:`blocks` and :meth:`set_grad_checkpointing`.
    """

    def blocks(self) -> list[nn.Module]:
        """The backbone's blocks, bottom to top: transformer layers, or a CNN's stages."""
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the blocks' activations in backward instead of keeping them (less memory,
        more compute). Non-reentrant: blocks above frozen ones still get their gradients."""
        raise NotImplementedError

    def train_top_layers(self, n: int | None) -> None:
        """Only the top ``n`` blocks train (``requires_grad``); ``None``: every parameter,
        ``0``: none. Parameters outside the blocks (embeddings, stems, final norms) are frozen
        for any ``n``; ``n`` above the number of blocks trains every block."""
        if n is not None and n < 0:
            raise ValueError(f"the number of top layers to train must be >= 0 or None, not {n}")
        for p in self.parameters():
            p.requires_grad_(n is None)
        if not n:
            return
        blocks = self.blocks()
        for block in blocks[max(len(blocks) - n, 0) :]:
            for p in block.parameters():
                p.requires_grad_(True)
