"""Options shared by several ``radalign`` commands (light: no torch import at parse time)."""

from __future__ import annotations

import argparse

PRECISION_CHOICES = ("auto", "bf16", "fp32")
"""Same as ``radalign.encoders.precision.CLI_CHOICES`` (kept here so ``--help`` stays fast)."""


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """``--precision {auto,bf16,fp32}`` of the commands that run the encoders."""
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISION_CHOICES,
        help="encoder precision (default auto: bf16 where the hardware runs it natively and "
        "fast, e.g. Ampere+ GPUs or CPUs with AMX/AVX512-BF16, else fp32); outputs are float32",
    )


def resolve_precision_option(args: argparse.Namespace, device):
    """The resolved :class:`~radalign.encoders.precision.Precision` of ``--precision`` on
    ``device``, after one line on stderr saying which precision runs and why."""
    import sys

    from radalign.encoders.precision import resolve_precision

    precision = resolve_precision(getattr(args, "precision", "auto"), device)
    print(f"precision: {precision.name} ({precision.reason})", file=sys.stderr)
    return precision
