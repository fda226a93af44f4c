"""Fixtures of the retrieval tests."""

from __future__ import annotations

import pytest


class _OtherModel:
    """A model under another fingerprint (stands in for a different model)."""

    def __init__(self, model) -> None:
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def fingerprint(self) -> str:
        return "some-other-model"


@pytest.fixture
def other_model(tiny_model):
    """The ``tiny`` model, but reporting another fingerprint."""
    return _OtherModel(tiny_model)
