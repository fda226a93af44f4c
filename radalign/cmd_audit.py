"""``radalign audit``: find what is wrong in an archive of scans, reports and metadata."""

from __future__ import annotations

import argparse

from radalign import cli_options

EXAMPLES = """examples:
  radalign data synth --out runs/audit-phantoms --n 400 --plant-anomalies 0.025
  radalign audit runs/audit-phantoms/planted/jpg --model tiny --random-init --out runs/audit
  radalign audit /data/mimic-cxr-jpg/2.0.0 --model runs/demo/model --out runs/mimic-audit
  radalign audit ../shared/data/covid_chestxray/manifest.csv --out runs/covid-audit   # no model:
                                                   # rule, statistics and hash checks only
"""


def add_parser(sub) -> None:
    p = cli_options.add_command(
        sub,
        "audit",
        help="audit an archive: missing data, entry errors, outliers, temporal anomalies, "
        "mismatch, inconsistent metadata, duplicates, drift",
        description="Reads any source radalign reads (MIMIC-CXR DICOM/JPG, IU X-ray, CSV/Parquet "
        "manifests) without modifying it and writes OUT/issues.csv, issues.parquet, summary.json "
        "and audit.html. A killed audit reruns from OUT/cache.",
        examples=EXAMPLES,
    )
    p.add_argument("source", help="MIMIC-CXR root, IU X-ray root, or a CSV/Parquet manifest")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default=None,
                   help="model for the embedding checks (name, config or saved directory); "
                   "without it only rule, statistics and hash checks run")  # fmt: skip
    p.add_argument("--random-init", action="store_true",
                   help="build a named model with random weights (no hub needed)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best)")
    cli_options.add_precision_option(p)
    p.add_argument("-k", type=int, default=10, help="neighbours for the kNN checks (default 10)")
    p.add_argument("--no-resume", action="store_true", help="ignore OUT/cache from an earlier run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from radalign.audit.run import run_audit

    model = device = None
    if args.model:
        model, device = cli_options.load_model_option(args)
        args.precision = cli_options.resolve_precision_option(args, device)
    result = run_audit(
        args.source,
        out=args.out,
        model=model,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
        progress=not args.quiet,
        resume=not args.no_resume,
        k=args.k,
    )
    print(result.counts())
    print(f"wrote {', '.join(str(p) for p in result.files)}")
    return 0
