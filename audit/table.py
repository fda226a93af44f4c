"""The audit table: every record of a source, all views, with or without report or image,
with the metadata the rule-based checks compare (sex, age, dates, header fields)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from radalign.data.records import normalize_view
from radalign.data.sources import open_source

__all__ = ["AuditTable", "imprecise_date", "load_table", "normalize_sex", "parse_age", "parse_date"]

HEADER_COLUMNS = (
    "dicom_view",
    "dicom_sex",
    "dicom_modality",
    "dicom_study_date",
    "dicom_body_part",
    "dicom_photometric",
)
_HEADER_FIELDS = {
    "dicom_view": "ViewPosition",
    "dicom_sex": "PatientSex",
    "dicom_modality": "Modality",
    "dicom_study_date": "StudyDate",
    "dicom_body_part": "BodyPartExamined",
    "dicom_photometric": "PhotometricInterpretation",
}
_SEX = {"F": "F", "FEMALE": "F", "W": "F", "WOMAN": "F", "M": "M", "MALE": "M", "MAN": "M"}
_SEX_KEYS = ("sex", "gender", "patient_sex", "patient gender", "patientsex")
_AGE_KEYS = ("age", "patient_age", "patient age", "patientage", "age_years")
_BIRTH_KEYS = ("birth_year", "year_of_birth", "birthyear", "yob")
_DATE_KEYS = ("date", "study_date", "date_taken", "acquisition_date", "exam_date")
_TIME_KEYS = ("StudyTime", "study_time", "time", "acquisition_time")
_SITE_KEYS = ("site", "hospital", "institution", "dataset", "source_dataset")
_AGE_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([YMWD])?\s*$", re.I)


@dataclass
class AuditTable:
    """``frame``: one row per record (see the audit contract for its columns); ``skipped``: the
    rows the source reader skipped (``path, reason, detail, id``); ``header``: DICOM header
    fields by record id, for comparisons only (empty for non-DICOM sources)."""

    frame: pd.DataFrame
    skipped: pd.DataFrame
    header: pd.DataFrame
    layout: str
    root: str
    description: str = ""
    notes: list[str] = field(default_factory=list)


def normalize_sex(value: object) -> str | None:
    """``'F'``/``'M'`` for the usual codes and words, else ``None`` (blank or unknown)."""
    if value is None or value != value:
        return None
    return _SEX.get(str(value).strip().upper())


def parse_age(value: object) -> float:
    """Age in years from ``65``, ``65.0``, ``058Y``, ``18M`` (months), ...; NaN if unparseable."""
    if value is None or value != value:
        return float("nan")
    m = _AGE_RE.match(str(value))
    if not m:
        return float("nan")
    age = float(m.group(1))
    unit = (m.group(2) or "Y").upper()
    return age / {"Y": 1.0, "M": 12.0, "W": 52.18, "D": 365.25}[unit]


def parse_date(value: object) -> pd.Timestamp:
    """A date from ``YYYYMMDD``, ISO or free text (``January 22, 2020``); NaT if none."""
    if value is None or value != value:
        return pd.NaT
    s = str(value).strip()
    if not s:
        return pd.NaT
    if re.fullmatch(r"\d{8}(\.0)?", s):
        return pd.to_datetime(s[:8], format="%Y%m%d", errors="coerce")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return pd.NaT  # a bare number (a year alone, too) is no day
    try:
        ts = pd.to_datetime(s, errors="coerce")
    except (ValueError, OverflowError, TypeError):
        return pd.NaT
    if isinstance(ts, pd.Timestamp) and ts.tzinfo is not None:
        ts = ts.tz_localize(None)
    if isinstance(ts, pd.Timestamp) and ts.year < 1000:  # "January 12": no year given
        return pd.NaT
    return ts


def imprecise_date(value: object) -> bool:
    """A year alone (``2020``) or a day without a year (``January 12``): not wrong, not a day."""
    s = str(value or "").strip()
    if re.fullmatch(r"(1[89]|2[01])\d\d", s):
        return True
    if re.fullmatch(r"\d{8}(\.0)?", s) or re.fullmatch(r"\d+(\.\d+)?", s):
        return False
    try:
        ts = pd.to_datetime(s, errors="coerce")
    except (ValueError, OverflowError, TypeError):
        return False
    return isinstance(ts, pd.Timestamp) and ts.year < 1000


def _pick(meta: dict, keys: tuple[str, ...]) -> str:
    low = {str(k).lower(): v for k, v in meta.items()}
    for k in keys:
        v = low.get(k.lower())
        if v not in (None, ""):
            return str(v)
    return ""


def _raw_text(sections: dict, report: str) -> str:
    if sections:
        return "\n".join(f"{k}: {v}" for k, v in sections.items())
    return report or ""


def _skip_id(detail: str) -> str | None:
    m = re.fullmatch(r"id (.+)", detail or "")
    return m.group(1) if m else None


def load_table(source: str | os.PathLike, *, progress: bool = False) -> AuditTable:
    """Read ``source`` (any layout :func:`open_source` knows) keeping everything: all views, rows
    without report or image. DICOM headers are read (no pixels) for DICOM image paths."""
    ps = open_source(
        source,
        views=None,
        keep_unknown_view=True,
        require_report=False,
        require_images=False,
        check_files=False,  # missing files stay in the table, marked by image_exists
    )
    layout = ps.layout
    rows = []
    for r in ps.records:
        meta = dict(r.metadata)
        sex_raw = _pick(meta, _SEX_KEYS)
        age_raw = _pick(meta, _AGE_KEYS)
        birth_raw = _pick(meta, _BIRTH_KEYS)
        date_raw = r.study_date or _pick(meta, _DATE_KEYS)
        time_raw = _pick(meta, _TIME_KEYS)
        site = _pick(meta, _SITE_KEYS) or _pick(meta, ("source",)) or layout
        if "@" in site and ":" in site:  # "owner/repo@commit:path" provenance: keep the repo
            site = site.split("@", 1)[0]
        try:
            birth = float(birth_raw) if birth_raw else float("nan")
        except ValueError:
            birth = float("nan")
        rows.append(
            {
                "id": r.id,
                "image_path": None if r.image_path is None else str(r.image_path),
                "image_exists": r.image_path is not None and os.path.exists(r.image_path),
                "report": r.report or "",
                "report_raw": _raw_text(r.sections, r.report),
                "sections": dict(r.sections),
                "patient_id": r.patient_id,
                "study_id": r.study_id,
                "view": r.view,
                "view_raw": _pick(meta, ("view_raw", "ViewPosition")) or (r.view or ""),
                "study_date": parse_date(date_raw),
                "study_date_raw": date_raw or "",
                "study_time": time_raw or None,
                "sex": normalize_sex(sex_raw),
                "sex_raw": sex_raw,
                "age": parse_age(age_raw),
                "age_raw": age_raw,
                "birth_year": birth,
                "site": site,
                "split": r.split,
                "labels": dict(r.labels),
                "layout": layout,
                "metadata": meta,
            }
        )
    frame = pd.DataFrame(rows)
    if not len(frame):
        frame = pd.DataFrame(
            columns=[
                "id",
                "image_path",
                "image_exists",
                "report",
                "report_raw",
                "sections",
                "patient_id",
                "study_id",
                "view",
                "view_raw",
                "study_date",
                "study_date_raw",
                "study_time",
                "sex",
                "sex_raw",
                "age",
                "age_raw",
                "birth_year",
                "site",
                "split",
                "labels",
                "layout",
                "metadata",
            ]
        )
    frame["study_date"] = pd.to_datetime(frame["study_date"], errors="coerce")
    for col in ("image_path", "patient_id", "study_id", "view", "study_time", "sex", "split"):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    age = pd.to_numeric(frame["age"], errors="coerce")
    frame["age_valid"] = age.where((age >= 0) & (age <= 120))  # for comparisons
    skipped = pd.DataFrame(ps.skipped.rows, columns=["path", "reason", "detail"])
    skipped["id"] = [_skip_id(d) for d in skipped["detail"]]
    header = _read_headers(frame, progress=progress)
    if len(header):  # DICOM without metadata file: the acquisition date from the header
        hd = frame["id"].map(header["dicom_study_date"])
        hd = pd.to_datetime(hd, errors="coerce")
        blank = frame["study_date_raw"].astype(str).str.strip() == ""
        frame["study_date"] = frame["study_date"].where(~blank | frame["study_date"].notna(), hd)
    return AuditTable(frame, skipped, header, layout, str(ps.root), ps.description)


def _read_headers(frame: pd.DataFrame, *, progress: bool = False) -> pd.DataFrame:
    """Header fields of each DICOM image (comparisons only; nothing identifying is kept)."""
    from radalign.encoders.errors import InputError
    from radalign.encoders.imageio import read_dicom_fields

    out = {}
    paths = frame["image_path"] if len(frame) else []
    fields = list(_HEADER_FIELDS.values())
    for rid, p in zip(frame["id"] if len(frame) else [], paths):
        if not p or not str(p).lower().endswith((".dcm", ".dicom")):
            continue
        try:
            got = read_dicom_fields(p, fields)
        except InputError:
            continue  # unreadable files are the image-stats stage's finding
        row = {col: got.get(tag) for col, tag in _HEADER_FIELDS.items()}
        row["dicom_view"] = normalize_view(row["dicom_view"])
        row["dicom_sex"] = normalize_sex(row["dicom_sex"]) if row["dicom_sex"] else None
        row["dicom_study_date"] = parse_date(row["dicom_study_date"])
        out[rid] = row
    header = pd.DataFrame.from_dict(out, orient="index", columns=list(HEADER_COLUMNS))
    header.index.name = "id"
    if progress:
        print(f"audit table: {len(frame)} records, {len(header)} DICOM headers")
    return header


def known(values: pd.Series) -> np.ndarray:
    """Boolean mask of non-blank, non-NaN values."""
    return values.notna().to_numpy() & (values.astype(str).str.strip() != "").to_numpy()
