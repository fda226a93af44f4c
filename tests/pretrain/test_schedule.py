"""The learning-rate schedule: transformers' warmup + cosine, with radalign's per-step values."""

from __future__ import annotations

import io
import math

import pytest
import torch
from radalign.pretrain.config import load_train_config
from radalign.pretrain.trainer import _scheduler


def _old_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """The hand-written schedule this replaced (radalign <= issue 15)."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(lr: float = 1e-3, text_lr: float = 5e-4) -> torch.optim.Optimizer:
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr},
        {"params": [torch.nn.Parameter(torch.zeros(3))], "lr": text_lr},
    ]
    return torch.optim.AdamW(groups)


@pytest.mark.parametrize(
    ("warmup", "total", "floor"),
    [(50, 300, 0.0), (0, 40, 0.0), (0, 40, 0.1), (5, 30, 0.2), (1, 10, 0.0), (30, 30, 0.0)],
)
def test_lr_per_step_equals_the_old_formula(warmup, total, floor):
    config = load_train_config(
        None,
        [f"optim.warmup_steps={warmup}", f"max_steps={total}", f"optim.min_lr_ratio={floor}"],
    )
    opt = _optimizer()
    sched = _scheduler(opt, config)
    for step in range(total + 1):
        want = _old_factor(step, warmup, total, floor)
        assert sched.get_last_lr() == pytest.approx([1e-3 * want, 5e-4 * want], rel=1e-12, abs=0)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(sched.get_last_lr())
        opt.step()
        sched.step()


def test_scheduler_state_round_trips_through_state_dict():
    config = load_train_config(
        None, ["optim.warmup_steps=3", "max_steps=20", "optim.min_lr_ratio=0.1"]
    )
    opt = _optimizer()
    sched = _scheduler(opt, config)
    for _ in range(7):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # checkpoints never unpickle arbitrary objects

    opt2 = _optimizer()
    sched2 = _scheduler(opt2, config)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    for _ in range(10):
        assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr(), rel=1e-12)
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
