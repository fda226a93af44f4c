"""All speed benchmarks in one go, each printing its ratios against a baseline of the same run.

    python benchmarks/speed.py            # quick settings (about 10 min on 2 CPU cores)
    python benchmarks/speed.py --full     # the issues' full sizes (1M-vector index: long)

Runs, in order: the local loss vs its loop reference, the training step vs bare towers +
ClipLoss, embedding/zero-shot vs a bare forward, the FAISS index types vs flat, and the phantom
generator. Every script appends its JSON line to ``benchmarks/results/``; the device (CPU, or
the GPU when one is present) is recorded there.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full sizes instead of quick ones")
    args = ap.parse_args()
    quick = not args.full
    runs = [
        ["local_loss_speed.py", *(["--batch", "32", "--reps", "3"] if quick else [])],
        ["train_step_speed.py", *(["--reps", "3"] if quick else ["--reps", "10"])],
        ["embed_speed.py", *(["--n", "128"] if quick else ["--n", "512"])],
        ["index_speed.py", *(["--quick"] if quick else [])],
        ["phantoms_speed.py"],
    ]
    for script, *extra in runs:
        print(f"== {script} {' '.join(extra)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / script), *extra], check=False)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        print(f"== {script}: {status} in {time.perf_counter() - start:.0f} s\n", flush=True)


if __name__ == "__main__":
    main()
