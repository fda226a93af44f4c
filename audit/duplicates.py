"""Duplicates: exact (sha256 of the file bytes), near-duplicate images (perceptual-hash Hamming
distance via FAISS multi-index hashing, and embedding kNN below 0.13 × the median nearest-neighbour
distance, Datalab's rule), and duplicate or templated reports (exact normalised text, and
near-identical text by MinHash LSH over word shingles).

None of the stages is quadratic: hashes are bucketed (``IndexBinaryMultiHash``: 4 × 16-bit
sub-hashes with one bit flip, so every pair within 7 bits shares a probed bucket), embeddings use
the kNN graph, and MinHash bands bucket reports. A hash pair counts when phash + dhash differ in
at most ``hash_distance`` (3) of their 128 bits: on the shared real data that recalls 10 of the 12
listed pairs (the other two differ in 7 and 8 bits), while phantom laterals, which look alike,
came as close as 4 (or within 3, confirmed away by the embedding: where embeddings exist a hash
pair must also be closer than :data:`HASH_CONFIRM` × the median nearest-neighbour distance).
Sets are formed by union-find over the pairs; a set spanning several patients
is ``high`` (split leakage), within one patient ``medium``. Two images of one study (same
patient and study id) are not paired as near-duplicates: a repeated exposure looks like the
first by nature (a byte-identical copy is still an exact duplicate).
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict

import faiss
import numpy as np
import pandas as pd
from radalign.audit.findings import Finding
from radalign.audit.knn import KNNGraph, knn_graph, valid_rows

#: A perceptual-hash pair with embeddings counts when their cosine distance is below this
#: fraction of the median nearest-neighbour distance (planted near-duplicates: 0.04-0.14;
#: two look-alike phantom laterals within 3 hash bits: 0.86).
HASH_CONFIRM = 0.5
#: Intensity standard deviation below which an image counts as blank (as in image_stats).
BLANK_STD = 0.01

__all__ = ["check_duplicates", "hash_pairs", "minhash_pairs", "normalise_text", "union_sets"]


def union_sets(n: int, pairs) -> list[list[int]]:
    """Connected components (size ≥ 2) of the graph on ``n`` nodes with edges ``pairs``."""
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def _hex_to_bytes(hashes) -> np.ndarray:
    return np.stack([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in hashes])


def hash_pairs(hashes, max_distance: int = 6) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance), i < j, of 64-bit hex hashes within ``max_distance`` bits (≤ 7)."""
    if not 0 <= max_distance <= 7:
        raise ValueError("max_distance must be 0..7 (4 sub-hashes with one flip)")
    if len(hashes) < 2:
        return []
    x = _hex_to_bytes(hashes)
    index = faiss.IndexBinaryMultiHash(x.shape[1] * 8, 4, 16)
    index.nflip = 1
    index.add(x)
    lims, dist, nb = index.range_search(x, max_distance + 1)
    out = []
    for i in range(len(x)):
        for j, d in zip(nb[lims[i] : lims[i + 1]], dist[lims[i] : lims[i + 1]], strict=True):
            if j > i:
                out.append((i, int(j), int(d)))
    return out


_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", (text or "").lower())).strip()


def minhash_pairs(
    texts,
    *,
    shingle: int = 3,
    bands: int = 16,
    rows: int = 4,
    threshold: float = 0.9,
    seed: int = 0,
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, Jaccard) of texts whose word-``shingle`` sets have Jaccard ≥ ``threshold``;
    candidates from MinHash LSH (``bands`` × ``rows``), then verified exactly."""
    sets = []
    for t in texts:
        w = t.split()
        sets.append(
            {" ".join(w[i : i + shingle]) for i in range(max(1, len(w) - shingle + 1))}
            if w
            else set()
        )
    rng = np.random.default_rng(seed)
    p = (1 << 61) - 1
    nh = bands * rows
    a = rng.integers(1, 1 << 32, nh, dtype=np.uint64)[:, None]
    b = rng.integers(0, 1 << 32, nh, dtype=np.uint64)[:, None]
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        if not s:
            continue
        h = np.array([zlib.crc32(x.encode()) for x in s], dtype=np.uint64)
        # (a·h + b) mod p, all below 2^64: a universal hash family, one row per hash function
        sig = ((h[None, :] * a + b) % np.uint64(p)).min(axis=1)
        for band in range(bands):
            buckets[(band, *sig[band * rows : (band + 1) * rows].tolist())].append(i)
    cand = set()
    for members in buckets.values():
        if 1 < len(members) <= 500:
            cand.update(
                (members[x], members[y])
                for x in range(len(members))
                for y in range(x + 1, len(members))
            )
    out = []
    for i, j in cand:
        inter = len(sets[i] & sets[j])
        jac = inter / len(sets[i] | sets[j])
        if jac >= threshold:
            out.append((min(i, j), max(i, j), jac))
    return sorted(out)


def _patients(frame: pd.DataFrame, rows) -> set:
    if "patient_id" not in frame:
        return set()
    return {
        str(p)
        for p in frame["patient_id"].iloc[list(rows)]
        if p is not None and p == p and str(p) != ""
    }


def _same_study(frame: pd.DataFrame):
    """``same(a, b)``: rows ``a`` and ``b`` have one patient and one study (both known)."""
    if "study_id" not in frame or "patient_id" not in frame:
        return lambda a, b: False
    key = [
        (str(p), str(s)) if pd.notna(p) and pd.notna(s) and str(p) and str(s) else None
        for p, s in zip(frame["patient_id"], frame["study_id"])
    ]
    return lambda a, b: key[a] is not None and key[a] == key[b]


def _set_finding(frame, rows, sub, what, score) -> Finding:
    pats = _patients(frame, rows)
    cross = len(pats) > 1
    ids = [str(frame["id"].iat[i]) for i in rows]
    paths = (
        [str(p) for p in frame["image_path"].iloc[list(rows)] if isinstance(p, str) and p]
        if "image_path" in frame
        else []
    )
    who = f"across {len(pats)} patients (split leakage risk)" if cross else "within one patient"
    return Finding(
        "duplicate",
        sub,
        "high" if cross else "medium",
        f"{len(rows)} records are {what} {who}",
        ids,
        list(dict.fromkeys(paths)),
        score,
    )


def _image_duplicates(frame, stats, image_emb, image_knn, hash_distance, emb_factor, exclude):
    out: list[Finding] = []
    rows_of = defaultdict(list)
    if "image_path" in frame:
        for i, p in enumerate(frame["image_path"]):
            if isinstance(p, str) and p:
                rows_of[p].append(i)
    exact_rows: set[frozenset] = set()
    if stats is not None and len(stats):
        good = stats[stats["ok"].astype(bool) & (stats["sha256"].astype(str) != "")]
        good = good[good["image_path"].isin(rows_of)]
        # near-constant images (blank, all white) are alike by nature: they are image-statistics
        # outliers, and pairing them as duplicates would only repeat that finding
        if "std" in good:
            good = good[pd.to_numeric(good["std"], errors="coerce").fillna(1.0) >= BLANK_STD]
        good = good.reset_index(drop=True)
        for _, grp in good.groupby("sha256"):
            if len(grp) > 1:
                rows = sorted(r for p in grp["image_path"] for r in rows_of[p])
                exact_rows.add(frozenset(rows))
                out.append(
                    _set_finding(
                        frame, rows, "exact_image", f"byte-identical images ({len(grp)} files)", 1.0
                    )
                )
        # candidates share a phash within the budget; kept when phash + dhash distance (of 128
        # bits) is within it: one hash alone confuses look-alike radiographs (e.g. phantoms)
        okh = np.flatnonzero(
            (good["phash"].astype(str).str.len() == 16)
            & (good["dhash"].astype(str).str.len() == 16)
        )
        dh = _hex_to_bytes(good["dhash"].iloc[okh]) if len(okh) else None
        pairs = []
        for i, j, d in hash_pairs(good["phash"].iloc[okh].tolist(), min(hash_distance, 7)):
            if d + int(np.unpackbits(dh[i] ^ dh[j]).sum()) <= hash_distance:
                pairs.append((okh[i], okh[j]))
        file_pairs = []
        for a, b in pairs:
            if good.at[a, "sha256"] != good.at[b, "sha256"]:
                file_pairs.append(
                    (rows_of[good.at[a, "image_path"]][0], rows_of[good.at[b, "image_path"]][0])
                )
    else:
        file_pairs = []
    emb_pairs = []
    if image_emb is not None and valid_rows(image_emb).sum() >= 3:
        graph = image_knn or knn_graph(image_emb, k=1)
        nn = graph.distances[:, 0].astype(float)
        fin = np.isfinite(nn)
        cut = emb_factor * float(np.median(nn[fin]))
        # images already flagged as outliers (blank, saturated, non-chest) look alike by nature
        odd = frame["id"].astype(str).isin(exclude).to_numpy()
        for i in np.flatnonzero(fin & (nn < cut) & ~odd):
            j = int(graph.indices[i, 0])
            if not odd[j]:
                emb_pairs.append((i, j))
        # a hash pair the embedding contradicts (two look-alike laterals) is not a duplicate
        ok = valid_rows(image_emb)
        unit = np.where(ok[:, None], image_emb, 0.0) / np.maximum(
            np.linalg.norm(np.nan_to_num(image_emb), axis=1, keepdims=True), 1e-12
        )
        med = float(np.median(nn[fin]))
        file_pairs = [
            (a, b)
            for a, b in file_pairs
            if not (ok[a] and ok[b]) or 1 - float(unit[a] @ unit[b]) < HASH_CONFIRM * med
        ]
    # repeat exposures of one study (same patient, same study) look alike by nature
    same = _same_study(frame)
    pairs = [(a, b) for a, b in file_pairs + emb_pairs if not same(a, b)]
    for rows in union_sets(len(frame), pairs):
        if frozenset(rows) in exact_rows:
            continue
        paths = {frame["image_path"].iat[i] for i in rows} if "image_path" in frame else set()
        if len(paths) < 2 and "image_path" in frame:
            continue  # one file shared by several rows: the metadata checks report that
        out.append(
            _set_finding(
                frame,
                rows,
                "near_duplicate_image",
                "near-duplicate images (perceptual hash / embedding)",
                0.9,
            )
        )
    return out


def _report_duplicates(frame, min_words: int = 8) -> list[Finding]:
    if "report" not in frame:
        return []
    # the whole report as read (indication, comparison, ...): the chosen findings+impression of
    # two normal studies may legitimately read the same, a copied report file does not
    raw = frame["report_raw"].fillna("").astype(str) if "report_raw" in frame else None
    chosen = frame["report"].fillna("").astype(str)
    texts = [
        normalise_text(r if r is not None and r.strip() else c)
        for r, c in zip(raw if raw is not None else [None] * len(frame), chosen)
    ]
    studies = (
        frame["study_id"].astype(str).tolist()
        if "study_id" in frame
        else [str(i) for i in range(len(frame))]
    )
    out: list[Finding] = []
    by_text = defaultdict(list)
    for i, t in enumerate(texts):
        if len(t.split()) >= min_words:
            by_text[t].append(i)
    exact_groups = []
    for rows in by_text.values():
        # one report per study: several views of one study share it legitimately
        first = list({studies[i]: i for i in reversed(rows)}.values())
        if len(first) > 1:
            exact_groups.append(set(rows))
            all_rows = sorted(rows)
            f = _set_finding(
                frame,
                all_rows,
                "duplicate_report",
                f"identical reports in {len(first)} different studies",
                1.0,
            )
            f.severity = "medium" if f.severity == "high" else "low"
            out.append(f)
    # near-identical (templated) reports: one representative per study and text
    reps = {}
    for i, t in enumerate(texts):
        if len(t.split()) >= min_words:
            reps.setdefault((studies[i], t), i)
    keys = list(reps.values())
    pairs = [
        (keys[a], keys[b])
        for a, b, _ in minhash_pairs([texts[i] for i in keys])
        if texts[keys[a]] != texts[keys[b]] and studies[keys[a]] != studies[keys[b]]
    ]
    for rows in union_sets(len(frame), pairs):
        f = _set_finding(
            frame,
            sorted(rows),
            "templated_report",
            "near-identical reports (word-shingle Jaccard ≥ 0.9)",
            0.8,
        )
        f.severity = "low"
        out.append(f)
    return out


def check_duplicates(
    table,
    stats: pd.DataFrame | None,
    image_emb: np.ndarray | None = None,
    report_emb: np.ndarray | None = None,
    *,
    hash_distance: int = 3,
    emb_factor: float = 0.13,
    image_knn: KNNGraph | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> list[Finding]:
    """Exact and near-duplicate images and duplicate/templated reports of ``table.frame``.

    ``stats`` is :func:`~radalign.audit.image_stats.image_stats`'s frame (hashes per file);
    ``hash_distance``: the most differing bits of phash + dhash (2 × 64 bits) for a near-duplicate
    pair; ``emb_factor``: Datalab's embedding rule (NN distance < factor × median NN distance).
    ``report_emb`` is accepted for the contract but reports are compared as text; ``exclude``:
    record ids left out of embedding near-duplicate pairing (images already flagged as
    outliers)."""
    frame = table.frame.reset_index(drop=True)
    return _image_duplicates(
        frame, stats, image_emb, image_knn, hash_distance, emb_factor, exclude
    ) + _report_duplicates(frame)
