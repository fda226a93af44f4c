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


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def adapter_model():
    """``tiny`` with one word-adapter layer over the report tower's word features."""
    import dataclasses

    from radalign.encoders.model import RadAlignModel

    config = dataclasses.replace(radalign.load("tiny").config, text_adapter_layers=1)
    torch.manual_seed(0)
    return RadAlignModel(config, load_weights=False).eval()


def test_word_adapter_feeds_words_and_embedding(adapter_model):
    from radalign.encoders.model import masked_mean

    pixels, tokens = _inputs(adapter_model)
    with torch.no_grad():
        txt = adapter_model.text_features(tokens)
        pooled, words, mask = adapter_model.text_tower(tokens)
        adapted = adapter_model.text_adapter(adapter_model.text_local_proj(words), mask)
    assert txt.words.shape[-1] == adapter_model.config.local_dim
    torch.testing.assert_close(txt.words, adapted)
    assert torch.count_nonzero(txt.words[~txt.word_mask]) == 0  # padded words stay zero
    expected = torch.nn.functional.normalize(
        adapter_model.text_proj(masked_mean(adapted, mask)), dim=-1
    )
    torch.testing.assert_close(txt.embedding, expected)
    torch.testing.assert_close(adapter_model.encode_text(tokens), txt.embedding)
    # tower outputs given from outside (a frozen tower's cache) take the same path
    with torch.no_grad():
        cached = adapter_model.text_features({}, (pooled, words, mask))
    torch.testing.assert_close(cached.embedding, txt.embedding)


def test_word_adapter_padding_does_not_change_a_report(adapter_model):
    """A report's features do not depend on the padding a longer report adds to its batch."""
    alone = adapter_model.tokenize(["Small right pleural effusion."])
    batch = adapter_model.tokenize(["Small right pleural effusion.", "A " * 30 + "long report."])
    with torch.no_grad():
        a = adapter_model.text_features(alone)
        b = adapter_model.text_features(batch)
    n = int(a.word_mask.sum())
    torch.testing.assert_close(b.embedding[0], a.embedding[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.words[0, :n], a.words[0, :n], atol=1e-5, rtol=1e-5)


def test_word_adapter_save_load(adapter_model, tmp_path):
    adapter_model.save_pretrained(tmp_path / "m")
    loaded = radalign.load(tmp_path / "m").eval()
    assert loaded.config.text_adapter_layers == 1
    _, tokens = _inputs(adapter_model)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(tokens), adapter_model.encode_text(tokens))
