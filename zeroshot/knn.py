"""kNN label transfer: label a scan with the labels of the training reports nearest to it.

For a query embedding ``x`` the ``k`` nearest reports ``j`` (cosine ``s_j``, from
:meth:`radalign.retrieval.index.Index.search`) get weights ``w_j = softmax(s_j / temperature)``
and the probability of class ``c`` is::

    p_c(x) = sum_j w_j y_jc / sum_j w_j      over the neighbours whose label for c is known

Labels follow CheXpert: 1 positive, 0 negative, -1 uncertain (mapped to ``uncertain``, default
1.0 = "U-Ones"; NaN drops them), NaN/blank unknown and ignored.  A class with no known label
among the neighbours gets NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from radalign.retrieval.index import Index

__all__ = ["knn_label_transfer", "label_matrix"]


def label_matrix(
    index: Index, labels: pd.DataFrame | Sequence[str], uncertain: float = 1.0
) -> pd.DataFrame:
    """Labels aligned with the index rows (float; NaN unknown, -1 replaced by ``uncertain``).

    ``labels`` is a list of ``index.metadata`` column names, or a frame with one row per index
    row: matched on an ``id`` column when it has one, else by position.
    """
    if isinstance(labels, pd.DataFrame):
        frame = labels
        if "id" in frame.columns:
            by_id = frame.set_index(frame["id"].astype(str)).drop(columns="id")
            if by_id.index.has_duplicates:
                raise ValueError("label frame has duplicate ids")
            ids = index.metadata["id"].astype(str)
            missing = ~ids.isin(by_id.index)
            if missing.any():
                raise ValueError(
                    f"{int(missing.sum())} index id(s) have no labels, e.g. "
                    f"{ids[missing].tolist()[:5]}"
                )
            frame = by_id.loc[ids.to_numpy()]
        elif len(frame) != len(index):
            raise ValueError(
                f"label frame has {len(frame)} rows for an index of {len(index)} vectors "
                "(give an 'id' column to match by id)"
            )
    else:
        cols = [labels] if isinstance(labels, str) else list(labels)
        missing = [c for c in cols if c not in index.metadata.columns]
        if missing:
            raise KeyError(
                f"label column(s) {missing} not in the index metadata "
                f"(columns: {list(index.metadata.columns)})"
            )
        frame = index.metadata[cols]
    if frame.shape[1] == 0:
        raise ValueError("no label columns given")
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    stripped = frame.astype(str).apply(lambda col: col.str.strip())
    raw_blank = (frame.isna() | stripped.eq("")).to_numpy()
    if (np.isnan(values) & ~raw_blank).any():
        raise ValueError("label columns must hold 1, 0, -1 or blanks (found text)")
    known = values[np.isfinite(values)]
    if not np.isin(known, (-1.0, 0.0, 1.0)).all():
        raise ValueError("label columns must hold 1, 0, -1 or blanks")
    values = np.where(values == -1.0, uncertain, values)
    return pd.DataFrame(values, columns=[str(c) for c in frame.columns])


def knn_label_transfer(
    index: Index,
    labels: pd.DataFrame | Sequence[str],
    image_embeddings: np.ndarray,
    k: int = 10,
    temperature: float = 0.1,
    *,
    uncertain: float = 1.0,
    ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-class probabilities ``[N, C]`` for query embeddings from their ``k`` nearest reports.

    ``labels``: see :func:`label_matrix`.  ``k`` is capped at the index size.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    y = label_matrix(index, labels, uncertain)
    q = np.asarray(image_embeddings, dtype=np.float32)
    if q.ndim != 2:
        raise ValueError(f"image embeddings must be [N, E], got shape {q.shape}")
    out_index = pd.Index(list(ids), name="id") if ids is not None else None
    if out_index is not None and len(out_index) != len(q):
        raise ValueError(f"{len(out_index)} ids for {len(q)} embeddings")
    if len(q) == 0:
        return pd.DataFrame(np.zeros((0, y.shape[1])), columns=y.columns, index=out_index)
    res = index.search(q, min(int(k), len(index)))
    valid = res.indices >= 0
    logits = np.where(valid, res.scores.astype(np.float64) / temperature, -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)  # [N, k]; 0 where no neighbour
    lab = y.to_numpy()[np.maximum(res.indices, 0)]  # [N, k, C]
    known = np.isfinite(lab) & valid[..., None]
    num = np.einsum("nk,nkc->nc", w, np.where(known, lab, 0.0))
    den = np.einsum("nk,nkc->nc", w, known.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        probs = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return pd.DataFrame(probs, columns=y.columns, index=out_index)
