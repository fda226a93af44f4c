"""``radalign zeroshot``: per-finding probabilities for scans from prompt pairs, and evaluation."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from radalign import cli_options

EXAMPLES = """examples:
  radalign zeroshot --model runs/demo/model scans/ --out preds.csv
  radalign zeroshot --model runs/demo/model --source phantoms/jpg --split test --out preds.csv
  radalign zeroshot --model runs/demo/model --labels ../shared/data/nih_cxr14_subset/manifest.csv \\
      --out nih.csv --eval-out nih_eval.csv
  radalign zeroshot --model tiny --random-init scan.png --prompts my_prompts.yaml

Probability of a finding = softmax over its (positive, negative) prompt pair of
logit_scale * cosine (the model's learned scale, at most 100; --temperature T uses 1/T).
Each `<finding>_pred` column is 1 where the probability is >= --threshold.
"""

# Label names from other datasets that mean a prompt-set class (compared lower-case, spaces).
_ALIASES = {"effusion": "pleural effusion"}


def add_parser(sub) -> None:
    p = cli_options.add_command(
        sub,
        "zeroshot",
        help="zero-shot classify scans with prompt pairs",
        description="Score scans (DICOM/PNG/JPG files or folders, or a data source) against "
        "positive/negative prompts for each finding and write per-scan probabilities and "
        "decisions. Unreadable scans are skipped and listed in skipped.csv next to the output. "
        "With labels (--labels, or a --source that has them) also print and write an "
        "evaluation table (AUROC with bootstrap CI, accuracy, F1 per finding, and macro AUROC).",
        examples=EXAMPLES,
    )
    p.add_argument("scans", nargs="*", help="image files, folders (recursive) or list files")
    cli_options.add_model_options(p)
    p.add_argument(
        "--source",
        default=None,
        help="data source instead of scans (MIMIC-CXR(-JPG) root, IU X-ray root or manifest); "
        "its labels are used for evaluation",
    )
    p.add_argument(
        "--split",
        default="test",
        help="split of --source (or of --labels given alone): train, val, test or all "
        "(default test)",
    )
    p.add_argument(
        "--views",
        default="PA,AP",
        help="views of --source (or of --labels given alone) to keep, comma-separated, or 'all' "
        "(default PA,AP)",
    )
    p.add_argument(
        "--prompts", default="chexpert", help="built-in prompt set name or a JSON/YAML file"
    )
    p.add_argument("--out", default="zeroshot.csv", help="output .csv or .parquet")
    p.add_argument("--threshold", type=float, default=0.5, help="decision threshold (0.5)")
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="use 1/T as the logit scale instead of the model's learned one (clamped to <= 100)",
    )
    p.add_argument(
        "--labels",
        default=None,
        help="manifest CSV/Parquet with image_path and label columns (1/0/-1/blank); rows are "
        "matched to scans by path. Given alone, its images are the scans",
    )
    p.add_argument(
        "--missing-labels",
        default="negative",
        choices=["negative", "ignore"],
        help="a finding absent from a labelled record: negative (CheXpert 'not mentioned', "
        "default) or ignore",
    )
    p.add_argument("--eval-out", default=None, help="evaluation CSV (default: <out>.eval.csv)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CI")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    cli_options.add_window_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from radalign.encoders.embed import embed_images
    from radalign.zeroshot.classifier import PromptClassifier
    from radalign.zeroshot.prompts import load_prompt_set

    start = time.perf_counter()
    if args.scans and args.source:
        raise ValueError("give scans or --source, not both")
    if args.source and args.labels:
        raise ValueError("--labels is for scans; a --source brings its own labels")
    if not (args.scans or args.source or args.labels):
        raise ValueError("nothing to classify: give scans, --source or --labels")
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    prompt_set = load_prompt_set(args.prompts)
    out = Path(args.out)

    paths, ids, labels, note, source_skips = _inputs(args)
    model, device = cli_options.load_model_option(args)
    precision = cli_options.resolve_precision_option(args, device)
    clf = PromptClassifier(
        model, prompt_set, temperature=args.temperature, device=device, precision=precision
    )
    emb = embed_images(
        model, paths, ids, window=args.window, **cli_options.encoder_kwargs(args, device, precision)
    )
    if source_skips is not None:  # rows the source could not use (e.g. missing image files)
        emb.skipped.rows[:0] = [r for r in source_skips.rows if r[1] != "empty report"]
    probs = clf.predict(emb.vectors, emb.metadata["id"].tolist())
    table = _prediction_table(probs, emb.metadata["path"].tolist(), clf, args.threshold)
    _write_table(table, out)
    skipped_csv = emb.skipped.write_csv(out.parent / "skipped.csv")
    secs = time.perf_counter() - start
    print(
        f"classified {len(probs)} of {len(paths)} scans{note} for {len(clf.classes)} findings "
        f"({prompt_set.name} prompts, scale {clf.scale:.3g}) in {secs:.1f}s ({emb.precision}); "
        f"{emb.skipped.summary()}"
    )
    print(f"  wrote {out}")
    if len(emb.skipped):
        print(f"  wrote {skipped_csv}")
        for path, reason, _ in emb.skipped.rows[:10]:
            print(f"  skipped {path}: {reason}", file=sys.stderr)

    if labels is not None:
        from radalign.zeroshot.metrics import evaluate

        labels = _match_classes(labels, clf.classes)
        if labels.shape[1] == 0:
            print("  no label column matches a prompt-set class; nothing to evaluate")
            return 0
        result = evaluate(probs, labels, args.threshold, n_boot=args.n_boot, seed=args.seed)
        eval_out = Path(args.eval_out) if args.eval_out else out.with_suffix(".eval.csv")
        _write_table(result, eval_out)
        print(result.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"  wrote {eval_out}")
    return 0


# ---------------------------------------------------------------------- inputs
def _inputs(args):
    """``(paths, ids, labels frame or None, note, SkipLog or None)`` from scans, --source or
    --labels (alone)."""
    if args.source or (args.labels and not args.scans):
        pairs = _open(args.source or args.labels, args.split, args.views)
        paths = [r.image_path for r in pairs]
        ids = [r.id for r in pairs]
        labels = _label_frame(pairs.records, ids, args.missing_labels)
        return paths, ids, labels, f" from {pairs.description or pairs.root}", pairs.skipped

    from radalign.encoders.imageio import list_images

    paths, ids = [], []
    for source in map(Path, args.scans):
        found = list_images(source)
        root = source if source.is_dir() else source.parent
        paths += found
        ids += [_relative_id(p, root) for p in found]
    if len(set(ids)) != len(ids):  # the same relative name under two folders
        ids = [p.as_posix() for p in paths]
    if not paths:
        raise ValueError(f"no images found in {', '.join(args.scans)}")
    labels = None
    if args.labels:  # matched to the scans by path, so every split and view is kept
        by_path = {_key(r.image_path): r for r in _open(args.labels, None, None)}
        matched = [by_path.get(_key(p)) for p in paths]
        n = sum(r is not None for r in matched)
        if n == 0:
            raise ValueError(f"{args.labels}: no row's image_path matches any of the scans")
        rows = [r for r in matched if r is not None]
        labels = _label_frame(rows, [i for i, r in zip(ids, matched) if r], args.missing_labels)
        print(f"  {n} of {len(paths)} scans have labels in {args.labels}")
    return paths, ids, labels, "", None


def _open(path: str, split: str | None, views: str | None):
    """The records of ``path`` that have an image (reports are not needed here)."""
    from radalign.data.sources import open_records

    return open_records(path, split=split, views=views, require_report=False, require_images=True)


def _label_frame(records, ids, missing: str):
    """Labels (1/0/-1, NaN unknown) indexed by id; absent keys -> 0 or NaN (``missing``)."""
    import numpy as np
    import pandas as pd

    names = sorted({k for r in records for k in r.labels})
    fill = 0.0 if missing == "negative" else np.nan
    rows = [
        {n: float(r.labels.get(n, fill)) if r.labels else np.nan for n in names} for r in records
    ]
    return pd.DataFrame(rows, index=pd.Index(ids, name="id"), columns=names, dtype=float)


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", " ", str(name)).strip().lower()


def _match_classes(labels, classes: list[str]):
    """Rename label columns to the prompt-set class they name (case, ``_`` and aliases aside)."""
    wanted = {_norm(c): c for c in classes}
    rename = {}
    for col in labels.columns:
        key = _ALIASES.get(_norm(col), _norm(col))
        if key in wanted and wanted[key] not in rename.values():
            rename[col] = wanted[key]
    return labels[list(rename)].rename(columns=rename)


def _key(path) -> str:
    return str(Path(path).resolve())


def _relative_id(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


# ---------------------------------------------------------------------- outputs
def _prediction_table(probs, paths: list[str], clf, threshold: float):
    import pandas as pd

    decisions = clf.decide(probs, threshold).astype(int)
    cols = {"id": probs.index.astype(str), "path": paths}
    for c in clf.classes:
        cols[c] = probs[c].to_numpy()
    for c in clf.classes:
        cols[f"{c}_pred"] = decisions[c].to_numpy()
    return pd.DataFrame(cols)


def _write_table(frame, path: Path) -> None:
    from radalign.encoders.atomic import atomic_write

    if path.suffix.lower() in (".parquet", ".pq"):
        with atomic_write(path, "wb") as fh:
            frame.to_parquet(fh, index=False)
    else:
        with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
            frame.to_csv(fh, index=False)
