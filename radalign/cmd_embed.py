"""``radalign embed``: global embeddings of scans or reports, written with their ids."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from radalign.cli_options import add_precision_option, resolve_precision_option

EXAMPLES = """examples:
  radalign embed --model tiny --images ../shared/data/nih_cxr14_subset/images --out emb.parquet
  radalign embed --model runs/demo/model --images scans.txt --out scans.npy
  radalign embed --model runs/demo/model --reports reports.csv --text-column report --out rep.parquet
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "embed",
        help="embed scans or reports",
        description="Embed scans (DICOM/PNG/JPG: a folder, a list file or one file) or reports "
        "(a CSV/Parquet column) and write the vectors with their ids. Files that cannot be read "
        "are skipped, counted and listed in skipped.csv next to the output.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model name, config file or saved directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder (recursive), text file of paths, or one image")
    src.add_argument("--reports", help="CSV or Parquet file with a report column")
    p.add_argument("--text-column", default="report", help="report column (default: report)")
    p.add_argument("--id-column", default=None, help="id column (default: id, study_id or row)")
    p.add_argument("--out", required=True, help="output .parquet (one file) or .npy (+ .parquet)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    p.add_argument(
        "--window",
        default="header",
        choices=["header", "full", "percentile"],
        help="DICOM intensity window (default: header VOI LUT/window)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best)")
    add_precision_option(p)
    p.add_argument(
        "--random-init",
        action="store_true",
        help="build a named model with random weights (no hub needed)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from radalign.api import load
    from radalign.encoders.embed import embed_images, embed_texts, write_embeddings

    start = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load(args.model, pretrained=not args.random_init).to(device)
    precision = resolve_precision_option(args, device)
    if args.images:
        from radalign.encoders.imageio import list_images

        source = Path(args.images)
        paths = list_images(source)
        root = source if source.is_dir() else source.parent
        ids = [_relative_id(p, root) for p in paths]
        emb = embed_images(
            model,
            paths,
            ids,
            batch_size=args.batch_size,
            num_workers=args.workers,
            window=args.window,
            device=device,
            precision=precision,
        )
        total = len(paths)
    else:
        columns = _read_columns(Path(args.reports))
        if args.text_column not in columns:
            raise ValueError(
                f"{args.reports}: no column {args.text_column!r}; columns are {list(columns)}"
            )
        texts = columns[args.text_column]
        id_col = args.id_column or next((c for c in ("id", "study_id") if c in columns), None)
        ids = [str(i) for i in columns[id_col]] if id_col else [str(i) for i in range(len(texts))]
        emb = embed_texts(
            model, texts, ids, batch_size=args.batch_size, device=device, precision=precision
        )
        total = len(texts)
    written = write_embeddings(emb, args.out)
    secs = time.perf_counter() - start
    print(
        f"embedded {len(emb)} of {total} {emb.kind}s (dim {emb.vectors.shape[1]}) "
        f"in {secs:.1f}s ({emb.precision}); {emb.skipped.summary()}"
    )
    for path in written:
        print(f"  wrote {path}")
    if len(emb.skipped):
        for path, reason, _ in emb.skipped.rows[:10]:
            print(f"  skipped {path}: {reason}", file=sys.stderr)
    return 0


def _relative_id(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _read_columns(path: Path) -> dict[str, list]:
    """Columns of a CSV or Parquet file as Python lists.

    CSV bytes that are not UTF-8 are kept (as surrogates) so that the rows holding them can be
    skipped one by one as "non-UTF-8 text" instead of failing the whole file.
    """
    import csv

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        return {c: frame[c].tolist() for c in frame.columns}
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}: empty file")
    header, body = rows[0], rows[1:]
    return {name: [r[i] if i < len(r) else "" for r in body] for i, name in enumerate(header)}
