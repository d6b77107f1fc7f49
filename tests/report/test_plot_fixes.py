"""The report's plots say what the data say: per-band completeness, binomial errors, dropped empty panels."""

from __future__ import annotations

import numpy as np

from beastflow.report.plots import band_recovered, completeness_curve, m50, wilson_interval
from beastflow.report.star import varying


def test_completeness_counts_a_star_in_the_band_that_measured_it():
    """Forced photometry: every detected AST has a (noisy) rate in every band.  A band whose
    limit is 25 mag must not reach 50 % at the other band's 28 mag."""
    rng = np.random.default_rng(2)
    n = 20000
    m = rng.uniform(18, 31, n)
    fin = 10 ** (-0.4 * m)
    sigma = 10 ** (-0.4 * 25.0) / 5.0  # S/N = 5 at 25 mag: sky-limited band
    rate = fin + sigma * rng.standard_normal(n)
    detected_any = rng.random(n) < 1 / (1 + np.exp((m - 28.0) / 0.2))  # found in a deeper band
    x, frac, cnt = completeness_curve(m, detected_any & (rate != 0), n_bins=26)
    assert m50(x, frac) > 27.5  # the old definition: the deep band's limit
    rec = band_recovered(m, rate, detected_any & (rate != 0))
    x, frac, cnt = completeness_curve(m, rec, n_bins=26)
    assert abs(m50(x, frac) - 25.0) < 0.3
    assert frac[x < 23].min() > 0.97


def test_wilson_interval_is_a_68_percent_binomial_interval():
    lo, hi = wilson_interval(np.array([0, 50, 100]), np.array([100, 100, 100]))
    assert abs(lo[0]) < 1e-12 and 0 < hi[0] < 0.02
    assert 0.44 < lo[1] < 0.46 and 0.54 < hi[1] < 0.56
    assert abs(hi[2] - 1) < 1e-12 and 0.98 < lo[2] < 1
    rng = np.random.default_rng(0)
    k = rng.binomial(40, 0.3, 4000)
    lo, hi = wilson_interval(k, np.full(4000, 40))
    # discrete n = 40: the coverage of a 68 % interval oscillates around 0.68 with p
    assert 0.55 < np.mean((lo <= 0.3) & (0.3 <= hi)) < 0.8


def test_quantities_the_grid_does_not_vary_are_dropped():
    pdf = {
        "quantities": ["Av", "Z", "logA"],
        "centres": {"Av": np.arange(5.0), "Z": np.array([0.0152]), "logA": np.arange(6.0, 10.0)},
        "pdf": {"Av": np.ones((2, 5)), "Z": np.ones((2, 1)), "logA": np.ones((2, 4))},
    }
    priors = {"Av": np.ones(5), "Z": np.ones(1), "logA": np.array([0.0, 0.0, 1.0, 0.0])}
    assert varying(pdf, priors, ["Av", "Z", "logA", "M_ini"]) == ["Av"]
