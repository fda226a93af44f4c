"""One finding of the audit, and the table of all of them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
from radalign.data.finding_types import FINDING_TYPES

__all__ = ["FINDING_TYPES", "SEVERITIES", "Finding", "findings_frame", "rows_finding"]

#: ``high``: the row should not be trained on as is; ``medium``: look at it; ``low``: worth knowing.
SEVERITIES: tuple[str, ...] = ("high", "medium", "low")

COLUMNS = ["type", "subtype", "severity", "score", "ids", "paths", "explanation"]


@dataclass(slots=True)
class Finding:
    """One problem: what kind (``type`` from :data:`FINDING_TYPES`, a short snake_case
    ``subtype`` such as ``"report_without_image"``), how bad (``severity``), a ``score`` where
    larger means more anomalous (1.0 for rule-based findings), the record ids and file paths
    involved (never patient identifiers from DICOM headers), and a one-line explanation."""

    type: str
    subtype: str
    severity: str
    explanation: str
    ids: Sequence[str] = field(default_factory=tuple)
    paths: Sequence[str] = field(default_factory=tuple)
    score: float = 1.0

    def __post_init__(self) -> None:
        if self.type not in FINDING_TYPES:
            raise ValueError(f"finding type {self.type!r} not one of {FINDING_TYPES}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} not one of {SEVERITIES}")
        self.ids = tuple(str(i) for i in self.ids)
        self.paths = tuple(str(p) for p in self.paths if p)


def rows_finding(
    type: str, subtype: str, severity: str, explanation: str, rows: pd.DataFrame
) -> Finding:
    """A finding naming the records of ``rows`` (audit-table rows) and their image files."""
    paths = rows.get("image_path", ())
    return Finding(
        type, subtype, severity, explanation, tuple(rows["id"]), tuple(p for p in paths if p)
    )


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    """One row per finding; ``ids`` and ``paths`` joined with ``|`` (so the CSV stays flat)."""
    rows = [
        (
            f.type,
            f.subtype,
            f.severity,
            float(f.score),
            "|".join(f.ids),
            "|".join(f.paths),
            f.explanation,
        )
        for f in findings
    ]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = {t: i for i, t in enumerate(FINDING_TYPES)}
    sev = {s: i for i, s in enumerate(SEVERITIES)}
    if len(frame):
        frame = frame.sort_values(
            ["type", "severity", "score"],
            key=lambda c: (
                c.map(order) if c.name == "type" else c.map(sev) if c.name == "severity" else -c
            ),
            kind="stable",
        ).reset_index(drop=True)
    return frame
