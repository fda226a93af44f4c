"""The package's front door: a small exported API, and a library that does not go through it."""

from __future__ import annotations

from pathlib import Path

import radalign

REPO = Path(__file__).resolve().parents[1]


def test_exported_api_is_small_and_listed():
    assert dir(radalign) == ["__version__", "load"]
    from radalign.encoders.loading import load

    assert radalign.load is load


def test_library_never_imports_the_front_door():
    """Only the CLI (radalign/) may use ``radalign.load``; the capabilities import
    ``radalign.encoders.loading`` so they never depend on the package's top level."""
    offenders = []
    for folder in ("encoders", "pretrain", "retrieval", "zeroshot"):
        for path in (REPO / folder).glob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "from radalign import" in text or "import radalign\n" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders
