"""Index building from phantom pairs: metadata, skips, fingerprint, resume, add, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from radalign.data.sources import open_source
from radalign.data.synth import synthesize
from radalign.encoders import embed_chunks
from radalign.retrieval import build as build_mod
from radalign.retrieval.build import (
    add_to_index,
    build_index,
    parse_size,
    partial_dir,
    read_build_info,
)
from radalign.retrieval.index import FingerprintMismatch, Index

from radalign import cmd_index


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    synthesize(root, n=24, seed=0, size=64, layouts=("jpg",))
    return root / "jpg"


@pytest.fixture(scope="module")
def pairs(phantoms):
    return open_source(phantoms)


def test_report_index_metadata_and_reload(pairs, tiny_model, tmp_path):
    out = tmp_path / "idx"
    index = build_index(tiny_model, pairs, kind="reports", out=out, batch_size=8)
    assert index.build_summary.embedded == len(pairs) == len(index)
    assert not partial_dir(out).exists()
    loaded = Index.load(out, expected_fingerprint=tiny_model.fingerprint())
    meta = loaded.metadata
    for col in ("id", "study_id", "patient_id", "split", "image_path", "report", "kind"):
        assert col in meta.columns
    labels = [c for c in meta.columns if c.startswith("label:")]
    assert "label:Pleural Effusion" in labels and "label:No Finding" in labels
    assert all(meta[c].dtype == np.float64 for c in labels)
    by_id = meta.set_index("id")
    for r in pairs:
        row = by_id.loc[r.id]
        assert row["report"] == r.report and row["study_id"] == r.study_id
        for c in labels:
            want = r.labels.get(c[len("label:") :])
            assert (np.isnan(row[c]) and want is None) or row[c] == want
    assert (meta["kind"] == "reports").all()
    assert np.allclose(np.linalg.norm(loaded.vectors, axis=1), 1, atol=1e-5)
    assert pd.read_csv(out / "skipped.csv").empty
    assert read_build_info(out)["kind"] == "reports"
    with pytest.raises(FingerprintMismatch, match="another model"):
        Index.load(out, expected_fingerprint="some-other-model")


def test_image_index_skips_bad_files_and_split(pairs, tiny_model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"")
    test = pairs.split("test")
    records = [*test, dataclasses.replace(test[0], id="broken", image_path=bad)]
    out = tmp_path / "img"
    index = build_index(tiny_model, records, kind="images", out=out, split="test", batch_size=4)
    assert len(index) == len(test)
    assert "report" not in index.metadata.columns
    assert set(index.metadata["split"]) == {"test"}
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped["reason"]) == ["zero-byte file"]
    assert index.build_summary.skipped == 1
    assert read_build_info(out)["skip_reasons"] == {"zero-byte file": 1}


def test_resume_after_interruption_equals_one_shot(pairs, tiny_model, tmp_path, monkeypatch):
    one_shot = build_index(tiny_model, pairs, out=tmp_path / "one", chunk_rows=8)
    real = embed_chunks.embed_texts
    calls = []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kw)

    out = tmp_path / "resumed"
    monkeypatch.setattr(embed_chunks, "embed_texts", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_index(tiny_model, pairs, out=out, chunk_rows=8)
    assert not out.exists()
    assert sorted(p.name for p in partial_dir(out).glob("*.parquet")) == ["chunk-00000.parquet"]
    monkeypatch.setattr(embed_chunks, "embed_texts", real)
    resumed = build_index(tiny_model, pairs, out=out, chunk_rows=8)
    assert resumed.build_summary.resumed_chunks == 1 and resumed.build_summary.chunks == 3
    assert not partial_dir(out).exists()
    a, b = Index.load(tmp_path / "one"), Index.load(out)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)
    pd.testing.assert_frame_equal(a.metadata, b.metadata)
    assert len(one_shot) == len(resumed)


def test_stale_partial_is_discarded(pairs, tiny_model, tmp_path):
    out = tmp_path / "idx"
    work = partial_dir(out)
    work.mkdir()
    (work / "plan.json").write_text(json.dumps({"fingerprint": "old"}))
    (work / "chunk-00000.parquet").write_bytes(b"junk")
    index = build_index(tiny_model, pairs, out=out, chunk_rows=8)
    assert index.build_summary.resumed_chunks == 0 and len(index) == len(pairs)


def test_add_to_index_appends_and_refuses_other_model(pairs, tiny_model, other_model, tmp_path):
    out = tmp_path / "idx"
    records = list(pairs)
    build_index(tiny_model, records[:10], out=out)
    index = add_to_index(tiny_model, out, records[5:])  # 5 overlap: left out
    assert len(index) == len(records)
    assert index.build_summary.duplicates == 5 and index.build_summary.embedded == 14
    reloaded = Index.load(out, expected_fingerprint=tiny_model.fingerprint())
    assert sorted(reloaded.metadata["id"]) == sorted(r.id for r in records)
    history = read_build_info(out)["history"]
    assert len(history) == 1 and history[0]["rows"] == 10 and history[0]["kind"] == "reports"
    with pytest.raises(FingerprintMismatch):
        add_to_index(other_model, out, records[:2])


def test_add_keeps_the_earlier_skips(pairs, tiny_model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"")
    records = list(pairs)
    first = [*records[:4], dataclasses.replace(records[0], id="bad-1", image_path=bad)]
    more = [*records[4:8], dataclasses.replace(records[0], id="bad-2", image_path=bad)]
    out = tmp_path / "img"
    build_index(tiny_model, first, kind="images", out=out)
    index = add_to_index(tiny_model, out, more)
    assert len(index) == 8 and index.build_summary.skipped == 1
    assert list(pd.read_csv(out / "skipped.csv")["reason"]) == ["zero-byte file"] * 2
    assert read_build_info(out)["history"][0]["skipped"] == 1


def test_rejects_paths_and_bad_kind(pairs, tiny_model, tmp_path):
    with pytest.raises(TypeError, match="open_source"):
        build_index(tiny_model, str(tmp_path), out=tmp_path / "x")
    with pytest.raises(ValueError, match="kind"):
        build_index(tiny_model, pairs, kind="videos", out=tmp_path / "x")


def test_parse_size():
    assert parse_size("2GB") == 2 << 30
    assert parse_size("512m") == 512 << 20
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))
    assert parse_size(1000) == 1000 and parse_size(None) is None
    with pytest.raises(ValueError):
        parse_size("lots")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radalign")
    cmd_index.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_build_add_info(phantoms, tmp_path, capsys):
    parser = _parser()
    out = tmp_path / "cli-idx"
    common = ["--model", "tiny", "--source", str(phantoms), "--workers", "0"]
    args = parser.parse_args(["index", "build", *common, "--split", "train", "--out", str(out)])
    assert args.run(args) == 0
    n_train = len(Index.load(out))
    assert "embedded" in capsys.readouterr().out
    args = parser.parse_args(["index", "add", *common, "--index", str(out)])
    assert args.run(args) == 0
    assert len(Index.load(out)) > n_train
    assert "updated" in capsys.readouterr().out
    args = parser.parse_args(["index", "info", str(out), "--json"])
    assert args.run(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "reports" and info["n"] > n_train and info["factory"] == "Flat"
    assert "Pleural Effusion" in info["labels"]
    args = parser.parse_args(["index", "info", str(out)])
    assert args.run(args) == 0 and "fingerprint" in capsys.readouterr().out


@pytest.mark.slow  # two small bf16 passes; bf16 is emulated on most CPUs
def test_precision_is_recorded_and_a_resume_in_another_precision_starts_over(
    pairs, tiny_model, tmp_path
):
    import warnings

    from radalign.encoders.precision import Precision, SlowPrecisionWarning

    records = list(pairs)[:4]
    a = build_index(tiny_model, records, kind="reports", out=tmp_path / "a", precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowPrecisionWarning)
        b = build_index(tiny_model, records, kind="reports", out=tmp_path / "b", precision="bf16")
    assert read_build_info(tmp_path / "a")["precision"] == "fp32"
    assert read_build_info(tmp_path / "b")["precision"] == "bf16"
    assert list(a.metadata["id"]) == list(b.metadata["id"])
    va, vb = np.asarray(a.vectors), np.asarray(b.vectors)
    assert vb.dtype == np.float32 and (va * vb).sum(axis=1).min() >= 0.999

    frame = build_mod.records_frame(records)
    work = tmp_path / "work"

    def resumed(name: str) -> int:
        return build_mod._embed_frame(
            tiny_model, "reports", frame, work, chunk_rows=2, batch_size=8, num_workers=0,
            device=None, progress=False, precision=Precision(name, "test"),
        ).resumed  # fmt: skip

    assert resumed("fp32") == 0
    assert resumed("fp32") == 2  # both chunks reused
    assert resumed("bf16") == 0  # another precision: start over


def test_on_disk_build_streams_the_chunk_files(pairs, tiny_model, tmp_path, monkeypatch):
    from radalign.encoders.sharded_work import ChunkedEmbeddings

    flat = build_index(tiny_model, pairs, kind="images", out=tmp_path / "flat", factory="Flat",
                       chunk_rows=8, precision="fp32")  # fmt: skip

    def never(self):
        raise AssertionError("an on-disk build must not load every vector at once")

    monkeypatch.setattr(ChunkedEmbeddings, "vectors", property(never))
    out = tmp_path / "disk"
    index = build_index(tiny_model, pairs, kind="images", out=out, factory="IVF2,Flat,OnDisk",
                        chunk_rows=8, precision="fp32")  # fmt: skip
    assert index.on_disk and (out / "index.ivfdata").is_file()
    assert not partial_dir(out).exists()
    loaded = Index.load(out, expected_fingerprint=tiny_model.fingerprint())
    assert loaded.metadata["id"].tolist() == flat.metadata["id"].tolist()
    np.testing.assert_allclose(loaded.vectors, flat.vectors, atol=1e-6)
    q = flat.vectors[:3]
    assert (loaded.search(q, 1).indices[:, 0] == np.arange(3)).all()
