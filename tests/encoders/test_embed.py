import numpy as np
import pandas as pd
import pytest
from PIL import Image
from radalign.encoders.embed import embed_texts, read_embeddings

from radalign.cli import main


def _scans(tmp_path, n=5):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(tmp_path / f"s{i}.png")
    return tmp_path


def _embed_scans(scans, out) -> int:
    """``radalign embed`` of a folder or list of scans with ``tiny`` (no decoding workers)."""
    return main(
        ["embed", "--model", "tiny", "--images", str(scans), "--out", str(out), "--workers", "0"]
    )


def test_embed_images_skips_bad_files(tmp_path, capsys):
    scans = _scans(tmp_path / "scans")
    (scans / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (scans / "empty.dcm").write_bytes(b"")
    out = tmp_path / "out" / "emb.parquet"
    assert _embed_scans(scans, out) == 0
    emb = read_embeddings(out)
    assert sorted(emb.metadata["id"]) == [f"s{i}.png" for i in range(5)]
    assert emb.vectors.shape == (5, 32) and emb.kind == "image" and emb.fingerprint
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, rtol=1e-5)
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert sorted(skipped["reason"]) == ["truncated or corrupt image", "zero-byte file"]
    assert "embedded 5 of 7 images" in capsys.readouterr().out


def test_embed_npy_output_matches_parquet(tmp_path):
    scans = _scans(tmp_path / "scans", 3)
    assert _embed_scans(scans, tmp_path / "a.parquet") == 0
    assert _embed_scans(scans, tmp_path / "b.npy") == 0
    a, b = read_embeddings(tmp_path / "a.parquet"), read_embeddings(tmp_path / "b.npy")
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=1e-6)
    assert list(a.metadata["id"]) == list(b.metadata["id"])


def test_embed_reports_skips_empty_and_non_utf8(tmp_path, tiny_model):
    csv = tmp_path / "r.csv"
    csv.write_bytes(
        b"id,report\n1,No pleural effusion.\n2,\n3,Caf\xe9 opacity\n4,Small left effusion.\n"
        b"5, -- . 12 --\n"
    )
    out = tmp_path / "r.parquet"
    assert main(["embed", "--model", "tiny", "--reports", str(csv), "--out", str(out)]) == 0
    emb = read_embeddings(out)
    assert list(emb.metadata["id"]) == ["1", "4"]
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert dict(zip(skipped["path"].astype(str), skipped["reason"])) == {
        "2": "empty report",
        "3": "non-UTF-8 text",
        "5": "report has no words",
    }
    direct = embed_texts(
        tiny_model, ["No pleural effusion.", "Small left effusion."], ["1", "4"], progress=False
    )
    np.testing.assert_allclose(direct.vectors, emb.vectors, atol=1e-6)


@pytest.mark.slow
def test_embed_nih_subset(shared_data, tmp_path, capsys):
    """The issue's done-when: 1,000 NIH images with `tiny`, then again with a corrupt file added."""
    images = shared_data / "nih_cxr14_subset" / "images"
    out = tmp_path / "nih.parquet"
    assert main(["embed", "--model", "tiny", "--images", str(images), "--out", str(out)]) == 0
    assert len(read_embeddings(out)) == 1000
    listing = tmp_path / "list.txt"
    listing.write_text(
        "\n".join([str(p) for p in sorted(images.glob("*.png"))[:20]] + [str(tmp_path / "bad.png")])
    )
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert _embed_scans(listing, tmp_path / "b.parquet") == 0
    assert len(read_embeddings(tmp_path / "b.parquet")) == 20
    assert "skipped 1 (not an image: 1)" in capsys.readouterr().out


def test_cli_version_and_models(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "radalign" in capsys.readouterr().out
    assert main(["models"]) == 0
    assert "resnet50-bioclinicalbert" in capsys.readouterr().out


def test_embed_texts_order_and_frozen_cache_match_plain_forward(tiny_model):
    """Length-sorted batching returns rows in input order; a frozen-tower cache gives the same
    vectors as running the tower (and skips the reports it already holds)."""
    import torch
    from radalign.encoders.frozen_text import FrozenTextCache

    texts = [
        "Large right pleural effusion with compressive atelectasis of the right lower lobe.",
        "No acute process.",
        "Cardiomegaly.",
        "Mild pulmonary edema; small bilateral effusions. No pneumothorax seen.",
        "",
        "Left upper lobe nodule.",
    ]
    tiny_model.eval()
    plain = embed_texts(tiny_model, texts, batch_size=2, progress=False, precision="fp32")
    with torch.no_grad():
        one_by_one = np.concatenate(
            [tiny_model.encode_text(tiny_model.tokenize([t])).numpy() for t in texts if t]
        )
    np.testing.assert_allclose(plain.vectors, one_by_one, atol=1e-5)
    assert plain.metadata["id"].tolist() == ["0", "1", "2", "3", "5"]

    cache = FrozenTextCache(tiny_model)
    cache.warm(texts[:3], "cpu")
    cached = embed_texts(
        tiny_model, texts, batch_size=2, progress=False, text_cache=cache, precision="fp32"
    )
    np.testing.assert_allclose(cached.vectors, plain.vectors, atol=1e-5)
    assert cache.hits == 3 and cache.misses == 2  # warmed three; the two others computed once


def test_embed_pairs_aligns_both_sides_and_drops_half_pairs(tiny_model, tmp_path):
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image
    from radalign.encoders.embed import embed_images, embed_pairs, embed_texts

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(paths[-1])
    (tmp_path / "broken.png").write_bytes(b"")
    records = [
        SimpleNamespace(id="a", image_path=paths[0], report="Left effusion."),
        SimpleNamespace(id="b", image_path=tmp_path / "broken.png", report="Clear lungs."),
        SimpleNamespace(id="c", image_path=paths[1], report="   "),
        SimpleNamespace(id="d", image_path=None, report="No image."),
        SimpleNamespace(id="e", image_path=paths[2], report="Cardiomegaly."),
    ]
    pairs = embed_pairs(tiny_model, records)
    assert pairs.ids == ["a", "e"]
    assert pairs.image.shape == pairs.text.shape == (2, tiny_model.config.embed_dim)
    alone_i = embed_images(tiny_model, [paths[0], paths[2]], ["a", "e"], progress=False)
    alone_t = embed_texts(
        tiny_model, ["Left effusion.", "Cardiomegaly."], ["a", "e"], progress=False
    )
    np.testing.assert_allclose(pairs.image, alone_i.vectors, atol=1e-6)
    np.testing.assert_allclose(pairs.text, alone_t.vectors, atol=1e-6)
    assert {row[1] for row in pairs.skipped.rows} >= {"zero-byte file", "empty report"}
    assert list(pairs.images.metadata["id"]) == ["a", "c", "e"]  # c's scan kept, its report not
