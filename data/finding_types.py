"""The eight kinds of problem ``radalign audit`` reports (and ``radalign.data.synth_anomalies``
plants), in the order the audit page shows them. Here, in ``radalign.data``, so both can import
it without the audit's or the phantom generator's dependencies."""

from __future__ import annotations

FINDING_TYPES: tuple[str, ...] = (
    "missing",
    "entry_error",
    "outlier",
    "temporal",
    "cross_modal",
    "inconsistent",
    "duplicate",
    "drift",
)
