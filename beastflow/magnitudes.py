"""Vega magnitudes and F/F_Vega rates: one rule for a flux that has no magnitude.

A flux that is zero, negative or not finite has no magnitude.  (The fit's
bad-measurement rule, ``observations.catalogs.screen_fluxes``, drops such a
band from the likelihood for the same reason; docs/formats.md, "Bad
measurements".)  Every flux-to-magnitude conversion goes through
``rate_to_mag`` / ``flux_to_mag``, and the caller names what stands in for the
missing magnitude: NaN in plots, ``+inf`` ("fainter than any limit") where
magnitudes are compared with limits, ``NODATA_MAG`` (99.999) in DOLPHOT-style
tables.  The other way, a magnitude at or above ``BAD_MAG`` (DOLPHOT and BEAST
write 99.999 for "no flux") stands for flux 0 (``catalogs.read_asts``).
"""

from __future__ import annotations

import numpy as np

#: a magnitude at or above this means "no flux" in DOLPHOT/BEAST products (99.999)
BAD_MAG = 80.0
#: what DOLPHOT-style tables write for a band without flux
NODATA_MAG = 99.999


def rate_to_mag(rate: np.ndarray, nodata: float = np.nan) -> np.ndarray:
    """-2.5 log10(rate); ``nodata`` where the rate is not a positive finite number."""
    rate = np.asarray(rate, dtype=np.float64)
    ok = np.isfinite(rate) & (rate > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, -2.5 * np.log10(np.where(ok, rate, 1.0)), nodata)


def flux_to_mag(flux: np.ndarray, vega: np.ndarray | float, nodata: float = np.nan) -> np.ndarray:
    """Vega magnitude of physical fluxes: ``rate_to_mag(flux / vega)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return rate_to_mag(np.asarray(flux, dtype=np.float64) / vega, nodata)
