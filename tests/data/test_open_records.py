"""``open_records``: a source's records as a command selects them (split, views, skip log)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from radalign.data.records import split_option
from radalign.data.sources import open_records, open_source, views_option

# (id, view, split, report); every row has its image on disk except "gone"
ROWS = [
    ("a", "PA", "train", "Left pleural effusion."),
    ("b", "AP", "train", "Right lower lobe opacity."),
    ("c", "LATERAL", "train", "Lateral view, clear."),
    ("d", "PA", "validate", "Mild cardiomegaly."),
    ("e", "AP Supine", "test", "No pneumothorax."),
    ("f", "L", "test", "Lateral, no effusion."),
    ("g", "PA", "test", ""),  # empty report
    ("gone", "PA", "test", "Image file is missing."),
]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    from PIL import Image

    pixels = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    for rid, *_ in ROWS:
        if rid != "gone":
            Image.fromarray(pixels).save(tmp_path / f"{rid}.png")
    frame = pd.DataFrame(
        [
            {"id": r, "image_path": f"{r}.png", "patient_id": f"p{r}", "view": v, "split": s,
             "report": t}
            for r, v, s, t in ROWS
        ]
    )  # fmt: skip
    path = tmp_path / "manifest.csv"
    frame.to_csv(path, index=False)
    return path


def _ids(pairs) -> set[str]:
    return {r.id for r in pairs}


def test_split_and_views_select_records(manifest):
    frontal_train = open_records(manifest, split="train")
    assert _ids(frontal_train) == {"a", "b"}  # frontal (PA, AP) by default
    assert frontal_train.filtered["split"] == 5 and frontal_train.filtered["view"] == 1
    assert _ids(open_records(manifest, split="validate")) == {"d"}  # MIMIC's name for val
    assert _ids(open_records(manifest, split=" Test ")) == {"e"}  # AP Supine is AP
    assert _ids(open_records(manifest, split="test", views="all")) == {"e", "f"}
    assert _ids(open_records(manifest, split="all", views="LATERAL")) == {"c", "f"}  # L too
    everything = open_records(manifest, split=None, views=None)
    assert _ids(everything) == {"a", "b", "c", "d", "e", "f"}
    assert everything.skipped.counts() == {"missing image": 1, "empty report": 1}


def test_options_pass_through_to_open_source(manifest):
    kept = open_records(manifest, split="test", views="PA,AP", require_report=False)
    assert _ids(kept) == {"e", "g"} and kept.records[-1].report == ""
    # open_source reads split and views the same way (one normalisation)
    assert _ids(open_source(manifest, split="all", views="all")) == _ids(
        open_records(manifest, split=None, views=None)
    )
    assert _ids(open_source(manifest, split="Training", views="AP, PA")) == {"a", "b"}


def test_nothing_left_says_why(manifest):
    with pytest.raises(ValueError, match=r"no records in split val \(left out: split 7; view 1"):
        open_records(manifest, split="val", views="AP")
    with pytest.raises(ValueError, match="unknown split 'dev-set'"):
        open_records(manifest, split="dev-set")


def test_split_and_views_options():
    assert [split_option(v) for v in ("train", "Validation", "dev", "TEST")] == [
        "train",
        "val",
        "val",
        "test",
    ]
    assert split_option(None) is None and split_option("all") is None and split_option("") is None
    with pytest.raises(ValueError, match="unknown split"):
        split_option("holdout")
    assert views_option("PA, AP") == ("PA", "AP") and views_option(["LATERAL"]) == ("LATERAL",)
    assert views_option("all") is None and views_option(None) is None
    with pytest.raises(ValueError, match="no views"):
        views_option(" , ")
