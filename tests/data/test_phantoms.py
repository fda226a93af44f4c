"""Synthetic MIMIC-shaped phantoms: images, masks, reports and the on-disk layouts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from radalign.data.sections import flip_laterality
from radalign.data.synth import GENERATOR_VERSION, generate_case, synthesize
from radalign.data.synth_anatomy import (
    CHEXPERT_LABELS,
    DISEASES,
    Finding,
    sample_anatomy,
    sample_findings,
    truth_labels,
)
from radalign.data.synth_reports import write_report

LUNG_FINDINGS = {
    "Pleural Effusion",
    "Consolidation",
    "Lung Opacity",
    "Pneumothorax",
    "Edema",
    "Atelectasis",
    "Lung Lesion",
    "Pneumonia",
}

# finding -> regex a report uses to mention it (our own table, independent of the generator)
KEYWORDS = {
    "Pleural Effusion": r"effusion",
    "Pneumothorax": r"pneumothora",
    "Consolidation": r"consolidat",
    "Lung Opacity": r"opacit|consolidat",
    "Edema": r"edema",
    "Atelectasis": r"atelecta",
    "Lung Lesion": r"nodule|\bmass\b",
    "Cardiomegaly": r"cardiomegaly|enlarged (cardiac|heart)"
    r"|(heart|silhouette|heart size) (is|may be) (\w+ )?enlarged",
    "Support Devices": r"\btube\b|catheter|central line|pacemaker",
    "Pneumonia": r"pneumonia",
}
EXCLUSIVE = {"Pleural Effusion", "Pneumothorax", "Consolidation", "Atelectasis", "Lung Lesion"}
NEGATION = re.compile(r"\bno\b|\bwithout\b|\bnot\b", re.I)
ZONE_WORDS = {
    "upper": r"upper|apex|apical",
    "middle": r"\bmid\b|middle|lingula",
    "lower": r"lower|base|basilar",
}
SIDE_WORD = {
    "left": r"\bleft\b",
    "right": r"\bright\b",
    "bilateral": r"bilateral|\bboth\b|bibasilar",
}
OPPOSITE = {"left": r"\bright\b", "right": r"\bleft\b"}


def _sentences(sections: dict[str, str]) -> list[str]:
    text = " ".join(sections.get(k, "") for k in ("findings", "impression", "body"))
    return [s.strip() for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


# ----------------------------------------------------------------------------------------------
# in-memory cases


def test_generate_case_is_deterministic_by_seed() -> None:
    a, b, c = generate_case(7, 128), generate_case(7, 128), generate_case(8, 128)
    assert np.array_equal(a.image, b.image)
    assert a.report == b.report and a.findings == b.findings
    assert a.masks.keys() == b.masks.keys()
    assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert not np.array_equal(a.image, c.image)
    g = generate_case(np.random.default_rng([0, 5]), 64)
    assert np.array_equal(g.image, generate_case([0, 5], 64).image)


@pytest.mark.parametrize("size", [96, 256])
def test_shapes_dtypes_range(size: int) -> None:
    for seed in range(3):
        c = generate_case(seed, size)
        assert c.image.shape == (size, size) and c.image.dtype == np.float32
        assert c.image.min() >= 0.0 and c.image.max() <= 1.0 and c.image.std() > 0.05
        assert c.view in ("PA", "AP")
        for m in list(c.masks.values()) + list(c.anatomy.values()):
            assert m.shape == (size, size) and m.dtype == bool
        assert set(c.labels) == set(CHEXPERT_LABELS)


def test_masks_nonempty_and_inside_anatomy() -> None:
    for seed in range(40):
        c = generate_case([11, seed], 128)
        positive = {k for k, v in c.labels.items() if v and k != "No Finding"}
        assert positive <= set(c.masks), (seed, positive, set(c.masks))
        for name, m in c.masks.items():
            assert m.any(), (seed, name)
            if name in LUNG_FINDINGS:
                assert not (m & ~c.anatomy["lungs"]).any(), (seed, name)
            elif name in ("Cardiomegaly", "Enlarged Cardiomediastinum"):
                assert (m & c.anatomy["body"]).sum() >= 0.95 * m.sum(), (seed, name)


def test_normal_case_has_no_disease_mask() -> None:
    c = generate_case(3, 96, normal=True)
    assert c.labels["No Finding"] == 1
    assert not (set(c.masks) & set(DISEASES))


@pytest.mark.parametrize(
    "name",
    [
        "Pleural Effusion",
        "Consolidation",
        "Lung Opacity",
        "Pneumothorax",
        "Atelectasis",
        "Lung Lesion",
    ],
)
@pytest.mark.parametrize("side", ["left", "right"])
def test_laterality_follows_radiological_convention(name: str, side: str) -> None:
    size = 128
    for seed in range(3):
        zone = (
            "lower"
            if name in ("Pleural Effusion", "Atelectasis")
            else "upper"
            if name == "Pneumothorax"
            else "middle"
        )
        f = Finding(
            name,
            laterality=side,
            zone=zone,
            size="moderate" if name != "Lung Lesion" else "nodule",
            size_cm=2.0 if name == "Lung Lesion" else None,
            kind="nodule" if name == "Lung Lesion" else None,
        )
        c = generate_case([21, seed], size, findings=[f])
        m = c.masks[name]
        right_half = m[:, size // 2 :].sum() / m.sum()
        # the patient's left is on the image right
        assert (right_half > 0.95) if side == "left" else (right_half < 0.05), (seed, right_half)
        assert re.search(SIDE_WORD[side], c.report, re.I)


def test_ap_heart_is_wider_than_pa() -> None:
    def width(view: str) -> float:
        ws = []
        for seed in range(15):
            c = generate_case([31, seed], 128, view=view, normal=True)
            cols = np.flatnonzero(c.anatomy["heart"].any(axis=0))
            ws.append(cols[-1] - cols[0])
        return float(np.mean(ws))

    assert width("AP") > 1.08 * width("PA")


def test_cardiomegaly_ctr() -> None:
    c = generate_case(4, 128, view="PA", findings=["Cardiomegaly"])
    assert c.ctr > 0.55 and c.masks["Cardiomegaly"].any()
    assert generate_case(4, 128, view="PA", normal=True).ctr < 0.5


def test_prevalences_in_range() -> None:
    labels = []
    for i in range(300):
        rng = np.random.default_rng([0, i])
        anat = sample_anatomy(rng)
        labels.append(truth_labels(sample_findings(rng, anat.view)))
    df = pd.DataFrame(labels)
    for name in (*DISEASES, "Support Devices"):
        assert 0.08 <= df[name].mean() <= 0.32, (name, df[name].mean())
    assert 0.22 <= df["No Finding"].mean() <= 0.38


# ----------------------------------------------------------------------------------------------
# reports


def _check_report(findings: list[Finding], sections: dict[str, str], report_labels: dict) -> None:
    sents = _sentences(sections)
    truth = truth_labels(findings)
    for f in findings:
        kw = KEYWORDS[f.name]
        hits = [s for s in sents if re.search(kw, s, re.I)]
        assert hits, (f.name, sents)
        if f.laterality and f.name != "Edema":  # edema is bilateral by nature
            side = SIDE_WORD[f.laterality]
            assert any(re.search(side, s, re.I) for s in hits), (f, hits)
            if f.laterality in OPPOSITE and f.name in EXCLUSIVE:
                for s in hits:
                    if not NEGATION.search(s):
                        assert not re.search(OPPOSITE[f.laterality], s, re.I), (f, s)
        if f.zone and f.name in ("Consolidation", "Lung Opacity", "Lung Lesion", "Atelectasis"):
            assert any(re.search(ZONE_WORDS[f.zone], s, re.I) for s in hits), (f, hits)
        if f.name in DISEASES:
            assert report_labels[f.name] in (1.0, -1.0), (f.name, report_labels)
    for name, kw in KEYWORDS.items():
        if truth[name]:
            continue
        for s in sents:
            if re.search(kw, s, re.I):
                assert NEGATION.search(s), (name, s)
        assert report_labels[name] in (0.0, None), (name, report_labels[name])


def test_reports_match_planted_truth() -> None:
    styles = set()
    for i in range(400):
        rng = np.random.default_rng([41, i])
        view = "AP" if i % 3 == 0 else "PA"
        findings = sample_findings(rng, view)
        rep = write_report(findings, view, rng, has_prior=bool(i % 2))
        styles.add(rep.style)
        _check_report(findings, rep.sections, rep.labels)
        if rep.style != "no_headers":
            assert rep.text.lstrip().startswith("FINAL REPORT")
            assert "EXAMINATION:  CHEST (" in rep.text
            assert re.search(r"INDICATION:  ___(-year-old (man|woman)|[FM]) with ", rep.text)
            assert max(len(line) for line in rep.text.splitlines()) <= 80
        if "impression" in rep.sections:
            assert "IMPRESSION:" in rep.text
        if not [f for f in findings if f.name in DISEASES] and "impression" in rep.sections:
            assert re.search(r"no acute", rep.sections["impression"], re.I)
    assert styles == {"full", "findings_only", "impression_only", "no_headers"}


def test_generated_case_report_matches_image_truth() -> None:
    for i in range(20):
        c = generate_case([43, i], 64)
        _check_report(c.findings, c.sections, c.report_labels)


def test_flip_laterality() -> None:
    assert flip_laterality("Left effusion; RIGHT apex, left-sided line. Bright.") == (
        "Right effusion; LEFT apex, right-sided line. Bright."
    )
    c = generate_case(5, 64, findings=[Finding("Pleural Effusion", "left", "lower", "small")])
    flipped = flip_laterality(c.report)
    assert "small right pleural effusion" in flipped.lower() or "right-sided" in flipped.lower()
    assert flip_laterality(flipped) == c.report


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["left", "Left", "LEFT", "right", "Right", "RIGHT", "leftward", " ", "-", "x", "é", "."]
        )
    ).map("".join)
)
def test_flip_laterality_round_trips(text: str) -> None:
    assert flip_laterality(flip_laterality(text)) == text


# ----------------------------------------------------------------------------------------------
# on disk

DCM_RE = re.compile(r"^files/p(1\d)/p(1\d)\d{6}/s5\d{7}/[0-9a-f]{8}(-[0-9a-f]{8}){4}\.dcm$")
JPG_RE = re.compile(r"^files/p(1\d)/p(1\d)\d{6}/s5\d{7}/[0-9a-f]{8}(-[0-9a-f]{8}){4}\.jpg$")
TXT_RE = re.compile(r"^files/p(1\d)/p(1\d)\d{6}/s5\d{7}\.txt$")


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms") / "root"
    s = synthesize(root, n=40, seed=1, size=128)
    assert s.n_studies == 40 and s.n_images >= 40 and s.n_lateral >= 1
    return root


def _csv(path: Path) -> pd.DataFrame:
    with gzip.open(path, "rb") as fh:
        return pd.read_csv(io.BytesIO(fh.read()), dtype={"dicom_id": str})


def test_layout_paths_and_csvs(tree: Path) -> None:
    d, j = tree / "dicom", tree / "jpg"
    dcm = [str(p.relative_to(d)) for p in d.rglob("*.dcm")]
    jpg = [str(p.relative_to(j)) for p in j.rglob("*.jpg")]
    txt = [str(p.relative_to(d)) for p in d.rglob("*.txt")]
    assert dcm and all(m := DCM_RE.match(p) for p in dcm)
    assert all(JPG_RE.match(p) for p in jpg) and all(TXT_RE.match(p) for p in txt)
    for p in dcm:
        m = DCM_RE.match(p)
        assert m.group(1) == m.group(2)  # p{pid[:2]}
    assert sorted(p[:-4] for p in dcm) == sorted(p[:-4] for p in jpg)
    assert len(txt) == 40 and all((j / p).read_bytes() == (d / p).read_bytes() for p in txt)

    rec = _csv(d / "cxr-record-list.csv.gz")
    assert list(rec.columns) == ["subject_id", "study_id", "dicom_id", "path"]
    assert sorted(rec["path"]) == sorted(dcm)
    stl = _csv(d / "cxr-study-list.csv.gz")
    assert list(stl.columns) == ["subject_id", "study_id", "path"] and sorted(
        stl["path"]
    ) == sorted(txt)
    meta = _csv(j / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert list(meta.columns) == [
        "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
        "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
        "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning",
    ]  # fmt: skip
    assert set(meta["ViewPosition"]) >= {"PA", "AP"} and set(meta["ViewPosition"]) & {
        "LL",
        "LATERAL",
    }
    assert (meta["StudyDate"] // 10000 >= 2100).all()
    split = _csv(j / "mimic-cxr-2.0.0-split.csv.gz")
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert set(split["split"]) == {"train", "validate", "test"}
    assert split.groupby("subject_id")["split"].nunique().max() == 1  # patient-disjoint
    assert set(split["dicom_id"]) == set(rec["dicom_id"]) == set(meta["dicom_id"])
    for name in ("chexpert", "negbio"):
        lab = _csv(j / f"mimic-cxr-2.0.0-{name}.csv.gz")
        assert list(lab.columns) == ["subject_id", "study_id", *CHEXPERT_LABELS]
        vals = set(
            np.unique(
                lab[list(CHEXPERT_LABELS)].to_numpy(float)[
                    ~lab[list(CHEXPERT_LABELS)].isna().to_numpy()
                ]
            )
        )
        assert vals <= {1.0, 0.0, -1.0} and len(lab) == 40
    assert stl.groupby("subject_id").size().max() > 1  # some patients have several studies
    assert (
        "seed=1" in (tree / "README.txt").read_text()
        and GENERATOR_VERSION in (tree / "README.txt").read_text()
    )
    assert not [p for p in tree.parent.iterdir() if p.name != "root"]  # no tmp leftovers


def test_truth_and_masks(tree: Path) -> None:
    truth = _csv(tree / "phantom-truth.csv.gz")
    assert {
        "dicom_id",
        "study_id",
        "subject_id",
        "view",
        "split",
        "findings",
        *CHEXPERT_LABELS,
    } <= set(truth.columns)
    assert set(truth[list(CHEXPERT_LABELS)].to_numpy().ravel()) <= {0, 1}
    for row in truth.to_dict("records"):
        findings = json.loads(row["findings"])
        assert all({"name", "laterality", "zone"} <= set(f) for f in findings)
        with np.load(tree / "masks" / f"{row['dicom_id']}.npz") as z:
            if row["image_kind"] == "lateral":
                assert not z.files
                continue
            positive = {k for k in CHEXPERT_LABELS if row[k] == 1 and k != "No Finding"}
            assert set(z.files) == positive, (row["dicom_id"], z.files, positive)
            for k in z.files:
                assert z[k].dtype == bool and z[k].any()
    lab = truth.set_index("dicom_id")
    for row in truth.itertuples(index=False):
        names = {f["name"] for f in json.loads(row.findings)}
        assert lab.loc[row.dicom_id, "No Finding"] == int(not (names & set(DISEASES)))


def _decode_dicom(path: Path) -> tuple[np.ndarray, str]:
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    lo = float(ds.WindowCenter) - float(ds.WindowWidth) / 2
    out = np.clip((arr - lo) / float(ds.WindowWidth), 0, 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 1.0 - out
    assert (
        ds.BitsAllocated == 16
        and ds.BitsStored == 12
        and ds.HighBit == 11
        and ds.PixelRepresentation == 0
    )
    assert ds.Modality in ("CR", "DX") and str(ds.StudyDate) >= "21000101"
    assert ds.PatientName == f"Phantom^P{ds.PatientID}" and ds.ViewPosition in (
        "PA",
        "AP",
        "LL",
        "LATERAL",
    )
    return out, ds.PhotometricInterpretation


def test_dicom_decodes_like_jpg_including_monochrome1(tree: Path) -> None:
    seen = set()
    for dcm in sorted((tree / "dicom").rglob("*.dcm")):
        img, photometric = _decode_dicom(dcm)
        seen.add(photometric)
        jpg_path = tree / "jpg" / dcm.relative_to(tree / "dicom").with_suffix(".jpg")
        jpg = cv2.imread(str(jpg_path), cv2.IMREAD_UNCHANGED).astype(np.float64) / 255.0
        assert jpg.shape == img.shape
        diff = np.abs(jpg - img)
        assert diff.mean() < 0.01 and np.percentile(diff, 99.9) < 0.08, (dcm, diff.mean())
    assert seen == {"MONOCHROME1", "MONOCHROME2"}


def test_synthesize_is_byte_deterministic(tree: Path, tmp_path: Path) -> None:
    again = synthesize(tmp_path / "again", n=40, seed=1, size=128, workers=2).root
    assert _tree_digest(again) == _tree_digest(tree)
    other = synthesize(tmp_path / "other", n=40, seed=2, size=128, layouts=["jpg"]).root
    assert (
        not (other / "dicom").exists()
        and (other / "jpg" / "mimic-cxr-2.0.0-split.csv.gz").is_file()
    )
    a = _csv(tree / "jpg" / "mimic-cxr-2.0.0-split.csv.gz")
    b = _csv(other / "jpg" / "mimic-cxr-2.0.0-split.csv.gz")
    assert set(a["dicom_id"]).isdisjoint(b["dicom_id"])


def test_refuses_to_replace_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        synthesize(tmp_path / "data", n=2, size=64)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
    root = synthesize(tmp_path / "ph", n=3, size=64, layouts=["dicom"]).root
    synthesize(root, n=3, size=64, layouts=["dicom"], seed=9)  # an old phantom tree is replaced
    assert "seed=9" in (root / "README.txt").read_text()
