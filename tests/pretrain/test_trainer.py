"""The pretraining loop on CPU: the loss falls, resume is exact, bad input is handled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from radalign.pretrain.config import load_train_config
from radalign.pretrain.trainer import NonFiniteLoss, pretrain


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    from radalign.data.synth import synthesize

    root = tmp_path_factory.mktemp("phantoms")
    synthesize(root, n=96, seed=11, size=128, layouts=("jpg",))
    return root


def _overrides(phantoms: Path, out: Path, **extra) -> list[str]:
    settings = {
        "model": "tiny",
        "output_dir": str(out),
        "batch_size": 8,
        "max_steps": 12,
        "log_every": 1,
        "eval_every": 1000,
        "save_every": 4,
        "keep_checkpoints": 5,
        "trackers": "[]",
        "data.phantoms_dir": str(phantoms),
        "data.phantoms_layout": "jpg",
        "data.num_workers": 0,
        "data.max_val_pairs": 16,
        "optim.lr": 1e-3,
        "optim.warmup_steps": 2,
        "loss.local_weight": 0.5,
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


def _three_steps(phantoms, tmp_path, settings: dict):
    """A 3-step run config in ``tmp_path/run`` (no checkpoint but the last) with ``settings``."""
    return load_train_config(
        None, _overrides(phantoms, tmp_path / "run", max_steps=3, save_every=100, **settings)
    )


def _losses(run: Path) -> dict[int, float]:
    """Per-step training loss from metrics.jsonl (a step logged twice keeps its last value)."""
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "train/loss" in row:
            out[row["step"]] = row["train/loss"]
    return out


@pytest.mark.slow
def test_loss_falls_and_run_is_complete(phantoms, tmp_path):
    config = load_train_config(
        None,
        _overrides(
            phantoms,
            tmp_path / "run",
            max_steps=30,
            eval_every=30,
            save_every=30,
            trackers="[tensorboard]",
        ),
    )
    result = pretrain(config)
    losses = _losses(result.run_dir)
    assert len(losses) == 30
    first, last = sum(list(losses.values())[:5]) / 5, sum(list(losses.values())[-5:]) / 5
    assert last < first - 0.1, (first, last)
    row = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val/loss", "val/global", "val/local", "val/i2t_R@1", "val/t2i_R@10"} <= set(row)
    assert (result.model_dir / "model.safetensors").is_file()
    assert list((result.run_dir / "tb").rglob("events.out.tfevents.*"))
    assert (result.run_dir / "config.yaml").is_file()
    from radalign.encoders.precision import resolve_precision

    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["precision"] == resolve_precision("auto", "cpu").as_dict()  # the default, auto
    assert info["mixed_precision"] == resolve_precision("auto", "cpu").mixed_precision
    import radalign

    trained = radalign.load(result.model_dir)
    assert trained.config == radalign.load("tiny").config
    assert not torch.equal(trained.logit_scale, radalign.load("tiny").logit_scale)


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(phantoms, tmp_path):
    whole = pretrain(load_train_config(None, _overrides(phantoms, tmp_path / "whole")))
    reference = _losses(whole.run_dir)
    assert sorted(reference) == list(range(1, 13))

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "radalign", "pretrain", *_overrides(phantoms, run)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "step-000004" / "state.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model").exists(), "the run finished before it was killed"

    resumed = pretrain(load_train_config(None, _overrides(phantoms, run)), resume=True)
    assert resumed.steps == 12
    got = _losses(run)
    assert sorted(got) == list(range(1, 13))
    for step in range(1, 13):
        assert got[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step
    for name in ("model.safetensors",):
        a = (whole.model_dir / name).read_bytes()
        b = (resumed.model_dir / name).read_bytes()
        assert a == b


def test_resume_refuses_a_changed_model(phantoms, tmp_path):
    run = tmp_path / "run"
    pretrain(load_train_config(None, _overrides(phantoms, run, max_steps=4)))
    changed = _overrides(phantoms, run, max_steps=8, model="demo-resnet18-minilm")
    with pytest.raises(ValueError, match="model config changed"):
        pretrain(load_train_config(None, changed), resume=True)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(
        ValueError, match=r"unknown config key 'loss.lokal_weight'.*loss\.local_weight"
    ):
        load_train_config(None, ["loss.lokal_weight=1"])


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises((ValueError, KeyError), match="learning_rate"):
        load_train_config(path)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(phantoms, tmp_path):
    run = tmp_path / "run"
    pretrain(load_train_config(None, _overrides(phantoms, run, max_steps=4)))
    before = (run / "checkpoints" / "step-000004" / "model" / "model.safetensors").read_bytes()
    # a word-region logit scale beyond float32 makes the first resumed step's loss NaN
    boom = _overrides(phantoms, run, max_steps=40, **{"loss.local_tau3": 1e39})
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step 5"):
        pretrain(load_train_config(None, boom), resume=True)
    latest = (run / "checkpoints" / "latest.txt").read_text().strip()
    assert latest == "step-000004"
    after = (run / "checkpoints" / "step-000004" / "model" / "model.safetensors").read_bytes()
    assert before == after
    assert (run / "model" / "model.safetensors").read_bytes() == before


def test_bad_pairs_are_replaced_and_counted(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    rows = ["image_path,report,patient_id,split"]
    for i in range(24):
        Image.new("L", (64, 64), 40 + 8 * i).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,Finding number {i} in the right lung.,p{i},train")
    (tmp_path / "img" / "3.png").write_bytes(b"not a png")
    (tmp_path / "img" / "7.png").write_bytes(b"")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    overrides = [
        o for o in _overrides(tmp_path, tmp_path / "run", max_steps=6) if "phantoms" not in o
    ] + [f"data.source={tmp_path / 'manifest.csv'}"]
    result = pretrain(load_train_config(None, overrides))
    assert result.steps == 6
    reasons = {path.split("/")[-1] for path, _, _ in result.skipped.rows}
    assert reasons == {"3.png", "7.png"}
    assert (result.run_dir / "skipped.csv").read_text().count("\n") >= 3


@pytest.mark.slow
def test_two_process_run_through_accelerate_launch(phantoms, tmp_path):
    """``accelerate launch`` with 2 CPU processes trains, gathers and checkpoints."""
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "radalign",
        "pretrain",
        *_overrides(phantoms, run, max_steps=4, batch_size=4),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["num_processes"] == 2
    assert sorted(_losses(run)) == [1, 2, 3, 4]
    assert (run / "checkpoints" / "step-000004" / "rng.pt").is_file()
    rngs = torch.load(run / "checkpoints" / "step-000004" / "rng.pt", weights_only=True)
    assert len(rngs) == 2


OPEN_CLIP_TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.mark.parametrize(
    "towers,checkpointing", [("timm+hf", True), ("open_clip", True), ("open_clip", False)]
)
def test_checkpointing_and_top_text_layers_train_the_right_parameters(
    towers, checkpointing, tmp_path, single_thread
):
    """``gradient_checkpointing`` and ``optim.text_trainable_layers`` work for every tower kind:
    the top text block alone trains, and (checkpointing) both towers' top blocks re-run in
    backward."""
    import warnings

    from radalign.pretrain.config import TrainConfig
    from radalign.pretrain.trainer import _build_model

    name = "tiny"
    if towers == "open_clip":
        (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPEN_CLIP_TINY}))
        name = f"open_clip:local-dir:{tmp_path}"
    config = TrainConfig(model=name, random_init=True, gradient_checkpointing=checkpointing)
    config.optim.text_trainable_layers = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _build_model(config).train()
    deprecated = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert not [m for m in deprecated if "checkpointing" in m], deprecated

    calls = {"image": [], "text": []}
    for part, tower in (("image", model.image_tower), ("text", model.text_tower)):
        for m in tower.blocks()[-1].modules():
            m.register_forward_hook(lambda *_, c=calls[part]: c.append(1))
    img, txt = model(torch.randn(2, 3, 64, 64), model.tokenize(["Left effusion.", "Clear."]))
    in_forward = {k: len(v) for k, v in calls.items()}
    (img.embedding.sum() + img.regions.sum() + txt.embedding.sum() + txt.words.sum()).backward()
    recomputed = {k: len(calls[k]) > in_forward[k] for k in calls}
    assert recomputed == {"image": checkpointing, "text": checkpointing}

    text = model.text_tower
    top = {id(p) for p in text.blocks()[-1].parameters()}
    assert top
    assert {n for n, p in text.named_parameters() if p.grad is not None} == {
        n for n, p in text.named_parameters() if id(p) in top
    }
    assert all(p.grad is not None for p in model.image_tower.parameters())


@pytest.mark.parametrize("freeze_text", [False, True])
def test_flip_negatives_train_both_text_paths(phantoms, tmp_path, monkeypatch, freeze_text):
    """``loss.flip_negatives``: every batch's reports go through the report tower a second time
    with left and right swapped (cached too when the tower is frozen) and the loss stays finite."""
    from radalign.pretrain import objective as objective_module

    seen = []
    forward = objective_module.Objective.forward

    def spy(self, image, text, logit_scale, hard_negatives=None):
        seen.append((text.embedding.shape[0], hard_negatives))
        return forward(self, image, text, logit_scale, hard_negatives)

    monkeypatch.setattr(objective_module.Objective, "forward", spy)
    config = _three_steps(
        phantoms,
        tmp_path,
        {"loss.flip_negatives": "true", "optim.freeze_text": str(freeze_text).lower()},
    )
    result = pretrain(config)
    seen = [(rows, neg) for rows, neg in seen if neg is not None]  # validation passes none
    assert result.steps == 3 and len(seen) == 3
    for rows, (h, valid) in seen:
        assert h.shape[0] == rows == 8 and valid.dtype == torch.bool
    assert any(bool(valid.any()) for _, (_, valid) in seen)  # phantom reports name sides
    assert all(torch.isfinite(torch.tensor(v)) for v in _losses(result.run_dir).values())
    if freeze_text:  # the swapped training reports were cached up front with the originals
        from radalign.data.sections import flip_laterality
        from radalign.pretrain.data import load_pairs

        train = [r.report.strip() for r in load_pairs(config.data, split="train") if r.report]
        assert all(flip_laterality(r) in result.text_cache.rows for r in train)


def test_cached_bottom_trains_only_the_top_text_layer(phantoms, tmp_path):
    """``optim.cache_text_bottom``: the frozen bottom runs once per report (its states cached
    with the flipped reports), the top layer trains on them, the bottom stays as loaded."""
    from radalign.data.sections import flip_laterality
    from radalign.pretrain.data import load_pairs

    import radalign

    config = _three_steps(
        phantoms,
        tmp_path,
        {
            "optim.text_trainable_layers": 1,
            "optim.cache_text_bottom": "true",
            "optim.text_lr": 1e-2,
            "loss.flip_negatives": "true",
        },
    )
    result = pretrain(config)
    assert result.steps == 3 and result.text_cache.top_layers == 1
    train = [r.report.strip() for r in load_pairs(config.data, split="train") if r.report]
    assert all(r in result.text_cache.rows for r in train)
    assert all(flip_laterality(r) in result.text_cache.rows for r in train)
    before = radalign.load("tiny").text_tower.blocks()
    after = radalign.load(result.model_dir).text_tower.blocks()
    changed = [
        not all(torch.equal(a, b) for a, b in zip(x.state_dict().values(), y.state_dict().values()))
        for x, y in zip(before, after, strict=True)
    ]
    assert changed == [False] * (len(before) - 1) + [True]
