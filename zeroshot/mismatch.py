"""Image–report mismatch flags: pairs whose report does not describe their image.

Score of a pair (image embedding u, report embedding t, both unit length), against an index of
reference reports (typically the training reports) built with the same model:

    s       = u · t                              the pair's own similarity
    r_u     = mean of u's k best similarities    how well the image's nearest reports fit it
              to the indexed reports
    rank    = number of indexed reports that fit the image better than its own report
    score   = r_u − s                            (+ with an image index, the same from the
                                                  report's side, r_t − s, averaged: CSLS-style)

A report that describes its image scores about as well as the image's neighbours (score near or
below 0); a swapped or altered report scores worse. Hits of the pair's own study are left out of
the neighbours, so flagging the training pairs against their own index is fair. The flag
threshold is the ``1 − fpr`` quantile of the scores of a reference set of pairs taken as correct
(by default the flagged pairs themselves, assuming most are right), so about ``fpr`` of correct
pairs are flagged.

Each flag explains itself with the zero-shot classifier applied to both sides: findings the
report asserts that the image does not show, and findings the image shows that the report does
not assert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from radalign.retrieval.index import Index
from radalign.zeroshot.classifier import PromptClassifier
from radalign.zeroshot.metrics import auroc

__all__ = [
    "MismatchScorer",
    "explain",
    "flag_pairs",
    "fit_threshold",
    "mismatch_aurocs",
    "plant_anomalies",
]


@dataclass
class MismatchScorer:
    """Scores (image, report) embedding pairs against ``report_index`` (see module docstring)."""

    report_index: Index
    k: int = 10
    image_index: Index | None = None

    def score(
        self,
        image_emb: np.ndarray,
        report_emb: np.ndarray,
        study_ids: Sequence[str | None] | None = None,
    ) -> pd.DataFrame:
        """Columns ``similarity``, ``neighbour_mean``, ``rank``, ``score`` (one row per pair)."""
        u = np.asarray(image_emb, dtype=np.float32)
        t = np.asarray(report_emb, dtype=np.float32)
        if u.shape != t.shape or u.ndim != 2:
            raise ValueError(f"need [N, E] image and report embeddings, got {u.shape}, {t.shape}")
        if len(self.report_index) == 0:
            raise ValueError("the reference report index is empty")
        s = np.einsum("ne,ne->n", u, t).astype(np.float64)
        studies = list(study_ids) if study_ids is not None else [None] * len(u)
        r_u, better = _neighbours(self.report_index, u, s, studies, self.k)
        out = pd.DataFrame({"similarity": s, "neighbour_mean": r_u, "rank": better})
        score = r_u - s
        if self.image_index is not None:
            r_t, _ = _neighbours(self.image_index, t, s, studies, self.k)
            out["report_neighbour_mean"] = r_t
            score = 0.5 * (score + (r_t - s))
        out["score"] = score
        return out


def _neighbours(
    index: Index, q: np.ndarray, s: np.ndarray, studies: list, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each query's ``k`` best hits (own study left out) and how many hits beat ``s``.

    The count is exact up to the searched depth and a lower bound beyond it."""
    depth = min(len(index), 4 * k + 16)
    res = index.search(q, depth)
    hit_study = None
    if "study_id" in index.metadata.columns:
        hit_study = index.metadata["study_id"].astype("string").to_numpy()
    means = np.empty(len(q))
    better = np.empty(len(q), dtype=np.int64)
    for i in range(len(q)):
        rows, scores = res.indices[i], res.scores[i].astype(np.float64)
        keep = rows >= 0
        if hit_study is not None and studies[i] is not None:
            keep &= hit_study[np.clip(rows, 0, None)] != str(studies[i])
        scores = scores[keep]
        if scores.size == 0:
            raise ValueError("no reference neighbours left for a pair; index too small")
        means[i] = scores[:k].mean()
        better[i] = int((scores > s[i]).sum())
    return means, better


def fit_threshold(reference_scores: np.ndarray, fpr: float) -> float:
    """The score above which about ``fpr`` of the (correct) reference pairs lie."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    ref = np.asarray(reference_scores, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        raise ValueError("no reference scores to fit a threshold on")
    return float(np.quantile(ref, 1.0 - fpr, method="higher"))


def explain(
    image_probs: pd.DataFrame,
    report_probs: pd.DataFrame,
    *,
    threshold: float = 0.5,
    margin: float = 0.25,
) -> list[str]:
    """One sentence per pair: findings on which the report and the image's zero-shot disagree.

    A finding counts when one side is at or above ``threshold``, the other below it, and they
    differ by at least ``margin``."""
    if list(image_probs.columns) != list(report_probs.columns) or len(image_probs) != len(
        report_probs
    ):
        raise ValueError("image and report probabilities must have the same shape and classes")
    img, rep = image_probs.to_numpy(), report_probs.to_numpy()
    classes = list(image_probs.columns)
    out = []
    for i in range(len(img)):
        said, shown = [], []
        for j, c in enumerate(classes):
            if abs(rep[i, j] - img[i, j]) < margin:
                continue
            if rep[i, j] >= threshold > img[i, j]:
                said.append(f"{c} (report {rep[i, j]:.2f}, image {img[i, j]:.2f})")
            elif img[i, j] >= threshold > rep[i, j]:
                shown.append(f"{c} (image {img[i, j]:.2f}, report {rep[i, j]:.2f})")
        parts = []
        if said:
            parts.append("report asserts, image does not show: " + "; ".join(said))
        if shown:
            parts.append("image shows, report does not assert: " + "; ".join(shown))
        out.append(" | ".join(parts) or "no finding-level disagreement")
    return out


def flag_pairs(
    scorer: MismatchScorer,
    classifier: PromptClassifier | None,
    image_emb: np.ndarray,
    report_emb: np.ndarray,
    *,
    fpr: float = 0.05,
    study_ids: Sequence[str | None] | None = None,
    reference_scores: np.ndarray | None = None,
) -> tuple[pd.DataFrame, float]:
    """Scores, flags at the fitted threshold and explanations; returns (table, threshold)."""
    table = scorer.score(image_emb, report_emb, study_ids)
    ref = table["score"].to_numpy() if reference_scores is None else reference_scores
    threshold = fit_threshold(ref, fpr)
    table["flagged"] = table["score"] > threshold
    if classifier is not None:
        img = classifier.predict(image_emb)
        rep = classifier.predict(report_emb)
        table["explanation"] = explain(img, rep)
    return table, threshold


def plant_anomalies(
    reports: Sequence[str],
    patient_ids: Sequence[str | None],
    *,
    seed: int = 0,
    flip: Callable[[str], str] | None = None,
) -> pd.DataFrame:
    """Altered copies of the pairs for evaluation: ``swap`` (the report of another patient) and,
    given ``flip`` (e.g. a left<->right rewrite), ``flip`` for reports that it changes.

    Returns rows ``pair`` (index of the image's pair), ``kind`` and ``report``; the originals
    come first with kind ``original``."""
    n = len(reports)
    rng = np.random.default_rng(seed)
    rows = [(i, "original", reports[i]) for i in range(n)]
    patients = [p if p is not None else f"#{i}" for i, p in enumerate(patient_ids)]
    for i in range(n):
        others = [j for j in rng.permutation(n)[: min(n, 64)] if patients[j] != patients[i]]
        if others:
            rows.append((i, "swap", reports[others[0]]))
    if flip is not None:
        for i in range(n):
            flipped = flip(reports[i])
            if flipped != reports[i]:
                rows.append((i, "flip", flipped))
    return pd.DataFrame(rows, columns=["pair", "kind", "report"])


def mismatch_aurocs(scores: np.ndarray, kinds: Sequence[str]) -> dict[str, float]:
    """AUROC of the score for separating each planted kind from the originals."""
    scores, kinds = np.asarray(scores, dtype=np.float64), np.asarray(kinds)
    base = scores[kinds == "original"]
    out = {}
    for kind in sorted(set(kinds) - {"original"}):
        altered = scores[kinds == kind]
        y = np.r_[np.zeros(len(base)), np.ones(len(altered))]
        out[kind] = auroc(y, np.r_[base, altered])
        out[f"n_{kind}"] = float(len(altered))
    out["n_original"] = float(len(base))
    return out


def evaluate_planted(
    model,
    scorer: MismatchScorer,
    image_vectors: np.ndarray,
    reports: Sequence[str],
    patient_ids: Sequence[str | None],
    study_ids: Sequence[str | None],
    *,
    seed: int = 0,
    text_cache=None,
    precision="auto",
) -> dict[str, float]:
    """Mismatch AUROC for planted anomalies: each pair's image (``image_vectors`` row i) scored
    against its own report, another patient's (``swap``) and its left/right-swapped report
    (``flip``), the altered reports embedded by ``model``. Returns :func:`mismatch_aurocs`."""
    from radalign.data.sections import flip_laterality
    from radalign.encoders.embed import embed_texts

    planted = plant_anomalies(list(reports), list(patient_ids), seed=seed, flip=flip_laterality)
    texts = embed_texts(
        model,
        planted["report"].tolist(),
        progress=False,
        text_cache=text_cache,
        precision=precision,
    ).vectors
    pair = planted["pair"].to_numpy()
    studies = list(np.asarray(list(study_ids), dtype=object)[pair])
    scores = scorer.score(np.asarray(image_vectors)[pair], texts, studies)["score"].to_numpy()
    return mismatch_aurocs(scores, planted["kind"].tolist())
