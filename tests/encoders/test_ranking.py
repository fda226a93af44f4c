"""The shared tie-pessimistic partner ranking."""

from __future__ import annotations

import numpy as np
import pytest
from radalign.encoders.ranking import partner_ranks


def test_ranks_ties_against_the_partner():
    sim = np.array([[3.0, 1.0, 3.0], [0.0, 2.0, 1.0], [5.0, 5.0, 5.0]])
    assert partner_ranks(sim).tolist() == [1, 0, 2]


def test_offset_block_and_nan():
    full = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0], [np.nan, 0.0, 1.0]])
    assert partner_ranks(full[1:], offset=1).tolist() == [1, 1]  # NaN elsewhere counts ahead
    assert partner_ranks(np.array([[0.0, np.nan]])).tolist() == [1]
    assert partner_ranks(np.array([[np.nan, 0.0]])).tolist() == [1]  # NaN partner ranks last


def test_bad_shapes():
    with pytest.raises(ValueError):
        partner_ranks(np.zeros(3))
    with pytest.raises(ValueError):
        partner_ranks(np.zeros((3, 2)))
    with pytest.raises(ValueError):
        partner_ranks(np.zeros((2, 3)), offset=2)
