"""How fast are the synthetic phantoms made? (one core, both layouts written)

Times ``synthesize(n=2000, size=256, layouts=("dicom", "jpg"), workers=1)`` end to end, and as
the in-run baseline the same number of cases generated in memory only (render + report, no
files), so the ratio shows what writing the two MIMIC layouts costs. Prints pairs/s and appends
one JSON line to ``benchmarks/results/phantoms_speed.jsonl``. Never asserts a time.

    python benchmarks/phantoms_speed.py [--n 2000] [--size 256] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from radalign.data.synth import GENERATOR_VERSION, generate_case, synthesize  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "phantoms_speed.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="keep the tree here (default: temp)")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    t0 = time.perf_counter()
    for i in range(args.n):
        generate_case(np.random.default_rng([args.seed, i]), args.size)
    t_mem = time.perf_counter() - t0

    tmp = None
    out = args.out
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="phantoms-bench-"))
        out = tmp / "phantoms"
    try:
        s = synthesize(out, n=args.n, seed=args.seed, size=args.size, workers=1)
        size_mb = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) / 2**20
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    rec = {
        "bench": "phantoms_speed",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "generator": GENERATOR_VERSION,
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "n_studies": s.n_studies,
        "n_images": s.n_images,
        "size": args.size,
        "layouts": list(s.layouts),
        "workers": 1,
        "synthesize_s": round(s.seconds, 3),
        "render_s": round(s.render_seconds, 3),
        "write_s": round(s.write_seconds, 3),
        "pairs_per_s": round(s.pairs_per_second, 2),
        "baseline_in_memory_s": round(t_mem, 3),
        "baseline_pairs_per_s": round(args.n / t_mem, 2),
        "ratio_synthesize_vs_in_memory": round(s.seconds / t_mem, 3),
        "tree_mb": round(size_mb, 1),
    }
    print(
        f"synthesize: {s.n_studies} pairs ({s.n_images} images) at {args.size} px, both layouts, "
        f"1 core: {s.seconds:.1f} s = {s.pairs_per_second:.1f} pairs/s "
        f"(render {s.render_seconds:.1f} s, write {s.write_seconds:.1f} s, {size_mb:.0f} MiB)"
    )
    print(
        f"baseline in-memory generate_case: {t_mem:.1f} s = {args.n / t_mem:.1f} pairs/s; "
        f"ratio synthesize/in-memory = {s.seconds / t_mem:.2f}x"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
