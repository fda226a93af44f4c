"""Rank of each query's paired item in a similarity matrix, with ties counted against the query.

One implementation shared by validation during pretraining and retrieval evaluation, so both
report the same Recall@K for the same scores.  A model that maps everything to one vector ties
every item with its partner and so ranks every partner last: R@1 = 0, never 1.
"""

from __future__ import annotations

import numpy as np

__all__ = ["partner_ranks"]


def partner_ranks(similarity, offset: int = 0) -> np.ndarray:
    """0-based rank of column ``offset + r`` among the columns of row ``r``, tie-pessimistic.

    Every other column whose score is not strictly below the partner's counts as ranked ahead of
    it: ties, and NaN scores (a NaN partner score therefore ranks last).  ``similarity`` is a 2-D
    array-like (a block of rows of a query x gallery matrix; torch tensors go through
    ``.numpy()`` first); ``offset`` is the partner column of row 0."""
    sim = np.asarray(similarity)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be 2-D, got shape {sim.shape}")
    rows = np.arange(sim.shape[0])
    cols = offset + rows
    if offset < 0 or (len(rows) and cols[-1] >= sim.shape[1]):
        raise ValueError(
            f"rows {offset}..{offset + len(rows) - 1} have no partner column in shape {sim.shape}"
        )
    own = sim[rows, cols]
    ahead = ~(sim < own[:, None])
    ahead[rows, cols] = False
    return ahead.sum(axis=1).astype(np.int64)
