"""Resumable, multi-process embedding of scans or reports: what ``radalign embed`` and the index
builds run.

:func:`embed_resumable` embeds a list of inputs chunk by chunk through
:func:`radalign.encoders.sharded_work.embed_in_chunks` (finished chunks kept in a work folder,
reused by a rerun of the same job, shared between the ranks of ``torchrun`` /
``accelerate launch``); :func:`embed_to_file` adds what ``radalign embed`` does around it: rank 0
writes the merged vectors with :func:`~radalign.encoders.embed.write_embeddings`, exactly the
file(s) one process would write, and removes the work folder.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from radalign.encoders.embed import (
    Embeddings,
    check_output,
    embed_images,
    embed_texts,
    write_embeddings,
)
from radalign.encoders.errors import SkipLog
from radalign.encoders.precision import Precision, resolve_precision
from radalign.encoders.processes import world_info
from radalign.encoders.sharded_work import (
    DEFAULT_CHUNK_ROWS,
    ChunkedEmbeddings,
    embed_in_chunks,
    finish_on_rank0,
    partial_dir,
    rows_digest,
)

__all__ = ["EmbedRun", "embed_resumable", "embed_to_file"]


def embed_resumable(
    model,
    work: str | Path,
    ids: Sequence[str],
    *,
    paths: Sequence[str | Path | None] | None = None,
    texts: Sequence[str] | None = None,
    window: str = "header",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    precision: str | Precision = "auto",
    progress: bool = False,
    text_cache=None,
) -> ChunkedEmbeddings:
    """Embed the scans at ``paths`` (a ``None`` path is skipped as ``no image``) or the report
    ``texts``, one per id, in chunks of ``chunk_rows`` kept in ``work`` (see
    :func:`~radalign.encoders.sharded_work.embed_in_chunks`: rank 0 gets every row in order).

    The job, and so what a rerun may reuse, is the model's fingerprint, the (id, input) rows,
    the chunking, the precision and (scans) the DICOM ``window``."""
    if (paths is None) == (texts is None):
        raise ValueError("give exactly one of paths (scans) or texts (reports)")
    items = list(paths if paths is not None else texts)
    ids = [str(i) for i in ids]
    if len(ids) != len(items):
        raise ValueError(f"{len(ids)} ids for {len(items)} inputs")
    device = torch.device(device) if device is not None else model.device
    kind = "image" if paths is not None else "report"
    plan = {
        "fingerprint": model.fingerprint(),
        "kind": kind,
        "digest": rows_digest(zip(ids, items)),
    }
    if kind == "image":
        plan["window"] = window
    bar = progress and world_info()[1] == 1  # one bar per chunk; none from several ranks

    def embed(start: int, stop: int, agreed: Precision) -> Embeddings:
        if kind == "report":
            return embed_texts(
                model, items[start:stop], ids[start:stop], batch_size=batch_size, device=device,
                progress=bar, text_cache=text_cache, precision=agreed,
            )  # fmt: skip
        missing = SkipLog()
        scans, scan_ids = [], []
        for i, p in zip(ids[start:stop], items[start:stop]):
            if p is None:
                missing.add(i, "no image")
            else:
                scans.append(p)
                scan_ids.append(i)
        emb = embed_images(
            model, scans, scan_ids, batch_size=batch_size, num_workers=num_workers,
            window=window, device=device, progress=bar, precision=agreed,
        )  # fmt: skip
        emb.skipped.rows[:0] = missing.rows
        return emb

    return embed_in_chunks(
        embed,
        len(items),
        work,
        plan,
        chunk_rows=chunk_rows,
        dim=int(model.config.embed_dim),
        precision=resolve_precision(precision, device),
        device=device,
        progress=progress,
    )


@dataclass
class EmbedRun:
    """What :func:`embed_to_file` did.  ``embeddings`` and ``written`` are rank 0's (empty on
    the other ranks of a multi-process run)."""

    embeddings: Embeddings
    written: list[Path]
    rows: int
    chunks: int
    resumed_chunks: int
    num_processes: int
    seconds: float

    def line(self) -> str:
        emb = self.embeddings
        procs = f" by {self.num_processes} processes" if self.num_processes > 1 else ""
        resumed = f", {self.resumed_chunks} chunk(s) resumed" if self.resumed_chunks else ""
        return (
            f"embedded {len(emb)} of {self.rows} {emb.kind}s (dim {emb.vectors.shape[1]}) in "
            f"{self.seconds:.1f}s{procs} ({emb.precision}); {emb.skipped.summary()}{resumed}"
        )


def embed_to_file(
    model,
    out: str | Path,
    *,
    paths: Sequence[str | Path] | None = None,
    texts: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    **options,
) -> EmbedRun:
    """Embed scans (``paths``) or reports (``texts``) and write them with
    :func:`~radalign.encoders.embed.write_embeddings` (``out`` and ``skipped.csv`` beside it):
    ``radalign embed``.

    Resumable and multi-process: the rows are embedded by :func:`embed_resumable` (``options``:
    its ``window``, ``chunk_rows``, ``batch_size``, ``num_workers``, ``device``, ``precision``,
    ``progress``) with the finished chunks kept in ``out.partial/`` until the output is written;
    a rerun of the same job reuses them.  Under ``torchrun`` / ``accelerate launch`` (after
    :func:`~radalign.encoders.sharded_work.init_distributed_from_env`) each rank embeds its
    share and rank 0 writes the output one process would.  ``ids`` default to the paths as
    given (the row numbers for reports)."""
    start = time.perf_counter()
    out = Path(out)
    check_output(out)
    items = paths if paths is not None else texts
    if ids is None and items is not None:
        ids = [str(p) for p in items] if paths is not None else [str(i) for i in range(len(items))]
    work = partial_dir(out)
    run = embed_resumable(model, work, ids or [], paths=paths, texts=texts, **options)
    kind = "image" if paths is not None else "report"
    merged = Embeddings(
        run.vectors, run.metadata, run.skipped, model.fingerprint(), kind, run.precision.name
    )

    def finish() -> list[Path]:
        written = write_embeddings(merged, out)
        shutil.rmtree(work, ignore_errors=True)
        return written

    written = finish_on_rank0(finish, list)
    seconds = time.perf_counter() - start
    rows = len(items) if items is not None else 0
    return EmbedRun(merged, written, rows, run.chunks, run.resumed, run.num_processes, seconds)
