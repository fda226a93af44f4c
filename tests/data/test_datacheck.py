"""``radalign data check``: counts, skipped rows with examples, decoding, printable summary."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
from radalign.data.datacheck import CheckReport, check
from radalign.data.splits import split_key, split_of
from radalign.encoders.errors import InputError


@pytest.fixture
def small(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    for name in ("a", "b", "c"):
        Image.new("L", (16, 16), 100).save(tmp_path / "images" / f"{name}.png")
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (tmp_path / "images" / "empty.png").write_bytes(b"")
    df = pd.DataFrame(
        {
            "image_path": [
                "images/a.png",
                "images/b.png",
                "images/c.png",
                "images/corrupt.png",
                "images/empty.png",
                "images/missing.png",
                "images/a.png",
                "images/b.png",
            ],
            "report": [
                "FINDINGS: Clear lungs.\nIMPRESSION: Normal.",
                "IMPRESSION: Small right effusion.",
                "Findings: Cardiomegaly without edema.",
                "No acute process.",
                "Left lower lobe opacity.",
                "Right effusion.",
                "Duplicate row.",
                "",
            ],
            "patient_id": ["1", "2", "", "3", "4", "5", "1", "2"],
            "view": ["PA", "AP", "PA", "PA", "LATERAL", "PA", "PA", "AP"],
            "split": ["train", "train", "", "val", "test", "test", "train", "train"],
            "labels": ["No Finding", "Effusion", "Cardiomegaly", "", "", "", "", ""],
        }
    )
    path = tmp_path / "manifest.csv"
    df.to_csv(path, index=False)
    return path


def test_check_counts(small):
    rep = check(small, views=None)
    assert isinstance(rep, CheckReport)
    assert rep.layout == "manifest"
    assert rep.n_pairs == 5  # a, b, c, corrupt, empty
    assert rep.n_patients == 4 and rep.no_patient_id == 1
    assert rep.duplicate_ids == 2  # a and b listed twice
    assert rep.skipped == {"duplicate id": 2, "missing image": 1}
    assert rep.skipped_examples["missing image"][0].endswith("images/missing.png")
    assert rep.views == {"PA": 3, "AP": 1, "LATERAL": 1}
    c_split = split_of(split_key(None, None, "c"))  # no split, no patient, no study: by id
    assert rep.splits == dict(Counter(["train", "train", "val", "test", c_split]))
    assert rep.missing_sections == {"no FINDINGS": 1, "no IMPRESSION": 3}
    assert rep.labels == {"No Finding": 1, "Effusion": 1, "Cardiomegaly": 1}
    assert rep.report_words["min"] == 3 and rep.report_words["max"] == 4
    assert rep.decoded is None
    frontal = check(small)
    assert frontal.n_pairs == 4 and frontal.filtered == {"view": 1}


def test_check_decode_counts_unreadable(small):
    pytest.importorskip("radalign.encoders.imageio")
    rep = check(small, views=None, decode=True)
    assert rep.decoded == 5
    assert rep.n_unreadable == 2
    assert set(rep.unreadable) <= {
        "zero-byte file",
        "truncated or corrupt image",
        "not an image",
        "unreadable file",
    }
    flat = [p for ex in rep.unreadable_examples.values() for p in ex]
    assert sorted(p.rsplit("/", 1)[-1] for p in flat) == ["corrupt.png", "empty.png"]
    assert "decoded" in rep.summary() and "2 unreadable" in rep.summary()


def test_summary_and_dict(small):
    rep = check(small, views=None)
    text = rep.summary()
    lines = text.splitlines()
    assert lines[0].startswith("source") and str(small) in lines[0]
    # values start in one column
    col = lines[0].index(str(small))
    for line in lines:
        if line.strip() and not line.startswith(" "):
            assert line[col - 2 : col] == "  " and line[col] != " ", line
    for needle in ("pairs", "no patient id", "duplicate ids", "missing image", "e.g. "):
        assert needle in text
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["n_pairs"] == 5 and d["n_skipped"] == 3 and d["skipped"]["duplicate id"] == 2


def test_check_bad_root(tmp_path):
    with pytest.raises(InputError) as err:
        check(tmp_path)
    assert err.value.reason == "unrecognised layout"


@pytest.mark.shared
def test_check_covid_manifest(shared_data):
    path = shared_data / "covid_chestxray" / "manifest.csv"
    if not path.is_file():
        pytest.skip("covid_chestxray not in shared data")
    rep = check(path, views=None)
    assert rep.n_pairs == 459
    assert rep.skipped == {"empty report": 111}
    assert len(rep.skipped_examples["empty report"]) == 5
    assert sum(rep.views.values()) == 459 and set(rep.views) == {"PA", "AP", "LATERAL"}
    assert set(rep.splits) == {"train", "val", "test"}
    text = rep.summary()
    assert "empty report" in text and "459" in text
    frontal = check(path)
    assert frontal.filtered == {"view": 43}
    assert frontal.n_pairs + frontal.skipped["empty report"] + 43 == 570


def test_cli_synth_then_check_both_layouts(tmp_path, capsys):
    """The issue's done-when: ``data synth`` then ``data check`` print a clean summary."""
    from radalign.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "ph"), "--n", "24", "--seed", "3"]) == 0
    assert "24 studies" in capsys.readouterr().out
    for layout in ("dicom", "jpg"):
        assert main(["data", "check", str(tmp_path / "ph" / layout), "--json", "--decode"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["layout"] == f"mimic-{layout}"
        assert report["n_pairs"] >= 20 and report["n_skipped"] == report["n_unreadable"] == 0
