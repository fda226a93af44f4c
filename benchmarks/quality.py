"""Quality benchmark on phantoms: ablations of the losses at equal compute.

Each variant is one ``radalign demo`` run (same phantoms, same seed, same number of steps and
batch size, so the same compute budget apart from the loss itself) into
``OUT/<variant>/``; the demo's numbers on its fresh test phantoms (drawn with a seed not used
for training, ``radalign.cmd_demo.TEST_SEED``) are collected:

* zero-shot macro AUROC and per finding (including "No Finding"), against the planted truth;
* image->report Recall@1/10 over the test pairs, and label-match Precision@5 over the training
  report index (a hit counts when its study has exactly the scan's planted findings; chance is
  given);
* mismatch AUROC for swapped reports and for left/right-flipped reports;
* the pointing game: the share of finding words whose word–region attention peak falls inside
  the planted mask (up to 60 test scans).

Variants: ``global`` (InfoNCE only), ``global+local`` (GLoRIA word–region loss, paper form),
``global+token`` (in-pair token alignment), ``random`` (no training: the floor), and issue 11's
levers on top of global+local: ``+flip-negatives`` (laterality hard negatives),
``+grid-12x12`` (stride-8 region grid), ``+word-adapter`` (a trainable layer over the frozen
report tower's words), both of the last ideas together, ``+lr-2e-3``.

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
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

VARIANTS = {
    "global": {"loss.local_weight": 0, "loss.token_weight": 0},
    "global+local": {"loss.local_weight": 1, "loss.token_weight": 0},
    "global+token": {"loss.local_weight": 0, "loss.token_weight": 1},
    "random": {"max_steps": 0},
    # issue 11's levers, each on top of global+local (the demo's losses)
    "+flip-negatives": {"loss.flip_negatives": True},
    "+grid-12x12": {"model": {"image.local_layer": -3}},
    "+word-adapter": {"model": {"text_adapter_layers": 1}},
    "+word-adapter+flip-negatives": {
        "model": {"text_adapter_layers": 1},
        "loss.flip_negatives": True,
    },
    "+lr-2e-3": {"optim.lr": 2.0e-3},
    "+pool-grid-1x2": {"model": {"image.pool_grid": [1, 2]}},
    "+pool-grid-1x2+flip-negatives": {
        "model": {"image.pool_grid": [1, 2]},
        "loss.flip_negatives": True,
    },
    # the report tower's top MiniLM layer trains; the frozen bottom's states are cached
    "+text-top-1": {
        "optim.freeze_text": False,
        "optim.text_trainable_layers": 1,
        "optim.cache_text_bottom": True,
        "optim.text_lr": 1.0e-4,
    },
    "+text-top-1+flip-negatives": {
        "optim.freeze_text": False,
        "optim.text_trainable_layers": 1,
        "optim.cache_text_bottom": True,
        "optim.text_lr": 1.0e-4,
        "loss.flip_negatives": True,
    },
    # a learned-query attention pool over the frozen word features, added to the pooled one
    "+attn-pool": {"model": {"text_pool_heads": 4}},
    "+attn-pool+flip-negatives": {"model": {"text_pool_heads": 4}, "loss.flip_negatives": True},
    "+text-top-2": {
        "optim.freeze_text": False,
        "optim.text_trainable_layers": 2,
        "optim.cache_text_bottom": True,
        "optim.text_lr": 1.0e-4,
    },
    "+text-top-1+lr-3e-4": {
        "optim.freeze_text": False,
        "optim.text_trainable_layers": 1,
        "optim.cache_text_bottom": True,
        "optim.text_lr": 3.0e-4,
    },
    # ... with the word features from the frozen layer below (only the global embedding trains)
    "+text-top-1+frozen-words+flip-negatives": {
        "model": {"text.word_layer": -2},
        "optim.freeze_text": False,
        "optim.text_trainable_layers": 1,
        "optim.cache_text_bottom": True,
        "optim.text_lr": 1.0e-4,
        "loss.flip_negatives": True,
    },
    "+pool-grid-2x2+flip-negatives": {
        "model": {"image.pool_grid": [2, 2]},
        "loss.flip_negatives": True,
    },
    # the attention pool (text_pool_heads, in the demo model since 2026-12-04, so the "+attn-pool"
    # names are kept for the record) with a finer image (more regions for the word–region loss)
    "+attn-pool+res-128": {"model": {"text_pool_heads": 4, "image.image_size": 128}},
    "+attn-pool+tau1-8": {"model": {"text_pool_heads": 4}, "loss.local_tau1": 8.0},
    # the batch at equal compute (batch × steps = 12,800 pairs), and a lighter local loss
    "+batch-16": {"batch_size": 16, "max_steps": 800, "eval_every": 80, "save_every": 160},
    "+batch-64": {"batch_size": 64, "max_steps": 200, "eval_every": 20, "save_every": 40},
    "+local-0.5": {"loss.local_weight": 0.5},
    "+attn-pool+text-top-1": {
        "model": {"text_pool_heads": 4},
        "optim.freeze_text": False,
        "optim.text_trainable_layers": 1,
        "optim.cache_text_bottom": True,
        "optim.text_lr": 1.0e-4,
    },
}
"""Train-config overrides per variant; ``model`` holds overrides of the model config (written
to ``OUT/<variant>/model.json``)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/quality")
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument(
        "--n",
        type=int,
        default=None,
        help="phantom studies, shared by variants (default: the config's)",
    )
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
    folders = ("phantoms", "phantoms-test")  # generated by the first variant, shared by all
    rows = {}
    for name in args.variants:
        vdir = out / name
        vdir.mkdir(exist_ok=True)
        for folder in folders:
            if (out / folder).is_dir() and not (vdir / folder).exists():
                (vdir / folder).symlink_to((out / folder).resolve(), target_is_directory=True)
        cfg = OmegaConf.load(config_path(args.config))
        settings = {"max_steps": args.steps, **VARIANTS[name]}
        model_overrides = settings.pop("model", None)
        for key, value in settings.items():
            OmegaConf.update(cfg, key, value)
        if model_overrides:
            cfg.model = str(_model_variant(cfg.model, model_overrides, vdir / "model.json"))
        cfg_file = vdir / "config.yaml"
        OmegaConf.save(cfg, cfg_file)
        start = time.perf_counter()
        argv = ["demo", "--out", str(vdir), "--config", str(cfg_file)]
        argv += ["--n", str(args.n)] if args.n else []
        radalign_main([*argv, "--workers", str(args.workers)])
        for folder in folders:
            if not (out / folder).exists():
                (vdir / folder).rename(out / folder)
                (vdir / folder).symlink_to((out / folder).resolve(), target_is_directory=True)
        demo = json.loads((vdir / "demo.json").read_text())
        rows[name] = {
            "steps": settings["max_steps"],
            "zeroshot_macro_auroc": demo["zeroshot"]["macro_auroc"],
            "zeroshot_auroc": demo["zeroshot"]["auroc"],
            "i2t_R@1": demo["retrieve"]["i2t_recall"]["R@1"],
            "i2t_R@10": demo["retrieve"]["i2t_recall"]["R@10"],
            "label_match_P@5": demo["retrieve"]["label_match_P@5"],
            "label_match_chance": demo["retrieve"]["label_match_chance"],
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
        "phantoms": args.n or int(cfg.data.phantoms_n),
        "variants": rows,
    }
    save_result("quality", result, _markdown(result), out, Path(args.results))


def _model_variant(base: str, overrides: dict, path: Path) -> Path:
    """Write the model config ``base`` with ``overrides`` (dotted keys) applied to ``path``."""
    from omegaconf import OmegaConf
    from radalign.encoders.config import to_dict
    from radalign.encoders.registry import get_model_config

    config = OmegaConf.create(to_dict(get_model_config(base)))
    for key, value in overrides.items():
        OmegaConf.update(config, key, value)
    config.name = f"{config.name}-{path.parent.name}"
    path.write_text(json.dumps(OmegaConf.to_container(config), indent=2))
    return path


def _markdown(result: dict) -> str:
    def fmt(v) -> str:
        return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    head = "| variant | steps | zero-shot macro AUROC | No Finding AUROC | i2t R@1 | i2t R@10 | label-match P@5 (chance) | swap AUROC | flip AUROC | pointing game |"
    lines = [
        f"Phantoms ({result['phantoms']} training studies; fresh test set), {result['machine']}, "
        f"{result['date']}.",
        "",
        head,
        "|" + " --- |" * 10,
    ]
    for name, r in result["variants"].items():
        p5 = f"{fmt(r['label_match_P@5'])} ({fmt(r['label_match_chance'])})"
        cells = [name, r["steps"], r["zeroshot_macro_auroc"], r["zeroshot_auroc"].get("No Finding"),
                 r["i2t_R@1"], r["i2t_R@10"], p5, r["swap_auroc"], r["flip_auroc"],
                 r["pointing_game"]]  # fmt: skip
        lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
