"""``radalign retrieve``: similar reports for scans, scans for text, and retrieval evaluation."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from radalign import cli_options

EXAMPLES = """examples:
  radalign retrieve --model runs/demo/model --index idx/reports scan.dcm more_scans/ -k 5
  radalign retrieve --model runs/demo/model --index idx/reports scans/ --format csv --out hits.csv
  radalign retrieve --model runs/demo/model --index idx/scans --text "left pleural effusion"
  radalign retrieve --model runs/demo/model --eval /data/mimic-cxr-jpg --split test \\
      --ids ids.json --out results.json

With --eval, the CheXpert 5x200 subset of the split is chosen (or read from --ids when that file
exists, else written there) and image->report / report->image Recall@K and label-match
Precision@K are computed; no index is needed.
"""


def add_parser(sub) -> None:
    p = cli_options.add_command(
        sub,
        "retrieve",
        help="retrieve reports for scans or scans for text; evaluate retrieval",
        description="Search an index built by `radalign index build` with scans (files,\n"
        "folders or list files) or with free text, or evaluate retrieval (--eval).\n"
        "The index must have been built by the same model.",
        examples=EXAMPLES,
    )
    cli_options.add_model_options(p)
    p.add_argument("--index", default=None, help="index directory (not needed with --eval)")
    p.add_argument("scans", nargs="*", help="scan files, folders or list files")
    p.add_argument("--text", action="append", default=None, help="query text (repeat for several)")
    p.add_argument("-k", type=int, default=5, help="hits per query (default 5)")
    p.add_argument("--format", choices=["table", "json", "csv"], default=None)
    p.add_argument(
        "--out", default=None, help="write results here (format from --format or suffix)"
    )
    ev = p.add_argument_group("evaluation (--eval)")
    ev.add_argument("--eval", metavar="SOURCE", default=None, help="dataset to evaluate on")
    ev.add_argument(
        "--split", default="test", help="split to evaluate: train, val, test or all (default test)"
    )
    ev.add_argument("--layout", default="auto", help="source layout (default: detect)")
    ev.add_argument("--ids", default=None, help="id list JSON: read if it exists, else written")
    ev.add_argument("--n", type=int, default=200, help="cases per class (default 200)")
    ev.add_argument("--seed", type=int, default=0, help="seed for choosing cases")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    modes = [bool(args.scans), bool(args.text), bool(args.eval)]
    if sum(modes) != 1:
        raise ValueError("give scans, --text, or --eval SOURCE (exactly one of them)")
    if not args.eval and not args.index:
        raise ValueError("--index is required to retrieve (build one with `radalign index build`)")
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    model, device = cli_options.load_model_option(args)
    precision = cli_options.resolve_precision_option(args, device)
    if args.eval:
        return _evaluate(args, model, device, precision)
    from radalign.retrieval.search import format_results, retrieve_for_scans, retrieve_for_text

    if args.scans:
        frame = retrieve_for_scans(
            model,
            args.index,
            args.scans,
            k=args.k,
            **cli_options.encoder_kwargs(args, device, precision),
        )
    else:
        frame = retrieve_for_text(
            model, args.index, args.text, k=args.k, device=device, precision=precision
        )
    fmt = args.format or _format_from_suffix(args.out)
    text = format_results(frame, fmt)
    if args.out:
        from radalign.encoders.atomic import atomic_write

        with atomic_write(Path(args.out), "w") as fh:
            fh.write(text)
        print(f"wrote {frame['query_id'].nunique()} queries x {args.k} hits to {args.out}")
    else:
        sys.stdout.write(text)
    skipped = frame.attrs.get("skipped")
    if skipped is not None and len(skipped):
        print(skipped.summary(), file=sys.stderr)
        for path, reason, _ in skipped.rows[:10]:
            print(f"  skipped {path}: {reason}", file=sys.stderr)
    return 0


def _format_from_suffix(out: str | None) -> str:
    if out is None:
        return "table"
    return {".json": "json", ".csv": "csv"}.get(Path(out).suffix.lower(), "table")


def _evaluate(args: argparse.Namespace, model, device, precision) -> int:
    from radalign.data.records import ALL_SPLITS, split_option
    from radalign.data.sources import open_records
    from radalign.encoders.atomic import atomic_write
    from radalign.retrieval.evaluate import evaluate_retrieval, load_ids, make_5x200, save_ids

    pairs = open_records(
        args.eval,
        layout=args.layout,
        split=args.split,
        one_image_per_study=True,
        require_images=True,
    )
    records = pairs.records
    if args.ids and Path(args.ids).is_file():
        selection = load_ids(args.ids)
        print(f"using the case ids in {args.ids}")
    else:
        selection = make_5x200(records, n=args.n, seed=args.seed)
        if args.ids:
            save_ids(selection, args.ids, n=args.n, seed=args.seed)
            print(f"wrote the chosen case ids to {args.ids}")
    result = evaluate_retrieval(
        model,
        records,
        ids=selection,
        n=args.n,
        seed=args.seed,
        **cli_options.encoder_kwargs(args, device, precision),
    )
    result["source"] = str(args.eval)
    result["split"] = split_option(args.split) or ALL_SPLITS
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        with atomic_write(Path(args.out), "w") as fh:
            fh.write(text)
        print(f"wrote {args.out}")
    per_class = ", ".join(f"{c}: {n}" for c, n in result["per_class"].items())
    print(f"{result['cases']} cases ({per_class})")
    for direction in ("image_to_report", "report_to_image"):
        scores = "  ".join(f"{k} {v:.3f}" for k, v in result[direction].items())
        print(f"  {direction}: {scores}")
    return 0
