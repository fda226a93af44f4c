"""Resumable training checkpoints: the model in ``save_pretrained`` form plus the loop's state.

``checkpoints/step-000200/`` holds ``model/``, ``optimizer.pt``, ``scheduler.pt``, ``rng.pt``
(read back with ``torch.load(weights_only=True)``) and ``state.json`` (step, data position).
Each checkpoint directory is written atomically; ``checkpoints/latest.txt`` names the newest.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from radalign.encoders.atomic import atomic_dir, atomic_write
from radalign.encoders.checkpoint import save_pretrained


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    skipped: int = 0


def save_checkpoint(
    run_dir: Path, model, optimizer, scheduler, rng_states: list, state: LoopState, keep: int
) -> Path:
    """Write a checkpoint of the whole loop; keep the newest ``keep`` of them."""
    root = run_dir / "checkpoints"
    target = root / f"step-{state.step:06d}"
    with atomic_dir(target) as tmp:
        save_pretrained(model, tmp / "model")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_states, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state.__dict__, indent=2) + "\n")
    with atomic_write(root / "latest.txt", mode="w") as fh:
        fh.write(target.name + "\n")
    for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or ``None``."""
    root = run_dir / "checkpoints"
    latest = root / "latest.txt"
    if latest.is_file():
        path = root / latest.read_text().strip()
        if (path / "state.json").is_file():
            return path
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def load_loop_files(path: Path) -> tuple[dict, dict, list, LoopState]:
    """Optimizer and scheduler state dicts, per-rank RNG states and the loop position."""
    load = lambda name: torch.load(path / name, map_location="cpu", weights_only=True)  # noqa: E731
    state = LoopState(**json.loads((path / "state.json").read_text()))
    return load("optimizer.pt"), load("scheduler.pt"), load("rng.pt"), state


def rng_state() -> dict:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
