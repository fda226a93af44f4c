"""``radalign embed``: global embeddings of scans or reports, written with their ids."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from radalign import cli_options

EXAMPLES = """examples:
  radalign embed --model tiny --images ../shared/data/nih_cxr14_subset/images --out emb.parquet
  radalign embed --model runs/demo/model --images scans.txt --out scans.npy
  radalign embed --model runs/demo/model --reports reports.csv --text-column report --out rep.parquet
"""


def add_parser(sub) -> None:
    p = cli_options.add_command(
        sub,
        "embed",
        help="embed scans or reports",
        description="Embed scans (DICOM/PNG/JPG: a folder, a list file or one file) or reports "
        "(a CSV/Parquet column) and write the vectors with their ids. Files that cannot be read "
        "are skipped, counted and listed in skipped.csv next to the output.",
        examples=EXAMPLES,
    )
    cli_options.add_model_options(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder (recursive), text file of paths, or one image")
    src.add_argument("--reports", help="CSV or Parquet file with a report column")
    p.add_argument("--text-column", default="report", help="report column (default: report)")
    p.add_argument("--id-column", default=None, help="id column (default: id, study_id or row)")
    p.add_argument("--out", required=True, help="output .parquet (one file) or .npy (+ .parquet)")
    cli_options.add_window_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from radalign.encoders.embed import embed_images, embed_texts, write_embeddings

    start = time.perf_counter()
    model, device = cli_options.load_model_option(args)
    precision = cli_options.resolve_precision_option(args, device)
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
            window=args.window,
            **cli_options.encoder_kwargs(args, device, precision),
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
