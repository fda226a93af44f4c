"""Image tower: a timm backbone giving a pooled feature and a region grid.

The region grid comes from timm's ``forward_intermediates`` (one interface for CNNs and ViTs):
an NCHW map from the stage ``local_layer`` (``-1`` the last, ``-2`` the one before, which at
224 px is 14x14 on ResNets, as GLoRIA uses). Its blocks (:class:`~radalign.encoders.tower.Tower`)
are the same stages, timm's ``feature_info`` modules.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from radalign.encoders.config import ImageTowerConfig
from radalign.encoders.tower import Tower
from radalign.encoders.weights import load_state_dict_file
from torch import nn
from torch.nn import functional as F


class TimmImageTower(Tower):
    """``forward(x) -> (pooled [B, C], regions [B, C_local, h, w])``.

    Tower protocol (:class:`~radalign.encoders.tower.Tower`): ``blocks()`` are the stages
    ``local_layer`` counts (a ViT's transformer blocks; a ResNet's stem output ``act1``, then
    ``layer1..4``); ``set_grad_checkpointing`` is timm's; ``train_top_layers(n)`` trains the
    top n of them.
    """

    def __init__(self, config: ImageTowerConfig, *, load_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        tag = config.pretrained if load_weights else None
        weights_file = Path(tag) if tag and Path(tag).is_file() else None
        self.model = _create_timm(config, tag=None if weights_file else tag)
        if weights_file is not None:
            state = load_state_dict_file(weights_file)
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            head = [k for k in missing if not k.startswith(("fc.", "head", "classifier"))]
            if head:
                raise ValueError(
                    f"{weights_file}: weights do not fit timm model {config.name!r}; "
                    f"missing keys such as {head[:5]}"
                )
        if config.gradient_checkpointing:
            self.set_grad_checkpointing(True)
        data_cfg = self.model.pretrained_cfg
        self.mean = list(config.mean or data_cfg.get("mean", (0.5, 0.5, 0.5)))
        self.std = list(config.std or data_cfg.get("std", (0.5, 0.5, 0.5)))
        self.pool_grid = _pool_grid(config.pool_grid)
        with torch.no_grad():
            probe = torch.zeros(1, config.in_chans, config.image_size, config.image_size)
            was_training = self.model.training
            self.model.eval()
            pooled, regions = self.forward(probe)
            self.model.train(was_training)
        self.num_features = int(pooled.shape[1])
        self.local_channels = int(regions.shape[1])
        self.grid = (int(regions.shape[2]), int(regions.shape[3]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        final, inter = self.model.forward_intermediates(
            x, indices=[self.config.local_layer], intermediates_only=False
        )
        if self.pool_grid is None:
            pooled = self.model.forward_head(final, pre_logits=True)
        elif final.ndim != 4:
            raise ValueError(
                f"image.pool_grid needs a CNN backbone with an NCHW feature map; "
                f"{self.config.name!r} gives shape {tuple(final.shape)}"
            )
        else:
            pooled = F.adaptive_avg_pool2d(final, self.pool_grid).flatten(1)
        return pooled, inter[-1]

    def blocks(self) -> list[nn.Module]:
        return timm_blocks(self.model)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


def _pool_grid(grid: list[int] | None) -> tuple[int, int] | None:
    if grid is None:
        return None
    if len(grid) != 2 or min(int(g) for g in grid) < 1:
        raise ValueError(f"image.pool_grid must be [rows, cols] of positive ints, got {grid}")
    return int(grid[0]), int(grid[1])


def timm_blocks(model: nn.Module) -> list[nn.Module]:
    """A timm model's feature stages, bottom to top (what ``forward_intermediates`` indexes)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"cannot find the blocks of timm model {type(model).__name__}")
    return [model.get_submodule(i["module"]) for i in info]


def _create_timm(config: ImageTowerConfig, tag: str | None) -> nn.Module:
    """``timm.create_model`` with no classifier; ``tag`` ``"timm"`` takes the default weights."""
    name = config.name if tag in (None, "timm") else f"{config.name}.{tag}"
    kwargs = dict(pretrained=tag is not None, num_classes=0, in_chans=config.in_chans)
    if config.drop_path_rate:
        kwargs["drop_path_rate"] = config.drop_path_rate
    try:
        try:
            return timm.create_model(name, img_size=config.image_size, **kwargs)
        except TypeError:  # CNNs take no img_size
            return timm.create_model(name, **kwargs)
    except (OSError, RuntimeError) as exc:
        if tag is None:
            raise
        raise RuntimeError(
            f"could not load pretrained weights {name!r} for the image tower ({exc}). Offline? "
            "Download them once (they are cached), point image.pretrained at a local weights "
            "file, or set image.pretrained: null for random weights."
        ) from None
