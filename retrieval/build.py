"""Build (and extend) an :class:`~radalign.retrieval.index.Index` from paired records.

:func:`build_index` embeds the reports (text) or the images of a set of pairs and saves an index
directory with one metadata row per embedded input::

    id, study_id, patient_id, split, image_path, [report,] kind, label:<Class> ...

Label columns hold 1 / 0 / -1 (CheXpert style) as floats, NaN where a record has no such label.
Only identifiers the source already uses as ids are written; nothing is read from DICOM headers.

Records are given as a ``PairSet`` / list of ``PairRecord``-like objects (anything with ``id``,
``image_path``, ``report``, ``patient_id``, ``study_id``, ``split``, ``labels``) or a DataFrame
with those columns.  Reading a dataset root is :func:`radalign.data.sources.open_source`'s
job (``radalign index build --source`` does both).

Builds are resumable: rows are embedded in chunks of ``chunk_rows`` and each finished chunk is
kept in ``OUT.partial/`` (``chunk-NNNNN.npy`` + ``chunk-NNNNN.parquet``, the parquet written
last); a rerun with the same model, kind and rows skips the finished chunks.  The partial
directory is removed once the index is saved.  Inputs that cannot be read are skipped and listed
in ``skipped.csv`` inside the index directory; ``build.json`` there records what was built.
The encoders run in ``precision`` (``auto``: bf16 where native and fast, else fp32); vectors
are stored as float32 either way, and a resumed build with another precision starts over.

Across processes (``torchrun`` / ``accelerate launch``; see :func:`init_distributed_from_env`)
rank ``r`` of ``W`` embeds the chunks ``c`` with ``c % W == r`` into the same ``OUT.partial/``
(a shared filesystem across nodes); rank 0 then loads every chunk in order and builds and saves
the index exactly as one process would, so the result does not depend on ``W``.  A rerun, with
any number of processes, reuses every finished chunk, whichever rank wrote it.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch.distributed as dist
from radalign.encoders.atomic import atomic_write
from radalign.encoders.embed import Embeddings, embed_images, embed_texts
from radalign.encoders.errors import SkipLog
from radalign.encoders.precision import Precision, resolve_precision
from radalign.encoders.processes import world_info
from radalign.retrieval.index import EmptyIndexError, Index

__all__ = [
    "BUILD_FILE",
    "KINDS",
    "SKIPPED_FILE",
    "BuildSummary",
    "add_to_index",
    "build_index",
    "index_kind",
    "init_distributed_from_env",
    "parse_size",
    "partial_dir",
    "read_build_info",
    "records_frame",
]

KINDS = ("reports", "images")
BUILD_FILE = "build.json"
SKIPPED_FILE = "skipped.csv"
LABEL_PREFIX = "label:"
DEFAULT_CHUNK_ROWS = 4096
_BASE_COLUMNS = ("id", "study_id", "patient_id", "split", "image_path")
_SPLITS = {"train": "train", "val": "val", "valid": "val", "validate": "val", "test": "test"}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass
class BuildSummary:
    """What one build or add did (also written to ``build.json``)."""

    kind: str
    rows: int
    embedded: int
    skipped: int
    skip_reasons: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    chunks: int = 0
    resumed_chunks: int = 0
    seconds: float = 0.0
    precision: str = "fp32"
    num_processes: int = 1

    @classmethod
    def of_run(
        cls,
        kind: str,
        rows: int,
        kept: list,
        skipped: SkipLog,
        duplicates: int,
        chunks: int,
        resumed_chunks: int,
        start: float,
        precision: Precision,
        num_processes: int = 1,
    ) -> BuildSummary:
        """The summary of a build or add that began at ``perf_counter()`` ``start``."""
        return cls(
            kind=kind,
            rows=rows,
            embedded=len(kept),
            skipped=len(skipped),
            skip_reasons=dict(skipped.counts()),
            duplicates=duplicates,
            chunks=chunks,
            resumed_chunks=resumed_chunks,
            seconds=round(time.perf_counter() - start, 3),
            precision=precision.name,
            num_processes=num_processes,
        )

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> BuildSummary:
        """The summary recorded in a ``build.json`` (see :func:`read_build_info`)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in info.items() if k in names})

    def line(self) -> str:
        reasons = ", ".join(f"{r}: {n}" for r, n in self.skip_reasons.items())
        extra = f" ({reasons})" if reasons else ""
        resumed = f", {self.resumed_chunks} chunk(s) resumed" if self.resumed_chunks else ""
        procs = f" by {self.num_processes} processes" if self.num_processes > 1 else ""
        return (
            f"embedded {self.embedded} of {self.rows} {self.kind} in {self.seconds:.1f}s{procs}; "
            f"skipped {self.skipped}{extra}{resumed}"
        )


def parse_size(value: str | int | None) -> int | None:
    """``"2GB"``, ``"512M"``, ``"1.5GiB"`` or a byte count -> bytes (binary units); None stays."""
    if value is None or isinstance(value, int):
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"cannot read size {value!r}; use e.g. 2GB, 512MB or a byte count")
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    return int(float(m.group(1)) * _UNITS[unit])


def partial_dir(out: str | os.PathLike) -> Path:
    """Where the finished chunks of an interrupted build of ``out`` are kept."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


# ---------------------------------------------------------------------- records
def _norm_split(value: object) -> str | None:
    if value is None or value != value:
        return None
    return _SPLITS.get(str(value).strip().lower())


def _text_or_none(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def records_frame(records: Any, split: str | None = None) -> pd.DataFrame:
    """One row per record: base columns, ``report`` and a ``labels`` dict; optional split filter."""
    if isinstance(records, (str, os.PathLike)):
        raise TypeError(
            f"expected records, got the path {records!r}: open it first with "
            "radalign.data.sources.open_source(path), or use `radalign index build --source`"
        )
    if isinstance(records, pd.DataFrame):
        rows = records.to_dict("records")
    else:
        rows = [
            {
                "id": r.id,
                "study_id": getattr(r, "study_id", None),
                "patient_id": getattr(r, "patient_id", None),
                "split": getattr(r, "split", None),
                "image_path": getattr(r, "image_path", None),
                "report": getattr(r, "report", None),
                "labels": getattr(r, "labels", None),
            }
            for r in records
        ]
    frame = pd.DataFrame(
        {
            "id": [str(r["id"]) for r in rows],
            "study_id": [_text_or_none(r.get("study_id")) for r in rows],
            "patient_id": [_text_or_none(r.get("patient_id")) for r in rows],
            "split": [_norm_split(r.get("split")) for r in rows],
            "image_path": [_text_or_none(r.get("image_path")) for r in rows],
            "report": [r.get("report") for r in rows],
            "labels": [dict(r.get("labels") or {}) for r in rows],
        }
    )
    if split is not None:
        key = _norm_split(split)
        if key is None:
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        frame = frame[frame["split"] == key].reset_index(drop=True)
    dup = frame["id"].duplicated()
    if dup.any():
        raise ValueError(f"duplicate record ids, e.g. {sorted(set(frame['id'][dup]))[:5]}")
    return frame


def _metadata(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Index metadata for the rows of ``frame`` (labels flattened to ``label:<Class>``)."""
    meta = frame[list(_BASE_COLUMNS)].copy()
    if kind == "reports":
        meta["report"] = frame["report"].map(_text_or_none)
    meta["kind"] = kind
    classes = sorted({c for labels in frame["labels"] for c in labels})
    for c in classes:
        meta[LABEL_PREFIX + c] = np.array(
            [float(labels.get(c, np.nan)) for labels in frame["labels"]], dtype=np.float64
        )
    return meta.reset_index(drop=True)


def _dedupe_reports(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Reports index: one row per (study, report text), the first record kept."""
    key = frame["study_id"].fillna(frame["id"]) + "\x00" + frame["report"].astype(str)
    keep = ~key.duplicated()
    return frame[keep].reset_index(drop=True), int((~keep).sum())


# ---------------------------------------------------------------------- embedding
def _embed_chunk(
    model,
    kind: str,
    frame: pd.DataFrame,
    *,
    batch_size: int,
    num_workers: int,
    device,
    text_cache=None,
    precision: str | Precision = "auto",
) -> Embeddings:
    """Embed one chunk of rows (the unit a build resumes by)."""
    ids = frame["id"].tolist()
    if kind == "reports":
        return embed_texts(
            model,
            frame["report"].tolist(),
            ids,
            batch_size=batch_size,
            device=device,
            progress=False,
            text_cache=text_cache,
            precision=precision,
        )
    skipped = SkipLog()
    has_path = frame["image_path"].notna().to_numpy()
    for i in np.flatnonzero(~has_path):
        skipped.add(ids[i], "no image")
    sub = frame[has_path]
    emb = embed_images(
        model,
        sub["image_path"].tolist(),
        sub["id"].tolist(),
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=False,
        precision=precision,
    )
    emb.skipped.rows[:0] = skipped.rows
    return emb


def _rows_digest(frame: pd.DataFrame, kind: str) -> str:
    h = hashlib.sha256()
    col = "report" if kind == "reports" else "image_path"
    for i, v in zip(frame["id"], frame[col]):
        h.update(f"{i}\x00{v}\x01".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _embed_resumable(
    model,
    kind: str,
    frame: pd.DataFrame,
    work: Path,
    *,
    chunk_rows: int,
    batch_size: int,
    num_workers: int,
    device,
    progress: bool,
    text_cache=None,
    precision: Precision | None = None,
) -> tuple[np.ndarray, list[str], SkipLog, int, int]:
    """Embed ``frame`` chunk by chunk, keeping finished chunks in ``work``.

    Returns (vectors, kept ids, skips, number of chunks, chunks taken from an earlier run).
    Under torch.distributed each rank embeds its share of the chunks; only rank 0 loads them
    all (the other ranks get no vectors, ids or skips) and the resumed count covers all ranks."""
    rank, world = world_info()
    precision = resolve_precision(precision or "auto", device or model.device)
    plan = {
        "fingerprint": model.fingerprint(),
        "kind": kind,
        "rows": len(frame),
        "chunk_rows": int(chunk_rows),
        "digest": _rows_digest(frame, kind),
        "precision": precision.name,
    }
    plan_file = work / "plan.json"
    if rank == 0:  # before the barrier: no rank may delete the directory once others write
        if work.is_dir():
            try:
                old = json.loads(plan_file.read_text())
            except (OSError, ValueError):
                old = None
            if old != plan:  # other rows, model or chunking: start over
                shutil.rmtree(work)
        if not work.is_dir():
            work.mkdir(parents=True)
            with atomic_write(plan_file, "w") as fh:
                json.dump(plan, fh, indent=2)
    if world > 1:  # also the barrier: no rank writes a chunk before rank 0 has set up ``work``
        precision = _agree_with_rank0(plan, rank, device or model.device)
    n_chunks = max(1, math.ceil(len(frame) / chunk_rows))
    resumed = 0
    for c in range(rank, n_chunks, world):
        stem = work / f"chunk-{c:05d}"
        done = stem.with_suffix(".parquet")
        if done.is_file():
            resumed += 1
        else:
            part = frame.iloc[c * chunk_rows : (c + 1) * chunk_rows]
            emb = _embed_chunk(
                model,
                kind,
                part,
                batch_size=batch_size,
                num_workers=num_workers,
                device=device,
                text_cache=text_cache,
                precision=precision,
            )
            with atomic_write(stem.with_suffix(".npy")) as fh:
                np.save(fh, np.asarray(emb.vectors, np.float32), allow_pickle=False)
            emb.skipped.write_csv(stem.with_suffix(".skipped.csv"))
            with atomic_write(done) as fh:  # last: marks the chunk as finished
                pd.DataFrame({"id": emb.metadata["id"].astype(str)}).to_parquet(fh, index=False)
        if progress:
            who = f" (rank {rank}/{world})" if world > 1 else ""
            print(f"  chunk {c + 1}/{n_chunks} done{who}", flush=True)
    if world > 1:  # also the barrier after which every chunk is on disk
        counts: list[Any] = [None] * world
        dist.all_gather_object(counts, resumed)
        resumed = int(sum(counts))
    vectors, kept, skipped = [], [], SkipLog()
    dim = int(model.config.embed_dim)
    if rank != 0:
        return np.zeros((0, dim), np.float32), kept, skipped, n_chunks, resumed
    for c in range(n_chunks):
        stem = work / f"chunk-{c:05d}"
        done = stem.with_suffix(".parquet")
        if not done.is_file():
            raise FileNotFoundError(f"{done}: chunk {c} was not finished by any process")
        vectors.append(np.load(stem.with_suffix(".npy"), allow_pickle=False))
        kept += pd.read_parquet(done)["id"].astype(str).tolist()
        for row in _read_skips(stem.with_suffix(".skipped.csv")):
            skipped.add(*row)
    if progress:
        print(f"  {n_chunks} chunk(s): {len(kept)} embedded", flush=True)
    x = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    return x.astype(np.float32, copy=False), kept, skipped, n_chunks, resumed


def init_distributed_from_env(timeout_s: float = 24 * 3600) -> tuple[int, int]:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the
    environment (``WORLD_SIZE`` > 1, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    Returns ``(rank, world)``.

    Uses gloo: builds exchange only barriers and a few small objects, never tensors, so one
    backend serves CPU and GPU ranks.  ``timeout_s`` bounds how long a rank waits for the
    others (a barrier waits for the slowest rank's chunks).  No-op for one process or when a
    group already exists."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="gloo", init_method="env://", timeout=_dt.timedelta(seconds=timeout_s)
        )
    return world_info()


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
            "load the same model and read the same records"
        )
    plan["precision"] = theirs["precision"]
    return resolve_precision(theirs["precision"], device)


def _finish_on_rank0(finish, load) -> Any:
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
        raise RuntimeError(f"rank 0 failed to write the index: {status[0]}")
    return load()


def _load_built(path: Path, fingerprint: str) -> Index:
    """The index rank 0 saved at ``path``, with its ``build_summary``."""
    index = Index.load(path, expected_fingerprint=fingerprint)
    index.build_summary = BuildSummary.from_info(read_build_info(path))
    return index


def _read_skips(path: Path) -> list[tuple[str, str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r["path"], r["reason"], r["detail"]) for r in csv.DictReader(fh)]


# ---------------------------------------------------------------------- build / add
def build_index(
    model,
    source_or_records: Any,
    *,
    kind: str = "reports",
    out: str | os.PathLike,
    batch_size: int = 32,
    split: str | None = None,
    factory: str | None = None,
    memory_budget: str | int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    num_workers: int = 0,
    device=None,
    progress: bool = False,
    text_cache=None,
    precision: str | Precision = "auto",
) -> Index:
    """Embed the ``kind`` (``"reports"`` or ``"images"``) of the records and save an index at
    ``out`` with the model's fingerprint; resumes from ``out.partial/`` after an interruption.

    For reports, records of one study with the same text are indexed once; ``text_cache`` as
    in :func:`~radalign.encoders.embed.embed_texts`; ``precision``: ``auto``, ``bf16`` or
    ``fp32``.  The returned index carries the :class:`BuildSummary` as
    ``index.build_summary``."""
    start = time.perf_counter()
    kind = _check_kind(kind)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    out = Path(out)
    frame = records_frame(source_or_records, split)
    duplicates = 0
    if kind == "reports":
        frame, duplicates = _dedupe_reports(frame)
    if frame.empty:
        raise EmptyIndexError(f"no records to index{f' in split {split!r}' if split else ''}")
    work = partial_dir(out)
    precision = resolve_precision(precision, device or model.device)
    x, kept, skipped, n_chunks, resumed = _embed_resumable(
        model,
        kind,
        frame,
        work,
        chunk_rows=chunk_rows,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
        text_cache=text_cache,
        precision=precision,
    )
    world = world_info()[1]

    def finish() -> Index:
        if not kept:
            raise EmptyIndexError(
                f"none of the {len(frame)} {kind} could be embedded; {skipped.summary()}"
            )
        meta = _metadata(frame.set_index("id").loc[kept].reset_index(), kind)
        index = Index.build(
            x,
            meta,
            fingerprint=model.fingerprint(),
            factory=factory,
            memory_budget_bytes=parse_size(memory_budget),
        )
        index.save(out)
        summary = BuildSummary.of_run(
            kind, len(frame), kept, skipped, duplicates, n_chunks, resumed, start, precision, world
        )
        skipped.write_csv(out / SKIPPED_FILE)
        _write_build_info(out, summary, index, history=[])
        shutil.rmtree(work, ignore_errors=True)
        index.build_summary = summary
        return index

    return _finish_on_rank0(finish, lambda: _load_built(out, model.fingerprint()))


def add_to_index(
    model,
    index_dir: str | os.PathLike,
    more: Any,
    *,
    batch_size: int = 32,
    split: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    num_workers: int = 0,
    device=None,
    progress: bool = False,
    precision: str | Precision = "auto",
) -> Index:
    """Embed more records (same kind as the index) and append them; ids already in the index
    are left out.  Refuses an index built by another model (``FingerprintMismatch``)."""
    start = time.perf_counter()
    index_dir = Path(index_dir)
    index = Index.load(index_dir, expected_fingerprint=model.fingerprint(), mmap=False)
    kind = index_kind(index_dir, index)
    frame = records_frame(more, split)
    present = frame["id"].isin(set(index.metadata["id"].astype(str)))
    frame = frame[~present].reset_index(drop=True)
    duplicates = int(present.sum())
    if kind == "reports":
        frame, dup = _dedupe_reports(frame)
        duplicates += dup
    skipped, kept, n_chunks, resumed = SkipLog(), [], 0, 0
    precision = resolve_precision(precision, device or model.device)
    if len(frame):
        work = partial_dir(index_dir)
        x, kept, skipped, n_chunks, resumed = _embed_resumable(
            model,
            kind,
            frame,
            work,
            chunk_rows=chunk_rows,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            progress=progress,
            precision=precision,
        )
    world = world_info()[1]

    def finish() -> Index:
        if kept:
            meta = _metadata(frame.set_index("id").loc[kept].reset_index(), kind)
            index.add(x, _align_columns(meta, index.metadata))
            index.save(index_dir)
        if len(frame):
            shutil.rmtree(partial_dir(index_dir), ignore_errors=True)
        summary = BuildSummary.of_run(
            kind, len(frame), kept, skipped, duplicates, n_chunks, resumed, start, precision, world
        )
        old_skips = SkipLog(_read_skips(index_dir / SKIPPED_FILE))
        old_skips.rows += skipped.rows
        old_skips.write_csv(index_dir / SKIPPED_FILE)
        info = read_build_info(index_dir)
        history = info.get("history", []) + [{k: v for k, v in info.items() if k != "history"}]
        _write_build_info(index_dir, summary, index, history=history)
        index.build_summary = summary
        return index

    return _finish_on_rank0(finish, lambda: _load_built(index_dir, model.fingerprint()))


def _align_columns(meta: pd.DataFrame, existing: pd.DataFrame) -> pd.DataFrame:
    """Give new rows the existing columns (NaN/None where absent) so concatenation keeps dtypes."""
    for col in existing.columns:
        if col not in meta.columns:
            meta[col] = np.nan if col.startswith(LABEL_PREFIX) else None
    return meta


def _check_kind(kind: str) -> str:
    aliases = {"report": "reports", "text": "reports", "image": "images", "scans": "images"}
    kind = aliases.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def _write_build_info(
    path: Path, summary: BuildSummary, index: Index, history: list[dict[str, Any]]
) -> None:
    info = {
        **asdict(summary),
        "n": len(index),
        "fingerprint": index.fingerprint,
        "factory": index.factory,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "history": history,
    }
    with atomic_write(path / BUILD_FILE, "w") as fh:
        json.dump(info, fh, indent=2)


def read_build_info(index_dir: str | os.PathLike) -> dict[str, Any]:
    """``build.json`` of an index directory ({} when absent, e.g. an index built by hand)."""
    f = Path(index_dir) / BUILD_FILE
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return {}


def index_kind(index_dir: str | os.PathLike | None, index: Index | None = None) -> str:
    """``"reports"`` or ``"images"``: from ``build.json``, else the metadata (a report column)."""
    if index_dir is not None:
        kind = read_build_info(index_dir).get("kind")
        if kind in KINDS:
            return kind
    if index is not None:
        meta = index.metadata
        if "kind" in meta.columns and len(meta):
            return str(meta["kind"].iloc[0])
        return "reports" if "report" in meta.columns else "images"
    raise ValueError("cannot tell the index kind without build.json or the index")
