"""Read cached embeddings (``radalign embed`` output or an index directory) and labels for
heads, checking that every input comes from the same model and has the expected width."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from radalign.data.records import normalize_split
from radalign.data.splits import assign_splits

__all__ = [
    "EmbeddingTable",
    "check_same_model",
    "join_modalities",
    "read_labels",
    "read_table",
    "split_rows",
]

LABEL_PREFIX = "label:"


@dataclass
class EmbeddingTable:
    """Vectors ``[N, E]`` with their ids, metadata and the producing model's fingerprint."""

    ids: list[str]
    vectors: np.ndarray
    metadata: pd.DataFrame
    fingerprint: str
    path: Path


def read_table(path: str | os.PathLike) -> EmbeddingTable:
    """An ``.parquet``/``.npy`` file from ``radalign embed`` or an index directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such embeddings file or index directory")
    if path.is_dir():
        from radalign.retrieval.index import Index

        index = Index.load(path)
        meta = index.metadata.reset_index(drop=True)
        vectors = np.asarray(index.vectors, dtype=np.float32)
        fp = index.fingerprint
    else:
        from radalign.encoders.embed import read_embeddings

        emb = read_embeddings(path)
        meta, vectors, fp = emb.metadata.reset_index(drop=True), emb.vectors, emb.fingerprint
    if "id" not in meta.columns:
        raise ValueError(f"{path}: metadata has no 'id' column")
    if len(meta) != len(vectors):
        raise ValueError(f"{path}: {len(vectors)} vectors but {len(meta)} metadata rows")
    return EmbeddingTable(meta["id"].astype(str).tolist(), vectors, meta, fp, path)


def check_same_model(
    tables: Sequence[EmbeddingTable], expected: str | None = None, dims: Sequence[int] | None = None
) -> None:
    """``ValueError`` if the tables come from different models (or not from ``expected``) or
    their widths differ from ``dims``."""
    fps = {t.fingerprint for t in tables}
    if expected is not None:
        for t in tables:
            if t.fingerprint != expected:
                raise ValueError(
                    f"{t.path}: embeddings from another model (fingerprint {t.fingerprint!r}, "
                    f"expected {expected!r}); re-embed with the same model"
                )
    elif len(fps) > 1:
        raise ValueError(
            "embeddings come from different models: "
            + ", ".join(f"{t.path} ({t.fingerprint!r})" for t in tables)
        )
    if dims is not None:
        got = [int(t.vectors.shape[1]) for t in tables]
        if got != [int(d) for d in dims]:
            raise ValueError(f"embedding dims {got} do not match the expected {list(dims)}")


def join_modalities(tables: Sequence[EmbeddingTable]) -> tuple[list[str], list[np.ndarray]]:
    """Rows whose id is present in every table, in the first table's order."""
    common = set(tables[0].ids)
    for t in tables[1:]:
        common &= set(t.ids)
    ids = [i for i in dict.fromkeys(tables[0].ids) if i in common]
    if not ids:
        raise ValueError(
            "no id is shared by all embedding inputs: " + ", ".join(str(t.path) for t in tables)
        )
    out = []
    for t in tables:
        row = {i: r for r, i in enumerate(t.ids)}
        out.append(t.vectors[[row[i] for i in ids]])
    return ids, out


def read_labels(
    source: str | os.PathLike | pd.DataFrame, classes: Sequence[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Labels indexed by ``id``: a CSV (``id`` + one column per class, optional ``split``) or a
    metadata frame with ``label:<Class>`` columns. Returns ``(frame, class columns)``."""
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
        where = "embedding metadata"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: labels file not found")
        frame = pd.read_csv(path)
        where = str(path)
    if "id" not in frame.columns:
        raise ValueError(f"{where}: no 'id' column")
    frame = frame.rename(
        columns={
            c: c[len(LABEL_PREFIX) :] for c in frame.columns if str(c).startswith(LABEL_PREFIX)
        }
    )
    frame["id"] = frame["id"].astype(str)
    frame = frame.drop_duplicates("id").set_index("id")
    skip = {"split", "path", "text", "report", "study_id", "patient_id", "image_path", "kind"}
    available = [c for c in frame.columns if c not in skip]
    if classes:
        unknown = [c for c in classes if c not in frame.columns]
        if unknown:
            raise ValueError(f"{where}: unknown label(s) {unknown}; available: {available}")
        cols = list(classes)
    else:
        cols = [c for c in available if pd.api.types.is_numeric_dtype(frame[c])]
    if not cols:
        raise ValueError(f"{where}: no label columns found")
    return frame, cols


def split_rows(
    ids: Sequence[str], frame: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.15, 0.15)
) -> np.ndarray:
    """``train``/``val``/``test`` per id: the ``split`` column if present, else the package's
    one split rule (:func:`radalign.data.splits.assign_splits`, a keyed hash) over the ids."""
    if "split" in frame.columns:
        s = frame.reindex(list(ids))["split"].map(normalize_split)
        return s.fillna("none").to_numpy(dtype=object).astype(str)
    by_id = assign_splits(ids, fractions)
    return np.array([by_id[str(i)] for i in ids])
