"""`radalign timeline synth -> train -> predict` on small longitudinal phantoms with the tiny
model, and its bad inputs: another model's head, no patient ids or dates, unreadable scans."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from radalign.heads.io import load_head
from radalign.heads.timeline import CHANGE_CLASSES, TimelineFit

from radalign.cli import main

FAST = ["--workers", "0", "--precision", "fp32", "--batch-size", "64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline")
    assert main(["timeline", "synth", "--out", str(root / "long"), "--patients", "20",
                 "--size", "64", "--seed", "4"]) == 0  # fmt: skip
    manifest = pd.read_csv(root / "long" / "manifest.csv", keep_default_na=False)
    bad = manifest["image_path"].iloc[2]
    (root / "long" / bad).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    args = ["timeline", "train", "--model", "tiny", "--source", str(root / "long"), *FAST,
            "--max-epochs", "15", "--n-boot", "50", "--out", str(root / "head")]  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a busy machine
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(before)
    return root, manifest, manifest["id"].iloc[2]


def test_train_writes_head_metrics_and_skips(trained, tiny_model):
    root, manifest, bad_id = trained
    m = json.loads((root / "head" / "metrics.json").read_text())
    for side in ("history", "no_history"):
        r = m[side]
        assert set(r["label_auroc"]) == {"Edema", "Pleural Effusion", "Pneumothorax"}
        assert 0 <= r["change_auroc"] <= 1 and r["change_ci"][0] <= r["change_ci"][1]
        assert r["n_transitions"] > 0
    assert sum(m["patients"].values()) == manifest["patient_id"].nunique()
    assert m["studies"] == len(manifest) - 1
    assert sum(m["skipped"].values()) == 1
    skipped = pd.read_csv(root / "head" / "skipped.csv")
    assert len(skipped) == 1 and skipped["path"].iloc[0].endswith(f"{bad_id}.png")
    head = load_head(root / "head", fingerprint=tiny_model.fingerprint())
    assert isinstance(head, TimelineFit) and head.config["history"] is True
    assert head.config["dims"] == [tiny_model.config.embed_dim] * 2


def test_predict_round_trip(trained, tiny_model, single_thread):
    root, manifest, bad_id = trained
    out = root / "preds" / "preds.csv"
    args = ["timeline", "predict", "--head", str(root / "head"), "--model", "tiny",
            "--source", str(root / "long"), *FAST, "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    preds = pd.read_csv(out, keep_default_na=False)
    assert len(preds) == len(manifest) - 1 and bad_id not in set(preds["id"])
    assert (root / "preds" / "skipped.csv").is_file()
    for _, g in preds.groupby("patient_id"):
        assert list(g["position"]) == list(range(len(g)))
        ordered = manifest.set_index("id").loc[g["id"], "study_date"]
        assert list(ordered) == sorted(ordered)
    first = preds["position"] == 0
    for name in ("Edema", "Pleural Effusion", "Pneumothorax"):
        assert preds[f"p:{name}"].between(0, 1).all()
        assert (preds.loc[first, f"change:{name}"] == "").all()
        assert set(preds.loc[~first, f"change:{name}"]) <= set(CHANGE_CLASSES)
    # the CLI's predictions are the saved head's, on the same embeddings
    from radalign.heads.timeline_run import source_timelines

    st = source_timelines(tiny_model, root / "long", batch_size=64, precision="fp32")
    lab, _ = load_head(root / "head").predict(st.timelines.x)
    ids = [i for ids in st.timelines.ids for i in ids]
    want = lab[st.timelines.mask][:, 0]
    got = preds.set_index("id").loc[ids, "p:Edema"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_head_from_another_model_is_refused(trained, tmp_path, capsys):
    root, _, _ = trained
    cfg = json.loads((root / "head" / "config.json").read_text())
    (tmp_path / "h").mkdir()
    weights = (root / "head" / "head.safetensors").read_bytes()
    (tmp_path / "h" / "head.safetensors").write_bytes(weights)
    (tmp_path / "h" / "config.json").write_text(json.dumps({**cfg, "fingerprint": "0123abcd"}))
    args = ["timeline", "predict", "--head", str(tmp_path / "h"), "--model", "tiny",
            "--source", str(root / "long"), *FAST, "--out", str(tmp_path / "p.csv")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "another model" in err and "0123abcd" in err
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(ValueError, match="another model"):
        load_head(tmp_path / "h", fingerprint="ffff")


@pytest.mark.parametrize("drop", ["patient_id", "study_date"])
def test_source_without_patients_or_dates(trained, tmp_path, drop, capsys):
    root, manifest, _ = trained
    m = manifest.drop(columns=[drop])
    m["image_path"] = [str(root / "long" / p) for p in m["image_path"]]
    m.to_csv(tmp_path / "manifest.csv", index=False)
    args = ["timeline", "train", "--model", "tiny", "--source", str(tmp_path / "manifest.csv"),
            *FAST, "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert ("no patient ids" if drop == "patient_id" else "no study dates") in err
    assert not (tmp_path / "o").exists()
