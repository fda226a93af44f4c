"""The ``radalign`` command: one entry point, one subcommand per capability.

Each subcommand lives in a small ``radalign/cmd_*.py`` module with ``add_parser(subparsers)``
and ``run(args) -> int``; heavy imports (torch, transformers) happen inside ``run`` so that
``radalign --help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from radalign._version import __version__

COMMANDS = [
    "models",
    "embed",
    "data",
    "pretrain",
    "index",
    "retrieve",
    "zeroshot",
    "flag",
    "demo",
    "report",
    "explain",
    "audit",
    "probe",
    "timeline",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radalign",
        description="Pretrain image and report encoders on paired radiographs and reports, "
        "then embed, retrieve, zero-shot classify and flag mismatches.",
        epilog="Run `radalign COMMAND --help` for each command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"radalign {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"radalign.cmd_{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its AVX probing is noise
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        if args.verbose:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"radalign {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
