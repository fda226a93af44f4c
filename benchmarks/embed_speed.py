"""Embedding and zero-shot throughput vs the bare encoder forward, measured in the same run.

Baseline: a plain loop that decodes each scan (``load_image``), applies the eval transform,
stacks a batch and calls ``model.encode_image`` — the least any script must do. Measured:
``radalign.encoders.embed.embed_images`` (skip handling, progress, metadata) and the same plus
zero-shot scoring of every scan with the CheXpert prompt classifier (``zeroshot`` command path).
Reports: the bare ``tokenize`` + ``encode_text`` loop vs ``embed_texts``.

    python benchmarks/embed_speed.py                       # phantoms, demo model, CPU
    python benchmarks/embed_speed.py --images ../shared/data/nih_cxr14_subset/images --n 500

Prints images/s and ratios to the baseline (target >= 0.9x); appends a JSON line to
``benchmarks/results/embed_speed.jsonl``.
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
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from radalign.encoders.embed import embed_images, embed_texts
    from radalign.encoders.imageio import list_images, load_image
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
        from radalign.pretrain.phantoms import synthesize
        from radalign.pretrain.sources import open_source

        tmp = tempfile.TemporaryDirectory()
        synthesize(tmp.name, n=args.n, seed=123, size=256, layouts=("jpg",))
        records = open_source(Path(tmp.name) / "jpg", views=None).records[: args.n]
        paths = [r.image_path for r in records]
        reports = [r.report for r in records]
    transform = model.transform(train=False)
    classifier = PromptClassifier(model, "chexpert")

    @torch.inference_mode()
    def bare_images() -> None:
        for s in range(0, len(paths), args.batch):
            batch = torch.stack([transform(load_image(p)) for p in paths[s : s + args.batch]])
            model.encode_image(batch)

    def radalign_images() -> None:
        embed_images(model, paths, batch_size=args.batch, progress=False)

    def radalign_zeroshot() -> None:
        emb = embed_images(model, paths, batch_size=args.batch, progress=False)
        classifier.predict(emb.vectors, emb.metadata["id"].tolist())

    @torch.inference_mode()
    def bare_texts() -> None:
        for s in range(0, len(reports), 64):
            model.encode_text(model.tokenize(reports[s : s + 64]))

    def radalign_texts() -> None:
        embed_texts(model, reports, progress=False)

    variants = {
        "bare images": bare_images,
        "embed_images": radalign_images,
        "embed + zero-shot": radalign_zeroshot,
        "bare reports": bare_texts,
        "embed_texts": radalign_texts,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.reps):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: len(paths) / v for k, v in med.items()}
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
        print(f"  {name:<18} {rate[name]:8.1f} /s{extra}")
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
        "date": time.strftime("%Y-%m-%d"),
    }
    with open(out / "embed_speed.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
