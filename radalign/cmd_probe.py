"""``radalign probe``: train a linear, early- or late-fusion head on cached embeddings."""

from __future__ import annotations

import argparse

from radalign.cli_options import add_command

EXAMPLES = """examples:
  radalign probe --image img.parquet --labels labels.csv --head linear --out runs/probe-lin
  radalign probe --image img.parquet --report rep.parquet --labels labels.csv \\
      --head late --task multilabel --class-weights --out runs/probe-late
  radalign probe --image runs/idx-images --report runs/idx-reports --head early \\
      --align procrustes --model runs/demo/model --out runs/probe-early
  radalign probe --image img.parquet --labels labels.csv --task multiclass --target view \\
      --head early --out runs/probe-view
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "probe",
        help="train a linear / early-fusion / late-fusion head on cached embeddings",
        description="Train a head on frozen embeddings from `radalign embed` (.parquet/.npy) or "
        "an index directory, one per modality, rows joined by id. Labels come from --labels "
        "(CSV: id + one 0/1 column per class, optional split column) or from the label:<Class> "
        "columns of an index. Without a split column rows are split 70/15/15 by a stable hash "
        "of the id. Writes OUT/metrics.json (accuracy, F1, AUROC with bootstrap CIs, training "
        "and inference time) and OUT/head.safetensors + OUT/config.json "
        "(radalign.heads.io.load_head(OUT)), atomically.",
        examples=EXAMPLES,
    )
    p.add_argument("--image", default=None, help="image embeddings: .parquet/.npy or index dir")
    p.add_argument("--report", default=None, help="report embeddings: .parquet/.npy or index dir")
    p.add_argument("--labels", default=None, help="labels CSV (default: the index's labels)")
    p.add_argument("--classes", default=None, help="comma-separated label columns (default: all)")
    p.add_argument("--task", choices=("multilabel", "multiclass"), default="multilabel")
    p.add_argument("--target", default=None, help="multiclass: the column holding the class")
    p.add_argument("--head", choices=("linear", "early", "late"), default="linear")
    p.add_argument("--class-weights", action="store_true", help="weight classes by frequency")
    p.add_argument(
        "--align",
        choices=("none", "centre", "procrustes"),
        default="none",
        help="modality-gap alignment fitted on the training rows (needs both modalities)",
    )
    p.add_argument("--model", default=None, help="check the embeddings came from this model")
    p.add_argument("--fingerprint", default=None, help="check this model fingerprint instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for CIs")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from radalign.heads.probe import run_probe

    expected = args.fingerprint
    if args.model:
        import radalign

        expected = radalign.load(args.model).fingerprint()
    metrics = run_probe(
        image=args.image,
        report=args.report,
        labels=args.labels,
        classes=args.classes.split(",") if args.classes else None,
        task=args.task,
        target=args.target,
        head=args.head,
        use_class_weights=args.class_weights,
        align=args.align,
        expected_fingerprint=expected,
        seed=args.seed,
        n_boot=args.n_boot,
        out=args.out,
    )
    print(
        f"probe {args.head} ({args.task}): test AUROC {metrics['auroc_macro']:.3f}, "
        f"accuracy {metrics['accuracy']:.3f}, F1 {metrics['f1_macro']:.3f}, "
        f"{metrics['n_train']}/{metrics['n_val']}/{metrics['n_test']} rows -> {args.out}"
    )
    return 0
