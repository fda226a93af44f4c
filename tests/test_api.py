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


ALLOWED = {
    "encoders": set(),
    "data": {"encoders"},
    "retrieval": {"encoders", "data"},
    "zeroshot": {"encoders", "data", "retrieval"},
    "pretrain": {"encoders", "data"},
}


def test_capabilities_import_in_one_direction():
    """encoders <- data <- {pretrain, retrieval <- zeroshot}; nothing but the CLI imports pretrain."""
    import re

    pattern = re.compile(
        r"^\s*(?:from|import)\s+radalign\.(encoders|data|pretrain|retrieval|zeroshot)\b", re.M
    )
    wrong = []
    for folder, allowed in ALLOWED.items():
        for path in (REPO / folder).glob("*.py"):
            used = set(pattern.findall(path.read_text(encoding="utf-8"))) - {folder}
            if used - allowed:
                wrong.append(f"{folder}/{path.name}: {sorted(used - allowed)}")
    assert not wrong, wrong
