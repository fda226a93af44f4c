"""``radalign audit`` end to end on a planted phantom archive: outputs, per-type recall, resume,
no header identifiers, and bad inputs that leave nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from radalign.audit.findings import FINDING_TYPES
from radalign.data.synth import synthesize
from radalign.data.synth_anomalies import plant_anomalies, read_truth, score_findings, uniform_rates

from radalign.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    synthesize(root / "clean", n=160, seed=11, size=64)
    plant_anomalies(root / "clean", root / "planted", rates=uniform_rates(0.05), seed=2,
                    layouts=("dicom", "manifest"))  # fmt: skip
    return root / "planted"


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit-out") / "dicom"
    rc = main(["audit", str(planted / "dicom"), "--model", "tiny", "--random-init",
               "--precision", "fp32", "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    return out


def test_outputs_and_counts(audited, planted, capsys):
    for name in ("issues.csv", "issues.parquet", "summary.json", "audit.html"):
        assert (audited / name).is_file(), name
    summary = json.loads((audited / "summary.json").read_text())
    issues = pd.read_csv(audited / "issues.csv", keep_default_na=False)
    assert summary["findings"] == len(issues) > 0
    assert set(summary["by_type"]) == set(FINDING_TYPES)
    assert set(issues["type"]) <= set(FINDING_TYPES)
    assert pd.read_parquet(audited / "issues.parquet").shape == issues.shape
    html = (audited / "audit.html").read_text()
    assert "Counts per type" in html and "<script" not in html


def test_every_planted_type_is_found(audited, planted):
    issues = pd.read_csv(audited / "issues.csv", keep_default_na=False)
    scores = score_findings(issues, read_truth(planted / "dicom" / "truth.csv")).set_index("type")
    for t in FINDING_TYPES[:-1]:  # drift needs more rows per window: tests/audit/test_drift.py
        if t in scores.index and scores.loc[t, "planted"] > 0:
            assert scores.loc[t, "recalled"] > 0, (t, scores.loc[t].to_dict())


def test_no_dicom_patient_identifiers(audited):
    text = (audited / "issues.csv").read_text() + (audited / "audit.html").read_text()
    assert "Phantom^" not in text  # the phantoms' DICOM PatientName


def test_rerun_resumes_from_cache(audited, planted, single_thread):
    chunks = sorted((audited / "cache").glob("*.npy"))
    assert chunks
    before = {p: p.stat().st_mtime_ns for p in chunks}
    first = pd.read_csv(audited / "issues.csv", keep_default_na=False)
    assert main(["audit", str(planted / "dicom"), "--model", "tiny", "--random-init",
                 "--precision", "fp32", "--out", str(audited), "--quiet"]) == 0  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in chunks} == before
    pd.testing.assert_frame_equal(first, pd.read_csv(audited / "issues.csv", keep_default_na=False))


def test_bad_inputs_leave_nothing(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["audit", str(missing), "--out", str(tmp_path / "o1")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "o1").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    assert main(["audit", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "image_path" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    empty = tmp_path / "empty.csv"
    empty.write_text("image_path,report\n")
    assert main(["audit", str(empty), "--out", str(tmp_path / "o3")]) == 2
    assert not (tmp_path / "o3").exists()
