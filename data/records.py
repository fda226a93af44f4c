"""One (image, report) pair, and a loaded set of them with what was skipped on the way."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd
from radalign.encoders.errors import SkipLog

__all__ = [
    "ALL_SPLITS",
    "SPLIT_NAMES",
    "PairRecord",
    "PairSet",
    "normalize_split",
    "normalize_view",
    "split_option",
]

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
ALL_SPLITS = "all"
"""The ``--split`` value that selects every split."""

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_VIEW_ALIASES = {
    "L": "LATERAL",
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
    "AP SUPINE": "AP",
    "SUPINE AP": "AP",
    "AP ERECT": "AP",
    "AP UPRIGHT": "AP",
    "AP PORTABLE": "AP",
    "PORTABLE AP": "AP",
    "AP SEMI-ERECT": "AP",
    "AP SEMIERECT": "AP",
    "PA ERECT": "PA",
    "POSTERO-ANTERIOR": "PA",
    "POSTEROANTERIOR": "PA",
    "ANTERO-POSTERIOR": "AP",
    "ANTEROPOSTERIOR": "AP",
}


def normalize_split(value: object) -> str | None:
    """``train``/``val``/``test`` (MIMIC's ``validate`` -> ``val``); ``None`` for blank/unknown."""
    if value is None or value != value:  # None or NaN
        return None
    return _SPLIT_ALIASES.get(str(value).strip().lower())


def split_option(value: object) -> str | None:
    """The split a ``--split``/``split=`` option selects: ``train``/``val``/``test`` through
    :func:`normalize_split`, ``None`` (every split) for ``all``, blank or ``None``; an unknown
    name is a :class:`ValueError`."""
    if value is None or str(value).strip().lower() in ("", ALL_SPLITS):
        return None
    key = normalize_split(value)
    if key is None:
        raise ValueError(
            f"unknown split {value!r}; use one of {', '.join(SPLIT_NAMES)} or {ALL_SPLITS}"
        )
    return key


def normalize_view(value: object) -> str | None:
    """Upper-case view name with single spaces; supine/erect AP and PA collapse to ``AP``/``PA``,
    ``L``/``LAT`` to ``LATERAL``; other MIMIC values (``LL``, ``AP AXIAL``, ``AP LLD``, ...) stay
    as they are. ``None`` for blank."""
    if value is None or value != value:
        return None
    key = " ".join(str(value).upper().split())
    if not key or key in {"NAN", "NONE", "NULL"}:
        return None
    return _VIEW_ALIASES.get(key, key)


@dataclass(slots=True)
class PairRecord:
    """One training pair.

    ``report`` is the text chosen for training (already sectioned and cleaned), ``sections`` all
    sections found. ``labels`` are CheXpert-style (1 positive, 0 negative, -1 uncertain); absent
    labels are absent keys. ``patient_id`` is ``None`` when the source gave none (the split then
    falls back to the study id, else the record id).
    """

    id: str
    image_path: Path | None
    report: str
    patient_id: str | None = None
    study_id: str | None = None
    view: str | None = None
    split: str | None = None
    labels: dict[str, float] = field(default_factory=dict)
    study_date: str | None = None
    sections: dict[str, str] = field(default_factory=dict)
    source: str = "manifest"
    #: Extra per-record fields of the source as strings (manifest columns such as sex, age,
    #: date, site; MIMIC metadata StudyTime, Rows, Columns); used by the audit.
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class PairSet:
    """Records loaded from one source, with the rows skipped (bad input) and filtered (options).

    ``skipped`` holds bad input with a reason ("missing image", "empty report", ...);
    ``filtered`` counts rows left out on purpose by the options (``"split"``, ``"view"``,
    ``"one image per study"``). ``description`` says what was read, in words.
    """

    records: list[PairRecord]
    skipped: SkipLog
    layout: str
    root: Path
    description: str = ""
    filtered: Counter = field(default_factory=Counter)
    options: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PairRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> PairRecord:
        return self.records[i]

    def split(self, name: str) -> list[PairRecord]:
        """Records of split ``name`` (``train``/``val``/``test``; ``validate`` is ``val``)."""
        key = normalize_split(name)
        if key is None:
            raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLIT_NAMES)}")
        return [r for r in self.records if r.split == key]

    def split_counts(self) -> Counter:
        return Counter(r.split for r in self.records)

    def to_frame(self) -> pd.DataFrame:
        """One row per record, one column per :class:`PairRecord` field; ``image_path`` as a
        string (``None`` if absent), ``labels``, ``sections`` and ``metadata`` as dict objects."""
        cols = [f.name for f in fields(PairRecord)]
        frame = pd.DataFrame(
            [[getattr(r, c) for c in cols] for r in self.records], columns=cols, dtype=object
        )
        frame["image_path"] = [None if p is None else str(p) for p in frame["image_path"]]
        return frame

    def __repr__(self) -> str:
        return (
            f"PairSet({self.layout}, {len(self.records)} records, {self.skipped.summary()}, "
            f"root={str(self.root)!r})"
        )
