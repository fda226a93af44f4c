"""``audit.html``: one self-contained page of what the audit found, in the run report's style:
counts per type, the worst examples with thumbnails and report excerpts, near-duplicate pairs
side by side, and the archive's intake and drift over time. Rendered by jinja2 (autoescape);
images are embedded as data URIs."""

from __future__ import annotations

import base64
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from radalign.audit.findings import FINDING_TYPES
from radalign.encoders.atomic import atomic_write

from radalign import figures

__all__ = ["write_page"]

TEMPLATE = "audit.html.j2"
WORST_PER_TYPE = 6
MAX_PAIRS = 12
EXCERPT = 240


@cache
def _template():
    from importlib.resources import files

    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(files("radalign.audit").joinpath(TEMPLATE).read_text("utf-8"))


def _uri(png: bytes | None) -> str:
    return "" if not png else "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _thumb(path: str) -> str:
    from radalign.encoders.imageio import load_image

    try:
        return _uri(figures.thumbnail(load_image(path), size=140))
    except Exception:  # an unreadable image is itself a finding; the page shows no thumbnail
        return ""


def _intake_figure(table) -> bytes | None:
    dates = pd.to_datetime(table.frame["study_date"], errors="coerce").dropna()
    if len(dates) < 2:
        return None
    fig = figures._figure(7.0, 2.4)
    ax = fig.add_subplot()
    counts = dates.dt.to_period("M").value_counts().sort_index()
    ax.bar([p.to_timestamp() for p in counts.index], counts.to_numpy(), width=20, color="#4a78b5")
    ax.set_ylabel("studies per month")
    ax.set_title("intake over time")
    return figures._png(fig)


def _drift_figure(frame: pd.DataFrame) -> bytes | None:
    rows = frame[frame["type"] == "drift"]
    if rows.empty:
        return None
    fig = figures._figure(7.0, 0.4 + 0.3 * min(len(rows), 20))
    ax = fig.add_subplot()
    top = rows.head(20)
    ax.barh(range(len(top)), top["score"].to_numpy(), color="#c0504d")
    ax.set_yticks(
        range(len(top)),
        [f"{s}: {e[:60]}" for s, e in zip(top["subtype"], top["explanation"])],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.set_xlabel("drift score (−log10 p)")
    return figures._png(fig)


def _record_lookup(table) -> dict[str, dict]:
    f = table.frame
    return {
        str(i): {"path": p or "", "report": r or ""}
        for i, p, r in zip(f["id"], f["image_path"], f["report"])
    }


def write_page(path: str | Path, table, frame: pd.DataFrame, summary: dict, stats=None) -> Path:
    """Render the page to ``path`` (atomically) and return it."""
    lookup = _record_lookup(table)
    sections = []
    for t in FINDING_TYPES:
        rows = frame[frame["type"] == t]
        examples = []
        for _, r in rows.head(WORST_PER_TYPE).iterrows():
            ids = [i for i in str(r["ids"]).split("|") if i]
            rec = lookup.get(ids[0], {}) if ids else {}
            img = rec.get("path") or next((p for p in str(r["paths"]).split("|") if p), "")
            report = rec.get("report", "")
            examples.append(
                {
                    "subtype": r["subtype"],
                    "severity": r["severity"],
                    "score": f"{r['score']:.3g}",
                    "ids": ", ".join(ids[:6]),
                    "explanation": r["explanation"],
                    "thumb": _thumb(img) if img and t != "drift" else "",
                    "excerpt": report[:EXCERPT] + ("…" if len(report) > EXCERPT else ""),
                }
            )
        subs = summary["by_subtype"].get(t, {})
        sections.append(
            {"type": t, "count": int(len(rows)), "subtypes": subs, "examples": examples}
        )
    pairs = []
    dup = frame[(frame["type"] == "duplicate") & frame["subtype"].str.contains("image")]
    for _, r in dup.head(MAX_PAIRS).iterrows():
        ids = [i for i in str(r["ids"]).split("|") if i][:2]
        if len(ids) == 2:
            pairs.append(
                {
                    "explanation": r["explanation"],
                    "severity": r["severity"],
                    "a": {"id": ids[0], "thumb": _thumb(lookup.get(ids[0], {}).get("path", ""))},
                    "b": {"id": ids[1], "thumb": _thumb(lookup.get(ids[1], {}).get("path", ""))},
                }
            )
    html = _template().render(
        summary=summary,
        sections=sections,
        pairs=pairs,
        intake=_uri(_intake_figure(table)),
        drift=_uri(_drift_figure(frame)),
        n_findings=int(len(frame)),
        severities=summary["by_severity"],
        stats_rows=0 if stats is None else int(len(stats)),
        np=np,
    )
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(html)
    return path
