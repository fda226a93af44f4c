"""``radalign flag``: image–report pairs whose report does not describe the image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from radalign import cli_options

EXAMPLES = """examples:
  radalign flag --model runs/demo/model --index runs/demo/report-index runs/phantoms/jpg \\
      --split test --fpr 0.05 --out flags.csv
  radalign flag --model runs/demo/model --index runs/demo/report-index pairs.csv --out flags.csv
  radalign flag ... --evaluate      # also plant swapped and left/right-flipped reports: AUROC
"""


def add_parser(sub) -> None:
    p = cli_options.add_command(
        sub,
        "flag",
        help="flag image-report pairs whose report does not describe the image",
        description="Scores every (image, report) pair of a manifest or dataset root against an "
        "index of reference reports (radalign index build --kind reports), flags the pairs "
        "above the threshold fitted to a target false-positive rate, and explains each flag with "
        "the zero-shot findings on which image and report disagree.",
        examples=EXAMPLES,
    )
    p.add_argument("source", help="manifest CSV/Parquet, or a MIMIC-CXR / IU X-ray root")
    cli_options.add_model_options(p, workers=False, random_init=False)
    p.add_argument("--index", required=True, help="report index built with this model")
    p.add_argument("--image-index", help="optional image index: adds the report-side score")
    p.add_argument("--split", help="only this split of the source (train/val/test)")
    p.add_argument("--fpr", type=float, default=0.05, help="target false-positive rate")
    p.add_argument("--reference", help="pairs taken as correct to fit the threshold on "
                   "(default: the flagged pairs themselves)")  # fmt: skip
    p.add_argument("-k", type=int, default=10, help="neighbours per pair (default 10)")
    p.add_argument("--prompts", default="chexpert", help="prompt set for the explanations")
    p.add_argument("--out", default="flags.csv", help="output CSV (default flags.csv)")
    p.add_argument("--evaluate", action="store_true",
                   help="plant swapped and laterality-flipped reports and report their AUROC")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the planted anomalies")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from radalign.encoders.atomic import atomic_write
    from radalign.retrieval.search import open_index
    from radalign.zeroshot.classifier import PromptClassifier
    from radalign.zeroshot.mismatch import MismatchScorer, flag_pairs

    model, device = cli_options.load_model_option(args)
    model = model.eval()
    args.precision = cli_options.resolve_precision_option(args, device)
    scorer = MismatchScorer(
        open_index(model, args.index),
        k=args.k,
        image_index=open_index(model, args.image_index) if args.image_index else None,
    )
    pairs, u, t, skipped = _embedded_pairs(
        model, _open(args.source, args.split), args.batch_size, args.precision
    )
    reference = None
    if args.reference:
        ref_pairs, ru, rt, _ = _embedded_pairs(
            model, _open(args.reference, None), args.batch_size, args.precision
        )
        reference = scorer.score(ru, rt, ref_pairs["study_id"].tolist())["score"].to_numpy()
    classifier = PromptClassifier(model, args.prompts, precision=args.precision)
    table, threshold = flag_pairs(
        scorer, classifier, u, t, fpr=args.fpr, study_ids=pairs["study_id"].tolist(),
        reference_scores=reference,
    )  # fmt: skip
    out = pairs[["id", "study_id", "image_path"]].reset_index(drop=True).join(table)
    out = out.sort_values("score", ascending=False)
    path = Path(args.out)
    with atomic_write(path, mode="w", encoding="utf-8", newline="") as fh:
        out.to_csv(fh, index=False)
    skipped.write_csv(path.parent / "skipped.csv")
    print(
        f"flagged {int(out['flagged'].sum())} of {len(out)} pairs at fpr {args.fpr} "
        f"(threshold {threshold:.4f}); {skipped.summary()}; wrote {path}"
    )
    if args.evaluate:
        result = _evaluate(model, scorer, pairs, u, args)
        result["threshold"] = threshold
        eval_path = path.with_name(path.stem + "-eval.json")
        with atomic_write(eval_path, mode="w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
        print(
            f"planted anomalies: swap AUROC {result.get('swap', float('nan')):.3f} "
            f"(n={int(result.get('n_swap', 0))}), laterality-flip AUROC "
            f"{result.get('flip', float('nan')):.3f} (n={int(result.get('n_flip', 0))}) "
            f"against {int(result['n_original'])} originals; wrote {eval_path}"
        )
    return 0


def _open(source: str, split: str | None):
    """The (image, report) pairs of ``source`` (frontal views), with what it skipped."""
    from radalign.data.sources import open_records

    return open_records(source, split=split, require_images=True)


def _embedded_pairs(model, pairset, batch_size: int, precision="auto"):
    """The pairs of ``pairset`` with both an image and a report embedded, and what was
    skipped (by the source and by the encoders)."""
    import pandas as pd

    from radalign.encoders.embed import embed_pairs

    records = pairset.records
    embedded = embed_pairs(model, records, batch_size=batch_size, precision=precision)
    skipped = pairset.skipped
    skipped.rows.extend(embedded.skipped.rows)
    by_id = {r.id: r for r in records}
    keep = [by_id[i] for i in embedded.ids]
    pairs = pd.DataFrame(
        {
            "id": [r.id for r in keep],
            "study_id": [r.study_id for r in keep],
            "patient_id": [r.patient_id for r in keep],
            "image_path": [str(r.image_path) for r in keep],
            "report": [r.report for r in keep],
        }
    )
    u, t = embedded.image, embedded.text
    return pairs, u, t, skipped


def _evaluate(model, scorer, pairs, u: np.ndarray, args) -> dict:
    """AUROC of the mismatch score for planted swaps and left/right flips."""
    from radalign.zeroshot.mismatch import evaluate_planted

    return evaluate_planted(
        model,
        scorer,
        u,
        pairs["report"].tolist(),
        pairs["patient_id"].tolist(),
        pairs["study_id"].tolist(),
        seed=args.seed,
        precision=args.precision,
    )
