"""End to end for ``radalign timeline``: a longitudinal source -> embedded, ordered timelines ->
a trained temporal head (scored against its no-history twin) or per-study predictions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from radalign.encoders.atomic import atomic_dir, atomic_write
from radalign.encoders.errors import SkipLog
from radalign.heads.io import load_head, metrics_json, write_head_files
from radalign.heads.source_embed import embed_records, modalities
from radalign.heads.timeline import (
    CHANGE_CLASSES,
    TimelineFit,
    evaluate_timeline,
    train_timeline,
)
from radalign.heads.timeline_data import (
    Timelines,
    build_timelines,
    check_longitudinal,
    tracked_findings,
)

__all__ = [
    "SourceTimelines",
    "load_timeline",
    "metrics_summary",
    "predict_timelines",
    "source_timelines",
    "train_timelines",
]


@dataclass
class SourceTimelines:
    """What :func:`source_timelines` read: the timelines, the widths of the fused inputs, the
    tracked findings, the rows skipped and the model's fingerprint."""

    timelines: Timelines
    dims: list[int]
    tracked: list[str]
    skipped: SkipLog
    fingerprint: str


def source_timelines(
    model,
    source: str | os.PathLike,
    *,
    inputs: str = "both",
    tracked: Sequence[str] | None = None,
    **encoder_kw,
) -> SourceTimelines:
    """Open ``source`` (one frontal image per study), check it has patient ids and dates, embed
    each study's ``inputs`` with ``model`` and build the ordered timelines."""
    from radalign.data.sources import open_source

    pairs = open_source(
        source, one_image_per_study=True, require_report="report" in modalities(inputs)
    )
    skipped = SkipLog(list(pairs.skipped.rows))
    records = check_longitudinal(pairs.records, str(source), skipped)
    tracked = list(tracked) if tracked else tracked_findings(records)
    if not tracked:
        raise ValueError(f"{source}: no finding is positive in some studies and absent in others")
    ids, vectors, skipped = embed_records(model, records, inputs, skipped, **encoder_kw)
    timelines = build_timelines(records, ids, vectors, tracked)
    dims = [int(v.shape[1]) for v in vectors]
    return SourceTimelines(timelines, dims, tracked, skipped, model.fingerprint())


def train_timelines(
    st: SourceTimelines,
    out: str | os.PathLike,
    *,
    inputs: str = "both",
    seed: int = 0,
    n_boot: int = 1000,
    max_epochs: int = 300,
) -> dict[str, Any]:
    """Train the temporal head (GRU over history) and its no-history baseline on the ``train``
    patients (early stopping on ``val``), score both on ``test``; write ``out/`` atomically:
    the history head (``head.safetensors`` + ``config.json`` with the model fingerprint),
    ``metrics.json`` and ``skipped.csv``. Returns the metrics."""
    tl = st.timelines
    counts = {s: int((tl.splits == s).sum()) for s in ("train", "val", "test")}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise ValueError(
            f"no patients in the {', '.join(empty)} split(s) ({counts}); timelines need "
            "train, val and test patients"
        )
    kw = {"dims": st.dims, "columns": st.tracked, "seed": seed, "max_epochs": max_epochs}
    fits = {h: train_timeline(tl.data("train"), tl.data("val"), history=h, **kw)
            for h in (True, False)}  # fmt: skip
    test = tl.data("test")
    metrics = {
        "history": evaluate_timeline(fits[True], test, n_boot=n_boot),
        "no_history": evaluate_timeline(fits[False], test, n_boot=n_boot),
        "train_seconds": {
            "history": fits[True].train_seconds,
            "no_history": fits[False].train_seconds,
        },  # fmt: skip
        "patients": counts,
        "studies": int(tl.mask.sum()),
        "tracked": st.tracked,
        "inputs": inputs,
        "fingerprint": st.fingerprint,
        "skipped": dict(st.skipped.counts()),
    }
    with atomic_dir(Path(out)) as tmp:
        write_head_files(fits[True], tmp, {"fingerprint": st.fingerprint, "inputs": inputs})
        (tmp / "metrics.json").write_text(metrics_json(metrics))
        st.skipped.write_csv(tmp / "skipped.csv")
    return metrics


def load_timeline(path: str | os.PathLike, fingerprint: str) -> TimelineFit:
    """A saved timeline head, checked to come from the model with ``fingerprint``."""
    head = load_head(path, fingerprint=fingerprint)
    if not isinstance(head, TimelineFit):
        raise ValueError(f"{path}: a {head.config.get('head')!r} head, not a timeline head")
    return head


def predict_timelines(head: TimelineFit, st: SourceTimelines, out: str | os.PathLike) -> Path:
    """Write ``out`` (CSV, atomically; ``skipped.csv`` beside it): one row per embedded study
    with ``id``, ``patient_id``, ``position`` (0 = the patient's first), ``p:<Finding>`` and,
    from the second study on, ``change:<Finding>`` (the most probable of
    :data:`~radalign.heads.timeline.CHANGE_CLASSES`) and ``p_changed:<Finding>``."""
    if st.dims != head.config["dims"]:
        raise ValueError(f"embedding dims {st.dims} do not match the head's {head.config['dims']}")
    tl = st.timelines
    lab, chg = head.predict(tl.x)
    rows = []
    for p, ids in enumerate(tl.ids):
        for t, sid in enumerate(ids):
            row: dict[str, Any] = {"id": sid, "patient_id": tl.patients[p], "position": t}
            for j, name in enumerate(head.config["columns"]):
                row[f"p:{name}"] = float(lab[p, t, j])
                row[f"change:{name}"] = CHANGE_CLASSES[int(chg[p, t, j].argmax())] if t else ""
                row[f"p_changed:{name}"] = float(1 - chg[p, t, j, 0]) if t else np.nan
            rows.append(row)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, mode="w", newline="") as fh:
        pd.DataFrame(rows).to_csv(fh, index=False)
    st.skipped.write_csv(out.parent / "skipped.csv")
    return out


def metrics_summary(metrics: dict[str, Any]) -> str:
    """One line: change AUROC with and without history, label AUROC, patient counts."""
    h, b = metrics["history"], metrics["no_history"]
    return (
        f"change AUROC {h['change_auroc']:.3f} ({h['change_ci'][0]:.3f}-{h['change_ci'][1]:.3f}) "
        f"vs no history {b['change_auroc']:.3f}; label AUROC {h['label_auroc_macro']:.3f}; "
        f"patients {metrics['patients']}"
    )
