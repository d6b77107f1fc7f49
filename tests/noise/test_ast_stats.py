"""Per-bin AST statistics: the small-sample correction of the error (beastflow.noise.ast_stats)."""

from __future__ import annotations

import numpy as np
import pytest

from beastflow.noise.ast_stats import bin_band, gaussian_halfwidth


@pytest.mark.parametrize("n", [10, 20, 40, 200])
def test_gaussian_halfwidth_matches_monte_carlo(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((20_000, n))
    q = np.percentile(x, [16.0, 84.0], axis=1)
    hw = 0.5 * (q[1] - q[0])
    # Monte-Carlo error of the mean half-width < 0.3 / sqrt(20000) = 0.002; Blom's
    # order statistics are good to ~0.4 %: allow 0.6 %
    assert gaussian_halfwidth(n) == pytest.approx(hw.mean(), rel=6e-3)
    assert gaussian_halfwidth(n) < 0.9945  # always below the large-n limit Phi^-1(0.84)


def test_error_is_unbiased_for_few_fake_stars_and_raw_in_compat():
    """20 recovered fake stars per bin, Gaussian noise of sigma = 0.01 (flux units)."""
    rng = np.random.default_rng(3)
    n_bins, per_bin, sigma = 400, 20, 0.01
    centres = np.geomspace(1.0, 100.0, n_bins)
    # one bin per true flux: bins are log-spaced over the inputs
    f_in = np.repeat(centres, per_bin)
    f_out = f_in + sigma * rng.standard_normal(f_in.size)
    fixed = bin_band(f_in, f_out, n_bins, min_per_bin=10)
    raw = bin_band(f_in, f_out, n_bins, min_per_bin=10, unbiased=False)
    g = fixed.good
    assert g.sum() > 0.9 * n_bins
    # the mean of 380+ estimates has a relative error ~ 0.17 / sqrt(380) ~ 0.9 %; 3 sigma
    assert abs(fixed.error[g].mean() / sigma - 1) < 0.027
    assert abs(raw.error[g].mean() / sigma - 0.912) < 0.027  # BEAST's half-width: 9 % too small
    np.testing.assert_allclose(
        fixed.error[g], raw.error[g] / np.array([gaussian_halfwidth(int(k)) for k in fixed.n_rec[g]])
    )
    np.testing.assert_array_equal(fixed.bias, raw.bias)
