"""Shared test set-up: offline hub, paths to ../shared/data, and a skip marker for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RADALIGN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that take it are skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model():
    """The ``tiny`` registry model (random weights), in eval mode. Do not mutate it."""
    import radalign

    model = radalign.load("tiny")
    model.eval()
    before = model.fingerprint()
    yield model
    assert model.fingerprint() == before, "a test changed the session's shared tiny_model"


@pytest.fixture
def single_thread():
    """Tiny tensors on a busy 2-core machine: one thread is far faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
