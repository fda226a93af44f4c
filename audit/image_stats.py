"""Image statistics, decoded once per file: size, intensity summary, perceptual and content hashes,
and the checks on them (unreadable files, blank, saturated, inverted, aspect/size outliers).

``image_stats`` caches one row per file in ``cache/image_stats.parquet`` (keyed by path, size and
mtime) and flushes every ``flush`` files, so a killed audit resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from radalign.audit.findings import Finding
from radalign.encoders.atomic import atomic_write
from radalign.encoders.errors import InputError
from radalign.encoders.imageio import load_image

__all__ = ["HIST_BINS", "STAT_COLUMNS", "THUMB", "check_image_stats", "file_stats", "image_stats"]

HIST_BINS = 16
STAT_COLUMNS = [
    "image_path",
    "key",
    "ok",
    "error",
    "height",
    "width",
    "aspect",
    "mean",
    "std",
    "frac_black",
    "frac_saturated",
    "border_mean",
    "center_mean",
    "phash",
    "dhash",
    "sha256",
] + [f"h{i}" for i in range(HIST_BINS)]
#: Side of the thumbnail (area-averaged grey levels) kept per file for the layout check.
THUMB = 8
STAT_COLUMNS += [f"t{i}" for i in range(THUMB * THUMB)]
CACHE_NAME = "image_stats.parquet"
#: Least thumbnail distance (1 − correlation with its most alike images) for a layout outlier:
#: clean phantoms (frontals and laterals) reach 0.2, inverted and non-chest images 0.85-1.2.
LAYOUT_MIN = 0.5
#: Datalab's outlier fence: Q3 + (1/0.37037 - 1)·IQR.
FENCE = 1 / 0.37037 - 1


def _key(path: str) -> str:
    try:
        st = os.stat(path.split("::")[0])
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "missing"


def _sha256(path: str) -> str:
    if "::" in path:
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_stats(path: str) -> dict:
    """Statistics of one image file; ``ok=False`` with the decoder's reason if it cannot be read."""
    row: dict = {c: np.nan for c in STAT_COLUMNS}
    row.update(image_path=path, key=_key(path), ok=False, error="", phash="", dhash="", sha256="")
    try:
        img = load_image(path, window="full")
    except InputError as err:
        row["error"] = getattr(err, "reason", None) or str(err)
        return row
    except (OSError, ValueError) as err:  # decoder bugs on odd files are still entry errors
        row["error"] = f"{type(err).__name__}: {err}"
        return row
    h, w = img.shape
    b = max(1, min(h, w) // 8)
    border = np.concatenate(
        [img[:b].ravel(), img[-b:].ravel(), img[:, :b].ravel(), img[:, -b:].ravel()]
    )
    center = img[h // 4 : h - h // 4, w // 4 : w - w // 4]
    hist = np.histogram(img, bins=HIST_BINS, range=(0.0, 1.0))[0] / img.size
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    thumb = pil.resize((THUMB, THUMB), Image.Resampling.BOX)
    row.update(
        ok=True,
        height=h,
        width=w,
        aspect=w / h,
        mean=float(img.mean()),
        std=float(img.std()),
        frac_black=float((img <= 1 / 255).mean()),
        frac_saturated=float((img >= 254 / 255).mean()),
        border_mean=float(border.mean()),
        center_mean=float(center.mean()),
        phash=str(imagehash.phash(pil)),
        dhash=str(imagehash.dhash(pil)),
        sha256=_sha256(path),
        **{f"h{i}": float(v) for i, v in enumerate(hist)},
        **{f"t{i}": float(v) / 255 for i, v in enumerate(np.asarray(thumb, float).ravel())},
    )
    return row


def image_stats(
    table, *, cache: str | Path | None = None, progress: bool = False, flush: int = 500
) -> pd.DataFrame:
    """One row per distinct ``image_path`` of ``table.frame`` (columns :data:`STAT_COLUMNS`)."""
    from tqdm.auto import tqdm

    paths = [p for p in pd.unique(table.frame["image_path"].dropna()) if str(p)]
    cached = pd.DataFrame(columns=STAT_COLUMNS)
    cache_file = Path(cache) / CACHE_NAME if cache is not None else None
    if cache_file is not None and cache_file.exists():
        cached = pd.read_parquet(cache_file)
        if set(STAT_COLUMNS) - set(cached.columns):  # written by an older version: redo
            cached = pd.DataFrame(columns=STAT_COLUMNS)
    done = dict(zip(cached["image_path"], cached["key"], strict=True)) if len(cached) else {}
    keys = {p: _key(p) for p in paths}
    todo = [p for p in paths if done.get(p) != keys[p]]
    rows = [
        r
        for r in cached.to_dict("records")
        if r["image_path"] in keys and r["key"] == keys[r["image_path"]]
    ]

    def save() -> None:
        if cache_file is None:
            return
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache_file, "wb") as fh:
            pd.DataFrame(rows, columns=STAT_COLUMNS).to_parquet(fh, index=False)

    for i, p in enumerate(tqdm(todo, desc="image stats", unit="img", disable=not progress)):
        rows.append(file_stats(str(p)))
        if (i + 1) % flush == 0:
            save()
    if todo:
        save()
    out = pd.DataFrame(rows, columns=STAT_COLUMNS)
    order = {p: i for i, p in enumerate(paths)}
    return out.sort_values("image_path", key=lambda c: c.map(order)).reset_index(drop=True)


def _ids_by_path(table) -> dict[str, list[str]]:
    f = table.frame[table.frame["image_path"].notna()]
    return f.groupby("image_path")["id"].agg(list).to_dict()


def _fence_hi(v: np.ndarray) -> float:
    q1, q3 = np.nanpercentile(v, [25, 75])
    return float(q3 + FENCE * (q3 - q1))


def _layout_outliers(good: pd.DataFrame, flagged: set[str], k: int = 10) -> list[tuple]:
    """(row, subtype, explanation, score) for images whose thumbnail (grey levels centred and
    scaled per image) is far from the k most alike thumbnails of the archive (mean cosine
    distance above Tukey's far-out fence and :data:`LAYOUT_MIN`): not a chest, or inverted when the negated thumbnail
    fits the archive. Model-free, so it holds where an embedding maps odd images near ordinary
    ones."""
    from radalign.audit.knn import knn_graph
    from radalign.audit.outliers import FAR_OUT, fence, knn_outlier_scores

    t = good[[f"t{i}" for i in range(THUMB * THUMB)]].to_numpy(np.float64)
    sd = t.std(axis=1)
    rows = np.flatnonzero(np.isfinite(t).all(axis=1) & (sd > 1e-3))
    if len(rows) < max(2 * k, 20):
        return []
    z = (t[rows] - t[rows].mean(axis=1, keepdims=True)) / sd[rows, None]
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    s = knn_outlier_scores(knn_graph(z, k=k))
    cut = max(fence(s, FAR_OUT), LAYOUT_MIN)
    out = []
    for j in np.flatnonzero(s > cut):
        if good.at[rows[j], "image_path"] in flagged:
            continue
        # the negated thumbnail's distance to its k most alike others
        inv = 1 - np.sort(np.delete(z, j, axis=0) @ -z[j])[::-1][:k].mean()
        if inv <= cut:
            sub, why = "inverted_image", "grey scale looks inverted: the negated image fits"
        else:
            sub, why = "image_layout_outlier", "image layout unlike the archive's (not a chest?):"
        out.append(
            (
                rows[j],
                sub,
                f"{why} thumbnail distance {s[j]:.2f} to its {k} most alike images "
                f"(fence {cut:.2f}; negated {inv:.2f})",
                float(s[j] / cut),
            )
        )
    return out


def check_image_stats(
    table,
    stats: pd.DataFrame,
    *,
    blank_std: float = 0.01,
    saturated: float = 0.4,
    black: float = 0.6,
) -> list[Finding]:
    """Entry errors (unreadable files, with the decoder's reason) and intensity/size outliers:
    blank, saturated, mostly black, inverted grey scale (histogram closer to the archive's when
    reversed), aspect and size far outside the archive's."""
    ids = _ids_by_path(table)
    found: list[Finding] = []
    if stats is None or not len(stats):
        return found
    for r in stats[~stats["ok"].astype(bool)].itertuples():
        if not os.path.exists(r.image_path):
            continue  # a missing file is a ``missing/image_file_missing`` finding, not two
        found.append(
            Finding(
                "entry_error",
                "unreadable_image",
                "high",
                f"image cannot be decoded: {r.error}",
                ids.get(r.image_path, ()),
                (r.image_path,),
            )
        )
    good = stats[stats["ok"].astype(bool)].reset_index(drop=True)
    if not len(good):
        return found
    flagged: set[str] = set()

    def add(sub: str, sev: str, why: str, path: str, score: float) -> None:
        flagged.add(path)
        found.append(Finding("outlier", sub, sev, why, ids.get(path, ()), (path,), score))

    for r in good.itertuples():
        if r.std < blank_std:
            add(
                "blank_image",
                "high",
                f"image is blank (intensity std {r.std:.4f})",
                r.image_path,
                1.0 - r.std,
            )
        elif r.frac_saturated > saturated:
            add(
                "saturated_image",
                "medium",
                f"{r.frac_saturated:.0%} of pixels saturated at full white",
                r.image_path,
                r.frac_saturated,
            )
        elif r.frac_black > black:
            add(
                "black_image",
                "medium",
                f"{r.frac_black:.0%} of pixels are black",
                r.image_path,
                r.frac_black,
            )
    hist = good[[f"h{i}" for i in range(HIST_BINS)]].to_numpy()
    if len(good) >= 10:
        ref = np.median(hist, axis=0)
        ref /= ref.sum() or 1.0
        d_fwd = np.abs(hist - ref).sum(axis=1)
        d_rev = np.abs(hist[:, ::-1] - ref).sum(axis=1)
        far = d_fwd > max(_fence_hi(d_fwd), 0.3)
        # the archive's own contrast: is the border (air) darker than the centre (body)?
        contrast = (good["center_mean"] - good["border_mean"]).to_numpy()
        sign = np.sign(np.median(contrast)) or 1.0
        for i in np.flatnonzero(far & (d_rev < 0.5 * d_fwd) & (np.sign(contrast) != sign)):
            p = good.at[i, "image_path"]
            if p not in flagged:
                add(
                    "inverted_image",
                    "high",
                    "grey scale looks inverted (MONOCHROME1 handling?): histogram matches the "
                    f"archive's when reversed ({d_rev[i]:.2f} vs {d_fwd[i]:.2f})",
                    p,
                    float(d_fwd[i] - d_rev[i]),
                )
        for col, what in (("aspect", "aspect ratio"), ("pixels", "image size")):
            v = (
                (good["width"] * good["height"]).to_numpy(float)
                if col == "pixels"
                else good["aspect"].to_numpy(float)
            )
            lv = np.log(v)
            med = np.median(lv)
            mad = 1.4826 * np.median(np.abs(lv - med))
            tol = max(4 * mad, np.log(1.5) if col == "aspect" else np.log(4.0))
            for i in np.flatnonzero(np.abs(lv - med) > tol):
                p = good.at[i, "image_path"]
                if p not in flagged:
                    add(
                        f"{col}_outlier",
                        "low",
                        f"{what} {v[i]:.3g} far from the archive's median {np.exp(med):.3g} "
                        "(wrong body part or a cropped/odd file?)",
                        p,
                        float(abs(lv[i] - med) / tol),
                    )
        for i, sub, why, score in _layout_outliers(good, flagged):
            add(sub, "medium", why, good.at[i, "image_path"], score)
    return found
