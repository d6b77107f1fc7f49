"""grid_info.bin_index: numpy's searchsorted(side="right") - 1, value for value."""

from __future__ import annotations

import numpy as np
import pytest

from beastflow.fit.grid_info import bin_index

EDGES = [
    np.linspace(0.0, 1.0, 51),  # regular: the first guess is the bin
    np.geomspace(1e-3, 1e3, 40),  # far from regular: the search walks
    np.sort(np.random.default_rng(1).normal(size=30)),
    np.array([0.0, 0.0, 1.0, 1.0, 2.0]),  # repeated edges
    np.array([-np.inf, 0.0, 1.0, np.inf]),  # an infinite span
    np.array([0.0, 1.0]),
    np.array([5.0]),
]


@pytest.mark.parametrize("edges", EDGES, ids=range(len(EDGES)))
def test_bin_index_is_searchsorted(edges):
    rng = np.random.default_rng(2)
    values = np.concatenate(
        [
            rng.normal(size=3000) * 3,
            edges,  # exactly on an edge, and one ulp to either side
            np.nextafter(edges, np.inf),
            np.nextafter(edges, -np.inf),
            [np.nan, np.inf, -np.inf, 0.0, -0.0],
        ]
    )
    want = np.searchsorted(edges, values, side="right") - 1
    np.testing.assert_array_equal(bin_index(edges, values), want)
