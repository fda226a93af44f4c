"""Saving a benchmark's result the way every quality benchmark here does: ``OUT/<name>.json``
and ``OUT/<name>.md`` (written atomically), and the JSON as one line appended to
``RESULTS/<name>.jsonl`` (the history kept in ``benchmarks/results``)."""

from __future__ import annotations

import json
from pathlib import Path

from radalign.encoders.atomic import atomic_write


def save_result(name: str, result: dict, markdown: str, out: Path, results: Path) -> None:
    """Write ``result`` and its ``markdown`` table under ``out``, append it to
    ``results/<name>.jsonl`` and print the table."""
    out, results = Path(out), Path(results)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / f"{name}.json", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(result, indent=2))
    with atomic_write(out / f"{name}.md", "w", encoding="utf-8") as fh:
        fh.write(markdown)
    results.mkdir(parents=True, exist_ok=True)
    with open(results / f"{name}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")
    print(markdown)
