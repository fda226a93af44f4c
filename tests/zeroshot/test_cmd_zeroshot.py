"""``radalign zeroshot`` end to end on a few synthetic phantoms."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from radalign.cmd_zeroshot import add_parser, run

CLASSES_14 = 14


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="radalign")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["zeroshot", "--model", "tiny", "--workers", "0", *argv])


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from radalign.data.synth import synthesize

    root = tmp_path_factory.mktemp("phantoms") / "tree"
    synthesize(root, n=24, seed=0, size=64, layouts=("jpg",))
    return root / "jpg"


@pytest.fixture(scope="module")
def source_run(phantoms, tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "preds.csv"
    args = _parse(
        ["--source", str(phantoms), "--split", "all", "--views", "all", "--out", str(out)]
        + ["--n-boot", "50", "--threshold", "0.45"]
    )
    assert run(args) == 0
    return out


def test_source_predictions_match_the_classifier(source_run, phantoms, tiny_model):
    from radalign.data.sources import open_source
    from radalign.encoders.embed import embed_images
    from radalign.zeroshot.classifier import PromptClassifier

    table = pd.read_csv(source_run)
    clf = PromptClassifier(tiny_model, "chexpert")
    assert list(table.columns[:2]) == ["id", "path"]
    assert list(table.columns[2 : 2 + CLASSES_14]) == clf.classes
    assert list(table.columns[2 + CLASSES_14 :]) == [f"{c}_pred" for c in clf.classes]
    records = open_source(phantoms, views=None)
    assert sorted(table["id"]) == sorted(r.id for r in records)
    probs = table[clf.classes].to_numpy()
    assert ((probs > 0) & (probs < 1)).all()
    preds = table[[f"{c}_pred" for c in clf.classes]].to_numpy()
    np.testing.assert_array_equal(preds, (probs >= 0.45).astype(int))
    emb = embed_images(tiny_model, table["path"].tolist(), table["id"].tolist(), progress=False)
    expected = clf.predict(emb.vectors, emb.metadata["id"].tolist())
    np.testing.assert_allclose(probs, expected.loc[table["id"]].to_numpy(), atol=1e-4)


def test_source_evaluation_table(source_run, phantoms):
    from radalign.data.sources import open_source

    ev = pd.read_csv(source_run.with_suffix(".eval.csv"))
    assert (source_run.parent / "skipped.csv").is_file()
    assert ev["class"].iloc[-1] == "macro"
    rows = ev.set_index("class")
    records = open_source(phantoms, views=None)
    n_effusion = sum(r.labels.get("Pleural Effusion") == 1 for r in records)
    assert rows.loc["Pleural Effusion", "n_pos"] == n_effusion
    # absent CheXpert labels count as negatives (--missing-labels negative)
    assert rows.loc["Pleural Effusion", "n_neg"] == sum(
        r.labels.get("Pleural Effusion", 0) == 0 for r in records
    )
    both = rows.drop("macro")
    both = both[both["auroc"].notna()]
    assert len(both) > 0
    assert rows.loc["macro", "auroc"] == pytest.approx(both["auroc"].mean())
    assert ((both["ci_low"] <= both["auroc"]) & (both["auroc"] <= both["ci_high"])).all()
    assert (rows.drop("macro")["threshold"] == 0.45).all()


def test_scans_with_a_bad_file_and_labels_manifest(phantoms, tmp_path):
    scans = sorted(phantoms.rglob("*.jpg"))[:5]
    folder = tmp_path / "scans"
    folder.mkdir()
    for i, p in enumerate(scans):
        (folder / f"scan{i}.jpg").write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"")
    manifest = tmp_path / "labels.csv"
    pd.DataFrame(
        {
            "image_path": [f"scans/scan{i}.jpg" for i in range(4)],
            "Effusion": [1, 0, 1, 0],  # NIH name for Pleural Effusion
            "Pneumothorax": [0, 0, -1, 1],
        }
    ).to_csv(manifest, index=False)
    out = tmp_path / "out" / "z.csv"
    ev_out = tmp_path / "out" / "ev.csv"
    argv = [str(folder), "--labels", str(manifest), "--out", str(out), "--eval-out", str(ev_out)]
    assert run(_parse(argv + ["--n-boot", "20"])) == 0
    table = pd.read_csv(out)
    assert sorted(table["id"]) == [f"scan{i}.jpg" for i in range(5)]
    skipped = pd.read_csv(out.parent / "skipped.csv")
    assert len(skipped) == 1 and skipped["path"].iloc[0].endswith("broken.png")
    ev = pd.read_csv(ev_out).set_index("class")
    assert list(ev.index) == ["Pleural Effusion", "Pneumothorax", "macro"]
    assert (ev.loc["Pleural Effusion", "n_pos"], ev.loc["Pleural Effusion", "n_neg"]) == (2, 2)
    assert (ev.loc["Pneumothorax", "n_pos"], ev.loc["Pneumothorax", "n_neg"]) == (1, 2)


def test_argument_errors(phantoms, tmp_path):
    with pytest.raises(ValueError, match="nothing to classify"):
        run(_parse(["--out", str(tmp_path / "x.csv")]))
    with pytest.raises(ValueError, match="not both"):
        run(_parse([str(phantoms), "--source", str(phantoms)]))
    with pytest.raises(ValueError, match="threshold"):
        run(_parse([str(phantoms), "--threshold", "1.5"]))
    assert not (tmp_path / "x.csv").exists()
