"""Options shared by several ``radalign`` commands (light: no torch import at parse time)."""

from __future__ import annotations

import argparse
from typing import Any

PRECISION_CHOICES = ("auto", "bf16", "fp32")
"""Same as ``radalign.encoders.precision.CLI_CHOICES`` (kept here so ``--help`` stays fast)."""

MODEL_HELP = "model name, config file or saved directory"


def add_command(
    sub, name: str, *, help: str, description: str | None = None, examples: str | None = None
) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``; its ``examples`` epilog keeps its line breaks."""
    kwargs: dict[str, Any] = {"help": help, "formatter_class": argparse.RawDescriptionHelpFormatter}
    if description is not None:
        kwargs["description"] = description
    if examples is not None:
        kwargs["epilog"] = examples
    return sub.add_parser(name, **kwargs)


def add_model_options(
    parser: argparse.ArgumentParser,
    *,
    model_help: str = MODEL_HELP,
    workers: bool = True,
    random_init: bool = True,
) -> None:
    """``--model``, ``--batch-size``, ``--workers``, ``--device``, ``--precision`` and
    ``--random-init`` of the commands that run the encoders (read back by
    :func:`load_model_option` and :func:`encoder_kwargs`)."""
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--batch-size", type=int, default=32)
    if workers:
        parser.add_argument(
            "--workers", type=int, default=2, help="image decoding worker processes"
        )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best)")
    add_precision_option(parser)
    if random_init:
        parser.add_argument(
            "--random-init",
            action="store_true",
            help="build a named model with random weights (no hub needed)",
        )


def add_window_option(parser: argparse.ArgumentParser) -> None:
    """``--window {header,full,percentile}`` of the commands that decode DICOM files."""
    parser.add_argument(
        "--window",
        default="header",
        choices=["header", "full", "percentile"],
        help="DICOM intensity window (default: header VOI LUT/window)",
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """``--precision {auto,bf16,fp32}`` of the commands that run the encoders."""
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISION_CHOICES,
        help="encoder precision (default auto: bf16 where the hardware runs it natively and "
        "fast, e.g. Ampere+ GPUs or CPUs with AMX/AVX512-BF16, else fp32); outputs are float32",
    )


def load_model_option(args: argparse.Namespace):
    """``(model, device)``: ``--model`` (random weights with ``--random-init``) on ``--device``
    (default: CUDA when available, else CPU)."""
    import torch

    from radalign.encoders.loading import load

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load(args.model, pretrained=not getattr(args, "random_init", False)).to(device)
    return model, device


def encoder_kwargs(args: argparse.Namespace, device, precision) -> dict[str, Any]:
    """``batch_size``, ``num_workers``, ``device`` and ``precision`` keyword arguments of the
    embedding functions, from :func:`add_model_options`' options."""
    return {
        "batch_size": args.batch_size,
        "num_workers": args.workers,
        "device": device,
        "precision": precision,
    }


def resolve_precision_option(args: argparse.Namespace, device):
    """The resolved :class:`~radalign.encoders.precision.Precision` of ``--precision`` on
    ``device``, after one line on stderr saying which precision runs and why."""
    import sys

    from radalign.encoders.precision import resolve_precision

    precision = resolve_precision(getattr(args, "precision", "auto"), device)
    print(f"precision: {precision.name} ({precision.reason})", file=sys.stderr)
    return precision
