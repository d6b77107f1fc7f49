"""Stellar priors (age, initial mass, metallicity, distance) and their grid weights.

Physics-model spec §6.2-§6.4.  ``compute_stellar_weights`` gives every row of
the spectral grid (all distances replicated) a ``grid_weight`` (its share of
parameter volume) and a ``prior_weight``; the SED grid stores both and their
product ``weight``.

How ``prior_weight`` is normalised
----------------------------------
compat (``beast-2.1``): BEAST's values, unnormalised: per isochrone the mass
grid weights and the bin-averaged IMF are each divided by their mean (so the
summed weight of an isochrone grows with its number of points, a QUIRK:
``PhysicsBehaviour.mass_weights_per_isochrone``), the age prior is used as
returned, and the metallicity/distance renormalisation is skipped (in BEAST it
silently has no effect, a BUG?: ``skip_z_distance_renormalisation``).

default: the intended physics.
  * mass: ``prior_weight`` of a row is the IMF integral over its mass bin
    divided by its mass grid weight, so grid_weight x prior_weight is the
    number of stars (per unit IMF normalisation) the row stands for and an
    isochrone's total reflects the mass range still alive at that age;
  * metallicity and distance: within each distance block, the rows of each Z
    are rescaled so that their summed grid weight equals the (sum-normalised)
    metallicity grid weight and their summed weight equals metallicity grid
    weight x metallicity prior share (grid and prior shares each normalised
    to sum 1); then the same across distance blocks.  The summed grid_weight
    of the whole grid is 1 and the summed weight of each (distance, Z) block
    is proportional to the volume x prior of its distance and of its Z.
The individual 1-D priors below return BEAST's values; turn any of them into
a density over its grid axis with ``grid_weights.normalised_prior``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from beastflow.behaviour import PhysicsBehaviour

from .grid_weights import bin_widths, compute_bin_boundaries, compute_grid_weights

__all__ = [
    "age_prior",
    "mass_prior",
    "imf",
    "imf_bin_integrals",
    "distance_prior",
    "metallicity_prior",
    "compute_stellar_weights",
]

_AGE_MODELS = ("flat", "flat_log", "bins_histo", "bins_interp", "exponential")
_MASS_MODELS = ("kroupa", "salpeter", "flat")
_DIST_MODELS = ("flat", "absexponential")
_MET_MODELS = ("flat",)


def _model_name(model: Mapping[str, Any], axis: str, allowed) -> str:
    if not isinstance(model, Mapping) or "name" not in model:
        raise ValueError(f"physics.priors.{axis}: expected a table with a 'name', got {model!r}")
    name = model["name"]
    if name not in allowed:
        raise NotImplementedError(f"physics.priors.{axis}: {name!r} is not an allowed model (allowed: {list(allowed)})")
    return name


def _param(model: Mapping[str, Any], key: str, axis: str, default=None) -> float:
    if key in model:
        return model[key]
    if default is None:
        raise ValueError(f"physics.priors.{axis}: model {model['name']!r} needs {key!r}")
    return default


# --------------------------------------------------------------------- age


def age_prior(logA, model: Mapping[str, Any]) -> np.ndarray:
    """Age prior weight at log10(age/yr) values ``logA`` (spec §6.2)."""
    x = np.atleast_1d(np.asarray(logA, dtype=np.float64))
    name = _model_name(model, "age", _AGE_MODELS)
    if name == "flat":
        return np.full(x.shape, float(_param(model, "amp", "age", 1.0)))
    if name == "flat_log":
        # 1/Delta t per bin cancels the linear-time grid weight: flat in log age
        w = 1.0 / bin_widths(x, log=True)
        return w / w.sum()
    if name == "exponential":
        tau_gyr = float(_param(model, "tau", "age"))
        if tau_gyr <= 0:
            raise ValueError(f"physics.priors.age: exponential tau must be > 0 Gyr, got {tau_gyr}")
        return np.exp(-(10.0**x) / (tau_gyr * 1e9))
    # tabulated star-formation history
    xs = np.asarray(_param(model, "x", "age"), dtype=np.float64)
    vals = np.asarray(_param(model, "values", "age"), dtype=np.float64)
    if xs.ndim != 1 or vals.ndim != 1 or xs.size < 2:
        raise ValueError(f"physics.priors.age: {name} needs lists x (>= 2 log ages) and values")
    if name == "bins_histo" and vals.size == xs.size - 1:
        # bin edges given: the last edge closes the last bin with a zero
        vals = np.append(vals, 0.0)
    if vals.size != xs.size:
        raise ValueError(f"physics.priors.age: {name} has {xs.size} x but {vals.size} values")
    if np.any(x < xs.min()) or np.any(x > xs.max()):
        raise ValueError(
            f"physics.priors.age: grid log ages [{x.min()}, {x.max()}] fall outside the "
            f"{name} x range [{xs.min()}, {xs.max()}]"
        )
    order = np.argsort(xs, kind="stable")
    xs, vals = xs[order], vals[order]
    if name == "bins_interp":
        return np.interp(x, xs, vals)
    # constant value[i] on [x_i, x_{i+1}); the last x takes the last value
    idx = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, xs.size - 1)
    return vals[idx]


# -------------------------------------------------------------------- mass


def _imf_segments(model: Mapping[str, Any]) -> list[tuple[float, float, float, float]]:
    """(m_lo, m_hi, coefficient, slope alpha) with phi = c m^-alpha on [m_lo, m_hi)."""
    name = _model_name(model, "mass", _MASS_MODELS)
    if name == "flat":
        return [(0.0, np.inf, 1.0, 0.0)]
    if name == "salpeter":
        return [(0.0, np.inf, 1.0, float(_param(model, "slope", "mass", 2.35)))]
    # Kroupa (2001) eq. 2, continuous at 0.08, 0.5 and 1 Msun, phi(1) = 1
    a0, a1, a2, a3 = (
        float(_param(model, k, "mass", d))
        for k, d in (("alpha0", 0.3), ("alpha1", 1.3), ("alpha2", 2.3), ("alpha3", 2.3))
    )
    m1, m2, m3 = 0.08, 0.5, 1.0
    c3 = 1.0
    c2 = c3 * m3 ** (-a3) / m3 ** (-a2)
    c1 = c2 * m2 ** (-a2) / m2 ** (-a1)
    c0 = c1 * m1 ** (-a1) / m1 ** (-a0)
    return [(0.0, m1, c0, a0), (m1, m2, c1, a1), (m2, m3, c2, a2), (m3, np.inf, c3, a3)]


def imf(m, model: Mapping[str, Any]) -> np.ndarray:
    """Unnormalised initial mass function phi(m) (spec §6.3)."""
    m = np.atleast_1d(np.asarray(m, dtype=np.float64))
    out = np.zeros_like(m)
    for lo, hi, c, alpha in _imf_segments(model):
        sel = (m >= lo) & (m < hi)
        out[sel] = c * m[sel] ** (-alpha)
    return out


def imf_bin_integrals(edges_lo, edges_hi, model: Mapping[str, Any]) -> np.ndarray:
    """Exact integral of phi(m) dm over each [lo, hi] (piecewise power laws)."""
    lo = np.asarray(edges_lo, dtype=np.float64)
    hi = np.asarray(edges_hi, dtype=np.float64)
    total = np.zeros(np.broadcast(lo, hi).shape)
    for s_lo, s_hi, c, alpha in _imf_segments(model):
        a = np.clip(lo, s_lo, s_hi)
        b = np.clip(hi, s_lo, s_hi)
        use = b > a
        if not np.any(use):
            continue
        a, b = a[use], b[use]
        if alpha == 1.0:
            part = c * np.log(b / a)
        else:
            e = 1.0 - alpha
            part = c * (b**e - a**e) / e
        total[use] += part
    return total


def _imf_bins(m: np.ndarray, model: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(IMF integral, width) over each mass's bin, bins from noneg boundaries."""
    if np.any(m <= 0):
        raise ValueError("initial masses M_ini must be > 0 for the mass prior")
    if m.size == 1:
        return np.ones(1), np.ones(1)
    order = np.argsort(m, kind="stable")
    edges = compute_bin_boundaries(m[order], noneg=True)
    integ = np.empty(m.size)
    width = np.empty(m.size)
    integ[order] = imf_bin_integrals(edges[:-1], edges[1:], model)
    width[order] = np.diff(edges)
    return integ, width


def mass_prior(M_ini, model: Mapping[str, Any]) -> np.ndarray:
    """Bin-averaged IMF at the masses of ONE isochrone, divided by its mean (§6.3)."""
    m = np.atleast_1d(np.asarray(M_ini, dtype=np.float64))
    integ, width = _imf_bins(m, model)
    mean_imf = integ / width
    return mean_imf / mean_imf.mean()


def _mass_prior_physical(m: np.ndarray, grid_w: np.ndarray, model) -> np.ndarray:
    """Default mode: IMF integral of each bin over its grid weight, so g x p = stars."""
    integ, _ = _imf_bins(m, model)
    return integ / grid_w


# ---------------------------------------------------------- Z and distance


def distance_prior(d_pc, model: Mapping[str, Any]) -> np.ndarray:
    """Distance prior at distances in pc (spec §6.4); dist0 and tau are in pc."""
    d = np.atleast_1d(np.asarray(d_pc, dtype=np.float64))
    name = _model_name(model, "distance", _DIST_MODELS)
    amp = float(_param(model, "amp", "distance", 1.0))
    if name == "flat":
        return np.full(d.shape, amp)
    tau = float(_param(model, "tau", "distance"))
    if tau <= 0:
        raise ValueError(f"physics.priors.distance: absexponential tau must be > 0 pc, got {tau}")
    return amp * np.exp(-np.abs(d - float(_param(model, "dist0", "distance"))) / tau)


def metallicity_prior(Z, model: Mapping[str, Any]) -> np.ndarray:
    """Metallicity prior (only ``flat`` exists, spec §6.4)."""
    z = np.atleast_1d(np.asarray(Z, dtype=np.float64))
    _model_name(model, "metallicity", _MET_MODELS)
    return np.full(z.shape, float(_param(model, "amp", "metallicity", 1.0)))


# ----------------------------------------------------------- combination


def _prior_for(axis: str, values: np.ndarray, priors, grid_w: np.ndarray, per_isochrone: bool):
    if axis == "logA":
        return age_prior(values, priors.age)
    if per_isochrone:
        return mass_prior(values, priors.mass)
    return _mass_prior_physical(values, grid_w, priors.mass)


def _age_mass_weights(logA, M_ini, rows, tracks, priors, per_isochrone, gw, pw):
    """Step 3 of spec §6.4 for the rows of one (distance, Z) slab."""
    cols = {"logA": logA, "M_ini": M_ini}
    p1, p2 = ("M_ini", "logA") if tracks else ("logA", "M_ini")
    v1 = cols[p1][rows]
    u1, first = np.unique(v1, return_index=True)
    g1 = compute_grid_weights(u1, log=(p1 == "logA"))
    pr1 = _prior_for(p1, u1, priors, g1, per_isochrone)

    order = np.lexsort((cols[p2][rows], v1))
    srows = rows[order]
    starts = np.searchsorted(v1[order], u1, side="left")
    stops = np.append(starts[1:], srows.size)
    for k, (a, b) in enumerate(zip(starts, stops)):
        sl = srows[a:b]
        if sl.size == 1:
            # a lone point on an isochrone has no mass bin: removed from the grid
            gw[sl] = 0.0
            pw[sl] = 0.0
            continue
        # duplicated p2 values (real PARSEC isochrones) share the weight of
        # their unique value, each copy getting it in full (as BEAST)
        u2, inv2 = np.unique(cols[p2][sl], return_inverse=True)
        g2 = compute_grid_weights(u2, log=(p2 == "logA"))
        pr2 = _prior_for(p2, u2, priors, g2, per_isochrone)
        gw[sl] *= g2[inv2] * g1[k]
        pw[sl] *= pr2[inv2] * pr1[k]


def _renormalise_blocks(labels, rows, axis_grid_w, axis_prior, gw, pw, what):
    """Give each block (one value of Z or of distance) its volume and prior share.

    After this, sum(gw) over a block = normalised grid weight of its value and
    sum(gw * pw) = normalised grid weight x normalised prior of its value.
    """
    share_g = axis_grid_w / axis_grid_w.sum()
    if not axis_prior.sum() > 0:
        raise ValueError(f"physics.priors.{what}: the prior is zero at every grid value")
    share_p = axis_prior / axis_prior.sum()
    for i in range(share_g.size):
        sel = rows[labels == i]
        G = gw[sel].sum()
        W = (gw[sel] * pw[sel]).sum()
        if not (G > 0 and W > 0):
            raise ValueError(
                f"all stellar weights are zero for {what} value #{i}; the isochrones there "
                "have single points or the age/mass prior vanishes on them"
            )
        gw[sel] *= share_g[i] / G
        pw[sel] *= share_p[i] * G / W


def compute_stellar_weights(logA, M_ini, Z, distance, priors, behaviour: PhysicsBehaviour):
    """Grid and prior weights of every spectral-grid row (spec §6.4).

    Rows are grouped by distance, then Z, then the regular variable p1 (log age
    for isochrones; initial mass when there are more unique ages than masses,
    i.e. evolutionary tracks).  Returns (grid_weight, prior_weight), float64.
    See the module docstring for the compat / default normalisation (two fields of ``behaviour``).
    """
    logA = np.asarray(logA, dtype=np.float64)
    M_ini = np.asarray(M_ini, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    distance = np.asarray(distance, dtype=np.float64)
    n = logA.size
    for name, arr in (("M_ini", M_ini), ("Z", Z), ("distance", distance)):
        if arr.shape != (n,):
            raise ValueError(f"compute_stellar_weights: {name} has shape {arr.shape}, expected ({n},)")
    gw = np.ones(n)
    pw = np.ones(n)
    if n == 0:
        return gw, pw

    u_dist, dist_lab = np.unique(distance, return_inverse=True)
    all_rows = np.arange(n)
    for di in range(u_dist.size):
        drows = all_rows[dist_lab == di]
        tracks = np.unique(logA[drows]).size > np.unique(M_ini[drows]).size
        u_z, z_lab = np.unique(Z[drows], return_inverse=True)
        for zi in range(u_z.size):
            _age_mass_weights(
                logA, M_ini, drows[z_lab == zi], tracks, priors, behaviour.mass_weights_per_isochrone, gw, pw
            )
        if not behaviour.skip_z_distance_renormalisation:
            _renormalise_blocks(
                z_lab,
                drows,
                compute_grid_weights(u_z),
                metallicity_prior(u_z, priors.metallicity),
                gw,
                pw,
                "metallicity",
            )
    if not behaviour.skip_z_distance_renormalisation:
        _renormalise_blocks(
            dist_lab,
            all_rows,
            compute_grid_weights(u_dist),
            distance_prior(u_dist, priors.distance),
            gw,
            pw,
            "distance",
        )
    return gw, pw
