"""Scaling of the audit's kNN graph, kNN outliers and near-duplicate stages on synthetic data.

Synthetic image embeddings (n × 512, 256 Gaussian clusters, 0.5 % planted near-copies) and 64-bit
perceptual hashes (0.5 % planted near-copies within 3 bits) at 12.5k, 25k, 50k and 100k rows. For
each stage it prints seconds and the exponent b of a fitted t ∝ n^b, and compares against a
brute-force quadratic baseline (full n × n similarity / pairwise Hamming) measured at the small
sizes in the same run and extrapolated as n². Also prints IVF recall@10 against exact search.

    OMP_NUM_THREADS=1 python benchmarks/audit_scaling.py [--sizes 12500 25000 50000 100000]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import faiss
import numpy as np
import pandas as pd
from radalign.audit.duplicates import check_duplicates, hash_pairs
from radalign.audit.knn import knn_graph
from radalign.audit.outliers import check_outliers


def embeddings(n: int, d: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, d)).astype(np.float32)
    x = centres[rng.integers(0, 256, n)] + 0.7 * rng.normal(size=(n, d)).astype(np.float32)
    copies = rng.choice(n, n // 200, replace=False)
    x[copies] = x[(copies + 1) % n] + 1e-3 * rng.normal(size=(len(copies), d)).astype(np.float32)
    return x


def hashes(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (n, 64), dtype=np.uint8)
    copies = rng.choice(n, n // 200, replace=False)
    bits[copies] = bits[(copies + 1) % n]
    bits[copies, rng.integers(0, 64, len(copies))] ^= 1
    return [b.tobytes().hex() for b in np.packbits(bits, axis=1)]


def brute_knn(x: np.ndarray, k: int = 10) -> float:
    t = time.perf_counter()
    v = x / np.linalg.norm(x, axis=1, keepdims=True)
    for s in range(0, len(v), 4096):
        sim = v[s : s + 4096] @ v.T
        np.argpartition(-sim, k + 1, axis=1)[:, : k + 1]
    return time.perf_counter() - t


def brute_hamming(hx: list[str]) -> float:
    t = time.perf_counter()
    x = np.stack([np.frombuffer(bytes.fromhex(h), np.uint8) for h in hx])
    index = faiss.IndexBinaryFlat(64)  # exhaustive (quadratic) popcount scan
    index.add(x)
    index.range_search(x, 5)
    return time.perf_counter() - t


def fit(ns, ts) -> float:
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[12500, 25000, 50000, 100000])
    ap.add_argument("--exact-max", type=int, default=20000)
    args = ap.parse_args()
    print(f"faiss {faiss.__version__}, threads {faiss.omp_get_max_threads()}")
    rows = []
    base_knn, base_ham = {}, {}
    for n in args.sizes:
        x = embeddings(n)
        hx = hashes(n)
        frame = pd.DataFrame(
            {
                "id": [f"r{i}" for i in range(n)],
                "image_path": [f"/img/{i}.png" for i in range(n)],
                "patient_id": [f"p{i}" for i in range(n)],
                "report": "",
            }
        )
        table = SimpleNamespace(frame=frame)
        stats = pd.DataFrame(
            {"image_path": frame["image_path"], "ok": True, "sha256": "", "phash": hx, "dhash": hx}
        )
        t = time.perf_counter()
        g = knn_graph(x, k=10, exact_max=args.exact_max)
        t_knn = time.perf_counter() - t
        t = time.perf_counter()
        out = check_outliers(table, x, None, k=10, image_knn=g)
        t_out = time.perf_counter() - t
        t = time.perf_counter()
        hp = hash_pairs(hx, 5)
        t_hash = time.perf_counter() - t
        t = time.perf_counter()
        dup = check_duplicates(table, stats, x, None, image_knn=g)
        t_dup = time.perf_counter() - t
        q = np.random.default_rng(1).choice(n, 500, replace=False)
        v = x / np.linalg.norm(x, axis=1, keepdims=True)
        sim = v[q] @ v.T
        sim[np.arange(len(q)), q] = -np.inf
        truth = np.argsort(-sim, axis=1)[:, :10]
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(g.indices[q], truth)])
        if n <= 25000:
            base_knn[n], base_ham[n] = brute_knn(x), brute_hamming(hx)
        rows.append(
            dict(
                n=n,
                method=g.method,
                knn_s=t_knn,
                outliers_s=t_out,
                hash_pairs_s=t_hash,
                duplicates_s=t_dup,
                recall10=recall,
                outliers=len(out),
                hash_pairs=len(hp),
                dup_sets=len(dup),
            )
        )
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    ns = df["n"].to_numpy(float)
    n0 = min(base_knn)
    df["brute_knn_s"] = [base_knn.get(n, base_knn[n0] * (n / n0) ** 2) for n in df["n"]]
    df["brute_ham_s"] = [base_ham.get(n, base_ham[n0] * (n / n0) ** 2) for n in df["n"]]
    df["knn_speedup"] = df["brute_knn_s"] / df["knn_s"]
    df["hash_speedup"] = df["brute_ham_s"] / df["hash_pairs_s"]
    pd.set_option("display.width", 200)
    print(df.round(3).to_string(index=False))
    print("brute-force rows beyond", max(base_knn), "are n²-extrapolated from", n0)
    big = df["n"] > args.exact_max
    for col in ("knn_s", "outliers_s", "hash_pairs_s", "duplicates_s"):
        sel = big if big.sum() >= 2 and col == "knn_s" else slice(None)
        print(
            f"scaling exponent {col}: {fit(ns[sel], df[col].to_numpy()[sel]):.2f}"
            + (" (IVF sizes)" if col == "knn_s" and big.sum() >= 2 else "")
        )
    print(
        f"scaling exponent brute knn (measured): {fit(list(base_knn), list(base_knn.values())):.2f}"
    )


if __name__ == "__main__":
    main()
