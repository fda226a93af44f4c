"""One exception type for bad input, and a recorder that counts and lists what a batch job skipped.

Every reader in radalign raises :class:`InputError` for a file or text it cannot use; batch
commands catch it, hand it to a :class:`SkipLog`, and carry on.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class InputError(ValueError):
    """An input (image file, report text, manifest row) that radalign cannot use.

    ``path`` names the offending file or row id; ``reason`` is a short, stable phrase
    (e.g. ``"zero-byte file"``, ``"no pixel data"``) used to count skips by kind.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, detail: str = "") -> None:
        self.path = "" if path is None else str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{self.path}: {reason}" if self.path else reason
        super().__init__(f"{msg} ({detail})" if detail else msg)


@dataclass
class SkipLog:
    """Collects skipped inputs; counts them by reason and writes ``skipped.csv``."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.rows.append((str(path), reason, detail))

    def add_error(self, err: InputError) -> None:
        self.add(err.path, err.reason, err.detail)

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> Counter:
        return Counter(reason for _, reason, _ in self.rows)

    def summary(self) -> str:
        if not self.rows:
            return "skipped 0"
        parts = ", ".join(f"{reason}: {n}" for reason, n in self.counts().most_common())
        return f"skipped {len(self.rows)} ({parts})"

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write ``path,reason,detail`` rows atomically; returns the path."""
        from radalign.encoders.atomic import atomic_write

        path = Path(path)
        with atomic_write(path, mode="w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "reason", "detail"])
            writer.writerows(self.rows)
        return path
