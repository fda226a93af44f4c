"""Saving benchmark results. Quality benchmarks: ``OUT/<name>.json`` and ``OUT/<name>.md``
(written atomically), and the JSON as one line appended to ``RESULTS/<name>.jsonl`` (the
history kept in ``benchmarks/results``). Speed benchmarks: one line, with the run's context,
appended to ``OUT/<name>.jsonl``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from radalign.encoders.atomic import atomic_write


def append_line(path: Path, row: dict) -> None:
    """Append ``row`` to the JSON-lines file ``path`` (its folder made when missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def append_run(name: str, row: dict, out: Path) -> dict:
    """Append a speed benchmark's ``row`` to ``out/<name>.jsonl`` as ``{"benchmark": name,
    **row}`` plus what the timings depend on (torch version, 1-minute load average, date);
    returns the line written."""
    import torch

    line = {
        "benchmark": name,
        **row,
        "torch": torch.__version__,
        "loadavg_1min": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d"),
    }
    append_line(Path(out) / f"{name}.jsonl", line)
    return line


def save_result(name: str, result: dict, markdown: str, out: Path, results: Path) -> None:
    """Write ``result`` and its ``markdown`` table under ``out``, append it to
    ``results/<name>.jsonl`` and print the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / f"{name}.json", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(result, indent=2))
    with atomic_write(out / f"{name}.md", "w", encoding="utf-8") as fh:
        fh.write(markdown)
    append_line(Path(results) / f"{name}.jsonl", result)
    print(markdown)
