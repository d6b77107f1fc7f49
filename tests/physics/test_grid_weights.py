"""Spec §6.1 test vectors (BEAST test_stellar_grid_weights.py) and prior normalisation."""

import numpy as np
import pytest

from beastflow.physics.grid_weights import (
    bin_widths,
    compute_bin_boundaries,
    compute_grid_weights,
    normalised_prior,
)


def test_bin_boundaries_vector():
    np.testing.assert_allclose(compute_bin_boundaries(np.array([1.0, 2, 5, 10, 50])), [0.5, 1.5, 3.5, 7.5, 30, 70])


def test_bin_boundaries_noneg_clamps_first_edge():
    # first edge 1 - 4/2 = -1 < 0 -> half the first centre
    assert compute_bin_boundaries([1.0, 5.0, 6.0])[0] == -1.0
    np.testing.assert_allclose(compute_bin_boundaries([1.0, 5.0, 6.0], noneg=True), [0.5, 3.0, 5.5, 6.5])


@pytest.mark.parametrize(
    "x,log,expected",
    [
        ([6, 7, 8, 9, 10], True, [4.500045e-4, 4.500045e-3, 4.500045e-2, 4.500045e-1, 4.500045]),
        ([1, 2, 5, 7, 10, 30], False, [0.15189873, 0.30379747, 0.37974684, 0.37974684, 1.74683544, 3.03797468]),
        ([0.03, 0.019, 0.008, 0.004], False, [1.31343284, 1.31343284, 0.89552239, 0.47761194]),
        ([10, 100, 1000], False, [0.18181818, 1, 1.81818182]),
    ],
)
def test_grid_weight_vectors(x, log, expected):
    np.testing.assert_allclose(compute_grid_weights(np.array(x, dtype=float), log=log), expected, rtol=1e-6)


def test_grid_weights_keep_input_order():
    x = np.array([10.0, 1.0, 2.0, 5.0])
    w = compute_grid_weights(x)
    np.testing.assert_allclose(w[[1, 2, 3, 0]], compute_grid_weights(np.sort(x)))
    assert w.mean() == pytest.approx(1.0)


def test_single_value_axis_has_weight_one():
    np.testing.assert_array_equal(compute_grid_weights(np.array([3.0])), [1.0])
    np.testing.assert_array_equal(compute_grid_weights(np.array([8.0]), log=True), [1.0])
    with pytest.raises(ValueError, match="at least two"):
        compute_bin_boundaries(np.array([3.0]))


def test_bad_axes_are_errors():
    with pytest.raises(ValueError, match="empty"):
        compute_grid_weights(np.array([]))
    with pytest.raises(ValueError, match="sorted"):
        compute_bin_boundaries(np.array([3.0, 1.0]))


def test_normalised_prior_integrates_to_one():
    x = np.array([0.2, 0.5, 1.0, 3.0])
    p = normalised_prior(x, np.array([1.0, 2.0, 3.0, 1.0]))
    assert np.sum(p * bin_widths(x, noneg=True)) == pytest.approx(1.0)
    ages = np.array([6.0, 7.0, 8.5])
    p = normalised_prior(ages, np.ones(3), log=True)
    assert np.sum(p * bin_widths(ages, log=True)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="zero everywhere"):
        normalised_prior(x, np.zeros(4), what="physics.priors.av")
