"""How well do `radalign explain`'s maps localise findings? Grounding on fresh phantoms.

For ``--n`` fresh phantom scans with planted findings (in memory, ``--seed``), every planted
finding with a mask is explained in finding mode (its positive prompts): the word–region
attention map and the integrated-gradient map of the image–prompt cosine. Each is scored
against the mask (pointing game, hit-rate, mIoU over thresholds 0.1–0.5, CNR; see
``radalign.explain.evaluate``), beside two baselines measured in the same run: the centre
prior and the same model with randomised weights. The randomised model is also the sanity
check of Adebayo et al. 2018: its pointing game should sit at chance (the masks' mean area
share) and its maps should be weakly rank-correlated with the trained model's.

    python benchmarks/explain_quality.py --model runs/demo/pretrain/model --n 60

Prints Markdown tables and appends them to ``benchmarks/results/explain_quality.md`` and a JSON
line to ``benchmarks/results/explain_quality.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(x) -> str:
    if isinstance(x, bool | int):
        return str(x)
    return "–" if x != x else f"{x:.3f}"  # NaN as a dash


def tables(result: dict, label: str) -> str:
    rows = result["rows"]
    cols = ["n", "pointing", "hit", "miou", "cnr", "chance"]
    head = "| finding | method | n | pointing game | hit-rate | mIoU | CNR | chance (mask share) |"
    out = [f"### {label}", "", head, "|" + " --- |" * 8]
    for r in rows:
        out.append(
            f"| {r['finding']} | {r['method']} | " + " | ".join(_fmt(r[c]) for c in cols) + " |"
        )
    out += ["", "Sanity check (randomised weights):", "",
            "| map | random pointing hits | chance | binomial p | rank corr. with trained (heatmaps) | same, raw signed maps | passed |",
            "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for kind, s in result["sanity"].items():
        out.append(
            f"| {kind} | {s['hits']}/{s['n']} ({s['hits'] / s['n']:.3f}) | {s['chance']:.3f} | "
            f"{s['p_value']:.3g} | {s['rank_corr']:.3f} | {s['rank_corr_raw']:.3f} | {s['passed']} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="model name or saved directory (tiny)")
    p.add_argument("--n", type=int, default=40, help="phantom scans with findings (40)")
    p.add_argument("--seed", type=int, default=20261203, help="phantom seed (fresh: not 0)")
    p.add_argument("--size", type=int, default=256, help="phantom size in pixels (256)")
    p.add_argument("--steps", type=int, default=16, help="IG steps (16)")
    p.add_argument("--threshold", type=float, default=0.5, help="hit-rate threshold (0.5)")
    p.add_argument("--baseline", default="black", choices=["black", "blur"], help="IG baseline")
    p.add_argument("--random-seed", type=int, default=0, help="seed of the randomised copy")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)

    import torch
    from radalign.explain.api import run_local_params
    from radalign.explain.evaluate import evaluate_cases, phantom_cases, randomized_copy

    import radalign

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = radalign.load(args.model).eval()
    tau1, normalize = run_local_params(args.model) or (4.0, False)
    cases = phantom_cases(args.n, seed=args.seed, size=args.size)
    random_model = randomized_copy(model, seed=args.random_seed)
    result = evaluate_cases(
        model, cases, random_model=random_model, steps=args.steps, threshold=args.threshold,
        tau1=tau1, normalize=normalize, baseline=args.baseline,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    label = (
        f"model {args.model}, {args.n} fresh phantoms (seed {args.seed}, {args.size} px), "
        f"IG {args.steps} steps, {args.baseline} baseline, hit threshold {args.threshold}, tau1 {tau1:g}; {seconds:.0f} s"
    )
    text = tables(result, label)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        with open(RESULTS / "explain_quality.md", "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
        line = {
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "model": str(args.model), "n": args.n, "seed": args.seed,
            "size": args.size, "steps": args.steps, "baseline": args.baseline, "threshold": args.threshold,
            "seconds": round(seconds, 1), **result,
        }  # fmt: skip
        with open(RESULTS / "explain_quality.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
