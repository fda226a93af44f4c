"""`embed_to_file` in one process: chunking does not change the output, an interrupted job
resumes from its finished chunks, a changed job starts over, bad arguments fail early."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from radalign.encoders import embed_chunks, sharded_work
from radalign.encoders.embed import embed_images, read_embeddings
from radalign.encoders.embed_chunks import embed_to_file
from radalign.encoders.precision import resolve_precision
from radalign.encoders.sharded_work import partial_dir

from radalign import cmd_embed


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    for i in range(9):
        Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(root / f"s{i}.png")
    (root / "s4.png").write_bytes(b"")  # skipped in the middle of chunk 1
    return sorted(root.glob("*.png"))


def _run(model, scans, out, **kw):
    kw = {"chunk_rows": 3, "batch_size": 2, "precision": "fp32", **kw}
    return embed_to_file(model, out, paths=scans, ids=[p.name for p in scans], **kw)


def test_chunked_output_equals_one_pass(tiny_model, scans, tmp_path, single_thread):
    run = _run(tiny_model, scans, tmp_path / "emb.parquet")
    assert (run.rows, run.chunks, run.resumed_chunks, run.num_processes) == (9, 3, 0, 1)
    assert not partial_dir(tmp_path / "emb.parquet").exists()
    plain = embed_images(
        tiny_model, scans, [p.name for p in scans], progress=False, precision="fp32"
    )
    got = read_embeddings(tmp_path / "emb.parquet")
    assert got.metadata["id"].tolist() == plain.metadata["id"].tolist()
    assert got.metadata["path"].tolist() == plain.metadata["path"].tolist()
    np.testing.assert_allclose(got.vectors, plain.vectors, rtol=0, atol=1e-6)
    skipped = (tmp_path / "skipped.csv").read_text().splitlines()
    assert len(skipped) == 2 and skipped[1].endswith("zero-byte file,")
    assert "embedded 8 of 9 images" in run.line() and "resumed" not in run.line()


def test_interrupted_job_embeds_only_the_missing_chunks(
    tiny_model, scans, tmp_path, monkeypatch, single_thread
):
    out = tmp_path / "emb.npy"
    real, calls = embed_chunks.embed_images, []

    def stops_in_chunk_two(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(embed_chunks, "embed_images", stops_in_chunk_two)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_model, scans, out)
    assert sorted(p.name for p in partial_dir(out).glob("*.parquet")) == ["chunk-00000.parquet"]
    assert not out.exists()
    calls.clear()
    monkeypatch.setattr(
        embed_chunks, "embed_images", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    run = _run(tiny_model, scans, out)
    assert len(calls) == 2 and run.resumed_chunks == 1 and "1 chunk(s) resumed" in run.line()
    assert not partial_dir(out).exists()
    once = _run(tiny_model, scans, tmp_path / "once.npy")
    np.testing.assert_allclose(np.load(out), np.load(tmp_path / "once.npy"), rtol=0, atol=1e-6)
    assert read_embeddings(out).metadata.equals(once.embeddings.metadata)


def _in_chunks(model, scans, work, digest: str, **plan):
    return sharded_work.embed_in_chunks(
        lambda a, b, p: embed_images(
            model, scans[a:b], [s.name for s in scans[a:b]], progress=False, precision=p
        ),
        len(scans),
        work,
        {"fingerprint": model.fingerprint(), "kind": "image", "digest": digest, **plan},
        chunk_rows=3,
        dim=32,
        precision=resolve_precision("fp32", "cpu"),
        device="cpu",
    )


def test_only_the_same_job_reuses_the_partial_folder(tiny_model, scans, tmp_path, single_thread):
    out = tmp_path / "emb.parquet"
    work = partial_dir(out)
    digest = sharded_work.rows_digest(zip([p.name for p in scans], scans))
    for window, other, resumed in [
        ("header", {}, 3),  # the plan embed_to_file writes: every chunk reused
        ("full", {}, 0),  # another window
        ("header", {"fingerprint": "another model"}, 0),
    ]:
        plan = {"window": "header", **other}
        assert _in_chunks(tiny_model, scans, work, digest, **plan).chunks == 3
        run = _run(tiny_model, scans, out, window=window)
        assert run.resumed_chunks == resumed and len(run.embeddings) == 8
        assert not work.exists()
    assert _in_chunks(tiny_model, scans, work, "other rows", window="header").resumed == 0
    assert _run(tiny_model, scans, out).resumed_chunks == 0


def test_a_damaged_chunk_is_refused(tiny_model, scans, tmp_path, single_thread):
    work = tmp_path / "work"
    _in_chunks(tiny_model, scans, work, "d")
    np.save(work / "chunk-00001.npy", np.zeros((1, 32), np.float32))
    with pytest.raises(ValueError, match="disagree"):
        _in_chunks(tiny_model, scans, work, "d")


def test_bad_arguments_fail_before_any_work(tiny_model, scans, tmp_path):
    with pytest.raises(ValueError, match=".parquet or .npy"):
        embed_to_file(tiny_model, tmp_path / "emb.csv", paths=scans)
    with pytest.raises(ValueError, match="exactly one"):
        embed_to_file(tiny_model, tmp_path / "emb.parquet", paths=scans, texts=["a"])
    with pytest.raises(ValueError, match="2 ids for 9 inputs"):
        embed_to_file(tiny_model, tmp_path / "emb.parquet", paths=scans, ids=["a", "b"])
    with pytest.raises(ValueError, match="chunk_rows"):
        embed_to_file(tiny_model, tmp_path / "emb.parquet", paths=scans, chunk_rows=0)
    assert not any(tmp_path.iterdir())
    assert cmd_embed.DEFAULT_CHUNK_ROWS == sharded_work.DEFAULT_CHUNK_ROWS
