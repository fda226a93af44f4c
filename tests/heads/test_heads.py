"""Fusion heads, linear wrapper, save/load, class weights and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from radalign.heads.io import load_head, save_head
from radalign.heads.train import class_weights, score, train_head


def _data(n=240, d=(16, 12), c=3, seed=0, task="multilabel"):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(n, k)).astype(np.float32) for k in d]
    w = [rng.normal(size=(k, c)) for k in d]
    logits = sum(x @ m for x, m in zip(xs, w))
    y = (logits > 0).astype(np.float32) if task == "multilabel" else logits.argmax(1)
    return xs, y


def _split(xs, y, n_tr=160):
    return [x[:n_tr] for x in xs], y[:n_tr], [x[n_tr:] for x in xs], y[n_tr:]


@pytest.mark.parametrize("kind", ["early", "late"])
@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_heads_learn_separable(kind, task, single_thread):
    xs, y = _data(task=task)
    tx, ty, vx, vy = _split(xs, y)
    head = train_head(kind, tx, ty, vx, vy, task=task, max_epochs=60, patience=60)
    losses = [h["train_loss"] for h in head.history]
    assert losses[-1] < 0.6 * losses[0]
    m = score(head.predict_proba(vx), vy, task, head.config["columns"], n_boot=50)
    assert m["auroc_macro"] > 0.8
    assert all(v["ci_low"] <= v["auroc"] <= v["ci_high"] for v in m["per_class"].values())


@pytest.mark.parametrize("kind", ["early", "late"])
def test_save_load_round_trip_exact(kind, tmp_path, single_thread):
    xs, y = _data()
    head = train_head(kind, *_split(xs, y), max_epochs=3)
    save_head(head, tmp_path / "h")
    back = load_head(tmp_path / "h")
    assert back.config["dims"] == [16, 12]
    np.testing.assert_array_equal(back.predict_proba(xs), head.predict_proba(xs))


def test_linear_wraps_probe_and_round_trips(tmp_path):
    from radalign.zeroshot.linear_probe import fit_linear_probe

    xs, y = _data()
    tx, ty, vx, vy = _split(xs, y)
    head = train_head("linear", tx, ty, vx, vy)
    ref = fit_linear_probe(np.hstack(tx), ty, np.hstack(vx), vy).predict_proba(np.hstack(vx))
    np.testing.assert_allclose(head.predict_proba(vx), ref, atol=1e-5)
    save_head(head, tmp_path / "lin")
    np.testing.assert_array_equal(
        load_head(tmp_path / "lin").predict_proba(vx), head.predict_proba(vx)
    )
    mc_xs, mc_y = _data(task="multiclass")
    mc = train_head("linear", *_split(mc_xs, mc_y), task="multiclass")
    assert mc.predict_proba(mc_xs).shape == (240, 3)


def test_class_weights_values_and_effect(single_thread):
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], np.float32)
    np.testing.assert_allclose(class_weights(y, "multilabel", 2), [3.0, 3.0])
    yc = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(class_weights(yc, "multiclass", 2), [4 / 6, 2.0])
    # rare positive class: weighting raises the predicted rate of positives
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    yr = ((x[:, 0] + 0.8 * rng.normal(size=400)) > 1.6).astype(np.float32)[:, None]
    args = ([x[:300]], yr[:300], [x[300:]], yr[300:])
    plain = train_head("early", *args, max_epochs=30, patience=30)
    weighted = train_head("early", *args, use_class_weights=True, max_epochs=30, patience=30)
    assert weighted.predict_proba([x]).mean() > plain.predict_proba([x]).mean()


def test_bad_inputs():
    xs, y = _data()
    tx, ty, vx, vy = _split(xs, y)
    with pytest.raises(ValueError, match="dims"):
        train_head("early", tx, ty, [vx[0], vx[1][:, :5]], vy)
    with pytest.raises(ValueError, match="unknown head"):
        train_head("mlp", tx, ty, vx, vy)
    with pytest.raises(ValueError, match="unknown task"):
        train_head("early", tx, ty, vx, vy, task="regression")
    with pytest.raises(ValueError, match="only 0 and 1"):
        train_head("early", tx, ty * 2, vx, vy)
    head = train_head("late", tx, ty, vx, vy, max_epochs=1)
    with pytest.raises(ValueError, match="do not match"):
        head.predict_proba([vx[0]])
    with pytest.raises(ValueError, match="NaN"):
        head.predict_proba([np.full_like(vx[0], np.nan), vx[1]])


def test_load_head_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_head(tmp_path)
    xs, y = _data()
    head = train_head("early", *_split(xs, y), max_epochs=1)
    save_head(head, tmp_path / "h")
    cfg = (tmp_path / "h" / "config.json").read_text().replace('"head": "early"', '"head": "late"')
    (tmp_path / "h" / "config.json").write_text(cfg)
    with pytest.raises(ValueError, match="do not match"):
        load_head(tmp_path / "h")
    assert torch.get_num_threads() >= 1
