"""Absolute flux calibration covariance (spec noise-model.md §2.3 and §3).

The user supplies a fractional covariance matrix A (N_bands x N_bands, bands in
the grid's filter order), or a 1-D vector of fractional uncertainties.  Its
diagonal enters every model's error in quadrature (a_k^2 F_k^2); the full
matrix times F_k F_l is stored as ``covdiag`` / ``covoffdiag`` so a
full-covariance likelihood can use it.

``frac_matrix_from_spectral_covariance`` builds A from a spectral covariance
(e.g. BEAST's ``hst_whitedwarf_frac_covar.fits``, HDU 1 columns WAVE, COVAR)
and filter throughputs, as BEAST's ``hst_frac_matrix`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from beastflow import storage

#: variance of the overall flux zero point (Vega at 5555 A), added to every element
ZERO_POINT_VARIANCE = 4.9e-5


def load_absflux_matrix(url: str, n_bands: int, setting: str = "[noise_model] absflux_covariance") -> np.ndarray:
    """Read a fractional covariance matrix (NPY, FITS image or table, CSV/TXT).

    Returns a float array of shape (n_bands,) (fractional uncertainties) or
    (n_bands, n_bands) (fractional covariance).  Errors name the file and setting.
    """
    lower = url.lower()
    try:
        if lower.endswith(".npy"):
            with storage.open_url(url, "rb") as fh:
                arr = np.load(fh, allow_pickle=False)
        elif lower.endswith((".fits", ".fit", ".fits.gz")):
            from astropy.io import fits

            with storage.local_copy_for_read(url) as local, fits.open(local) as hdul:
                arr = None
                for hdu in hdul:
                    if hdu.data is None:
                        continue
                    if getattr(hdu, "columns", None) is not None:
                        # a table: one row per band, one column per band
                        arr = np.array([list(r) for r in hdu.data], dtype=np.float64)
                    else:
                        arr = np.asarray(hdu.data, dtype=np.float64)
                    break
                if arr is None:
                    raise ValueError("no HDU holds data")
        else:
            with storage.open_url(url, "rb") as fh:
                arr = np.loadtxt(fh, delimiter="," if lower.endswith(".csv") else None, ndmin=1)
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: absolute-calibration covariance file not found ({setting})") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 2 and arr.shape == (1, n_bands):
        arr = arr[0]
    if arr.shape not in ((n_bands,), (n_bands, n_bands)):
        raise ValueError(
            f"{url}: absolute-calibration covariance has shape {arr.shape}, expected "
            f"({n_bands},) or ({n_bands}, {n_bands}) for the grid's {n_bands} bands ({setting})"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{url}: absolute-calibration covariance has non-finite values ({setting})")
    if arr.ndim == 2:
        if not np.allclose(arr, arr.T, rtol=1e-10, atol=0):
            raise ValueError(f"{url}: absolute-calibration covariance is not symmetric ({setting})")
        if np.any(np.diag(arr) < 0):
            raise ValueError(f"{url}: absolute-calibration covariance has negative variances ({setting})")
    return arr


def band_variances(a_matrix: np.ndarray) -> np.ndarray:
    """a_k^2: squares of a 1-D vector of fractional errors, or the diagonal of the matrix."""
    a = np.asarray(a_matrix, dtype=np.float64)
    return a**2 if a.ndim == 1 else np.diag(a).copy()


def covariance_terms(a_matrix: np.ndarray, seds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Physical calibration covariance per model: (covdiag [N, nb], covoffdiag [N, nb(nb-1)/2]).

    covoffdiag is packed k = 0..nb-2, l = k+1..nb-1 (the truncheon order).
    A 1-D matrix has no off-diagonal terms (zeros).
    """
    seds = np.asarray(seds, dtype=np.float64)
    nb = seds.shape[1]
    a = np.asarray(a_matrix, dtype=np.float64)
    diag = band_variances(a)
    covdiag = diag[None, :] * seds**2
    ku, lu = np.triu_indices(nb, k=1)
    if a.ndim == 1:
        covoff = np.zeros((len(seds), len(ku)))
    else:
        covoff = a[ku, lu][None, :] * seds[:, ku] * seds[:, lu]
    return covdiag, covoff


def frac_matrix_from_spectral_covariance(
    wave: np.ndarray,
    covar: np.ndarray,
    throughputs: Sequence[tuple[np.ndarray, np.ndarray]],
    weight_spectrum: np.ndarray | None = None,
    zero_point_variance: float = ZERO_POINT_VARIANCE,
) -> np.ndarray:
    """Band-integrated fractional covariance (spec §3).

    ``throughputs``: per band (wavelength [A], throughput); each is linearly
    interpolated onto ``wave`` (0 outside).  ``weight_spectrum`` S on ``wave``
    (flat by default).  M_ij = sum_ab C_ab w_i(b) w_j(a) / sum_ab w_i(b) w_j(a)
    with w = T S (plain sums over grid points, as BEAST), plus the zero point
    variance on every element.
    """
    wave = np.asarray(wave, dtype=np.float64)
    covar = np.asarray(covar, dtype=np.float64)
    if covar.shape != (len(wave), len(wave)):
        raise ValueError(f"spectral covariance has shape {covar.shape}, expected {(len(wave), len(wave))}")
    s = np.ones_like(wave) if weight_spectrum is None else np.asarray(weight_spectrum, dtype=np.float64)
    w = np.array(
        [
            np.interp(wave, np.asarray(lam, float), np.asarray(t, float), left=0.0, right=0.0) * s
            for lam, t in throughputs
        ]
    )
    # sum_a sum_b C_ab w_i(b) w_j(a) = (w_j . C . w_i) = (W C W^T)[j, i];
    # normalised by (sum_b w_i(b)) (sum_a w_j(a)).
    num = (w @ covar @ w.T).T
    tot = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = num / np.outer(tot, tot)
    if not np.all(np.isfinite(m)):
        raise ValueError("a filter throughput does not overlap the spectral covariance's wavelength grid")
    # computed for i <= j and mirrored (matters only for a non-symmetric C)
    m = np.triu(m) + np.triu(m, 1).T
    return m + zero_point_variance
