"""``temporal`` findings: per patient (studies out of order against their ids, duplicated
timestamps, implausible gaps, dates in the future or before birth, ages going backwards) and in
the archive's intake (days or weeks with far more or far fewer studies than a robust baseline,
by a Poisson test)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from radalign.audit.findings import Finding
from radalign.audit.table import AuditTable, known
from scipy import stats

__all__ = ["check_intake", "check_temporal"]

_FIRST_XRAY = pd.Timestamp("1896-01-01")


def _time_seconds(value: object) -> float:
    """Seconds of day from DICOM ``HHMMSS.frac`` or ``HH:MM:SS``; NaN if none."""
    if value is None or value != value:
        return float("nan")
    s = str(value).strip().replace(":", "")
    m = re.fullmatch(r"(\d{1,6})(\.\d+)?", s)
    if not m:
        return float("nan")
    d = m.group(1).zfill(6)
    hh, mm, ss = int(d[:2]), int(d[2:4]), int(d[4:6])
    if hh > 23 or mm > 59 or ss > 60:
        return float("nan")
    return hh * 3600 + mm * 60 + ss + float(m.group(2) or 0)


def _id_key(values: pd.Series) -> pd.Series | None:
    """Study ids as numbers when all are numeric (else ``None``: no order to check)."""
    num = pd.to_numeric(values, errors="coerce")
    return None if num.isna().any() else num


def _studies(f: pd.DataFrame) -> pd.DataFrame:
    """One row per (patient, study): first date, time, age, the record ids and paths."""
    g = f[known(f["patient_id"]) & known(f["study_id"])].copy()
    g["t"] = [_time_seconds(v) for v in g["study_time"]]
    agg = g.groupby(["patient_id", "study_id"], sort=False).agg(
        date=("study_date", "min"),
        t=("t", "min"),
        age=("age_valid", "min"),
        ids=("id", tuple),
        paths=("image_path", lambda s: tuple(p for p in s if p)),
    )
    return agg.reset_index()


def _pair(sub: str, why: str, a: pd.Series, b: pd.Series) -> Finding:
    """A temporal finding on two consecutive studies (rows of :func:`_studies`)."""
    return Finding("temporal", sub, "medium", why, a["ids"] + b["ids"], a["paths"] + b["paths"])


def check_temporal(
    table: AuditTable,
    *,
    now: pd.Timestamp | None = None,
    max_gap_years: float = 30.0,
    min_order_agreement: float = 0.9,
) -> list[Finding]:
    """Per-record and per-patient temporal anomalies (see the module docstring). Study-id order
    is checked only where the source's ids otherwise follow time (Kendall tau of ids vs dates
    across all patients' consecutive studies >= ``min_order_agreement``); future dates only where
    the archive is not date-shifted as a whole (most dates in the past)."""
    f = table.frame
    out: list[Finding] = []
    if not len(f) or f["study_date"].notna().sum() == 0:
        return out
    now = pd.Timestamp.now().normalize() if now is None else pd.Timestamp(now)
    dates = f["study_date"]
    shifted = (dates.dropna() > now).mean() > 0.5
    for row in f[dates.notna()].itertuples(index=False):
        d = row.study_date
        if not shifted and d > now + pd.Timedelta(days=1):
            out.append(
                Finding(
                    "temporal",
                    "future_date",
                    "high",
                    f"study date {d.date()} is in the future",
                    (row.id,),
                    (row.image_path,),
                )
            )
        if not shifted and d < _FIRST_XRAY:
            out.append(
                Finding(
                    "temporal",
                    "date_before_radiography",
                    "high",
                    f"study date {d.date()} precedes radiography",
                    (row.id,),
                    (row.image_path,),
                )
            )
        if row.birth_year == row.birth_year and d.year < row.birth_year:
            out.append(
                Finding(
                    "temporal",
                    "date_before_birth",
                    "high",
                    f"study year {d.year} before birth year {row.birth_year:g}",
                    (row.id,),
                    (row.image_path,),
                )
            )
        elif (
            row.birth_year == row.birth_year
            and row.age_valid == row.age_valid
            and abs(d.year - row.birth_year - row.age_valid) > 1.5
        ):
            out.append(
                Finding(
                    "temporal",
                    "age_date_mismatch",
                    "medium",
                    f"age {row.age:g} but {d.year} - birth year {row.birth_year:g}"
                    f" = {d.year - row.birth_year:g}",
                    (row.id,),
                    (row.image_path,),
                )
            )
    st = _studies(f)
    st = st[st["date"].notna()]
    # do ids follow time in this source?
    idnum = _id_key(st["study_id"]) if len(st) else None
    order_ok = False
    if idnum is not None:
        st = st.assign(idnum=idnum)
        taus = []
        for _, g in st.groupby("patient_id"):
            if len(g) >= 2 and g["date"].nunique() >= 2:
                tau = stats.kendalltau(g["idnum"], g["date"].astype("int64")).statistic
                if tau == tau:
                    taus.append(tau)
        order_ok = len(taus) >= 5 and float(np.median(taus)) >= min_order_agreement
    has_birth = bool(f["birth_year"].notna().any())
    for _pid, g in st.groupby("patient_id"):
        if len(g) < 2:
            continue
        g = g.sort_values(["date", "t"], na_position="last")
        # duplicated timestamps: two studies at the same date and time
        if g["t"].notna().any():
            key = g["date"].dt.strftime("%Y%m%d") + "T" + g["t"].round(0).astype(str)
            dup = key.duplicated(keep=False) & g["t"].notna()
            if dup.any():
                d = g[dup]
                out.append(
                    Finding(
                        "temporal",
                        "duplicate_timestamp",
                        "medium",
                        f"{len(d)} studies of one patient share date and time",
                        sum(d["ids"], ()),
                        sum(d["paths"], ()),
                    )
                )
        gaps = g["date"].diff().dt.days / 365.25
        for k in np.flatnonzero(gaps.to_numpy() > max_gap_years):
            a, b = g.iloc[k - 1], g.iloc[k]
            out.append(
                _pair(
                    "implausible_gap", f"{gaps.iloc[k]:.0f} years between consecutive studies", a, b
                )
            )
        if order_ok:
            ids = g["idnum"].to_numpy()
            for k in range(1, len(g)):
                a, b = g.iloc[k - 1], g.iloc[k]
                if ids[k] < ids[k - 1] and b["date"] > a["date"]:
                    why = f"study {b['study_id']} is later than {a['study_id']} though its id is smaller"
                    out.append(_pair("order_against_ids", why, a, b))
        if has_birth:  # ages follow from birth years there; those checks cover it
            continue
        ages = g["age"].to_numpy(dtype=float)
        dd = g["date"].to_numpy()
        for k in range(1, len(g)):
            if ages[k] == ages[k] and ages[k - 1] == ages[k - 1] and dd[k] > dd[k - 1]:
                years = (dd[k] - dd[k - 1]) / np.timedelta64(1, "D") / 365.25
                if ages[k] < ages[k - 1] - 1 or ages[k] - ages[k - 1] > years + 1.5:
                    a, b = g.iloc[k - 1], g.iloc[k]
                    why = f"age goes {ages[k - 1]:g} -> {ages[k]:g} over {years:.1f} years"
                    out.append(_pair("age_sequence_break", why, a, b))
    return out


def check_intake(
    table: AuditTable,
    *,
    freq: str = "D",
    alpha: float = 1e-3,
    min_count: int = 5,
    min_bins: int = 14,
) -> list[Finding]:
    """Bursts and gaps in the archive's intake: per ``freq`` bin (``"D"`` days, ``"W"`` weeks)
    the count of studies against a robust Poisson baseline (the larger of the median and the 10 %
    trimmed mean over all bins of the covered span); a bin is a burst when P(X >= n) is below
    ``alpha`` / bins and n >= ``min_count``; a run of empty bins is a gap when P(0 in the run) is
    below ``alpha`` / bins."""
    f = table.frame
    out: list[Finding] = []
    d = f[f["study_date"].notna()]
    if not len(d):
        return out
    key = d["study_id"].where(known(d["study_id"]), d["id"])
    studies = d.assign(_k=key).groupby("_k").agg(date=("study_date", "min"), ids=("id", tuple))
    period = studies["date"].dt.to_period(freq)
    counts = period.value_counts().sort_index()
    span = pd.period_range(counts.index.min(), counts.index.max(), freq=freq)
    counts = counts.reindex(span, fill_value=0)
    if len(counts) < min_bins:
        return out
    c = counts.to_numpy(dtype=float)
    lam = max(float(np.median(c)), float(stats.trim_mean(c, 0.1)))
    if lam <= 0:
        return out
    thr = alpha / len(c)
    p_hi = stats.poisson.sf(c - 1, lam)
    unit = {"D": "day", "W": "week"}.get(freq, freq)
    for k in np.flatnonzero((p_hi < thr) & (c >= min_count)):
        members = studies[period == counts.index[k]]
        ids = sum(members["ids"], ())
        out.append(
            Finding(
                "temporal",
                "intake_burst",
                "medium",
                f"{int(c[k])} studies in the {unit} of {counts.index[k]} against a "
                f"baseline of {lam:.1f} (Poisson p={p_hi[k]:.1e})",
                ids,
                score=float(-np.log10(max(p_hi[k], 1e-300))),
            )
        )
    # gaps: runs of empty bins
    zero = c == 0
    k = 0
    while k < len(c):
        if zero[k]:
            j = k
            while j < len(c) and zero[j]:
                j += 1
            p0 = float(np.exp(-lam * (j - k)))
            if p0 < thr:
                before = studies[period == counts.index[k - 1]]["ids"] if k > 0 else []
                after = studies[period == counts.index[j]]["ids"] if j < len(c) else []
                ids = sum(list(before), ()) + sum(list(after), ())
                out.append(
                    Finding(
                        "temporal",
                        "intake_gap",
                        "low",
                        f"no studies for {j - k} {unit}s from {counts.index[k]} "
                        f"(baseline {lam:.1f} per {unit})",
                        ids,
                        score=float(-np.log10(max(p0, 1e-300))),
                    )
                )
            k = j
        else:
            k += 1
    return out
