"""The pair dataset, collator and sampler: replacement of bad pairs, seeds, exact positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from radalign.data.records import PairRecord
from radalign.pretrain.pair_dataset import EpochShuffleSampler, PairCollator, PairDataset


@pytest.fixture
def records(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(path)
        out.append(PairRecord(id=f"r{i}", image_path=path, report=f"Report {i}."))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    out[1] = PairRecord(id="bad-image", image_path=tmp_path / "bad.png", report="Fine report.")
    out[3] = PairRecord(id="empty", image_path=tmp_path / "3.png", report="   ")
    return out


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]


def test_bad_pairs_are_replaced_deterministically_and_reported(records):
    ds = PairDataset(records, _to_tensor)
    good = ds[0]
    assert good[0] == 0 and good[2] == "Report 0." and good[3] == []
    j, pixels, report, skips = ds[1]
    assert j != 1 and pixels is not None and report == records[j].report.strip()
    assert skips[0][:2] == (str(records[1].image_path), "not an image")
    again = ds[1]
    assert again[0] == j and torch.equal(again[1], pixels)  # the same replacement every time
    j3, _, _, skips3 = ds[3]
    assert j3 != 3 and skips3[0][:2] == ("empty", "empty report")


def test_a_set_with_no_usable_pair_yields_none(tmp_path):
    ds = PairDataset([PairRecord(id="x", image_path=None, report="Text.")], _to_tensor)
    i, pixels, report, skips = ds[0]
    assert (i, pixels, report) == (0, None, None)
    assert len(skips) == PairDataset.max_replacements and skips[0][1] == "no image"


def test_collator_stacks_good_items_and_passes_skips(records):
    ds = PairDataset(records, _to_tensor)
    calls = []

    def tokenizer(texts):
        calls.append(list(texts))
        return {"input_ids": torch.zeros(len(texts), 3, dtype=torch.long)}

    batch = PairCollator(tokenizer)([ds[0], ds[1], (9, None, None, [("p", "r", "d")])])
    assert batch["pixels"].shape == (2, 1, 16, 16)
    assert batch["index"].tolist() == [0, ds[1][0]]
    assert calls == [batch["reports"]] and len(batch["reports"]) == 2
    assert ("p", "r", "d") in batch["skipped"] and len(batch["skipped"]) >= 2
    empty = PairCollator(tokenizer)([(9, None, None, [])])
    assert "pixels" not in empty and empty["index"].numel() == 0


def test_sampler_is_a_seeded_permutation_that_resumes_mid_epoch():
    sampler = EpochShuffleSampler(10, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(10))
    sampler.use_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(10)) and second != first
    sampler.use_epoch(1, start=4)
    assert list(sampler) == second[4:] and len(sampler) == 6
    sampler.use_epoch(0, start=99)  # past the end: nothing left, no error
    assert list(sampler) == [] and len(sampler) == 0
    assert list(EpochShuffleSampler(10, seed=3)) == first
