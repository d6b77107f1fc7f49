"""Pure metrics of the comparison: arrays in, numbers out (tested in tests/test_compare_metrics.py).

Every agreement figure the report prints is one of these, so a change of a
criterion's arithmetic is a change here, under test, not inside a stage runner.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def max_rel(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """max |a - b| / |b| over the entries with b != 0; entries with b == 0 must agree exactly."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return {"max_rel": float("inf"), "shape": [list(a.shape), list(b.shape)]}
    d = np.abs(a - b)
    nz = b != 0
    both_nan = np.isnan(a) & np.isnan(b)
    rel = np.where(nz, d / np.where(nz, np.abs(b), 1.0), np.where(d > 0, np.inf, 0.0))
    rel = np.where(both_nan, 0.0, rel)
    rel = np.where(np.isnan(rel), np.inf, rel)
    return {
        "max_rel": float(rel.max()) if rel.size else 0.0,
        "max_abs": float(np.nanmax(d)) if d.size and not np.all(np.isnan(d)) else 0.0,
        "n_zero_mismatch": int(((b == 0) != (a == 0)).sum()),
    }


def centre_shift(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in units of the bin spacing of b (of |b| for a single bin); inf if shapes differ."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        return float("inf")
    if len(b) > 1:
        step = np.abs(np.diff(b))
        w = np.minimum(np.concatenate([step, [np.inf]]), np.concatenate([[np.inf], step]))
    else:
        w = np.maximum(np.abs(b), 1e-300)
    return float(np.max(np.abs(a - b) / w))


def bias_vs_scale(bias: np.ndarray, ref_bias: np.ndarray, ref_error: np.ndarray) -> float:
    """max |bias - ref_bias| / max(|ref_bias|, |ref_error|): the bias changes sign inside the
    AST flux range, so relative to itself it is ill-conditioned near zero; its natural scale
    is the larger of itself and the error.  Where that scale is 0 the two must agree exactly."""
    scale = np.maximum(np.abs(ref_bias), np.abs(ref_error))
    d = np.abs(bias - ref_bias)
    sc = np.where(scale > 0, d / np.where(scale > 0, scale, 1.0), np.where(d > 0, np.inf, 0.0))
    return float(sc.max())


def bias_over_error(bias: np.ndarray, ref_bias: np.ndarray, ref_error: np.ndarray) -> float:
    """max |bias - ref_bias| / |ref_error| over the entries with ref_error != 0."""
    d = np.abs(bias - ref_bias)
    return float(np.max(np.where(ref_error != 0, d / np.abs(np.where(ref_error != 0, ref_error, 1)), 0)))


def sign_mismatches(a: np.ndarray, b: np.ndarray) -> int:
    """Entries whose signs differ (the sign of a noise model's error carries its completeness convention)."""
    return int((np.sign(a) != np.sign(b)).sum())


def id_sets(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Two lists of model ids: sizes, ids only in each, same ids in the same order."""
    sa, sb = set(a.tolist()), set(b.tolist())
    return {
        "n_models": [len(a), len(b)],
        "only_ours": len(sa - sb),
        "only_beast": len(sb - sa),
        "same_order": bool(len(a) == len(b) and np.array_equal(a, b)),
        "same_set": sa == sb,
    }


def range_scaled_diff(a: np.ndarray, b: np.ndarray, rng: float, tol: float) -> dict[str, float]:
    """|a - b| / rng (the quantity's grid range; max |b| when the range is 0), both-NaN entries
    agreeing: its max and the fraction of entries within ``tol``."""
    scale = rng if rng > 0 else max(float(np.nanmax(np.abs(b))), 1e-300)
    d = np.abs(a - b) / scale
    d = np.where(np.isnan(a) & np.isnan(b), 0.0, d)
    return {"max": float(np.nanmax(d)) if np.isfinite(d).any() else float("inf"), "frac_ok": float(np.mean(d <= tol))}


def max_over_peak(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / (peak of b's row): PDFs (one star per row, 1D or 2D) bin by bin."""
    peak = b.reshape(len(b), -1).max(axis=1).reshape((len(b),) + (1,) * (b.ndim - 1))
    return float((np.abs(a - b) / np.where(peak > 0, peak, 1.0)).max())


def symlog_flux(flux: np.ndarray) -> np.ndarray:
    """BEAST's ``symlog{B}_wd_bias`` quantity: sign(f) log10(1 + |f| / 1e-20)."""
    return np.sign(flux) * np.log10(1 + np.abs(flux) / 1e-20)


def lnp_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(1, |b|): BEAST stores lnP as float32, so near 0 an absolute scale."""
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def shift_summary(ref: np.ndarray, other: np.ndarray, log10: bool = False) -> dict[str, float]:
    """Median, median |.| and 90th percentile |.| of other - ref (NaNs ignored); in dex with ``log10``."""
    if log10:
        ref, other = np.log10(ref), np.log10(other)
    d = other - ref
    return {
        "median": float(np.nanmedian(d)),
        "median_abs": float(np.nanmedian(np.abs(d))),
        "p90_abs": float(np.nanpercentile(np.abs(d), 90)),
    }
