"""One kNN graph per modality, computed once with FAISS and reused by every embedding check.

Vectors are L2-normalised, so inner product is cosine similarity and the distance reported is
``1 - cos`` (0 for identical directions, up to 2). Up to ``exact_max`` rows the graph is exact
(``IndexFlatIP``, searched in chunks: O(n²·d) but BLAS-fast); above it an ``IndexIVFFlat`` with
``≈4·√n`` lists and ``nprobe`` probes is used, so each query scans ≈ ``nprobe·√n/4`` vectors and the
whole graph costs O(n^1.5·d) rather than O(n²·d). Rows without an embedding (any NaN) are left
out and get index -1 and distance inf.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

__all__ = ["KNNGraph", "knn_graph", "valid_rows"]


@dataclass
class KNNGraph:
    """``indices[i]`` (ascending distance, self excluded) are row numbers of the input array;
    ``distances`` are cosine distances; ``method`` is ``"exact"`` or ``"ivf"``."""

    distances: np.ndarray
    indices: np.ndarray
    method: str

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def valid_rows(x: np.ndarray | None) -> np.ndarray:
    """Boolean mask of rows with a finite, non-zero embedding."""
    if x is None:
        return np.zeros(0, dtype=bool)
    x = np.asarray(x)
    return np.isfinite(x).all(axis=1) & (np.abs(x).sum(axis=1) > 0)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    faiss.normalize_L2(x)
    return x


def knn_graph(
    x: np.ndarray,
    k: int = 10,
    *,
    exact_max: int = 20_000,
    chunk: int = 4096,
    nprobe: int = 16,
    seed: int = 0,
) -> KNNGraph:
    """The k nearest neighbours of every row of ``x`` (n × d) among the other rows."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {x.shape}")
    n = len(x)
    ok = valid_rows(x)
    rows = np.flatnonzero(ok)
    m = len(rows)
    dist = np.full((n, k), np.inf, dtype=np.float32)
    idx = np.full((n, k), -1, dtype=np.int64)
    if m < 2:
        return KNNGraph(dist, idx, "exact")
    v = _normalise(x[rows])
    kk = min(k + 1, m)
    if m <= exact_max:
        index = faiss.IndexFlatIP(v.shape[1])
        method = "exact"
    else:
        nlist = max(1, int(min(4 * np.sqrt(m), m / 39)))  # faiss wants ≥ 39 points per list
        quant = faiss.IndexFlatIP(v.shape[1])
        index = faiss.IndexIVFFlat(quant, v.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = v[rng.choice(m, size=min(m, 40 * nlist), replace=False)]
        index.train(train)
        index.nprobe = nprobe
        method = "ivf"
    index.add(v)
    for s in range(0, m, chunk):
        sims, nb = index.search(v[s : s + chunk], kk)
        for j in range(len(nb)):
            self_row = s + j
            keep = (nb[j] != self_row) & (nb[j] >= 0)
            # an exact duplicate may outrank the row itself: drop only one copy of self
            if keep.sum() == len(keep):
                keep[-1] = False
            got_i, got_s = nb[j][keep][:k], sims[j][keep][:k]
            out = rows[self_row]
            idx[out, : len(got_i)] = rows[got_i]
            dist[out, : len(got_i)] = np.clip(1.0 - got_s, 0.0, 2.0)
    return KNNGraph(dist, idx, method)
