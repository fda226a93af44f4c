"""Speed, roofline share and peak memory of the GLoRIA word–region loss vs a per-report loop.

Baseline (measured in the same run): the structure of GLoRIA's released ``local_loss``: a Python
loop over reports, each report scored against all images with batched matrix products, its
context formed explicitly and compared with ``F.cosine_similarity`` (same math as
``WordRegionLoss(form=...)``; the two are checked to agree in float64 before timing). It runs in
float32.

Variants of ``WordRegionLoss`` timed side by side (each one a speed lever, see the module
docstrings of ``radalign.pretrain.local_loss`` and ``local_loss_kernel``):
* ``autograd_*``: ``impl="autograd"`` (the plain autograd path; ``_ckpt``: activation
  checkpointing per chunk);
* ``kernel_*``: the hand-written autograd Function (closed-form softmax backward, only the real
  words packed and scored); ``_ckpt``: recompute each chunk in backward instead of keeping its
  tensors; ``kernel_nopack_*``: the same but scoring padded slots too (the packing lever);
* ``*_bf16``: under ``torch.autocast("cpu"/"cuda", dtype=torch.bfloat16)`` with float32 inputs.

Roofline (same run, same precision): the loss's dominant products as plain ``torch.matmul``/
``torch.bmm`` calls: the score GEMM [N, D]×[D, B·R] and its two backward GEMMs (∂w, ∂V), the Gram
matrices V_i V_iᵀ, the a·G product, its backward aᵀ·(g·a) and ∂G·V; N = the real words (what an
exact implementation must compute) and, for reference, N = B·L (every padded slot, the issue's
[C·L, D] form). Each variant prints "% of roofline" = roofline time / its time.

Precision: the loss value's relative error against float64 (same inputs) is printed per variant.
bf16: where the CPU has no native bf16 (no ``amx_bf16`` / ``avx512_bf16`` in /proc/cpuinfo) a bf16
GEMM runs tens of times slower than float32, so the bf16 rows (with their own fp32 rows and
loop, for ratios) run at a small size (``--bf16-size``), after a printed "bf16 not native" line;
``--bf16 full`` forces the full size, ``--bf16 skip`` leaves them out.

Measured per configuration (B, L, R, D):
* time of forward + backward (median over ``--reps``, runs interleaved so background load hits
  all variants alike), printed as ratio = loop time / variant time;
* peak memory of one forward + backward, each measurement in a fresh subprocess. On CPU this is
  the growth of the process's peak resident set (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs`` once the inputs exist; falls back to ``ru_maxrss`` minus the RSS
  before the call), i.e. what the allocator really took from the OS, inputs excluded. On CUDA it
  is ``torch.cuda.max_memory_allocated`` above the inputs. The child first runs the same code
  on tiny inputs (so lazily loaded code is not counted) and uses a fixed glibc mmap threshold
  (``MALLOC_MMAP_THRESHOLD_``) so freed tensors really leave the resident set.
* glibc's allocator returns large freed blocks (> 32 MB, or all with ``MALLOC_MMAP_THRESHOLD_``)
  to the OS, so every new big tensor costs page faults; run with e.g.
  ``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=4000000000`` to measure without
  them (the ``MALLOC_*`` variables are recorded; the memory children always use their own).
* ``--compile``: also ``torch.compile`` (inductor) of the autograd path and of the kernel path
  (compile time printed, not timed; off by default: about a minute per model on 2 cores).

    python benchmarks/local_loss_speed.py --batch 32          # the issue's size, both shapes
    python benchmarks/local_loss_speed.py --quick             # B = 16, 32; fewer reps
    python benchmarks/local_loss_speed.py                     # B = 16, 32, 64 × both shapes

Appends one JSON line per configuration (and one per bf16 group) to
``benchmarks/results/local_loss_speed.jsonl``.
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
from collections.abc import Callable
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


# ---------------------------------------------------------------- inputs and variants
def make_inputs(b: int, length: int, r: int, d: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, r, d, generator=g) / d**0.5
    w = torch.randn(b, length, d, generator=g) / d**0.5
    lengths = torch.randint(length // 4, length + 1, (b,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return v.to(device), w.to(device), mask.to(device)


def variant_specs(chunk: int, bf16: bool) -> dict[str, dict]:
    """name → how to build it (see :func:`build`)."""
    fp32 = {
        "loop": {"method": "loop"},
        "autograd_unchunked": {"impl": "autograd", "chunk": None},
        f"autograd_chunk{chunk}_ckpt": {"impl": "autograd", "chunk": chunk, "ckpt": True},
        "kernel_nopack_unchunked": {"chunk": None, "pack": False},
        "kernel_unchunked": {"chunk": None},
        f"kernel_chunk{chunk}": {"chunk": chunk, "ckpt": False},
        f"kernel_chunk{chunk}_ckpt": {"chunk": chunk, "ckpt": True},
    }
    if not bf16:
        return fp32
    low = {
        "kernel_unchunked_bf16": {"chunk": None, "bf16": True},
        f"kernel_chunk{chunk}_bf16": {"chunk": chunk, "ckpt": False, "bf16": True},
        f"kernel_chunk{chunk}_ckpt_bf16": {"chunk": chunk, "ckpt": True, "bf16": True},
        "autograd_unchunked_bf16": {"impl": "autograd", "chunk": None, "bf16": True},
    }
    return {**fp32, **low}


def build(spec: dict, form: str, device: str) -> Callable:
    if spec.get("method") == "loop":
        fn = lambda v, w, m: loop_local_loss(v, w, m, form=form)  # noqa: E731
    else:
        chunk = spec.get("chunk")
        fn = WordRegionLoss(
            form=form,
            chunk_size=chunk,
            checkpoint=bool(spec.get("ckpt", False)),
            impl=spec.get("impl", "auto"),
        )
        fn._pack_words = spec.get("pack", True)
        if spec.get("compile"):
            fn = torch.compile(fn)
    if not spec.get("bf16"):
        return fn
    device_type = torch.device(device).type

    def low(v, w, m):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return fn(v, w, m)

    return low


def fwd_bwd(fn, v, w, mask) -> float:
    vv, ww = v.detach().requires_grad_(), w.detach().requires_grad_()
    loss = fn(vv, ww, mask)
    loss.backward()
    return float(loss.detach())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_thunks(thunks: dict[str, Callable[[], object]], reps: int, device: str):
    """Median wall and process-CPU seconds of each zero-argument callable (interleaved runs),
    as ``{clock: {name: s}}``, and each one's last return value."""
    values = {name: fn() for name, fn in thunks.items()}  # warm-up
    times = {c: {name: [] for name in thunks} for c in CLOCKS}
    for _ in range(reps):
        for name, fn in thunks.items():
            sync(device)
            start = {c: clock() for c, clock in CLOCKS.items()}
            values[name] = fn()
            sync(device)
            for c, clock in CLOCKS.items():
                times[c][name].append(clock() - start[c])
    return {c: {k: statistics.median(ts) for k, ts in t.items()} for c, t in times.items()}, values


# ---------------------------------------------------------------- roofline: the plain GEMMs
def roofline_gemms(b: int, n: int, r: int, d: int, dtype, device: str) -> dict:
    """The loss's dominant products for n words × b images, as (FLOPs, thunk) per name."""
    g = torch.Generator(device=device).manual_seed(1)

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=device).to(dtype)

    w, v, ds = rand(n, d), rand(b * r, d), rand(n, b * r)
    vb, a, gram = v.view(b, r, d), rand(b, n, r), rand(b, r, r)
    score = 2 * n * d * b * r
    aux = 2 * b * n * r * r
    gram_f = 2 * b * r * r * d
    return {
        "score w·vᵀ": (score, lambda: torch.matmul(w, v.T)),
        "∂w = ∂s·V": (score, lambda: torch.matmul(ds, v)),
        "∂V = ∂sᵀ·w": (score, lambda: torch.matmul(ds.T, w)),
        "G = V·Vᵀ": (gram_f, lambda: torch.bmm(vb, vb.mT)),
        "a·G": (aux, lambda: torch.bmm(a, gram)),
        "∂G = aᵀ·(g a)": (aux, lambda: torch.bmm(a.mT, a)),
        "∂G·V": (gram_f, lambda: torch.bmm(gram, vb)),
    }


def roofline_thunk(gemms: dict, log: dict, device: str) -> Callable[[], None]:
    """Runs every GEMM once, logging its wall and CPU seconds in ``log[clock][name]``."""

    def run():
        for name, (_, fn) in gemms.items():
            sync(device)
            start = {c: clock() for c, clock in CLOCKS.items()}
            fn()
            sync(device)
            for c, clock in CLOCKS.items():
                log.setdefault(c, {}).setdefault(name, []).append(clock() - start[c])

    return run


def gemm_gflops(dtype, device: str, m: int = 512, k: int = 768, n: int = 1024) -> float:
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def bf16_support(device: str) -> tuple[bool, str]:
    """Whether bf16 GEMMs are native (CPU: AMX or AVX512-BF16; CUDA: compute capability ≥ 8)."""
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported(), torch.cuda.get_device_name()
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        flags = set()
    found = sorted(flags & {"amx_bf16", "avx512_bf16"})
    mkldnn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    why = f"cpu flags {found or 'without amx_bf16/avx512_bf16'}, mkldnn bf16 supported: {mkldnn}"
    return bool(found), why


# ---------------------------------------------------------------- memory (fresh process each)
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure_memory_child(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    fn = build(spec["variant"], spec["form"], device)
    # warm-up on tiny inputs with the same code path (several chunks), so that lazily loaded
    # code and allocator set-up are not counted as the loss's memory
    fwd_bwd(fn, *make_inputs(2 * (spec["variant"].get("chunk") or 2), 4, 4, 8, device))
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- one configuration
def run_config(
    args, b: int, length: int, r: int, d: int, chunk: int, bf16: bool, memory: bool, meta: dict
) -> dict:
    device, form, reps = args.device, args.form, args.reps
    v, w, mask = make_inputs(b, length, r, d, device)
    n_real = int(mask.sum())
    with torch.no_grad():  # same math before timing anything, and the float64 reference
        ref = float(WordRegionLoss(form=form, chunk_size=None)(v.double(), w.double(), mask))
        agree = abs(float(loop_local_loss(v.double(), w.double(), mask, form=form)) - ref)
    specs = variant_specs(chunk, bf16)
    thunks: dict[str, Callable[[], object]] = {}
    for name, spec in specs.items():
        fn = build(spec, form, device)
        thunks[name] = lambda fn=fn: fwd_bwd(fn, v, w, mask)
    if args.compile and not bf16:
        for name, spec in [
            ("autograd_unchunked_compiled", specs["autograd_unchunked"]),
            ("kernel_unchunked_compiled", specs["kernel_unchunked"]),
        ]:
            fn = build({**spec, "compile": True}, form, device)
            start = time.perf_counter()
            try:
                fwd_bwd(fn, v, w, mask)
            except Exception as err:  # noqa: BLE001 - report and go on without it
                print(f"    {name}: torch.compile failed: {type(err).__name__}: {err}"[:300])
                continue
            print(f"    {name}: compiled in {time.perf_counter() - start:.0f} s", flush=True)
            thunks[name] = lambda fn=fn: fwd_bwd(fn, v, w, mask)
    roof_dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if bf16 else {})}
    gemm_sets, logs = {}, {}
    for prec, dtype in roof_dtypes.items():
        for words, n in (("real", n_real), ("padded", b * length)):
            key = f"roofline_{prec}_{words}"
            gemm_sets[key] = roofline_gemms(b, n, r, d, dtype, device)
            logs[key] = {}
            thunks[key] = roofline_thunk(gemm_sets[key], logs[key], device)
    times, values = time_thunks(thunks, reps, device)

    roof = {}  # roofline seconds = sum of the GEMMs' median times, per clock
    for key, gemms in gemm_sets.items():
        flops = sum(f for f, _ in gemms.values())
        roof[key] = {"gflop": flops / 1e9}
        for c in CLOCKS:
            per = {name: statistics.median(ts) for name, ts in logs[key][c].items()}
            roof[key][c] = {
                "seconds": sum(per.values()),
                "gflops_per_s": flops / sum(per.values()) / 1e9,
                "gemms": {
                    name: {
                        "gflop": f / 1e9,
                        "seconds": per[name],
                        "gflops_per_s": f / per[name] / 1e9,
                    }
                    for name, (f, _) in gemms.items()
                },
            }
    loss_names = [k for k in thunks if not k.startswith("roofline")]
    results = {c: {} for c in CLOCKS}
    for c, t in times.items():
        for name in loss_names:
            prec = "bf16" if name.endswith("_bf16") else "fp32"
            results[c][name] = {
                "seconds": t[name],
                "speedup_vs_loop": t["loop"] / t[name],
                "pct_of_roofline": 100 * roof[f"roofline_{prec}_real"][c]["seconds"] / t[name],
                "pct_of_roofline_padded": 100
                * roof[f"roofline_{prec}_padded"][c]["seconds"]
                / t[name],
            }
    rel_err = {name: abs(values[name] - ref) / abs(ref) for name in loss_names}

    tag = f" chunk={chunk}" + (" with bf16 rows" if bf16 else "")
    print(
        f"B={b} L={length} R={r} D={d}{tag}: {n_real} real words of {b * length}, float64 "
        f"|loss(loop) - loss(kernel)| = {agree:.1e}",
        flush=True,
    )
    clock = args.clock
    for key, info in roof.items():
        mine = info[clock]
        parts = "  ".join(
            f"{name} {g['gflop']:.2f} GF {g['seconds'] * 1e3:.0f} ms"
            for name, g in mine["gemms"].items()
        )
        print(
            f"  {key}: {info['gflop']:.1f} GFLOP in {mine['seconds'] * 1e3:.0f} ms {clock} "
            f"({mine['gflops_per_s']:.1f} GFLOP/s)  [{parts}]",
            flush=True,
        )
    print(
        f"  {'variant':30s} {'wall ms':>8s} {'cpu ms':>8s} | {clock}: {'x loop':>6s} "
        f"{'% roofline':>10s} {'(padded)':>8s} | {'rel.err f64':>11s}"
    )
    for name in loss_names:
        res = results[clock][name]
        print(
            f"  {name:30s} {times['wall'][name] * 1e3:8.1f} {times['cpu'][name] * 1e3:8.1f} | "
            f"{' ' * len(clock)}  {res['speedup_vs_loop']:6.2f} {res['pct_of_roofline']:9.1f}% "
            f"{res['pct_of_roofline_padded']:7.1f}% | {rel_err[name]:11.1e}",
            flush=True,
        )

    row = {
        **meta,
        "B": b,
        "L": length,
        "R": r,
        "D": d,
        "chunk": chunk,
        "bf16_rows": bf16,
        "real_words": n_real,
        "reps": reps,
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "abs_diff_vs_loop_float64": agree,
        "loss_float64": ref,
        "seconds": {k: times["wall"][k] for k in loss_names},
        "cpu_seconds": {k: times["cpu"][k] for k in loss_names},
        **{
            f"{field}{'' if c == 'wall' else '_cpu'}": {
                k: results[c][k][field] for k in loss_names if k != "loop"
            }
            for c in CLOCKS
            for field in ("speedup_vs_loop", "pct_of_roofline", "pct_of_roofline_padded")
        },
        "rel_err_vs_float64": rel_err,
        "roofline": roof,
    }
    if memory:
        mem_specs = {k: specs[k] for k in specs if k != "kernel_nopack_unchunked"}
        for c in args.mem_chunks:
            if c < b and c != chunk:
                mem_specs[f"kernel_chunk{c}_ckpt"] = {"chunk": c, "ckpt": True}
        memory = {}
        for name, spec in mem_specs.items():
            memory[name] = measure_memory(
                {
                    "variant": spec,
                    "form": form,
                    "B": b,
                    "L": length,
                    "R": r,
                    "D": d,
                    "device": device,
                    "threads": meta["threads"],
                }
            )
        row["peak_memory_mb"] = {k: round(m["peak_mb"], 1) for k, m in memory.items()}
        row["memory_measure"] = next(iter(memory.values()))["how"]
        print(
            "  peak MB: " + "  ".join(f"{k} {m['peak_mb']:.0f}" for k, m in memory.items()),
            flush=True,
        )
    if not args.no_record:
        with RESULTS.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    return row


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="B = 16, 32 only; fewer reps")
    parser.add_argument("--batch", type=int, nargs="*", help="override the batch sizes")
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--form", default="paper", choices=["paper", "released"])
    parser.add_argument("--chunk", type=int, default=16, help="chunk size of the timed module")
    parser.add_argument("--mem-chunks", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument(
        "--bf16",
        choices=["auto", "full", "skip"],
        default="auto",
        help="bf16 rows: auto = full size only where bf16 is native",
    )
    parser.add_argument(
        "--bf16-size",
        type=int,
        nargs=4,
        default=[8, 16, 49, 256],
        metavar=("B", "L", "R", "D"),
        help="size of the non-native bf16 rows",
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--shapes", nargs="*", help="(R, D) pairs as RxD, e.g. 361x768 49x256")
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="clock of the printed ratios (cpu: process CPU time, robust to a busy machine "
        "with --threads 1); both are recorded",
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to the results")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(measure_memory_child(json.loads(args.memory_child))))
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batch or ([16, 32] if args.quick else [16, 32, 64])
    args.reps = args.reps or (3 if args.quick else 5)
    device = args.device
    device_name = (
        torch.cuda.get_device_name()
        if device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    threads = torch.get_num_threads()
    native, why = bf16_support(device)
    fp32_rate = gemm_gflops(torch.float32, device)
    bf16_rate = gemm_gflops(torch.bfloat16, device, m=128, n=256)
    print(
        f"device={device} ({device_name}), torch {torch.__version__}, threads={threads}, "
        f"form={args.form}; GEMM fp32 {fp32_rate:.1f} GFLOP/s, bf16 {bf16_rate:.1f} GFLOP/s "
        f"({why})",
        flush=True,
    )
    meta = {
        "benchmark": "local_loss_speed",
        "device": device,
        "device_name": device_name,
        "torch": torch.__version__,
        "threads": threads,
        "form": args.form,
        "gemm_gflops_per_s": {"fp32": fp32_rate, "bf16": bf16_rate},
        "bf16_native": native,
        # glibc tuning of the timed process (e.g. keeping freed memory instead of new page faults)
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)

    full_bf16 = args.bf16 == "full" or (args.bf16 == "auto" and native)
    shapes = [tuple(int(x) for x in t.split("x")) for t in args.shapes] if args.shapes else SHAPES
    for r, d in shapes:
        for b in batches:
            memory = not args.no_memory
            run_config(args, b, args.length, r, d, args.chunk, full_bf16, memory, meta)
    if args.bf16 == "auto" and not native:
        b, length, r, d = args.bf16_size
        print(
            f"bf16 not native on this CPU ({bf16_rate:.1f} GFLOP/s measured vs {fp32_rate:.1f} "
            f"fp32; {why}): bf16 rows only at B={b} L={length} R={r} D={d}",
            flush=True,
        )
        run_config(args, b, length, r, d, max(1, b // 2), True, False, meta)


if __name__ == "__main__":
    main()
