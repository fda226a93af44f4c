"""Embedding and zero-shot throughput vs the bare encoder forward, measured in the same run.

Baseline: a plain loop that decodes each scan (``load_image``), applies the eval transform,
stacks a batch and calls ``model.encode_image`` — the least any script must do. Measured:
``radalign.encoders.embed.embed_images`` (skip handling, progress, metadata) and the same plus
zero-shot scoring of every scan with the CheXpert prompt classifier (``zeroshot`` command path).
Reports: the bare ``tokenize`` + ``encode_text`` loop vs ``embed_texts``. These rows run in
fp32 (``precision="fp32"``), like the bare loops.

    python benchmarks/embed_speed.py                       # phantoms, demo model, CPU
    python benchmarks/embed_speed.py --images ../shared/data/nih_cxr14_subset/images --n 500

Prints images/s and ratios to the baseline (target >= 0.9x); appends a JSON line to
``benchmarks/results/embed_speed.jsonl``.

bf16 rows: ``embed_images``, embedding + zero-shot and ``embed_texts`` with
``precision="bf16"``, as ratios to the same calls in fp32 (zero-shot scoring itself is FAISS on
float32 vectors; the prompt vectors are built once, untimed). Where bf16 is native and fast they
run at full size, interleaved with the rest; where it is emulated (CPUs without
AVX512-BF16/AMX) only on ``--bf16-n`` inputs (default 8), against fp32 on the same inputs.
``--bf16 on`` forces full size, ``--bf16 off`` skips.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo-resnet18-minilm")
    ap.add_argument("--images", help="a folder of scans (default: 256 fresh phantoms)")
    ap.add_argument("--n", type=int, default=256, help="scans to embed")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bf16", default="auto", choices=["auto", "on", "off"], help="bf16 rows")
    ap.add_argument("--bf16-n", type=int, default=8, help="bf16 rows' inputs when emulated")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from radalign.encoders.embed import embed_images, embed_texts
    from radalign.encoders.imageio import list_images, load_image
    from radalign.encoders.precision import Precision, bf16_support
    from radalign.zeroshot.classifier import PromptClassifier

    import radalign

    model = radalign.load(args.model, pretrained=False).eval()
    tmp = None
    if args.images:
        paths = list_images(args.images)[: args.n]
        reports = [
            f"Report number {i}: small left pleural effusion, no pneumothorax."
            for i in range(len(paths))
        ]
    else:
        from radalign.data.sources import open_source
        from radalign.data.synth import synthesize

        tmp = tempfile.TemporaryDirectory()
        synthesize(tmp.name, n=args.n, seed=123, size=256, layouts=("jpg",))
        records = open_source(Path(tmp.name) / "jpg", views=None).records[: args.n]
        paths = [r.image_path for r in records]
        reports = [r.report for r in records]
    transform = model.transform(train=False)
    classifier = PromptClassifier(model, "chexpert", precision="fp32")

    @torch.inference_mode()
    def bare_images() -> None:
        for s in range(0, len(paths), args.batch):
            batch = torch.stack([transform(load_image(p)) for p in paths[s : s + args.batch]])
            model.encode_image(batch)

    def radalign_images() -> None:
        embed_images(model, paths, batch_size=args.batch, progress=False, precision="fp32")

    def radalign_zeroshot() -> None:
        emb = embed_images(model, paths, batch_size=args.batch, progress=False, precision="fp32")
        classifier.predict(emb.vectors, emb.metadata["id"].tolist())

    @torch.inference_mode()
    def bare_texts() -> None:
        for s in range(0, len(reports), 64):
            model.encode_text(model.tokenize(reports[s : s + 64]))

    def radalign_texts() -> None:
        embed_texts(model, reports, progress=False, precision="fp32")

    variants = {
        "bare images": bare_images,
        "embed_images": radalign_images,
        "embed + zero-shot": radalign_zeroshot,
        "bare reports": bare_texts,
        "embed_texts": radalign_texts,
    }
    bf16 = Precision("bf16", "benchmark")
    fp32 = Precision("fp32", "benchmark")

    def precision_variants(ps, rs) -> dict:
        out = {}
        for tag, prec in (("fp32", fp32), ("bf16", bf16)):
            out[f"embed_images {tag}"] = lambda prec=prec: embed_images(
                model, ps, batch_size=args.batch, progress=False, precision=prec
            )
            out[f"embed + zero-shot {tag}"] = lambda prec=prec: classifier.predict(
                embed_images(
                    model, ps, batch_size=args.batch, progress=False, precision=prec
                ).vectors
            )
            out[f"embed_texts {tag}"] = lambda prec=prec: embed_texts(
                model, rs, progress=False, precision=prec
            )
        return out

    support = bf16_support("cpu")
    bf16_mode = "off" if args.bf16 == "off" else "full"
    if bf16_mode == "full" and not support.native and args.bf16 == "auto":
        bf16_mode = "reduced"
    if bf16_mode == "full":
        variants.update({k: v for k, v in precision_variants(paths, reports).items()
                         if k.endswith("bf16")})  # fmt: skip
    times = _timed(variants, args.reps, warm_up=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: len(paths) / v for k, v in med.items()}
    bf16_row: dict = {"mode": bf16_mode, "native": support.native, "reason": support.reason}
    if bf16_mode == "full":
        fp32_of = {"embed_images": "embed_images", "embed + zero-shot": "embed + zero-shot",
                   "embed_texts": "embed_texts"}  # fmt: skip
        bf16_row["n"] = len(paths)
        bf16_row["ratio_to_fp32"] = {k: rate[f"{k} bf16"] / rate[v] for k, v in fp32_of.items()}
    elif bf16_mode == "reduced":
        n = min(args.bf16_n, len(paths))
        small = _timed(precision_variants(paths[:n], reports[:n]), 2)
        small_med = {k: statistics.median(v) for k, v in small.items()}
        bf16_row["n"] = n
        bf16_row["seconds"] = small_med
        bf16_row["ratio_to_fp32"] = {
            k: small_med[f"{k} fp32"] / small_med[f"{k} bf16"]
            for k in ("embed_images", "embed + zero-shot", "embed_texts")
        }
    ratio = {
        "embed_images": rate["embed_images"] / rate["bare images"],
        "embed + zero-shot": rate["embed + zero-shot"] / rate["bare images"],
        "embed_texts": rate["embed_texts"] / rate["bare reports"],
    }
    print(
        f"{args.model}, {len(paths)} scans/reports, {torch.get_num_threads()} threads, median of {args.reps}"
    )
    for name in variants:
        extra = f"   x{ratio[name]:.2f} of bare (target >= 0.9)" if name in ratio else ""
        if name.endswith(" bf16"):
            extra = f"   x{bf16_row['ratio_to_fp32'][name[:-5]]:.2f} of fp32"
        print(f"  {name:<22} {rate[name]:8.1f} /s{extra}")
    if bf16_mode == "reduced":
        print(f"  bf16 rows skipped at n={len(paths)}: bf16 not native ({support.reason})")
        for k, r in bf16_row["ratio_to_fp32"].items():
            s16, s32 = bf16_row["seconds"][f"{k} bf16"], bf16_row["seconds"][f"{k} fp32"]
            print(
                f"    {k + ' bf16':<22} on {bf16_row['n']}: {s16:.2f} s vs fp32 {s32:.2f} s: "
                f"x{r:.3f} the speed"
            )
    elif bf16_mode == "off":
        print("  bf16 rows skipped (--bf16 off)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    row = {
        "benchmark": "embed_speed",
        "model": args.model,
        "n": len(paths),
        "device": "cpu",
        "device_name": platform.processor(),
        "threads": torch.get_num_threads(),
        "loadavg_1min": os.getloadavg()[0],
        "per_second": rate,
        "ratio_to_bare": ratio,
        "bf16": bf16_row,
        "date": time.strftime("%Y-%m-%d"),
    }
    with open(out / "embed_speed.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    if tmp is not None:
        tmp.cleanup()


def _timed(variants: dict, reps: int, warm_up: bool = True) -> dict[str, list[float]]:
    """Seconds per call of each variant, interleaved ``reps`` times (optionally after one
    warm-up call each)."""
    for fn in variants.values() if warm_up else ():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


if __name__ == "__main__":
    main()
