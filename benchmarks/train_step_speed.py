"""Training-step throughput: radalign's step vs bare towers + open_clip's ``ClipLoss``.

Baseline (measured in the same run, same inputs): the same two backbones used by hand — a timm
model's pooled features and a Hugging Face model's [CLS] state, one linear head each, a logit
scale, ``open_clip.loss.ClipLoss`` and AdamW — the minimum a hand-rolled CLIP fork runs.
radalign's step is :func:`radalign.pretrain.trainer.train_step` (Accelerate wrapping, region
grid and word features, gradient clipping, logit-scale clamp) with global loss only, then with
the GLoRIA word-region loss and with the in-pair token loss added.

Printed: median seconds per step (runs interleaved so background load hits every variant alike)
and ratios to the baseline. Target: global-only overhead <= 5 %.

bf16 row: the radalign global step under bf16 autocast (what ``mixed_precision: bf16`` runs:
Accelerate's bf16 is ``torch.autocast`` without a grad scaler) against the same step in fp32.
Where bf16 is native and fast (:func:`radalign.encoders.precision.bf16_support`) it is
measured at full size, interleaved with the others; where it is emulated (CPUs without
AVX512-BF16/AMX) only at ``--bf16-batch`` (default 2), against fp32 at that batch, so the ratio is
printed without running for many minutes. ``--bf16 on`` forces full size, ``--bf16 off`` skips.

    python benchmarks/train_step_speed.py                      # demo model, batch 32, CPU
    python benchmarks/train_step_speed.py --device cuda --batch 128 --model resnet50-bioclinicalbert

Appends one JSON line to ``benchmarks/results/train_step_speed.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import append_run  # noqa: E402  (benchmarks/results_io.py, beside this script)

REPORTS = [
    "Moderate left pleural effusion with adjacent atelectasis. No pneumothorax.",
    "The heart is enlarged. Mild pulmonary edema. Right internal jugular line tip in the SVC.",
    "Lungs are clear. No focal consolidation, effusion or pneumothorax. Normal heart size.",
    "Right upper lobe consolidation concerning for pneumonia. Small right effusion.",
]


class Bare(nn.Module):
    """Backbones + linear heads + logit scale, as a hand-rolled CLIP fork would wire them."""

    def __init__(self, image_backbone: nn.Module, text_backbone: nn.Module, dim: int) -> None:
        super().__init__()
        self.image, self.text = image_backbone, text_backbone
        self.image_head = nn.Linear(image_backbone.num_features, dim)
        self.text_head = nn.Linear(text_backbone.config.hidden_size, dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))

    def forward(self, pixels, input_ids, attention_mask):
        u = F.normalize(self.image_head(self.image(pixels)), dim=-1)
        cls = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        return u, F.normalize(self.text_head(cls), dim=-1), self.logit_scale.exp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo-resnet18-minilm")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    ap.add_argument("--bf16", default="auto", choices=["auto", "on", "off"], help="bf16 row")
    ap.add_argument("--bf16-batch", type=int, default=2, help="bf16 row's batch when emulated")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import copy

    import open_clip
    from accelerate import Accelerator
    from radalign.encoders.precision import Precision, autocast, bf16_support
    from radalign.pretrain.config import LossConfig, TrainConfig
    from radalign.pretrain.objective import Objective
    from radalign.pretrain.trainer import _optimizer, train_step

    import radalign

    torch.manual_seed(0)
    template = radalign.load(args.model, pretrained=False)
    size = template.config.image.image_size
    pixels = torch.randn(args.batch, 3, size, size)
    reports = [REPORTS[i % len(REPORTS)] + f" Comparison {i}." for i in range(args.batch)]
    tokens = template.tokenize(reports)
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.mixed_precision)
    device = accelerator.device
    batch = {
        "pixels": pixels.to(device),
        "tokens": {k: v.to(device) for k, v in tokens.items()},
        "reports": reports,
    }

    # baseline: the same backbones, used by hand
    bare = Bare(
        copy.deepcopy(template.image_tower.model),
        copy.deepcopy(template.text_tower.model),
        template.config.embed_dim,
    ).to(device)
    bare.image.reset_classifier(0)
    bare.train()
    clip_loss = open_clip.loss.ClipLoss()
    bare_opt = torch.optim.AdamW(bare.parameters(), lr=1e-5)

    def bare_step() -> None:
        with accelerator.autocast():
            u, t, s = bare(
                batch["pixels"], batch["tokens"]["input_ids"], batch["tokens"]["attention_mask"]
            )
            loss = clip_loss(u, t, s)
        loss.backward()
        bare_opt.step()
        bare_opt.zero_grad(set_to_none=True)

    def radalign_step(local: float, token: float, batch=batch):
        config = TrainConfig(model=args.model)
        config.loss = dataclasses.replace(LossConfig(), local_weight=local, token_weight=token)
        config.optim = dataclasses.replace(config.optim, lr=1e-5)
        model = copy.deepcopy(template).to(device).train()
        objective = Objective(config.loss).to(device)
        optimizer = _optimizer(model, config, objective)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        return lambda: train_step(
            accelerator, model, objective, optimizer, scheduler, batch, config
        )

    def in_bf16(step):
        def run() -> None:
            with autocast(device, Precision("bf16", "benchmark")):
                step()

        return run

    variants = {
        "bare+ClipLoss": bare_step,
        "radalign global": radalign_step(0.0, 0.0),
        "radalign global+local": radalign_step(1.0, 0.0),
        "radalign global+token": radalign_step(0.0, 1.0),
    }
    support = bf16_support(device)
    bf16_mode = "off" if args.bf16 == "off" or args.mixed_precision != "no" else "full"
    if bf16_mode == "full" and not support.native and args.bf16 == "auto":
        bf16_mode = "reduced"
    if bf16_mode == "full":
        variants["radalign global bf16"] = in_bf16(radalign_step(0.0, 0.0))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    median = _median_seconds(variants, args.reps, sync)
    base = median["bare+ClipLoss"]
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    print(
        f"{args.model}, batch {args.batch}, {device_name or device.type}, "
        f"{torch.get_num_threads()} threads, median of {args.reps}"
    )
    for name, sec in median.items():
        print(f"  {name:<24} {sec:8.3f} s/step   x{sec / base:5.2f} of baseline")
    bf16_row: dict = {"mode": bf16_mode, "native": support.native, "reason": support.reason}
    if bf16_mode == "full":
        bf16_row["ratio_to_fp32"] = median["radalign global"] / median["radalign global bf16"]
        print(
            f"  bf16 global step: x{bf16_row['ratio_to_fp32']:.2f} the speed of fp32 "
            f"({'native' if support.native else 'forced, not native'}: {support.reason})"
        )
    elif bf16_mode == "reduced":
        bf16_row.update(_reduced_bf16(args, template, device, radalign_step, in_bf16, sync))
        print(
            f"  radalign global bf16     skipped at batch {args.batch}: bf16 not native "
            f"({support.reason})\n"
            f"    at batch {args.bf16_batch}: bf16 {bf16_row['bf16_s']:.3f} s/step vs fp32 "
            f"{bf16_row['fp32_s']:.3f} s/step: x{bf16_row['ratio_to_fp32']:.3f} the speed"
        )
    else:
        print(f"  bf16 row skipped (--bf16 {args.bf16}, --mixed-precision {args.mixed_precision})")
    overhead = median["radalign global"] / base - 1
    print(
        f"global-only overhead {overhead:+.1%} (target <= +5%); local loss adds "
        f"{median['radalign global+local'] / median['radalign global'] - 1:+.1%}, token loss "
        f"{median['radalign global+token'] / median['radalign global'] - 1:+.1%}"
    )
    row = {
        "model": args.model,
        "batch": args.batch,
        "device": device.type,
        "device_name": device_name,
        "mixed_precision": args.mixed_precision,
        "threads": torch.get_num_threads(),
        "seconds": median,
        "ratio_to_baseline": {k: v / base for k, v in median.items()},
        "bf16": bf16_row,
    }
    append_run("train_step_speed", row, Path(args.out))


def _reduced_bf16(args, template, device, radalign_step, in_bf16, sync) -> dict:
    """bf16 vs fp32 global step at ``--bf16-batch`` (1 warm-up, median of 2): emulated bf16 is
    tens of times slower, so the full batch would run for many minutes."""
    n = args.bf16_batch
    size = template.config.image.image_size
    reports = [REPORTS[i % len(REPORTS)] for i in range(n)]
    small = {
        "pixels": torch.randn(n, 3, size, size, device=device),
        "tokens": {k: v.to(device) for k, v in template.tokenize(reports).items()},
        "reports": reports,
    }
    fns = {
        "fp32": radalign_step(0.0, 0.0, batch=small),
        "bf16": in_bf16(radalign_step(0.0, 0.0, batch=small)),
    }
    med = _median_seconds(fns, 2, sync)
    return {
        "batch": n,
        "bf16_s": med["bf16"],
        "fp32_s": med["fp32"],
        "ratio_to_fp32": med["fp32"] / med["bf16"],
    }


def _median_seconds(
    fns: dict[str, Callable[[], object]], reps: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Median seconds per call of each of ``fns``: one warm-up call each, then ``reps`` rounds
    calling them in turn (so load changes hit all alike), the device synced around each call."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


if __name__ == "__main__":
    main()
