"""``radalign data``: generate synthetic phantoms, check a dataset, prepare shards."""

from __future__ import annotations

import argparse
import json

from radalign.cli_options import add_command, add_window_option

EXAMPLES = """examples:
  radalign data synth --out runs/phantoms --n 2000 --seed 0
  radalign data check runs/phantoms/jpg
  radalign data check /data/mimic-cxr-jpg/2.0.0 --decode
  radalign data check ../shared/data/covid_chestxray/manifest.csv
  radalign data prepare /data/mimic-cxr/2.0.0 --size 512 --out /data/mimic-512
  radalign data prepare ../shared/data/nih_cxr14_subset/manifest.csv --size 256 --out runs/nih
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "data",
        help="synthesize phantoms, check a dataset, or prepare it into shards",
        examples=EXAMPLES,
    )
    dsub = p.add_subparsers(dest="data_command", metavar="{synth,check,prepare}", required=True)
    s = _action(dsub, "synth", "write synthetic MIMIC-shaped (image, report) pairs", run_synth)
    s.add_argument("--out", required=True, help="output folder (gets dicom/ and/or jpg/ roots)")
    s.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=256, help="image side in pixels")
    s.add_argument("--layouts", nargs="+", default=["dicom", "jpg"], choices=["dicom", "jpg"])
    s.add_argument("--workers", type=int, default=1)
    s.add_argument(
        "--plant-anomalies",
        nargs="?",
        type=float,
        const=0.025,
        default=None,
        metavar="RATE",
        help="write OUT/clean and a copy OUT/planted with every audit anomaly type planted at "
        "RATE per type (default 0.025), with truth.csv per layout",
    )
    s.add_argument("--drift-mode", choices=["time", "site"], default="time",
                   help="planted drift: the last 20%% of dates, or a second site")  # fmt: skip
    c = _action(dsub, "check", "count pairs, splits, views, problems in a dataset", run_check)
    _source_options(c)
    c.add_argument("--decode", action="store_true", help="also decode every image")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    prepare_help = "decode every image once into resized, lossless WebDataset shards"
    r = _action(dsub, "prepare", prepare_help, run_prepare)
    _source_options(r)
    r.add_argument(
        "--out", required=True, help="output folder (resumes a killed run of the same job)"
    )
    r.add_argument("--size", type=int, default=512, help="longer side in pixels (default 512)")
    r.add_argument("--dtype", choices=["uint8", "uint16"], default="uint8", help="stored pixels")
    r.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    r.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    r.add_argument("--split", default=None, help="prepare one split only (train, val, test)")
    add_window_option(r)
    r.add_argument("--overwrite", action="store_true", help="replace a different earlier job")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def _action(dsub, name: str, help: str, run) -> argparse.ArgumentParser:
    """The parser of ``radalign data NAME``, which runs ``run``."""
    parser = add_command(dsub, name, help=help, examples=EXAMPLES)
    parser.set_defaults(run=run)
    return parser


def _source_options(parser: argparse.ArgumentParser) -> None:
    """The source, its report section and ``--all-views`` of ``check`` and ``prepare``."""
    parser.add_argument("source", help="MIMIC-CXR root, IU X-ray root, or a CSV/Parquet manifest")
    parser.add_argument(
        "--section", default="findings+impression", help="report section to keep (default)"
    )
    parser.add_argument("--all-views", action="store_true", help="keep lateral views too")


def run_synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from radalign.data.synth import synthesize

    planting = args.plant_anomalies is not None
    summary = synthesize(
        Path(args.out) / "clean" if planting else args.out,
        n=args.n,
        seed=args.seed,
        size=args.size,
        layouts=tuple(args.layouts),
        workers=args.workers,
    )
    print(summary.summary())
    if planting:
        from radalign.data.synth_anomalies import plant_anomalies, uniform_rates

        layouts = (("dicom",) if "dicom" in args.layouts else ()) + (
            ("jpg", "manifest") if "jpg" in args.layouts else ()
        )
        planted = plant_anomalies(
            Path(args.out) / "clean",
            Path(args.out) / "planted",
            rates=uniform_rates(args.plant_anomalies),
            seed=args.seed,
            layouts=layouts,
            drift_mode=args.drift_mode,
        )
        print(planted.summary())
    return 0


def run_check(args: argparse.Namespace) -> int:
    from radalign.data.datacheck import check

    kwargs = {"section": args.section, "decode": args.decode}
    if args.all_views:
        kwargs["views"] = None
    report = check(args.source, **kwargs)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from radalign.data.prepare import prepare
    from radalign.data.records import split_option

    summary = prepare(
        args.source,
        args.out,
        size=args.size,
        dtype=args.dtype,
        workers=args.workers,
        shard_size=args.shard_size,
        views=None if args.all_views else ("PA", "AP"),
        section=args.section,
        split=split_option(args.split),
        window=args.window,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(summary.summary())
    print(f"train from it with `data.source: {args.out}`; skipped rows: {args.out}/skipped.csv")
    return 0
