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
any number of processes, reuses every finished chunk, whichever rank wrote it.  The chunk and
process machinery is :mod:`radalign.encoders.sharded_work`, shared with ``radalign embed``.
"""

from __future__ import annotations

import datetime as _dt
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
from radalign.data.records import normalize_split
from radalign.encoders.atomic import atomic_write
from radalign.encoders.embed_chunks import embed_resumable
from radalign.encoders.errors import SkipLog
from radalign.encoders.precision import Precision
from radalign.encoders.sharded_work import (
    DEFAULT_CHUNK_ROWS,
    ChunkedEmbeddings,
    finish_on_rank0,
    init_distributed_from_env,
    partial_dir,
    read_skips,
)
from radalign.retrieval.index import EmptyIndexError, Index
from radalign.retrieval.index_choice import choose_index, split_storage

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
_BASE_COLUMNS = ("id", "study_id", "patient_id", "split", "image_path")
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
        cls, kind: str, rows: int, run: ChunkedEmbeddings, duplicates: int, start: float
    ) -> BuildSummary:
        """The summary of a build or add of ``rows`` that began at ``perf_counter()`` ``start``."""
        return cls(
            kind=kind,
            rows=rows,
            embedded=len(run.ids),
            skipped=len(run.skipped),
            skip_reasons=dict(run.skipped.counts()),
            duplicates=duplicates,
            chunks=run.chunks,
            resumed_chunks=run.resumed,
            seconds=round(time.perf_counter() - start, 3),
            precision=run.precision.name,
            num_processes=run.num_processes,
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


# ---------------------------------------------------------------------- records
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
            "split": [normalize_split(r.get("split")) for r in rows],
            "image_path": [_text_or_none(r.get("image_path")) for r in rows],
            "report": [r.get("report") for r in rows],
            "labels": [dict(r.get("labels") or {}) for r in rows],
        }
    )
    if split is not None:
        key = normalize_split(split)
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
def _embed_frame(model, kind: str, frame: pd.DataFrame, work: Path, **options) -> ChunkedEmbeddings:
    """The reports or scans of ``frame``'s rows, resumably in ``work``
    (:func:`~radalign.encoders.embed_chunks.embed_resumable`: under torch.distributed each rank
    embeds its share of the chunks and only rank 0 gets the rows)."""
    col, key = ("report", "texts") if kind == "reports" else ("image_path", "paths")
    return embed_resumable(
        model, work, frame["id"].tolist(), **{key: frame[col].tolist()}, **options
    )


def _load_built(path: Path, fingerprint: str) -> Index:
    """The index rank 0 saved at ``path``, with its ``build_summary``."""
    index = Index.load(path, expected_fingerprint=fingerprint)
    index.build_summary = BuildSummary.from_info(read_build_info(path))
    return index


def _embed_then_save(
    model,
    kind: str,
    frame: pd.DataFrame,
    out: Path,
    save,
    *,
    extend: bool,
    duplicates: int,
    start: float,
    **embed_options: Any,
) -> Index:
    """What a build and an add share: embed ``frame`` resumably into ``out.partial/``; then rank 0
    runs ``save(run) -> Index`` (which writes the index directory ``out`` afresh), writes
    ``skipped.csv`` and ``build.json`` (when ``extend``ing, after the earlier skips, with the
    earlier ``build.json`` in its history) and removes the partial folder; the other ranks load
    what it saved."""
    work = partial_dir(out)
    run = _embed_frame(model, kind, frame, work, **embed_options)

    def finish() -> Index:
        earlier = read_build_info(out) if extend else {}  # read before ``save`` replaces ``out``
        skips = SkipLog(read_skips(out / SKIPPED_FILE) if extend else [])
        skips.rows += run.skipped.rows
        history = earlier.pop("history", []) + ([earlier] if earlier else [])
        index = save(run)
        summary = BuildSummary.of_run(kind, len(frame), run, duplicates, start)
        skips.write_csv(out / SKIPPED_FILE)
        _write_build_info(out, summary, index, history=history)
        shutil.rmtree(work, ignore_errors=True)
        index.build_summary = summary
        return index

    return finish_on_rank0(finish, lambda: _load_built(out, model.fingerprint()))


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
    options = dict(chunk_rows=chunk_rows, batch_size=batch_size, num_workers=num_workers,
                   device=device, progress=progress, precision=precision, text_cache=text_cache)  # fmt: skip
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

    def save(run: ChunkedEmbeddings) -> Index:
        if not run.ids:
            raise EmptyIndexError(
                f"none of the {len(frame)} {kind} could be embedded; {run.skipped.summary()}"
            )
        meta = _metadata(frame.set_index("id").loc[run.ids].reset_index(), kind)
        budget = parse_size(memory_budget)
        chosen = factory or choose_index(len(meta), run.dim, budget)
        if split_storage(chosen)[1]:  # streamed from the chunk files: never all in memory
            return Index.build_on_disk(
                run.vector_files,
                meta,
                out,
                fingerprint=model.fingerprint(),
                factory=chosen,
                memory_budget_bytes=budget,
            )
        index = Index.build(
            run.vectors,
            meta,
            fingerprint=model.fingerprint(),
            factory=factory,
            memory_budget_bytes=budget,
        )
        index.save(out)
        return index

    return _embed_then_save(
        model, kind, frame, out, save, extend=False, duplicates=duplicates, start=start, **options
    )


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
    options = dict(chunk_rows=chunk_rows, batch_size=batch_size, num_workers=num_workers,
                   device=device, progress=progress, precision=precision)  # fmt: skip
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

    def save(run: ChunkedEmbeddings) -> Index:
        if run.ids:
            meta = _metadata(frame.set_index("id").loc[run.ids].reset_index(), kind)
            index.add(run.vectors, _align_columns(meta, index.metadata))
            index.save(index_dir)
        return index

    return _embed_then_save(
        model, kind, frame, index_dir, save, extend=True, duplicates=duplicates, start=start,
        **options,
    )  # fmt: skip


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
