"""Index speed: build time, size, queries/s and recall@10 of FAISS index types vs exact (Flat).

Synthetic corpus: a Gaussian mixture on the unit sphere shaped like real embeddings (cluster
centres plus a low-rank within-cluster spread plus small isotropic noise), L2-normalised; the
queries are fresh draws from the same mixture.  For each corpus size the Flat index gives the
exact top-10 (the baseline); every other index type reports its speed-up over Flat and its
recall@10 against it, at its default search params and over a small sweep of nprobe / efSearch /
k_factor.

    python benchmarks/index_speed.py                    # 100k and 1M, 512-d
    python benchmarks/index_speed.py --sizes 100000     # one size
    python benchmarks/index_speed.py --quick            # 20k, small sweep (smoke run)

Appends one JSON line per corpus size to ``benchmarks/results/index_speed.jsonl``.

No bf16 row: FAISS stores and searches float32 vectors (radalign writes float32 embeddings
whatever precision the encoders ran in), and this benchmark embeds no queries; the query side's
bf16 speed is ``embed_speed.py``'s bf16 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from radalign.retrieval.index import Index
from radalign.retrieval.index_choice import choose_index, choose_nlist, pq_m_candidates

RESULTS = Path(__file__).resolve().parent / "results" / "index_speed.jsonl"
BF16_NOTE = (
    "not applicable: FAISS stores and searches float32 vectors; the bf16 query-embedding "
    "speed is in embed_speed.py"
)
_PARAM = {"ef_search": "efSearch"}


def clustered(
    n: int, dim: int, *, n_clusters: int, rank: int = 16, seed: int = 0, centres_seed: int = 0
) -> np.ndarray:
    """``n`` unit vectors: centre + low-rank spread + isotropic noise, float32."""
    crng = np.random.default_rng(centres_seed)
    centres = crng.standard_normal((n_clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = crng.standard_normal((n_clusters, rank, dim), dtype=np.float32) / np.sqrt(dim)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_clusters, size=n)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
    x = np.empty((n, dim), dtype=np.float32)
    for c in range(n_clusters):
        rows = order[bounds[c] : bounds[c + 1]]
        if len(rows) == 0:
            continue
        z = rng.standard_normal((len(rows), rank), dtype=np.float32)
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32)
        x[rows] = centres[c] + 0.12 * (z @ bases[c]) + (0.25 / np.sqrt(dim)) * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / (len(truth) * k)


def append_result(path: Path, record: dict) -> None:
    """Append ``record`` as one JSON line to the results file ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def timed_search(index: Index, q: np.ndarray, k: int, **kw: int) -> tuple[np.ndarray, float]:
    index.search(q[: min(len(q), 16)], k, **kw)  # warm-up (page cache, lazy tables)
    t = time.perf_counter()
    res = index.search(q, k, **kw)
    return res.indices, time.perf_counter() - t


def run_size(n: int, args: argparse.Namespace) -> dict:
    dim, k = args.dim, 10
    t0 = time.perf_counter()
    n_clusters = max(10, n // 1000)
    x = clustered(n, dim, n_clusters=n_clusters, seed=1)
    q = clustered(args.queries, dim, n_clusters=n_clusters, seed=2)
    gen_s = time.perf_counter() - t0
    print(f"\n== n={n} dim={dim} queries={len(q)} (generated in {gen_s:.1f}s)", flush=True)

    rows: list[dict] = []
    t = time.perf_counter()
    flat = Index.build(x, None, fingerprint="bench", factory="Flat", normalize=False)
    flat_build = time.perf_counter() - t
    truth, flat_s = timed_search(flat, q, k)
    flat_qps = len(q) / flat_s
    flat_bytes = flat.index_bytes()
    rows.append(
        dict(
            factory="Flat",
            params={},
            build_s=flat_build,
            index_bytes=flat_bytes,
            qps=flat_qps,
            speedup=1.0,
            recall_at_10=1.0,
            size_ratio=1.0,
            default=True,
        )
    )
    print(
        f"Flat: build {flat_build:.1f}s, {flat_qps:.1f} q/s, {flat_bytes / 2**20:.0f} MiB",
        flush=True,
    )
    del flat
    print(f"bf16: {BF16_NOTE}", flush=True)

    nlist = choose_nlist(n)
    m8 = pq_m_candidates(dim)[0]
    variants: list[tuple[str, list[dict]]] = []
    if not args.skip_hnsw:
        variants.append(("HNSW32,Flat", [{"ef_search": e} for e in args.ef_sweep]))
    ivf_sweep = [{"nprobe": p, "k_factor": f} for p in args.nprobe_sweep for f in args.kf_sweep]
    variants.append((f"IVF{nlist},PQ{m8}x8,RFlat", ivf_sweep))
    if not args.skip_fastscan:
        variants.append((f"IVF{nlist},PQ{dim // 2}x4fs,RFlat", ivf_sweep))

    for factory, sweep in variants:
        t = time.perf_counter()
        index = Index.build(
            x,
            None,
            fingerprint="bench",
            factory=factory,
            normalize=False,
            train_sample=args.train_sample,
        )
        build_s = time.perf_counter() - t
        nbytes = index.index_bytes()
        for kw in [{}] + sweep:
            found, s = timed_search(index, q, k, **kw)
            qps = len(q) / s
            row = dict(
                factory=factory,
                params={**index.search_params, **{_PARAM.get(a, a): v for a, v in kw.items()}},
                build_s=build_s,
                index_bytes=nbytes,
                qps=qps,
                speedup=qps / flat_qps,
                recall_at_10=recall_at(found, truth),
                size_ratio=nbytes / flat_bytes,
                default=not kw,
            )
            rows.append(row)
            print(
                f"{factory:28s} {json.dumps(row['params']):44s} build {build_s:7.1f}s  "
                f"{nbytes / 2**20:8.1f} MiB ({row['size_ratio']:.3f}x)  {qps:9.1f} q/s "
                f"({row['speedup']:6.1f}x)  recall@10 {row['recall_at_10']:.4f}",
                flush=True,
            )
        del index

    good = [r for r in rows if r["recall_at_10"] >= 0.95 and r["factory"] != "Flat"]
    best = max(good, key=lambda r: r["speedup"]) if good else None
    if best:
        print(
            f"fastest with recall@10 >= 0.95: {best['factory']} {best['params']} "
            f"{best['speedup']:.1f}x flat, recall {best['recall_at_10']:.4f}",
            flush=True,
        )
    return dict(
        bench="index_speed",
        time=time.strftime("%Y-%m-%dT%H:%M:%S"),
        host=platform.node(),
        cpus=os.cpu_count(),
        faiss_threads=faiss.omp_get_max_threads(),
        faiss=faiss.__version__,
        n=n,
        dim=dim,
        queries=len(q),
        k=k,
        chosen_factory=choose_index(n, dim),
        baseline="Flat",
        rows=rows,
        best_at_recall_095=best,
        bf16=BF16_NOTE,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--train-sample", type=int, default=200_000)
    ap.add_argument("--nprobe-sweep", type=int, nargs="*", default=[8, 16, 32, 64, 128])
    ap.add_argument("--kf-sweep", type=int, nargs="*", default=[4, 8, 16])
    ap.add_argument("--ef-sweep", type=int, nargs="*", default=[32, 64, 128, 256])
    ap.add_argument("--skip-hnsw", action="store_true")
    ap.add_argument("--skip-fastscan", action="store_true")
    ap.add_argument("--quick", action="store_true", help="20k vectors, 200 queries, small sweep")
    ap.add_argument("--no-write", action="store_true", help="do not append to the results file")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.queries = [20_000], 200
        args.nprobe_sweep, args.kf_sweep, args.ef_sweep = [16], [8], [64]
    for n in args.sizes:
        record = run_size(n, args)
        if not args.no_write:
            append_result(RESULTS, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
