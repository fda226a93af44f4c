"""``missing`` findings: image without report, report without image, study without a frontal
view, required metadata absent, and the rows the source reader skipped for missing files."""

from __future__ import annotations

from collections import namedtuple

from radalign.audit.findings import Finding, rows_finding
from radalign.audit.table import AuditTable, known

__all__ = ["check_missing", "check_skipped"]

FRONTAL = frozenset({"PA", "AP"})
_SKIP_MAP = {
    "missing image": ("missing", "image_file_missing", "high"),
    "missing report": ("missing", "image_without_report", "high"),
    "empty report": ("missing", "empty_report", "high"),
    "no usable section": ("missing", "no_usable_section", "medium"),
    "no image": ("missing", "report_without_image", "high"),
    "unreadable DICOM header": ("entry_error", "unreadable_header", "high"),
    "unreadable XML": ("entry_error", "unreadable_report_file", "high"),
    "duplicate id": ("inconsistent", "duplicate_record_id", "high"),
}


def check_skipped(table: AuditTable) -> list[Finding]:
    """One finding per row the source reader itself skipped, typed by its reason."""
    out = []
    for path, reason, detail, rid in table.skipped.itertuples(index=False):
        kind = _SKIP_MAP.get(reason)
        if kind is None:
            continue
        t, sub, sev = kind
        out.append(
            Finding(
                t,
                sub,
                sev,
                f"source reader skipped it: {reason} ({detail})",
                ids=(rid,) if rid else (),
                paths=(path,),
            )
        )
    return out


def check_missing(table: AuditTable, *, min_present: float = 0.5) -> list[Finding]:
    """Rows lacking an image, a report, a frontal view in their study, or a field (patient id,
    date, view) that most rows of this source have (``min_present`` share)."""
    f = table.frame
    out: list[Finding] = []
    if not len(f):
        return out
    f = f.reset_index(drop=True)
    has_img = known(f["image_path"])
    has_rep = (f["report"].astype(str).str.strip() != "").to_numpy()
    exists = f["image_exists"].to_numpy(dtype=bool)
    # a label-only set (most images without text) has no report to miss
    reports_expected = has_img.any() and has_rep[has_img].mean() >= min_present
    Row = namedtuple("Row", "id image_path")
    for i, (rid, path) in enumerate(zip(f["id"], f["image_path"])):
        row = Row(rid, path)
        if has_img[i] and not exists[i]:
            out.append(
                Finding(
                    "missing",
                    "image_file_missing",
                    "high",
                    "image file named by the source does not exist",
                    (row.id,),
                    (row.image_path,),
                )
            )
        if has_img[i] and not has_rep[i] and reports_expected:
            out.append(
                Finding(
                    "missing",
                    "image_without_report",
                    "high",
                    "image has no usable report text",
                    (row.id,),
                    (row.image_path,),
                )
            )
        elif has_rep[i] and not has_img[i] and has_img.any():
            out.append(
                Finding(
                    "missing",
                    "report_without_image",
                    "high",
                    "report has no image although this source has images",
                    (row.id,),
                )
            )
    # studies without a frontal view (only where views are known for the whole study)
    vk = known(f["view"])
    if vk.mean() >= min_present:
        sk = known(f["study_id"])
        g = f[sk & vk].groupby("study_id")
        size = f.loc[sk, "study_id"].value_counts()
        for sid, grp in g:
            if len(grp) == size[sid] and not grp["view"].isin(FRONTAL).any():
                out.append(
                    rows_finding(
                        "missing",
                        "no_frontal_view",
                        "medium",
                        f"study has {len(grp)} image(s), none PA/AP "
                        f"({', '.join(sorted(set(grp['view'])))})",
                        grp,
                    )
                )
    for col, sub in (("patient_id", "patient_id_absent"), ("view", "view_absent")):
        present = known(f[col])
        if present.mean() >= min_present:
            for rid, p in zip(f["id"][~present], f["image_path"][~present]):
                out.append(
                    Finding(
                        "missing",
                        sub,
                        "medium",
                        f"{col} is blank while {present.mean():.0%} of rows have one",
                        (rid,),
                        (p,),
                    )
                )
    dates = f["study_date"].notna().to_numpy()
    raw = known(f["study_date_raw"])
    if dates.mean() >= min_present:
        for rid, p in zip(f["id"][~dates & ~raw], f["image_path"][~dates & ~raw]):
            out.append(
                Finding(
                    "missing",
                    "date_absent",
                    "medium",
                    f"no study date while {dates.mean():.0%} of rows have one",
                    (rid,),
                    (p,),
                )
            )
    return out
