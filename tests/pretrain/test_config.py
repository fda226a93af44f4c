"""``load_train_config``: a YAML file plus ``key=value`` overrides, merged in one go."""

from __future__ import annotations

import pytest
from radalign.pretrain.config import load_train_config


def test_overrides_apply_over_the_file_and_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batch_size: 8\noptim:\n  lr: 0.1\n  warmup_steps: 7\ndata:\n  views: [PA]\n")
    config = load_train_config(
        path, ["optim.lr=0.5", "max_steps=12", "optim.lr=0.25", "data.views=[AP,LATERAL]"]
    )
    assert config.batch_size == 8 and config.max_steps == 12
    assert config.optim.lr == 0.25 and config.optim.warmup_steps == 7  # later override wins
    assert config.data.views == ["AP", "LATERAL"]
    assert load_train_config(path).optim.lr == 0.1


def test_override_without_equals_sign_is_refused():
    with pytest.raises(ValueError, match=r"override 'max_steps' is not key=value"):
        load_train_config(None, ["max_steps"])


def test_unknown_override_key_lists_valid_keys():
    with pytest.raises(
        ValueError, match=r"unknown config key 'optim.lrr'\. Valid keys: .*optim\.lr"
    ):
        load_train_config(None, ["optim.lrr=1"])


def test_override_of_the_wrong_type_fails_clearly():
    with pytest.raises(ValueError, match="max_steps"):
        load_train_config(None, ["max_steps=many"])
