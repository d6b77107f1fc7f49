"""Vega band fluxes (spec physics-model §5, "Vega normalisation").

Observed catalogues give fluxes relative to Vega (``{B}_RATE`` = F / F_Vega);
multiplying by the Vega band flux turns them into the physical unit of the
model grids (erg s⁻¹ cm⁻² Å⁻¹).  The Vega spectrum is the one shipped with
pyphot (``libs/vega.hd5``, table ``/spectrum``; the same Bohlin 2007 spectrum
BEAST's ``vega.hd5`` holds), so the numbers are reproducible offline.

BEAST's stored LUM integrates numerator and denominator over the points with
T > 0 (``Filter.getFlux``); compat mode (``PhysicsBehaviour.vega_positive_points``) returns the tabulated LUM of the
shipped ``vega.hd5`` ``/sed`` table (BEAST's own numbers) when every filter is
in it, else that integral.  In the default mode the same all-points trapezoid
as ``photometry.band_fluxes`` is used, so the Vega spectrum put through the
model photometry is exactly 0 Vega mag.  The two differ by ≲1e-5 relative on
Vega's fine sampling.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from beastflow.magnitudes import flux_to_mag
from beastflow.physics import photometry


@functools.cache
def vega_spectrum() -> tuple[np.ndarray, np.ndarray]:
    """(wavelength Å, f_λ erg s⁻¹ cm⁻² Å⁻¹) of pyphot's reference Vega spectrum."""
    from pyphot.vega import Vega

    v = Vega(flavor="legacy")
    lam = np.asarray(v.wavelength.to("AA").value, dtype=np.float64)
    flux = np.asarray(v.flux.to("erg / (s cm2 AA)").value, dtype=np.float64)
    order = np.argsort(lam, kind="stable")
    lam, flux = lam[order], flux[order]
    # the file has a few repeated wavelengths; keep the first of each so the
    # grid is strictly increasing (a zero-width segment adds nothing to trapz)
    keep = np.concatenate([[True], np.diff(lam) > 0])
    lam, flux = lam[keep], flux[keep]
    lam.setflags(write=False)
    flux.setflags(write=False)
    return lam, flux


def _names(filters: Sequence) -> tuple[str, ...]:
    return tuple(f.name if isinstance(f, photometry.Filter) else str(f) for f in filters)


@functools.cache
def _vega_fluxes_cached(names: tuple[str, ...], positive_points: bool) -> np.ndarray:
    # compat: BEAST's LUM is its own Filter.getFlux of the Vega spectrum; the
    # integral below reproduces that to 1e-15 (measured against BEAST 2.1.0 by
    # bench/compare_beast.py), whereas pyphot's shipped /sed table differs from
    # it by up to 7.5e-6, so the table is not used.
    lam, flux = vega_spectrum()
    # compat: BEAST's LUM uses the T > 0 points for both integrals; dividing
    # the T>0-numerator weights by a T>0-denominator is the same as
    # normalising the T>0 weights to unit λT integral.
    if positive_points:
        W = np.zeros((lam.size, len(names)))
        for b, f in enumerate(photometry.load_filters(names)):
            T = f.interpolated(lam)
            idx = np.flatnonzero(T > 0)
            if idx.size < 2:
                raise ValueError(f"filter {f.name} does not overlap the Vega spectrum")
            c = photometry.trapezoid_weights(lam[idx]) * lam[idx] * T[idx]
            W[idx, b] = c / c.sum()
    else:
        W = photometry.band_weights(lam, names)
    out = flux @ W
    out.setflags(write=False)
    return out


def vega_band_fluxes(filters: Sequence, positive_points: bool = False) -> np.ndarray:
    """Vega band fluxes [nbands] in erg s⁻¹ cm⁻² Å⁻¹ (cached per filter tuple).

    ``positive_points``: BEAST's T > 0 integrals (``PhysicsBehaviour.vega_positive_points``).
    """
    return _vega_fluxes_cached(_names(filters), bool(positive_points)).copy()


def vega_magnitudes(fluxes: np.ndarray, filters: Sequence, positive_points: bool = False) -> np.ndarray:
    """Vega magnitudes m = −2.5 log10(F / F_Vega) of band fluxes [..., nbands]."""
    return flux_to_mag(fluxes, vega_band_fluxes(filters, positive_points))
