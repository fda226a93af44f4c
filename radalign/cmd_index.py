"""``radalign index``: build, extend and describe embedding indices of reports or scans."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from radalign import cli_options

EXAMPLES = """examples:
  radalign index build --model runs/demo/model --source /data/mimic-cxr-jpg --split train \\
      --kind reports --out idx/reports
  radalign index build --model tiny --source manifest.csv --kind images --out idx/scans \\
      --memory-budget 2GB
  radalign index build --model runs/demo/model --source /data/mimic-cxr-jpg --kind images \\
      --out idx/scans --on-disk     # IVF-PQ with its inverted lists in idx/scans/index.ivfdata
  radalign index add --model runs/demo/model --index idx/reports --source more.csv
  radalign index info idx/reports
  torchrun --nproc_per_node 4 -m radalign index build --model runs/demo/model \\
      --source /data/mimic-cxr-jpg --kind images --out idx/scans   # one shard of chunks per process
"""


def _common(p: argparse.ArgumentParser) -> None:
    cli_options.add_model_options(p)
    p.add_argument(
        "--source",
        required=True,
        help="MIMIC-CXR (DICOM or JPG) root, IU X-ray root, or a CSV/Parquet manifest",
    )
    p.add_argument("--split", default=None, help="only this split (train, val, test)")
    p.add_argument("--layout", default="auto", help="source layout (default: detect)")
    p.add_argument(
        "--views",
        default="PA,AP",
        help="comma-separated views to keep (default: PA,AP; 'all' keeps every view)",
    )
    p.add_argument("--chunk-rows", type=int, default=4096, help="rows per resumable chunk")


def add_parser(sub) -> None:
    p = cli_options.add_command(
        sub,
        "index",
        help="build and extend embedding indices for retrieval",
        description="Embed the reports or scans of a dataset and store them in a searchable "
        "index directory (FAISS index, vectors, metadata, manifest with the model fingerprint). "
        "Builds resume after an interruption; unreadable inputs are listed in skipped.csv.",
        examples=EXAMPLES,
    )
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    b = cli_options.add_command(
        isub,
        "build",
        help="build a new index",
        description="Build an index of reports (text) or images from a dataset.",
        examples=EXAMPLES,
    )
    _common(b)
    b.add_argument("--kind", choices=["reports", "images"], default="reports")
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument("--factory", default=None, help="FAISS index_factory string (default: auto)")
    b.add_argument(
        "--memory-budget",
        default=None,
        help="resident index size limit, e.g. 2GB (auto index; switches to on-disk inverted "
        "lists when the in-RAM IVF-PQ codes do not fit)",
    )
    b.add_argument(
        "--on-disk",
        action="store_true",
        help="keep the IVF inverted lists in a memory-mapped file (index.ivfdata): resident "
        "memory is the quantiser, the OS pages the lists; with --factory, an IVF string",
    )
    b.set_defaults(run=run, index_action=_build)

    a = isub.add_parser(
        "add",
        help="append records to an existing index",
        description="Embed more records with the index's model and append them; ids already "
        "in the index are left out.",
    )
    _common(a)
    a.add_argument("--index", required=True, help="index directory to extend")
    a.set_defaults(run=run, index_action=_add)

    i = isub.add_parser("info", help="describe an index directory")
    i.add_argument("index_dir", help="index directory")
    i.add_argument("--json", action="store_true", help="print the description as JSON")
    i.set_defaults(run=run, index_action=_info)


def run(args: argparse.Namespace) -> int:
    return int(args.index_action(args) or 0)


def _join_processes(args: argparse.Namespace) -> tuple[int, int]:
    """Under ``torchrun`` / ``accelerate launch``: join the process group and, without
    ``--device``, put each rank on its own GPU (``LOCAL_RANK``). ``(rank, world)``."""
    import os

    from radalign.retrieval.build import init_distributed_from_env

    rank, world = init_distributed_from_env()
    if world > 1 and args.device is None:
        import torch

        if torch.cuda.is_available():
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return rank, world


def _leave_processes(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def _embed_options(args: argparse.Namespace, device) -> dict:
    """Keyword arguments of ``build_index`` / ``add_to_index`` shared by both actions."""
    precision = cli_options.resolve_precision_option(args, device)
    return {
        **cli_options.encoder_kwargs(args, device, precision),
        "chunk_rows": args.chunk_rows,
        "progress": True,
    }


def _open(args: argparse.Namespace, kind: str):
    from radalign.data.sources import open_records

    return open_records(
        args.source,
        layout=args.layout,
        split=args.split,
        views=args.views,
        one_image_per_study=kind == "reports",
        require_report=kind == "reports",
    )


def _report_source(pairs) -> None:
    print(f"source: {pairs.description or pairs.root} ({len(pairs)} records)")
    if len(pairs.skipped):
        print(f"  source rows skipped: {pairs.skipped.summary()}")


def _build(args: argparse.Namespace) -> int:
    from radalign.retrieval.build import build_index

    rank, world = _join_processes(args)
    model, device = cli_options.load_model_option(args)
    pairs = _open(args, args.kind)
    if rank == 0:
        _report_source(pairs)
    try:
        index = build_index(
            model,
            pairs,
            kind=args.kind,
            out=args.out,
            factory=_factory_option(args),
            memory_budget=args.memory_budget,
            **_embed_options(args, device),
        )
    finally:
        _leave_processes(world)
    if rank != 0:
        return 0
    print(index.build_summary.line())
    print(f"wrote {args.out}: {len(index)} vectors, factory {index.factory}")
    if index.build_summary.skipped:
        print(f"  skipped inputs listed in {Path(args.out) / 'skipped.csv'}", file=sys.stderr)
    return 0


def _factory_option(args: argparse.Namespace) -> str | None:
    """``--factory`` with radalign's ``,OnDisk`` suffix under ``--on-disk`` (alone: "OnDisk",
    the IVF index chosen for the corpus size, on disk)."""
    if not args.on_disk:
        return args.factory
    from radalign.retrieval.index_choice import ON_DISK_SUFFIX, split_storage

    rest = split_storage(args.factory or "")[0]
    return rest + ON_DISK_SUFFIX if rest else ON_DISK_SUFFIX[1:]


def _add(args: argparse.Namespace) -> int:
    from radalign.retrieval.build import add_to_index, index_kind

    rank, world = _join_processes(args)
    model, device = cli_options.load_model_option(args)
    pairs = _open(args, index_kind(args.index))
    if rank == 0:
        _report_source(pairs)
    try:
        index = add_to_index(model, args.index, pairs, **_embed_options(args, device))
    finally:
        _leave_processes(world)
    if rank != 0:
        return 0
    s = index.build_summary
    print(s.line() + (f"; {s.duplicates} already indexed or duplicate" if s.duplicates else ""))
    print(f"updated {args.index}: {len(index)} vectors")
    return 0


def _info(args: argparse.Namespace) -> int:
    from radalign.retrieval.build import index_kind, read_build_info
    from radalign.retrieval.index import Index

    index = Index.load(args.index_dir, verify=False)
    build = read_build_info(args.index_dir)
    labels = [c for c in index.metadata.columns if c.startswith("label:")]
    info = {
        "path": str(args.index_dir),
        "kind": index_kind(args.index_dir, index),
        "n": len(index),
        "dim": index.dim,
        "factory": index.factory,
        "search_params": index.search_params,
        "fingerprint": index.fingerprint,
        "created": index.created,
        "updated": index.updated,
        "columns": [c for c in index.metadata.columns if not c.startswith("label:")],
        "labels": [c[len("label:") :] for c in labels],
        "skipped": build.get("skipped"),
        "index_bytes": index.index_bytes(),
        "on_disk": index.on_disk,
        "file_bytes": {
            f.name: f.stat().st_size for f in sorted(Path(args.index_dir).iterdir()) if f.is_file()
        },
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        print(f"{key:>13}: {value}")
    return 0
