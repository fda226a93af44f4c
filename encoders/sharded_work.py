"""Embedding a long list of inputs in resumable chunks, shared across processes.

The one machinery behind ``radalign embed`` and ``radalign index build/add``: the rows are cut
into chunks of ``chunk_rows``; each finished chunk is kept in a work folder (``OUT.partial/``,
see :func:`partial_dir`) as ``chunk-NNNNN.npy`` (vectors), ``chunk-NNNNN.skipped.csv`` and
``chunk-NNNNN.parquet`` (the embedded rows' metadata, written last: it marks the chunk done).
``plan.json`` there names the job (model fingerprint, rows digest, chunking, precision, ...); a
rerun with the same plan skips the finished chunks, another plan starts over.

Under ``torchrun`` / ``accelerate launch`` (:func:`join_processes`) rank ``r`` of ``W`` embeds the
chunks ``c`` with ``c % W == r`` into the same work folder (a shared filesystem across nodes)
and rank 0 loads them all in order (:func:`embed_in_chunks`), so the merged result does not
depend on ``W``; :func:`finish_on_rank0` lets rank 0 write the output while the others wait for
its verdict.  A rerun, with any number of processes, reuses every finished chunk.
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
import torch.distributed as dist
from radalign.encoders.atomic import atomic_write
from radalign.encoders.errors import SkipLog
from radalign.encoders.precision import Precision, resolve_precision
from radalign.encoders.processes import world_info

if TYPE_CHECKING:
    from radalign.encoders.embed import Embeddings

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "ChunkedEmbeddings",
    "embed_in_chunks",
    "finish_on_rank0",
    "init_distributed_from_env",
    "join_processes",
    "leave_processes",
    "partial_dir",
    "read_skips",
    "rows_digest",
]

DEFAULT_CHUNK_ROWS = 4096
PLAN_FILE = "plan.json"
T = TypeVar("T")


def partial_dir(out: str | os.PathLike) -> Path:
    """Where the finished chunks of an interrupted job writing ``out`` are kept."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def rows_digest(rows: Iterable[tuple[object, object]]) -> str:
    """SHA-256 of ``(id, input)`` rows in order: a plan's record of *which* inputs it embeds."""
    h = hashlib.sha256()
    for i, v in rows:
        h.update(f"{i}\x00{v}\x01".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


# ---------------------------------------------------------------------- processes
def init_distributed_from_env(timeout_s: float = 24 * 3600) -> tuple[int, int]:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the
    environment (``WORLD_SIZE`` > 1, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    Returns ``(rank, world)``.

    Uses gloo: the chunk machinery exchanges only barriers and a few small objects, never
    tensors, so one backend serves CPU and GPU ranks.  ``timeout_s`` bounds how long a rank
    waits for the others (a barrier waits for the slowest rank's chunks).  No-op for one
    process or when a group already exists."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="gloo", init_method="env://", timeout=_dt.timedelta(seconds=timeout_s)
        )
    return world_info()


def join_processes(device: str | None) -> tuple[int, int, str | None]:
    """:func:`init_distributed_from_env`, and this rank's device: ``device`` when given, else
    under several processes with CUDA the GPU ``LOCAL_RANK`` names (ranks share the GPUs when
    a node runs more processes than it has GPUs).  ``(rank, world, device)``."""
    rank, world = init_distributed_from_env()
    if world > 1 and device is None:
        import torch

        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            device = f"cuda:{local % torch.cuda.device_count()}"
    return rank, world, device


def leave_processes() -> None:
    """Leave the process group :func:`join_processes` joined (no-op for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish_on_rank0(finish: Callable[[], T], load: Callable[[], T]) -> T:
    """Rank 0 runs ``finish()``; then every other rank learns whether it worked and returns
    ``load()`` (or raises with rank 0's error).  One process: just ``finish()``."""
    rank, world = world_info()
    if world == 1:
        return finish()
    status: list[Any] = [None]
    if rank == 0:
        try:
            result = finish()
        except BaseException as e:
            dist.broadcast_object_list([f"{type(e).__name__}: {e}"], src=0)
            raise
        dist.broadcast_object_list(status, src=0)
        return result
    dist.broadcast_object_list(status, src=0)
    if status[0] is not None:
        raise RuntimeError(f"rank 0 failed to write the output: {status[0]}")
    return load()


def _agree_with_rank0(plan: dict[str, Any], rank: int, device) -> Precision:
    """Every rank takes rank 0's plan: refuses other rows or another model, and adopts rank 0's
    precision (``auto`` is measured per process and could differ between ranks)."""
    shared = [plan]
    dist.broadcast_object_list(shared, src=0)
    theirs = shared[0]
    differ = sorted(k for k in plan if k != "precision" and plan[k] != theirs.get(k))
    if differ:
        raise ValueError(
            f"rank {rank} disagrees with rank 0 on {', '.join(differ)}: every process must "
            "load the same model and read the same inputs"
        )
    plan["precision"] = theirs["precision"]
    return resolve_precision(theirs["precision"], device)


# ---------------------------------------------------------------------- chunks
@dataclass
class ChunkedEmbeddings:
    """What :func:`embed_in_chunks` returns.  On ranks other than 0 ``vectors``, ``metadata``
    and ``skipped`` are empty; ``chunks``, ``resumed`` and ``precision`` hold on every rank.

    The vectors stay in the chunk files (``vector_files``, in row order) until ``vectors`` is
    first read, so a caller that streams them (an on-disk index build) never holds them all;
    read them before the work folder is removed."""

    vector_files: list[Path]
    dim: int
    metadata: pd.DataFrame
    skipped: SkipLog
    chunks: int
    resumed: int
    """Chunks taken from an earlier run, counted over all ranks."""
    precision: Precision
    num_processes: int

    @property
    def ids(self) -> list[str]:
        return self.metadata["id"].astype(str).tolist() if len(self.metadata) else []

    @functools.cached_property
    def vectors(self) -> np.ndarray:
        """All vectors ``[rows, dim]`` float32, loaded from ``vector_files``."""
        parts = [np.load(p, allow_pickle=False).reshape(-1, self.dim) for p in self.vector_files]
        if not parts:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)


def read_skips(path: Path) -> list[tuple[str, str, str]]:
    """The rows of a ``skipped.csv`` written by :meth:`SkipLog.write_csv` ([] when absent)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r["path"], r["reason"], r["detail"]) for r in csv.DictReader(fh)]


def _prepare(work: Path, plan: dict[str, Any]) -> None:
    """Rank 0: keep ``work`` if it holds this plan's chunks, else start it afresh."""
    if work.is_dir():
        try:
            old = json.loads((work / PLAN_FILE).read_text())
        except (OSError, ValueError):
            old = None
        if old != plan:  # other rows, model, chunking or precision: start over
            shutil.rmtree(work)
    if not work.is_dir():
        work.mkdir(parents=True)
        with atomic_write(work / PLAN_FILE, "w") as fh:
            json.dump(plan, fh, indent=2)


def _save_chunk(stem: Path, emb: Embeddings) -> None:
    with atomic_write(stem.with_suffix(".npy")) as fh:
        np.save(fh, np.asarray(emb.vectors, np.float32), allow_pickle=False)
    emb.skipped.write_csv(stem.with_suffix(".skipped.csv"))
    meta = emb.metadata.reset_index(drop=True).astype({"id": str})
    with atomic_write(stem.with_suffix(".parquet")) as fh:  # last: marks the chunk as finished
        meta.to_parquet(fh, index=False)


def _load_chunks(work: Path, n_chunks: int) -> tuple[list[Path], pd.DataFrame, SkipLog]:
    """The chunks' vector files (checked, not loaded), rows and skips, in row order."""
    files, metas, skipped, n_vectors = [], [], SkipLog(), 0
    for c in range(n_chunks):
        stem = work / f"chunk-{c:05d}"
        done = stem.with_suffix(".parquet")
        if not done.is_file():
            raise FileNotFoundError(f"{done}: chunk {c} was not finished by any process")
        files.append(stem.with_suffix(".npy"))
        n_vectors += len(np.load(files[-1], mmap_mode="r", allow_pickle=False))
        metas.append(pd.read_parquet(done))
        skipped.rows += read_skips(stem.with_suffix(".skipped.csv"))
    if n_vectors != sum(len(m) for m in metas):
        raise ValueError(f"{work}: chunk vectors and rows disagree; delete it and run again")
    return files, pd.concat(metas, ignore_index=True), skipped


def embed_in_chunks(
    embed_chunk: Callable[[int, int, Precision], Embeddings],
    n_rows: int,
    work: str | os.PathLike,
    plan: dict[str, Any],
    *,
    chunk_rows: int,
    dim: int,
    precision: Precision,
    device,
    progress: bool = False,
) -> ChunkedEmbeddings:
    """Embed rows ``0..n_rows`` chunk by chunk with ``embed_chunk(start, stop, precision)``,
    keeping finished chunks in ``work`` and reusing those an earlier run with the same ``plan``
    (a JSON-able dict naming the model, the inputs and their options) left there.

    Under torch.distributed each rank embeds its share of the chunks and every rank adopts
    rank 0's ``precision``; only rank 0 loads them all (in row order).  ``work`` is left in
    place: remove it once the output is written."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    work = Path(work)
    rank, world = world_info()
    plan = {**plan, "rows": int(n_rows), "chunk_rows": int(chunk_rows), "precision": precision.name}
    if rank == 0:  # before the barrier: no rank may delete the folder once others write
        _prepare(work, plan)
    if world > 1:  # also the barrier: no rank writes a chunk before rank 0 has set up ``work``
        precision = _agree_with_rank0(plan, rank, device)
    n_chunks = max(1, math.ceil(n_rows / chunk_rows))
    resumed = 0
    for c in range(rank, n_chunks, world):
        stem = work / f"chunk-{c:05d}"
        reused = stem.with_suffix(".parquet").is_file()
        if reused:
            resumed += 1
        else:
            start = c * chunk_rows
            _save_chunk(stem, embed_chunk(start, min(start + chunk_rows, n_rows), precision))
        if progress:
            who = f" (rank {rank}/{world})" if world > 1 else ""
            print(f"  chunk {c + 1}/{n_chunks} {'reused' if reused else 'done'}{who}", flush=True)
    if world > 1:  # also the barrier after which every chunk is on disk
        counts: list[Any] = [None] * world
        dist.all_gather_object(counts, resumed)
        resumed = int(sum(counts))
    if rank != 0:
        return ChunkedEmbeddings(
            [], dim, pd.DataFrame(), SkipLog(), n_chunks, resumed, precision, world
        )
    files, meta, skipped = _load_chunks(work, n_chunks)
    if progress:
        print(f"  {n_chunks} chunk(s): {len(meta)} embedded", flush=True)
    return ChunkedEmbeddings(files, dim, meta, skipped, n_chunks, resumed, precision, world)
