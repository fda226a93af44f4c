"""Outliers in embedding space (cleanlab Datalab's kNN definition), report outliers (length,
language), and image–report mismatches (single reports that fit neither their image nor their
labels, and pairs of studies whose reports look exchanged), as audit findings.

kNN outlier score: mean cosine distance to the k = 10 nearest neighbours, flagged above
``Q3 + (1/0.37037 − 1)·IQR`` of the archive's scores (Datalab's fence).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from radalign.audit.findings import Finding
from radalign.audit.knn import KNNGraph, knn_graph, valid_rows

__all__ = [
    "FENCE",
    "LABEL_Z",
    "MISMATCH_Z",
    "SIDE_LOG_LR",
    "check_mismatch",
    "check_outliers",
    "english_ratio",
    "exchanged_pairs",
    "fence",
    "knn_outlier_scores",
    "label_disagreement",
]

FENCE = 1 / 0.37037 - 1
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
#: Common English function words plus radiology's; a report with almost none is not English.
_STOP = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "no",
        "not",
        "with",
        "without",
        "there",
        "this",
        "that",
        "for",
        "as",
        "by",
        "from",
        "it",
        "its",
        "which",
        "has",
        "have",
        "seen",
        "noted",
        "may",
        "likely",
        "small",
        "large",
        "left",
        "right",
        "both",
        "lung",
        "lungs",
        "heart",
        "chest",
        "pleural",
        "effusion",
        "normal",
        "size",
        "clear",
        "acute",
        "findings",
        "impression",
        "evidence",
        "stable",
        "unchanged",
        "compared",
        "prior",
        "mild",
        "moderate",
        "severe",
    ]
)


def fence(v: np.ndarray, factor: float = FENCE) -> float:
    """Upper fence Q3 + ``factor``·IQR over the finite values (default Datalab's
    1/0.37037 − 1 ≈ 1.7; :data:`FAR_OUT` is Tukey's 3)."""
    q1, q3 = np.nanpercentile(v, [25, 75])
    return float(q3 + factor * (q3 - q1))


#: Tukey's "far out" fence, used for the embedding outliers: at Datalab's 1.7 the planted
#: benchmark flagged about as many ordinary phantoms as planted outliers.
FAR_OUT = 3.0


def knn_outlier_scores(graph: KNNGraph) -> np.ndarray:
    """Mean distance to the k neighbours (NaN for rows without an embedding)."""
    d = graph.distances.astype(np.float64)
    with np.errstate(invalid="ignore"):
        s = np.where(np.isfinite(d), d, np.nan)
        out = np.nanmean(np.where(np.isfinite(d).any(axis=1, keepdims=True), s, 0.0), axis=1)
    out[~np.isfinite(d).any(axis=1)] = np.nan
    return out


def english_ratio(text: str) -> tuple[float, int]:
    """(fraction of words that are common English/radiology words, number of words)."""
    words = [w.lower() for w in _WORD.findall(text or "")]
    if not words:
        return 1.0, 0
    return sum(w in _STOP for w in words) / len(words), len(words)


def _rows(frame: pd.DataFrame, i: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    p = frame["image_path"].iat[i] if "image_path" in frame else None
    return (str(frame["id"].iat[i]),), ((str(p),) if isinstance(p, str) and p else ())


def _embedding_outliers(frame, emb, k, what, graph=None) -> list[Finding]:
    if emb is None or valid_rows(emb).sum() < max(2 * k, 20):
        return []
    graph = graph or knn_graph(emb, k=k)
    s = knn_outlier_scores(graph)
    cut = fence(s, FAR_OUT)
    out = []
    for i in np.flatnonzero(np.nan_to_num(s, nan=-1) > cut):
        ids, paths = _rows(frame, i)
        out.append(
            Finding(
                "outlier",
                f"{what}_embedding",
                "medium" if s[i] > 2 * cut else "low",
                f"{what} far from the rest of the archive: mean cosine distance "
                f"{s[i]:.3f} to its {k} nearest neighbours (fence {cut:.3f})",
                ids,
                paths if what == "image" else (),
                float(s[i] / cut),
            )
        )
    return out


def _report_outliers(
    frame: pd.DataFrame, *, min_words: int = 8, max_english: float = 0.08
) -> list[Finding]:
    out: list[Finding] = []
    texts = frame["report"].fillna("").astype(str).to_numpy() if "report" in frame else []
    if not len(texts):
        return out
    ratios = [english_ratio(t) for t in texts]
    n_words = np.array([n for _, n in ratios], dtype=float)
    has = n_words > 0
    if has.sum() >= 20:
        lw = np.log1p(n_words[has])
        q1, q3 = np.percentile(lw, [25, 75])
        lo, hi = q1 - 2 * FENCE * (q3 - q1), q3 + 2 * FENCE * (q3 - q1)
        for j, i in enumerate(np.flatnonzero(has)):
            # a short report ("No acute process.") is ordinary; only near-empty ones are odd
            if lw[j] > hi or (lw[j] < lo and n_words[i] < 3):
                ids, _ = _rows(frame, i)
                side = "long" if lw[j] > hi else "short"
                out.append(
                    Finding(
                        "outlier",
                        f"report_too_{side}",
                        "low",
                        f"report has {int(n_words[i])} words, outside the archive's "
                        f"range ({np.expm1(lo):.0f}–{np.expm1(hi):.0f})",
                        ids,
                        (),
                        float(abs(lw[j] - (hi if side == "long" else lo)) + 1),
                    )
                )
    for i, (r, n) in enumerate(ratios):
        if n >= min_words and r < max_english:
            ids, _ = _rows(frame, i)
            out.append(
                Finding(
                    "outlier",
                    "report_language",
                    "medium",
                    f"report does not look English: {r:.0%} of its {n} words are "
                    "common English words",
                    ids,
                    (),
                    1.0 - r,
                )
            )
    return out


def check_outliers(
    table,
    image_emb: np.ndarray | None = None,
    report_emb: np.ndarray | None = None,
    *,
    k: int = 10,
    image_knn: KNNGraph | None = None,
    report_knn: KNNGraph | None = None,
) -> list[Finding]:
    """Image and report kNN-distance outliers (when embeddings are given; pass precomputed
    graphs from :func:`~radalign.audit.knn.knn_graph` to reuse them) and report length/language
    outliers."""
    frame = table.frame
    out = _embedding_outliers(frame, image_emb, k, "image", image_knn)
    out += _embedding_outliers(frame, report_emb, k, "report", report_knn)
    out += _report_outliers(frame)
    return out


#: Robust z (median/MAD of the archive's own mismatch scores) above which a pair is flagged.
MISMATCH_Z = 4.0
#: With labels: a pair is flagged at mismatch z above ``MISMATCH_Z - 1`` when its report also
#: disagrees with its study's labels (robust z of the label loss above this).
LABEL_Z = 2.5
#: ... and when the labels side with the image against the report by a likelihood ratio of
#: at least 3 (Kass and Raftery's "positive evidence"; :func:`_image_side` is its logarithm).
SIDE_LOG_LR = math.log(3.0)


def _robust_z(v: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """``v`` as robust z-scores (median and 1.4826 × MAD) of ``ref`` (default ``v``); NaN-aware."""
    ref = v if ref is None else ref
    med = float(np.nanmedian(ref))
    mad = 1.4826 * float(np.nanmedian(np.abs(ref - med))) or 1e-9
    return (v - med) / mad


def _label_shares(
    frame: pd.DataFrame, report_emb: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(positive labels ``y`` [n, L], the label shares of each report's ``k`` nearest reports
    clipped to 0.05..0.95 [n, L], rows with a report); None without labels or reports."""
    if "labels" not in frame:
        return None
    rows = [d if isinstance(d, dict) else {} for d in frame["labels"]]
    lab = pd.DataFrame(rows).apply(pd.to_numeric, errors="coerce")
    if lab.shape[1] == 0:
        return None
    y = (lab.to_numpy(np.float64) == 1).astype(np.float64)
    ok = valid_rows(report_emb)
    if ok.sum() <= k:
        return None
    graph = knn_graph(report_emb[ok], k=k)
    nb = np.flatnonzero(ok)[np.clip(graph.indices, 0, None)]
    share = np.full(y.shape, 0.5)
    share[ok] = np.clip(y[nb].mean(axis=1), 0.05, 0.95)
    return y, share, ok


def _nll(y: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Per row: cross-entropy of the row's labels ``y`` under its label shares, summed."""
    return -(y * np.log(share) + (1 - y) * np.log(1 - share)).sum(axis=1)


def _label_loss(y: np.ndarray, share: np.ndarray) -> np.ndarray:
    """``[len(y), len(share)]``: cross-entropy of each row's labels under each row's shares."""
    return -(y @ np.log(share).T + (1 - y) @ np.log(1 - share).T)


def _image_side(index, u: np.ndarray, studies: np.ndarray, y, share, k: int) -> np.ndarray:
    """Per row, in nats: how much better the study's labels fit the labels of the ``k``
    reports its image fits best (own study left out) than those of its report's neighbours
    (``share``). Positive: the labels side with the image, so the report is the odd one."""
    depth = min(len(index), 3 * k)
    hits = index.search(u, depth).indices
    own = studies[np.clip(hits, 0, None)] == studies[:, None]
    img_share = np.empty_like(share)
    for i in range(len(u)):
        nb = hits[i][(hits[i] >= 0) & ~own[i]][:k]
        img_share[i] = np.clip(y[nb].mean(axis=0), 0.05, 0.95) if len(nb) else 0.5
    return _nll(y, share) - _nll(y, img_share)


def label_disagreement(frame: pd.DataFrame, report_emb: np.ndarray, k: int = 10) -> np.ndarray:
    """Per row: how badly the study's labels fit the labels of the ``k`` reports most alike its
    report (binary cross-entropy against the neighbours' label shares, clipped to 0.05..0.95,
    summed over labels): large when the report describes other findings than its labels say.
    NaN without a ``labels`` column."""
    out = np.full(len(frame), np.nan)
    got = _label_shares(frame, report_emb, k)
    if got is None:
        return out
    y, share, ok = got
    out[ok] = _nll(y[ok], share[ok])
    return out


#: Most studies (of one view group) the exchange test compares all pairs of; beyond, the
#: studies with the strongest single-row evidence.
EXCHANGE_ROWS = 3000
_LATERAL = frozenset({"LATERAL", "LL", "RL", "LAT", "LLD", "RLD"})


def exchanged_pairs(
    image_emb: np.ndarray,
    report_emb: np.ndarray,
    studies: np.ndarray,
    y: np.ndarray | None = None,
    share: np.ndarray | None = None,
    *,
    factor: float = FAR_OUT,
) -> list[tuple[int, int, float, float, float]]:
    """Pairs of rows whose reports look exchanged: ``(i, j, z, image_gain, label_gain)``.

    Exchanging the reports of rows i and j changes the image–report fit by
    ``s(i,j) + s(j,i) − s(i,i) − s(j,j)`` (cosine similarities of unit vectors) and, with labels
    ``y`` and each report's neighbour label shares ``share``, the labels' fit by the drop in
    cross-entropy. Each gain is a robust z over all pairs of different studies (the archive's
    own null: almost every pair is not exchanged), and their sum ``z`` is the pair's
    statistic. Pairs whose ``z`` exceeds the fence ``Q3 + factor·IQR`` of every row's
    best-partner ``z`` are matched greedily, strongest first, each row in one pair at most (a
    row whose best partner belongs to a stronger pair is matched to its next best)."""
    n = len(image_emb)
    if n < 20:
        return []
    s = image_emb @ report_emb.T
    d = np.diag(s).copy()
    g_img = s + s.T - d[:, None] - d[None, :]
    other = studies[:, None] != studies[None, :]
    upper = np.triu(other, 1)
    z = _robust_z(g_img, g_img[upper])
    g_lab = None
    if y is not None and share is not None:
        loss = _label_loss(y, share)
        dl = np.diag(loss).copy()
        g_lab = dl[:, None] + dl[None, :] - loss - loss.T
        z += _robust_z(g_lab, g_lab[upper])
    z[~other] = -np.inf
    best_z = z.max(axis=1)
    cut = fence(best_z[np.isfinite(best_z)], factor)
    cand = np.argwhere(np.triu(z > cut, 1))
    order = np.argsort(-z[cand[:, 0], cand[:, 1]], kind="stable")
    used: set[int] = set()
    out = []
    for i, j in cand[order]:  # greedy matching: the strongest exchange first, each row once
        if i in used or j in used:
            continue
        used |= {int(i), int(j)}
        lab = float(g_lab[i, j]) if g_lab is not None else float("nan")
        out.append((int(i), int(j), float(z[i, j]), float(g_img[i, j]), lab))
    return out


def check_mismatch(
    table,
    image_emb: np.ndarray | None,
    report_emb: np.ndarray | None,
    *,
    k: int = 10,
    z: float = MISMATCH_Z,
    label_z: float = LABEL_Z,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> list[Finding]:
    """Cross-modal mismatch, two checks.

    Exchanged reports (:func:`exchanged_pairs` over studies, each study's images of one view
    group averaged, within the frontal and within the lateral views): two studies whose
    reports fit each other's images (and labels) better than their own, one finding naming the
    records of both. Single mismatches: :class:`~radalign.zeroshot.mismatch.MismatchScorer`
    scores (how much better other reports fit the image than its own, and other images the
    report), flagged when the score's robust z within the row's view group exceeds ``z`` and
    the pair is not among each other's ``k`` best matches in either direction. Where the table
    has labels, the report must also disagree with its study's labels
    (:func:`label_disagreement` robust z above ``label_z``) and the labels must fit the
    reports the image fits best better than they fit its own report's neighbours (likelihood
    ratio above 3, :data:`SIDE_LOG_LR`); then a mismatch z above ``z - 1`` suffices: the
    report fits neither its image nor its labels, so it is the report that is wrong (where the
    labels side with the report, the image embedding is the odd one). Studies of an exchanged
    pair are not flagged again. Rows in ``exclude`` (ids already flagged as outliers or entry
    errors: a blank image fits no report) are neither flagged nor part of the reference
    distributions."""
    if image_emb is None or report_emb is None:
        return []
    from radalign.retrieval.index import Index
    from radalign.zeroshot.mismatch import MismatchScorer

    frame = table.frame
    ids = frame["id"].astype(str).to_numpy()
    keep = valid_rows(image_emb) & valid_rows(report_emb) & ~np.isin(ids, list(exclude))
    both = np.flatnonzero(keep)
    if len(both) < max(2 * k, 20):
        return []
    u = np.asarray(image_emb, np.float32)[both]
    t = np.asarray(report_emb, np.float32)[both]
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    studies = (
        frame["study_id"].iloc[both].astype(str).to_numpy() if "study_id" in frame else ids[both]
    )
    meta = pd.DataFrame({"id": ids[both], "study_id": studies})
    rep_ix = Index.build(t, meta, fingerprint="audit-reports", factory="Flat")
    img_ix = Index.build(u, meta, fingerprint="audit-images", factory="Flat")
    scores = MismatchScorer(report_index=rep_ix, k=k, image_index=img_ix).score(u, t, list(studies))
    # the report's side: how many images fit the report better than its own image
    rank_r2i = MismatchScorer(report_index=img_ix, k=k).score(t, u, list(studies))["rank"]
    s = scores["score"].to_numpy()
    views = frame["view"].iloc[both] if "view" in frame else pd.Series([""] * len(both))
    lateral = views.fillna("").astype(str).str.upper().isin(_LATERAL).to_numpy()
    groups = [g for g in (~lateral, lateral) if g.sum() >= max(2 * k, 20)]
    rz = np.full(len(s), np.nan)
    for g in groups:  # a lateral view fits any report worse than a frontal one does
        rz[g] = _robust_z(s[g])
    rank = np.minimum(scores["rank"].to_numpy(), rank_r2i.to_numpy())
    frame_b = frame.iloc[both]
    got = _label_shares(frame_b, t, k)
    out: list[Finding] = []
    paired: set[str] = set()
    for g in groups:  # reports belong to studies: one image vector (the mean) per study
        rows = np.flatnonzero(g)
        keys, first, inv = np.unique(studies[rows], return_index=True, return_inverse=True)
        img = np.zeros((len(keys), u.shape[1]), np.float64)
        np.add.at(img, inv, u[rows])
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        take = np.arange(len(keys))
        if len(keys) > EXCHANGE_ROWS:  # the studies with the strongest single-row evidence
            ev = np.full(len(keys), -np.inf)
            np.maximum.at(ev, inv, np.nan_to_num(rz[rows], nan=-np.inf))
            take = np.sort(np.argsort(-ev)[:EXCHANGE_ROWS])
        head = rows[first[take]]
        lab = (got[0][head], got[1][head]) if got is not None else (None, None)
        for i, j, pz, gi, gl in exchanged_pairs(img[take], t[head], keys[take], *lab):
            sa, sb = keys[take[i]], keys[take[j]]
            paired |= {sa, sb}
            ra, rb = rows[inv == take[i]], rows[inv == take[j]]
            ids_a = tuple(x for r in ra for x in _rows(frame, both[r])[0])
            ids_b = tuple(x for r in rb for x in _rows(frame, both[r])[0])
            paths = tuple(x for r in (*ra, *rb) for x in _rows(frame, both[r])[1])
            out.append(
                Finding(
                    "cross_modal",
                    "reports_exchanged",
                    "high",
                    f"the reports of {ids_a[0]} and {ids_b[0]} look exchanged: each fits the "
                    f"other's image better than its own (fit gain {gi:.3f})"
                    + (f" and the other's labels (loss drop {gl:.2f} nats)" if gl == gl else "")
                    + f"; exchange z {pz:.1f}",
                    ids_a + ids_b,
                    paths,
                    pz,
                )
            )
    if got is not None:
        lz = label_disagreement(frame_b, t, k)
        lz = _robust_z(lz)  # with labels, the report must also disagree with them
        side = _image_side(rep_ix, u, studies, got[0], got[1], k)
        flag = (rz > z - 1) & (np.nan_to_num(lz, nan=-np.inf) > label_z) & (side > SIDE_LOG_LR)
    else:
        lz = np.full(len(s), np.nan)
        flag = rz > z
    flag &= (s > 0) & (rank >= k) & ~np.isin(studies, list(paired))
    for j in np.flatnonzero(flag):
        fid, paths = _rows(frame, both[j])
        out.append(
            Finding(
                "cross_modal",
                "image_report_mismatch",
                "medium",
                f"report fits its image worse than other reports do and the image its report "
                f"worse than other images (score {s[j]:.3f}, robust z {rz[j]:.1f}; own "
                f"similarity {scores['similarity'].iat[j]:.3f}; {rank[j]} better matches)"
                + (f"; its labels unlike its report's (z {lz[j]:.1f})" if lz[j] == lz[j] else ""),
                fid,
                paths,
                float(s[j]),
            )
        )
    return out
