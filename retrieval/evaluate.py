"""Retrieval evaluation: paired Recall@K and the CheXpert 5x200 label-match Precision@K.

``recall_at_k``  query ``i`` is paired with gallery item ``i`` (the image and the report of one
                 study); Recall@K is the share of queries whose partner ranks in the top ``K``,
                 in both directions.
``5x200``        the CheXpert 5x200 protocol (ConVIRT, GLoRIA): up to 200 studies per class that
                 are positive for exactly one of Atelectasis, Cardiomegaly, Consolidation, Edema,
                 Pleural Effusion (uncertain -1 does not count as positive); a retrieved item is
                 a hit when it belongs to the query's class.  :func:`make_5x200` picks the
                 studies deterministically and :func:`save_ids` / :func:`load_ids` keep the
                 chosen ids so a number can be reproduced on another machine.

Ties in score are counted against the query (a partner tied with another item is ranked after
it), so a model that maps everything to one vector gets no credit; the ranking is
:func:`radalign.encoders.ranking.partner_ranks`, shared with validation during pretraining.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from radalign.encoders.atomic import atomic_write
from radalign.encoders.embed import embed_pairs
from radalign.encoders.ranking import partner_ranks

__all__ = [
    "FIVE_CLASSES",
    "evaluate_retrieval",
    "label_match_precision_at_k",
    "load_ids",
    "make_5x200",
    "recall_at_k",
    "save_ids",
]

FIVE_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)
PROTOCOL = "chexpert-5x200"
_BLOCK = 1024


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _ranks_of_partner(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """0-based rank of gallery item ``i`` among all gallery items for query ``i``."""
    ranks = np.empty(len(q), dtype=np.int64)
    for s in range(0, len(q), _BLOCK):
        ranks[s : s + _BLOCK] = partner_ranks(q[s : s + _BLOCK] @ g.T, offset=s)
    return ranks


def recall_at_k(
    query_vectors: np.ndarray, gallery_vectors: np.ndarray, ks: Iterable[int] = (1, 5, 10)
) -> dict[str, dict[str, float]]:
    """Recall@K for paired sets (query ``i`` matches gallery ``i``), cosine similarity.

    Returns ``{"query_to_gallery": {"R@1": .., ...}, "gallery_to_query": {...}}``."""
    q, g = _unit(query_vectors), _unit(gallery_vectors)
    if q.ndim != 2 or q.shape != g.shape:
        raise ValueError(f"paired sets need equal shapes, got {q.shape} and {g.shape}")
    if len(q) == 0:
        raise ValueError("recall_at_k needs at least one pair")
    ks = sorted({int(k) for k in ks})
    if ks[0] < 1:
        raise ValueError(f"K must be >= 1, got {ks[0]}")
    out = {}
    for name, (a, b) in (("query_to_gallery", (q, g)), ("gallery_to_query", (g, q))):
        ranks = _ranks_of_partner(a, b)
        out[name] = {f"R@{k}": float(np.mean(ranks < k)) for k in ks}
    return out


def label_match_precision_at_k(
    query_labels: Sequence[Any], retrieved_labels: Sequence[Sequence[Any]], k: int
) -> float:
    """Mean over queries of the share of the top ``k`` retrieved items with the query's label.

    ``retrieved_labels[i]`` are the labels of query ``i``'s hits, best first (at least ``k``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(query_labels) != len(retrieved_labels):
        raise ValueError(
            f"{len(query_labels)} query labels but {len(retrieved_labels)} retrieved lists"
        )
    if len(query_labels) == 0:
        raise ValueError("no queries")
    scores = []
    for label, hits in zip(query_labels, retrieved_labels):
        hits = list(hits)[:k]
        if len(hits) < k:
            raise ValueError(f"need at least k={k} retrieved items per query, got {len(hits)}")
        scores.append(sum(h == label for h in hits) / k)
    return float(np.mean(scores))


def _positive(labels: Mapping[str, float] | None, cls: str) -> bool:
    v = (labels or {}).get(cls)
    return v is not None and v == v and float(v) == 1.0


def make_5x200(
    records: Iterable[Any],
    classes: Sequence[str] = FIVE_CLASSES,
    n: int = 200,
    seed: int = 0,
) -> dict[str, list[str]]:
    """``{class: [record ids]}``: up to ``n`` studies per class positive for exactly that one of
    ``classes``, one record (the smallest id) per study, drawn with ``seed``; deterministic for
    the same records in any order."""
    by_study: dict[str, Any] = {}
    for r in records:
        key = str(r.study_id) if getattr(r, "study_id", None) is not None else f"id:{r.id}"
        if key not in by_study or str(r.id) < str(by_study[key].id):
            by_study[key] = r
    pools: dict[str, list[str]] = {c: [] for c in classes}
    for r in by_study.values():
        pos = [c for c in classes if _positive(r.labels, c)]
        if len(pos) == 1:
            pools[pos[0]].append(str(r.id))
    chosen = {}
    for i, c in enumerate(classes):
        pool = sorted(pools[c])
        rng = np.random.default_rng([seed, i])
        order = rng.permutation(len(pool))[:n]
        chosen[c] = sorted(pool[j] for j in order)
    return chosen


def save_ids(
    selection: Mapping[str, Sequence[str]],
    path: str | os.PathLike,
    *,
    n: int | None = None,
    seed: int | None = None,
) -> Path:
    """Write the chosen ids (``{class: [ids]}``) as JSON, atomically."""
    path = Path(path)
    doc = {
        "protocol": PROTOCOL,
        "classes": list(selection),
        "n": n,
        "seed": seed,
        "ids": {c: list(map(str, ids)) for c, ids in selection.items()},
    }
    with atomic_write(path, "w") as fh:
        json.dump(doc, fh, indent=2)
    return path


def load_ids(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read what :func:`save_ids` wrote (or a plain ``{class: [ids]}`` JSON object)."""
    try:
        doc = json.loads(Path(path).read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not a JSON id list ({e})") from e
    ids = doc.get("ids", doc) if isinstance(doc, dict) else None
    if not isinstance(ids, dict) or not all(isinstance(v, list) for v in ids.values()):
        raise ValueError(f"{path}: expected {{class: [ids]}} or a file written by save_ids")
    return {str(c): [str(i) for i in v] for c, v in ids.items()}


def _precision(sim: np.ndarray, q_cls: np.ndarray, g_cls: np.ndarray, ks: list[int]) -> dict:
    order = np.argsort(-sim, axis=1, kind="stable")
    hits = g_cls[order]
    return {f"P@{k}": label_match_precision_at_k(q_cls, hits, min(k, sim.shape[1])) for k in ks}


def evaluate_retrieval(
    model,
    records: Iterable[Any],
    *,
    classes: Sequence[str] = FIVE_CLASSES,
    n: int = 200,
    seed: int = 0,
    ids: Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 32,
    num_workers: int = 0,
    device=None,
    precision="auto",
) -> dict[str, Any]:
    """Image->report and report->image Recall@K and label-match Precision@K on the 5x200 subset
    of ``records`` (all one-of-five studies when fewer exist); ``ids`` (a selection or a JSON
    file from :func:`save_ids`) fixes the subset.  Pairs whose image or report cannot be
    embedded are dropped and counted."""
    records = list(records)
    if ids is None:
        selection = make_5x200(records, classes, n=n, seed=seed)
    elif isinstance(ids, Mapping):
        selection = {str(c): [str(i) for i in v] for c, v in ids.items()}
    else:
        selection = load_ids(ids)
    by_id = {str(r.id): r for r in records}
    missing = [i for v in selection.values() for i in v if i not in by_id]
    cases = [(i, c) for c, v in selection.items() for i in v if i in by_id]
    if not cases:
        raise ValueError(
            "no evaluation cases: no record is positive for exactly one of "
            f"{', '.join(classes)}" + (f" ({len(missing)} listed ids not found)" if missing else "")
        )
    pairs = embed_pairs(
        model,
        [by_id[i] for i, _ in cases],
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        precision=precision,
    )
    embedded = set(pairs.ids)
    both = [(i, c) for i, c in cases if i in embedded]
    if not both:
        raise ValueError("no case had both its image and its report embedded")
    iv, tv = pairs.image, pairs.text
    cls = np.array([c for _, c in both], dtype=object)
    ks = sorted({int(k) for k in ks})
    recall = recall_at_k(iv, tv, ks)
    sim = _unit(iv) @ _unit(tv).T
    counts = {c: int((cls == c).sum()) for c in selection}
    return {
        "protocol": PROTOCOL,
        "fingerprint": model.fingerprint(),
        "classes": list(selection),
        "n_per_class": n,
        "seed": seed,
        "cases": len(both),
        "per_class": counts,
        "full_5x200": all(v >= n for v in counts.values()),
        "dropped": {
            "ids_not_found": len(missing),
            "image_skipped": len(cases) - len(pairs.images),
            "report_skipped": len(pairs.texts.skipped),
        },
        "image_to_report": {
            **recall["query_to_gallery"],
            **_precision(sim, cls, cls, ks),
        },
        "report_to_image": {
            **recall["gallery_to_query"],
            **_precision(sim.T, cls, cls, ks),
        },
    }
