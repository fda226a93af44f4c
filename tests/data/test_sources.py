"""Pair sources: hand-made MIMIC-CXR trees (DICOM and JPG), IU X-ray XML, manifests, splits."""

from __future__ import annotations

import gzip
import io
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from radalign.data.records import PairSet, normalize_split, normalize_view
from radalign.data.sources import detect_layout, label_sentence, open_source
from radalign.data.splits import assign_splits, split_key, split_of
from radalign.encoders.errors import InputError

# --------------------------------------------------------------------------- a MIMIC-CXR tree

STANDARD = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
ONLY_IMPRESSION = """                                 FINAL REPORT
 HISTORY:  ___-year-old man with chest pain.

 IMPRESSION:  Stable mild cardiomegaly.
"""
NO_HEADERS = """                                 FINAL REPORT
 Portable AP chest radiograph.  Low lung volumes.  No pneumothorax.
"""
ADMIN_ONLY = """                                 FINAL REPORT
 INDICATION:  ___ with fever.

 COMPARISON:  ___.
"""


def _did(n: int) -> str:
    """A dicom_id shaped like MIMIC's (five dash-separated hex groups)."""
    h = f"{n:08x}" * 5
    return "-".join([h[0:8], h[8:16], h[16:24], h[24:32], h[32:40]])


# (subject, study, dicom_id, view, split, report text or None for no .txt, image on disk)
IMAGES = [
    ("10000032", "50414267", _did(1), "PA", "train", STANDARD, True),
    ("10000032", "50414267", _did(2), "LATERAL", "train", STANDARD, True),
    ("10000032", "50414267", _did(10), "", "train", STANDARD, True),  # no ViewPosition
    ("10000032", "53189527", _did(3), "AP", "train", ONLY_IMPRESSION, True),
    ("10000032", "53189527", _did(4), "PA", "train", ONLY_IMPRESSION, True),
    ("10000764", "57375967", _did(5), "AP", "validate", STANDARD, False),  # file missing
    ("10000764", "50000001", _did(6), "PA", "validate", "  \n \n", True),  # empty report
    ("11000011", "50000002", _did(7), "PA", "test", ADMIN_ONLY, True),  # no usable section
    ("11000011", "50000003", _did(8), "PA", "test", None, True),  # no report file
    ("12000022", "50000004", _did(9), "AP", "train", NO_HEADERS, True),
]
DUPLICATE = _did(9)  # listed twice in the CSVs
LABELS = {  # study -> a few CheXpert columns (blank = not mentioned)
    "50414267": {"No Finding": 1.0},
    "53189527": {"Cardiomegaly": 1.0, "Edema": -1.0, "No Finding": None},
    "50000004": {"Pneumothorax": 0.0},
}
CHEXPERT_COLS = ["Atelectasis", "Cardiomegaly", "Edema", "No Finding", "Pneumothorax"]


def _rel(subject: str, study: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}"


def _write_dicom(path: Path, view: str, dicom_id: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[dicom_id])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if view:
        ds.ViewPosition = view
    ds.Rows, ds.Columns = 8, 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64, dtype="<u2") * 60).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _write_jpg(path: Path) -> None:
    from PIL import Image

    Image.fromarray((np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)).save(path, "JPEG")


def _csv_gz(path: Path, df: pd.DataFrame) -> None:
    path.write_bytes(gzip.compress(df.to_csv(index=False).encode(), mtime=0))


def _reports(root: Path) -> None:
    for subject, study, *_, text, _ in IMAGES:
        if text is not None:
            p = root / f"{_rel(subject, study)}.txt"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)


@pytest.fixture(scope="module")
def mimic(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("mimic")
    dicom, jpg = base / "mimic-cxr" / "2.0.0", base / "mimic-cxr-jpg" / "2.0.0"
    for subject, study, did, view, _, _, on_disk in IMAGES:
        for root, suffix in ((dicom, ".dcm"), (jpg, ".jpg")):
            d = root / _rel(subject, study)
            d.mkdir(parents=True, exist_ok=True)
            if on_disk:
                _write_dicom(d / f"{did}{suffix}", view, did) if suffix == ".dcm" else _write_jpg(
                    d / f"{did}{suffix}"
                )
    _reports(dicom)  # the DICOM release holds the reports; the JPG tree does not
    rows = IMAGES + [r for r in IMAGES if r[2] == DUPLICATE]
    record = pd.DataFrame(
        [(s, st, d, f"{_rel(s, st)}/{d}.dcm") for s, st, d, *_ in rows],
        columns=["subject_id", "study_id", "dicom_id", "path"],
    )
    _csv_gz(dicom / "cxr-record-list.csv.gz", record)
    studies = sorted({(s, st) for s, st, *_ in IMAGES})
    _csv_gz(
        dicom / "cxr-study-list.csv.gz",
        pd.DataFrame(
            [(s, st, f"{_rel(s, st)}.txt") for s, st in studies],
            columns=["subject_id", "study_id", "path"],
        ),
    )
    meta = pd.DataFrame(
        [
            (d, s, st, "CHEST (PA AND LAT)", v, 8, 8, 21800506, 213014.531)
            for s, st, d, v, *_ in rows
        ],
        columns=[
            "dicom_id",
            "subject_id",
            "study_id",
            "PerformedProcedureStepDescription",
            "ViewPosition",
            "Rows",
            "Columns",
            "StudyDate",
            "StudyTime",
        ],
    )
    meta.loc[meta["ViewPosition"] == "", "ViewPosition"] = None
    _csv_gz(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", meta)
    split = pd.DataFrame(
        [(d, st, s, sp) for s, st, d, _, sp, *_ in rows],
        columns=["dicom_id", "study_id", "subject_id", "split"],
    )
    _csv_gz(jpg / "mimic-cxr-2.0.0-split.csv.gz", split)
    chex = pd.DataFrame(
        [
            {"subject_id": s, "study_id": st}
            | {c: LABELS.get(st, {}).get(c) for c in CHEXPERT_COLS}
            for s, st in studies
        ]
    )
    _csv_gz(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", chex)
    neg = chex.copy()
    neg["Atelectasis"] = 1.0
    _csv_gz(jpg / "mimic-cxr-2.0.0-negbio.csv.gz", neg)
    # the reports as the DICOM release's zip, and a JPG tree that carries its own .txt files
    zpath = base / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for txt in sorted(dicom.rglob("*.txt")):
            zf.write(txt, txt.relative_to(dicom).as_posix())
    return {"dicom": dicom, "jpg": jpg, "zip": zpath, "base": base}


def _by_id(ps: PairSet) -> dict:
    return {r.id: r for r in ps.records}


GOOD = {_did(1), _did(3), _did(4), _did(9)}
BAD = {
    "duplicate id": 1,
    "missing image": 1,
    "empty report": 1,
    "no usable section": 1,
    "missing report": 1,
}


def test_layouts_are_detected(mimic, tmp_path):
    assert detect_layout(mimic["dicom"]) == "mimic-dicom"
    assert detect_layout(mimic["jpg"]) == "mimic-jpg"


def test_mimic_jpg_reports_bad_input_by_reason(mimic):
    ps = open_source(mimic["jpg"], reports_root=mimic["dicom"])
    assert ps.layout == "mimic-jpg"
    assert set(_by_id(ps)) == GOOD
    assert dict(ps.skipped.counts()) == BAD
    assert ps.filtered["view"] == 2  # the lateral and the one without ViewPosition
    r = _by_id(ps)[_did(1)]
    assert r.image_path == mimic["jpg"] / _rel("10000032", "50414267") / f"{_did(1)}.jpg"
    assert r.report == (
        "There is no focal consolidation, pleural effusion or pneumothorax. The "
        "cardiomediastinal silhouette is normal. No acute cardiopulmonary process."
    )
    assert (r.patient_id, r.study_id, r.view, r.split) == ("10000032", "50414267", "PA", "train")
    assert r.study_date == "21800506" and r.source == "mimic-jpg"
    assert r.labels == {"No Finding": 1.0}
    assert set(r.sections) >= {"FINDINGS", "IMPRESSION", "INDICATION"}
    assert _by_id(ps)[_did(3)].labels == {"Cardiomegaly": 1.0, "Edema": -1.0}
    assert (
        _by_id(ps)[_did(9)].report
        == "Portable AP chest radiograph. Low lung volumes. No pneumothorax."
    )
    # the skip log names the files
    where = {reason: path for path, reason, _ in ps.skipped.rows}
    assert where["missing image"].endswith(f"{_did(5)}.jpg")
    assert where["missing report"].endswith("s50000003.txt")
    assert where["no usable section"].endswith("s50000002.txt")


def test_mimic_dicom_and_jpg_give_the_same_records(mimic):
    jpg = open_source(mimic["jpg"], reports_root=mimic["dicom"])
    dcm = open_source(
        mimic["dicom"],
        split_file=mimic["jpg"] / "mimic-cxr-2.0.0-split.csv.gz",
        labels_file=mimic["jpg"] / "mimic-cxr-2.0.0-chexpert.csv.gz",
    )
    assert dcm.layout == "mimic-dicom" and "DICOM headers" in dcm.description

    def key(ps):
        return {r.id: (r.report, r.split, r.view, r.patient_id, r.study_id, r.labels) for r in ps}

    assert key(dcm) == key(jpg)
    assert dict(dcm.skipped.counts()) == BAD
    assert all(str(r.image_path).endswith(".dcm") for r in dcm)
    # views from the metadata CSV instead of the headers: same answer
    via_meta = open_source(
        mimic["dicom"],
        metadata=mimic["jpg"] / "mimic-cxr-2.0.0-metadata.csv.gz",
        split_file=mimic["jpg"] / "mimic-cxr-2.0.0-split.csv.gz",
    )
    assert {r.id: r.view for r in via_meta} == {r.id: r.view for r in jpg}


def test_mimic_dicom_without_record_list_walks_the_tree(mimic, tmp_path):
    root = tmp_path / "dicom"
    for src in mimic["dicom"].rglob("*"):
        if src.is_file() and not src.name.endswith(".csv.gz"):
            dst = root / src.relative_to(mimic["dicom"])
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    (root / _rel("12000022", "50000004") / "garbage.dcm").write_bytes(b"not a dicom file")
    assert detect_layout(root) == "mimic-dicom"
    ps = open_source(root, views=None)
    # walking finds no duplicate and no listed-but-missing file; headers are read, not pixels
    assert dict(ps.skipped.counts()) == {
        "unreadable DICOM header": 1,
        "empty report": 1,
        "no usable section": 1,
        "missing report": 1,
    }
    assert {r.id: r.view for r in ps}[_did(2)] == "LATERAL"
    assert {r.id: r.view for r in ps}[_did(10)] is None
    # no split file: patient-disjoint hash split
    by_patient: dict[str, set] = {}
    for r in ps:
        by_patient.setdefault(r.patient_id, set()).add(r.split)
        assert r.split == split_of(r.patient_id)
    assert all(len(s) == 1 for s in by_patient.values())


def test_mimic_options(mimic):
    jpg = mimic["jpg"]
    one = open_source(jpg, reports_root=mimic["dicom"], one_image_per_study=True)
    assert set(_by_id(one)) == GOOD - {_did(3)}  # PA preferred over AP in study 53189527
    assert one.filtered["one image per study"] == 1
    allv = open_source(jpg, reports_root=mimic["dicom"], views=None)
    assert {_did(2), _did(10)} <= set(_by_id(allv))
    lat = open_source(jpg, reports_root=mimic["dicom"], views=["lateral"])
    assert set(_by_id(lat)) == {_did(2)}
    unk = open_source(jpg, reports_root=mimic["dicom"], keep_unknown_view=True)
    assert _did(10) in _by_id(unk)
    train = open_source(jpg, reports_root=mimic["dicom"], split="train")
    assert set(_by_id(train)) == GOOD and train.filtered["split"] > 0
    test = open_source(jpg, reports_root=mimic["dicom"], split="test")
    assert len(test) == 0 and test.skipped.counts()["no usable section"] == 1
    assert train.split("train") == train.records and train.split("validate") == []
    imp = open_source(jpg, reports_root=mimic["dicom"], section="impression")
    assert _by_id(imp)[_did(1)].report == "No acute cardiopulmonary process."
    assert _did(9) not in _by_id(imp)  # no impression in a headerless report
    neg = open_source(jpg, reports_root=mimic["dicom"], labeler="negbio")
    assert _by_id(neg)[_did(1)].labels["Atelectasis"] == 1.0
    nolab = open_source(jpg, reports_root=mimic["dicom"], labeler=None)
    assert all(r.labels == {} for r in nolab)
    keep = open_source(jpg, reports_root=mimic["dicom"], require_report=False)
    assert {_did(6), _did(7)} <= set(_by_id(keep)) and _by_id(keep)[_did(6)].report == ""
    nocheck = open_source(jpg, reports_root=mimic["dicom"], check_files=False)
    assert _did(5) in _by_id(nocheck)
    with pytest.raises(TypeError):
        open_source(jpg, images_dir="x")
    with pytest.raises(ValueError):
        open_source(jpg, section="abstract")


def test_mimic_reports_from_zip_or_missing(mimic):
    ps = open_source(mimic["jpg"], reports_root=mimic["zip"])
    assert set(_by_id(ps)) == GOOD
    bare = open_source(mimic["jpg"])
    assert len(bare) == 0
    assert bare.skipped.counts()["missing report"] == 7  # 8 frontal, 1 file missing


def test_to_frame(mimic):
    ps = open_source(mimic["jpg"], reports_root=mimic["dicom"])
    df = ps.to_frame()
    assert len(df) == len(ps) and list(df["id"]) == [r.id for r in ps]
    assert {"image_path", "report", "split", "view", "labels"} <= set(df.columns)


# ------------------------------------------------------------------------------ IU X-ray

IU_TEMPLATE = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <pmcId id="{n}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{n}"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <articleDate>2013-08-01</articleDate>
   <articleType>XR</articleType>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">XXXX-year-old male, chest pain.</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
{mesh}
   </MeSH>
{images}
</eCitation>
"""


def _iu_xml(n, findings, impression, mesh, images):
    mesh_xml = "\n".join(f"      <{kind}>{term}</{kind}>" for kind, term in mesh)
    img_xml = "\n".join(
        f'   <parentImage id="{i}">\n      <figureId>F{k + 1}</figureId>\n'
        f"      <caption>Xray Chest PA and Lateral</caption>\n"
        f'      <panel type="single">\n'
        f"         <url>/hadoop/storage/radiology/extract/{i}.jpg</url>\n"
        f"      </panel>\n   </parentImage>"
        for k, i in enumerate(images)
    )
    return IU_TEMPLATE.format(
        n=n, findings=findings, impression=impression, mesh=mesh_xml, images=img_xml
    )


@pytest.fixture
def iu(tmp_path) -> Path:
    from PIL import Image

    root = tmp_path / "iu"
    (root / "ecgen-radiology").mkdir(parents=True)
    (root / "images").mkdir()
    docs = {
        1: (
            "The heart is normal in size. There are no XXXX of a pleural effusion.",
            "Normal chest x-XXXX.",
            [("major", "normal")],
            ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
        ),
        2: (
            "Borderline cardiomegaly. Lungs are clear.",
            "Borderline cardiomegaly.",
            [
                ("major", "Cardiomegaly/borderline"),
                ("major", "Pulmonary Artery/enlarged"),
                ("automatic", "cardiomegaly"),
            ],
            ["CXR2_1_IM-0652-1001", "CXR2_1_IM-0652-2001"],  # the second PNG is absent
        ),
        4: ("Clear lungs.", "No acute disease.", [("major", "normal")], []),  # no image
        5: ("", "", [("major", "normal")], ["CXR5_1_IM-2000-1001"]),  # no text
    }
    for n, (f, i, mesh, images) in docs.items():
        (root / "ecgen-radiology" / f"{n}.xml").write_text(_iu_xml(n, f, i, mesh, images))
    (root / "ecgen-radiology" / "3.xml").write_text("<eCitation><uId id='CXR3'/>")  # broken
    for name in (
        "CXR1_1_IM-0001-3001",
        "CXR1_1_IM-0001-4001",
        "CXR2_1_IM-0652-1001",
        "CXR5_1_IM-2000-1001",
    ):
        Image.new("L", (8, 8), 128).save(root / "images" / f"{name}.png")
    return root


def test_iu_xray(iu):
    assert detect_layout(iu) == "iu-xray"
    ps = open_source(iu)
    assert ps.layout == "iu-xray"
    recs = _by_id(ps)
    assert set(recs) == {"CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_1_IM-0652-1001"}
    r = recs["CXR1_1_IM-0001-3001"]
    assert r.report == (
        "The heart is normal in size. There are no of a pleural effusion. Normal chest x."
    )
    assert r.image_path == iu / "images" / "CXR1_1_IM-0001-3001.png"
    assert (r.patient_id, r.study_id, r.view, r.source) == ("CXR1", "CXR1", None, "iu-xray")
    assert r.labels == {"Normal": 1.0}
    assert r.sections["INDICATION"] == "year-old male, chest pain."
    assert recs["CXR2_1_IM-0652-1001"].labels == {"Cardiomegaly": 1.0, "Pulmonary Artery": 1.0}
    assert r.split == recs["CXR1_1_IM-0001-4001"].split == split_of("CXR1")
    assert dict(ps.skipped.counts()) == {
        "unreadable XML": 1,
        "missing image": 1,
        "no image": 1,
        "no usable section": 1,  # 5.xml: only COMPARISON and INDICATION
    }
    # without the images folder: a reports-only set
    reports_only = open_source(iu, images_dir=iu / "nowhere")
    assert all(r.image_path is None for r in reports_only)
    assert "CXR4" in _by_id(reports_only)  # a report with no image gets one record


# ----------------------------------------------------------------------------- manifests


@pytest.fixture
def manifest(tmp_path) -> Path:
    from PIL import Image

    (tmp_path / "images").mkdir()
    for name in ("a", "b", "c", "e", "f"):
        Image.new("L", (8, 8)).save(tmp_path / "images" / f"{name}.png")
    absolute = tmp_path / "images" / "f.png"
    df = pd.DataFrame(
        {
            "image_path": [
                "images/a.png",
                "images/b.png",
                "images/c.png",
                "images/d.png",  # missing
                "images/e.png",
                "images/a.png",  # duplicate
                str(absolute),
            ],
            "report": [
                "FINDINGS: Clear lungs.\nIMPRESSION: Normal.",
                "Right lower lobe opacity.",
                "",  # empty
                "Left effusion.",
                "COMPARISON: None.",  # no usable section
                "Again.",
                "Small effusion.",
            ],
            "patient_id": ["p1", "p1", "p2", "p3", "p4", "p1", ""],  # last: no patient id
            "study_id": ["s1", "s2", "s3", "s4", "s5", "s1", "s7"],
            "view": ["PA", "AP Supine", "PA", "PA", "AP", "PA", "L"],
            "split": ["train", "validate", "", "", "test", "train", ""],
            "labels": ["No Finding", "Pneumonia|Effusion", "", "", "", "", "Effusion"],
            "Pneumonia": ["0", "1", "", "", "", "", "-1"],
            "age": ["50", "60", "70", "80", "90", "50", "40"],
        }
    )
    path = tmp_path / "manifest.csv"
    df.to_csv(path, index=False)
    return path


def test_manifest_csv_and_parquet(manifest):
    ps = open_source(manifest)
    assert ps.layout == "manifest"
    recs = _by_id(ps)
    assert set(recs) == {"a", "b"}  # f is a lateral ("L")
    assert dict(ps.skipped.counts()) == {
        "duplicate id": 1,
        "missing image": 1,
        "empty report": 1,
        "no usable section": 1,
    }
    assert ps.filtered["view"] == 1
    assert recs["a"].report == "Clear lungs. Normal."
    assert recs["b"].view == "AP" and recs["b"].split == "val"
    assert recs["b"].labels == {"Pneumonia": 1.0, "Effusion": 1.0}
    assert recs["a"].labels == {"Pneumonia": 0.0, "No Finding": 1.0}  # age is not a label
    allv = _by_id(open_source(manifest, views=None))
    f = allv["f"]
    assert f.patient_id is None and f.view == "LATERAL" and f.labels["Pneumonia"] == -1.0
    assert f.image_path == manifest.parent / "images" / "f.png"
    assert f.split == split_of(split_key(None, "s7", "f"))
    # parquet: same records
    pq = manifest.with_suffix(".parquet")
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table["Pneumonia"] = pd.to_numeric(table["Pneumonia"]).astype("float64")
    table.to_parquet(pq)
    ps2 = open_source(pq, views=None)
    assert [(r.id, r.report, r.labels, r.split) for r in ps2] == [
        (r.id, r.report, r.labels, r.split) for r in open_source(manifest, views=None)
    ]
    # explicit label columns; folder holding manifest.csv
    cols = open_source(manifest.parent, label_columns=["age"])
    assert _by_id(cols)["a"].labels == {"age": 50.0, "No Finding": 1.0}


def test_label_only_manifest(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    names = ["x1", "x2", "x3", "x4"]
    for n in names:
        Image.new("L", (8, 8)).save(tmp_path / "images" / f"{n}.png")
    df = pd.DataFrame(
        {
            "image_path": [f"images/{n}.png" for n in names],
            "patient_id": ["1", "2", "3", "4"],
            "view": ["PA"] * 4,
            "report": [""] * 4,
            "labels": ["No Finding", "Pneumonia|Infiltration", "Inconclusive", ""],
        }
    )
    df.to_csv(tmp_path / "m.csv", index=False)
    off = open_source(tmp_path / "m.csv")
    assert off.layout == "labels-only" and len(off) == 0
    assert off.skipped.counts() == {"empty report": 4}
    on = open_source(tmp_path / "m.csv", label_text=True)
    recs = _by_id(on)
    assert set(recs) == {"x1", "x2"} and on.skipped.counts() == {"empty report": 2}
    assert "pneumonia, infiltration" in recs["x2"].report
    assert recs["x1"].report in {
        "No acute cardiopulmonary abnormality.",
        "No acute cardiopulmonary process.",
        "Normal chest radiograph.",
        "The heart and lungs are within normal limits.",
    }
    assert recs["x1"].source == "labels-only"
    assert open_source(tmp_path / "m.csv", label_text=True)[0].report == on[0].report
    assert label_sentence({"Edema": -1.0, "Pleural_Thickening": 1.0}, "k").endswith(
        "pleural thickening, possible edema."
    )
    assert label_sentence({"COVID-19": 1.0}, "k").count("COVID-19") == 1
    assert label_sentence({"Pneumonia": 0.0}, "k") is None


# ------------------------------------------------------------------------- shared data sets


@pytest.mark.shared
def test_shared_manifests_load(shared_data):
    expected = {  # rows, non-empty reports (shared/data/README.md)
        "covid_chestxray": (570, 459),
        "figure1_covid": (55, 34),
        "actualmed_covid": (54, 0),
        "nih_cxr14_subset": (1000, 0),
        "iu_xray_reports": (7574, 7531),
    }
    for name, (rows, with_report) in expected.items():
        path = shared_data / name / "manifest.csv"
        if not path.is_file():
            continue
        ps = open_source(path, views=None)
        assert len(ps) == with_report, name
        assert len(ps) + len(ps.skipped) == rows, name
        assert set(ps.skipped.counts()) <= {"empty report"}, name
        assert {r.split for r in ps} <= {"train", "val", "test"}
    iu = open_source(shared_data / "iu_xray_reports" / "manifest.csv", views=None)
    assert all(r.image_path is None for r in iu) and iu[0].patient_id == "CXR1"
    nih = open_source(shared_data / "nih_cxr14_subset" / "manifest.csv", label_text=True)
    assert len(nih) == 1000 and all(r.image_path.is_file() for r in nih[:20])
    assert nih.split_counts() == {"train": 791, "test": 118, "val": 91}
    pneu = [r for r in nih if r.labels.get("Pneumonia") == 1.0]
    assert len(pneu) == 500 and all("pneumonia" in r.report for r in pneu)
    covid = open_source(shared_data / "covid_chestxray" / "manifest.csv")
    assert {r.view for r in covid} == {"PA", "AP"}  # "AP Supine" -> AP, laterals filtered
    assert covid.filtered["view"] == 43


# --------------------------------------------------------------------- bad roots, splits


def test_unrecognised_layout_raises_at_once(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake" / "files" / "x").mkdir(parents=True)
    for bad in (tmp_path / "empty", tmp_path / "notes.txt", tmp_path / "fake"):
        t = time.perf_counter()
        with pytest.raises(InputError) as err:
            open_source(bad)
        assert err.value.reason == "unrecognised layout"
        assert "ecgen-radiology" in err.value.detail and ".csv" in err.value.detail
        assert time.perf_counter() - t < 1
    with pytest.raises(InputError) as err:
        open_source(tmp_path / "absent")
    assert err.value.reason == "file not found"
    for layout in ("mimic-jpg", "mimic-dicom", "iu-xray", "manifest"):
        with pytest.raises(InputError) as err:
            open_source(tmp_path / "empty", layout=layout)
        assert err.value.reason == "unrecognised layout"
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError) as err:
        open_source(tmp_path / "cols.csv")
    assert err.value.reason == "unrecognised layout"


def test_assign_splits_is_deterministic_and_order_free():
    ids = [f"p{i}" for i in range(3000)]
    a = assign_splits(ids)
    b = assign_splits(list(reversed(ids)) + [None, "", "p1"])
    assert a == b
    counts = pd.Series(a).value_counts(normalize=True)
    assert abs(counts["train"] - 0.8) < 0.03 and abs(counts["val"] - 0.1) < 0.03
    assert assign_splits(ids, seed=1) != a
    assert set(assign_splits(ids, fractions=(1, 0, 0)).values()) == {"train"}
    # growing the set never moves a patient
    assert {k: v for k, v in assign_splits(ids + ["new"]).items() if k != "new"} == a
    assert split_key(None, None, "img") == "id:img" and split_key("", "s1", "img") == "study:s1"
    with pytest.raises(ValueError):
        assign_splits(ids, fractions=(0.5, 0.5))


def test_normalisers():
    assert [normalize_split(s) for s in ("validate", "TRAIN", " test ", "", None, "x")] == [
        "val",
        "train",
        "test",
        None,
        None,
        None,
    ]
    assert [normalize_view(v) for v in ("pa", "AP Supine", "L", "ll", "AP  AXIAL", "", None)] == [
        "PA",
        "AP",
        "LATERAL",
        "LL",
        "AP AXIAL",
        None,
        None,
    ]


def test_many_rows_are_fast(tmp_path):
    """A 20k-row manifest without image checks loads in well under the time of a real set."""
    n = 20000
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "image_path": [f"images/{i}.png" for i in range(n)],
            "report": [
                f"FINDINGS: Opacity {i}.\nIMPRESSION: Pneumonia ___ {i % 7}." for i in range(n)
            ],
            "patient_id": rng.integers(0, 5000, n).astype(str),
            "view": rng.choice(["PA", "AP", "LATERAL"], n),
        }
    )
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    (tmp_path / "m.csv").write_text(buf.getvalue())
    t = time.perf_counter()
    ps = open_source(tmp_path / "m.csv", check_files=False)
    elapsed = time.perf_counter() - t
    assert 0 < len(ps) < n and not ps.skipped
    assert elapsed < 10, elapsed
    assert os.fspath(ps.root).endswith("m.csv")
