"""``load_pairs``: a run config's data opened through ``open_records``, one split or all."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from radalign.pretrain.config import DataConfig
from radalign.pretrain.data import load_pairs


@pytest.fixture
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i, (split, view) in enumerate(
        [("train", "PA"), ("train", "AP"), ("validate", "PA"), ("test", "PA"), ("test", "LL")]
    ):
        name = f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / name)
        rows.append(
            {
                "id": f"r{i}",
                "image_path": name,
                "report": f"Report {i}.",
                "split": split,
                "view": view,
                "patient_id": f"p{i}",
            }  # fmt: skip
        )
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_one_split_is_the_same_records_as_splitting_all(manifest):
    config = DataConfig(source=str(manifest))
    everything = load_pairs(config)
    assert sorted(r.split for r in everything) == ["test", "train", "train", "val"]  # LL left out
    for name in ("train", "val", "validate", "test"):
        one = load_pairs(config, split=name)
        assert [r.id for r in one] == [r.id for r in everything.split(name)]
    assert len(load_pairs(config, split="all")) == len(everything)
    assert [
        r.id for r in load_pairs(DataConfig(source=str(manifest), views=None), split="test")
    ] == [
        "r3",
        "r4",
    ]


def test_an_empty_or_unknown_split_is_a_clear_error(manifest, tmp_path):
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        load_pairs(DataConfig(source=str(manifest)), split="holdout")
    only_train = tmp_path / "train-only.csv"
    table = pd.read_csv(manifest)
    table[table["split"] == "train"].to_csv(only_train, index=False)
    with pytest.raises(ValueError, match=r"no records in split test \(left out: split 2\)"):
        load_pairs(DataConfig(source=str(only_train)), split="test")
