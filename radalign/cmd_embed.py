"""``radalign embed``: global embeddings of scans or reports, written with their ids.

Resumable (finished chunks wait in ``OUT.partial/``) and, under ``torchrun`` / ``accelerate
launch``, shared across processes and nodes; see :func:`radalign.encoders.embed_chunks.embed_to_file`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radalign import cli_options

DEFAULT_CHUNK_ROWS = 4096
"""Same as ``radalign.encoders.sharded_work.DEFAULT_CHUNK_ROWS`` (kept here so ``--help`` stays
fast: no torch import at parse time)."""

EXAMPLES = """examples:
  radalign embed --model tiny --images ../shared/data/nih_cxr14_subset/images --out emb.parquet
  radalign embed --model runs/demo/model --images scans.txt --out scans.npy
  radalign embed --model runs/demo/model --reports reports.csv --text-column report --out rep.parquet
  torchrun --nproc_per_node 4 -m radalign embed --model runs/demo/model --images /data/scans \\
      --out scans.parquet   # each process embeds its share of the chunks; rank 0 writes
  ACCELERATE_USE_CPU=1 python -m accelerate.commands.launch --multi_gpu --num_processes 2 \\
      -m radalign embed --model tiny --reports reports.csv --out rep.parquet
"""


def add_parser(sub) -> None:
    p = cli_options.add_command(
        sub,
        "embed",
        help="embed scans or reports",
        description="Embed scans (DICOM/PNG/JPG: a folder, a list file or one file) or reports "
        "(a CSV/Parquet column) and write the vectors with their ids. Files that cannot be read "
        "are skipped, counted and listed in skipped.csv next to the output. Finished chunks are "
        "kept in OUT.partial/ until the output is written, so a rerun of an interrupted job "
        "embeds only what is missing; under torchrun or accelerate launch every process embeds "
        "its share of the chunks and rank 0 writes the one output.",
        examples=EXAMPLES,
    )
    cli_options.add_model_options(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder (recursive), text file of paths, or one image")
    src.add_argument("--reports", help="CSV or Parquet file with a report column")
    p.add_argument("--text-column", default="report", help="report column (default: report)")
    p.add_argument("--id-column", default=None, help="id column (default: id, study_id or row)")
    p.add_argument("--out", required=True, help="output .parquet (one file) or .npy (+ .parquet)")
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"inputs per resumable chunk (default: {DEFAULT_CHUNK_ROWS})",
    )
    cli_options.add_window_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from radalign.encoders.embed_chunks import embed_to_file
    from radalign.encoders.sharded_work import join_processes, leave_processes

    rank, _, args.device = join_processes(args.device)
    try:
        model, device = cli_options.load_model_option(args)
        precision = cli_options.resolve_precision_option(args, device)
        kwargs = cli_options.encoder_kwargs(args, device, precision)
        embed_run = embed_to_file(
            model, args.out, **_inputs(args), chunk_rows=args.chunk_rows, progress=True, **kwargs
        )
    finally:
        leave_processes()
    if rank != 0:
        return 0
    print(embed_run.line())
    for path in embed_run.written:
        print(f"  wrote {path}")
    for path, reason, _ in embed_run.embeddings.skipped.rows[:10]:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    return 0


def _inputs(args: argparse.Namespace) -> dict:
    """``paths`` (+ ``window``) or ``texts``, with their ``ids``, from ``--images`` / ``--reports``."""
    if args.images:
        from radalign.encoders.imageio import list_images

        source = Path(args.images)
        paths = list_images(source)
        root = source if source.is_dir() else source.parent
        ids = [_relative_id(p, root) for p in paths]
        return {"paths": paths, "ids": ids, "window": args.window}
    columns = _read_columns(Path(args.reports))
    if args.text_column not in columns:
        raise ValueError(
            f"{args.reports}: no column {args.text_column!r}; columns are {list(columns)}"
        )
    texts = columns[args.text_column]
    id_col = args.id_column or next((c for c in ("id", "study_id") if c in columns), None)
    ids = [str(i) for i in columns[id_col]] if id_col else [str(i) for i in range(len(texts))]
    return {"texts": texts, "ids": ids}


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
