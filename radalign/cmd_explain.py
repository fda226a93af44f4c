"""``radalign explain``: attention and integrated-gradient maps of one scan against a report
or a finding, with per-word attributions; PNGs, an HTML page, maps.npz and explain.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radalign import cli_options

EXAMPLES = """examples:
  radalign explain scan.dcm --report "Moderate left pleural effusion." --model runs/demo/model --out expl/
  radalign explain scan.png --finding "Pleural Effusion" --model runs/demo/model --out expl/
  radalign explain scan.jpg --finding pneumothorax --model tiny --random-init --out expl/ \\
      --steps 64 --threshold 0.3

Image maps: the word-region attention of each finding word of the report (or of the words naming
the finding in its positive prompts), and integrated gradients over the pixels of the image-text
cosine (black baseline, --steps midpoint Riemann steps, --batch-size at a time). Each map is
smoothed, scaled to its peak and kept where >= --threshold; kept parts are circled. Text: IG over
the word embeddings per word (zero baseline) and GLoRIA's word-context score. Runs in float32.
"""


def add_parser(sub) -> None:
    p = cli_options.add_command(
        sub,
        "explain",
        help="why the model matches a scan to a report or finding (heatmaps, circled regions)",
        description="Explain the model's image-text similarity for one scan: where in the image "
        "(word-region attention, integrated gradients) and which words of the text.",
        examples=EXAMPLES,
    )
    p.add_argument("scan", help="DICOM, PNG or JPG file")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--report", default=None, help="report text to explain the scan against")
    what.add_argument("--finding", default=None, help="finding name of the prompt set")
    p.add_argument("--model", required=True, help=cli_options.MODEL_HELP)
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--steps", type=int, default=32, help="integrated-gradient steps (32)")
    p.add_argument(
        "--threshold", type=float, default=0.5, help="keep map values >= this share of the peak"
    )
    p.add_argument(
        "--smooth", type=float, default=0.02,
        help="Gaussian smoothing of the gradient map, sigma as a share of the scan side (0.02)",
    )  # fmt: skip
    p.add_argument(
        "--baseline", default="black", choices=["black", "blur"],
        help="integrated-gradient baseline: a black scan (default) or the scan blurred",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16, help="IG steps per forward pass (16)")
    p.add_argument("--prompts", default="chexpert", help="prompt set name or JSON/YAML file")
    p.add_argument(
        "--tau1", type=float, default=None,
        help="attention sharpness (default: the run's loss.local_tau1, else 4)",
    )  # fmt: skip
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best)")
    p.add_argument(
        "--random-init", action="store_true", help="build a named model with random weights"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from radalign.explain.api import Explainer, run_local_params

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if not Path(args.scan).is_file():
        raise FileNotFoundError(f"{args.scan}: no such scan file")
    model, _ = cli_options.load_model_option(args)
    local = run_local_params(args.model) or (4.0, False)
    tau1 = args.tau1 if args.tau1 is not None else local[0]
    explainer = Explainer(
        model, prompts=args.prompts, tau1=tau1, normalize=local[1], steps=args.steps,
        batch_size=args.batch_size, threshold=args.threshold, smooth=args.smooth,
        baseline=args.baseline,
    )  # fmt: skip
    e = explainer.explain(args.scan, report=args.report, finding=args.finding)
    page = e.save(args.out)
    kinds = ", ".join(f"{m.kind}:{m.name} ({len(m.regions)} regions)" for m in e.maps)
    print(f"explain    cosine {e.similarity:.4f}; {kinds}", file=sys.stderr)
    print(page)
    return 0
