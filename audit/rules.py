"""Every rule-based audit check in one call (:func:`check_rules`): missing data, entry errors,
DICOM header contradictions, report text and stated facts, temporal anomalies, inconsistent
records. The checks live in :mod:`~radalign.audit.missing`, :mod:`~radalign.audit.metadata`,
:mod:`~radalign.audit.report_facts` and :mod:`~radalign.audit.temporal`."""

from __future__ import annotations

from radalign.audit.metadata import check_rules

__all__ = ["check_rules"]
