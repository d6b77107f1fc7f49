"""One rule for fluxes without a magnitude (beastflow/magnitudes.py), and the converters that use it."""

from __future__ import annotations

import numpy as np

from beastflow.magnitudes import NODATA_MAG, flux_to_mag, rate_to_mag

RATES = np.array([1.0, 0.01, 0.0, -1.0, np.nan, np.inf])


def test_no_magnitude_for_zero_negative_or_nonfinite_flux():
    np.testing.assert_array_equal(rate_to_mag(RATES), [0.0, 5.0, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(rate_to_mag(RATES, NODATA_MAG)[2:], [NODATA_MAG] * 4)
    assert np.all(flux_to_mag(RATES * 3.0, 3.0, nodata=np.inf)[2:] == np.inf)
    assert flux_to_mag(np.array([3e-9]), 3e-9)[0] == 0.0


def test_every_converter_follows_the_rule():
    from beastflow.demo.field import vega_mags
    from beastflow.observations.ast_seds import magnitudes
    from beastflow.report.plots import _mags

    np.testing.assert_array_equal(vega_mags(RATES)[2:], [NODATA_MAG] * 4)
    assert np.all(magnitudes(RATES[:, None], np.ones(1))[2:, 0] == np.inf)  # fainter than any limit
    assert np.all(np.isnan(_mags(RATES, 1.0)[2:]))
    # same arithmetic as before for real fluxes: -2.5 log10(F / F_Vega)
    f = np.array([1e-17, 3.3e-18])
    assert np.array_equal(magnitudes(f[:, None], np.array([2e-9])), -2.5 * np.log10(f[:, None] / 2e-9))
