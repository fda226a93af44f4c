"""Rule-based audit checks: clean phantoms give no findings, planted anomalies are found, and
each rule fires on a small hand-made manifest."""

from __future__ import annotations

import pandas as pd
import pytest
from radalign.audit.findings import FINDING_TYPES, SEVERITIES
from radalign.audit.metadata import check_rules
from radalign.audit.report_facts import stated_age, stated_projection, stated_sex
from radalign.audit.table import load_table
from radalign.data.synth import synthesize
from radalign.data.synth_anomalies import plant_anomalies

RULE_TYPES = ("missing", "entry_error", "temporal", "cross_modal", "inconsistent")
NOT_RULES = {"corrupt_image", "report_swapped"}  # image statistics and embeddings find those


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("rules")
    synthesize(base / "clean", n=120, seed=0, size=32)
    plant_anomalies(
        base / "clean",
        base / "planted",
        seed=0,
        layouts=("dicom", "manifest"),
        rates={t: 0.06 for t in RULE_TYPES},
    )
    return base


@pytest.mark.parametrize("layout", ["dicom", "jpg"])
def test_clean_phantoms_have_no_findings(trees, layout):
    assert check_rules(load_table(trees / "clean" / layout)) == []


@pytest.mark.parametrize("layout", ["dicom", "manifest"])
def test_planted_precision_recall(trees, layout):
    root = trees / "planted" / layout
    findings = check_rules(load_table(root))
    for f in findings:
        assert f.type in FINDING_TYPES and f.severity in SEVERITIES and f.ids
    truth = pd.read_csv(root / "truth.csv")
    for typ in RULE_TYPES:
        rows = truth[(truth.type == typ) & ~truth.subtype.isin(NOT_RULES)]
        planted = {i for ids in truth[truth.type == typ].ids for i in ids.split("|")}
        mine = [f for f in findings if f.type == typ]
        if len(mine):
            precision = sum(bool(set(f.ids) & planted) for f in mine) / len(mine)
            assert precision >= 0.9, (typ, [(f.subtype, f.ids) for f in mine])
        hit = [any(set(r.split("|")) & set(f.ids) for f in mine) for r in rows.ids]
        if len(rows):
            assert sum(hit) / len(rows) >= 0.9, (typ, list(rows.subtype[~pd.Series(hit).values]))


def _manifest(tmp_path, rows: list[dict]) -> pd.DataFrame:
    for r in rows:
        if r.get("image_path"):
            (tmp_path / r["image_path"]).write_bytes(b"x")
    df = pd.DataFrame(rows).fillna("")
    df.to_csv(tmp_path / "manifest.csv", index=False)
    return df


def _subtypes(tmp_path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in check_rules(load_table(tmp_path / "manifest.csv"), now=pd.Timestamp("2026-01-01")):
        for i in f.ids:
            out.setdefault(i, set()).add(f"{f.type}/{f.subtype}")
    return out


def _row(i: int, **kw) -> dict:
    base = {
        "id": f"r{i}",
        "image_path": f"r{i}.png",
        "patient_id": f"p{i}",
        "study_id": str(1000 + i),
        "view": "PA",
        "sex": "F",
        "age": "50",
        "birth_year": "1970",
        "study_date": f"2020-{1 + i % 12:02d}-{1 + i % 27:02d}",
        "study_time": "101500",
        "report": "FINDINGS: The lungs are clear. IMPRESSION: No acute process.",
    }
    base.update(kw)
    return base


def test_each_rule_on_a_manifest(tmp_path):
    rows = [_row(i) for i in range(40)]
    rows[1].update(age="150")
    rows[2].update(study_date="not-a-date")
    rows[3].update(sex="Q")
    rows[4].update(view="PAX")
    rows[5].update(report="FINDINGS: Heart size is [normal/enlarged]. IMPRESSION: None acute.")
    rows[6].update(report="FINDINGS: The lungs are clear \ufffd\ufffd. IMPRESSION: Normal.")
    rows[7].update(report="FINDINGS: The woman has clear lungs. IMPRESSION: Normal.", sex="M")
    rows[8].update(report="FINDINGS: Portable AP view. Lungs clear. IMPRESSION: Normal.")
    rows[9].update(report="FINDINGS: 72-year-old with clear lungs. IMPRESSION: Normal.")
    rows[10].update(study_date="2031-05-01", age="61")
    rows[11].update(study_date="1960-05-01", age="-10")
    rows[12].update(patient_id="p13", sex="M")  # p13 now F and M
    rows[14].update(study_id="1015", patient_id="p14")  # study 1015 under p14 and p15
    rows[16].update(image_path="r17.png")  # one file, two studies
    rows[18].update(image_path="gone.png")
    rows[19].update(report="")
    rows[20].update(patient_id="")
    rows[21].update(view="LATERAL")
    rows[22].update(report="FINDINGS: The lungs are clear and the. IMPRESSION: No acute and")
    rows[23].update(report=" FINDINGS:\n -\n IMPRESSION:\n No acute process.\n")
    df = _manifest(tmp_path, rows)
    (tmp_path / "gone.png").unlink()
    got = _subtypes(tmp_path)
    expect = {
        "r1": "entry_error/age_out_of_range",
        "r2": "entry_error/invalid_date",
        "r3": "entry_error/unknown_sex_code",
        "r4": "entry_error/unknown_view_code",
        "r5": "entry_error/template_unfilled",
        "r6": "entry_error/malformed_encoding",
        "r7": "cross_modal/report_sex_mismatch",
        "r8": "cross_modal/report_view_mismatch",
        "r9": "cross_modal/report_age_mismatch",
        "r10": "temporal/future_date",
        "r11": "temporal/date_before_birth",
        "r12": "inconsistent/patient_sex_conflict",
        "r14": "inconsistent/study_multiple_patients",
        "r16": "inconsistent/image_shared_between_studies",
        "r18": "missing/image_file_missing",
        "r19": "missing/image_without_report",
        "r20": "missing/patient_id_absent",
        "r21": "missing/no_frontal_view",
        "r22": "entry_error/truncated_report",
        "r23": "missing/placeholder_section",
    }
    for rid, sub in expect.items():
        assert sub in got.get(rid, set()), (rid, sub, got.get(rid))
    flagged = set(expect) | {"r13", "r15", "r17"}  # partners of the pairwise ones
    clean = set(df["id"]) - flagged
    assert not (clean & set(got)), {k: got[k] for k in clean & set(got)}


def test_temporal_patient_sequences(tmp_path):
    rows = []
    for p in range(12):  # patients with 3 studies each, ids increasing with date
        for k in range(3):
            i = p * 3 + k
            rows.append(
                _row(
                    i,
                    patient_id=f"p{p}",
                    study_id=str(5000 + i),
                    study_date=f"{2010 + k}-0{1 + p % 9}-1{p % 9}",
                    age=str(40 + k),
                    birth_year="1970",
                )
            )
    rows[0]["study_date"], rows[1]["study_date"] = rows[1]["study_date"], rows[0]["study_date"]
    rows[4]["study_date"], rows[4]["study_time"] = rows[3]["study_date"], rows[3]["study_time"]
    _manifest(tmp_path, rows)
    got = _subtypes(tmp_path)
    assert "temporal/order_against_ids" in got["r0"] | got["r1"]
    assert (
        "temporal/duplicate_timestamp" in got["r3"] and "temporal/duplicate_timestamp" in got["r4"]
    )
    assert not any(k in got for k in (f"r{i}" for i in range(6, 36)))


def test_intake_burst(tmp_path):
    rows = [
        _row(i, study_date=str(pd.Timestamp("2020-01-01") + pd.Timedelta(days=i % 60)))
        for i in range(120)
    ]
    rows += [_row(200 + i, study_date="2020-01-20") for i in range(15)]
    _manifest(tmp_path, [dict(r, study_date=r["study_date"][:10]) for r in rows])
    got = _subtypes(tmp_path)
    burst = {k for k, v in got.items() if "temporal/intake_burst" in v}
    assert {f"r{200 + i}" for i in range(15)} <= burst and len(burst) <= 20


def test_text_fact_parsers():
    assert stated_sex("The woman has a cough; her lungs") == "F"
    assert stated_sex("He and she") is None and stated_sex("Female patient") == "F"
    assert stated_sex("the heart is normal") is None  # no 'he' inside 'the'
    assert stated_age("A 65-year-old man") == 65 and stated_age("aged 7") == 7
    assert stated_age("65 year old and 70 year old") is None
    assert stated_projection("Portable AP chest") == "AP"
    assert stated_projection("PA and lateral views") == "PA"
    assert stated_projection("AP and PA") is None


def test_real_manifests(shared_data):
    nih = check_rules(load_table(shared_data / "nih_cxr14_subset" / "manifest.csv"))
    assert nih == []  # a label-only set with valid ages/sexes: nothing to say
    covid = check_rules(load_table(shared_data / "covid_chestxray" / "manifest.csv"))
    subs = {f.subtype for f in covid}
    assert "malformed_encoding" in subs and "invalid_date" not in subs
