"""``radalign probe``: train a linear, early- or late-fusion head on cached embeddings."""

from __future__ import annotations

import argparse

from radalign.cli_options import (
    add_command,
    add_precision_option,
    encoder_kwargs,
    load_model_option,
    resolve_precision_option,
)

EXAMPLES = """examples:
  radalign probe --source runs/phantoms/jpg --model runs/demo/model --head early --out runs/probe
  radalign probe --image img.parquet --labels labels.csv --head linear --out runs/probe-lin
  radalign probe --image img.parquet --report rep.parquet --labels labels.csv \\
      --head late --task multilabel --class-weights --out runs/probe-late
  radalign probe --image runs/idx-images --report runs/idx-reports --head early \\
      --align procrustes --model runs/demo/model --out runs/probe-early
  radalign probe --image img.parquet --labels labels.csv --task multiclass --target view \\
      --head early --out runs/probe-view
"""


def add_inputs_option(parser: argparse.ArgumentParser) -> None:
    """``--inputs {both,image,report}``: the modalities a command embeds from its source."""
    parser.add_argument("--inputs", choices=("both", "image", "report"), default="both",
                        help="modalities embedded from the source (default both)")  # fmt: skip


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "probe",
        help="train a linear / early-fusion / late-fusion head on cached embeddings",
        description="Train a head on frozen embeddings from `radalign embed` (.parquet/.npy) or "
        "an index directory, one per modality, rows joined by id -- or straight from a dataset "
        "with --source and --model (one frontal scan per study; unreadable scans and reports "
        "without words are skipped and listed in OUT/skipped.csv). Labels come from --labels "
        "(CSV: id + one 0/1 column per class, optional split column) or from the label:<Class> "
        "columns of an index or the source's labels. Rows are split by that split column, else "
        "the source's (patient-level) split, else 70/15/15 by a keyed hash of the id. Writes "
        "OUT/metrics.json (accuracy, F1, AUROC with bootstrap CIs, training and inference time) "
        "and OUT/head.safetensors + OUT/config.json (radalign.heads.io.load_head(OUT)), "
        "atomically.",
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
    p.add_argument(
        "--source", default=None, help="embed this dataset (manifest, MIMIC/IU root) with --model"
    )
    add_inputs_option(p)
    p.add_argument(
        "--model", default=None, help="embed --source with this model, or check the embeddings"
    )
    p.add_argument("--batch-size", type=int, default=32, help="with --source")
    p.add_argument("--workers", type=int, default=2, help="with --source: decoding processes")
    p.add_argument("--device", default=None, help="with --source: cpu, cuda, ... (default: best)")
    add_precision_option(p)
    p.add_argument("--fingerprint", default=None, help="check this model fingerprint instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for CIs")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=run)


def _embed_source(args: argparse.Namespace):
    """``(image table, report table, skipped)`` of ``--source`` embedded with ``--model``."""
    from radalign.heads.source_embed import source_tables

    if args.image or args.report:
        raise ValueError("give --source or --image/--report embeddings, not both")
    if not args.model:
        raise ValueError("--source needs --model (the model that embeds it)")
    model, device = load_model_option(args)
    kw = encoder_kwargs(args, device, resolve_precision_option(args, device))
    tables, skipped = source_tables(model, args.source, args.inputs, **kw)
    if args.inputs == "report":
        return None, tables[0], skipped
    return tables[0], (tables[1] if len(tables) == 2 else None), skipped


def run(args: argparse.Namespace) -> int:
    from radalign.heads.probe import run_probe

    expected, skipped = args.fingerprint, None
    image, report = args.image, args.report
    if args.source:
        image, report, skipped = _embed_source(args)
    elif args.model:
        import radalign

        expected = radalign.load(args.model).fingerprint()
    options = vars(args)
    metrics = run_probe(
        image=image,
        report=report,
        classes=args.classes.split(",") if args.classes else None,
        use_class_weights=args.class_weights,
        expected_fingerprint=expected,
        skipped=skipped,
        **{
            k: options[k]
            for k in ("labels", "task", "target", "head", "align", "seed", "n_boot", "out")
        },
    )
    print(
        f"probe {args.head} ({args.task}): test AUROC {metrics['auroc_macro']:.3f}, "
        f"accuracy {metrics['accuracy']:.3f}, F1 {metrics['f1_macro']:.3f}, "
        f"{metrics['n_train']}/{metrics['n_val']}/{metrics['n_test']} rows"
        + (f"; {skipped.summary()}" if skipped is not None else "")
        + f" -> {args.out}"
    )
    return 0
