"""``radalign data``: generate synthetic phantoms, check a dataset."""

from __future__ import annotations

import argparse
import json

from radalign.cli_options import add_command

EXAMPLES = """examples:
  radalign data synth --out runs/phantoms --n 2000 --seed 0
  radalign data check runs/phantoms/jpg
  radalign data check /data/mimic-cxr-jpg/2.0.0 --decode
  radalign data check ../shared/data/covid_chestxray/manifest.csv
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "data",
        help="synthesize phantoms or check a dataset",
        examples=EXAMPLES,
    )
    dsub = p.add_subparsers(dest="data_command", metavar="{synth,check}", required=True)
    s = add_command(
        dsub,
        "synth",
        help="write synthetic MIMIC-shaped (image, report) pairs",
        examples=EXAMPLES,
    )
    s.add_argument("--out", required=True, help="output folder (gets dicom/ and/or jpg/ roots)")
    s.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=256, help="image side in pixels")
    s.add_argument("--layouts", nargs="+", default=["dicom", "jpg"], choices=["dicom", "jpg"])
    s.add_argument("--workers", type=int, default=1)
    s.set_defaults(run=run_synth)
    c = add_command(
        dsub,
        "check",
        help="count pairs, splits, views, problems in a dataset",
        examples=EXAMPLES,
    )
    c.add_argument("source", help="MIMIC-CXR root, IU X-ray root, or a CSV/Parquet manifest")
    c.add_argument("--decode", action="store_true", help="also decode every image")
    c.add_argument("--section", default="findings+impression")
    c.add_argument("--all-views", action="store_true", help="keep lateral views too")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(run=run_check)


def run_synth(args: argparse.Namespace) -> int:
    from radalign.data.synth import synthesize

    summary = synthesize(
        args.out,
        n=args.n,
        seed=args.seed,
        size=args.size,
        layouts=tuple(args.layouts),
        workers=args.workers,
    )
    print(summary.summary())
    return 0


def run_check(args: argparse.Namespace) -> int:
    from radalign.data.datacheck import check

    kwargs = {"section": args.section, "decode": args.decode}
    if args.all_views:
        kwargs["views"] = None
    report = check(args.source, **kwargs)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0
