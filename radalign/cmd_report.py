"""``radalign report``: one self-contained HTML page (and PNG figures) for a run folder."""

from __future__ import annotations

import argparse

from radalign.cli_options import add_command

EXAMPLES = """examples:
  radalign report runs/demo-all                # -> runs/demo-all/report/index.html
  radalign report runs/demo-all --out /tmp/rep --heatmaps 8
  radalign report runs/pretrain-run            # a plain pretrain run: config, curves, heatmaps
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "report",
        help="HTML report of a demo or pretrain run (curves, ROC, retrieval, flags, heatmaps)",
        description="Write one self-contained HTML page (figures embedded, no external "
        "resources) plus the same figures as PNG files, from the output folder of `radalign "
        "demo` or `radalign pretrain`: resolved config, loss and validation recall curves, "
        "zero-shot ROC curves and table, retrieval gallery, flagged pairs and word-region "
        "attention heatmaps. Sections whose inputs are missing say so.",
        examples=EXAMPLES,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `radalign demo`/pretrain")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    p.add_argument(
        "--heatmaps", type=int, default=4, help="test scans with attention heatmaps (0: none)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from radalign.report import write_report
    from radalign.run_folder import RunFolder

    run = RunFolder.open(args.run_dir)  # a folder that is no run fails here, before any work
    path = write_report(run, out=args.out, n_heatmaps=args.heatmaps)
    print(path)
    return 0
