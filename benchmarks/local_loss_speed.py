"""Speed and peak memory of the vectorised GLoRIA word–region loss vs a per-report loop.

Baseline (measured in the same run): the structure of GLoRIA's released ``local_loss``: a Python
loop over reports, each report scored against all images with batched matrix products, its
context formed explicitly and compared with ``F.cosine_similarity`` (same math as
``WordRegionLoss(form=...)``; the two are checked to agree before timing).

Measured per configuration (B, L, R, D):
* time of forward + backward (median over ``--reps``, runs interleaved so background load hits
  both sides alike), printed as ratio = loop time / vectorised time;
* peak memory of one forward + backward, each measurement in a fresh subprocess. On CPU this is
  the growth of the process's peak resident set (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs`` once the inputs exist; falls back to ``ru_maxrss`` minus the RSS
  before the call), i.e. what the allocator really took from the OS, inputs excluded. On CUDA it
  is ``torch.cuda.max_memory_allocated`` above the inputs. The child first runs the same code
  on tiny inputs (so lazily loaded code is not counted) and uses a fixed glibc mmap threshold
  (``MALLOC_MMAP_THRESHOLD_``) so freed tensors really leave the resident set.

    python benchmarks/local_loss_speed.py --quick      # subset
    python benchmarks/local_loss_speed.py              # B = 16, 32, 64 × (R, D) = (361, 768), (49, 256)

Appends one JSON line per configuration to ``benchmarks/results/local_loss_speed.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from radalign.pretrain.local_loss import WordRegionLoss

RESULTS = Path(__file__).resolve().parent / "results" / "local_loss_speed.jsonl"
SHAPES = [(361, 768), (49, 256)]


# ---------------------------------------------------------------- baseline: loop over reports
def loop_local_loss(
    v, w, mask, tau1=4.0, tau2=5.0, tau3=10.0, agg="sum", form="paper"
) -> torch.Tensor:
    """One report at a time against all images, context formed explicitly (GLoRIA's structure)."""
    b = v.shape[0]
    columns = []
    for k in range(w.shape[0]):
        words = w[k, mask[k]]  # [n_k, D]
        s = torch.einsum("ld,ird->ilr", words, v)  # [B, n_k, R]
        if form == "released":
            s = s.softmax(dim=1)
        attn = (tau1 * s).softmax(dim=-1)
        ctx = torch.bmm(attn, v)  # [B, n_k, D]
        cos = F.cosine_similarity(words.expand(b, -1, -1), ctx, dim=-1, eps=1e-8)
        x = tau2 * cos
        if agg == "max":
            z = x.amax(dim=1)
        else:
            z = torch.logsumexp(x, dim=1)
            if agg == "mean":
                z = z - torch.log(torch.tensor(float(words.shape[0])))
        columns.append(z)
    logits = tau3 * torch.stack(columns, dim=1)
    labels = torch.arange(b)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


# ---------------------------------------------------------------- inputs and runners
def make_inputs(b: int, length: int, r: int, d: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, r, d, generator=g) / d**0.5
    w = torch.randn(b, length, d, generator=g) / d**0.5
    lengths = torch.randint(length // 4, length + 1, (b,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return v.to(device), w.to(device), mask.to(device)


def runner(method: str, chunk: int | None, form: str):
    if method == "loop":
        return lambda v, w, m: loop_local_loss(v, w, m, form=form)
    module = WordRegionLoss(form=form, chunk_size=chunk, checkpoint=chunk is not None)
    return module


def fwd_bwd(fn, v, w, mask) -> float:
    vv, ww = v.detach().requires_grad_(), w.detach().requires_grad_()
    loss = fn(vv, ww, mask)
    loss.backward()
    return float(loss.detach())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_methods(methods, v, w, mask, reps: int, device: str) -> dict[str, float]:
    for _, fn in methods:
        fwd_bwd(fn, v, w, mask)  # warm-up
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    for _ in range(reps):
        for name, fn in methods:
            sync(device)
            start = time.perf_counter()
            fwd_bwd(fn, v, w, mask)
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


# ---------------------------------------------------------------- memory (fresh process each)
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure_memory_child(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    fn = runner(spec["method"], spec["chunk"], spec["form"])
    # warm-up on tiny inputs with the same code path (several chunks), so that lazily loaded
    # code and allocator set-up are not counted as the loss's memory
    fwd_bwd(fn, *make_inputs(2 * (spec["chunk"] or 2), 4, 4, 8, device))
    v, w, mask = make_inputs(spec["B"], spec["L"], spec["R"], spec["D"], device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd(fn, v, w, mask)
        torch.cuda.synchronize()
        return {"peak_mb": (torch.cuda.max_memory_allocated() - base) / 2**20, "how": "cuda"}
    before = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        how = "VmHWM"
    except OSError:
        how = "ru_maxrss"
    fwd_bwd(fn, v, w, mask)
    peak = (
        _status_kb("VmHWM")
        if how == "VmHWM"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    )
    return {"peak_mb": (peak - before) / 1024, "how": how}


def measure_memory(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--_memory-child", json.dumps(spec)]
    # a fixed mmap threshold makes glibc return every large block to the OS when freed, so the
    # resident-set peak follows the live tensors instead of heap fragmentation
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="B = 16, 32 only; fewer reps")
    parser.add_argument("--batch", type=int, nargs="*", help="override the batch sizes")
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--form", default="paper", choices=["paper", "released"])
    parser.add_argument("--chunk", type=int, default=16, help="chunk size of the timed module")
    parser.add_argument("--mem-chunks", type=int, nargs="*", default=[4, 8, 16, 32])
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(measure_memory_child(json.loads(args.memory_child))))
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batch or ([16, 32] if args.quick else [16, 32, 64])
    reps = args.reps or (3 if args.quick else 5)
    device = args.device
    device_name = (
        torch.cuda.get_device_name()
        if device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    threads = torch.get_num_threads()
    print(
        f"device={device} ({device_name}), torch {torch.__version__}, threads={threads}, form={args.form}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)

    for r, d in SHAPES:
        for b in batches:
            v, w, mask = make_inputs(b, args.length, r, d, device)
            with torch.no_grad():  # same math before timing anything
                ref = loop_local_loss(v.double(), w.double(), mask, form=args.form)
                got = WordRegionLoss(form=args.form, chunk_size=args.chunk)(
                    v.double(), w.double(), mask
                )
            agree = abs(float(ref) - float(got))
            methods = [
                ("loop", runner("loop", None, args.form)),
                (f"vec_chunk{args.chunk}_ckpt", runner("vec", args.chunk, args.form)),
                ("vec_unchunked", runner("vec", None, args.form)),
            ]
            times = time_methods(methods, v, w, mask, reps, device)
            loop_t = times["loop"]
            row = {
                "benchmark": "local_loss_speed",
                "device": device,
                "device_name": device_name,
                "torch": torch.__version__,
                "threads": threads,
                "form": args.form,
                "B": b,
                "L": args.length,
                "R": r,
                "D": d,
                "reps": reps,
                "loadavg_1min": round(os.getloadavg()[0], 2),
                "abs_diff_vs_loop_float64": agree,
                "seconds": times,
                "speedup_vs_loop": {k: loop_t / t for k, t in times.items() if k != "loop"},
            }
            line = (
                f"B={b:3d} R={r:3d} D={d:3d}  loop {loop_t * 1e3:8.1f} ms  "
                + "  ".join(
                    f"{k} {t * 1e3:8.1f} ms (x{loop_t / t:4.2f})"
                    for k, t in times.items()
                    if k != "loop"
                )
                + f"  |Δloss|={agree:.1e}"
            )
            print(line, flush=True)
            if not args.no_memory:
                memory = {}
                specs = [("loop", None), ("vec_unchunked", None)] + [
                    (f"vec_chunk{c}", c) for c in args.mem_chunks if c < b
                ]
                for name, chunk in specs:
                    spec = {
                        "method": "loop" if name == "loop" else "vec",
                        "chunk": chunk,
                        "form": args.form,
                        "B": b,
                        "L": args.length,
                        "R": r,
                        "D": d,
                        "device": device,
                        "threads": threads,
                    }
                    memory[name] = measure_memory(spec)
                row["peak_memory_mb"] = {k: round(m["peak_mb"], 1) for k, m in memory.items()}
                row["memory_measure"] = next(iter(memory.values()))["how"]
                print(
                    "    peak MB: "
                    + "  ".join(f"{k} {m['peak_mb']:.0f}" for k, m in memory.items()),
                    flush=True,
                )
            with RESULTS.open("a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
