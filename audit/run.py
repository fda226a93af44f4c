"""``run_audit``: every check of the audit over one source, written as issues, summary and page.

Stages (each resumable from ``out/cache``): the audit table → image statistics (one decode per
file) → image and report embeddings (chunked cache) → rule checks, outliers, then cross-modal
mismatch and duplicates (both leaving out records already flagged as outliers or entry errors: a
blank image fits no report, and blank images all look alike), drift → ``issues.csv``, ``issues.parquet``, ``summary.json`` and
``audit.html``, each written atomically. The source is only read, never modified.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from radalign.audit.findings import FINDING_TYPES, Finding, findings_frame
from radalign.encoders.atomic import atomic_write

__all__ = ["AuditResult", "run_audit"]

log = logging.getLogger(__name__)


@dataclass
class AuditResult:
    """What :func:`run_audit` found: the findings frame, the summary and the files written."""

    findings: pd.DataFrame
    summary: dict[str, Any]
    out: Path
    files: list[Path] = field(default_factory=list)

    def counts(self) -> str:
        """Per-type counts, one line each (what the CLI prints)."""
        lines = [
            f"audit of {self.summary['source']}: {self.summary['records']} records, "
            f"{len(self.findings)} findings"
        ]
        by_type = self.summary["by_type"]
        for t in FINDING_TYPES:
            subs = self.summary["by_subtype"].get(t, {})
            detail = ", ".join(f"{k} {v}" for k, v in subs.items())
            lines.append(f"  {t:<13} {by_type.get(t, 0):>6}" + (f"  ({detail})" if detail else ""))
        return "\n".join(lines)


def _load_model(model, device):
    if model is None or not isinstance(model, str | Path):
        return model
    from radalign.encoders.loading import load

    return load(model)


def run_audit(
    source: str | Path,
    *,
    out: str | Path,
    model=None,
    batch_size: int = 32,
    device=None,
    precision: str = "auto",
    progress: bool = True,
    resume: bool = True,
    k: int = 10,
) -> AuditResult:
    """Audit ``source`` (anything :func:`~radalign.data.sources.open_source` reads) into ``out``.

    ``model`` (a loaded model, a registry name or a saved directory) enables the embedding
    checks (kNN outliers, embedding near-duplicates, image–report mismatch, embedding drift);
    without it the audit runs the rule, statistics, hash and metadata checks only. ``resume``
    reuses ``out/cache`` (image statistics and embedding chunks) from a killed run."""
    from radalign.audit import drift, duplicates, image_stats, outliers, rules
    from radalign.audit.table import load_table

    t0 = time.perf_counter()
    out = Path(out)
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"audit source {source} does not exist")
    table = load_table(source, progress=progress)
    if len(table.frame) == 0:
        raise ValueError(f"{source}: the archive has no records to audit")
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    if not resume and cache.exists():
        import shutil

        shutil.rmtree(cache)
    cache.mkdir(exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str, fn, *a, **kw):
        s = time.perf_counter()
        result = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - s, 3)
        log.info("audit stage %s: %.1f s", name, timings[name])
        return result

    found: list[Finding] = []
    found += stage("rules", rules.check_rules, table)
    stats = stage("image_stats", image_stats.image_stats, table, cache=cache, progress=progress)
    found += stage("image_checks", image_stats.check_image_stats, table, stats)

    image_emb = report_emb = None
    net = _load_model(model, device)
    if net is not None:
        from radalign.audit.embeddings import cached_embeddings

        net = net.eval()
        if device is not None:
            net = net.to(device)
        kw = {
            "batch_size": batch_size,
            "device": device,
            "precision": precision,
            "progress": progress,
        }
        image_emb = stage(
            "embed_images", cached_embeddings, net, table.frame, cache, kind="image", **kw
        )
        report_emb = stage(
            "embed_reports", cached_embeddings, net, table.frame, cache, kind="report", **kw
        )
    found += stage("outliers", outliers.check_outliers, table, image_emb, report_emb, k=k)
    odd = {i for f in found if f.type in ("outlier", "entry_error") for i in f.ids}
    if net is not None:
        found += stage(
            "mismatch", outliers.check_mismatch, table, image_emb, report_emb, k=k, exclude=odd
        )
    found += stage("duplicates", duplicates.check_duplicates, table, stats, image_emb, exclude=odd)
    found += stage("drift", drift.check_drift, table, image_emb, report_emb, stats=stats)

    frame = findings_frame(found)
    summary = _summary(
        source, table, frame, timings, time.perf_counter() - t0, with_model=net is not None
    )
    files = _write(out, frame, summary)
    from radalign.audit.page import write_page

    files.append(write_page(out / "audit.html", table, frame, summary, stats))
    return AuditResult(frame, summary, out, files)


def _summary(source, table, frame: pd.DataFrame, timings, seconds: float, *, with_model: bool):
    by_type = Counter(frame["type"]) if len(frame) else Counter()
    by_sub: dict[str, dict[str, int]] = {}
    for (t, s), n in frame.groupby(["type", "subtype"]).size().items() if len(frame) else []:
        by_sub.setdefault(t, {})[s] = int(n)
    sev = Counter(frame["severity"]) if len(frame) else Counter()
    return {
        "source": str(source),
        "layout": table.layout,
        "records": int(len(table.frame)),
        "skipped_by_reader": int(len(table.skipped)),
        "findings": int(len(frame)),
        "by_type": {t: int(by_type.get(t, 0)) for t in FINDING_TYPES},
        "by_subtype": by_sub,
        "by_severity": {s: int(n) for s, n in sev.items()},
        "embedding_checks": with_model,
        "seconds": round(seconds, 2),
        "stage_seconds": timings,
    }


def _write(out: Path, frame: pd.DataFrame, summary: dict) -> list[Path]:
    paths = [out / "issues.csv", out / "issues.parquet", out / "summary.json"]
    with atomic_write(paths[0], "w", newline="") as fh:
        frame.to_csv(fh, index=False)
    with atomic_write(paths[1]) as fh:
        frame.to_parquet(fh, index=False)
    with atomic_write(paths[2], "w") as fh:
        json.dump(summary, fh, indent=2, default=_json_default)
    return paths


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))
