"""``image.pool_grid``: a position-keeping global image feature."""

import pytest
import torch
from radalign.encoders.config import ImageTowerConfig
from radalign.encoders.image_tower import TimmImageTower


def _tower(grid):
    cfg = ImageTowerConfig(name="resnet18", image_size=64, local_layer=-2, pool_grid=grid)
    return TimmImageTower(cfg, load_weights=False).eval()


def test_grid_pooling_concatenates_cell_averages():
    tower = _tower([1, 2])
    assert tower.num_features == 2 * 512
    x = torch.randn(2, 3, 64, 64)
    pooled, regions = tower(x)
    final = tower.model.forward_intermediates(x, indices=[-2], intermediates_only=False)[0]
    h, w = final.shape[-2:]
    left = final[..., : w // 2].mean(dim=(2, 3))
    right = final[..., w // 2 :].mean(dim=(2, 3))
    # channel-major flatten: [c0 left, c0 right, c1 left, ...]
    torch.testing.assert_close(pooled.view(2, 512, 2)[..., 0], left)
    torch.testing.assert_close(pooled.view(2, 512, 2)[..., 1], right)
    assert regions.shape[0] == 2


def test_bad_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="pool_grid"):
        _tower([0, 2])


def test_fingerprint_ignores_pool_grid_only_at_its_default(tiny_model):
    from radalign.encoders.checkpoint import _fingerprint_config

    config = tiny_model.config
    assert "pool_grid" not in _fingerprint_config(config)["image"]
    config.image.pool_grid = [1, 2]
    try:
        assert _fingerprint_config(config)["image"]["pool_grid"] == [1, 2]
    finally:
        config.image.pool_grid = None
