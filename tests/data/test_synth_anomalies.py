"""Planted anomalies: deterministic, truth ids as open_source gives them, rates, source untouched,
clear errors; scoring by the audit contract's rule."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from radalign.data.sources import open_source
from radalign.data.synth import synthesize
from radalign.data.synth_anomalies import (
    PLANT_TYPES,
    SUBTYPES,
    plant_anomalies,
    read_truth,
    recall_by_subtype,
    score_findings,
    uniform_rates,
)

N = 100
RATE = 0.06


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms") / "src"
    synthesize(root, n=N, seed=3, size=64)
    return root


@pytest.fixture(scope="module")
def planted(src, tmp_path_factory):
    before = _tree_hash(src)
    out = tmp_path_factory.mktemp("planted") / "out"
    summary = plant_anomalies(src, out, rates=uniform_rates(RATE), seed=5)
    return out, summary, before


#: every other subtype of each type, and the rest: together they plant every subtype
HALVES = [[s for subs in SUBTYPES.values() for s in list(subs)[k::2]] for k in (0, 1)]


@pytest.fixture(scope="module", params=[0, 1], ids=["half0", "half1"])
def half(src, tmp_path_factory, request):
    out = tmp_path_factory.mktemp(f"half{request.param}") / "out"
    summary = plant_anomalies(
        src, out, rates=uniform_rates(0.07, drift=0.1), seed=7, subtypes=HALVES[request.param]
    )
    return out, summary, None


def test_every_subtype_is_planted_in_every_layout_it_fits(src, tmp_path_factory):
    seen: dict[str, set[str]] = {}
    for k in (0, 1):
        out = tmp_path_factory.mktemp(f"cover{k}") / "out"
        plant_anomalies(src, out, rates=uniform_rates(0.07, drift=0.1), seed=7, subtypes=HALVES[k])
        for lay in ("dicom", "jpg", "manifest"):
            seen.setdefault(lay, set()).update(read_truth(out / lay / "truth.csv")["subtype"])
    for subs in SUBTYPES.values():
        for sub, (_, lays) in subs.items():
            for lay in ("dicom", "jpg", "manifest"):
                assert (sub in seen[lay]) == (lay in lays), (lay, sub)


def _open_ids(root: Path) -> set[str]:
    ps = open_source(
        root, views=None, check_files=False, require_report=False, keep_unknown_view=True
    )
    ids = {r.id for r in ps.records}
    ids |= {d.removeprefix("id ") for _, _, d in ps.skipped.rows if d.startswith("id ")}
    return ids


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(
        out / "manifest" / "manifest.csv",
        dtype=str,
        keep_default_na=False,
        encoding_errors="replace",
    )


def test_source_untouched(src, planted):
    _, _, before = planted
    assert _tree_hash(src) == before


def test_truth_ids_are_open_source_record_ids(planted):
    _check_truth_ids(planted[0])


def test_truth_ids_are_open_source_record_ids_all_subtypes(half):
    _check_truth_ids(half[0])


def _check_truth_ids(out: Path) -> None:
    layouts = {"dicom": "mimic-dicom", "jpg": "mimic-jpg", "manifest": "manifest"}
    for lay, name in layouts.items():
        assert open_source(out / lay, views=None, check_files=False).layout == name
        truth = read_truth(out / lay / "truth.csv")
        assert list(truth.columns) == ["type", "subtype", "ids"]
        planted_ids = {i for ids in truth["ids"] for i in ids.split("|")}
        assert planted_ids <= _open_ids(out / lay), lay
        assert set(truth["type"]) <= set(PLANT_TYPES)
        for typ, sub in zip(truth["type"], truth["subtype"]):
            assert typ == "drift" or sub in SUBTYPES[typ]


def test_each_type_at_its_rate_and_one_anomaly_per_record(planted):
    out, summary, _ = planted
    want = round(RATE * N)
    for lay in summary.layouts:
        truth = read_truth(out / lay / "truth.csv")
        for typ in PLANT_TYPES[:-1]:
            got = summary.studies_affected[lay][typ]
            assert want <= got <= want + 4, (lay, typ, got)
            assert (truth["type"] == typ).sum() >= 1
        # records in two different planted anomalies: none
        seen: dict[str, int] = {}
        for k, ids in enumerate(truth["ids"]):
            for i in ids.split("|"):
                assert seen.setdefault(i, k) == k, (lay, i)
        assert summary.drift["n_studies"] == pytest.approx(0.2 * N, abs=1)


def test_deterministic_and_seed_dependent(src, planted, tmp_path):
    out, _, _ = planted
    again = plant_anomalies(src, tmp_path / "again", rates=uniform_rates(RATE), seed=5)
    for lay in again.layouts:
        assert (tmp_path / "again" / lay / "truth.csv").read_bytes() == (
            out / lay / "truth.csv"
        ).read_bytes()
    assert _tree_hash(tmp_path / "again") == _tree_hash(out)
    plant_anomalies(
        src, tmp_path / "other", rates=uniform_rates(RATE), seed=6, layouts=("manifest",)
    )
    assert (tmp_path / "other" / "manifest" / "truth.csv").read_bytes() != (
        out / "manifest" / "truth.csv"
    ).read_bytes()


def _ids_of(out: Path, lay: str, subtype: str) -> list[list[str]]:
    truth = read_truth(out / lay / "truth.csv")
    return [ids.split("|") for ids in truth.loc[truth["subtype"] == subtype, "ids"]]


def test_planted_values_in_the_manifest(half):
    out, _, _ = half
    m = _manifest(out).set_index("id")
    for ids in _ids_of(out, "manifest", "age_out_of_range"):
        assert m.loc[ids[0], "age"] in ("150", "-3")
    ages = pd.to_numeric(m["age"])
    planted_age = {i for ids in _ids_of(out, "manifest", "age_out_of_range") for i in ids}
    assert ages.drop(index=list(planted_age)).between(18, 110).all()
    for ids in _ids_of(out, "manifest", "unknown_sex"):
        assert m.loc[ids[0], "sex"] == "Q"
    for ids in _ids_of(out, "manifest", "out_of_order"):
        rows = m.loc[ids].drop_duplicates("study_id").sort_values("study_id")
        assert not rows["study_date"].is_monotonic_increasing
    for ids in _ids_of(out, "manifest", "future_date"):
        assert m.loc[ids[0], "study_date"] > "2029-12-31"
    for ids in _ids_of(out, "manifest", "before_birth"):
        assert int(m.loc[ids[0], "study_date"][:4]) < int(m.loc[ids[0], "birth_year"])
    for ids in _ids_of(out, "manifest", "patient_sex_conflict"):
        assert m.loc[ids, "sex"].nunique() == 2
    for ids in _ids_of(out, "manifest", "shared_image_file"):
        assert m.loc[ids, "image_path"].nunique() == 1
    for ids in _ids_of(out, "manifest", "report_missing"):
        assert (m.loc[ids, "report"] == "").all()
    for ids in _ids_of(out, "manifest", "report_template"):
        assert "[** TEMPLATE" in m.loc[ids[0], "report"]
    for ids in _ids_of(out, "manifest", "report_foreign_language"):
        assert "BEFUND" in m.loc[ids[0], "report"]
    for ids in _ids_of(out, "manifest", "report_non_utf8"):
        assert "\ufffd" in m.loc[ids[0], "report"]
    # the clean rows: one sex and birth year per patient, ids increasing with date
    planted_ids = {
        i for ids in read_truth(out / "manifest" / "truth.csv")["ids"] for i in ids.split("|")
    }
    clean = m.drop(index=list(planted_ids & set(m.index)))
    assert (clean.groupby("patient_id")["sex"].nunique() == 1).all()
    assert (clean.groupby("patient_id")["birth_year"].nunique() == 1).all()
    for _, g in clean.drop_duplicates("study_id").groupby("patient_id"):
        assert g.sort_values("study_id")["study_date"].is_monotonic_increasing


def test_planted_images_and_headers(src, half):
    out, _, _ = half
    jpg = out / "jpg"
    meta = pd.read_csv(
        jpg / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str, keep_default_na=False
    ).set_index("dicom_id")

    def jpath(i: str) -> Path:
        r = meta.loc[i]
        return jpg / f"files/p{r.subject_id[:2]}/p{r.subject_id}/s{r.study_id}/{i}.jpg"

    for ids in _ids_of(out, "jpg", "blank_image"):
        assert cv2.imread(str(jpath(ids[0])), cv2.IMREAD_GRAYSCALE).max() <= 2
    for ids in _ids_of(out, "jpg", "image_missing"):
        assert not jpath(ids[0]).exists()
    for ids in _ids_of(out, "jpg", "corrupt_image"):
        assert cv2.imread(str(jpath(ids[0])), cv2.IMREAD_GRAYSCALE) is None or (
            jpath(ids[0]).read_bytes()[-2:] != b"\xff\xd9"
        )
    for ids in _ids_of(out, "jpg", "exact_image_copy"):
        hashes = {i: hashlib.sha1(jpath(i).read_bytes()).hexdigest() for i in ids}
        same = [i for i in ids if list(hashes.values()).count(hashes[i]) == 2]
        assert len(same) == 2 and meta.loc[same, "subject_id"].nunique() == 2
    recs = pd.read_csv(out / "dicom" / "cxr-record-list.csv.gz", dtype=str).set_index("dicom_id")
    dmeta = pd.read_csv(
        out / "dicom" / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str, keep_default_na=False
    ).set_index("dicom_id")
    for ids in _ids_of(out, "dicom", "header_sex_mismatch"):
        ds = pydicom.dcmread(out / "dicom" / recs.loc[ids[0], "path"], stop_before_pixels=True)
        assert ds.PatientSex != dmeta.loc[ids[0], "sex"]
    clean = set(dmeta.index) - {
        i for ids in read_truth(out / "dicom" / "truth.csv")["ids"] for i in ids.split("|")
    }
    for i in sorted(clean)[:5]:
        ds = pydicom.dcmread(out / "dicom" / recs.loc[i, "path"])
        assert ds.PatientSex == dmeta.loc[i, "sex"]
        assert ds.StudyDate == dmeta.loc[i, "StudyDate"]
        assert ds.ViewPosition == dmeta.loc[i, "ViewPosition"]
        assert ds.pixel_array.shape == (64, 64)
    for ids in _ids_of(out, "dicom", "exact_image_copy"):
        pix = [pydicom.dcmread(out / "dicom" / recs.loc[i, "path"]).pixel_array for i in ids]
        pairs = [
            (j, k)
            for j in range(len(ids))
            for k in range(j)
            if pix[j].shape == pix[k].shape and np.array_equal(pix[j], pix[k])
        ]
        assert len(pairs) == 1


def test_drift_window_is_the_last_dates_and_shifted(src, planted):
    out, summary, _ = planted
    m = _manifest(out)
    truth = read_truth(out / "manifest" / "truth.csv")
    ids = truth.loc[truth["type"] == "drift", "ids"].item().split("|")
    lo, hi = summary.drift["window"]
    inside = m[m["id"].isin(ids)]
    assert (inside["study_date"] >= lo).all()
    outside = m[~m["id"].isin(ids) & m["study_date"].str.match(r"\d{4}-\d\d-\d\d$")]
    assert (outside["study_date"] < lo).sum() >= len(outside) - 3 * math.ceil(RATE * N)
    a = cv2.imread(str(out / "manifest" / inside["image_path"].iloc[0]), 0).astype(float)
    srcs = list(src.glob(f"jpg/files/*/*/*/{inside['id'].iloc[0]}.jpg"))
    b = cv2.imread(str(srcs[0]), 0).astype(float)
    assert np.abs(a - b).mean() > 3


def test_site_drift(src, tmp_path):
    s = plant_anomalies(
        src, tmp_path / "site", rates={"drift": 0.3}, layouts=("jpg",), drift_mode="site"
    )
    meta = pd.read_csv(tmp_path / "site" / "jpg" / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    truth = read_truth(tmp_path / "site" / "jpg" / "truth.csv")
    ids = set(truth.loc[truth["type"] == "drift", "ids"].item().split("|"))
    assert set(meta.loc[meta["site"] == "B", "dicom_id"]) == ids
    assert s.drift["n_studies"] >= round(0.3 * N)


def test_bad_arguments(src, tmp_path):
    with pytest.raises(ValueError, match="unknown anomaly types"):
        plant_anomalies(src, tmp_path / "a", rates={"typo": 0.1})
    with pytest.raises(ValueError, match="rate for missing"):
        plant_anomalies(src, tmp_path / "a", rates={"missing": 0.9})
    with pytest.raises(ValueError, match="layouts"):
        plant_anomalies(src, tmp_path / "a", layouts=("png",))
    with pytest.raises(ValueError, match="drift_mode"):
        plant_anomalies(src, tmp_path / "a", drift_mode="weekly")
    with pytest.raises(FileNotFoundError, match="not found"):
        plant_anomalies(tmp_path / "nowhere", tmp_path / "a")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match="not a phantom tree"):
        plant_anomalies(tmp_path / "plain", tmp_path / "a")
    with pytest.raises(FileExistsError, match="refusing"):
        plant_anomalies(src, tmp_path / "plain")
    with pytest.raises(ValueError, match="inside the source"):
        plant_anomalies(src, src / "planted")
    assert not (tmp_path / "a").exists()
    only_dicom = tmp_path / "dcm"
    synthesize(only_dicom, n=3, seed=1, size=32, layouts=("dicom",))
    with pytest.raises(FileNotFoundError, match="no jpg/ layout"):
        plant_anomalies(only_dicom, tmp_path / "a", layouts=("jpg",))


def test_zero_rates_plant_nothing(src, tmp_path):
    s = plant_anomalies(
        src, tmp_path / "z", rates=uniform_rates(0.0, drift=0.0), layouts=("manifest",)
    )
    assert len(read_truth(tmp_path / "z" / "manifest" / "truth.csv")) == 0
    assert sum(s.studies_affected["manifest"].values()) == 0


# ------------------------------------------------------------------------------- scoring


def test_score_findings_hand_made():
    truth = pd.DataFrame(
        {
            "type": ["missing", "missing", "duplicate", "drift"],
            "subtype": ["report_missing", "image_missing", "exact_image_copy", "time_window"],
            "ids": ["a", "b", "c|d", "w1|w2|w3"],
        }
    )
    findings = pd.DataFrame(
        {
            "type": ["missing", "missing", "duplicate", "duplicate", "outlier", "drift"],
            "ids": ["a", "x", "d|e", "f|g", "b", "w2|w9"],
        }
    )
    s = score_findings(findings, truth).set_index("type")
    assert s.loc["missing", ["planted", "recalled", "findings", "correct"]].tolist() == [2, 1, 2, 1]
    assert s.loc["missing", "recall"] == 0.5 and s.loc["missing", "precision"] == 0.5
    assert s.loc["duplicate", "recall"] == 1.0 and s.loc["duplicate", "precision"] == 0.5
    assert s.loc["drift", "recall"] == 1.0 and s.loc["drift", "precision"] == 1.0
    # an outlier finding on a record planted as missing is wrong for outlier
    assert s.loc["outlier", "precision"] == 0.0 and math.isnan(s.loc["outlier", "recall"])
    sub = recall_by_subtype(findings, truth).set_index("subtype")
    assert sub.loc["image_missing", "recalled"] == 0
    assert sub.loc["report_missing", "recalled"] == 1
    empty = score_findings(findings.iloc[:0], truth).set_index("type")
    assert (empty["recalled"] == 0).all() and empty["precision"].isna().all()
    with pytest.raises(ValueError, match="lacks columns"):
        score_findings(findings.drop(columns="ids"), truth)
