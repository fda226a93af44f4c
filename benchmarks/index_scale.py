"""Index scale: IVF-PQ with on-disk inverted lists vs the same index in RAM, 100k -> 1M -> 10M.

Synthetic clustered unit vectors (``index_speed.clustered``, d=512) are written to a ``.npy``
file; one IVF-PQ quantiser per size (``choose_index``'s nlist and m, trained once on
``--train-sample`` vectors, shared by both layouts so they hold identical codes) then gets the
vectors added two ways, each in its own process so peak memory is its own:

* **memory** (baseline): the whole matrix loaded, ``faiss`` add, lists in RAM
  (``IVF...,PQ64x8,RFlat``);
* **ondisk**: :meth:`radalign.retrieval.index.Index.build_on_disk` reading the file in chunks
  (plain reads, no mmap), lists in ``index.ivfdata`` (``...,OnDisk``).

A third process per layout loads the saved index and runs the queries: cold (the index's files
evicted from the page cache with ``posix_fadvise(DONTNEED)``, only those files) and warm, one
query at a time (latency) and as one batch (throughput); recall@10 is against exact search over
all vectors (chunked matmul, also the latency baseline "exact").  Memory: ``VmHWM`` (peak
resident, file pages included), ``RssAnon`` (heap) and ``RssFile`` (mapped file pages, which the
OS can evict) from ``/proc/self/status``.

The 10M row is extrapolated from the largest measured size (10M x 512 float32 is 20 GB of input
plus 20 GB of ``vectors.npy``, more than this machine's free disk, and ~40 min of adds here): add
time, disk and the in-RAM build's peak heap scale with n; the on-disk build's peak heap does not
(training sample + one block of codes); resident memory is the formula (``layout_bytes``); warm
query time scales with the codes scanned per query (``n * nprobe / nlist + nlist``, with 10M's
default nlist and nprobe); cold query time adds the measured cold-warm gap scaled by the 4 KiB
pages a query reads (``k * k_factor`` re-ranked rows of ``vectors.npy``, plus the probed lists on
disk).  Training is timed once per size; it grows with ``train_sample * nlist`` (the default
``--train-sample`` 50k is below FAISS's 39 points per centroid at 1M, to keep the run short).
``--sizes 100000 300000`` is a shorter run; ``--reextrapolate`` recomputes the last record's
extrapolation.

    nice -n 19 python benchmarks/index_scale.py                   # 100k, 300k, 1M
    python benchmarks/index_scale.py --sizes 20000 50000 --queries 50   # smoke run

Appends one JSON line to ``benchmarks/results/index_scale.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_speed import append_result, clustered, recall_at  # noqa: E402
from radalign.retrieval.index import Index, train_index  # noqa: E402
from radalign.retrieval.index_choice import (  # noqa: E402
    DEFAULT_K_FACTOR,
    choose_nlist,
    default_nprobe,
    layout_bytes,
    ondisk_resident_bytes,
    pq_m_candidates,
)

RESULTS = Path(__file__).resolve().parent / "results" / "index_scale.jsonl"
K = 10
_CHUNK = 16_384


# ---------------------------------------------------------------------- measurements
def proc_status() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process in bytes (Linux)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class AnonPeak:
    """Peak ``RssAnon`` (heap, no file pages), sampled every 20 ms in a background thread."""

    def __init__(self) -> None:
        import threading

        self.peak = proc_status()["RssAnon"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, proc_status()["RssAnon"])

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, proc_status()["RssAnon"])


def evict(path: Path) -> None:
    """Drop the page-cache pages of the files under ``path`` (and only those)."""
    for f in path.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def dir_bytes(path: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(path.iterdir())}


def file_chunks(src: Path):
    """A re-readable chunk source over a .npy file using plain reads (no memory map)."""
    arr = np.load(src, mmap_mode="r")
    n, dim = arr.shape
    offset = arr.offset
    del arr

    def read():
        with open(src, "rb") as fh:
            fh.seek(offset)
            for s in range(0, n, _CHUNK):
                rows = min(_CHUNK, n - s)
                yield np.fromfile(fh, dtype=np.float32, count=rows * dim).reshape(rows, dim)

    return read


# ---------------------------------------------------------------------- child processes
def child(args: argparse.Namespace) -> None:
    work = Path(args.work)
    cfg = json.loads((work / "config.json").read_text())
    factory, out = cfg["factory"], work / args.child.split("-")[1]
    if args.child.startswith("build"):
        trained = faiss.read_index(str(work / "trained.faiss"))
        peak = AnonPeak()
        t = time.perf_counter()
        if args.child == "build-ondisk":
            ix = Index.build_on_disk(
                file_chunks(work / "x.npy"),
                None,
                out,
                fingerprint="bench",
                factory=factory,
                normalize=False,
                trained=trained,
            )
            add_s = time.perf_counter() - t
            save_s = 0.0  # build_on_disk writes as it goes
        else:
            x = np.load(work / "x.npy")
            index = faiss.clone_index(trained)
            for s in range(0, len(x), 4 * _CHUNK):
                index.add(x[s : s + 4 * _CHUNK])
            ix = Index(
                faiss_index=index,
                vectors=x,
                metadata=_ids(len(x)),
                factory=factory,
                fingerprint="bench",
                normalize=False,
                search_params={"nprobe": cfg["nprobe"], "k_factor": 16},
            )
            add_s = time.perf_counter() - t
            t = time.perf_counter()
            ix.save(out)
            save_s = time.perf_counter() - t
        rec = {
            "add_s": add_s,
            "save_s": save_s,
            "peak_anon": peak.stop(),
            **proc_status(),
            "files": dir_bytes(out),
        }
    else:
        q = np.load(work / "q.npy")
        truth = np.load(work / "truth.npy")
        evict(out)
        t = time.perf_counter()
        ix = Index.load(out, verify=False)
        load_s = time.perf_counter() - t
        after_load = proc_status()
        ix.set_search_params(nprobe=cfg["nprobe"])
        found = np.empty_like(truth)
        lat = []
        for i in range(len(q)):  # cold: lists and re-rank rows come from disk
            t = time.perf_counter()
            found[i] = ix.search(q[i], K).indices[0]
            lat.append(time.perf_counter() - t)
        cold = float(np.median(lat))
        lat = []
        for i in range(len(q)):
            t = time.perf_counter()
            ix.search(q[i], K)
            lat.append(time.perf_counter() - t)
        warm = float(np.median(lat))
        t = time.perf_counter()
        batch = ix.search(q, K).indices
        qps = len(q) / (time.perf_counter() - t)
        rec = {
            "load_s": load_s,
            "after_load": after_load,
            "after_queries": proc_status(),
            "cold_ms": 1e3 * cold,
            "warm_ms": 1e3 * warm,
            "batch_qps": qps,
            "recall_at_10": recall_at(batch, truth),
            "recall_at_10_cold": recall_at(found, truth),
            "on_disk": ix.on_disk,
            "index_bytes": ix.index_bytes(),
        }
    print("RESULT " + json.dumps(rec), flush=True)


def _ids(n: int):
    import pandas as pd

    return pd.DataFrame({"id": np.arange(n).astype(str)})


def run_child(mode: str, work: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--child", mode, "--work", str(work)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# ---------------------------------------------------------------------- parent
def exact_topk(x: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact top-K by inner product, chunked over ``x``; returns (indices, seconds)."""
    t = time.perf_counter()
    best_s = np.full((len(q), K), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), K), -1, dtype=np.int64)
    for s in range(0, len(x), 4 * _CHUNK):
        sc = q @ x[s : s + 4 * _CHUNK].T
        cand_s = np.concatenate([best_s, sc], axis=1)
        cand_i = np.concatenate(
            [best_i, np.broadcast_to(np.arange(s, s + sc.shape[1]), sc.shape)], axis=1
        )
        top = np.argpartition(-cand_s, K - 1, axis=1)[:, :K]
        best_s = np.take_along_axis(cand_s, top, 1)
        best_i = np.take_along_axis(cand_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1), time.perf_counter() - t


def run_size(n: int, args: argparse.Namespace) -> dict:
    dim = args.dim
    work = Path(args.workdir) / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n_clusters = max(10, n // 1000)
    x = clustered(n, dim, n_clusters=n_clusters, seed=1)
    q = clustered(args.queries, dim, n_clusters=n_clusters, seed=2)
    np.save(work / "x.npy", x)
    np.save(work / "q.npy", q)
    truth, exact_s = exact_topk(x, q)
    np.save(work / "truth.npy", truth)
    nlist, m = choose_nlist(n), pq_m_candidates(dim)[0]
    nprobe = default_nprobe(nlist)
    factory = f"IVF{nlist},PQ{m}x8,RFlat"
    (work / "config.json").write_text(json.dumps({"factory": factory, "nprobe": nprobe}))
    print(f"\n== n={n} dim={dim} {factory} nprobe={nprobe}", flush=True)

    rows = np.sort(np.random.default_rng(0).choice(n, min(n, args.train_sample), replace=False))
    t = time.perf_counter()
    trained = train_index(factory, x[rows], normalize=False)
    train_s = time.perf_counter() - t
    faiss.write_index(trained, str(work / "trained.faiss"))
    del x, trained
    print(f"train on {len(rows)} vectors: {train_s:.1f}s; exact search {exact_s:.2f}s", flush=True)

    rec: dict = {
        "n": n,
        "factory": factory,
        "nlist": nlist,
        "nprobe": nprobe,
        "train_sample": len(rows),
        "train_s": train_s,
        "exact_ms_per_query_batched": 1e3 * exact_s / len(q),
    }
    for layout in ("memory", "ondisk"):
        b = run_child(f"build-{layout}", work, args.threads)
        s = run_child(f"search-{layout}", work, args.threads)
        rec[layout] = {"build": b, "search": s}
        print(
            f"{layout:6s}: add {b['add_s']:6.1f}s (+save {b['save_s']:.1f}s, "
            f"{1e6 * (b['add_s'] + b['save_s']) / n:.0f} us/vector)  build peak anon "
            f"{b['peak_anon'] / 2**20:6.0f} MiB (VmHWM {b['VmHWM'] / 2**20:.0f})  disk "
            f"{sum(b['files'].values()) / 2**20:7.0f} MiB  | loaded: anon "
            f"{s['after_load']['RssAnon'] / 2**20:.0f} MiB, after queries anon "
            f"{s['after_queries']['RssAnon'] / 2**20:.0f} + file "
            f"{s['after_queries']['RssFile'] / 2**20:.0f} MiB  | cold {s['cold_ms']:.2f} ms, "
            f"warm {s['warm_ms']:.2f} ms/query, batch {s['batch_qps']:.0f} q/s, "
            f"recall@10 {s['recall_at_10']:.4f}",
            flush=True,
        )
    mem, od = rec["memory"], rec["ondisk"]
    rec["ratios_ondisk_vs_memory"] = {
        "add_s": od["build"]["add_s"] / (mem["build"]["add_s"] + mem["build"]["save_s"]),
        "build_peak_anon": od["build"]["peak_anon"] / mem["build"]["peak_anon"],
        "loaded_anon": od["search"]["after_load"]["RssAnon"]
        / mem["search"]["after_load"]["RssAnon"],
        "warm_latency": od["search"]["warm_ms"] / mem["search"]["warm_ms"],
        "cold_latency": od["search"]["cold_ms"] / mem["search"]["cold_ms"],
    }
    rec["speedup_vs_exact_batched"] = {
        lay: rec[lay]["search"]["batch_qps"] * rec["exact_ms_per_query_batched"] / 1e3
        for lay in ("memory", "ondisk")
    }
    print(
        "on-disk / in-RAM: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in rec["ratios_ondisk_vs_memory"].items())
        + "; batched speed-up vs exact: "
        + ", ".join(f"{k} {v:.1f}x" for k, v in rec["speedup_vs_exact_batched"].items()),
        flush=True,
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return rec


def pages_per_query(n: int, nlist: int, nprobe: int, m: int, on_disk: bool) -> int:
    """4 KiB pages a cold query reads: one per re-ranked row (``k * k_factor`` rows of
    ``vectors.npy``) plus, on disk, the probed lists (``n / nlist`` codes of ``m + 8`` bytes)."""
    rows = K * DEFAULT_K_FACTOR
    return rows + (nprobe * math.ceil(n / nlist * (m + 8) / 4096) if on_disk else 0)


def extrapolate(rows: list[dict], n: int, dim: int) -> dict:
    """Predicted numbers at ``n`` from the largest measured size (method in the module doc)."""
    top = max(rows, key=lambda r: r["n"])
    nlist = choose_nlist(n)
    nprobe = default_nprobe(nlist)
    m = pq_m_candidates(dim)[0]
    factory = f"IVF{nlist},PQ{m}x8,RFlat"
    scan = (n * nprobe / nlist + nlist) / (top["n"] * top["nprobe"] / top["nlist"] + top["nlist"])
    grow = n / top["n"]
    out = {
        "n": n,
        "from_n": top["n"],
        "factory": factory,
        "nprobe": nprobe,
        "method": f"from n={top['n']}: add time and disk x n ratio ({grow:g}); peak heap of the "
        "in-RAM build x n ratio, of the on-disk build unchanged (training sample + one block); "
        f"warm query time x codes scanned per query (n*nprobe/nlist + nlist) ratio ({scan:.2f}); "
        "cold = warm + the measured cold-warm gap x the ratio of 4 KiB pages read per query "
        "(re-ranked rows, + probed lists on disk)",
        "ondisk_resident_formula_bytes": ondisk_resident_bytes(dim, nlist),
        "memory_resident_formula_bytes": layout_bytes(n, dim, factory)["resident"],
        "ivfdata_formula_bytes": layout_bytes(n, dim, factory + ",OnDisk")["disk"],
        "vectors_npy_bytes": 4 * n * dim + 128,
    }
    for lay in ("memory", "ondisk"):
        b, s = top[lay]["build"], top[lay]["search"]
        io = pages_per_query(n, nlist, nprobe, m, lay == "ondisk") / pages_per_query(
            top["n"], top["nlist"], top["nprobe"], m, lay == "ondisk"
        )
        warm = s["warm_ms"] * scan
        out[lay] = {
            "add_s": (b["add_s"] + b["save_s"]) * grow,
            "build_peak_anon_bytes": b["peak_anon"] * (grow if lay == "memory" else 1),
            "disk_bytes": sum(b["files"].values()) * grow,
            "warm_ms": warm,
            "cold_ms": warm + max(0.0, s["cold_ms"] - s["warm_ms"]) * io,
            "cold_pages_ratio": io,
        }
    return out


def report(ext: dict) -> None:
    print(f"\n== extrapolated to n={ext['n']} ({ext['factory']}, nprobe {ext['nprobe']}):")
    print(f"   method: {ext['method']}")
    print(
        f"   formula: in-RAM resident {ext['memory_resident_formula_bytes'] / 2**30:.2f} GiB, "
        f"on-disk resident {ext['ondisk_resident_formula_bytes'] / 2**20:.0f} MiB + paged lists "
        f"(index.ivfdata {ext['ivfdata_formula_bytes'] / 2**30:.2f} GiB), vectors.npy "
        f"{ext['vectors_npy_bytes'] / 2**30:.1f} GiB"
    )
    for lay in ("memory", "ondisk"):
        e = ext[lay]
        print(
            f"   {lay:6s}: add {e['add_s'] / 60:.1f} min, build peak "
            f"{e['build_peak_anon_bytes'] / 2**30:.2f} GiB heap, disk "
            f"{e['disk_bytes'] / 2**30:.1f} GiB, warm {e['warm_ms']:.2f} ms, cold "
            f"{e['cold_ms']:.1f} ms per query"
        )


def reextrapolate_last(n: int, dim: int) -> None:
    """Recompute the last record's extrapolation with this version's method, in place."""
    lines = RESULTS.read_text().splitlines()
    record = json.loads(lines[-1])
    record["extrapolated"] = extrapolate(record["rows"], n, dim)
    report(record["extrapolated"])
    lines[-1] = json.dumps(record)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(RESULTS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--train-sample", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=2, help="OMP threads of the child processes")
    ap.add_argument("--extrapolate-to", type=int, default=10_000_000)
    ap.add_argument("--workdir", default="/tmp/radalign-index-scale")
    ap.add_argument("--keep", action="store_true", help="keep the work files")
    ap.add_argument("--no-write", action="store_true", help="do not append to the results file")
    ap.add_argument(
        "--reextrapolate",
        action="store_true",
        help="only recompute the last result's extrapolation (after a change of method)",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.reextrapolate:
        reextrapolate_last(args.extrapolate_to, args.dim)
        return 0
    t0 = time.perf_counter()
    rows = [run_size(n, args) for n in sorted(args.sizes)]
    ext = extrapolate(rows, args.extrapolate_to, args.dim)
    report(ext)
    total = time.perf_counter() - t0
    print(f"total {total / 60:.1f} min")
    record = {
        "bench": "index_scale",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "faiss": faiss.__version__,
        "dim": args.dim,
        "queries": args.queries,
        "k": K,
        "baseline": "memory (same trained IVF-PQ, lists in RAM); exact chunked matmul for recall",
        "rows": rows,
        "extrapolated": ext,
        "total_s": total,
    }
    if not args.no_write:
        append_result(RESULTS, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
