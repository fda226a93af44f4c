"""The pairs a training run reads: any supported source, or the synthetic phantoms."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from radalign.pretrain.config import DataConfig

if TYPE_CHECKING:
    from radalign.data.records import PairSet

log = logging.getLogger(__name__)


def phantom_root(config: DataConfig) -> Path:
    """The phantom tree of ``config``, generated on first use."""
    from radalign.data.synth import synthesize

    base = Path(config.phantoms_dir)
    root = base / config.phantoms_layout
    if not root.is_dir():
        log.info("generating %d phantom pairs into %s", config.phantoms_n, base)
        synthesize(
            base, n=config.phantoms_n, seed=config.phantoms_seed, layouts=(config.phantoms_layout,)
        )
    return root


def load_pairs(config: DataConfig, *, split: str | None = None) -> PairSet:
    """A :class:`~radalign.data.records.PairSet` as ``config`` describes it, opened by
    :func:`~radalign.data.sources.open_records`: ``split`` keeps one split (``train``/``val``/
    ``test``, read by :func:`~radalign.data.records.split_option`; ``None`` or ``all`` keeps
    every split), and a :class:`ValueError` says what was left out when no record is left."""
    from radalign.data.sources import open_records

    root = phantom_root(config) if config.source == "phantoms" else Path(config.source)
    return open_records(
        root,
        split=split,
        layout=config.layout,
        views=tuple(config.views) if config.views else None,
        section=config.section,
        one_image_per_study=config.one_image_per_study,
        label_text=config.label_text,
    )
