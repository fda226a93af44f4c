"""Longitudinal phantom patients: 3-6 ordered studies each, findings that appear, grow,
resolve or stay, reports that compare with the prior study.

Each patient keeps one anatomy (jittered per study) and a severity 0-3 per tracked finding
(graded ones: pleural effusion, pneumothorax, edema; 0 = absent).  Between consecutive studies a
finding is new (0 -> >0), worsened (grows), resolved (>0 -> 0) or unchanged; the report's
findings section opens with the matching comparison sentence ("new", "increased", "resolved",
"unchanged").  :func:`synthesize_longitudinal` writes ``OUT/images/<patient>/<study>.png`` and
``OUT/manifest.csv`` (``id, patient_id, study_id, study_date, split, image_path, report,
labels`` (pipe-separated positive names) and ``change:<Finding>`` per tracked finding; the first
study's change is empty) — a manifest that :func:`radalign.data.sources.open_source` reads.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from radalign.data.synth_anatomy import (
    jitter_anatomy,
    render_frontal,
    sample_anatomy,
    sample_finding,
    truth_labels,
)
from radalign.data.synth_reports import write_report
from radalign.encoders.atomic import atomic_dir

__all__ = ["CHANGES", "TRACKED", "synthesize_longitudinal"]

TRACKED: dict[str, tuple[str, ...]] = {
    "Pleural Effusion": ("small", "moderate", "large"),
    "Pneumothorax": ("small", "moderate", "large"),
    "Edema": ("mild", "moderate", "severe"),
}
CHANGES = ("unchanged", "new", "worsened", "resolved")
_NOUN = {"Pleural Effusion": "pleural effusion", "Pneumothorax": "pneumothorax",
         "Edema": "pulmonary edema"}  # fmt: skip


def _step(sev: int, rng: np.random.Generator) -> int:
    """Next severity: appear / grow / resolve / stay (no partial shrinking)."""
    u = rng.random()
    if sev == 0:
        return int(rng.integers(1, 3)) if u < 0.3 else 0
    if u < 0.3 and sev < 3:
        return sev + 1
    if u < 0.55:
        return 0
    return sev


def _change(prev: int, cur: int) -> str:
    if prev == 0 and cur > 0:
        return "new"
    if prev > 0 and cur == 0:
        return "resolved"
    return "worsened" if cur > prev else "unchanged"


def _sentence(name: str, base, prev: int, cur: int) -> str | None:
    where = "" if name == "Edema" else f"{base.laterality or 'right'} "
    noun = _NOUN[name]
    size = TRACKED[name][cur - 1] if cur else ""
    change = _change(prev, cur)
    if change == "new":
        return f"Compared with the prior study, there is a new {size} {where}{noun}."
    if change == "resolved":
        return f"The previously seen {where}{noun} has resolved."
    if change == "worsened":
        word = "worsened" if name == "Edema" else "increased in size"
        return f"The {where}{noun} has {word}, now {size}."
    if cur:
        return f"The {size} {where}{noun} is unchanged from the prior study."
    return None


def _insert(report: str, text: str) -> str:
    """Put ``text`` at the start of the findings section (else the impression, else the end)."""
    for head in ("FINDINGS: \n \n ", "IMPRESSION: \n \n "):
        if head in report:
            return report.replace(head, head + text + " ", 1)
    return report.rstrip("\n") + "\n " + text + "\n"


def _patient(pid: str, rng: np.random.Generator, size: int, img_dir: Path, root: Path):
    n = int(rng.integers(3, 7))
    anat = sample_anatomy(rng, "PA")
    base = {name: sample_finding(rng, name, "PA") for name in TRACKED}
    sev = {name: (int(rng.integers(1, 4)) if rng.random() < 0.35 else 0) for name in TRACKED}
    day = dt.date(2150, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3000)))
    rows, prev = [], None
    for t in range(n):
        if t:
            sev = {k: _step(v, rng) for k, v in sev.items()}
            day += dt.timedelta(days=int(rng.integers(1, 90)))
        findings = [replace(base[k], size=TRACKED[k][v - 1], uncertain=False)
                    for k, v in sev.items() if v]  # fmt: skip
        img = render_frontal(jitter_anatomy(anat, rng), findings, size, rng).image
        sid = f"{pid}-s{t}"
        path = img_dir / pid / f"{sid}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)).save(path)
        report = write_report(findings, "PA", rng, has_prior=t > 0).text
        row = {"id": sid, "patient_id": pid, "study_id": sid, "study_date": day.isoformat(),
               "image_path": str(path.relative_to(root))}  # fmt: skip
        if prev is not None:
            said = [s for k in TRACKED if (s := _sentence(k, base[k], prev[k], sev[k]))]
            if said:
                report = _insert(report, " ".join(said))
        row["report"] = report
        row["labels"] = "|".join(k for k, v in truth_labels(findings).items() if v)
        for k in TRACKED:
            row[f"change:{k}"] = _change(prev[k], sev[k]) if prev is not None else ""
            row[f"severity:{k}"] = sev[k]
        rows.append(row)
        prev = dict(sev)
    return rows


def synthesize_longitudinal(
    out: str | os.PathLike,
    n_patients: int = 100,
    seed: int = 0,
    size: int = 128,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> Path:
    """Write ``n_patients`` longitudinal phantom patients under ``out`` (atomically)."""
    if n_patients < 1:
        raise ValueError("n_patients must be >= 1")
    rng = np.random.default_rng(seed)
    out = Path(out)
    with atomic_dir(out) as tmp:
        rows = []
        cut = np.cumsum(split_fractions) / sum(split_fractions)
        for p in range(n_patients):
            pid = f"lp{seed:03d}{p:05d}"
            split = ("train", "val", "test")[int(np.searchsorted(cut, (p + 0.5) / n_patients))]
            for r in _patient(pid, rng, size, tmp / "images", tmp):
                rows.append({**r, "split": split})
        pd.DataFrame(rows).to_csv(tmp / "manifest.csv", index=False)
    return out
