"""All speed benchmarks in one go, each printing its ratios against a baseline of the same run.

    python benchmarks/speed.py              # quick settings (about 15 min on 2 CPU cores)
    python benchmarks/speed.py --full       # the issues' full sizes (1M-vector index: long)
    python benchmarks/speed.py --skip-demo  # without the demo run

Runs, in order: the local loss vs its loop reference, the training step vs bare towers +
ClipLoss, embedding/zero-shot vs a bare forward, the FAISS index types vs flat, the phantom
generator, and a fresh ``radalign demo`` whose stage timings are printed. Every script appends
its JSON line to ``benchmarks/results/`` (the demo's to ``demo_speed.jsonl``); the device (CPU,
or the GPU when one is present) is recorded there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full sizes instead of quick ones")
    ap.add_argument("--skip-demo", action="store_true", help="leave out the demo run")
    ap.add_argument("--demo-out", default="runs/speed-demo", help="demo folder (replaced)")
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
    if not args.skip_demo:
        demo_timings(Path(args.demo_out))


def demo_timings(out: Path) -> None:
    """Run ``radalign demo`` from scratch into ``out`` and print (and record) its stage times."""
    if out.exists():
        shutil.rmtree(out)
    print(f"== radalign demo --out {out}", flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "radalign", "demo", "--out", str(out)]
    proc = subprocess.run(cmd, check=False, env=env)
    if proc.returncode != 0:
        print(f"== demo: exit {proc.returncode}", flush=True)
        return
    summary = json.loads((out / "demo.json").read_text())
    stages = {k: v["seconds"] for k, v in summary.items() if isinstance(v, dict) and "seconds" in v}
    total = summary["total_seconds"]
    for name, seconds in stages.items():
        print(f"   {name:>9}: {seconds:6.1f} s  ({seconds / total:5.1%})")
    print(f"   {'total':>9}: {total:6.1f} s", flush=True)
    row = {
        "benchmark": "demo_speed",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "device": _device(),
        "stages_s": stages,
        "total_s": total,
    }
    with open(HERE / "results" / "demo_speed.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()
