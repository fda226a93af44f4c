"""Recall@K, label-match Precision@K, the 5x200 subset and end-to-end evaluation."""

from __future__ import annotations

import argparse
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
from radalign.data.sources import open_source
from radalign.data.synth import synthesize
from radalign.retrieval.evaluate import (
    FIVE_CLASSES,
    evaluate_retrieval,
    label_match_precision_at_k,
    load_ids,
    make_5x200,
    recall_at_k,
    save_ids,
)

from radalign import cmd_retrieve


def _reference_recall(q: np.ndarray, g: np.ndarray, k: int) -> float:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    hits = 0
    for i in range(len(q)):
        scores = [float(q[i] @ g[j]) for j in range(len(g))]
        better = sum(1 for j, s in enumerate(scores) if j != i and s >= scores[i])
        hits += better < k
    return hits / len(q)


def test_recall_matches_reference():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((50, 8))
    g = q + 0.8 * rng.standard_normal((50, 8))
    res = recall_at_k(q, g, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert res["query_to_gallery"][f"R@{k}"] == pytest.approx(_reference_recall(q, g, k))
        assert res["gallery_to_query"][f"R@{k}"] == pytest.approx(_reference_recall(g, q, k))


def test_recall_hand_made():
    q = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    g = np.array([[1, 0], [1, 0.1], [0, 1]], dtype=np.float32)
    res = recall_at_k(q, g, ks=(1, 2, 3))["query_to_gallery"]
    # q0: partner first; q1: partner 2nd; q2: partner tied with g0, so ranked 3rd
    assert res == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@3": 1.0}
    same = np.ones((3, 2))
    assert recall_at_k(same, same, ks=(1,))["query_to_gallery"]["R@1"] == 0.0  # ties count against
    with pytest.raises(ValueError):
        recall_at_k(q, g[:2])


def test_label_match_precision():
    q = ["a", "b"]
    hits = [["a", "b", "a", "a"], ["a", "a", "a", "b"]]
    assert label_match_precision_at_k(q, hits, 1) == pytest.approx((1 + 0) / 2)
    assert label_match_precision_at_k(q, hits, 4) == pytest.approx((3 / 4 + 1 / 4) / 2)
    with pytest.raises(ValueError):
        label_match_precision_at_k(q, hits, 5)


def _fake_records(seed: int = 0):
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(300):
        labels = {}
        for c in FIVE_CLASSES:
            v = rng.choice([1.0, 0.0, -1.0, None], p=[0.15, 0.5, 0.1, 0.25])
            if v is not None:
                labels[c] = float(v)
        recs.append(SimpleNamespace(id=f"r{i:03d}", study_id=f"s{i // 2}", labels=labels))
    return recs


def test_make_5x200_deterministic_and_valid(tmp_path):
    recs = _fake_records()
    a = make_5x200(recs, n=10, seed=0)
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    assert make_5x200(shuffled, n=10, seed=0) == a
    assert make_5x200(recs, n=10, seed=1) != a
    by_id = {r.id: r for r in recs}
    studies = []
    for cls, ids in a.items():
        assert len(ids) <= 10
        for i in ids:
            pos = [c for c in FIVE_CLASSES if by_id[i].labels.get(c) == 1.0]
            assert pos == [cls]
            studies.append(by_id[i].study_id)
    assert len(studies) == len(set(studies))  # one record per study
    every = make_5x200(recs, n=10_000)
    assert all(set(a[c]) <= set(every[c]) for c in FIVE_CLASSES)
    path = save_ids(a, tmp_path / "ids.json", n=10, seed=0)
    assert load_ids(path) == a
    assert json.loads(path.read_text())["protocol"] == "chexpert-5x200"
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError):
        load_ids(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    synthesize(root, n=24, seed=0, size=64, layouts=("jpg",))
    return root / "jpg"


def test_evaluate_retrieval_on_phantoms(phantoms, tiny_model):
    records = list(open_source(phantoms, one_image_per_study=True))
    result = evaluate_retrieval(tiny_model, records, n=200)
    chosen = make_5x200(records)
    assert result["cases"] == sum(map(len, chosen.values())) > 0
    assert result["full_5x200"] is False
    for direction in ("image_to_report", "report_to_image"):
        assert set(result[direction]) == {"R@1", "R@5", "R@10", "P@1", "P@5", "P@10"}
        assert all(0.0 <= v <= 1.0 for v in result[direction].values())
    assert result["per_class"] == {c: len(v) for c, v in chosen.items()}


def test_cli_eval(phantoms, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="radalign")
    cmd_retrieve.add_parser(parser.add_subparsers(dest="command"))
    ids, out = tmp_path / "ids.json", tmp_path / "results.json"
    argv = ["retrieve", "--model", "tiny", "--eval", str(phantoms), "--split", "train"]
    argv += ["--ids", str(ids), "--out", str(out), "--workers", "0"]
    args = parser.parse_args(argv)
    assert args.run(args) == 0
    assert ids.is_file()
    first = json.loads(out.read_text())
    assert first["split"] == "train" and first["cases"] > 0
    args = parser.parse_args(argv)
    assert args.run(args) == 0
    assert "using the case ids" in capsys.readouterr().out
    assert json.loads(out.read_text())["image_to_report"] == first["image_to_report"]
