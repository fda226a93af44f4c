"""``radalign.audit``: find what is wrong in a multimodal archive before anyone trains on it.

Every check reads the audit table (one row per record, see :mod:`radalign.audit.table`) and,
where it needs them, cached image/report embeddings; each returns a list of
:class:`~radalign.audit.findings.Finding`. :func:`radalign.audit.run.run_audit` runs them all and
writes ``issues.csv``/``issues.parquet``, ``summary.json`` and ``audit.html``.
"""
