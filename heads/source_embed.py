"""Embed pair records for the heads (``radalign probe --source``, ``radalign timeline``) through
:mod:`radalign.encoders.embed`: scans that cannot be read and reports without a single word are
skipped and counted, never fatal."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from radalign.encoders.embed import check_report_text, embed_images, embed_pairs, embed_texts
from radalign.encoders.errors import InputError, SkipLog
from radalign.heads.inputs import LABEL_PREFIX, EmbeddingTable

__all__ = ["INPUTS", "embed_records", "modalities", "source_tables"]

INPUTS = ("both", "image", "report")


def _bad_report(text) -> str | None:
    """Why :func:`~radalign.encoders.embed.check_report_text` refuses ``text`` (checked before
    the pair's scan is decoded), or ``None``."""
    try:
        check_report_text(text)
    except InputError as err:
        return err.reason
    return None


def modalities(inputs: str) -> list[str]:
    """``both`` -> ``["image", "report"]``; ``image`` / ``report`` -> that one."""
    if inputs not in INPUTS:
        raise ValueError(f"unknown inputs {inputs!r}; choose one of {INPUTS}")
    return ["image", "report"] if inputs == "both" else [inputs]


def embed_records(
    model, records: Sequence, inputs: str = "both", skipped: SkipLog | None = None, **encoder_kw
) -> tuple[list[str], list[np.ndarray], SkipLog]:
    """``(ids, [vectors per modality], skipped)`` for the records whose every needed input
    embedded, in the records' order; ``encoder_kw`` go to the embedding functions
    (``batch_size``, ``num_workers``, ``device``, ``precision``)."""
    skipped = skipped if skipped is not None else SkipLog()
    mods = modalities(inputs)
    keep = []
    for r in records:
        if "report" in mods and (bad := _bad_report(r.report)) is not None:
            skipped.add(r.image_path or r.id, bad, (r.report or "")[:60])
        elif "image" in mods and r.image_path is None:
            skipped.add(r.id, "no image")
        else:
            keep.append(r)
    if mods == ["image", "report"]:
        pairs = embed_pairs(model, keep, progress=False, **encoder_kw)
        skipped.rows.extend(pairs.skipped.rows)
        return pairs.ids, [pairs.image, pairs.text], skipped
    ids = [str(r.id) for r in keep]
    if mods == ["image"]:
        emb = embed_images(model, [r.image_path for r in keep], ids, progress=False, **encoder_kw)
    else:
        kw = {k: v for k, v in encoder_kw.items() if k != "num_workers"}
        emb = embed_texts(model, [r.report for r in keep], ids, progress=False, **kw)
    skipped.rows.extend(emb.skipped.rows)
    return list(emb.metadata["id"].astype(str)), [emb.vectors], skipped


def source_tables(
    model, source: str | os.PathLike, inputs: str = "both", **encoder_kw
) -> tuple[list[EmbeddingTable], SkipLog]:
    """Open ``source`` (one frontal image per study) and embed it for ``radalign probe``: one
    table per modality whose metadata carries ``split``, ``patient_id`` and ``label:<Class>``
    columns (the source's labels: 1, 0, -1 uncertain, blank when not mentioned)."""
    from radalign.data.sources import open_source

    pairs = open_source(
        source, one_image_per_study=True, require_report="report" in modalities(inputs)
    )
    skipped = SkipLog(list(pairs.skipped.rows))
    ids, vectors, skipped = embed_records(model, pairs.records, inputs, skipped, **encoder_kw)
    if not ids:
        raise ValueError(f"{source}: nothing embedded ({skipped.summary()})")
    by_id = {str(r.id): r for r in pairs.records}
    meta = pd.DataFrame(
        [{"id": i, "split": by_id[i].split, "patient_id": by_id[i].patient_id,
          **{f"{LABEL_PREFIX}{k}": v for k, v in by_id[i].labels.items()}} for i in ids]
    )  # fmt: skip
    fp = model.fingerprint()
    return [EmbeddingTable(ids, v, meta, fp, Path(source)) for v in vectors], skipped
