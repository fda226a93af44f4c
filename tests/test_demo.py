"""``radalign demo`` end to end with a test-sized config; a rerun reuses every stage."""

from __future__ import annotations

import json

import pytest

from radalign.cli import main


@pytest.mark.slow
def test_demo_runs_every_stage_and_reuses(tmp_path, capsys):
    config = tmp_path / "tiny-demo.yaml"
    config.write_text(
        "model: tiny\nbatch_size: 8\nmax_steps: 4\nlog_every: 2\neval_every: 4\nsave_every: 4\n"
        "trackers: []\ndata:\n  num_workers: 0\n  phantoms_n: 60\nloss:\n  local_weight: 0.5\n"
    )
    argv = ["demo", "--out", str(tmp_path / "d"), "--config", str(config)]  # n from the config
    assert main([*argv, "--workers", "1"]) == 0
    out = capsys.readouterr().out
    for stage in ("phantoms", "pretrain", "index", "zeroshot", "retrieve", "flags", "report"):
        assert f"[{stage:>8}]" in out
    summary = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert summary["pretrain"]["steps"] == 4
    assert summary["phantoms"]["train_studies"] == 60
    assert 0 <= summary["zeroshot"]["macro_auroc"] <= 1
    assert 0 <= summary["flags"]["swap"] <= 1
    assert (tmp_path / "d" / "flags.csv").is_file()
    assert (tmp_path / "d" / "report" / "index.html").is_file()
    game = summary["report"]
    assert game["pointing_words"] > 0  # the phantom test scans have planted finding words
    assert game["pointing_game"] == game["pointing_hits"] / game["pointing_words"]
    assert (tmp_path / "d" / "zeroshot-eval.csv").is_file()
    gallery = json.loads((tmp_path / "d" / "retrieval.json").read_text())
    assert gallery and all(len(g["hits"]) == 5 for g in gallery)
    import pandas as pd

    preds = pd.read_csv(tmp_path / "d" / "zeroshot-preds.csv")
    assert {"id", "image_path", "Cardiomegaly", "true:Cardiomegaly"} <= set(preds.columns)
    assert main([*argv, "--workers", "1"]) == 0
    again = capsys.readouterr().out
    assert again.count("reusing") == 3  # phantoms, pretrain, index
