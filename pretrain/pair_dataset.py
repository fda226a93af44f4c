"""Training batches: decoded, augmented scans plus tokenised reports, robust to bad files.

Augmentation is seeded per item from ``(seed, epoch, index)``, never from worker state, so a
run resumed from a checkpoint sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from radalign.encoders.errors import InputError
from torch.utils.data import Dataset, Sampler


class PairDataset(Dataset):
    """Items are ``(index, pixels or None, report, skips)``.

    A pair that cannot be used (unreadable scan, empty report) is replaced by another pair
    chosen deterministically, and reported in ``skips``: batches keep their size, which the
    cross-process all-gather of the global loss needs.
    """

    max_replacements = 16

    def __init__(self, records: Sequence, transform, *, seed: int = 0, window: str = "header"):
        self.records = list(records)
        self.transform = transform
        self.seed = seed
        self.window = window
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def use_epoch(self, epoch: int) -> None:
        """Augmentation seeds of this epoch. (Not ``set_epoch``: Accelerate calls that with
        its own epoch counter, which restarts at 0 in a resumed run.)"""
        self.epoch = epoch

    def __getitem__(self, i: int):
        skips = []
        for attempt in range(self.max_replacements):
            j = (i + attempt * 7919) % len(self.records)
            try:
                pixels, report = self.load(j)
            except InputError as err:
                skips.append((err.path, err.reason, err.detail))
                continue
            return (j, pixels, report, skips)
        return (i, None, None, skips)

    def load(self, j: int) -> tuple[torch.Tensor, str]:
        """Pixels and report of pair ``j``; ``InputError`` if either is unusable."""
        from radalign.encoders.imageio import load_image

        rec = self.records[j]
        if rec.image_path is None:
            raise InputError(rec.id, "no image")
        report = str(rec.report or "").strip()
        if not report:
            raise InputError(rec.id, "empty report")
        if hasattr(self.transform, "set_seed"):
            self.transform.set_seed(_item_seed(self.seed, self.epoch, j))
        return self.transform(load_image(rec.image_path, window=self.window)), report


def _item_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class PairCollator:
    """Stacks good items, tokenises their reports, and passes skips along to be counted."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items) -> dict:
        ok = [it for it in items if it[1] is not None]
        batch: dict = {
            "index": torch.tensor([it[0] for it in ok], dtype=torch.long),
            "skipped": [s for it in items for s in it[3]],
        }
        if ok:
            batch["pixels"] = torch.stack([it[1] for it in ok])
            batch["reports"] = [it[2] for it in ok]
            batch["tokens"] = self.tokenizer(batch["reports"])
        return batch


class EpochShuffleSampler(Sampler[int]):
    """A permutation of the dataset drawn from ``(seed, epoch)``: reproducible and resumable.

        ``use_epoch(epoch, start)`` skips the first ``start`` indices of that epoch's permutation,
        which is how a resumed run continues mid-epoch without decoding the batches it already saw.
    Deliberately not named ``set_epoch``, which Accelerate would call with its own counter.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def use_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = max(0, min(start, self.n))

    def __len__(self) -> int:
        return self.n - self.start

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        return iter(rng.permutation(self.n)[self.start :].tolist())
