"""``radalign data check``: what a source holds and what is wrong with it, before training.

:func:`check` opens a source with :func:`~radalign.data.sources.open_source` (same options)
and counts pairs, patients, studies, splits, views, report lengths, missing sections, skipped rows
by reason (with example paths), rows without a patient id and duplicate ids; with
``decode=True`` it also decodes every image and counts the unreadable ones.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from radalign.data.sections import findings_text, impression_text
from radalign.data.sources import open_source
from radalign.encoders.errors import InputError

__all__ = ["CheckReport", "check"]


@dataclass
class CheckReport:
    """Counts describing one source; :meth:`summary` prints them, :meth:`to_dict` is JSON-able."""

    path: str
    layout: str
    description: str = ""
    n_pairs: int = 0
    n_patients: int = 0
    n_studies: int = 0
    n_with_image: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    report_words: dict[str, float] = field(default_factory=dict)
    missing_sections: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    no_patient_id: int = 0
    duplicate_ids: int = 0
    decoded: int | None = None
    unreadable: dict[str, int] = field(default_factory=dict)
    unreadable_examples: dict[str, list[str]] = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def n_unreadable(self) -> int:
        return sum(self.unreadable.values())

    def to_dict(self) -> dict:
        out = asdict(self)
        out["n_skipped"] = self.n_skipped
        out["n_unreadable"] = self.n_unreadable
        return out

    def summary(self) -> str:
        """A human-readable, aligned multi-line summary."""
        rows: list[tuple[str, str]] = [
            ("source", self.path),
            ("layout", self.layout),
        ]
        if self.description:
            rows.append(("read", self.description))
        rows += [
            ("pairs", f"{self.n_pairs:,}"),
            ("patients", f"{self.n_patients:,}"),
            ("studies", f"{self.n_studies:,}"),
            ("with image", f"{self.n_with_image:,}"),
            ("splits", _counts(self.splits)),
            ("views", _counts(self.views)),
        ]
        if len(self.sources) > 1:
            rows.append(("record sources", _counts(self.sources)))
        if self.report_words:
            w = self.report_words
            rows.append(
                (
                    "report words",
                    f"min {w['min']:g}, median {w['median']:g}, p95 {w['p95']:g}, max {w['max']:g}",
                )
            )
        rows.append(("sections missing", _counts(self.missing_sections)))
        if self.labels:
            top = dict(Counter(self.labels).most_common(10))
            more = len(self.labels) - len(top)
            rows.append(("labels (positive)", _counts(top) + (f", +{more} more" if more else "")))
        rows.append(("no patient id", f"{self.no_patient_id:,}"))
        rows.append(("duplicate ids", f"{self.duplicate_ids:,}"))
        rows.append(("filtered by options", _counts(self.filtered)))
        rows.append(("skipped (bad input)", f"{self.n_skipped:,}"))
        for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            rows.append((f"  {reason}", f"{n:,}"))
            for ex in self.skipped_examples.get(reason, []):
                rows.append(("", f"  e.g. {ex}"))
        if self.decoded is not None:
            rows.append(("decoded", f"{self.decoded:,} images, {self.n_unreadable:,} unreadable"))
            for reason, n in sorted(self.unreadable.items(), key=lambda kv: -kv[1]):
                rows.append((f"  {reason}", f"{n:,}"))
                for ex in self.unreadable_examples.get(reason, []):
                    rows.append(("", f"  e.g. {ex}"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows)


def _counts(counter: dict[str, int]) -> str:
    if not counter:
        return "none"
    return ", ".join(f"{k}: {v:,}" for k, v in counter.items())


def _sorted_counts(values) -> dict[str, int]:
    c = Counter("(none)" if v is None else str(v) for v in values)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def check(
    path: str | os.PathLike,
    *,
    decode: bool = False,
    examples: int = 5,
    **options,
) -> CheckReport:
    """Open ``path`` with ``open_source(path, **options)`` and describe what it holds.

    ``decode=True`` also decodes every record's image with
    :func:`radalign.encoders.imageio.load_image` and counts failures by reason; ``examples`` caps
    the example paths listed per reason.
    """
    pairs = open_source(path, **options)
    recs = pairs.records
    report = CheckReport(path=str(path), layout=pairs.layout, description=pairs.description)
    report.options = dict(pairs.options)
    report.n_pairs = len(recs)
    report.n_patients = len({r.patient_id for r in recs if r.patient_id is not None})
    report.n_studies = len({r.study_id or r.id for r in recs})
    report.n_with_image = sum(r.image_path is not None for r in recs)
    split_order = {"train": 0, "val": 1, "test": 2}
    splits = Counter(r.split or "(none)" for r in recs)
    report.splits = dict(sorted(splits.items(), key=lambda kv: (split_order.get(kv[0], 9), kv[0])))
    report.views = _sorted_counts(r.view for r in recs)
    report.sources = _sorted_counts(r.source for r in recs)
    if recs:
        words = np.array([len(r.report.split()) for r in recs], dtype=float)
        report.report_words = {
            "min": float(words.min()),
            "median": float(np.median(words)),
            "p95": float(np.percentile(words, 95)),
            "max": float(words.max()),
        }
    report.missing_sections = {
        "no FINDINGS": sum(not findings_text(r.sections) for r in recs),
        "no IMPRESSION": sum(not impression_text(r.sections) for r in recs),
    }
    labels: Counter = Counter()
    for r in recs:
        labels.update(k for k, v in r.labels.items() if v == 1)
    report.labels = dict(labels.most_common())
    report.no_patient_id = sum(r.patient_id is None for r in recs)
    counts = pairs.skipped.counts()
    report.skipped = dict(counts.most_common())
    report.duplicate_ids = counts.get("duplicate id", 0)
    ex: dict[str, list[str]] = {}
    for p, reason, _ in pairs.skipped.rows:
        lst = ex.setdefault(reason, [])
        if len(lst) < examples:
            lst.append(p)
    report.skipped_examples = ex
    report.filtered = {k: v for k, v in pairs.filtered.items() if v}
    if decode:
        from radalign.encoders.imageio import load_image

        bad: Counter = Counter()
        bad_ex: dict[str, list[str]] = {}
        n = 0
        for r in recs:
            if r.image_path is None:
                continue
            n += 1
            try:
                load_image(Path(r.image_path))
            except InputError as err:
                reason = err.reason
            except Exception as exc:  # a decoder bug on one file is still that file's verdict
                reason = f"decoder error ({type(exc).__name__})"
            else:
                continue
            bad[reason] += 1
            lst = bad_ex.setdefault(reason, [])
            if len(lst) < examples:
                lst.append(str(r.image_path))
        report.decoded = n
        report.unreadable = dict(bad.most_common())
        report.unreadable_examples = bad_ex
    return report
