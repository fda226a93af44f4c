"""`radalign probe` end to end on a tiny embedded phantom set, and its input checks."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from radalign.encoders.embed import read_embeddings, write_embeddings
from radalign.heads.io import load_head

from radalign.cli import main


@pytest.fixture(scope="module")
def embedded(tiny_model, tmp_path_factory):
    from radalign.data.sources import open_source
    from radalign.data.synth import synthesize
    from radalign.encoders.embed import embed_pairs

    root = tmp_path_factory.mktemp("probe")
    synthesize(root / "ph", n=80, seed=5, size=64, layouts=["jpg"])
    records = list(open_source(root / "ph" / "jpg", one_image_per_study=True))
    pairs = embed_pairs(tiny_model, records, batch_size=32, precision="fp32")
    write_embeddings(pairs.images, root / "img.parquet")
    write_embeddings(pairs.texts, root / "rep.parquet")
    rows = [{"id": str(r.id), **{k: float(v) for k, v in r.labels.items()}} for r in records]
    labels = pd.DataFrame(rows).fillna(0.0).replace(-1.0, 0.0)
    keep = [c for c in labels.columns[1:] if 8 <= labels[c].sum() <= len(labels) - 8]
    assert len(keep) >= 2, labels.sum()
    labels[["id", *keep[:3]]].to_csv(root / "labels.csv", index=False)
    return root, keep[:3], tiny_model.fingerprint()


@pytest.mark.parametrize("head", ["linear", "early", "late"])
def test_probe_cli_end_to_end(embedded, head, single_thread):
    root, classes, fp = embedded
    out = root / f"out-{head}"
    args = ["probe", "--image", str(root / "img.parquet"), "--labels", str(root / "labels.csv")]
    if head != "linear":
        args += ["--report", str(root / "rep.parquet"), "--class-weights"]
    rc = main([*args, "--head", head, "--fingerprint", fp, "--n-boot", "50", "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["per_class"]) == set(classes)
    assert m["n_train"] + m["n_val"] + m["n_test"] == 80
    assert 0 <= m["accuracy"] <= 1 and m["train_seconds"] >= 0
    head_back = load_head(out)
    assert head_back.config["fingerprint"] == fp and head_back.config["head"] == head


def test_probe_align_and_multiclass(embedded, single_thread):
    root, classes, _ = embedded
    lab = pd.read_csv(root / "labels.csv")
    lab["cls"] = np.where(lab[classes[0]] == 1, "a", np.where(lab[classes[1]] == 1, "b", "c"))
    lab.to_csv(root / "labels_mc.csv", index=False)
    out = root / "mc"
    rc = main(
        ["probe", "--image", str(root / "img.parquet"), "--report", str(root / "rep.parquet"),
         "--labels", str(root / "labels_mc.csv"), "--task", "multiclass", "--target", "cls",
         "--head", "early", "--align", "procrustes", "--n-boot", "20", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert sorted(m["per_class"]) == ["a", "b", "c"]
    assert m["modality_gap"]["after"] < m["modality_gap"]["before"]
    from radalign.heads.alignment import load_aligner

    al = load_aligner(out / "align.safetensors")
    assert al.method == "procrustes" and al.rotation.shape[0] == al.rotation.shape[1]


def test_probe_bad_inputs(embedded, tmp_path, capsys):
    from radalign.heads.probe import run_probe

    root, classes, fp = embedded
    img, lab = root / "img.parquet", root / "labels.csv"
    rc = main(["probe", "--image", str(img), "--labels", str(lab), "--fingerprint", "x" + fp,
               "--out", str(tmp_path / "a")])  # fmt: skip
    assert rc != 0 and "embeddings from another model" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    kw = {"labels": lab, "out": tmp_path / "b"}
    with pytest.raises(ValueError, match="unknown label"):
        run_probe(image=img, report=None, classes=["Nonexistent"], **kw)
    other = replace(read_embeddings(root / "rep.parquet"), fingerprint="other-model")
    write_embeddings(other, tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="different models"):
        run_probe(image=img, report=tmp_path / "other.parquet", **kw)
    short = read_embeddings(root / "rep.parquet")
    short = replace(short, vectors=np.ascontiguousarray(short.vectors[:, :7]))
    write_embeddings(short, tmp_path / "short.parquet")
    with pytest.raises(ValueError, match="dims differ"):
        run_probe(image=img, report=tmp_path / "short.parquet", **kw)
    with pytest.raises(FileNotFoundError, match="no such"):
        run_probe(image=tmp_path / "nope.parquet", report=None, **kw)
    with pytest.raises(ValueError, match="needs both"):
        run_probe(image=img, report=None, align="centre", **kw)
    assert not (tmp_path / "b").exists()


def test_probe_from_index_dirs(embedded, tiny_model, tmp_path, single_thread):
    from radalign.data.sources import open_source
    from radalign.retrieval.build import build_index

    root, _, fp = embedded
    records = list(open_source(root / "ph" / "jpg", one_image_per_study=True))
    build_index(tiny_model, records, kind="images", out=tmp_path / "ii", batch_size=32)
    out = tmp_path / "o"
    rc = main(["probe", "--image", str(tmp_path / "ii"), "--classes", "No Finding", "--head",
               "early", "--n-boot", "20", "--model", "tiny", "--out", str(out)])  # fmt: skip
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["per_class"]) == ["No Finding"] and m["fingerprint"] == fp


def test_probe_from_source(tiny_model, tmp_path, capsys, single_thread):
    from radalign.data.synth_longitudinal import synthesize_longitudinal

    root = synthesize_longitudinal(tmp_path / "long", n_patients=20, seed=2, size=64)
    manifest = pd.read_csv(root / "manifest.csv", keep_default_na=False)
    manifest.loc[3, "report"] = " -- . -- "  # no words
    manifest.to_csv(root / "manifest.csv", index=False)
    out = tmp_path / "o"
    args = ["probe", "--source", str(root), "--model", "tiny", "--workers", "0", "--precision",
            "fp32", "--head", "early", "--classes", "Pleural Effusion,Edema", "--n-boot", "20"]  # fmt: skip
    assert main([*args, "--out", str(out)]) == 0
    assert "report has no words: 1" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["skipped"] == {"report has no words": 1} and m["modalities"] == ["image", "report"]
    assert m["n_train"] + m["n_val"] + m["n_test"] == len(manifest) - 1
    # the source's patient-level split is used: every patient's studies in one split
    test_rows = (manifest["split"] == "test").sum()
    assert m["n_test"] == test_rows
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["reason"].tolist() == ["report has no words"]
    head = load_head(out, fingerprint=tiny_model.fingerprint())
    assert head.config["dims"] == [tiny_model.config.embed_dim] * 2
    with pytest.raises(ValueError, match="another model"):
        load_head(out, fingerprint="not-this-model")
    assert main([*args, "--image", "x.parquet", "--out", str(tmp_path / "b")]) == 2
    assert "not both" in capsys.readouterr().err
    no_model = [a for a in args if a != "tiny" and a != "--model"]
    assert main([*no_model, "--out", str(tmp_path / "c")]) == 2
    assert "--source needs --model" in capsys.readouterr().err
