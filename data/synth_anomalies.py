"""Plant known anomalies into a phantom tree, for measuring ``radalign audit``.

:func:`plant_anomalies` reads a clean tree written by :func:`radalign.data.synth.synthesize` and
writes a planted copy (the source is never modified) in up to three layouts::

    OUT/dicom/     MIMIC-CXR layout (+ metadata/split/chexpert csv.gz with sex, age, birth_year,
                   site columns, so views/dates/sex come from the metadata, headers are compared)
    OUT/jpg/       MIMIC-CXR-JPG layout (metadata csv.gz with the same extra columns)
    OUT/manifest/  manifest.csv (id, image_path, patient_id, study_id, view, report, study_date,
                   study_time, sex, age, birth_year, site, split, labels) + images/<id>.jpg
    OUT/<layout>/truth.csv   type, subtype, ids (pipe-joined record ids as open_source gives them)
    OUT/drift.json           the drift window or site and its ids; OUT/README.txt

The clean part is a faithful copy with two global changes that make the benchmark unambiguous:
dates are moved into 1990-2025 (each patient's first study is shifted, gaps between a patient's
studies are kept, so "future" and "before birth" mean something), and each patient's study ids
are renumbered to increase with date (so "out of order against ids" is a defined anomaly). Each
patient carries at most one planted anomaly and patients in the drift window/site carry none, so
every planted record has exactly one truth row. Everything is deterministic by ``seed``.

:func:`score_findings` scores an audit's findings frame against ``truth.csv`` by the contract's
rule: a planted anomaly is recalled when a finding of the same type names one of its ids; a
finding of type T is correct when it names an id planted with type T.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from radalign.data.finding_types import FINDING_TYPES
from radalign.encoders.atomic import atomic_dir
from radalign.encoders.labels import CHEXPERT_LABELS

__all__ = [
    "DEFAULT_RATES",
    "FINDING_TYPES",
    "PLANT_TYPES",
    "SUBTYPES",
    "PlantSummary",
    "plant_anomalies",
    "recall_by_subtype",
    "score_findings",
    "uniform_rates",
]

#: What this module plants: every kind the audit reports.
PLANT_TYPES = FINDING_TYPES
#: Fraction of studies per type (drift: fraction of studies in the shifted window/site).
DEFAULT_RATES: dict[str, float] = {t: 0.025 for t in PLANT_TYPES[:-1]} | {"drift": 0.2}
OUT_LAYOUTS = ("dicom", "jpg", "manifest")
DRIFT_MODES = ("time", "site")
_MAX_STORED = 4095

#: subtype -> (scope, layouts where it can be planted). Scopes: "record" (one frontal image),
#: "study", "patient" (a patient with >= 2 studies), "single" (a one-study patient), "pair"
#: (two one-study patients).
SUBTYPES: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "missing": {
        "report_missing": ("study", OUT_LAYOUTS),
        "image_missing": ("record", OUT_LAYOUTS),
        "view_missing": ("record", OUT_LAYOUTS),
        "date_missing": ("study", OUT_LAYOUTS),
        "patient_id_missing": ("study", ("manifest",)),
        "report_sections_empty": ("study", OUT_LAYOUTS),
    },
    "entry_error": {
        "corrupt_image": ("record", OUT_LAYOUTS),
        "age_out_of_range": ("study", OUT_LAYOUTS),
        "bad_date": ("study", OUT_LAYOUTS),
        "unknown_sex": ("study", OUT_LAYOUTS),
        "header_view_mismatch": ("record", ("dicom",)),
        "header_sex_mismatch": ("record", ("dicom",)),
        "report_template": ("study", OUT_LAYOUTS),
        "report_non_utf8": ("study", OUT_LAYOUTS),
    },
    "outlier": {
        "blank_image": ("record", OUT_LAYOUTS),
        "saturated_image": ("record", OUT_LAYOUTS),
        "inverted_image": ("record", OUT_LAYOUTS),
        "non_chest_image": ("record", OUT_LAYOUTS),
        "report_foreign_language": ("study", OUT_LAYOUTS),
        "report_absurd_length": ("study", OUT_LAYOUTS),
    },
    "temporal": {
        "out_of_order": ("patient", OUT_LAYOUTS),
        "duplicate_timestamp": ("patient", OUT_LAYOUTS),
        "future_date": ("single", OUT_LAYOUTS),
        "before_birth": ("single", OUT_LAYOUTS),
    },
    "cross_modal": {
        "report_swapped": ("pair", OUT_LAYOUTS),
        "report_sex_contradiction": ("single", OUT_LAYOUTS),
    },
    "inconsistent": {
        "patient_sex_conflict": ("patient", OUT_LAYOUTS),
        "patient_birth_year_conflict": ("patient", OUT_LAYOUTS),
        "study_id_conflict": ("pair", OUT_LAYOUTS),
        "shared_image_file": ("pair", ("dicom", "manifest")),
    },
    "duplicate": {
        "exact_image_copy": ("pair", OUT_LAYOUTS),
        "near_duplicate_image": ("pair", OUT_LAYOUTS),
        "duplicate_report": ("pair", OUT_LAYOUTS),
    },
}

FOREIGN_REPORT = (
    "                                 BEFUND\n"
    " UNTERSUCHUNG:  Roentgen Thorax in zwei Ebenen\n \n"
    " BEFUND: \n \n Herz normal gross. Keine Infiltrate, keine Ergussbildung, kein\n"
    " Pneumothorax. Zwerchfelle glatt begrenzt, Sinus beidseits frei.\n \n"
    " BEURTEILUNG: \n \n Kein Nachweis eines akuten kardiopulmonalen Befundes.\n"
)
_NON_UTF8 = "@@NON_UTF8@@"
_NON_UTF8_BYTES = b"\xff\xfe\xc3\x28 \xe9"


def uniform_rates(rate: float, drift: float | None = None) -> dict[str, float]:
    """The same ``rate`` for every type except drift (``drift`` or its default)."""
    out = {t: float(rate) for t in PLANT_TYPES[:-1]}
    out["drift"] = DEFAULT_RATES["drift"] if drift is None else float(drift)
    return out


@dataclass
class PlantSummary:
    root: Path
    layouts: tuple[str, ...]
    n_studies: int
    n_records: int
    planted: dict[str, dict[str, int]]  # layout -> type -> number of truth rows
    studies_affected: dict[str, dict[str, int]]  # layout -> type -> studies
    drift: dict = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"planted    {self.n_studies} studies, {self.n_records} records -> {self.root}"]
        for lay in self.layouts:
            parts = ", ".join(f"{t} {c}" for t, c in self.studies_affected[lay].items())
            lines.append(f"{lay:<10} studies affected: {parts}")
        d = self.drift
        lines.append(
            f"drift      {d.get('mode')} {d.get('window', d.get('site'))}, "
            f"{d.get('n_studies')} studies"
        )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- reading


def _read_gz(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _report_sex(text: str) -> str | None:
    m = re.search(r"\b(woman|man)\b|___([FM])\b", text)
    if not m:
        return None
    return ("F" if m.group(1) == "woman" else "M") if m.group(1) else m.group(2)


def _flip_report_sex(text: str) -> str:
    swap = {"woman": "man", "man": "woman", "___F": "___M", "___M": "___F"}
    return re.sub(r"\b(woman|man)\b|___[FM]\b", lambda m: swap[m.group(0)], text, count=1)


def _dicom_time(value: str) -> str:
    """HHMMSS.fff with the leading zeros a float column of the metadata csv drops."""
    whole, _, frac = str(value).partition(".")
    return whole.zfill(6) + (f".{frac}" if frac else "")


def _sexes(src: Path, df: pd.DataFrame, reports: dict[str, str]) -> list[str]:
    """Each image's patient sex: the DICOM PatientSex when the source has DICOMs, else what the
    patient's reports say (the INDICATION), else "F"."""
    if (src / "dicom" / "files").is_dir():
        import pydicom

        out = []
        for rel, did in zip(df["rel_dir"], df["dicom_id"]):
            ds = pydicom.dcmread(
                src / "dicom" / rel / f"{did}.dcm",
                stop_before_pixels=True,
                specific_tags=["PatientSex"],
            )
            out.append(str(ds.get("PatientSex", "")) or "F")
        return out
    said = {s: _report_sex(reports[s]) for s in df["study_id"].unique()}
    by_pat: dict[str, str] = {}
    for p, s in zip(df["subject_id"], df["study_id"]):
        if said[s] and p not in by_pat:
            by_pat[p] = said[s]
    return [by_pat.get(p, "F") for p in df["subject_id"]]


def _load_source(src: Path, layouts: Sequence[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per image of the clean tree, and the report text per original study."""
    readme = src / "README.txt"
    if not readme.is_file() or not readme.read_text(errors="replace").startswith(
        "SYNTHETIC PHANTOM"
    ):
        raise FileNotFoundError(
            f"{src}: not a phantom tree written by radalign data synth "
            "(README.txt with the phantom banner missing)"
        )
    need = {"dicom"} if "dicom" in layouts else set()
    if {"jpg", "manifest"} & set(layouts):
        need.add("jpg")
    for lay in need:
        if not (src / lay / "files").is_dir():
            raise FileNotFoundError(
                f"{src / lay}: the source tree has no {lay}/ layout, "
                f"needed to plant {sorted(layouts)}"
            )
    truth = _read_gz(src / "phantom-truth.csv.gz")
    first = "jpg" if "jpg" in need else "dicom"
    if (src / "jpg" / "mimic-cxr-2.0.0-metadata.csv.gz").is_file():
        meta = _read_gz(src / "jpg" / "mimic-cxr-2.0.0-metadata.csv.gz")
        meta = meta[["dicom_id", "StudyDate", "StudyTime", "Rows", "Columns"]]
    else:  # dicom-only source: dates from the headers
        import pydicom

        rows = []
        for rec in _read_gz(src / "dicom" / "cxr-record-list.csv.gz").itertuples():
            ds = pydicom.dcmread(src / "dicom" / rec.path, stop_before_pixels=True)
            rows.append(
                (rec.dicom_id, str(ds.StudyDate), str(ds.StudyTime), str(ds.Rows), str(ds.Columns))
            )
        meta = pd.DataFrame(rows, columns=["dicom_id", "StudyDate", "StudyTime", "Rows", "Columns"])
    df = truth.merge(meta, on="dicom_id", how="left")
    df["StudyTime"] = df["StudyTime"].map(_dicom_time)
    df["rel_dir"] = (
        "files/p" + df["subject_id"].str[:2] + "/p" + df["subject_id"] + "/s" + df["study_id"]
    )
    chex = _read_gz(src / first / "mimic-cxr-2.0.0-chexpert.csv.gz") if first == "jpg" else None
    reports: dict[str, str] = {}
    for sid, rel in zip(df["study_id"], df["rel_dir"]):
        if sid not in reports:
            reports[sid] = (src / first / f"{rel}.txt").read_text(encoding="ascii")
    df["sex"] = _sexes(src, df, reports)
    df["src_study_id"] = df["study_id"]
    df["src_rel_dir"] = df["rel_dir"]
    lab = df[list(CHEXPERT_LABELS)].astype(int).to_numpy()
    df["label_key"] = ["".join(map(str, r)) for r in lab]
    disease = [i for i, c in enumerate(CHEXPERT_LABELS) if c != "No Finding"]
    df["abnormal"] = lab[:, disease].any(axis=1)
    if chex is not None:
        df = df.merge(
            chex.rename(columns={c: f"rep:{c}" for c in CHEXPERT_LABELS}),
            on=["subject_id", "study_id"],
            how="left",
        )
    else:
        for c in CHEXPERT_LABELS:
            df[f"rep:{c}"] = df[c].map({"1": "1.0", "0": ""})
    return df.sort_values(["subject_id", "StudyDate", "study_id", "dicom_id"]).reset_index(
        drop=True
    ), reports


# ---------------------------------------------------------------------------------- the plan


def _parse_day(s: str) -> date:
    return date(int(s[:4]), int(s[4:6]), int(s[6:8]))


def _clean_state(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Dates moved into 1990-2025, study ids increasing with date per patient, birth years."""
    df = df.copy()
    days = [_parse_day(s) for s in df["StudyDate"]]
    df["day"] = days
    first = df.groupby("subject_id")["day"].transform("min")
    lo, hi = min(first), max(first)
    span = max((hi - lo).days, 1)
    target = (date(2018, 12, 31) - date(1990, 1, 1)).days
    new_first = {
        p: date(1990, 1, 1) + timedelta(days=int((f - lo).days * target / span))
        for p, f in zip(df["subject_id"], first)
    }
    df["day"] = [new_first[p] + (d - f) for p, d, f in zip(df["subject_id"], days, first)]
    # study ids: each patient's sorted ids assigned in date order
    st = df.drop_duplicates("study_id")[["subject_id", "study_id", "day"]]
    new_id: dict[str, str] = {}
    for _, g in st.groupby("subject_id", sort=False):
        ids = sorted(g["study_id"])
        for sid, nid in zip(g.sort_values(["day", "study_id"])["study_id"], ids):
            new_id[sid] = nid
    df["study_id"] = df["study_id"].map(new_id)
    df["rel_dir"] = (
        "files/p" + df["subject_id"].str[:2] + "/p" + df["subject_id"] + "/s" + df["study_id"]
    )
    df["site"] = "A"
    return df.sort_values(["subject_id", "day", "study_id", "dicom_id"]).reset_index(drop=True)


def _birth_years(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """A birth year per patient: 25-84 years before the first study."""
    pats = sorted(df["subject_id"].unique())
    age0 = dict(zip(pats, rng.integers(25, 85, size=len(pats))))
    firsty = df.groupby("subject_id")["day"].min()
    return df.assign(birth_year=[firsty[p].year - int(age0[p]) for p in df["subject_id"]])


@dataclass
class _Context:
    """What planting one anomaly needs: the patient picker, the change log ``ops`` and lookups
    of the clean table (studies/records per patient and study, frontal image, sex and label key
    per study, source reports)."""

    take: Callable[..., str | None]
    rng: np.random.Generator
    ops: dict[str, dict]
    reports: dict[str, str]
    row: pd.DataFrame
    studies_of_pat: dict[str, list[str]]
    recs_of_study: dict[str, list[str]]
    recs_of_pat: dict[str, list[str]]
    first_study: dict[str, str]
    frontal_of: dict[str, str]
    sex_of: dict[str, str]
    key_of: dict[str, str]


@dataclass
class _Plant:
    type: str
    subtype: str
    ids: list[str]
    studies: list[str]


def _plan(
    df: pd.DataFrame,
    reports: dict[str, str],
    layout: str,
    rates: Mapping[str, float],
    seed: int,
    drift_studies: set[str],
    only: frozenset[str] | None = None,
) -> tuple[list[_Plant], dict[str, dict]]:
    """Which studies get which anomaly; ``ops[dicom_id or study]`` says how to change them."""
    rng = np.random.default_rng([seed, 0x9A1])
    n_studies = df["study_id"].nunique()
    studies = df.drop_duplicates("study_id")
    n_of = df.groupby("subject_id")["study_id"].nunique()
    drift_pat = set(df.loc[df["study_id"].isin(drift_studies), "subject_id"])
    free = [p for p in sorted(n_of.index) if p not in drift_pat]
    free = [free[i] for i in rng.permutation(len(free))]
    used: set[str] = set()
    frontal = df[df["image_kind"] == "frontal"]

    def take(multi: bool | None, cond=lambda p: True) -> str | None:
        """A free patient (one study: False, several: True, either: None, one-study patients
        first since several-study ones are scarce) meeting ``cond``; marks it used."""
        if multi is None:
            return take(False, cond) or take(True, cond)
        for p in free:
            if p in used or (n_of[p] >= 2) != multi:
                continue
            if cond(p):
                used.add(p)
                return p
        return None

    plants: list[_Plant] = []
    ops: dict[str, dict] = {}
    ctx = _Context(
        take=take,
        rng=rng,
        ops=ops,
        reports=reports,
        row=df.set_index("dicom_id"),
        studies_of_pat=(
            df.groupby("subject_id")["study_id"].apply(lambda s: list(dict.fromkeys(s))).to_dict()
        ),
        recs_of_study=df.groupby("study_id")["dicom_id"].apply(list).to_dict(),
        recs_of_pat=df.groupby("subject_id")["dicom_id"].apply(list).to_dict(),
        first_study=studies.groupby("subject_id")["study_id"].first().to_dict(),
        frontal_of=frontal.drop_duplicates("study_id").set_index("study_id")["dicom_id"].to_dict(),
        sex_of=studies.set_index("study_id")["sex"].to_dict(),
        key_of=studies.set_index("study_id")["label_key"].to_dict(),
    )
    for typ in PLANT_TYPES[:-1]:
        subs = [
            s
            for s, (_, lays) in SUBTYPES[typ].items()
            if layout in lays and (only is None or s in only)
        ]
        if not subs:
            continue
        want = int(round(rates.get(typ, 0.0) * n_studies))
        got, k = 0, 0
        misses = 0
        while got < want and misses < len(subs):
            sub = subs[k % len(subs)]
            k += 1
            scope = SUBTYPES[typ][sub][0]
            plant = _plant_one(ctx, typ, sub, scope, k)
            if plant is None:
                misses += 1
                continue
            misses = 0
            plants.append(plant)
            got += len(plant.studies)
    return plants, ops


def _plant_one(ctx: _Context, typ: str, sub: str, scope: str, k: int) -> _Plant | None:
    """Choose the patient(s) for one anomaly and record the change in ``ctx.ops``."""
    take, rng, ops, reports, row = ctx.take, ctx.rng, ctx.ops, ctx.reports, ctx.row
    studies_of_pat, recs_of_study, recs_of_pat = (
        ctx.studies_of_pat,
        ctx.recs_of_study,
        ctx.recs_of_pat,
    )
    first_study, frontal_of, sex_of, key_of = (
        ctx.first_study,
        ctx.frontal_of,
        ctx.sex_of,
        ctx.key_of,
    )
    if scope == "pair":
        a = take(None)
        if a is None:
            return None
        sa = first_study[a]
        if sub == "report_swapped":
            b = take(
                None,
                lambda p: (
                    key_of[first_study[p]] != key_of[sa] and sex_of[first_study[p]] == sex_of[sa]
                ),
            )
        elif sub in ("exact_image_copy", "near_duplicate_image", "duplicate_report"):
            # a partner with the same findings, else a same-sex one that gets the whole study
            # (image and report) copied, so that no cross-modal mismatch is planted with it
            b = take(
                None,
                lambda p: (
                    key_of[first_study[p]] == key_of[sa] and sex_of[first_study[p]] == sex_of[sa]
                ),
            )
            if b is None:
                b = take(None, lambda p: sex_of[first_study[p]] == sex_of[sa])
                if b is not None:
                    sb = first_study[b]
                    ops.setdefault(sb, {})["report"] = reports[
                        row.loc[frontal_of[sa], "src_study_id"]
                    ]
                    ops.setdefault(frontal_of[sb], {})["image"] = (
                        "near" if sub == "near_duplicate_image" else "copy",
                        frontal_of[sa],
                    )
        else:  # a study id moved into another patient's sequence: keep that one a single study
            b = take(False if sub == "study_id_conflict" else None)
        if b is None:
            return None
        sb = first_study[b]
        fa, fb = frontal_of[sa], frontal_of[sb]
        if sub == "report_swapped":
            ops.setdefault(sa, {})["report"] = reports[row.loc[fb, "src_study_id"]]
            ops.setdefault(sb, {})["report"] = reports[row.loc[fa, "src_study_id"]]
            ids = recs_of_study[sa] + recs_of_study[sb]
        elif sub == "study_id_conflict":
            ops.setdefault(sb, {})["study_id"] = row.loc[fa, "study_id"]
            ids = recs_of_study[sa] + recs_of_study[sb]
        elif sub == "shared_image_file":
            ops.setdefault(fb, {})["share"] = fa
            ids = [fa, fb]
        elif sub == "exact_image_copy":
            ops.setdefault(fb, {})["image"] = ("copy", fa)
            ids = recs_of_study[sa] + recs_of_study[sb]
        elif sub == "near_duplicate_image":
            ops.setdefault(fb, {})["image"] = ("near", fa)
            ids = recs_of_study[sa] + recs_of_study[sb]
        else:  # duplicate_report
            ops.setdefault(sb, {})["report"] = reports[row.loc[fa, "src_study_id"]]
            ids = recs_of_study[sa] + recs_of_study[sb]
        return _Plant(typ, sub, ids, [sa, sb])

    cond = (
        (
            lambda q: (
                _report_sex(reports[row.loc[frontal_of[first_study[q]], "src_study_id"]])
                is not None
            )
        )
        if sub == "report_sex_contradiction"
        else (lambda q: True)
    )
    p = take(True if scope == "patient" else False if scope == "single" else None, cond)
    if p is None:
        return None
    sts = studies_of_pat[p]
    s0 = sts[0]
    f0 = frontal_of[s0]
    st_op = ops.setdefault(s0, {})
    rec_op = ops.setdefault(f0, {})
    ids = recs_of_study[s0]
    planted_studies = [s0]
    if scope == "record":
        ids = [f0]
    if scope == "patient":
        ids, planted_studies = recs_of_pat[p], list(sts)
    if sub == "report_missing":
        st_op["report"] = None
    elif sub == "image_missing":
        rec_op["image"] = ("delete",)
    elif sub == "view_missing":
        rec_op["view"] = ""
    elif sub == "date_missing":
        st_op["date"] = ""
        st_op["header_date"] = ""
    elif sub == "patient_id_missing":
        st_op["patient_id"] = ""
    elif sub == "corrupt_image":
        rec_op["image"] = ("corrupt",)
    elif sub == "age_out_of_range":
        st_op["age"] = "150" if k % 2 else "-3"
    elif sub == "bad_date":
        st_op["date"] = "20991345" if k % 2 else "not-a-date"
        st_op["header_date"] = None  # the header keeps the true date
    elif sub == "unknown_sex":
        st_op["sex"] = "Q"
        st_op["header_sex"] = None
    elif sub == "header_view_mismatch":
        rec_op["header_view"] = "AP" if row.loc[f0, "view"] == "PA" else "PA"
    elif sub == "header_sex_mismatch":
        rec_op["header_sex"] = "M" if sex_of[s0] == "F" else "F"
    elif sub == "report_sections_empty":
        st_op["report"] = _empty_sections(reports[row.loc[f0, "src_study_id"]])
    elif sub == "report_template":
        st_op["report"] = _unfilled_template(reports[row.loc[f0, "src_study_id"]])
    elif sub == "report_non_utf8":
        text = reports[row.loc[f0, "src_study_id"]]
        cut = text.find(". ") + 1 if ". " in text else len(text) // 2
        st_op["report"] = text[:cut] + " " + _NON_UTF8 + text[cut:]
    elif sub in ("blank_image", "saturated_image", "inverted_image", "non_chest_image"):
        rec_op["image"] = (sub.removesuffix("_image"),)
    elif sub == "report_foreign_language":
        st_op["report"] = FOREIGN_REPORT
    elif sub == "report_absurd_length":
        text = reports[row.loc[f0, "src_study_id"]]
        st_op["report"] = text + ("\n" + text.split("\n", 3)[-1]) * 60
    elif sub == "out_of_order":
        s1 = sts[1]
        ops.setdefault(s1, {})["day"] = row.loc[frontal_of[s0], "day"]
        ops.setdefault(s1, {})["time"] = row.loc[frontal_of[s0], "StudyTime"]
        st_op["day"] = row.loc[frontal_of[s1], "day"]
        st_op["time"] = row.loc[frontal_of[s1], "StudyTime"]
    elif sub == "duplicate_timestamp":
        s1 = sts[1]
        ops.setdefault(s1, {})["day"] = row.loc[f0, "day"]
        ops.setdefault(s1, {})["time"] = row.loc[f0, "StudyTime"]
    elif sub == "future_date":
        st_op["day"] = date(2030, 1, 1) + timedelta(days=int(rng.integers(0, 50 * 365)))
    elif sub == "before_birth":
        by = int(row.loc[f0, "birth_year"])
        st_op["day"] = date(by - int(rng.integers(2, 15)), int(rng.integers(1, 13)), 15)
    elif sub == "report_sex_contradiction":
        st_op["report"] = _flip_report_sex(reports[row.loc[f0, "src_study_id"]])
    elif sub == "patient_sex_conflict":
        s1 = sts[1]
        flip = "M" if sex_of[s1] == "F" else "F"
        o = ops.setdefault(s1, {})
        o["sex"] = o["header_sex"] = flip
        o["report"] = _flip_report_sex(reports[row.loc[frontal_of[s1], "src_study_id"]])
    elif sub == "patient_birth_year_conflict":
        ops.setdefault(sts[1], {})["birth_shift"] = int(rng.integers(6, 16))
    else:  # pragma: no cover - table and code out of step
        raise AssertionError(sub)
    return _Plant(typ, sub, list(ids), planted_studies)


def _empty_sections(text: str) -> str:
    """The header kept, FINDINGS empty and IMPRESSION a placeholder only."""
    at = min(
        (i for i in (text.find(" FINDINGS:"), text.find(" IMPRESSION:")) if i >= 0), default=-1
    )
    head = text[:at] if at >= 0 else ""
    return head + " FINDINGS: \n \n \n IMPRESSION: \n \n ___\n"


TEMPLATE_LEFT = "Heart size is [normal/enlarged]. [** TEMPLATE: insert findings here **]"


def _unfilled_template(text: str) -> str:
    """A report-template sentence left unfilled at the start of the findings (else the body)."""
    m = re.search(r" (FINDINGS|IMPRESSION): *\n \n", text)
    at = m.end() if m else 0
    return text[:at] + " " + TEMPLATE_LEFT + "\n" + text[at:]


def _drift_window(
    df: pd.DataFrame, mode: str, frac: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, set[str], dict]:
    """Pick the drifted studies (time: the last ``frac`` by date, with more abnormal studies
    moved in by date swaps between one-study patients; site: patients drawn with abnormal
    studies weighted x3, moved to site B)."""
    if frac <= 0:
        return df, set(), {"mode": mode, "n_studies": 0}
    studies = df.drop_duplicates("study_id")[["subject_id", "study_id", "day", "abnormal"]]
    normal = ~studies["abnormal"]
    n_of = studies.groupby("subject_id")["study_id"].transform("size")
    k = max(1, int(round(frac * len(studies))))
    if mode == "time":
        order = studies.sort_values(["day", "study_id"])
        window = set(order["study_id"].iloc[-k:])
        cut = order["day"].iloc[-k]
        # label-prevalence change: swap dates of window normals and earlier abnormals
        single = n_of == 1
        win_norm = studies[single & normal & studies["study_id"].isin(window)]
        pre_abn = studies[single & ~normal & ~studies["study_id"].isin(window)]
        m = min(len(win_norm) // 2, len(pre_abn))
        a = win_norm.sample(m, random_state=int(rng.integers(2**31)))["study_id"].tolist()
        b = pre_abn.sample(m, random_state=int(rng.integers(2**31)))["study_id"].tolist()
        day_of = studies.set_index("study_id")["day"].to_dict()
        swap = {x: day_of[y] for x, y in zip(a, b)} | {y: day_of[x] for x, y in zip(a, b)}
        df = df.assign(day=[swap.get(s, d) for s, d in zip(df["study_id"], df["day"])])
        window = (window - set(a)) | set(b)
        info = {"mode": "time", "window": [str(cut), str(max(df["day"]))]}
    else:
        pats = studies.drop_duplicates("subject_id")
        w = np.where(
            studies.groupby("subject_id")["abnormal"].any().reindex(pats["subject_id"]).to_numpy(),
            3.0,
            1.0,
        )
        order = rng.choice(len(pats), size=len(pats), replace=False, p=w / w.sum())
        chosen, count = [], 0
        per = studies.groupby("subject_id").size()
        for i in order:
            if count >= k:
                break
            p = pats["subject_id"].iloc[i]
            chosen.append(p)
            count += int(per[p])
        window = set(studies.loc[studies["subject_id"].isin(chosen), "study_id"])
        df = df.assign(site=np.where(df["study_id"].isin(window), "B", "A"))
        info = {"mode": "site", "site": "B"}
    win = studies[studies["study_id"].isin(window)]
    rest = studies[~studies["study_id"].isin(window)]
    info |= {
        "n_studies": len(window),
        "abnormal_fraction_window": float(win["abnormal"].mean()),
        "abnormal_fraction_rest": float(rest["abnormal"].mean()),
        "image_shift": "gamma 1.3, contrast x0.85 about the mean, gaussian noise sd 0.02",
    }
    return df, window, info


# ---------------------------------------------------------------------------------- images


def _transform(
    img: np.ndarray, how: tuple, rng: np.random.Generator, source: np.ndarray | None = None
) -> np.ndarray:
    """Apply an image anomaly to a float [0, 1] picture."""
    kind = how[0]
    if kind == "blank":
        return np.zeros_like(img)
    if kind == "saturated":
        return np.ones_like(img)
    if kind == "inverted":
        return 1.0 - img
    if kind == "non_chest":
        h, w = img.shape
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        pic = 0.5 + 0.4 * np.sin(2 * np.pi * (3 * xx + 2 * yy)) * np.cos(2 * np.pi * 5 * yy)
        return np.clip(pic + rng.normal(0, 0.15, img.shape), 0, 1).astype(np.float32)
    if kind == "near":
        assert source is not None
        h, w = source.shape
        small = cv2.resize(source, (int(w * 0.94), int(h * 0.94)), interpolation=cv2.INTER_AREA)
        return np.clip(small + rng.normal(0, 0.01, small.shape), 0, 1).astype(np.float32)
    if kind == "drift":
        mean = float(img.mean())
        out = np.clip(img, 0, 1) ** 1.3
        out = mean + 0.85 * (out - mean)
        return np.clip(out + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32)
    raise AssertionError(kind)  # pragma: no cover


def _jpg_bytes(img01: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", np.rint(img01 * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _read_jpg(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{path}: unreadable JPEG in the source tree")
    return img.astype(np.float32) / 255.0


def _dicom_display(ds) -> np.ndarray:
    v = ds.pixel_array.astype(np.float32)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    d = (v - (c - w / 2)) / w
    return 1.0 - d if ds.PhotometricInterpretation == "MONOCHROME1" else d


def _dicom_set_display(ds, img01: np.ndarray) -> None:
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    d = 1.0 - img01 if ds.PhotometricInterpretation == "MONOCHROME1" else img01
    v = np.clip(np.rint(d * w + (c - w / 2)), 0, _MAX_STORED).astype("<u2")
    ds.Rows, ds.Columns = v.shape
    ds.PixelData = v.tobytes()


# ---------------------------------------------------------------------------------- writing


def _apply(df: pd.DataFrame, ops: dict[str, dict], reports: dict[str, str]) -> pd.DataFrame:
    """The per-record table as the planted tree should show it (strings as written)."""
    out = df.copy()
    study_ops = [ops.get(s, {}) for s in out["study_id"]]
    rec_ops = [ops.get(r, {}) for r in out["dicom_id"]]
    out["report"] = [
        o.get("report", reports[s]) if "report" in o else reports[s]
        for o, s in zip(study_ops, out["src_study_id"])
    ]
    out["day"] = [o.get("day", d) for o, d in zip(study_ops, out["day"])]
    out["StudyTime"] = [o.get("time", t) for o, t in zip(study_ops, out["StudyTime"])]
    shift = np.array([o.get("birth_shift", 0) for o in study_ops])
    out["birth_year"] = out["birth_year"].astype(int) + shift
    ages = [d.year - b for d, b in zip(df["day"], out["birth_year"])]  # age at the true date
    out["age"] = [o.get("age", str(a)) for o, a in zip(study_ops, ages)]
    out["date"] = [o.get("date", d.strftime("%Y%m%d")) for o, d in zip(study_ops, out["day"])]
    out["header_date"] = [
        d.strftime("%Y%m%d") if o.get("header_date", 0) is None else o.get("header_date", nd)
        for o, d, nd in zip(study_ops, df["day"], out["date"])
    ]
    out["header_sex"] = [
        ro.get("header_sex") or so.get("header_sex") or s
        for ro, so, s in zip(rec_ops, study_ops, out["sex"])
    ]
    out["sex"] = [o.get("sex", s) for o, s in zip(study_ops, out["sex"])]
    out["header_view"] = [o.get("header_view", v) for o, v in zip(rec_ops, out["view"])]
    out["view"] = [o.get("view", v) for o, v in zip(rec_ops, out["view"])]
    out["patient_id"] = [o.get("patient_id", p) for o, p in zip(study_ops, out["subject_id"])]
    new_sid = [o.get("study_id", s) for o, s in zip(study_ops, out["study_id"])]
    out["rel_dir"] = [
        "files/p" + p[:2] + "/p" + p + "/s" + s for p, s in zip(out["subject_id"], new_sid)
    ]
    out["study_id"] = new_sid
    out["image_op"] = [o.get("image") for o in rec_ops]
    out["share"] = [o.get("share") for o in rec_ops]
    return out


def _image_for(rec, layout: str, src: Path, rng: np.random.Generator, by_id, drift: set[str]):
    """(bytes or pydicom dataset or None) for one record's image in ``layout``."""
    op = rec.image_op if isinstance(rec.image_op, tuple) else None
    shifted = rec.study_id in drift
    if layout == "dicom":
        import pydicom

        path = src / "dicom" / rec.src_rel_dir / f"{rec.dicom_id}.dcm"
        if op and op[0] == "delete":
            return None
        if op and op[0] == "corrupt":
            raw = path.read_bytes()
            return raw[: len(raw) // 2]
        ds = pydicom.dcmread(path)
        if op and op[0] in ("copy", "near"):
            other = by_id[op[1]]
            ods = pydicom.dcmread(src / "dicom" / other.src_rel_dir / f"{other.dicom_id}.dcm")
            if op[0] == "copy":
                for kw in (
                    "PixelData",
                    "Rows",
                    "Columns",
                    "PhotometricInterpretation",
                    "WindowCenter",
                    "WindowWidth",
                    "PresentationLUTShape",
                ):
                    setattr(ds, kw, getattr(ods, kw))
            else:
                _dicom_set_display(ds, _transform(None, op, rng, _dicom_display(ods)))
        elif op:
            _dicom_set_display(ds, _transform(_dicom_display(ds), op, rng))
        if shifted:
            _dicom_set_display(ds, _transform(_dicom_display(ds), ("drift",), rng))
        for kw in ("StudyDate", "SeriesDate", "ContentDate"):
            setattr(ds, kw, rec.header_date)
        for kw in ("StudyTime", "SeriesTime", "ContentTime"):
            setattr(ds, kw, rec.StudyTime)
        ds.PatientSex = rec.header_sex
        ds.ViewPosition = rec.header_view
        return ds
    path = src / "jpg" / rec.src_rel_dir / f"{rec.dicom_id}.jpg"
    if op and op[0] == "delete":
        return None
    if op and op[0] == "corrupt":
        raw = path.read_bytes()
        return raw[: int(len(raw) * 0.6)]
    if op and op[0] == "copy":
        other = by_id[op[1]]
        return (src / "jpg" / other.src_rel_dir / f"{other.dicom_id}.jpg").read_bytes()
    if op and op[0] == "near":
        other = by_id[op[1]]
        img = _read_jpg(src / "jpg" / other.src_rel_dir / f"{other.dicom_id}.jpg")
        return _jpg_bytes(_transform(img, op, rng, source=img), quality=80)
    if not op and not shifted:
        return path.read_bytes()
    img = _read_jpg(path)
    if op:
        img = _transform(img, op, rng)
    if shifted:
        img = _transform(img, ("drift",), rng)
    return _jpg_bytes(img)


def _write_gz(path: Path, df: pd.DataFrame) -> None:
    path.write_bytes(gzip.compress(df.to_csv(index=False, lineterminator="\n").encode(), mtime=0))


def _report_bytes(text: str) -> bytes:
    return text.replace(_NON_UTF8, "\0").encode("utf-8").replace(b"\0", _NON_UTF8_BYTES)


def _write_layout(
    out: Path, layout: str, t: pd.DataFrame, src: Path, seed: int, drift: set[str]
) -> None:
    rng = np.random.default_rng([seed, 0x1AA, OUT_LAYOUTS.index(layout)])
    by_id = {r.dicom_id: r for r in t.itertuples()}
    suffix = ".dcm" if layout == "dicom" else ".jpg"
    rel_path: dict[str, str] = {}
    for rec in t.itertuples():
        if layout == "manifest":
            rel = f"images/{rec.dicom_id}.jpg"
        else:
            rel = f"{rec.rel_dir}/{rec.dicom_id}{suffix}"
        rel_path[rec.dicom_id] = rel
        if isinstance(rec.share, str):
            continue
        img = _image_for(rec, "jpg" if layout == "manifest" else layout, src, rng, by_id, drift)
        if img is None:
            continue
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(img, bytes):
            p.write_bytes(img)
        else:
            img.save_as(p, enforce_file_format=True)
    for rec in t.itertuples():
        if isinstance(rec.share, str):
            rel_path[rec.dicom_id] = rel_path[rec.share]
    labels = {c: t[f"rep:{c}"] for c in CHEXPERT_LABELS}
    if layout == "manifest":
        pipes = [
            "|".join(c for c in CHEXPERT_LABELS if labels[c].iloc[i] == "1.0")
            for i in range(len(t))
        ]
        iso = [
            d if not re.fullmatch(r"\d{8}", d) or d == "20991345" else f"{d[:4]}-{d[4:6]}-{d[6:]}"
            for d in t["date"]
        ]
        iso = ["2099-13-45" if d == "20991345" else d for d in iso]
        man = pd.DataFrame(
            {
                "id": t["dicom_id"],
                "image_path": [rel_path[i] for i in t["dicom_id"]],
                "patient_id": t["patient_id"],
                "study_id": t["study_id"],
                "view": t["view"],
                "report": t["report"].map(lambda s: s if isinstance(s, str) else ""),
                "study_date": iso,
                "study_time": t["StudyTime"],
                "sex": t["sex"],
                "age": t["age"],
                "birth_year": t["birth_year"],
                "site": t["site"],
                "split": t["split"],
                "labels": pipes,
            }
        )
        text = man.to_csv(index=False, lineterminator="\n")
        (out / "manifest.csv").write_bytes(_report_bytes(text))
        return
    for rec in t.drop_duplicates(["rel_dir"]).itertuples():
        if not isinstance(rec.report, str):
            continue
        p = out / f"{rec.rel_dir}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_report_bytes(rec.report))
    exam = np.where(t["view"] == "AP", "CHEST (PORTABLE AP)", "CHEST (PA AND LAT)")
    near = [isinstance(o, tuple) and o[0] == "near" for o in t["image_op"]]
    rows = [int(int(r) * 0.94) if n else int(r) for r, n in zip(t["Rows"], near)]
    cols = [int(int(c) * 0.94) if n else int(c) for c, n in zip(t["Columns"], near)]
    meta = pd.DataFrame(
        {
            "dicom_id": t["dicom_id"],
            "subject_id": t["subject_id"],
            "study_id": t["study_id"],
            "PerformedProcedureStepDescription": exam,
            "ViewPosition": t["view"],
            "Rows": rows,
            "Columns": cols,
            "StudyDate": t["date"],
            "StudyTime": t["StudyTime"],
            "sex": t["sex"],
            "age": t["age"],
            "birth_year": t["birth_year"],
            "site": t["site"],
        }
    )
    _write_gz(out / "mimic-cxr-2.0.0-metadata.csv.gz", meta)
    _write_gz(
        out / "mimic-cxr-2.0.0-split.csv.gz", t[["dicom_id", "study_id", "subject_id", "split"]]
    )
    chex = pd.DataFrame(
        {"subject_id": t["subject_id"], "study_id": t["study_id"]}
        | {c: labels[c] for c in CHEXPERT_LABELS}
    ).drop_duplicates(["subject_id", "study_id"])
    _write_gz(out / "mimic-cxr-2.0.0-chexpert.csv.gz", chex)
    _write_gz(out / "mimic-cxr-2.0.0-negbio.csv.gz", chex)
    if layout == "dicom":
        rec_list = pd.DataFrame(
            {
                "subject_id": t["subject_id"],
                "study_id": t["study_id"],
                "dicom_id": t["dicom_id"],
                "path": [rel_path[i] for i in t["dicom_id"]],
            }
        )
        _write_gz(out / "cxr-record-list.csv.gz", rec_list)
        sl = t.drop_duplicates("rel_dir")
        _write_gz(
            out / "cxr-study-list.csv.gz",
            pd.DataFrame(
                {
                    "subject_id": sl["subject_id"],
                    "study_id": sl["study_id"],
                    "path": sl["rel_dir"] + ".txt",
                }
            ),
        )


def _check_rates(rates: Mapping[str, float] | None) -> dict[str, float]:
    out = dict(DEFAULT_RATES)
    if rates is None:
        return out
    if not isinstance(rates, Mapping):
        raise TypeError(f"rates must be a dict of type -> fraction, got {type(rates).__name__}")
    bad = sorted(set(rates) - set(PLANT_TYPES))
    if bad:
        raise ValueError(f"unknown anomaly types {bad}; use {', '.join(PLANT_TYPES)}")
    for k, v in rates.items():
        v = float(v)
        top = 0.5 if k == "drift" else 0.1
        if not 0.0 <= v <= top:
            raise ValueError(f"rate for {k} must be in [0, {top}], got {v}")
        out[k] = v
    return out


README = """\
SYNTHETIC PHANTOM DATA WITH PLANTED ANOMALIES - NOT PATIENT DATA

Written by radalign.data.synth_anomalies.plant_anomalies from {src} (seed={seed}).
Dates were moved into 1990-2025 and each patient's study ids renumbered to increase with date;
then anomalies were planted at these rates (fraction of studies per type): {rates}.
Per layout, truth.csv lists each planted anomaly: type, subtype, ids (pipe-joined record ids).
drift.json names the drifted window/site. Each patient carries at most one anomaly.
"""


def plant_anomalies(
    src_root: str | os.PathLike,
    out_root: str | os.PathLike,
    *,
    rates: Mapping[str, float] | None = None,
    seed: int = 0,
    layouts: Sequence[str] = OUT_LAYOUTS,
    drift_mode: str = "time",
    subtypes: Sequence[str] | None = None,
) -> PlantSummary:
    """Write a planted copy of the phantom tree ``src_root`` under ``out_root`` (see the module
    docstring). ``rates``: type -> fraction of studies (defaults :data:`DEFAULT_RATES`; types
    not named keep their default; 0 plants none). ``drift_mode``: ``"time"`` (the last
    ``rates["drift"]`` of dates) or ``"site"`` (a second site B). ``subtypes``: plant only these
    subtypes (names from :data:`SUBTYPES`; a type with none of them gets none)."""
    src, out = Path(src_root), Path(out_root)
    layouts = tuple(dict.fromkeys(layouts))
    if not layouts or any(lay not in OUT_LAYOUTS for lay in layouts):
        raise ValueError(f"layouts must be a non-empty subset of {OUT_LAYOUTS}, got {layouts}")
    if drift_mode not in DRIFT_MODES:
        raise ValueError(f"drift_mode must be one of {DRIFT_MODES}, got {drift_mode!r}")
    rates = _check_rates(rates)
    only = None
    if subtypes is not None:
        known = {s for subs in SUBTYPES.values() for s in subs}
        bad = sorted(set(subtypes) - known)
        if bad:
            raise ValueError(f"unknown subtypes {bad}; see SUBTYPES for the names")
        only = frozenset(subtypes)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source phantom tree not found")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f"{out}: the planted copy must not be written inside the source {src}")
    if out.exists() and any(out.iterdir()) and not (out / "README.txt").is_file():
        raise FileExistsError(
            f"{out} exists and is not a planted phantom tree; refusing to replace it"
        )
    df, reports = _load_source(src, layouts)
    rng = np.random.default_rng([seed, 0x51A7])
    df = _clean_state(df, rng)
    df, drift, drift_info = _drift_window(df, drift_mode, rates["drift"], rng)
    df = _birth_years(df, rng)
    drift_ids = sorted(df.loc[df["study_id"].isin(drift), "dicom_id"])
    drift_info["ids"] = drift_ids
    planted: dict[str, dict[str, int]] = {}
    affected: dict[str, dict[str, int]] = {}
    with atomic_dir(out) as tmp:
        for lay in layouts:
            plants, ops = _plan(df, reports, lay, rates, seed, drift, only)
            table = _apply(df, ops, reports)
            (tmp / lay).mkdir()
            _write_layout(tmp / lay, lay, table, src, seed, drift)
            rows = [(p.type, p.subtype, "|".join(p.ids)) for p in plants]
            if drift_ids:
                rows.append(
                    (
                        "drift",
                        f"{drift_mode}_window" if drift_mode == "time" else "site",
                        "|".join(drift_ids),
                    )
                )
            truth = pd.DataFrame(rows, columns=["type", "subtype", "ids"])
            truth.to_csv(tmp / lay / "truth.csv", index=False, lineterminator="\n")
            planted[lay] = {t: int((truth["type"] == t).sum()) for t in PLANT_TYPES}
            affected[lay] = {
                t: sum(len(p.studies) for p in plants if p.type == t) for t in PLANT_TYPES[:-1]
            } | {"drift": len(drift)}
        (tmp / "drift.json").write_text(json.dumps(drift_info, indent=1))
        (tmp / "README.txt").write_text(README.format(src=src, seed=seed, rates=json.dumps(rates)))
    return PlantSummary(
        root=out,
        layouts=layouts,
        n_studies=int(df["study_id"].nunique()),
        n_records=len(df),
        planted=planted,
        studies_affected=affected,
        drift={k: v for k, v in drift_info.items() if k != "ids"},
        paths={lay: out / lay for lay in layouts} | {"drift": out / "drift.json"},
    )


# ---------------------------------------------------------------------------------- scoring


def _id_sets(col: pd.Series) -> list[set[str]]:
    return [set(filter(None, str(v).split("|"))) if v == v else set() for v in col]


def score_findings(findings: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall per type of an audit's findings frame against ``truth.csv``.

    Both frames have ``type`` and ``ids`` (pipe-joined record ids) columns. Returns one row per
    type seen in either: ``planted``, ``recalled``, ``recall``, ``findings``, ``correct``,
    ``precision`` (NaN where there is nothing to divide by)."""
    for name, fr in (("findings", findings), ("truth", truth)):
        missing = {"type", "ids"} - set(fr.columns)
        if missing:
            raise ValueError(f"{name} frame lacks columns {sorted(missing)}")
    f_ids, t_ids = _id_sets(findings["ids"]), _id_sets(truth["ids"])
    planted_ids: dict[str, set[str]] = {}
    found_ids: dict[str, set[str]] = {}
    for typ, ids in zip(truth["type"], t_ids):
        planted_ids.setdefault(typ, set()).update(ids)
    for typ, ids in zip(findings["type"], f_ids):
        found_ids.setdefault(typ, set()).update(ids)
    rows = []
    types = [t for t in PLANT_TYPES if t in planted_ids or t in found_ids]
    types += sorted((set(planted_ids) | set(found_ids)) - set(types))
    for typ in types:
        tr = [ids for t, ids in zip(truth["type"], t_ids) if t == typ]
        fi = [ids for t, ids in zip(findings["type"], f_ids) if t == typ]
        rec = sum(bool(ids & found_ids.get(typ, set())) for ids in tr)
        cor = sum(bool(ids & planted_ids.get(typ, set())) for ids in fi)
        rows.append(
            {
                "type": typ,
                "planted": len(tr),
                "recalled": rec,
                "recall": rec / len(tr) if tr else float("nan"),
                "findings": len(fi),
                "correct": cor,
                "precision": cor / len(fi) if fi else float("nan"),
            }
        )
    return pd.DataFrame(
        rows, columns=["type", "planted", "recalled", "recall", "findings", "correct", "precision"]
    )


def recall_by_subtype(findings: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per planted (type, subtype): how many were planted and how many recalled (same rule)."""
    found: dict[str, set[str]] = {}
    for typ, ids in zip(findings["type"], _id_sets(findings["ids"])):
        found.setdefault(typ, set()).update(ids)
    t = truth.assign(
        hit=[
            bool(ids & found.get(typ, set()))
            for typ, ids in zip(truth["type"], _id_sets(truth["ids"]))
        ]
    )
    g = t.groupby(["type", "subtype"], sort=False)["hit"]
    return pd.DataFrame({"planted": g.size(), "recalled": g.sum()}).reset_index()


def read_truth(path: str | os.PathLike) -> pd.DataFrame:
    """``truth.csv`` as written by :func:`plant_anomalies` (ids as pipe-joined strings)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)
