"""End to end: cached embeddings + labels -> trained head, test metrics, saved directory."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from radalign.encoders.atomic import atomic_dir
from radalign.encoders.errors import SkipLog
from radalign.heads.alignment import ALIGN_FILE, fit_aligner, modality_gap, save_aligner
from radalign.heads.inputs import (
    EmbeddingTable,
    check_same_model,
    join_modalities,
    read_labels,
    read_table,
    split_rows,
)
from radalign.heads.io import metrics_json, write_head_files
from radalign.heads.train import score, train_head

__all__ = ["prepare_targets", "run_probe", "train_and_score"]


def prepare_targets(
    frame: pd.DataFrame, ids: Sequence[str], cols: list[str], task: str, target: str | None
) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """``(y, keep mask, class names, rows dropped)``. Label cells that are blank (NaN: not
    mentioned) count as negative; rows with any other value than 0/1 (e.g. -1, uncertain) in
    ``cols`` are dropped. Multiclass uses ``target`` (class names sorted) or exactly one
    positive among ``cols``."""
    sub = frame.reindex(list(ids))
    if task == "multiclass" and target is not None:
        if target not in frame.columns:
            raise ValueError(f"unknown target column {target!r}; available: {list(frame.columns)}")
        values = sub[target]
        keep = values.notna().to_numpy()
        names = sorted(values[keep].astype(str).unique())
        lookup = {n: k for k, n in enumerate(names)}
        y = np.array([lookup.get(str(v), -1) for v in values])
        return y, keep, names, int((~keep).sum())
    raw = sub[cols]
    vals = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    vals[raw.isna().to_numpy()] = 0.0  # blank: not mentioned -> negative
    keep = np.isin(vals, (0.0, 1.0)).all(1)
    keep &= sub.index.to_series().notna().to_numpy() & np.asarray([i in frame.index for i in ids])
    if task == "multiclass":
        keep &= vals.sum(1) == 1
        y = np.where(keep, np.nan_to_num(vals).argmax(1), -1)
        return y, keep, list(cols), int((~keep).sum())
    return np.nan_to_num(vals), keep, list(cols), int((~keep).sum())


def train_and_score(
    head: str,
    xs: list[np.ndarray],
    y: np.ndarray,
    split: np.ndarray,
    *,
    task: str,
    columns: list[str],
    use_class_weights: bool = False,
    seed: int = 0,
    n_boot: int = 1000,
):
    """Fit on ``split == "train"`` (early stopping / C choice on ``val``), score on ``test``."""
    parts = {s: split == s for s in ("train", "val", "test")}
    for name, m in parts.items():
        if not m.any():
            have = dict(zip(*np.unique(split, return_counts=True)))
            raise ValueError(
                f"the {name} split is empty ({len(split)} rows: "
                + ", ".join(f"{k} {int(v)}" for k, v in have.items())
                + "); give a --labels CSV with a split column (train/val/test)"
            )
    tr, va, te = parts["train"], parts["val"], parts["test"]
    n_classes = len(columns) if task == "multiclass" else None
    args = ([x[tr] for x in xs], y[tr], [x[va] for x in xs], y[va])
    fitted = train_head(
        head, *args, task=task, n_classes=n_classes, use_class_weights=use_class_weights,
        seed=seed, columns=columns,
    )  # fmt: skip
    start = time.perf_counter()
    probs = fitted.predict_proba([x[te] for x in xs])
    infer = time.perf_counter() - start
    metrics = score(probs, y[te], task, columns, n_boot=n_boot, seed=seed)
    metrics.update(
        train_seconds=fitted.train_seconds,
        inference_seconds=infer,
        inference_ms_per_row=1000 * infer / int(te.sum()),
        n_train=int(tr.sum()),
        n_val=int(va.sum()),
        n_test=int(te.sum()),
    )
    return fitted, metrics


def run_probe(
    *,
    image: str | os.PathLike | EmbeddingTable | None,
    report: str | os.PathLike | EmbeddingTable | None,
    labels: str | os.PathLike | None,
    out: str | os.PathLike,
    classes: Sequence[str] | None = None,
    task: str = "multilabel",
    target: str | None = None,
    head: str = "linear",
    use_class_weights: bool = False,
    align: str = "none",
    expected_fingerprint: str | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    skipped: SkipLog | None = None,
) -> dict[str, Any]:
    """Read, join, split, train, score and write ``out/`` (metrics.json + head, and
    ``skipped.csv`` when ``skipped`` is given); returns metrics. ``image``/``report`` are
    embedding files, index directories or tables already embedded (``source_tables``). Rows
    are split by the labels' ``split`` column, else the embeddings' own, else by id."""
    given = [p for p in (image, report) if p is not None]
    if not given:
        raise ValueError("give --image and/or --report embeddings (or --source)")
    tables = [p if isinstance(p, EmbeddingTable) else read_table(p) for p in given]
    check_same_model(tables, expected_fingerprint)
    if len(tables) == 2 and tables[0].vectors.shape[1] != tables[1].vectors.shape[1]:
        raise ValueError(
            f"image ({tables[0].vectors.shape[1]}) and report ({tables[1].vectors.shape[1]}) "
            "embedding dims differ: not one model's embeddings"
        )
    ids, xs = join_modalities(tables)
    meta = tables[0].metadata
    if labels is not None:
        frame, cols = read_labels(labels, classes)
    else:
        if not any(str(c).startswith("label:") for c in meta.columns) and target is None:
            raise ValueError(f"{tables[0].path}: no label:<Class> columns; give --labels")
        frame, cols = read_labels(meta, classes)
    missing = [i for i in ids if i not in frame.index]
    if len(missing) == len(ids):
        raise ValueError(f"no embedding id has a label row (e.g. {ids[0]!r})")
    y, keep, columns, dropped = prepare_targets(frame, ids, cols, task, target)
    if "split" not in frame.columns and "split" in meta.columns:
        split = split_rows(ids, meta.drop_duplicates("id").set_index("id"))
    else:
        split = split_rows(ids, frame)
    ids = [i for i, k in zip(ids, keep) if k]
    xs, y, split = [x[keep] for x in xs], y[keep], split[keep]
    gap, al = {}, None
    if align != "none":
        if len(xs) != 2:
            raise ValueError("--align needs both --image and --report embeddings")
        tr = split == "train"
        al = fit_aligner(xs[0][tr], xs[1][tr], align)
        gap["before"] = modality_gap(xs[0], xs[1])
        xs = [al.image(xs[0]).astype(np.float32), al.text(xs[1]).astype(np.float32)]
        gap["after"] = modality_gap(xs[0], xs[1])
    fitted, metrics = train_and_score(
        head, xs, y, split, task=task, columns=columns, use_class_weights=use_class_weights,
        seed=seed, n_boot=n_boot,
    )  # fmt: skip
    metrics.update(
        head=head,
        task=task,
        modalities=["image" if image else None, "report" if report else None],
        rows_dropped_unlabelled=dropped,
        align=align,
        modality_gap=gap or None,
        fingerprint=tables[0].fingerprint,
        skipped=dict(skipped.counts()) if skipped is not None else None,
    )
    metrics["modalities"] = [m for m in metrics["modalities"] if m]
    extra = {
        "fingerprint": tables[0].fingerprint,
        "modalities": metrics["modalities"],
        "align": align,
    }
    with atomic_dir(Path(out)) as tmp:
        write_head_files(fitted, tmp, extra)
        if al is not None:
            save_aligner(al, tmp / ALIGN_FILE)
        (tmp / "metrics.json").write_text(metrics_json(metrics))
        if skipped is not None:
            skipped.write_csv(tmp / "skipped.csv")
    return metrics
