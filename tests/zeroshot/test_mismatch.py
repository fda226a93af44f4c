"""Mismatch flags: score math, threshold, explanations, planted anomalies, CLI end to end."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from radalign.retrieval.index import Index
from radalign.zeroshot.mismatch import (
    MismatchScorer,
    explain,
    fit_threshold,
    mismatch_aurocs,
    plant_anomalies,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def reports_index() -> tuple[Index, np.ndarray]:
    rng = np.random.default_rng(0)
    vecs = _unit(rng.standard_normal((40, 8)))
    meta = pd.DataFrame(
        {"id": [f"r{i}" for i in range(40)], "study_id": [f"s{i}" for i in range(40)]}
    )
    return Index.build(vecs, meta, fingerprint="fp", factory="Flat"), vecs


def test_score_matches_plain_reference(reports_index):
    index, vecs = reports_index
    rng = np.random.default_rng(1)
    u, t = _unit(rng.standard_normal((6, 8))), _unit(rng.standard_normal((6, 8)))
    got = MismatchScorer(index, k=5).score(u, t)
    for i in range(6):
        sims = np.sort(vecs @ u[i])[::-1]
        s = float(u[i] @ t[i])
        assert got["similarity"][i] == pytest.approx(s, abs=1e-6)
        assert got["neighbour_mean"][i] == pytest.approx(sims[:5].mean(), abs=1e-6)
        assert got["rank"][i] == int((sims > s).sum())
        assert got["score"][i] == pytest.approx(sims[:5].mean() - s, abs=1e-6)


def test_own_study_is_left_out(reports_index):
    index, vecs = reports_index
    u = vecs[:1]  # the image equals indexed report 0 (study s0)
    with_self = MismatchScorer(index, k=1).score(u, u)
    without = MismatchScorer(index, k=1).score(u, u, ["s0"])
    assert with_self["neighbour_mean"][0] == pytest.approx(1.0, abs=1e-6)
    assert without["neighbour_mean"][0] == pytest.approx(np.sort(vecs[1:] @ u[0])[-1], abs=1e-6)


def test_image_index_averages_both_sides(reports_index):
    index, vecs = reports_index
    rng = np.random.default_rng(2)
    u, t = _unit(rng.standard_normal((3, 8))), _unit(rng.standard_normal((3, 8)))
    both = MismatchScorer(index, k=3, image_index=index).score(u, t)
    one = MismatchScorer(index, k=3).score(u, t)
    r_t = np.array([np.sort(vecs @ t[i])[::-1][:3].mean() for i in range(3)])
    np.testing.assert_allclose(
        both["score"], 0.5 * (one["score"] + r_t - one["similarity"]), atol=1e-6
    )


def test_threshold_hits_the_false_positive_rate():
    ref = np.random.default_rng(0).standard_normal(10_000)
    thr = fit_threshold(ref, 0.05)
    assert (ref > thr).mean() == pytest.approx(0.05, abs=0.002)
    with pytest.raises(ValueError):
        fit_threshold(ref, 0)


def test_explanations_name_the_disagreeing_findings():
    cols = ["Pleural Effusion", "Cardiomegaly", "No Finding"]
    img = pd.DataFrame([[0.1, 0.9, 0.2], [0.5, 0.5, 0.5]], columns=cols)
    rep = pd.DataFrame([[0.95, 0.1, 0.2], [0.55, 0.45, 0.5]], columns=cols)
    first, second = explain(img, rep)
    assert "report asserts, image does not show: Pleural Effusion" in first
    assert "image shows, report does not assert: Cardiomegaly" in first
    assert second == "no finding-level disagreement"


def test_planted_anomalies():
    reports = ["Left effusion.", "Clear lungs.", "Right apical pneumothorax.", "Normal."]
    planted = plant_anomalies(
        reports, ["p1", "p1", "p2", "p3"], seed=0, flip=lambda s: s.replace("Left", "Right")
    )
    orig = planted[planted.kind == "original"]
    assert orig["report"].tolist() == reports
    swaps = planted[planted.kind == "swap"]
    patients = ["p1", "p1", "p2", "p3"]
    for pair, report in zip(swaps["pair"], swaps["report"], strict=True):
        assert patients[reports.index(report)] != patients[pair]
    flips = planted[planted.kind == "flip"]
    assert flips["pair"].tolist() == [0] and flips["report"].tolist() == ["Right effusion."]
    scores = np.where(planted.kind == "original", 0.0, 1.0)
    aurocs = mismatch_aurocs(scores, planted["kind"].tolist())
    assert aurocs["swap"] == 1.0 and aurocs["flip"] == 1.0 and aurocs["n_original"] == 4


@pytest.mark.slow
def test_flag_cli_end_to_end_after_a_few_training_steps(tmp_path):
    """Pretrain ``tiny`` for a few steps on phantoms, index its reports, flag, evaluate."""
    from radalign.data.sources import open_source
    from radalign.pretrain.config import load_train_config
    from radalign.pretrain.trainer import pretrain
    from radalign.retrieval.build import build_index

    import radalign
    from radalign.cmd_flag import add_parser, run

    settings = {
        "model": "tiny", "output_dir": tmp_path / "run", "batch_size": 8, "max_steps": 4,
        "trackers": "[]", "data.phantoms_dir": tmp_path / "ph", "data.phantoms_n": 40,
        "data.num_workers": 0, "eval_every": 100, "loss.local_weight": 0.5,
    }  # fmt: skip
    trained = pretrain(load_train_config(None, [f"{k}={v}" for k, v in settings.items()]))
    root = tmp_path / "ph" / "jpg"
    model = radalign.load(trained.model_dir)
    build_index(model, open_source(root), kind="reports", out=tmp_path / "ix")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    out = tmp_path / "flags.csv"
    args = parser.parse_args(
        ["flag", str(root), "--model", str(trained.model_dir), "--index", str(tmp_path / "ix"),
         "--fpr", "0.1", "--out", str(out), "--evaluate", "-k", "3"]
    )  # fmt: skip
    assert run(args) == 0
    table = pd.read_csv(out)
    assert len(table) == len(open_source(root))
    assert {"similarity", "score", "flagged", "explanation", "rank"} <= set(table.columns)
    assert table["score"].is_monotonic_decreasing
    assert 1 <= table["flagged"].sum() <= 0.1 * len(table) + 1
    result = json.loads((tmp_path / "flags-eval.json").read_text())
    assert result["n_swap"] == len(table) and 0 <= result["swap"] <= 1


def test_evaluate_planted_matches_scoring_by_hand(tiny_model):
    """The planted-anomaly evaluation (one function for the demo and `radalign flag`)."""
    import numpy as np
    from radalign.data.sections import flip_laterality
    from radalign.encoders.embed import embed_texts
    from radalign.retrieval.index import Index
    from radalign.zeroshot.mismatch import (
        MismatchScorer,
        evaluate_planted,
        mismatch_aurocs,
        plant_anomalies,
    )

    reports = ["Left pleural effusion.", "Right apical pneumothorax.", "Clear lungs.", "Big heart."]
    patients, studies = ["p1", "p2", "p3", "p4"], ["s1", "s2", "s3", "s4"]
    t = embed_texts(tiny_model, reports, progress=False).vectors
    rng = np.random.default_rng(0)
    u = t + 0.1 * rng.standard_normal(t.shape).astype(np.float32)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    import pandas as pd

    meta = pd.DataFrame({"id": studies, "study_id": studies})
    scorer = MismatchScorer(Index.build(t, meta, fingerprint="x"), k=2)
    got = evaluate_planted(tiny_model, scorer, u, reports, patients, studies, seed=3)
    planted = plant_anomalies(reports, patients, seed=3, flip=flip_laterality)
    tp = embed_texts(tiny_model, planted["report"].tolist(), progress=False).vectors
    pair = planted["pair"].to_numpy()
    scores = scorer.score(u[pair], tp, [studies[i] for i in pair])["score"].to_numpy()
    want = mismatch_aurocs(scores, planted["kind"].tolist())
    assert got.keys() == want.keys() and got["n_flip"] == 2.0
    for key in want:
        assert got[key] == want[key] or (np.isnan(got[key]) and np.isnan(want[key]))
