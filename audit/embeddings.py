"""The audit's embeddings: every scan and report of the table embedded once, cached in chunks so
that a killed audit reruns from what it already has."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from radalign.encoders.atomic import atomic_write

__all__ = ["CHUNK", "cached_embeddings"]

CHUNK = 1024
"""Rows per cached chunk: the most a killed audit has to redo per modality."""


def _digest(ids: list[str], values: list[str]) -> str:
    h = hashlib.sha256()
    for i, v in zip(ids, values):
        h.update(f"{i}\0{v}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def cached_embeddings(
    model,
    frame: pd.DataFrame,
    cache: str | Path,
    *,
    kind: str,
    batch_size: int = 32,
    device=None,
    precision="auto",
    progress: bool = True,
) -> np.ndarray:
    """``[len(frame), E]`` float32 unit vectors of the ``image_path`` (``kind="image"``) or
    ``report`` (``kind="report"``) column; NaN rows where there is no image/report or it could
    not be read. Chunks already in ``cache`` for the same model and rows are reused."""
    from radalign.encoders.embed import embed_images, embed_texts

    if kind not in ("image", "report"):
        raise ValueError(f"kind must be image or report, got {kind!r}")
    embed, sizes = (
        (embed_images, {"batch_size": batch_size}) if kind == "image" else (embed_texts, {})
    )
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    fingerprint = model.fingerprint()
    column = "image_path" if kind == "image" else "report"
    values = [("" if v is None or v != v else str(v)) for v in frame[column].tolist()]
    ids = [str(i) for i in frame["id"].tolist()]
    dim = int(model.config.embed_dim)
    out = np.full((len(frame), dim), np.nan, dtype=np.float32)
    n_chunks = (len(frame) + CHUNK - 1) // CHUNK
    for c in range(n_chunks):
        lo, hi = c * CHUNK, min(len(frame), (c + 1) * CHUNK)
        key = f"{kind}-{c:05d}-{_digest(ids[lo:hi], values[lo:hi])}-{fingerprint[:12]}.npy"
        path = cache / key
        if path.is_file():
            out[lo:hi] = np.load(path, allow_pickle=False)
            continue
        rows = [i for i in range(lo, hi) if values[i].strip()]
        block = np.full((hi - lo, dim), np.nan, dtype=np.float32)
        if rows:
            emb = embed(
                model,
                [values[i] for i in rows],
                [str(i) for i in rows],
                device=device,
                progress=progress,
                precision=precision,
                **sizes,
            )
            where = emb.metadata["id"].astype(int).to_numpy() - lo
            block[where] = emb.vectors
        with atomic_write(path) as fh:
            np.save(fh, block)
        out[lo:hi] = block
    with atomic_write(cache / f"{kind}-info.json", "w") as fh:
        json.dump({"fingerprint": fingerprint, "rows": len(frame), "chunks": n_chunks}, fh)
    return out
