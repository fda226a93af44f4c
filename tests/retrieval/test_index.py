"""Tests for the embedding store / FAISS index and the index-choice rules."""

from __future__ import annotations

import json
import warnings

import faiss
import numpy as np
import pandas as pd
import pytest
from radalign.encoders.errors import InputError
from radalign.retrieval import index as index_mod
from radalign.retrieval.index import (
    DimensionMismatch,
    EmptyIndexError,
    FingerprintMismatch,
    Index,
    IndexFormatError,
)
from radalign.retrieval.index_choice import (
    choose_index,
    choose_nlist,
    default_search_params,
    pq_m_candidates,
    split_refine,
)

FP = "radalign-test-model@sha256:abc"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _random(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _clustered(n: int, dim: int, seed: int, n_clusters: int = 40, rank: int = 8) -> np.ndarray:
    """Gaussian mixture on the sphere: centre + low-rank spread + small noise (shared centres)."""
    crng = np.random.default_rng(1234)
    centres = _unit(crng.standard_normal((n_clusters, dim)))
    bases = crng.standard_normal((n_clusters, rank, dim)).astype(np.float32) / np.sqrt(dim)
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, n_clusters, n)
    z = rng.standard_normal((n, rank)).astype(np.float32)
    spread = np.einsum("nr,nrd->nd", z, bases[lab])
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (0.25 / np.sqrt(dim))
    return _unit(centres[lab] + 0.12 * spread + noise)


def _meta(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"s{i:05d}" for i in range(start, start + n)],
            "study_id": [f"st{i // 2}" for i in range(start, start + n)],
            "patient": np.arange(start, start + n, dtype=np.int64) // 3,
            "modality": ["image" if i % 2 else "report" for i in range(start, start + n)],
        }
    )


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


# ---------------------------------------------------------------------- choose_index
def test_choose_index_rules() -> None:
    assert choose_index(1_000, 512) == "Flat"
    assert choose_index(49_999, 512) == "Flat"
    assert choose_index(100_000, 512) == "HNSW32,Flat"
    assert choose_index(1_000_000, 512) == "IVF4096,PQ64x8,RFlat"
    assert choose_index(10_000_000, 768) == "IVF16384,PQ96x8,RFlat"
    # a budget too small for Flat / HNSW moves to compressed codes
    assert choose_index(30_000, 512, memory_budget_bytes=10 << 20).startswith("IVF")
    assert choose_index(100_000, 512, memory_budget_bytes=50 << 20) == "IVF1024,PQ64x8,RFlat"
    # tighter budget: the same codes, inverted lists on disk (tests/retrieval/test_ondisk_index.py)
    assert (
        choose_index(1_000_000, 512, memory_budget_bytes=50 << 20) == "IVF4096,PQ64x8,RFlat,OnDisk"
    )
    assert choose_index(5_000, 512, memory_budget_bytes=3 << 20) == "SQ8,RFlat"
    with pytest.warns(UserWarning, match="memory budget"):
        assert choose_index(1_000_000, 512, memory_budget_bytes=1000).startswith("IVF4096,PQ64x8")
    with pytest.raises(ValueError, match="empty"):
        choose_index(0, 512)


def test_choose_index_helpers() -> None:
    assert choose_nlist(1_000_000) == 4096
    assert choose_nlist(100) == 2  # clamped to n // 39 training points per centroid
    assert pq_m_candidates(512)[:3] == [64, 32, 16]
    assert all(100 % m == 0 for m in pq_m_candidates(100)) and pq_m_candidates(100)[0] == 10
    assert pq_m_candidates(4) == [1]
    assert split_refine("IVF64,PQ8x8,RFlat") == ("IVF64,PQ8x8", True)
    assert split_refine("IVF64,PQ8x8,Refine(Flat)") == ("IVF64,PQ8x8", True)
    assert split_refine("HNSW32") == ("HNSW32", False)
    assert default_search_params("Flat") == {}
    assert default_search_params("HNSW32,Flat") == {"efSearch": 128}
    p = default_search_params("IVF4096,PQ64x8,RFlat")
    assert p["k_factor"] >= 1 and 8 <= p["nprobe"] <= 4096
    assert default_search_params("IVF64,Flat")["nprobe"] == 16
    for n, dim in [(1_000, 64), (100_000, 512), (2_000_000, 512), (20_000, 100)]:
        f = choose_index(n, dim, memory_budget_bytes=500 << 20)
        faiss.index_factory(dim, split_refine(f)[0], faiss.METRIC_INNER_PRODUCT)  # valid string


# ---------------------------------------------------------------------- exact search
def test_flat_matches_bruteforce() -> None:
    x, q = _random(2000, 32, 0), _random(50, 32, 1)
    ix = Index.build(x, _meta(2000), fingerprint=FP)
    assert ix.factory == "Flat" and len(ix) == 2000 and ix.dim == 32
    res = ix.search(q, 10)
    assert res.scores.shape == (50, 10) and res.scores.dtype == np.float32
    assert res.indices.dtype == np.int64
    sims = _unit(q) @ _unit(x).T
    expected = np.argsort(-sims, axis=1)[:, :10]
    np.testing.assert_array_equal(res.indices, expected)
    np.testing.assert_allclose(res.scores, np.take_along_axis(sims, expected, 1), atol=1e-5)
    assert res.ids[0] == [f"s{i:05d}" for i in expected[0]]
    np.testing.assert_allclose(np.linalg.norm(ix.vectors, axis=1), 1.0, atol=1e-6)


def test_single_query_frame_and_lookup() -> None:
    x = _random(300, 16, 2)
    ix = Index.build(x, _meta(300).to_dict("records"), fingerprint=FP)
    res = ix.search(x[7], 5)
    assert res.indices.shape == (1, 5) and res.indices[0, 0] == 7 and len(res) == 1
    frame = res.frame(0)
    assert list(frame["id"]) == res.ids[0]
    assert {"rank", "score", "study_id", "modality"} <= set(frame.columns)
    assert frame["score"].is_monotonic_decreasing
    got = ix.lookup(["s00010", "s00003"])
    assert list(got["id"]) == ["s00010", "s00003"] and list(got.index) == [10, 3]
    with pytest.raises(KeyError, match="nope"):
        ix.lookup(["s00001", "nope"])


def test_normalize_false_keeps_raw_vectors() -> None:
    x = _random(100, 8, 3) * 5
    ix = Index.build(x, None, fingerprint=FP, normalize=False)
    np.testing.assert_array_equal(ix.vectors, x)
    res = ix.search(x[:3], 4)
    np.testing.assert_array_equal(res.indices, np.argsort(-(x[:3] @ x.T), axis=1)[:, :4])
    assert ix.metadata["id"].tolist()[:3] == ["0", "1", "2"]


# ---------------------------------------------------------------------- persistence
def test_save_load_roundtrip(tmp_path) -> None:
    x, q = _random(500, 24, 4), _random(20, 24, 5)
    ix = Index.build(x, _meta(500), fingerprint=FP)
    before = ix.search(q, 7)
    path = ix.save(tmp_path / "idx")
    assert sorted(p.name for p in path.iterdir()) == [
        "index.faiss",
        "index.json",
        "metadata.parquet",
        "vectors.npy",
    ]
    manifest = json.loads((path / "index.json").read_text())
    assert manifest["n"] == 500 and manifest["dim"] == 24 and manifest["factory"] == "Flat"
    assert manifest["fingerprint"] == FP and manifest["metric"] == "inner_product"
    assert manifest["normalize"] is True and manifest["format_version"] == 1
    assert set(manifest["files"]) == {"vectors.npy", "index.faiss", "metadata.parquet"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())

    loaded = Index.load(path, expected_fingerprint=FP)
    assert isinstance(loaded.vectors, np.memmap)
    np.testing.assert_array_equal(loaded.vectors, ix.vectors)
    pd.testing.assert_frame_equal(loaded.metadata, ix.metadata)
    after = loaded.search(q, 7)
    np.testing.assert_array_equal(after.indices, before.indices)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert after.ids == before.ids
    # saving over the directory it was loaded from works (old files swapped out)
    loaded.add(_random(5, 24, 6), _meta(5, start=500))
    loaded.save(path)
    assert len(Index.load(path)) == 505


def test_save_failure_leaves_previous_index(tmp_path, monkeypatch) -> None:
    x = _random(50, 8, 7)
    path = Index.build(x, None, fingerprint=FP).save(tmp_path / "idx")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(index_mod.faiss, "write_index", boom)
    with pytest.raises(OSError, match="disk full"):
        Index.build(x[:10], None, fingerprint=FP).save(path)
    with pytest.raises(OSError):
        Index.build(x[:10], None, fingerprint=FP).save(tmp_path / "new")
    monkeypatch.undo()
    assert len(Index.load(path)) == 50
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temp leftovers


def test_half_written_directory_refused(tmp_path) -> None:
    path = Index.build(_random(50, 8, 8), None, fingerprint=FP).save(tmp_path / "idx")
    (path / "index.json").unlink()
    with pytest.raises(IndexFormatError, match="missing index.json") as e:
        Index.load(path)
    assert isinstance(e.value, InputError) and e.value.reason == "missing index.json"
    with pytest.raises(FileNotFoundError):
        Index.load(tmp_path / "absent")


def test_corrupt_vectors_refused(tmp_path) -> None:
    path = Index.build(_random(50, 8, 9), None, fingerprint=FP).save(tmp_path / "idx")
    raw = bytearray((path / "vectors.npy").read_bytes())
    raw[-3] ^= 0xFF  # flip one byte, same size
    (path / "vectors.npy").write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match=r"checksum mismatch.*vectors\.npy"):
        Index.load(path)
    Index.load(path, verify=False)  # sizes only: the caller opted out of hashing
    (path / "vectors.npy").write_bytes(bytes(raw[:-10]))  # truncated
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        Index.load(path, verify=False)


def test_bad_manifest_refused(tmp_path) -> None:
    path = Index.build(_random(50, 8, 10), None, fingerprint=FP).save(tmp_path / "idx")
    (path / "index.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="invalid index.json"):
        Index.load(path)


def test_fingerprint_mismatch_refused(tmp_path) -> None:
    path = Index.build(_random(50, 8, 11), None, fingerprint="model-A").save(tmp_path / "idx")
    with pytest.raises(FingerprintMismatch) as e:
        Index.load(path, expected_fingerprint="model-B")
    msg = str(e.value)
    assert "model-A" in msg and "model-B" in msg and "another model" in msg
    assert isinstance(e.value, ValueError)
    assert Index.load(path, expected_fingerprint="model-A").fingerprint == "model-A"


# ---------------------------------------------------------------------- add
def test_add_equals_fresh_build_flat(tmp_path) -> None:
    x, q = _random(1000, 16, 12), _random(30, 16, 13)
    meta = _meta(1000)
    fresh = Index.build(x, meta, fingerprint=FP)
    grown = Index.build(x[:700], meta.iloc[:700], fingerprint=FP)
    grown.add(x[700:], meta.iloc[700:])
    a, b = fresh.search(q, 10), grown.search(q, 10)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.ids == b.ids
    pd.testing.assert_frame_equal(fresh.metadata, grown.metadata)
    p1, p2 = fresh.save(tmp_path / "a"), grown.save(tmp_path / "b")
    assert (p1 / "vectors.npy").read_bytes() == (p2 / "vectors.npy").read_bytes()
    pd.testing.assert_frame_equal(Index.load(p1).metadata, Index.load(p2).metadata)


def test_empty_index_then_add_equals_build() -> None:
    x = _random(200, 12, 14)
    empty = Index.empty(12, fingerprint=FP)
    assert len(empty) == 0
    with pytest.raises(EmptyIndexError, match="empty"):
        empty.search(x[0], 1)
    empty.add(x[:120], _meta(120)).add(x[120:], _meta(80, start=120))
    fresh = Index.build(x, _meta(200), fingerprint=FP)
    np.testing.assert_array_equal(empty.search(x[:5], 5).indices, fresh.search(x[:5], 5).indices)
    pd.testing.assert_frame_equal(empty.metadata, fresh.metadata)
    with pytest.raises(ValueError, match="trained"):
        Index.empty(12, fingerprint=FP, factory="IVF16,Flat")


# ---------------------------------------------------------------------- approximate indices
@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, q = _clustered(20_000, 64, seed=0), _clustered(200, 64, seed=1)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    return x, q, truth


def test_hnsw_recall(corpus) -> None:
    x, q, truth = corpus
    ix = Index.build(x, None, fingerprint=FP, factory="HNSW32,Flat")
    assert ix.search_params == {"efSearch": 128}
    assert _recall(ix.search(q, 10).indices, truth) >= 0.95


def test_ivfpq_refine_recall_add_and_roundtrip(corpus, tmp_path) -> None:
    x, q, truth = corpus
    factory = "IVF256,PQ8x8,RFlat"
    ix = Index.build(x[:15_000], None, fingerprint=FP, factory=factory, train_sample=10_000)
    ix.add(x[15_000:], None)  # appended without retraining
    assert len(ix) == 20_000 and ix.metadata["id"].iloc[-1] == "19999"
    res = ix.search(q, 10)
    assert _recall(res.indices, truth) >= 0.9
    # scores are exact after re-ranking
    np.testing.assert_allclose(
        res.scores, np.einsum("qd,qkd->qk", q, x[res.indices]), rtol=1e-5, atol=1e-5
    )
    # per-call overrides: probing every list with a deep re-rank is near exact
    wide = ix.search(q, 10, nprobe=256, k_factor=32)
    assert _recall(wide.indices, truth) >= 0.98
    narrow = ix.search(q, 10, nprobe=1, k_factor=1)
    assert _recall(narrow.indices, truth) < _recall(wide.indices, truth)
    assert ix.search_params == default_search_params(factory)  # overrides do not stick
    # self-retrieval of added vectors
    added = ix.search(x[19_990:], 1)
    np.testing.assert_array_equal(added.indices[:, 0], np.arange(19_990, 20_000))
    ix.set_search_params(nprobe=32)
    loaded = Index.load(ix.save(tmp_path / "ivf"))
    assert loaded.search_params == {**default_search_params(factory), "nprobe": 32}
    np.testing.assert_array_equal(loaded.search(q, 10).indices, ix.search(q, 10).indices)
    assert loaded.index_bytes() < x.nbytes / 4


def test_threads_argument_restores_setting() -> None:
    before = faiss.omp_get_max_threads()
    ix = Index.build(_random(100, 8, 15), None, fingerprint=FP, threads=1)
    ix.search(_random(3, 8, 16), 2, threads=1)
    assert faiss.omp_get_max_threads() == before


# ---------------------------------------------------------------------- bad input
def test_bad_inputs_give_clear_errors() -> None:
    x = _random(20, 8, 17)
    with pytest.raises(EmptyIndexError, match="0 vectors"):
        Index.build(np.zeros((0, 8), np.float32), [], fingerprint=FP)
    ix = Index.build(x, _meta(20), fingerprint=FP)
    with pytest.raises(DimensionMismatch, match="got 16, index has 8"):
        ix.search(_random(2, 16, 18), 3)
    with pytest.raises(ValueError, match=r"k=21 is larger than the index \(20 vectors\)"):
        ix.search(x[:1], 21)
    with pytest.raises(ValueError, match="positive"):
        ix.search(x[:1], 0)
    with pytest.raises(ValueError, match="already in the index"):
        ix.add(x[:2], _meta(2))
    with pytest.raises(ValueError, match="duplicate ids"):
        Index.build(x[:2], [{"id": "a"}, {"id": "a"}], fingerprint=FP)
    with pytest.raises(ValueError, match="length mismatch: 20 vectors, 5 metadata rows"):
        Index.build(x, _meta(5), fingerprint=FP)
    with pytest.raises(ValueError, match="'id' column"):
        Index.build(x[:2], [{"path": "a"}, {"path": "b"}], fingerprint=FP)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN.*row 3"):
        Index.build(bad, _meta(20), fingerprint=FP)
    with pytest.raises(ValueError, match="NaN"):
        ix.search(bad[3], 2)
    with pytest.raises(ValueError, match="all-zero"):
        Index.build(np.zeros((2, 8), np.float32), None, fingerprint=FP)
    with pytest.raises(DimensionMismatch):
        ix.add(_random(2, 4, 19), None)
    with pytest.raises(ValueError, match="FAISS cannot build"):
        Index.build(x, None, fingerprint=FP, factory="NotAnIndex")
    with pytest.raises(ValueError, match="too few vectors"):
        Index.build(x, None, fingerprint=FP, factory="IVF64,Flat")
    assert len(ix) == 20  # failed adds left the index untouched


def test_no_warnings_on_normal_use() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ix = Index.build(_random(100, 8, 20), _meta(100), fingerprint=FP)
        ix.search(_random(2, 8, 21), 3).frame(1)
