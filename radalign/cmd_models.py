"""``radalign models``: list the registered model configs."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "models",
        help="list named model configs",
        description="List the registered model configs (built-ins plus files named in "
        "RADALIGN_MODEL_CONFIGS).",
        epilog="example: radalign models --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
