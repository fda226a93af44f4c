"""Report-tower features computed once per report, for runs whose report tower (or its bottom)
is frozen.

A frozen tower (``optim.freeze_text: true``) gives the same output for a report every epoch:
there is no text augmentation and the frozen tower runs without dropout. :class:`FrozenTextCache`
runs the tower once per distinct report and keeps its pooled and word features on the CPU, so
later epochs pay only for the image tower and the heads.

With ``top_layers=n`` (``optim.text_trainable_layers: n`` on a tower whose bottom is frozen) it
keeps instead the hidden states entering the top n layers (one ``[T, H]`` row per report): each
step then runs only those layers, which train, and not the frozen bottom
(:class:`~radalign.encoders.text_tower.TopLayersInput`; ``model.text_features`` runs the rest).

Above ``max_reports`` distinct reports it stops storing new ones and computes them on the fly
(still without a backward pass through the frozen part).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class FrozenTextCache:
    """``cache(reports, device)`` -> the frozen tower's (pooled, words, word mask) for those
    reports, or with ``top_layers`` the :class:`TopLayersInput` of its trainable top layers;
    either goes to ``model.text_features(tokens, cached)``."""

    def __init__(
        self,
        model,
        max_reports: int = 200_000,
        batch_size: int = 64,
        rows: dict[str, tuple[Tensor, Tensor]] | None = None,
        top_layers: int = 0,
    ) -> None:
        """``rows``: features already computed by the same frozen tower (e.g. another cache's
        ``rows`` from training, reused by a reloaded copy of the trained model) with the same
        ``top_layers``."""
        if top_layers < 0:
            raise ValueError(f"top_layers must be >= 0, not {top_layers}")
        self.model = model
        self.max_reports = max_reports
        self.batch_size = batch_size
        self.top_layers = top_layers
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
                if self.top_layers:
                    bottom = tower.encode_bottom(tokens, self.top_layers)
                    lengths = bottom.attention_mask.sum(1).tolist()
                    for i, n in enumerate(lengths):
                        out.append(
                            (bottom.hidden[i, :n].float().cpu(), bottom.word_index[i, :n].cpu())
                        )
                    continue
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

    def __call__(self, reports: Sequence[str], device):
        missing = list(dict.fromkeys(r for r in reports if r not in self.rows))
        self.misses += len(missing)
        self.hits += len(reports) - len(missing)
        fresh = dict(zip(missing, self._compute(missing, device), strict=True)) if missing else {}
        for report, row in fresh.items():
            if len(self.rows) < self.max_reports:
                self.rows[report] = row
        rows = [self.rows.get(r) or fresh[r] for r in reports]
        if self.top_layers:
            return _top_layers_input(rows, self.top_layers, device)
        width = max(max(len(w) for _, w in rows), 1)
        pooled = torch.stack([p for p, _ in rows])
        words = pooled.new_zeros(len(rows), width, pooled.shape[1])
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, (_, w) in enumerate(rows):
            words[i, : len(w)] = w
            mask[i, : len(w)] = True
        return pooled.to(device), words.to(device), mask.to(device)


def _top_layers_input(rows: list[tuple[Tensor, Tensor]], layers: int, device):
    """Pad per-report ``(hidden [T, H], word_index [T])`` rows into one batch."""
    from radalign.encoders.text_tower import TopLayersInput

    length = max(len(h) for h, _ in rows)
    hidden = rows[0][0].new_zeros(len(rows), length, rows[0][0].shape[1])
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    word_index = torch.full((len(rows), length), -1, dtype=torch.long)
    for i, (h, w) in enumerate(rows):
        hidden[i, : len(h)] = h
        mask[i, : len(h)] = 1
        word_index[i, : len(h)] = w
    return TopLayersInput(hidden.to(device), mask.to(device), word_index.to(device), layers)
