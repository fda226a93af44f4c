"""Query an index with scans or free text, and format the hits.

:func:`retrieve_for_scans` embeds scans (files or folders) and returns the ``k`` nearest entries
of an index (typically a report index: "reports of similar cases"); :func:`retrieve_for_text`
embeds free text and searches an image index.  Both refuse an index built by another model:
vectors of two models live in different spaces, so the scores would be meaningless.

Result tables have one row per (query, rank)::

    query_id, query, rank (1 = best), score (cosine), id, study_id, report | image_path

Scans that cannot be read are left out and listed in ``result.attrs["skipped"]`` (a SkipLog).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from radalign.encoders.embed import Embeddings, embed_images, embed_texts
from radalign.encoders.errors import InputError
from radalign.retrieval.index import FingerprintMismatch, Index

__all__ = [
    "FORMATS",
    "expand_scans",
    "format_results",
    "open_index",
    "retrieve_for_scans",
    "retrieve_for_text",
    "search_embeddings",
]

FORMATS = ("table", "json", "csv")
_HIT_COLUMNS = ("report", "image_path")


def open_index(model, index: Index | str | os.PathLike) -> Index:
    """The index (loaded from a directory if a path), checked to be built by ``model``."""
    expected = model.fingerprint()
    if isinstance(index, Index):
        if index.fingerprint != expected:
            raise FingerprintMismatch(
                index.path or "<in-memory index>",
                "fingerprint mismatch",
                f"the index was built by another model: index fingerprint {index.fingerprint!r}, "
                f"this model {expected!r}; rebuild the index with this model "
                "(radalign index build)",
            )
        return index
    return Index.load(index, expected_fingerprint=expected)


def expand_scans(scans: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Scan files from files, folders (recursive) and list files, in order, without repeats."""
    from radalign.encoders.imageio import IMAGE_SUFFIXES, list_images

    if isinstance(scans, (str, os.PathLike)):
        scans = [scans]
    out: dict[Path, None] = {}
    for s in scans:
        p = Path(s)
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out[p] = None  # kept even if unreadable: embedding lists it as skipped
        elif p.exists():
            out.update(dict.fromkeys(list_images(p)))
        else:
            out[p] = None  # reported as skipped ("file not found") by the embedder
    return list(out)


def search_embeddings(
    index: Index, emb: Embeddings, k: int, queries: Sequence[str]
) -> pd.DataFrame:
    """Search ``index`` with already-embedded queries; ``queries`` are shown in the ``query``
    column (a path or the text)."""
    columns = ["query_id", "query", "rank", "score", "id", "study_id"]
    hit_col = next((c for c in _HIT_COLUMNS if c in index.metadata.columns), None)
    if hit_col:
        columns.append(hit_col)
    if len(emb) == 0:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        frame.attrs["skipped"] = emb.skipped
        return frame
    k = min(int(k), len(index))
    res = index.search(emb.vectors, k)
    meta = index.metadata
    rows = []
    for q in range(len(res)):
        for r in range(k):
            row = int(res.indices[q, r])
            if row < 0:
                continue
            hit = meta.iloc[row]
            rec = {
                "query_id": emb.metadata["id"].iloc[q],
                "query": queries[q],
                "rank": r + 1,
                "score": float(res.scores[q, r]),
                "id": hit["id"],
                "study_id": hit.get("study_id"),
            }
            if hit_col:
                rec[hit_col] = hit[hit_col]
            rows.append(rec)
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["skipped"] = emb.skipped
    return frame


def retrieve_for_scans(
    model,
    index: Index | str | os.PathLike,
    scans: Sequence[str | os.PathLike] | str | os.PathLike,
    k: int = 5,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    device=None,
    precision: str = "auto",
) -> pd.DataFrame:
    """Top-``k`` index entries for each scan (files, folders or list files), best first;
    the scans are embedded in ``precision`` (``auto``, ``bf16`` or ``fp32``)."""
    index = open_index(model, index)
    paths = expand_scans(scans)
    if not paths:
        raise InputError(str(scans), "no scans", "no image files found")
    emb = embed_images(
        model,
        paths,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=False,
        precision=precision,
    )
    return search_embeddings(index, emb, k, emb.metadata["path"].tolist())


def retrieve_for_text(
    model,
    index: Index | str | os.PathLike,
    texts: Sequence[str] | str,
    k: int = 5,
    *,
    device=None,
    precision: str = "auto",
) -> pd.DataFrame:
    """Top-``k`` index entries (typically scans of an image index) for each text, best first;
    the texts are embedded in ``precision``."""
    index = open_index(model, index)
    if isinstance(texts, str):
        texts = [texts]
    ids = [f"text{i}" for i in range(len(texts))]
    emb = embed_texts(model, list(texts), ids, device=device, progress=False, precision=precision)
    return search_embeddings(index, emb, k, emb.metadata["text"].tolist())


def format_results(frame: pd.DataFrame, fmt: str = "table", *, width: int = 80) -> str:
    """Render a result table as ``table`` (grouped by query, text cut to ``width``), ``json``
    (a list of {query, hits: [...]}) or ``csv``."""
    if fmt == "csv":
        buf = io.StringIO()
        frame.to_csv(buf, index=False)
        return buf.getvalue()
    if fmt == "json":
        out = []
        for (qid, query), group in frame.groupby(["query_id", "query"], sort=False):
            hits = group.drop(columns=["query_id", "query"]).to_dict("records")
            out.append({"query_id": qid, "query": query, "hits": [_jsonable(h) for h in hits]})
        return json.dumps(out, indent=2) + "\n"
    if fmt != "table":
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    hit_col = next((c for c in _HIT_COLUMNS if c in frame.columns), None)
    lines = []
    for (_, query), group in frame.groupby(["query_id", "query"], sort=False):
        lines.append(f"query: {_cut(str(query), width)}")
        for row in group.itertuples(index=False):
            text = _cut(str(getattr(row, hit_col)), width) if hit_col else ""
            study = row.study_id if row.study_id is not None else "-"
            lines.append(f"  {row.rank:>3}  {row.score:7.4f}  {row.id}  study {study}")
            if text:
                lines.append(f"       {text}")
    return "\n".join(lines) + ("\n" if lines else "")


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and v != v:
            v = None
        out[k] = v
    return out
