"""The audit table: every record kept, metadata parsed, DICOM header fields read."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from radalign.audit.table import imprecise_date, load_table, normalize_sex, parse_age, parse_date
from radalign.data.synth import synthesize

CONTRACT = [
    "id",
    "image_path",
    "report",
    "report_raw",
    "patient_id",
    "study_id",
    "view",
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
]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph") / "tree"
    synthesize(root, n=30, seed=0, size=32)
    return root


def test_parsers():
    assert normalize_sex("female") == "F" and normalize_sex(" m ") == "M"
    assert normalize_sex("Q") is None and normalize_sex(float("nan")) is None
    assert parse_age("65") == 65 and parse_age("058Y") == 58 and parse_age("18M") == 1.5
    assert math.isnan(parse_age("50+"))
    assert parse_date("21850927") == pd.Timestamp("2185-09-27")
    assert parse_date("January 22, 2020") == pd.Timestamp("2020-01-22")
    assert pd.isna(parse_date("20991345")) and pd.isna(parse_date("not-a-date"))
    assert pd.isna(parse_date("2020")) and imprecise_date("2020")
    assert pd.isna(parse_date("January 12")) and imprecise_date("January 12")
    assert not imprecise_date("not-a-date")


@pytest.mark.parametrize("layout", ["dicom", "jpg"])
def test_phantom_table(phantoms, layout):
    t = load_table(phantoms / layout)
    f = t.frame
    assert set(CONTRACT) <= set(f.columns)
    assert len(f) >= 30 and f["id"].is_unique
    assert set(f["view"].dropna()) >= {"PA"}  # all views kept, laterals too
    assert f["study_date"].notna().all()  # from the metadata file or the DICOM header
    assert f["report"].str.len().gt(0).all() and f["image_exists"].all()
    if layout == "dicom":
        assert set(t.header.columns) == {
            "dicom_view",
            "dicom_sex",
            "dicom_modality",
            "dicom_study_date",
            "dicom_body_part",
            "dicom_photometric",
        }
        assert len(t.header) == len(f)
        assert "PatientID" not in t.header.columns and "PatientName" not in t.header.columns
    else:
        assert len(t.header) == 0
        assert f["study_time"].notna().all()


def test_manifest_keeps_rows_and_metadata(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    pd.DataFrame(
        {
            "image_path": ["a.png", "gone.png", ""],
            "report": ["Normal heart.", "", "Left effusion."],
            "patient_id": ["p1", "p1", "p2"],
            "sex": ["F", "female", "Q"],
            "age": ["40", "41", "-3"],
            "date": ["2020-01-02", "not-a-date", "2020"],
            "site": ["A", "A", "B"],
        }
    ).to_csv(tmp_path / "manifest.csv", index=False)
    f = load_table(tmp_path / "manifest.csv").frame.set_index("id")
    assert len(f) == 3  # the row with no report and the one with no image kept
    assert f.loc["a", "sex"] == "F" and f.loc["gone", "sex"] == "F"
    assert f.loc["row2", "sex"] is None and f.loc["row2", "sex_raw"] == "Q"
    assert f.loc["row2", "age"] == -3 and pd.isna(f.loc["row2", "age_valid"])
    assert f.loc["a", "study_date"] == pd.Timestamp("2020-01-02")
    assert pd.isna(f.loc["gone", "study_date"]) and f.loc["gone", "study_date_raw"] == "not-a-date"
    assert not f.loc["gone", "image_exists"] and f.loc["a", "image_exists"]
    assert f.loc["row2", "image_path"] is None and f.loc["row2", "site"] == "B"


def test_real_covid_manifest(shared_data):
    t = load_table(shared_data / "covid_chestxray" / "manifest.csv")
    f = t.frame
    assert len(f) > 500
    assert f["sex"].isin(["F", "M"]).mean() > 0.5 and f["age"].notna().mean() > 0.5
