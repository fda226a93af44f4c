"""The radalign model: image and report towers, projection heads and a learnable logit scale."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from radalign.encoders.config import ModelConfig
from torch import nn

if TYPE_CHECKING:
    from radalign.encoders.text_tower import TopLayersInput


@dataclass
class ImageFeatures:
    """``embedding`` ``[B, E]`` (L2-normalised), ``regions`` ``[B, R, D]`` on a ``grid`` (h, w)."""

    embedding: torch.Tensor
    regions: torch.Tensor
    grid: tuple[int, int]


@dataclass
class TextFeatures:
    """``embedding`` ``[B, E]`` (L2-normalised), ``words`` ``[B, W, D]`` and ``word_mask`` ``[B, W]``."""

    embedding: torch.Tensor
    words: torch.Tensor
    word_mask: torch.Tensor


TowerOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""What a report tower returns: pooled ``[B, H]``, words ``[B, W, H]``, word mask ``[B, W]``."""


def _head(kind: str, d_in: int, d_out: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d_in, d_in), nn.GELU(), nn.Linear(d_in, d_out))
    raise ValueError(f"projection must be 'linear' or 'mlp', not {kind!r}")


def build_towers(config: ModelConfig, load_weights: bool) -> tuple[nn.Module, nn.Module]:
    """Create the two backbones named by ``config`` (weights from their sources if asked)."""
    if config.image.backend == "timm":
        from radalign.encoders.image_tower import TimmImageTower

        image = TimmImageTower(config.image, load_weights=load_weights)
    elif config.image.backend == "open_clip":
        from radalign.encoders.openclip_towers import OpenClipImageTower

        image = OpenClipImageTower(config.image, load_weights=load_weights)
    else:
        raise ValueError(
            f"image.backend must be 'timm' or 'open_clip', not {config.image.backend!r}"
        )
    if config.text.backend == "hf":
        from radalign.encoders.text_tower import HFTextTower

        text = HFTextTower(config.text, load_weights=load_weights)
    elif config.text.backend == "open_clip":
        from radalign.encoders.openclip_towers import OpenClipTextTower

        text = OpenClipTextTower(config.text, load_weights=load_weights)
    else:
        raise ValueError(f"text.backend must be 'hf' or 'open_clip', not {config.text.backend!r}")
    return image, text


class WordAdapter(nn.Module):
    """Pre-norm transformer layers over word features ``[B, W, D]`` with a word mask ``[B, W]``.

    Trainable context on top of a (possibly frozen) report tower; padded words stay zero."""

    def __init__(self, dim: int, layers: int, heads: int = 4) -> None:
        super().__init__()
        block = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.1, activation="gelu",
            batch_first=True, norm_first=True,
        )  # fmt: skip
        self.layers = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        attend = mask.clone()
        attend[~mask.any(dim=1), 0] = True  # a report without words attends to its first slot
        out = self.norm(self.layers(words, src_key_padding_mask=~attend))
        return out * mask[..., None].to(out.dtype)


class AttentionPool(nn.Module):
    """A learned query attending over word features ``[B, W, H]`` (word mask ``[B, W]``) ->
    ``[B, H]``; the output projection starts at zero (the pool adds nothing until it trains)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        nn.init.zeros_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)

    def forward(self, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attend = mask.bool().clone()
        attend[~attend.any(dim=1), 0] = True  # a report without words reads its first slot
        query = self.query.expand(len(words), -1, -1).to(words.dtype)
        out, _ = self.attention(query, words, words, key_padding_mask=~attend, need_weights=False)
        return out[:, 0]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, W, D]`` over the words where ``mask [B, W]`` is True (0 for none)."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class RadAlignModel(nn.Module):
    """Two towers mapped into a shared global space (E) and a shared word/region space (D).

    Build one with :func:`radalign.load` (a registered name, a config file, or a directory
    written by :meth:`save_pretrained`). ``model.tokenize(texts)`` and ``model.transform()``
    give the matching report tokeniser and image preprocessing.
    """

    def __init__(self, config: ModelConfig, *, load_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        self.image_tower, self.text_tower = build_towers(config, load_weights)
        img_c, txt_c = self.image_tower.num_features, self.text_tower.num_features
        self.image_proj = _head(config.projection, img_c, config.embed_dim)
        self.image_local_proj = nn.Linear(self.image_tower.local_channels, config.local_dim)
        self.text_local_proj = nn.Linear(txt_c, config.local_dim)
        self.text_adapter = (
            WordAdapter(config.local_dim, config.text_adapter_layers)
            if config.text_adapter_layers > 0
            else None
        )
        self.text_pool = (
            AttentionPool(txt_c, config.text_pool_heads) if config.text_pool_heads > 0 else None
        )
        pooled_dim = config.local_dim if self.text_adapter is not None else txt_c
        self.text_proj = _head(config.projection, pooled_dim, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))

    # -- inputs ---------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The :class:`~radalign.encoders.text_tower.ReportTokenizer` of the report tower."""
        return self.text_tower.tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.text_tower.tokenizer(texts)

    def transform(self, train: bool = False, aug=None, seed: int | None = None) -> Callable:
        """Image preprocessing for this model: a ``[0, 1]`` gray array -> ``[C, S, S]`` tensor."""
        from radalign.encoders.transforms import ImageTransform

        tower = self.image_tower
        return ImageTransform(
            self.config.image.image_size,
            train=train,
            mean=tower.mean,
            std=tower.std,
            in_chans=self.config.image.in_chans,
            aug=aug,
            seed=seed,
        )

    # -- features -------------------------------------------------------------------------
    def image_features(self, pixels: torch.Tensor) -> ImageFeatures:
        pooled, grid = self.image_tower(pixels)
        regions = self.image_local_proj(grid.flatten(2).transpose(1, 2))
        emb = F.normalize(self.image_proj(pooled), dim=-1)
        return ImageFeatures(emb, regions, (int(grid.shape[2]), int(grid.shape[3])))

    def text_features(
        self,
        tokens: Mapping[str, torch.Tensor],
        tower_outputs: TowerOutputs | TopLayersInput | None = None,
    ) -> TextFeatures:
        """Report features; ``tower_outputs`` (pooled, words, word mask) replaces the tower's
        forward pass, e.g. with features of a frozen tower computed once; a
        :class:`~radalign.encoders.text_tower.TopLayersInput` (a frozen bottom's hidden states)
        replaces all but the tower's top layers, which run here."""
        if tower_outputs is None:
            tower_outputs = self.text_tower(tokens)
        elif not isinstance(tower_outputs, tuple):
            tower_outputs = self.text_tower.forward_top(tower_outputs)
        pooled, words, word_mask = tower_outputs
        if self.text_pool is not None:
            pooled = pooled + self.text_pool(words, word_mask)
        words = self.text_local_proj(words)
        if self.text_adapter is not None:
            words = self.text_adapter(words, word_mask)
            pooled = masked_mean(words, word_mask)
        emb = F.normalize(self.text_proj(pooled), dim=-1)
        return TextFeatures(emb, words, word_mask)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised global image embeddings ``[B, E]``."""
        pooled, _ = self.image_tower(pixels)
        return F.normalize(self.image_proj(pooled), dim=-1)

    def encode_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """L2-normalised global report embeddings ``[B, E]``."""
        if self.text_adapter is not None or self.text_pool is not None:
            return self.text_features(tokens).embedding
        pooled, _, _ = self.text_tower(tokens)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def forward(
        self,
        pixels: torch.Tensor,
        tokens: Mapping[str, torch.Tensor],
        text_tower_outputs: TowerOutputs | TopLayersInput | None = None,
    ) -> tuple[ImageFeatures, TextFeatures]:
        return self.image_features(pixels), self.text_features(tokens, text_tower_outputs)

    # -- checkpoints ----------------------------------------------------------------------
    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` + ``model.safetensors`` + tower files, atomically."""
        from radalign.encoders.checkpoint import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory) -> RadAlignModel:
        from radalign.encoders.checkpoint import load_pretrained

        return load_pretrained(directory)

    def fingerprint(self) -> str:
        """A short hash of the config and every weight: what an index was built with."""
        from radalign.encoders.checkpoint import model_fingerprint

        return model_fingerprint(self)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device
