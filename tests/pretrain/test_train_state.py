"""Checkpoints of the loop: atomic, newest kept, found again, read back without unpickling."""

from __future__ import annotations

import json

import pytest
import torch
from radalign.pretrain.train_state import (
    LoopState,
    find_checkpoint,
    load_loop_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


@pytest.fixture
def parts():
    """A model of its own (the session's ``tiny_model`` must not be changed), one step taken."""
    import radalign

    model = radalign.load("tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    model.logit_scale.grad = torch.ones(())
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_save_find_and_load_round_trip(parts, tmp_path):
    model, optimizer, scheduler = parts
    state = LoopState(step=7, epoch=1, batches_in_epoch=3, skipped=2)
    path = save_checkpoint(tmp_path, model, optimizer, scheduler, [rng_state()], state, keep=2)
    assert path.name == "step-000007" and find_checkpoint(tmp_path) == path
    assert (tmp_path / "checkpoints" / "latest.txt").read_text().strip() == path.name
    opt, sched, rngs, loaded = load_loop_files(path)
    assert loaded == state
    assert sched == scheduler.state_dict()
    assert opt["state"].keys() == optimizer.state_dict()["state"].keys()
    assert torch.equal(rngs[0]["torch"], rng_state()["torch"])
    assert json.loads((path / "state.json").read_text())["batches_in_epoch"] == 3
    assert (path / "model" / "model.safetensors").is_file()


def test_keeps_the_newest_and_skips_incomplete(parts, tmp_path):
    model, optimizer, scheduler = parts
    for step in (1, 2, 3):
        save_checkpoint(
            tmp_path, model, optimizer, scheduler, [rng_state()], LoopState(step=step), keep=2
        )
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert names == ["step-000002", "step-000003"]
    (tmp_path / "checkpoints" / "latest.txt").write_text("step-000009\n")  # names a missing one
    (tmp_path / "checkpoints" / "step-000009").mkdir()  # no state.json: not complete
    assert find_checkpoint(tmp_path).name == "step-000003"
    assert find_checkpoint(tmp_path / "nothing-here") is None


def test_rng_state_restores_the_draws():
    saved = rng_state()
    a = torch.rand(3)
    set_rng_state(saved)
    assert torch.equal(torch.rand(3), a)
