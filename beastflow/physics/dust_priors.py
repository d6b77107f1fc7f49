"""Dust priors on A(V), R(V), f_A and the dust grid weights (physics-model spec §8).

Every prior is evaluated on the full 1-D dust axis (``avs``, ``rvs``, ``fAs``)
and then looked up per SED-grid row by exact value, so the row order of the
caller does not matter.  The ``step`` prior is 2-D: the dust distribution
changes at distance ``dist0`` (pc), so it is tabulated per (axis value,
distance).

Normalisation: compat (``beast-2.1``, ``PhysicsBehaviour.dust_priors_unnormalised``) keeps BEAST's values (continuous
lognormal densities, flat amplitudes; not normalised on the grid).  The default
mode normalises each axis prior into a density over its grid,
sum_i p_i Delta_i = 1 (``grid_weights.normalised_prior``); the step prior is
normalised separately at every distance, since it is the dust distribution
*given* the distance.

``two_lognormal`` is always evaluated on the whole axis and normalised by the
trapezoid integral over it: BEAST evaluates it one grid value at a time and
crashes (spec §8 BUG?), so there are no BEAST numbers to reproduce and both
modes use the intended form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .grid_weights import compute_grid_weights, normalised_prior

__all__ = [
    "lognormal",
    "two_lognormal",
    "dust_axis_prior",
    "dust_prior_weights",
    "dust_grid_weights",
]

_ALLOWED = {
    "av": ("flat", "lognormal", "two_lognormal", "step", "exponential"),
    "rv": ("flat", "lognormal", "two_lognormal", "step"),
    "fA": ("flat", "lognormal", "two_lognormal", "step"),
}
_COLUMN = {"av": "Av", "rv": "Rv", "fA": "f_A"}


def lognormal(x, mode: float, sigma: float, norm: float = 1.0) -> np.ndarray:
    """Lognormal density whose maximum is at ``mode``; 0 for x <= 0.

    LN(x) = N / (x sigma sqrt(2 pi)) exp(-(ln x - mu)^2 / (2 sigma^2)) with
    mu = ln(mode) + sigma^2 (so that ``mode`` is where LN peaks).
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    if not mode > 0 or not sigma > 0:
        raise ValueError(f"lognormal prior needs mean (mode) > 0 and sigma > 0, got {mode}, {sigma}")
    mu = np.log(mode) + sigma**2
    out = np.zeros_like(x)
    pos = x > 0
    xp = x[pos]
    out[pos] = norm / (xp * sigma * np.sqrt(2.0 * np.pi)) * np.exp(-0.5 * ((np.log(xp) - mu) / sigma) ** 2)
    return out


def two_lognormal(x, mode1, mode2, sigma1, sigma2, n1_to_n2=1.0) -> np.ndarray:
    """Sum of two lognormals (weights N1_to_N2 : 1), normalised by its trapezoid
    integral over the ``x`` values given (so ``x`` must be a whole axis)."""
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    if x.size < 2:
        raise ValueError("two_lognormal prior needs the whole dust axis (>= 2 values) to normalise over")
    total = lognormal(x, mode1, sigma1, n1_to_n2) + lognormal(x, mode2, sigma2, 1.0)
    order = np.argsort(x)
    integral = np.trapezoid(total[order], x=x[order])
    if not integral > 0:
        raise ValueError("two_lognormal prior is zero over the whole dust axis")
    return total / integral


def _name(model: Mapping[str, Any], axis: str) -> str:
    if not isinstance(model, Mapping) or "name" not in model:
        raise ValueError(f"physics.priors.{axis}: expected a table with a 'name', got {model!r}")
    if model["name"] not in _ALLOWED[axis]:
        raise NotImplementedError(
            f"physics.priors.{axis}: {model['name']!r} is not an allowed model (allowed: {list(_ALLOWED[axis])})"
        )
    return model["name"]


def _get(model, key, axis, default=None):
    if key in model:
        return float(model[key])
    if default is None:
        raise ValueError(f"physics.priors.{axis}: model {model['name']!r} needs {key!r}")
    return default


def dust_axis_prior(axis_values, model: Mapping[str, Any], axis: str, distance_pc=None) -> np.ndarray:
    """BEAST's (unnormalised) prior of one dust axis at ``axis_values``.

    ``axis`` is "av", "rv" or "fA".  For ``step`` give ``distance_pc``, one
    distance for all values or one per value.
    """
    x = np.atleast_1d(np.asarray(axis_values, dtype=np.float64))
    name = _name(model, axis)
    if name == "flat":
        return np.full(x.shape, _get(model, "amp", axis, 1.0))
    if name == "lognormal":
        return lognormal(x, _get(model, "mean", axis), _get(model, "sigma", axis))
    if name == "two_lognormal":
        return two_lognormal(
            x,
            _get(model, "mean1", axis),
            _get(model, "mean2", axis),
            _get(model, "sigma1", axis),
            _get(model, "sigma2", axis),
            _get(model, "N1_to_N2", axis, 1.0),
        )
    if name == "exponential":
        a = _get(model, "a", axis)
        if not a > 0:
            raise ValueError(f"physics.priors.{axis}: exponential scale 'a' must be > 0, got {a}")
        return _get(model, "amp", axis, 1.0) * np.exp(-x / a)
    # step: one lognormal in front of dist0, a shifted one behind it
    if distance_pc is None:
        raise ValueError(f"physics.priors.{axis}: the step prior needs model distances")
    d = np.broadcast_to(np.asarray(distance_pc, dtype=np.float64), x.shape)
    dist0 = _get(model, "dist0", axis)
    amp1 = _get(model, "amp1", axis)
    near = d < dist0
    out = np.zeros_like(x)
    out[near] = lognormal(x[near], amp1, _get(model, "lgsigma1", axis))
    out[~near] = lognormal(x[~near], amp1 + _get(model, "damp2", axis), _get(model, "lgsigma2", axis))
    return out


def _lookup(values, axis: np.ndarray, column: str) -> np.ndarray:
    """Index into ``axis`` of each row value (exact match, as BEAST)."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(axis, kind="stable")
    pos = np.clip(np.searchsorted(axis[order], v), 0, axis.size - 1)
    idx = order[pos]
    bad = axis[idx] != v
    if np.any(bad):
        raise ValueError(
            f"{column} value {float(v[bad][0])!r} of a grid row is not on the {column} axis {axis.tolist()}"
        )
    return idx


def _axis(values, column) -> np.ndarray:
    a = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"the {column} axis must be a non-empty 1-D list")
    if np.unique(a).size != a.size:
        raise ValueError(f"the {column} axis has repeated values")
    return a


def _axis_weights(row_vals, axis_vals, distance, model, axis, unnormalised) -> np.ndarray:
    column = _COLUMN[axis]
    ax = _axis(axis_vals, column)
    idx = _lookup(row_vals, ax, column)
    if model["name"] != "step":
        table = dust_axis_prior(ax, model, axis)
        if not unnormalised:
            table = normalised_prior(ax, table, what=f"physics.priors.{axis}")
        return table[idx]
    u_d, d_idx = np.unique(np.asarray(distance, dtype=np.float64), return_inverse=True)
    out = np.empty(idx.size)
    for j, d in enumerate(u_d):
        table = dust_axis_prior(ax, model, axis, distance_pc=d)
        if not unnormalised:
            table = normalised_prior(ax, table, what=f"physics.priors.{axis} (step, distance {d} pc)")
        sel = d_idx == j
        out[sel] = table[idx[sel]]
    return out


def dust_prior_weights(Av, Rv, fA, distance, axes, priors, unnormalised: bool, has_fA: bool = True) -> np.ndarray:
    """Per-row dust prior weight av_w * rv_w * fA_w (spec §8).

    ``axes`` = (avs, rvs, fAs), the full 1-D dust grids; ``distance`` in pc per
    row (used by ``step`` priors).  ``unnormalised``: BEAST's values
    (``PhysicsBehaviour.dust_priors_unnormalised``).  With ``has_fA=False`` (a single extinction
    curve, no mixture) the f_A factor is 1.
    """
    avs, rvs, fAs = axes
    Av = np.atleast_1d(np.asarray(Av, dtype=np.float64))
    n = Av.size
    dist = np.broadcast_to(np.asarray(distance, dtype=np.float64), (n,))
    w = _axis_weights(Av, avs, dist, priors.av, "av", unnormalised)
    w = w * _axis_weights(np.broadcast_to(Rv, (n,)), rvs, dist, priors.rv, "rv", unnormalised)
    if has_fA:
        w = w * _axis_weights(np.broadcast_to(fA, (n,)), fAs, dist, priors.fA, "fA", unnormalised)
    return w


def dust_grid_weights(Av, Rv, fA, axes) -> np.ndarray:
    """Per-row dust grid weight: product of the linear, mean-normalised grid
    weights of the full A(V), R(V) and f_A axes (a log A(V) grid still gets
    linear widths, i.e. a flat prior in linear A(V), as BEAST)."""
    avs, rvs, fAs = axes
    Av = np.atleast_1d(np.asarray(Av, dtype=np.float64))
    n = Av.size
    out = np.ones(n)
    for vals, axis_vals, column in ((Av, avs, "Av"), (Rv, rvs, "Rv"), (fA, fAs, "f_A")):
        ax = _axis(axis_vals, column)
        out *= compute_grid_weights(ax)[_lookup(np.broadcast_to(vals, (n,)), ax, column)]
    return out
