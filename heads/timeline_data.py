"""Patient timelines from pair records: each patient's studies ordered by date, their fused
embeddings padded into ``[P, T, D]`` and, per tracked finding, the study's label and the change
since the patient's previous embedded study.

A finding's per-study value is its ``severity:<Finding>`` field when the source has one (the
longitudinal phantoms, :mod:`radalign.data.synth_longitudinal`), else its label (1 positive;
0, -1 and absent count as absent).  The change between consecutive studies is always derived
from those values with :func:`radalign.heads.timeline.change_class` — one rule, so a study that
was skipped (an unreadable scan) leaves a consistent change to the study before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from radalign.encoders.errors import SkipLog
from radalign.heads.timeline import change_class

__all__ = [
    "SEVERITY_PREFIX",
    "Timelines",
    "build_timelines",
    "check_longitudinal",
    "tracked_findings",
]

SEVERITY_PREFIX = "severity:"


@dataclass
class Timelines:
    """Padded sequences and who they belong to (``ids[p]``: patient ``p``'s study ids in order)."""

    x: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    changes: np.ndarray
    patients: list[str]
    splits: np.ndarray
    ids: list[list[str]]

    def data(self, split: str | None = None) -> tuple:
        """``(x, mask, labels, changes)`` of the patients in ``split`` (all when ``None``)."""
        keep = slice(None) if split is None else self.splits == split
        return self.x[keep], self.mask[keep], self.labels[keep], self.changes[keep]


def _value(record, name: str) -> float:
    raw = record.metadata.get(SEVERITY_PREFIX + name)
    if raw not in (None, ""):
        try:
            return float(raw)
        except ValueError:
            return 0.0
    return 1.0 if record.labels.get(name) == 1 else 0.0


def tracked_findings(records: Sequence) -> list[str]:
    """Findings with a ``severity:`` field in the source, else every label that is positive in
    some records and not in others."""
    graded = sorted({k[len(SEVERITY_PREFIX) :] for r in records for k in r.metadata
                     if k.startswith(SEVERITY_PREFIX)})  # fmt: skip
    if graded:
        return graded
    names = sorted({k for r in records for k in r.labels})
    return [k for k in names if 0 < sum(r.labels.get(k) == 1 for r in records) < len(records)]


def check_longitudinal(records: Sequence, where: str, skipped: SkipLog | None = None) -> list:
    """Records with a patient id and a readable study date; ``ValueError`` when the source has
    none of one or the other, else the rest are counted in ``skipped``."""
    records = list(records)
    if not records:
        raise ValueError(f"{where}: no studies to build timelines from")
    has_pid = [bool(r.patient_id) for r in records]
    dates = pd.to_datetime(pd.Series([r.study_date or None for r in records], dtype=object),
                           errors="coerce", format="mixed")  # fmt: skip
    if not any(has_pid):
        raise ValueError(f"{where}: no patient ids (a patient_id/subject_id column): timelines "
                         "need each study's patient")  # fmt: skip
    if not dates.notna().any():
        raise ValueError(f"{where}: no study dates (a study_date/StudyDate column): timelines "
                         "need the order of each patient's studies")  # fmt: skip
    keep = []
    for r, pid, day in zip(records, has_pid, dates):
        reason = None if pid else "no patient id"
        reason = reason or (None if pd.notna(day) else "no study date")
        if reason is None:
            keep.append(r)
        elif skipped is not None:
            skipped.add(r.image_path or r.id, reason, str(r.study_date or ""))
    return keep


def build_timelines(
    records: Sequence,
    ids: Sequence[str],
    vectors: Sequence[np.ndarray],
    tracked: Sequence[str],
) -> Timelines:
    """Timelines of the records whose id is in ``ids`` (rows of every array in ``vectors``,
    concatenated per study). Records must have passed :func:`check_longitudinal`. A patient's
    split is its first study's (``train`` when the source gives none)."""
    row = {str(i): n for n, i in enumerate(ids)}
    recs = [r for r in records if str(r.id) in row]
    if not recs:
        raise ValueError("no study has embeddings: nothing to build timelines from")
    fused = np.hstack([np.asarray(v, np.float32) for v in vectors])
    frame = pd.DataFrame({
        "n": range(len(recs)),
        "patient": [str(r.patient_id) for r in recs],
        "date": pd.to_datetime([r.study_date for r in recs], format="mixed"),
        "study": [str(r.study_id or r.id) for r in recs],
    }).sort_values(["patient", "date", "study"], kind="stable")  # fmt: skip
    groups = [g["n"].to_numpy() for _, g in frame.groupby("patient", sort=True)]
    p, t_max, c = len(groups), max(len(g) for g in groups), len(tracked)
    x = np.zeros((p, t_max, fused.shape[1]), np.float32)
    mask = np.zeros((p, t_max), bool)
    labels = np.zeros((p, t_max, c), np.float32)
    changes = np.zeros((p, t_max, c), np.int64)
    patients, splits, order = [], [], []
    for i, g in enumerate(groups):
        studies = [recs[n] for n in g]
        value = np.array([[_value(r, k) for k in tracked] for r in studies]).reshape(len(g), c)
        x[i, : len(g)] = fused[[row[str(r.id)] for r in studies]]
        mask[i, : len(g)] = True
        labels[i, : len(g)] = value > 0
        for s in range(1, len(g)):
            changes[i, s] = [change_class(a, b) for a, b in zip(value[s - 1], value[s])]
        patients.append(str(studies[0].patient_id))
        splits.append(studies[0].split or "train")
        order.append([str(r.id) for r in studies])
    return Timelines(x, mask, labels, changes, patients, np.array(splits), order)
