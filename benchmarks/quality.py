"""Quality benchmark on phantoms: ablations of the losses at equal compute.

Each variant is one ``radalign demo`` run (same phantoms, same seed, same number of steps and
batch size, so the same compute budget apart from the loss itself) into
``OUT/<variant>/``; the demo's numbers on the held-out test patients are collected:

* zero-shot macro AUROC and per finding (including "No Finding"), against the planted truth;
* image->report Recall@1/10 over the test pairs;
* mismatch AUROC for swapped reports and for left/right-flipped reports;
* the pointing game: the share of finding words whose word–region attention peak falls inside
  the planted mask (up to 60 test scans).

Variants: ``global`` (InfoNCE only), ``global+local`` (GLoRIA word–region loss, paper form),
``global+token`` (in-pair token alignment), ``random`` (no training: the floor).

    python benchmarks/quality.py --steps 150            # about 5 min per variant on 2 CPU cores
    python benchmarks/quality.py --variants global global+local --steps 300

Writes ``OUT/quality.json`` and ``OUT/quality.md`` (a Markdown table) and appends a JSON line
to ``benchmarks/results/quality.jsonl``. Targets (issue 6): zero-shot macro AUROC >= 0.95,
Precision@5 >= 0.9, pointing game >= 0.8 with the local loss, swap AUROC >= 0.95, laterality-flip
AUROC >= 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

VARIANTS = {
    "global": {"loss.local_weight": 0, "loss.token_weight": 0},
    "global+local": {"loss.local_weight": 1, "loss.token_weight": 0},
    "global+token": {"loss.local_weight": 0, "loss.token_weight": 1},
    "random": {"max_steps": 0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/quality")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--n", type=int, default=2000, help="phantom studies (shared by variants)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--config", default="demo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from omegaconf import OmegaConf
    from radalign.pretrain.config import config_path

    from radalign.cli import main as radalign_main

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shared = out / "phantoms"
    rows = {}
    for name in args.variants:
        vdir = out / name
        vdir.mkdir(exist_ok=True)
        if shared.is_dir() and not (vdir / "phantoms").exists():
            (vdir / "phantoms").symlink_to(shared.resolve(), target_is_directory=True)
        cfg = OmegaConf.load(config_path(args.config))
        settings = {"max_steps": args.steps, **VARIANTS[name]}
        for key, value in settings.items():
            OmegaConf.update(cfg, key, value)
        cfg_file = vdir / "config.yaml"
        OmegaConf.save(cfg, cfg_file)
        start = time.perf_counter()
        argv = ["demo", "--out", str(vdir), "--n", str(args.n), "--config", str(cfg_file)]
        radalign_main([*argv, "--workers", str(args.workers)])
        if not shared.exists():
            (vdir / "phantoms").rename(shared)
            (vdir / "phantoms").symlink_to(shared.resolve(), target_is_directory=True)
        demo = json.loads((vdir / "demo.json").read_text())
        rows[name] = {
            "steps": settings["max_steps"],
            "zeroshot_macro_auroc": demo["zeroshot"]["macro_auroc"],
            "zeroshot_auroc": demo["zeroshot"]["auroc"],
            "i2t_R@1": demo["retrieve"]["i2t_recall"]["R@1"],
            "i2t_R@10": demo["retrieve"]["i2t_recall"]["R@10"],
            "swap_auroc": demo["flags"]["swap"],
            "flip_auroc": demo["flags"].get("flip"),
            "pointing_game": demo["report"]["pointing_game"],
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(f"{name}: {rows[name]}", flush=True)
    result = {
        "benchmark": "quality",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "phantoms": args.n,
        "variants": rows,
    }
    (out / "quality.json").write_text(json.dumps(result, indent=2))
    (out / "quality.md").write_text(_markdown(result))
    Path(args.results).mkdir(parents=True, exist_ok=True)
    with open(Path(args.results) / "quality.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")
    print(_markdown(result))


def _markdown(result: dict) -> str:
    def fmt(v) -> str:
        return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    head = "| variant | steps | zero-shot macro AUROC | No Finding AUROC | i2t R@1 | i2t R@10 | swap AUROC | flip AUROC | pointing game |"
    lines = [
        f"Phantoms ({result['phantoms']} studies), {result['machine']}, {result['date']}.",
        "",
        head,
        "|" + " --- |" * 9,
    ]
    for name, r in result["variants"].items():
        cells = [name, r["steps"], r["zeroshot_macro_auroc"], r["zeroshot_auroc"].get("No Finding"),
                 r["i2t_R@1"], r["i2t_R@10"], r["swap_auroc"], r["flip_auroc"], r["pointing_game"]]  # fmt: skip
        lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
