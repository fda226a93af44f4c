import json

import pytest
from radalign.encoders.config import ModelConfig, from_dict
from radalign.encoders.registry import get_model_config, list_models, register_config_path

REQUIRED = {"tiny", "demo-resnet18-minilm", "resnet50-bioclinicalbert", "vit-b16-cxrbert"}


def test_builtin_configs_listed():
    models = list_models()
    assert set(models) >= REQUIRED
    assert models["resnet50-bioclinicalbert"].text.source == "emilyalsentzer/Bio_ClinicalBERT"
    assert models["vit-b16-cxrbert"].image.name == "vit_base_patch16_224"


def test_user_config_by_env_and_path(tmp_path, monkeypatch):
    cfg = {"name": "my-model", "embed_dim": 64, "image": {"name": "resnet34"}}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(cfg))
    assert get_model_config(path).embed_dim == 64
    monkeypatch.setenv("RADALIGN_MODEL_CONFIGS", str(tmp_path))
    assert list_models()["my-model"].image.name == "resnet34"
    yaml_dir = tmp_path / "more"
    yaml_dir.mkdir()
    (yaml_dir / "other.yaml").write_text("embed_dim: 16\ntext:\n  pooling: mean\n")
    register_config_path(yaml_dir)
    assert get_model_config("other").text.pooling == "mean"


def test_unknown_name_and_keys():
    with pytest.raises(KeyError, match="unknown model 'nope'.*tiny"):
        get_model_config("nope")
    with pytest.raises(ValueError, match="imag.*Valid keys: .*image.name"):
        from_dict(ModelConfig, {"imag": {}})
    with pytest.raises(ValueError, match="embed_dim"):
        from_dict(ModelConfig, {"embed_dim": "wide"})
