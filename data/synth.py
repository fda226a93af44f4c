"""Synthetic MIMIC-CXR-shaped phantoms: (image, report) pairs whose truth is known.

:func:`generate_case` makes one case in memory; :func:`synthesize` writes ``n`` studies to disk
in the official MIMIC-CXR layouts so that the real loaders read them:

``ROOT/dicom/``  MIMIC-CXR v2.0.0: ``files/p10/p10000032/s50414267/<dicom_id>.dcm``, the report
                 ``files/p10/p10000032/s50414267.txt``, ``cxr-record-list.csv.gz`` and
                 ``cxr-study-list.csv.gz``.
``ROOT/jpg/``    MIMIC-CXR-JPG v2.0.0: ``files/.../<dicom_id>.jpg`` (+ the report .txt files) and
                 ``mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz``.
``ROOT/masks/<dicom_id>.npz``  one bool array per positive finding label (empty for laterals).
``ROOT/phantom-truth.csv.gz``  true labels and planted findings (side/zone/size as JSON).
``ROOT/README.txt``            what this is, the seed and the generator version.

Images follow the radiological convention (patient's right on the image left). Everything is
deterministic by ``(n, seed, size)``: study ``i`` draws from ``np.random.default_rng([seed, i])``
and ids, dates, splits and DICOM settings from a separate plan generator, so ``workers`` never
changes the output, and gzip/zip/DICOM files carry no wall-clock timestamps.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from radalign.data.synth_anatomy import (
    CHEXPERT_LABELS,
    P_AP,
    Anatomy,
    Finding,
    jitter_anatomy,
    render_frontal,
    render_lateral,
    sample_anatomy,
    sample_finding,
    sample_findings,
    truth_labels,
)
from radalign.data.synth_reports import write_report
from radalign.encoders.atomic import atomic_dir, atomic_write

GENERATOR_VERSION = "phantoms-1"
LAYOUTS = ("dicom", "jpg")
SPLITS = ("train", "validate", "test")
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs
JPEG_QUALITY = 95
MAX_STORED = 4095  # 12-bit
P_MONOCHROME1 = 0.2
P_SECOND_FRONTAL = 0.03
P_LATERAL = 0.06  # of PA studies
STUDIES_PER_PATIENT = ((1, 0.7), (2, 0.18), (3, 0.08), (4, 0.04))

METADATA_COLUMNS = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
VIEW_CODES = {
    "PA": ("R-10214", "postero-anterior"),
    "AP": ("R-10206", "antero-posterior"),
    "LL": ("R-10236", "left lateral"),
    "LATERAL": ("R-10232", "lateral"),
}
ORIENT_CODES = {"Erect": "F-10440", "Recumbent": "F-10450"}
SOP_CLASS = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
}


@dataclass
class PhantomCase:
    """One synthetic frontal radiograph with its report and truth."""

    image: np.ndarray  # float32 (size, size) in [0, 1], bright = dense
    masks: dict[str, np.ndarray]  # positive label -> bool (size, size)
    findings: list[Finding]
    view: str  # "PA" or "AP"
    report: str
    sections: dict[str, str]
    labels: dict[str, int]  # 14 CheXpert labels, 0/1 truth
    report_labels: dict[str, float | None]  # what the report's text expresses (1/0/-1/None)
    anatomy: dict[str, np.ndarray]  # "body", "lungs", "heart" bool masks
    ctr: float  # displayed cardiothoracic ratio
    report_style: str = "full"
    params: Anatomy | None = None


@dataclass
class SynthSummary:
    root: Path
    layouts: tuple[str, ...]
    n_studies: int
    n_images: int
    n_patients: int
    n_frontal: int
    n_lateral: int
    split_studies: dict[str, int]
    prevalence: dict[str, float]  # truth prevalence per label over studies
    seconds: float
    render_seconds: float  # summed over workers
    write_seconds: float  # summed over workers
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def pairs_per_second(self) -> float:
        return self.n_studies / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        """A few readable lines for the console."""
        splits = ", ".join(f"{k}: {v}" for k, v in self.split_studies.items())
        common = sorted(self.prevalence.items(), key=lambda kv: -kv[1])
        prev = ", ".join(f"{k} {v:.0%}" for k, v in common if v > 0)
        lines = [
            f"phantoms   {self.n_studies} studies, {self.n_images} images "
            f"({self.n_frontal} frontal, {self.n_lateral} lateral), {self.n_patients} patients "
            f"in {self.seconds:.1f} s",
            f"splits     {splits} (studies)",
            f"findings   {prev}",
        ]
        lines += [f"{name:<10} {path}" for name, path in self.paths.items()]
        return "\n".join(lines)


def _as_rng(rng_or_seed: Any) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def generate_case(
    rng_or_seed: Any = 0,
    size: int = 256,
    *,
    view: str | None = None,
    findings: Sequence[str | Finding] | None = None,
    normal: bool | None = None,
    has_prior: bool = False,
    report_style: str | None = None,
    sex: str | None = None,
) -> PhantomCase:
    """Make one case in memory.

    ``rng_or_seed``: a ``Generator`` or anything ``np.random.default_rng`` accepts. ``view``
    forces "PA"/"AP"; ``findings`` forces the planted findings (names get random attributes,
    :class:`Finding` objects are used as given); ``normal=True`` plants no disease.
    ``report_style``: "full", "findings_only", "impression_only" or "no_headers"; ``sex`` ("F"/"M")
    sets the sex named in the INDICATION (random when None).
    """
    rng = _as_rng(rng_or_seed)
    anat = sample_anatomy(rng, view)
    if findings is None:
        fl = sample_findings(rng, anat.view, normal)
    else:
        fl = [f if isinstance(f, Finding) else sample_finding(rng, f, anat.view) for f in findings]
    r = render_frontal(anat, fl, size, rng)
    rep = write_report(fl, anat.view, rng, has_prior=has_prior, style=report_style, sex=sex)
    return PhantomCase(
        image=r.image,
        masks=r.masks,
        findings=fl,
        view=anat.view,
        report=rep.text,
        sections=rep.sections,
        labels=truth_labels(fl),
        report_labels=rep.labels,
        anatomy=r.anatomy,
        ctr=r.ctr,
        report_style=rep.style,
        params=anat,
    )


# ----------------------------------------------------------------------------------------------
# plan: ids, dates, splits, per-image acquisition settings (independent of image content)


@dataclass
class _Image:
    dicom_id: str
    kind: str  # "frontal", "frontal2", "lateral"
    view_position: str
    photometric: str
    modality: str
    lo: int
    hi: int
    orientation: str
    sop_uid: str
    series_uid: str
    instance: int


@dataclass
class _Study:
    index: int
    subject_id: int
    study_id: int
    split: str
    view: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS.fff
    has_prior: bool
    sex: str
    study_uid: str
    images: list[_Image]

    @property
    def rel_dir(self) -> str:
        p = f"p{self.subject_id}"
        return f"files/{p[:3]}/{p}/s{self.study_id}"


def _uid(seed: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(
        generate_uid(UID_PREFIX, entropy_srcs=[GENERATOR_VERSION, str(seed), *map(str, parts)])
    )


def _plan(n: int, seed: int, split_fractions: Sequence[float]) -> list[_Study]:
    rng = np.random.default_rng([seed, 0xA11, 0xD15])
    counts: list[int] = []
    ks, ps = zip(*STUDIES_PER_PATIENT)
    while sum(counts) < n:
        counts.append(min(int(rng.choice(ks, p=ps)), n - sum(counts)))
    n_pat = len(counts)
    subjects = np.sort(rng.choice(10_000_000, size=n_pat, replace=False) + 10_000_000)
    study_ids = rng.choice(10_000_000, size=n, replace=False) + 50_000_000
    # patient-disjoint split
    fr = np.asarray(split_fractions, dtype=float)
    fr = fr / fr.sum()
    n_split = [int(round(f * n_pat)) for f in fr]
    for k in (1, 2):  # keep validate/test non-empty when asked for and there are enough patients
        if fr[k] > 0 and n_split[k] == 0 and n_pat >= 3:
            n_split[k] = 1
    n_split[0] = n_pat - n_split[1] - n_split[2]
    order = rng.permutation(n_pat)
    split_of = np.empty(n_pat, dtype=object)
    split_of[order[: n_split[0]]] = "train"
    split_of[order[n_split[0] : n_split[0] + n_split[1]]] = "validate"
    split_of[order[n_split[0] + n_split[1] :]] = "test"

    studies: list[_Study] = []
    i = 0
    epoch = date(2110, 1, 1)
    for p, k in enumerate(counts):
        sid = int(subjects[p])
        day = epoch + timedelta(days=int(rng.integers(0, 90 * 365)))
        sex = "F" if rng.random() < 0.5 else "M"
        for j in range(k):
            if j:
                day += timedelta(days=int(rng.integers(1, 700)))
            secs = int(rng.integers(0, 86400))
            t = f"{secs // 3600:02d}{secs % 3600 // 60:02d}{secs % 60:02d}.{int(rng.integers(0, 1000)):03d}"
            view = "AP" if rng.random() < P_AP else "PA"
            kinds = ["frontal"]
            if rng.random() < P_SECOND_FRONTAL:
                kinds.append("frontal2")
            if view == "PA" and rng.random() < P_LATERAL:
                kinds.append("lateral")
            study_id = int(study_ids[i])
            images = []
            for m, kind in enumerate(kinds):
                words = rng.integers(0, 2**32, size=5, dtype=np.uint64)
                dicom_id = "-".join(f"{int(w):08x}" for w in words)
                vp = view
                if kind == "lateral":
                    vp = "LL" if rng.random() < 0.6 else "LATERAL"
                modality = "CR" if rng.random() < 0.3 else "DX"
                images.append(
                    _Image(
                        dicom_id=dicom_id,
                        kind=kind,
                        view_position=vp,
                        photometric="MONOCHROME1"
                        if rng.random() < P_MONOCHROME1
                        else "MONOCHROME2",
                        modality=modality,
                        lo=int(rng.integers(0, 400)),
                        hi=int(rng.integers(3300, MAX_STORED + 1)),
                        orientation="Recumbent" if view == "AP" and rng.random() < 0.6 else "Erect",
                        sop_uid=_uid(seed, dicom_id, "sop"),
                        series_uid=_uid(seed, dicom_id, "series"),
                        instance=m + 1,
                    )
                )
            studies.append(
                _Study(
                    index=i,
                    subject_id=sid,
                    study_id=study_id,
                    split=str(split_of[p]),
                    view=view,
                    study_date=day.strftime("%Y%m%d"),
                    study_time=t,
                    has_prior=j > 0,
                    sex=sex,
                    study_uid=_uid(seed, study_id, "study"),
                    images=images,
                )
            )
            i += 1
    return studies


# ----------------------------------------------------------------------------------------------
# writers


def save_npz_deterministic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps (byte-identical reruns)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def _code_item(value: str, meaning: str, scheme: str = "SRT"):
    from pydicom.dataset import Dataset

    it = Dataset()
    it.CodeValue = value
    it.CodingSchemeDesignator = scheme
    it.CodeMeaning = meaning
    return it


def _exam(view: str) -> str:
    return "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)"


def _stored(img01: np.ndarray, im: _Image) -> tuple[np.ndarray, float, float]:
    """12-bit stored values, window centre and width (in stored = rescaled units)."""
    v = np.rint(np.float32(im.lo) + img01 * np.float32(im.hi - im.lo)).astype(np.uint16)
    centre = (im.lo + im.hi) / 2.0
    if im.photometric == "MONOCHROME1":
        v = np.uint16(MAX_STORED) - v
        centre = MAX_STORED - centre
    return v, centre, float(im.hi - im.lo)


def _write_dicom(path: Path, img01: np.ndarray, st: _Study, im: _Image) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian

    v, centre, width = _stored(img01, im)
    sop_class = SOP_CLASS[im.modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = im.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = im.sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = st.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = st.study_time
    ds.AccessionNumber = ""
    ds.Modality = im.modality
    ds.Manufacturer = "radalign synthetic phantom"
    ds.StudyDescription = _exam(st.view)
    ds.SeriesDescription = f"CHEST {im.view_position}"
    ds.PerformedProcedureStepDescription = _exam(st.view)
    ds.ProcedureCodeSequence = DicomSequence([_code_item("CXR2", _exam(st.view), "local")])
    code, meaning = VIEW_CODES[im.view_position]
    ds.ViewCodeSequence = DicomSequence([_code_item(code, meaning)])
    ds.PatientOrientationCodeSequence = DicomSequence(
        [_code_item(ORIENT_CODES[im.orientation], im.orientation)]
    )
    ds.PatientName = f"Phantom^P{st.subject_id}"
    ds.PatientID = str(st.subject_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = st.sex
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = im.view_position
    ds.StudyInstanceUID = st.study_uid
    ds.SeriesInstanceUID = im.series_uid
    ds.StudyID = ""
    ds.SeriesNumber = im.instance
    ds.InstanceNumber = 1
    # rows run towards the feet; columns towards the patient's left (frontal) / back (lateral)
    ds.PatientOrientation = ["P", "F"] if im.kind == "lateral" else ["L", "F"]
    spacing = f"{400.0 / img01.shape[1]:.4f}"
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = im.photometric
    ds.Rows, ds.Columns = img01.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = f"{centre:.1f}"
    ds.WindowWidth = f"{width:.1f}"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if im.photometric == "MONOCHROME1" else "IDENTITY"
    ds.PixelData = v.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)


def _write_jpg(path: Path, img01: np.ndarray) -> None:
    u8 = np.rint(img01 * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - cv2 failure
        raise RuntimeError(f"JPEG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def _study_task(args: tuple) -> dict[str, Any]:
    """Render and write one chunk of studies; returns the CSV rows for them."""
    studies, seed, size, layouts, tmp = args
    tmp = Path(tmp)
    out: dict[str, list] = {
        "record": [],
        "study": [],
        "meta": [],
        "split": [],
        "chex": [],
        "truth": [],
    }
    t_render = t_write = 0.0
    for st in studies:
        t0 = time.perf_counter()
        case = generate_case(
            np.random.default_rng([seed, st.index]),
            size,
            view=st.view,
            has_prior=st.has_prior,
            sex=st.sex,
        )
        pictures: list[tuple[_Image, np.ndarray, dict[str, np.ndarray]]] = []
        for im in st.images:
            if im.kind == "frontal":
                pictures.append((im, case.image, case.masks))
            elif im.kind == "frontal2":
                r2 = np.random.default_rng([seed, st.index, 1])
                rr = render_frontal(jitter_anatomy(case.params, r2), case.findings, size, r2)
                pictures.append((im, rr.image, rr.masks))
            else:
                r3 = np.random.default_rng([seed, st.index, 2])
                pictures.append((im, render_lateral(case.params, size, r3), {}))
        t1 = time.perf_counter()
        for layout in layouts:
            d = tmp / layout / st.rel_dir
            d.mkdir(parents=True, exist_ok=True)
            (d.parent / f"s{st.study_id}.txt").write_text(case.report, encoding="ascii")
            for im, img, _ in pictures:
                if layout == "dicom":
                    _write_dicom(d / f"{im.dicom_id}.dcm", img, st, im)
                else:
                    _write_jpg(d / f"{im.dicom_id}.jpg", img)
        for im, _, masks in pictures:
            save_npz_deterministic(tmp / "masks" / f"{im.dicom_id}.npz", masks)
        t_write += time.perf_counter() - t1
        t_render += t1 - t0

        findings_json = json.dumps([f.to_dict() for f in case.findings], sort_keys=True)
        out["study"].append((st.subject_id, st.study_id, f"{st.rel_dir}.txt"))
        out["chex"].append(
            {"subject_id": st.subject_id, "study_id": st.study_id}
            | {k: case.report_labels[k] for k in CHEXPERT_LABELS}
        )
        for im, _, _ in pictures:
            out["record"].append(
                (st.subject_id, st.study_id, im.dicom_id, f"{st.rel_dir}/{im.dicom_id}.dcm")
            )
            out["split"].append((im.dicom_id, st.study_id, st.subject_id, st.split))
            out["meta"].append(
                (
                    im.dicom_id,
                    st.subject_id,
                    st.study_id,
                    _exam(st.view),
                    im.view_position,
                    size,
                    size,
                    int(st.study_date),
                    float(st.study_time),
                    _exam(st.view),
                    VIEW_CODES[im.view_position][1],
                    im.orientation,
                )
            )
            out["truth"].append(
                {
                    "dicom_id": im.dicom_id,
                    "study_id": st.study_id,
                    "subject_id": st.subject_id,
                    "view": im.view_position,
                    "split": st.split,
                    "image_kind": im.kind,
                    "photometric": im.photometric,
                    "ctr": round(case.ctr, 4) if im.kind == "frontal" else None,
                    "report_style": case.report_style,
                    "findings": findings_json,
                }
                | {k: case.labels[k] for k in CHEXPERT_LABELS}
            )
    out["t_render"] = [t_render]
    out["t_write"] = [t_write]
    return out


def _write_csv_gz(path: Path, df: pd.DataFrame) -> None:
    data = df.to_csv(index=False, lineterminator="\n").encode("utf-8")
    with atomic_write(path, "wb") as fh:
        fh.write(gzip.compress(data, compresslevel=6, mtime=0))


README = """\
SYNTHETIC PHANTOM DATA - NOT PATIENT DATA

Chest-radiograph phantoms and reports generated by radalign ({version}).
Every image, report, identifier, name and date here is synthetic (dates are shifted into the
22nd century as in MIMIC-CXR; names are "Phantom^P<subject_id>").

seed={seed} n_studies={n} size={size} layouts={layouts} split_fractions={fractions}

Layouts (each a complete MIMIC-shaped tree, same ids in both):
  dicom/  MIMIC-CXR v2.0.0 layout: files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.dcm, reports
          files/pXX/pNNNNNNNN/sNNNNNNNN.txt, cxr-record-list.csv.gz, cxr-study-list.csv.gz
  jpg/    MIMIC-CXR-JPG v2.0.0 layout: files/.../<dicom_id>.jpg (+ the same report .txt files),
          mimic-cxr-2.0.0-metadata/split/chexpert/negbio.csv.gz
masks/<dicom_id>.npz    one bool array per positive label (frontal images; empty for laterals)
phantom-truth.csv.gz    per image: the planted findings (JSON) and the 14 true labels (0/1)

Conventions: the patient's right is on the image left (radiological convention). DICOM pixel
data are 12-bit; applying the linear VOI window (WindowCenter/WindowWidth) and, for
MONOCHROME1, inversion gives the same picture as the JPG. The chexpert/negbio CSVs hold the
labels the report text expresses (1 / 0 negated / -1 uncertain / blank), from the IMPRESSION
(else FINDINGS, else the whole text); the negbio file equals the chexpert one. Fracture and
Pleural Other are never planted.
"""


def synthesize(
    out: str | os.PathLike,
    n: int = 2000,
    seed: int = 0,
    size: int = 256,
    layouts: Sequence[str] = LAYOUTS,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    workers: int = 1,
) -> SynthSummary:
    """Write ``n`` phantom studies under ``out`` (see the module docstring for the layout).

    The tree is built in a temporary sibling directory and renamed into place at the end. An
    existing ``out`` is replaced only if it is empty or an earlier phantom tree (has
    README.txt starting with the phantom banner); anything else raises ``FileExistsError``.
    """
    t_start = time.perf_counter()
    root = Path(out)
    layouts = tuple(dict.fromkeys(layouts))
    bad = [lay for lay in layouts if lay not in LAYOUTS]
    if bad or not layouts:
        raise ValueError(f"layouts must be a non-empty subset of {LAYOUTS}, got {layouts}")
    if n < 1:
        raise ValueError("n must be >= 1")
    if len(split_fractions) != 3 or min(split_fractions) < 0 or sum(split_fractions) <= 0:
        raise ValueError("split_fractions must be three non-negative numbers")
    if root.exists() and any(root.iterdir()):
        readme = root / "README.txt"
        if not (
            readme.is_file() and readme.read_text(errors="replace").startswith("SYNTHETIC PHANTOM")
        ):
            raise FileExistsError(
                f"{root} exists and is not a phantom tree; refusing to replace it"
            )

    plan = _plan(n, seed, split_fractions)
    with atomic_dir(root) as tmp:
        (tmp / "masks").mkdir()
        n_chunks = max(1, min(len(plan), workers * 4)) if workers > 1 else 1
        bounds = np.linspace(0, len(plan), n_chunks + 1).astype(int)
        tasks = [
            (plan[a:b], seed, size, layouts, str(tmp))
            for a, b in zip(bounds[:-1], bounds[1:])
            if b > a
        ]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as ex:
                results = list(ex.map(_study_task, tasks))
        else:
            results = [_study_task(t) for t in tasks]
        rows: dict[str, list] = {}
        for r in results:
            for k, v in r.items():
                rows.setdefault(k, []).extend(v)

        key = ["subject_id", "study_id", "dicom_id"]
        record = pd.DataFrame(rows["record"], columns=[*key, "path"]).sort_values(key)
        study = pd.DataFrame(rows["study"], columns=["subject_id", "study_id", "path"])
        study = study.sort_values(["subject_id", "study_id"])
        meta = pd.DataFrame(rows["meta"], columns=METADATA_COLUMNS).sort_values(
            ["subject_id", "study_id", "dicom_id"]
        )
        split = pd.DataFrame(rows["split"], columns=["dicom_id", "study_id", "subject_id", "split"])
        split = split.sort_values(["subject_id", "study_id", "dicom_id"])
        chex = pd.DataFrame(rows["chex"], columns=["subject_id", "study_id", *CHEXPERT_LABELS])
        chex = chex.sort_values(["subject_id", "study_id"])
        chex[list(CHEXPERT_LABELS)] = chex[list(CHEXPERT_LABELS)].astype("float64")
        truth = pd.DataFrame(rows["truth"]).sort_values(["subject_id", "study_id", "dicom_id"])

        paths: dict[str, Path] = {}
        if "dicom" in layouts:
            _write_csv_gz(tmp / "dicom" / "cxr-record-list.csv.gz", record)
            _write_csv_gz(tmp / "dicom" / "cxr-study-list.csv.gz", study)
            paths["dicom"] = root / "dicom"
        if "jpg" in layouts:
            j = tmp / "jpg"
            _write_csv_gz(j / "mimic-cxr-2.0.0-metadata.csv.gz", meta)
            _write_csv_gz(j / "mimic-cxr-2.0.0-split.csv.gz", split)
            _write_csv_gz(j / "mimic-cxr-2.0.0-chexpert.csv.gz", chex)
            _write_csv_gz(j / "mimic-cxr-2.0.0-negbio.csv.gz", chex)
            paths["jpg"] = root / "jpg"
        _write_csv_gz(tmp / "phantom-truth.csv.gz", truth)
        with atomic_write(tmp / "README.txt", "w", encoding="ascii", newline="\n") as fh:
            fh.write(
                README.format(
                    version=GENERATOR_VERSION,
                    seed=seed,
                    n=n,
                    size=size,
                    layouts=",".join(layouts),
                    fractions=",".join(f"{f:g}" for f in split_fractions),
                )
            )
    paths |= {
        "masks": root / "masks",
        "truth": root / "phantom-truth.csv.gz",
        "readme": root / "README.txt",
    }
    frontal = truth[truth["image_kind"] == "frontal"]
    prevalence = {k: float(frontal[k].mean()) for k in CHEXPERT_LABELS}
    return SynthSummary(
        root=root,
        layouts=layouts,
        n_studies=len(plan),
        n_images=len(truth),
        n_patients=int(record["subject_id"].nunique()),
        n_frontal=int((truth["image_kind"] != "lateral").sum()),
        n_lateral=int((truth["image_kind"] == "lateral").sum()),
        split_studies={sp: sum(st.split == sp for st in plan) for sp in SPLITS},
        prevalence=prevalence,
        seconds=time.perf_counter() - t_start,
        render_seconds=sum(rows["t_render"]),
        write_seconds=sum(rows["t_write"]),
        paths=paths,
    )


__all__ = [
    "GENERATOR_VERSION",
    "PhantomCase",
    "SynthSummary",
    "generate_case",
    "save_npz_deterministic",
    "synthesize",
]
