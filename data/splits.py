"""Deterministic patient-disjoint train/val/test splits for sources without an official split.

A patient's split depends only on its id and the seed (a keyed hash mapped to [0, 1) and cut at
the cumulative fractions), never on row order or on which other patients are present: adding
patients to a dataset never moves existing ones between splits. Fractions are therefore met in
expectation, not exactly (a 50-patient set can come out 42/3/5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from radalign.data.records import SPLIT_NAMES

__all__ = ["DEFAULT_FRACTIONS", "assign_splits", "split_key", "split_of"]

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def _bounds(fractions: Sequence[float]) -> tuple[float, float]:
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or min(fr) < 0 or sum(fr) <= 0:
        raise ValueError(
            f"fractions must be three non-negative numbers (train, val, test); got {fractions!r}"
        )
    total = sum(fr)
    return fr[0] / total, (fr[0] + fr[1]) / total


def _unit(key: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_of(key: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> str:
    """The split (``train``/``val``/``test``) of one patient id."""
    a, b = _bounds(fractions)
    u = _unit(str(key), seed)
    return SPLIT_NAMES[0] if u < a else SPLIT_NAMES[1] if u < b else SPLIT_NAMES[2]


def assign_splits(
    patient_ids: Iterable[str | None],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, str]:
    """``{patient_id: split}`` for every distinct non-empty id (``None``/blank ids are ignored:
    give those rows a fallback key with :func:`split_key` first)."""
    a, b = _bounds(fractions)
    out: dict[str, str] = {}
    for pid in patient_ids:
        if pid is None or pid != pid:
            continue
        key = str(pid)
        if not key or key in out:
            continue
        u = _unit(key, seed)
        out[key] = SPLIT_NAMES[0] if u < a else SPLIT_NAMES[1] if u < b else SPLIT_NAMES[2]
    return out


def split_key(patient_id: str | None, study_id: str | None, record_id: str) -> str:
    """The id a row is split by: its patient, else its study, else the record itself."""
    for k, prefix in ((patient_id, ""), (study_id, "study:"), (record_id, "id:")):
        if k is not None and k == k and str(k):
            return prefix + str(k)
    return "id:"
