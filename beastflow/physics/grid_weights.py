"""Bin boundaries, grid weights and prior normalisation on 1-D grid axes.

BEAST marginalises by summing over grid points, so every point carries the
width of the parameter bin it stands for (its *grid weight*), relative to the
mean width of its axis (physics-model spec §6.1).  A point's bin runs between
the midpoints to its neighbours; the outer bins are mirrored half-steps.

A single-valued axis has no width to speak of: its grid weight is defined as 1
(BEAST raises an IndexError there, spec §11 item 7).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "compute_bin_boundaries",
    "compute_grid_weights",
    "bin_widths",
    "normalised_prior",
]


def _as_axis(x, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of grid values, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what}: the grid axis is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: grid values must be finite")
    return arr


def compute_bin_boundaries(x, noneg: bool = False) -> np.ndarray:
    """Edges (n + 1) of the bins around sorted centres ``x``.

    Interior edges are midpoints; the outer edges sit half a neighbour step
    outside the first and last centre.  With ``noneg`` a negative first edge
    is replaced by half the first centre (masses cannot be negative).
    """
    c = _as_axis(x, "compute_bin_boundaries")
    if c.size < 2:
        raise ValueError("compute_bin_boundaries needs at least two bin centres (a single value has no bin width)")
    if np.any(np.diff(c) < 0):
        raise ValueError("compute_bin_boundaries: bin centres must be sorted increasingly")
    half = np.diff(c) / 2.0
    edges = np.empty(c.size + 1)
    edges[1:-1] = c[1:] - half
    edges[0] = c[0] - half[0]
    if noneg and edges[0] < 0.0:
        edges[0] = 0.5 * c[0]
    edges[-1] = c[-1] + half[-1]
    return edges


def bin_widths(x, log: bool = False, noneg: bool = False) -> np.ndarray:
    """Absolute width of each point's bin, in the original order of ``x``.

    With ``log`` the values are log10 of the physical quantity (ages) and the
    widths are measured in the physical quantity: 10**hi - 10**lo.  A single
    value gets width 1 (nothing to integrate over).
    """
    vals = _as_axis(x, "bin_widths")
    if vals.size == 1:
        return np.ones(1)
    order = np.argsort(vals, kind="stable")
    edges = compute_bin_boundaries(vals[order], noneg=noneg)
    if log:
        widths_sorted = 10.0 ** edges[1:] - 10.0 ** edges[:-1]
    else:
        widths_sorted = np.diff(edges)
    widths = np.empty_like(widths_sorted)
    widths[order] = widths_sorted
    return widths


def compute_grid_weights(x, log: bool = False) -> np.ndarray:
    """Grid weights: bin widths divided by their mean, in the order of ``x``.

    Same bin construction as :func:`compute_bin_boundaries` without the
    ``noneg`` clamp (as BEAST).  A single-valued axis has weight 1.
    """
    widths = bin_widths(x, log=log, noneg=False)
    if widths.size == 1:
        return widths
    return widths / widths.mean()


def normalised_prior(axis_values, weights, log: bool = False, noneg: bool = True, what: str = "prior") -> np.ndarray:
    """Scale prior ``weights`` on a grid axis into a density over that axis.

    Returns p with sum_i p_i * Delta_i = 1, Delta_i the bin widths of the axis
    (:func:`bin_widths`; ``log`` for log10-valued axes such as ages, so the
    density is per unit linear quantity).  This is how beastflow's default mode
    normalises each 1-D prior; BEAST keeps its unnormalised values.
    """
    vals = _as_axis(axis_values, what)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != vals.shape:
        raise ValueError(f"{what}: {w.size} prior weights for {vals.size} grid values")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"{what}: prior weights must be finite and >= 0")
    total = float(np.sum(w * bin_widths(vals, log=log, noneg=noneg)))
    if not total > 0:
        raise ValueError(f"{what} is zero everywhere on the grid; check its parameters against the grid range")
    return w / total
