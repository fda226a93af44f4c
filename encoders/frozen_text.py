"""Report-tower features computed once per report, for runs that freeze the report tower.

A frozen tower (``optim.freeze_text: true``) gives the same output for a report every epoch:
there is no text augmentation and the frozen tower runs without dropout. :class:`FrozenTextCache`
runs the tower once per distinct report and keeps its pooled and word features on the CPU, so
later epochs pay only for the image tower and the heads. Above ``max_reports`` distinct reports
it stops storing new ones and computes them on the fly (still without a backward pass).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class FrozenTextCache:
    """``cache(reports, device)`` -> the tower's (pooled, words, word mask) for those reports."""

    def __init__(
        self,
        model,
        max_reports: int = 200_000,
        batch_size: int = 64,
        rows: dict[str, tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        """``rows``: features already computed by the same frozen tower (e.g. another cache's
        ``rows`` from training, reused by a reloaded copy of the trained model)."""
        self.model = model
        self.max_reports = max_reports
        self.batch_size = batch_size
        self.rows: dict[str, tuple[Tensor, Tensor]] = rows if rows is not None else {}
        self.hits = self.misses = 0

    @torch.no_grad()
    def _compute(self, reports: Sequence[str], device) -> list[tuple[Tensor, Tensor]]:
        tower = self.model.text_tower
        was_training = tower.training
        tower.eval()
        out = []
        try:
            for start in range(0, len(reports), self.batch_size):
                chunk = list(reports[start : start + self.batch_size])
                tokens = {k: v.to(device) for k, v in self.model.tokenize(chunk).items()}
                pooled, words, mask = tower(tokens)
                for i in range(len(chunk)):
                    out.append((pooled[i].float().cpu(), words[i, mask[i]].float().cpu()))
        finally:
            tower.train(was_training)
        return out

    def warm(self, reports: Sequence[str], device) -> None:
        """Compute and store the features of ``reports`` up front, shortest first (batches of
        similar length waste little on padding)."""
        todo = sorted(set(reports) - self.rows.keys(), key=len)[: self.max_reports - len(self.rows)]
        self.rows.update(zip(todo, self._compute(todo, device), strict=True))

    def __call__(self, reports: Sequence[str], device) -> tuple[Tensor, Tensor, Tensor]:
        missing = list(dict.fromkeys(r for r in reports if r not in self.rows))
        self.misses += len(missing)
        self.hits += len(reports) - len(missing)
        fresh = dict(zip(missing, self._compute(missing, device), strict=True)) if missing else {}
        for report, row in fresh.items():
            if len(self.rows) < self.max_reports:
                self.rows[report] = row
        rows = [self.rows.get(r) or fresh[r] for r in reports]
        width = max(max(len(w) for _, w in rows), 1)
        pooled = torch.stack([p for p, _ in rows])
        words = pooled.new_zeros(len(rows), width, pooled.shape[1])
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, (_, w) in enumerate(rows):
            words[i, : len(w)] = w
            mask[i, : len(w)] = True
        return pooled.to(device), words.to(device), mask.to(device)
