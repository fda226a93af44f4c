"""``radalign pretrain``: contrastive pretraining from a YAML config plus overrides."""

from __future__ import annotations

import argparse

from radalign.cli_options import add_command

EXAMPLES = """examples:
  radalign pretrain --config configs/demo.yaml
  radalign pretrain --config configs/demo.yaml max_steps=50 loss.local_weight=0
  radalign pretrain --config configs/demo.yaml --resume          # newest checkpoint of the run
  accelerate launch --multi_gpu --num_processes 8 -m radalign pretrain --config configs/mimic-cxr.yaml
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "pretrain",
        help="pretrain image and report encoders on (image, report) pairs",
        description="Contrastive pretraining (global InfoNCE + GLoRIA local loss) on HF "
        "Accelerate. Settings come from --config and key=value overrides; the resolved config, "
        "metrics.jsonl, TensorBoard logs, checkpoints and the final model/ go to output_dir.",
        examples=EXAMPLES,
    )
    p.add_argument("--config", default=None, help="YAML run config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. max_steps=100")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        help="continue from the newest checkpoint of output_dir, or from PATH",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from radalign.pretrain.config import load_train_config
    from radalign.pretrain.trainer import NonFiniteLoss, pretrain

    config = load_train_config(args.config, args.overrides)
    try:
        result = pretrain(config, resume=args.resume)
    except NonFiniteLoss as exc:
        print(f"radalign pretrain: {exc}")
        return 3
    last = {k: v for row in result.history for k, v in row.items()}
    print(
        f"trained {result.steps} steps; final loss {last.get('train/loss', float('nan')):.4f}"
        + (f", val i2t R@1 {last['val/i2t_R@1']:.3f}" if "val/i2t_R@1" in last else "")
        + f"; {result.skipped.summary()}"
    )
    print(f"  model: {result.model_dir}")
    print(f"  run:   {result.run_dir} (config.yaml, metrics.jsonl, tb/, checkpoints/)")
    return 0
