import json

import pytest
import torch
from radalign.encoders.atomic import atomic_dir
from safetensors.torch import load_file, save_file

import radalign


def _inputs(model):
    torch.manual_seed(0)
    size = model.config.image.image_size
    return torch.randn(3, 3, size, size), model.tokenize(
        [
            "Small right pleural effusion.",
            "Lungs are clear.",
            "Enlarged cardiac silhouette, no edema.",
        ]
    )


def test_features_shapes_and_norms(tiny_model):
    pixels, tokens = _inputs(tiny_model)
    with torch.no_grad():
        img, txt = tiny_model(pixels, tokens)
    e, d = tiny_model.config.embed_dim, tiny_model.config.local_dim
    assert img.embedding.shape == (3, e) and txt.embedding.shape == (3, e)
    torch.testing.assert_close(img.embedding.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.embedding.norm(dim=-1), torch.ones(3))
    assert img.regions.shape == (3, img.grid[0] * img.grid[1], d)
    assert txt.words.shape[0] == 3 and txt.words.shape[2] == d
    assert txt.word_mask.sum(1).tolist() == [4, 3, 5]
    torch.testing.assert_close(tiny_model.encode_image(pixels), img.embedding)
    torch.testing.assert_close(tiny_model.encode_text(tokens), txt.embedding)
    assert float(tiny_model.logit_scale.detach().exp()) == pytest.approx(1 / 0.07, rel=1e-5)


def test_save_load_bit_identical(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    loaded = radalign.load(tmp_path / "m").eval()
    a, b = tiny_model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    pixels, tokens = _inputs(tiny_model)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(pixels), tiny_model.encode_image(pixels))
        assert torch.equal(loaded.encode_text(tokens), tiny_model.encode_text(tokens))
    assert loaded.fingerprint() == tiny_model.fingerprint()
    assert loaded.config == tiny_model.config


def test_load_tolerates_harmless_key_drift(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(str(weights))
    state["text_tower.model.embeddings.position_ids"] = torch.arange(64)[None]
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(weights), metadata={"format": "radalign-model/1"})
    radalign.load(tmp_path / "m")


def test_load_refuses_mismatched_weights(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    meta = json.loads(config_path.read_text())
    meta["model"]["embed_dim"] = 48
    config_path.write_text(json.dumps(meta))
    with pytest.raises(
        ValueError, match="do not match the model config: .*shape mismatches.*image_proj"
    ):
        radalign.load(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    meta["model"]["embed_dim"] = tiny_model.config.embed_dim
    config_path.write_text(json.dumps(meta))
    state = load_file(str(weights))
    del state["image_proj.bias"]
    save_file(state, str(weights))
    with pytest.raises(ValueError, match="missing keys.*image_proj.bias"):
        radalign.load(tmp_path / "m")


def test_save_is_atomic(tiny_model, tmp_path):
    target = tmp_path / "m"
    tiny_model.save_pretrained(target)
    before = (target / "model.safetensors").read_bytes()
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed mid-write")
    assert (target / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_not_a_model_dir(tmp_path):
    with pytest.raises(KeyError, match="unknown model"):
        radalign.load(tmp_path)


@pytest.mark.parametrize("name", ["resnet50-bioclinicalbert", "vit-b16-cxrbert"])
def test_hub_configs_build_offline_with_random_weights(name):
    with pytest.raises(RuntimeError, match="Offline|offline"):
        radalign.load(name)
    with pytest.warns(UserWarning, match="not available offline"):
        model = radalign.load(name, pretrained=False)
    size = model.config.image.image_size
    with torch.no_grad():
        img = model.image_features(torch.randn(1, 3, size, size))
    assert img.grid == (14, 14)
    assert model.config.text.source.startswith(("emilyalsentzer", "microsoft"))
