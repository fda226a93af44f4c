"""Tests for IVF indices with on-disk inverted lists (indices larger than memory)."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
from radalign.retrieval.index import (
    IVFDATA_FILE,
    FingerprintMismatch,
    Index,
    IndexFormatError,
    train_index,
)
from radalign.retrieval.index_choice import (
    choose_index,
    layout_bytes,
    ondisk_resident_bytes,
    split_refine,
    split_storage,
)
from radalign.retrieval.ondisk import chunk_reader, reservoir_sample
from radalign.retrieval.search import retrieve_for_text

FP = "radalign-test-model@sha256:ondisk"
N, DIM = 5000, 64
FACTORY = "IVF32,PQ8x8,RFlat"


def _clustered(n: int, dim: int, seed: int, n_clusters: int = 30) -> np.ndarray:
    crng = np.random.default_rng(99)
    centres = crng.standard_normal((n_clusters, dim))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, n_clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _meta(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"v{i:05d}" for i in range(n)], "study_id": np.arange(n) // 2})


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _clustered(N, DIM, 0), _clustered(40, DIM, 1)


@pytest.fixture(scope="module")
def mem(data) -> Index:
    """The in-memory index of the same vectors (trained on all of them, like ``built``)."""
    return Index.build(data[0], _meta(N), fingerprint=FP, factory=FACTORY)


@pytest.fixture(scope="module")
def trained(mem) -> faiss.Index:
    """A trained, empty FAISS index (the in-memory one's quantiser and codebooks)."""
    index = faiss.clone_index(mem.faiss_index)
    index.reset()
    return index


@pytest.fixture(scope="module")
def built(data, tmp_path_factory) -> Index:
    out = tmp_path_factory.mktemp("ondisk") / "idx"
    return Index.build_on_disk(data[0], _meta(N), out, fingerprint=FP, factory=FACTORY)


def _centroids(index: Index) -> np.ndarray:
    q = faiss.extract_index_ivf(index.faiss_index).quantizer
    return q.reconstruct_n(0, q.ntotal)


# ---------------------------------------------------------------------- same results
def test_on_disk_equals_in_memory_with_the_same_quantiser(data, built, mem) -> None:
    x, q = data
    assert built.on_disk and not mem.on_disk
    assert built.factory == FACTORY + ",OnDisk" and built.search_params == mem.search_params
    np.testing.assert_array_equal(_centroids(built), _centroids(mem))
    a, b = mem.search(q, 10), built.search(q, 10)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    assert b.ids == a.ids
    # both: few codes per query, so check it is a real ANN index, not exact by accident
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(b.indices, exact)])
    assert 0.8 <= recall <= 1.0
    assert built.index_bytes() < mem.index_bytes() / 2  # lists are not in the resident part


def test_reused_training_and_faiss_level_equality(data, trained, tmp_path: Path) -> None:
    x, q = data
    ix = Index.build_on_disk(
        x, None, tmp_path / "i", fingerprint=FP, factory="IVF32,PQ8x8", trained=trained
    )
    ref = faiss.clone_index(trained)
    ref.add(x)
    faiss.extract_index_ivf(ref).nprobe = ix.search_params["nprobe"]
    d_ref, i_ref = ref.search(q, 10)
    res = ix.search(q, 10)
    np.testing.assert_array_equal(res.indices, i_ref)
    np.testing.assert_allclose(res.scores, d_ref, atol=1e-6)
    assert trained.ntotal == 0  # the caller's trained index is not filled
    with pytest.raises(ValueError, match="trained FAISS index"):
        Index.build_on_disk(x, None, tmp_path / "j", fingerprint=FP, trained=trained)


# ---------------------------------------------------------------------- chunked sources
def test_chunked_sources_and_blocks_give_the_same_index(
    data, built, trained, tmp_path: Path
) -> None:
    x, q = data
    parts = []
    for i, (s, e) in enumerate([(0, 1700), (1700, 1701), (1701, N)]):
        np.save(tmp_path / f"part{i}.npy", x[s:e] * 3.0)  # not normalised: build normalises
        parts.append(tmp_path / f"part{i}.npy")

    def gen():
        for s in range(0, N, 999):
            yield x[s : s + 999]

    kw = {"fingerprint": FP, "factory": FACTORY, "trained": trained}
    from_parts = Index.build_on_disk(
        parts, _meta(N), tmp_path / "p", block_rows=1200, chunk_rows=500, **kw
    )
    from_gen = Index.build_on_disk(gen, _meta(N), tmp_path / "g", block_rows=2500, **kw)
    want = built.search(q, 10)
    for ix in (from_parts, from_gen):
        np.testing.assert_allclose(np.asarray(ix.vectors), x, atol=1e-6)
        assert isinstance(ix.vectors, np.memmap)
        np.testing.assert_array_equal(ix.search(q, 10).indices, want.indices)
    assert not (tmp_path / "p" / "blocks").exists()  # scratch blocks are removed
    with pytest.raises(TypeError, match="one-shot iterator"):
        Index.build_on_disk(iter([x]), None, tmp_path / "it", fingerprint=FP, factory=FACTORY)
    with pytest.raises(FileNotFoundError, match="part 1"):
        Index.build_on_disk([parts[0], tmp_path / "nope.npy"], None, tmp_path / "m", fingerprint=FP)
    assert not (tmp_path / "m").exists()  # a failed build leaves nothing behind


def test_reservoir_sample_is_uniform_and_complete() -> None:
    x = np.arange(10_000, dtype=np.float32)[:, None].repeat(2, axis=1)
    read = chunk_reader(x, 777)
    sample, n, dim = reservoir_sample(read(), 1000, seed=3)
    assert (n, dim, sample.shape) == (10_000, 2, (1000, 2))
    rows = sample[:, 0]
    assert len(set(rows)) == 1000 and np.all(np.diff(rows) > 0)  # distinct, source order
    assert 4000 < rows.mean() < 6000  # drawn from the whole range, not the first chunks
    small, n, _ = reservoir_sample(read(), 20_000)
    np.testing.assert_array_equal(small, x)  # everything, in order, when n <= size


def test_bad_vectors_are_refused(tmp_path: Path) -> None:
    x = _clustered(2000, 16, 5)
    x[1500, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):  # in the training sample
        Index.build_on_disk(x, None, tmp_path / "n", fingerprint=FP, factory="IVF8,Flat")
    trained = train_index("IVF8,Flat", x[:1000])
    with pytest.raises(ValueError, match=r"vectors\[0:2000\] contain NaN .*row 1500"):
        Index.build_on_disk(
            x, None, tmp_path / "n", fingerprint=FP, factory="IVF8,Flat", trained=trained
        )
    with pytest.raises(ValueError, match="not an IVF index"):
        Index.build_on_disk(x[:1000], None, tmp_path / "h", fingerprint=FP, factory="HNSW16")
    with pytest.raises(ValueError, match="fast-scan"):
        Index.build_on_disk(
            _clustered(2000, 16, 6), None, tmp_path / "f", fingerprint=FP, factory="IVF8,PQ8x4fs"
        )
    with pytest.raises(ValueError, match="2-D"):
        Index.build_on_disk(x[0], None, tmp_path / "d", fingerprint=FP)


# ---------------------------------------------------------------------- persistence
def test_save_load_round_trip_and_fingerprint(built, data, tmp_path: Path) -> None:
    _, q = data
    path = built.path
    manifest = json.loads((path / "index.json").read_text())
    assert manifest["format_version"] == 2 and IVFDATA_FILE in manifest["files"]
    assert manifest["factory"].endswith(",OnDisk")
    loaded = Index.load(path, expected_fingerprint=FP)
    assert loaded.on_disk and len(loaded) == N and loaded.factory == built.factory
    np.testing.assert_array_equal(loaded.search(q, 5).indices, built.search(q, 5).indices)
    with pytest.raises(FingerprintMismatch, match="another model"):
        Index.load(path, expected_fingerprint="other-model")
    with pytest.raises(ValueError, match="on-disk index"):
        loaded.add(q, None)
    # a copy elsewhere, then the directory moved: the lists file is found beside index.faiss
    loaded.set_search_params(nprobe=8)
    loaded.save(tmp_path / "copy")
    loaded.save(tmp_path / "copy")  # over itself
    os.rename(tmp_path / "copy", tmp_path / "moved")
    again = Index.load(tmp_path / "moved", expected_fingerprint=FP)
    assert again.search_params["nprobe"] == 8
    np.testing.assert_array_equal(again.search(q, 5).indices, built.search(q, 5, nprobe=8).indices)
    assert Index.load(path).search_params == built.search_params  # the original is untouched


def test_build_with_on_disk_factory_lives_in_scratch_until_saved(data, tmp_path: Path) -> None:
    x, q = data
    ix = Index.build(x[:3000], None, fingerprint=FP, factory="IVF16,SQ8,OnDisk")
    assert ix.on_disk and ix.path is None and ix.factory == "IVF16,SQ8,OnDisk"
    scratch = Path(ix.vectors.filename).parent.parent
    assert scratch.name.startswith("radalign-ondisk-")
    want = ix.search(q, 5).indices
    ix.save(tmp_path / "s")
    del ix
    gc.collect()
    assert not scratch.exists()
    np.testing.assert_array_equal(Index.load(tmp_path / "s").search(q, 5).indices, want)


def test_corrupt_or_missing_files_are_clear_errors(built, tmp_path: Path) -> None:
    import shutil

    def fresh(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(built.path, d)
        return d

    d = fresh("missing")
    (d / IVFDATA_FILE).unlink()
    with pytest.raises(IndexFormatError, match="missing file"):
        Index.load(d)
    d = fresh("flipped")
    with open(d / IVFDATA_FILE, "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        Index.load(d)
    Index.load(d, verify=False)  # sizes only: a flipped byte passes, as documented
    d = fresh("short")
    with open(d / IVFDATA_FILE, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        Index.load(d, verify=False)
    d = fresh("factory")
    m = json.loads((d / "index.json").read_text())
    m["factory"] = FACTORY
    (d / "index.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="disagree"):
        Index.load(d)
    d = fresh("nomanifest")
    (d / "index.json").unlink()
    with pytest.raises(IndexFormatError, match="missing index.json"):
        Index.load(d)


# ---------------------------------------------------------------------- search API
def test_retrieve_for_text_on_an_on_disk_index(tiny_model, tmp_path: Path) -> None:
    dim = int(tiny_model.config.embed_dim)
    x = _clustered(2000, dim, 7)
    meta = pd.DataFrame(
        {
            "id": [f"img{i}" for i in range(2000)],
            "study_id": [f"s{i // 2}" for i in range(2000)],
            "image_path": [f"/data/img{i}.png" for i in range(2000)],
        }
    )
    fp = tiny_model.fingerprint()
    od = Index.build_on_disk(x, meta, tmp_path / "od", fingerprint=fp, factory="IVF16,Flat")
    mem = Index.build(x, meta, fingerprint=fp, factory="IVF16,Flat")
    texts = ["no acute cardiopulmonary process", "small left pleural effusion"]
    got = retrieve_for_text(tiny_model, tmp_path / "od", texts, k=5, precision="fp32")
    want = retrieve_for_text(tiny_model, mem, texts, k=5, precision="fp32")
    assert len(got) == 10 and list(got["rank"][:5]) == [1, 2, 3, 4, 5]
    assert list(got["id"]) == list(want["id"]) and "image_path" in got.columns
    np.testing.assert_allclose(got["score"], want["score"], atol=1e-5)
    assert od.on_disk


# ---------------------------------------------------------------------- when to switch
def test_choose_index_switches_to_disk_when_ram_codes_do_not_fit() -> None:
    assert choose_index(1_000_000, 512) == "IVF4096,PQ64x8,RFlat"
    # 1M x 512 in-RAM IVF-PQ: 1M * 72 + 4096 * 512 * 4 + ... ~ 81 MB
    assert choose_index(1_000_000, 512, memory_budget_bytes=100 << 20) == "IVF4096,PQ64x8,RFlat"
    assert (
        choose_index(1_000_000, 512, memory_budget_bytes=50 << 20) == "IVF4096,PQ64x8,RFlat,OnDisk"
    )
    with pytest.warns(UserWarning, match="memory budget"):
        assert choose_index(1_000_000, 512, 50 << 20, on_disk=False) == "IVF4096,PQ64x8,RFlat"
    assert choose_index(3_000, 64, on_disk=True) == "IVF64,SQ8,RFlat,OnDisk"
    assert choose_index(100_000, 512, on_disk=True) == "IVF1024,PQ64x8,RFlat,OnDisk"
    with pytest.warns(UserWarning, match="memory budget"):  # even the quantiser is too big
        assert choose_index(1_000_000, 512, memory_budget_bytes=1 << 20).endswith(",OnDisk")
    assert split_storage("IVF64,PQ8x8,RFlat,OnDisk") == ("IVF64,PQ8x8,RFlat", True)
    assert split_storage("OnDisk") == ("", True)
    assert split_refine("IVF64,PQ8x8,RFlat,OnDisk") == ("IVF64,PQ8x8", True)
    lay = layout_bytes(10_000_000, 512, "IVF16384,PQ64x8,RFlat,OnDisk")
    assert lay == {"resident": ondisk_resident_bytes(512, 16384), "disk": 10_000_000 * 72}
    assert lay["resident"] == 16384 * 512 * 4 + 256 * 512 * 4 + 16384 * 24
    ram = layout_bytes(10_000_000, 512, "IVF16384,PQ64x8,RFlat")
    assert ram["resident"] == ram["disk"] == 10_000_000 * 72 + 16384 * 512 * 4 + 256 * 512 * 4
    assert layout_bytes(1000, 512, "Flat")["resident"] == 1000 * 512 * 4


def test_auto_on_disk_factory_through_build(tmp_path: Path) -> None:
    x = _clustered(3000, 32, 8)
    ix = Index.build_on_disk(x, None, tmp_path / "a", fingerprint=FP)  # factory chosen
    assert ix.factory == choose_index(3000, 32, on_disk=True) and ix.on_disk
    ix2 = Index.build(x, None, fingerprint=FP, factory="OnDisk")
    assert ix2.factory == ix.factory


# ---------------------------------------------------------------------- CLI
def test_cli_build_on_disk_and_info(tmp_path: Path, capsys) -> None:
    import argparse

    from radalign.data.synth import synthesize

    from radalign import cmd_index

    synthesize(tmp_path / "ph", n=16, seed=1, size=64, layouts=("jpg",))
    parser = argparse.ArgumentParser(prog="radalign")
    cmd_index.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "idx"
    common = ["--model", "tiny", "--source", str(tmp_path / "ph" / "jpg"), "--workers", "0"]
    args = parser.parse_args(["index", "build", *common, "--out", str(out), "--on-disk"])
    assert args.run(args) == 0
    ix = Index.load(out)
    assert ix.on_disk and ix.factory.endswith(",OnDisk") and len(ix) > 0
    assert "factory IVF" in capsys.readouterr().out
    args = parser.parse_args(["index", "info", str(out), "--json"])
    assert args.run(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["on_disk"] and info["file_bytes"][IVFDATA_FILE] > 0
    args = parser.parse_args(["index", "build", *common, "--out", "x", "--on-disk"])
    assert cmd_index._factory_option(args) == "OnDisk"
    args.factory = "IVF4,SQ8,RFlat"
    assert cmd_index._factory_option(args) == "IVF4,SQ8,RFlat,OnDisk"
