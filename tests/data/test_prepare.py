"""``radalign data prepare``: shards hold exactly the decoded-then-resized images, every reader
accepts them, WebDataset streams them, and a killed job resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from radalign.data import prepare as prepare_mod
from radalign.data.prepare import prepare, prepared_pixels
from radalign.data.shards import read_index, read_sample, shard_urls
from radalign.data.sources import detect_layout, open_source
from radalign.encoders.errors import InputError
from radalign.encoders.imageio import load_image, split_shard_member
from radalign.encoders.transforms import ImageTransform


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    from radalign.data.synth import synthesize

    root = tmp_path_factory.mktemp("phantoms")
    synthesize(root, n=30, seed=3, size=160, layouts=("dicom", "jpg"))
    return root


@pytest.fixture(scope="module")
def jpg_shards(phantoms, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "jpg96"
    summary = prepare(phantoms / "jpg", out, size=96, shard_size=8, workers=1, progress=False)
    assert summary.n_written == summary.n_records > 0
    return out


def _tensor(transform: ImageTransform, image: np.ndarray, seed: int) -> torch.Tensor:
    transform.set_seed(seed)
    return transform(image)


def test_records_from_shards_equal_records_from_the_source(phantoms, jpg_shards):
    assert detect_layout(jpg_shards) == "shards"
    src = open_source(phantoms / "jpg")
    got = open_source(jpg_shards)
    assert got.layout == "shards"
    assert [r.id for r in got] == [r.id for r in src]
    for a, b in zip(src, got):
        assert (a.report, a.split, a.view, a.patient_id, a.study_id) == (
            b.report,
            b.split,
            b.view,
            b.patient_id,
            b.study_id,
        )
        assert a.labels == b.labels and a.sections == b.sections and a.source == b.source
        assert split_shard_member(b.image_path) is not None
    # the same filters apply to shards as to any source
    assert [r.id for r in open_source(jpg_shards, split="test")] == [
        r.id for r in open_source(phantoms / "jpg", split="test")
    ]


def test_training_transform_of_a_shard_equals_decode_then_resize(phantoms, jpg_shards):
    originals = {r.id: r.image_path for r in open_source(phantoms / "jpg")}
    transform = ImageTransform(64, train=True, mean=[0.5] * 3, std=[0.25] * 3, seed=0)
    for k, rec in enumerate(open_source(jpg_shards).records[:6]):
        decoded = load_image(originals[rec.id])
        expect = prepared_pixels(decoded, 96, "uint8").astype(np.float32) / np.float32(255.0)
        from_shard = load_image(rec.image_path)
        assert from_shard.dtype == np.float32 and from_shard.shape == expect.shape
        assert max(from_shard.shape) == 96
        np.testing.assert_array_equal(from_shard, expect)
        # bit-for-bit the same training pipeline after decoding (augmentation seeded alike)
        assert torch.equal(_tensor(transform, from_shard, k), _tensor(transform, expect, k))
        # and within rounding of the unquantised resize
        h, w = expect.shape
        import cv2

        exact = cv2.resize(decoded, (w, h), interpolation=cv2.INTER_AREA)
        assert np.abs(from_shard - exact).max() <= 0.5 / 255 + 1e-6


def test_uint16_dicom_shards_keep_16_bit_precision(phantoms, tmp_path):
    out = tmp_path / "dcm16"
    prepare(phantoms / "dicom", out, size=200, dtype="uint16", workers=2, shard_size=10)
    originals = {r.id: r.image_path for r in open_source(phantoms / "dicom")}
    recs = open_source(out).records
    assert len(recs) == len(originals)
    for rec in recs[:4]:
        decoded = load_image(originals[rec.id])  # 160 px: kept as it is, never enlarged
        got = load_image(rec.image_path)
        assert got.shape == decoded.shape
        assert np.abs(got - decoded).max() <= 0.5 / 65535 + 1e-7
        pixels, meta = read_sample(out, Path(split_shard_member(rec.image_path)[1]).stem)
        assert pixels.dtype == np.uint16 and meta["id"] == rec.id


def test_shards_stream_with_webdataset(jpg_shards):
    import io

    import webdataset as wds
    from PIL import Image

    index = read_index(jpg_shards).set_index("key")
    seen = []
    for sample in wds.WebDataset(shard_urls(jpg_shards), shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        meta = json.loads(sample["json"])
        assert meta["id"] == index.loc[key, "id"]
        pixels = np.asarray(Image.open(io.BytesIO(sample["png"])))
        stored, _ = read_sample(jpg_shards, key)
        np.testing.assert_array_equal(pixels, stored)
        seen.append(key)
    assert seen == list(index.index)


def test_killed_job_resumes_and_ends_identical(phantoms, jpg_shards, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    real = prepare_mod._write_shard
    calls = []

    def dies_on_third(task):
        calls.append(task[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill between shards
        return real(task)

    monkeypatch.setattr(prepare_mod, "_write_shard", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare(phantoms / "jpg", out, size=96, shard_size=8, workers=1, progress=False)
    with pytest.raises(InputError, match="incomplete prepare"):
        open_source(out)
    monkeypatch.setattr(prepare_mod, "_write_shard", real)
    # a shard whose tar was cut short after its part was written is redone too
    with open(out / "shard-000001.tar", "r+b") as fh:
        fh.truncate(1024)
    summary = prepare(phantoms / "jpg", out, size=96, shard_size=8, workers=1, progress=False)
    assert summary.n_resumed_shards == 1
    assert summary.n_written == summary.n_records
    pd.testing.assert_frame_equal(read_index(out), read_index(jpg_shards))
    for name in json.loads((out / "manifest.json").read_text())["shards"]:
        assert (out / name).read_bytes() == (jpg_shards / name).read_bytes()
    # finished: a rerun redoes nothing; other settings are refused unless overwriting
    assert prepare(phantoms / "jpg", out, size=96, shard_size=8, progress=False).n_resumed_shards
    with pytest.raises(ValueError, match="different prepare job"):
        prepare(phantoms / "jpg", out, size=64, shard_size=8, progress=False)
    again = prepare(phantoms / "jpg", out, size=64, shard_size=8, overwrite=True, progress=False)
    assert (
        again.n_resumed_shards == 0 and max(load_image(open_source(out)[0].image_path).shape) == 64
    )


def test_bad_rows_are_skipped_with_reasons(phantoms, tmp_path):
    jpgs = sorted((phantoms / "jpg" / "files").rglob("*.jpg"))[:3]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    rows = [{"image_path": str(p), "report": "FINDINGS: Clear lungs."} for p in jpgs]
    rows += [
        {"image_path": str(bad), "report": "FINDINGS: Corrupt."},
        {"image_path": str(tmp_path / "gone.png"), "report": "FINDINGS: Missing."},
    ]
    manifest = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "out"
    summary = prepare(manifest, out, size=64, workers=1, progress=False)
    assert summary.n_written == 3
    skipped = pd.read_csv(out / "skipped.csv")
    by_stage = dict(zip(skipped["stage"], skipped["reason"]))
    assert by_stage == {"decode": "not an image", "source": "missing image"}
    assert str(bad) in skipped["path"].tolist()
    manifest_json = json.loads((out / "manifest.json").read_text())
    assert manifest_json["skipped"] == {"not an image": 1, "missing image": 1}
    assert len(open_source(out)) == 3


def test_unreadable_members_raise_input_errors(jpg_shards, tmp_path):
    rec = open_source(jpg_shards)[0]
    shard, member = split_shard_member(rec.image_path)
    with pytest.raises(InputError, match="missing shard member"):
        load_image(f"{shard}::999999.png")
    copy = tmp_path / "copy"
    shutil.copytree(jpg_shards, copy)
    (copy / shard.name).unlink()
    with pytest.raises(InputError, match="missing shard"):
        load_image(copy / shard.name.replace(".tar", f".tar::{member}"))
    ps = open_source(copy)  # the records of a lost shard are skipped, the rest still open
    assert ps.skipped.counts()["missing shard"] == 1
    assert len(ps) == len(open_source(jpg_shards)) - 8


def test_cli_prepare_and_nih_manifest(shared_data, tmp_path):
    from radalign.cli import main

    manifest = shared_data / "nih_cxr14_subset" / "manifest.csv"
    sub = tmp_path / "nih.csv"
    pd.read_csv(manifest, dtype=str).head(12).assign(
        image_path=lambda d: [str(manifest.parent / p) for p in d["image_path"]]
    ).to_csv(sub, index=False)
    out = tmp_path / "nih"
    assert main(["data", "prepare", str(sub), "--size", "128", "--out", str(out)]) == 0
    assert len(read_index(out)) == 12
    # a labels-only set: reports written from the labels when asked, as for the manifest
    assert len(open_source(out, label_text=True)) == 12
    img = load_image(open_source(out, label_text=True)[0].image_path)
    assert img.shape == (128, 128)


def test_pretrain_and_zeroshot_read_shards(jpg_shards, tmp_path, tiny_model):
    import argparse

    from radalign.pretrain.config import load_train_config
    from radalign.pretrain.trainer import pretrain

    from radalign.cmd_zeroshot import add_parser, run

    settings = {
        "model": "tiny",
        "output_dir": str(tmp_path / "run"),
        "batch_size": 4,
        "max_steps": 2,
        "log_every": 1,
        "eval_every": 1000,
        "save_every": 1000,
        "trackers": "[]",
        "data.source": str(jpg_shards),
        "data.num_workers": 0,
        "data.max_val_pairs": 8,
    }
    result = pretrain(load_train_config(None, [f"{k}={v}" for k, v in settings.items()]))
    assert result is not None
    losses = [
        json.loads(line)["train/loss"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]
    assert len(losses) >= 2 and all(np.isfinite(losses))

    parser = argparse.ArgumentParser(prog="radalign")
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "preds.csv"
    args = parser.parse_args(
        ["zeroshot", "--model", "tiny", "--workers", "0", "--source", str(jpg_shards)]
        + ["--split", "all", "--views", "all", "--out", str(out), "--n-boot", "20"]
    )
    assert run(args) == 0
    table = pd.read_csv(out)
    assert sorted(table["id"]) == sorted(r.id for r in open_source(jpg_shards, views=None))
