"""``entry_error`` and ``inconsistent`` findings from metadata and DICOM headers, and
:func:`check_rules`, which runs every rule-based check of the audit."""

from __future__ import annotations

import pandas as pd
from radalign.audit.findings import Finding, rows_finding
from radalign.audit.table import AuditTable, imprecise_date, known

__all__ = ["KNOWN_VIEWS", "check_entry_errors", "check_header", "check_inconsistent", "check_rules"]

#: View codes seen in MIMIC-CXR, IU X-ray and the usual manifests (after ``normalize_view``).
KNOWN_VIEWS = frozenset(
    {
        "PA",
        "AP",
        "LATERAL",
        "LL",
        "RL",
        "AP AXIAL",
        "PA AXIAL",
        "AP LLD",
        "AP RLD",
        "PA LLD",
        "PA RLD",
        "LAO",
        "RAO",
        "LPO",
        "RPO",
        "SWIMMERS",
        "XTABLE LATERAL",
        "LATERAL DECUBITUS",
        "FRONTAL",
        "OBLIQUE",
        "AP LORDOTIC",
        "LORDOTIC",
        "AP SUPINE",
        "PA LORDOTIC",
    }
)
_SEX_CODES = frozenset(
    {"F", "M", "O", "U", "UNKNOWN", "OTHER", "FEMALE", "MALE", "W", "WOMAN", "MAN"}
)
_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT"})


def check_entry_errors(table: AuditTable) -> list[Finding]:
    """Impossible or unparseable age, dates that are not dates, unknown sex and view codes."""
    f = table.frame
    out: list[Finding] = []
    for row in f.itertuples(index=False):
        rid, path = row.id, row.image_path
        if row.age_raw:
            if row.age != row.age:
                out.append(
                    Finding(
                        "entry_error",
                        "age_unparseable",
                        "medium",
                        f"age {row.age_raw!r} is not a number",
                        (rid,),
                        (path,),
                    )
                )
            elif row.age < 0 or row.age > 120:
                out.append(
                    Finding(
                        "entry_error",
                        "age_out_of_range",
                        "high",
                        f"age {row.age:g} outside 0-120",
                        (rid,),
                        (path,),
                    )
                )
        if (
            row.study_date_raw
            and pd.isna(row.study_date)
            and not imprecise_date(row.study_date_raw)
        ):
            out.append(
                Finding(
                    "entry_error",
                    "invalid_date",
                    "high",
                    f"study date {row.study_date_raw!r} is not a date",
                    (rid,),
                    (path,),
                )
            )
        if row.sex_raw and str(row.sex_raw).strip().upper() not in _SEX_CODES:
            out.append(
                Finding(
                    "entry_error",
                    "unknown_sex_code",
                    "medium",
                    f"sex {row.sex_raw!r} is no known code",
                    (rid,),
                    (path,),
                )
            )
        if row.view and row.view not in KNOWN_VIEWS:
            out.append(
                Finding(
                    "entry_error",
                    "unknown_view_code",
                    "medium",
                    f"view {row.view!r} is no known view position",
                    (rid,),
                    (path,),
                )
            )
        if row.birth_year == row.birth_year and not 1880 <= row.birth_year <= 2200:
            out.append(
                Finding(
                    "entry_error",
                    "birth_year_out_of_range",
                    "high",
                    f"birth year {row.birth_year:g} implausible",
                    (rid,),
                    (path,),
                )
            )
    return out


def check_header(table: AuditTable, *, date_tolerance_days: int = 1) -> list[Finding]:
    """DICOM header fields that contradict the table: view, sex, modality, study date. Values
    from headers are named by field only, never written out (dates as a difference in days)."""
    h = table.header
    out: list[Finding] = []
    if not len(h):
        return out
    frame = table.frame
    paths = frame["image_path"].dropna()
    shared = set(frame.loc[paths.index[paths.duplicated(keep=False)], "id"])
    f = frame.drop_duplicates("id").set_index("id")
    for rid, hrow in h.iterrows():
        if rid not in f.index or rid in shared:  # a shared file's header is another record's
            continue
        row = f.loc[rid]
        path = row["image_path"]
        if hrow["dicom_view"] and row["view"] and hrow["dicom_view"] != row["view"]:
            out.append(
                Finding(
                    "entry_error",
                    "header_view_mismatch",
                    "high",
                    f"header ViewPosition {hrow['dicom_view']} vs metadata view {row['view']}",
                    (rid,),
                    (path,),
                )
            )
        if hrow["dicom_sex"] and row["sex"] and hrow["dicom_sex"] != row["sex"]:
            out.append(
                Finding(
                    "entry_error",
                    "header_sex_mismatch",
                    "high",
                    "header PatientSex differs from the metadata sex",
                    (rid,),
                    (path,),
                )
            )
        mod = hrow["dicom_modality"]
        if mod and str(mod).upper() not in _MODALITIES:
            out.append(
                Finding(
                    "entry_error",
                    "header_modality_unexpected",
                    "high",
                    f"header Modality {mod} is not a radiograph modality",
                    (rid,),
                    (path,),
                )
            )
        hd, md = hrow["dicom_study_date"], row["study_date"]
        if row["study_date_raw"] and pd.notna(hd) and pd.notna(md):
            days = abs((pd.Timestamp(hd) - pd.Timestamp(md)).days)
            if days > date_tolerance_days:
                out.append(
                    Finding(
                        "entry_error",
                        "header_date_mismatch",
                        "high",
                        f"header StudyDate differs from the metadata date by {days} days",
                        (rid,),
                        (path,),
                    )
                )
    return out


def check_inconsistent(table: AuditTable) -> list[Finding]:
    """One patient with conflicting sex or birth year, one study under two patients, one study
    with two dates, one image file under two studies."""
    f = table.frame
    out: list[Finding] = []
    if not len(f):
        return out

    def flag(sub: str, severity: str, why: str, rows: pd.DataFrame) -> None:
        out.append(rows_finding("inconsistent", sub, severity, why, rows))

    pk = known(f["patient_id"])
    fp = f[pk]
    for _pid, grp in fp.groupby("patient_id"):
        sexes = set(grp["sex"].dropna())
        if len(sexes) > 1:
            flag(
                "patient_sex_conflict",
                "high",
                f"one patient recorded as {' and '.join(sorted(sexes))}",
                grp,
            )
        by = grp["birth_year"].dropna()
        if len(by) and by.max() - by.min() > 1:
            flag(
                "birth_year_conflict",
                "high",
                f"birth years {by.min():g}-{by.max():g} for one patient",
                grp,
            )
        elif not len(by):
            ok = grp["age_valid"].notna() & grp["study_date"].notna()
            if ok.sum() >= 2:
                g = grp[ok]
                est = (
                    g["study_date"].dt.year + g["study_date"].dt.dayofyear / 365.25 - g["age_valid"]
                )
                if est.max() - est.min() > 2.5:
                    flag(
                        "age_conflict",
                        "medium",
                        f"ages and dates imply birth years {est.min():.0f}-{est.max():.0f}",
                        g,
                    )
    sk = known(f["study_id"])
    fs = f[sk & pk]
    for sid, grp in fs.groupby("study_id"):
        pats = set(grp["patient_id"])
        if len(pats) > 1:
            flag(
                "study_multiple_patients",
                "high",
                f"study {sid} appears under {len(pats)} patients",
                grp,
            )
    for sid, grp in f[sk].groupby("study_id"):
        d = grp["study_date"].dropna().dt.normalize().unique()
        if len(d) > 1:
            flag("study_date_conflict", "medium", f"study {sid} has {len(d)} different dates", grp)
    ik = known(f["image_path"])
    for path, grp in f[ik].groupby("image_path"):
        if len(grp) > 1:
            studies = set(grp["study_id"].dropna())
            sub = "image_shared_between_studies" if len(studies) > 1 else "image_shared_by_records"
            out.append(
                Finding(
                    "inconsistent",
                    sub,
                    "high",
                    f"one image file used by {len(grp)} records"
                    + (f" of {len(studies)} studies" if len(studies) > 1 else ""),
                    tuple(grp["id"]),
                    (path,),
                )
            )
    return out


def check_rules(table: AuditTable, *, now: pd.Timestamp | None = None) -> list[Finding]:
    """Every rule-based check: missing, entry errors, header, report text and facts, temporal,
    inconsistent."""
    from radalign.audit.missing import check_missing, check_skipped
    from radalign.audit.report_facts import check_report_facts, check_report_text
    from radalign.audit.temporal import check_intake, check_temporal

    out: list[Finding] = []
    out += check_skipped(table)
    out += check_missing(table)
    out += check_entry_errors(table)
    out += check_header(table)
    out += check_report_text(table)
    out += check_report_facts(table)
    out += check_temporal(table, now=now)
    out += check_intake(table)
    out += check_inconsistent(table)
    return out
