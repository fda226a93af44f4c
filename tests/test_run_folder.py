"""``RunFolder``: the typed reader of a run folder shared by ``radalign demo`` and ``report``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from radalign.encoders.errors import InputError

from radalign.run_folder import RunFolder, RunInfo

RUN_JSON = {
    "radalign": "0.1.0",
    "torch": "2.14.1",
    "num_processes": 2,
    "device": "cpu",
    "device_name": "",
    "mixed_precision": "bf16",
    "precision": {"requested": "auto", "used": "bf16", "reason": "CPU has AVX512-BF16"},
    "resumed_from": None,
    "started": "2026-12-04T01:25:01+0000",
}


def _pretrain_run(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "run.json").write_text(json.dumps(RUN_JSON), encoding="utf-8")
    (root / "config.yaml").write_text("model: tiny\nmax_steps: 2\n", encoding="utf-8")
    rows = [{"step": 1, "train/loss": 2.5}, {"step": 2, "train/loss": 2.0}]
    lines = [json.dumps(r) for r in rows] + ["[1, 2]", '{"step": 3, "train/lo']  # killed run
    (root / "metrics.jsonl").write_text("\n".join(lines), encoding="utf-8")
    return root


def test_pretrain_run_folder(tmp_path):
    run = RunFolder.open(_pretrain_run(tmp_path / "run"))
    assert run.root == run.train_dir == tmp_path / "run"
    assert run.model_dir == tmp_path / "run" / "model"
    assert run.info() == RunInfo(
        radalign="0.1.0",
        torch="2.14.1",
        num_processes=2,
        device="cpu",
        device_name="",
        precision_requested="auto",
        precision_used="bf16",
        precision_reason="CPU has AVX512-BF16",
        resumed_from=None,
        started="2026-12-04T01:25:01+0000",
    )
    assert run.config_text() == "model: tiny\nmax_steps: 2\n"
    assert run.metrics() == [{"step": 1, "train/loss": 2.5}, {"step": 2, "train/loss": 2.0}]
    assert run.summary() is None and run.gallery() is None  # not a demo run
    assert RunFolder.table(run.flags_csv) is None


def test_demo_run_folder(tmp_path):
    root = tmp_path / "demo"
    _pretrain_run(root / "pretrain")
    (root / "demo.json").write_text(json.dumps({"pretrain": {"steps": 2}}), encoding="utf-8")
    gallery = [{"id": "s1", "hits": []}, "not a scan"]
    (root / "retrieval.json").write_text(json.dumps(gallery), encoding="utf-8")
    (root / "flags.csv").write_text("id,score\nx,0.5\n", encoding="utf-8")
    run = RunFolder.open(root)
    assert run == RunFolder.demo(root)  # the reader finds what the demo writes
    assert run.train_dir == root / "pretrain" and run.info().precision_used == "bf16"
    assert run.metrics_path == root / "pretrain" / "metrics.jsonl"
    assert run.summary() == {"pretrain": {"steps": 2}}
    assert run.gallery() == [{"id": "s1", "hits": []}]
    assert RunFolder.table(run.flags_csv) == [{"id": "x", "score": "0.5"}]
    assert run.phantoms_test_dir == root / "phantoms-test" and run.index_dir.parent == root


def test_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        RunFolder.open(tmp_path / "nowhere")
    stray = tmp_path / "stray"
    (stray / "pretrain").mkdir(parents=True)
    (stray / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"stray: not a run folder \(no run.json"):
        RunFolder.open(stray)


def test_broken_run_files_are_clear_errors(tmp_path):
    run = RunFolder.open(_pretrain_run(tmp_path / "run"))
    (run.train_dir / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"run.json: invalid run.json"):
        run.info()
    (run.train_dir / "run.json").write_text('{"num_processes": "two"}', encoding="utf-8")
    with pytest.raises(InputError, match="invalid run.json"):
        run.info()
    (run.root / "demo.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InputError, match="invalid demo.json"):
        run.summary()


def test_report_command_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    from radalign.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report").exists()
