"""Fixtures of the encoder tests."""

from __future__ import annotations

import pytest


def _tower_step(tower, inputs) -> tuple[bool, set[str]]:
    """One forward/backward: did the top block re-run in backward (activation checkpointing),
    and which parameters got a gradient."""
    calls = []
    top = tower.blocks()[-1].modules()
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in top]
    tower.zero_grad(set_to_none=True)
    out = tower(inputs)
    in_forward = len(calls)
    sum(o.sum() for o in out if o.is_floating_point()).backward()
    for hook in hooks:
        hook.remove()
    return len(calls) > in_forward, {n for n, p in tower.named_parameters() if p.grad is not None}


def _names(tower, block) -> set[str]:
    ids = {id(p) for p in block.parameters()}
    return {n for n, p in tower.named_parameters() if id(p) in ids}


def _check_tower_protocol(tower, inputs) -> None:
    """Checkpointing on/off and ``train_top_layers`` None/1/0, with a real backward each time."""
    tower.train()
    rerun, got = _tower_step(tower, inputs)
    assert not rerun and got == {n for n, _ in tower.named_parameters()}
    tower.set_grad_checkpointing(True)
    tower.train_top_layers(1)
    rerun, got = _tower_step(tower, inputs)
    top = _names(tower, tower.blocks()[-1])
    assert rerun and top and got == top
    tower.set_grad_checkpointing(False)
    assert _tower_step(tower, inputs) == (False, top)
    tower.train_top_layers(len(tower.blocks()) + 5)  # more than there are: every block
    assert {n for n, p in tower.named_parameters() if p.requires_grad} == set().union(
        *(_names(tower, b) for b in tower.blocks())
    )
    tower.train_top_layers(0)
    assert not any(p.requires_grad for p in tower.parameters())
    tower.train_top_layers(None)
    assert all(p.requires_grad for p in tower.parameters())
    with pytest.raises(ValueError, match="top layers"):
        tower.train_top_layers(-1)


@pytest.fixture
def tower_protocol():
    """``.step(tower, inputs) -> (recomputed_in_backward, names_with_grad)`` and
    ``.check(tower, inputs)``: the tower protocol (checkpointing, top layers) end to end."""
    from types import SimpleNamespace

    return SimpleNamespace(step=_tower_step, check=_check_tower_protocol)
