"""``radalign models``: list the registered model configs."""

from __future__ import annotations

import argparse
import json

from radalign.cli_options import add_command


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "models",
        help="list named model configs",
        description="List the registered model configs (built-ins plus files named in "
        "RADALIGN_MODEL_CONFIGS).",
        examples="example: radalign models --json",
    )
    p.add_argument("--json", action="store_true", help="print the full configs as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from radalign.encoders.config import to_dict
    from radalign.encoders.registry import list_models

    models = list_models()
    if args.json:
        print(json.dumps({n: to_dict(c) for n, c in models.items()}, indent=2))
        return 0
    width = max(len(n) for n in models)
    for name, cfg in models.items():
        towers = (
            f"{cfg.image.backend}:{cfg.image.name}@{cfg.image.image_size}px + {cfg.text.source}"
        )
        print(f"{name:<{width}}  {towers}")
        if cfg.description:
            print(f"{'':<{width}}  {cfg.description}")
    return 0
