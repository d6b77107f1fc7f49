"""Numba kernels of the spectral interpolation (spec §3.1–§3.3).

Kept apart from ``stellib.py`` (readers, polygons, composite logic) because
these loops run once per isochrone point (tens of thousands) and must be
compiled.  Every function here is pure.
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: Pegase.2 constants (spec §3.1)
KAPPA = 0.1
DT_MAX = 0.1
EPS = 1e-6


@nb.njit(cache=True)
def _det3(a0, a1, a2, a3, a4, a5, a6, a7, a8):
    # Determinant of [[a0, a1, a2], [a3, a4, a5], [a6, a7, a8]] expanded by
    # hand in BEAST's order: a generic solver leaves 1e-16 residues that flip
    # points lying on logg grid lines in or out of the triangle (spec §11).
    val = a0 * (a4 * a8 - a7 * a5)
    val += -a1 * (a3 * a8 - a6 * a5)
    val += a2 * (a3 * a7 - a6 * a4)
    return val


@nb.njit(cache=True)
def _outside01(a, b, c):
    return a < 0.0 or a > 1.0 or b < 0.0 or b > 1.0 or c < 0.0 or c > 1.0


@nb.njit(cache=True)
def pegase_weights(T0, g0, T, g, index0_missing, gravity_fraction_unclamped, idx, w):
    """(T, g) interpolation at one library metallicity (spec §3.1).

    ``T``, ``g``: logT, logg of the library models of one Z plane (local
    order = library order).  Fills ``idx`` (4 local indices, -1 = unused) and
    ``w`` (4 weights) for the quadrant points i1..i4 and returns nothing.

    BEAST 2.1 (``PhysicsBehaviour``): ``index0_missing`` treats index 0 as
    missing in the temperature-consistency test; ``gravity_fraction_unclamped``
    uses the four-point gravity fraction as is (so weights can be negative;
    the caller then drops them).  Default: index 0 is a valid point and the
    gravity fraction is clamped to [0, 1], so the weights are >= 0 and sum
    to 1 (no extrapolation in logg).
    """
    n = T.size
    # 1. exact grid point -> weight 1 (BEAST 2.1.0 raises IndexError here)
    best = -1
    dmin = np.inf
    for i in range(n):
        d = KAPPA * abs(g[i] - g0) + abs(T[i] - T0)
        if d < dmin:
            dmin = d
            best = i
    for k in range(4):
        idx[k] = -1
        w[k] = 0.0
    if dmin == 0.0:
        idx[0] = best
        w[0] = 1.0
        return
    # 2. nearest point in each quadrant ("ties go to the >= side")
    i1 = -1
    i2 = -1
    i3 = -1
    i4 = -1
    d1 = np.inf
    d2 = np.inf
    d3 = np.inf
    d4 = np.inf
    for i in range(n):
        dT = T[i] - T0
        dg = g[i] - g0
        d = KAPPA * abs(dg) + abs(dT)
        if dT >= 0.0:
            if dg >= 0.0:
                if d < d1:
                    d1 = d
                    i1 = i
            elif d < d2:
                d2 = d
                i2 = i
        else:
            if dg >= 0.0:
                if d < d3:
                    d3 = d
                    i3 = i
            elif d < d4:
                d4 = d
                i4 = i
    if i1 < 0 and i2 < 0 and i3 < 0 and i4 < 0:
        return
    T1 = T[i1] if i1 >= 0 else 0.0
    T2 = T[i2] if i2 >= 0 else 0.0
    T3 = T[i3] if i3 >= 0 else 0.0
    T4 = T[i4] if i4 >= 0 else 0.0
    g1 = g[i1] if i1 >= 0 else 0.0
    g2 = g[i2] if i2 >= 0 else 0.0
    g3 = g[i3] if i3 >= 0 else 0.0
    g4 = g[i4] if i4 >= 0 else 0.0
    # 3. temperature consistency; QUIRK (index0_missing): index 0 counts as missing
    lim = 0 if index0_missing else -1
    if i1 > lim and i2 > lim:
        if T1 < T2 - DT_MAX:
            i2 = -1
        elif T2 < T1 - DT_MAX:
            i1 = -1
    if i3 > lim and i4 > lim:
        if T3 > T4 + DT_MAX:
            i4 = -1
        elif T4 > T3 + DT_MAX:
            i3 = -1
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    a4 = 0.0
    # 4. weights by case (code "1234", 1 = present)
    if i1 < 0:
        if i2 < 0:
            if i3 < 0:
                a4 = 1.0  # 0001
            elif i4 < 0:
                a3 = 1.0  # 0010
            else:  # 0011
                if abs(T3 - T4) < EPS:
                    a3 = 0.5 if g3 == g4 else (g0 - g4) / (g3 - g4)
                    a4 = 1.0 - a3
                elif T3 > T4:
                    a3 = 1.0
                    i4 = -1
                else:
                    a4 = 1.0
                    i3 = -1
        elif i3 < 0:
            if i4 < 0:
                a2 = 1.0  # 0100
            else:  # 0101
                a2 = 0.5 if T2 == T4 else (T0 - T4) / (T2 - T4)
                a4 = 1.0 - a2
        elif i4 < 0:  # 0110
            a2 = 0.5 if T2 == T3 else (T0 - T3) / (T2 - T3)
            a3 = 1.0 - a2
        else:  # 0111
            det0 = _det3(T2, T3, T4, g2, g3, g4, 1.0, 1.0, 1.0)
            a2 = _det3(T0, T3, T4, g0, g3, g4, 1.0, 1.0, 1.0) / det0
            a3 = _det3(T2, T0, T4, g2, g0, g4, 1.0, 1.0, 1.0) / det0
            a4 = _det3(T2, T3, T0, g2, g3, g0, 1.0, 1.0, 1.0) / det0
            if _outside01(a2, a3, a4):  # outside the triangle: 0110
                a2 = 0.5 if T2 == T3 else (T0 - T3) / (T2 - T3)
                a3 = 1.0 - a2
                a4 = 0.0
                i4 = -1
    elif i2 < 0:
        if i3 < 0:
            if i4 < 0:
                a1 = 1.0  # 1000
            else:  # 1001
                a1 = 0.5 if T1 == T4 else (T0 - T4) / (T1 - T4)
                a4 = 1.0 - a1
        elif i4 < 0:  # 1010
            a1 = 0.5 if T1 == T3 else (T0 - T3) / (T1 - T3)
            a3 = 1.0 - a1
        else:  # 1011
            det0 = _det3(T1, T3, T4, g1, g3, g4, 1.0, 1.0, 1.0)
            a1 = _det3(T0, T3, T4, g0, g3, g4, 1.0, 1.0, 1.0) / det0
            a3 = _det3(T1, T0, T4, g1, g0, g4, 1.0, 1.0, 1.0) / det0
            a4 = _det3(T1, T3, T0, g1, g3, g0, 1.0, 1.0, 1.0) / det0
            if _outside01(a1, a3, a4):  # 1001
                a1 = 0.5 if T1 == T4 else (T0 - T4) / (T1 - T4)
                a3 = 0.0
                i3 = -1
                a4 = 1.0 - a1
    elif i3 < 0:
        if i4 < 0:  # 1100
            if abs(T1 - T2) < EPS:
                a1 = 0.5 if g1 == g2 else (g0 - g2) / (g1 - g2)
                a2 = 1.0 - a1
            elif T1 < T2:
                a1 = 1.0
                i2 = -1
            else:
                a2 = 1.0
                i1 = -1
        else:  # 1101
            det0 = _det3(T1, T2, T4, g1, g2, g4, 1.0, 1.0, 1.0)
            a1 = _det3(T0, T2, T4, g0, g2, g4, 1.0, 1.0, 1.0) / det0
            a2 = _det3(T1, T0, T4, g1, g0, g4, 1.0, 1.0, 1.0) / det0
            a4 = _det3(T1, T2, T0, g1, g2, g0, 1.0, 1.0, 1.0) / det0
            if _outside01(a1, a2, a4):  # 1001
                a1 = 0.5 if T1 == T4 else (T0 - T4) / (T1 - T4)
                a2 = 0.0
                i2 = -1
                a4 = 1.0 - a1
    elif i4 < 0:  # 1110
        det0 = _det3(T1, T2, T3, g1, g2, g3, 1.0, 1.0, 1.0)
        a1 = _det3(T0, T2, T3, g0, g2, g3, 1.0, 1.0, 1.0) / det0
        a2 = _det3(T1, T0, T3, g1, g0, g3, 1.0, 1.0, 1.0) / det0
        a3 = _det3(T1, T2, T0, g1, g2, g0, 1.0, 1.0, 1.0) / det0
        if _outside01(a1, a2, a3):  # 0110
            a1 = 0.0
            i1 = -1
            a2 = 0.5 if T2 == T3 else (T0 - T3) / (T2 - T3)
            a3 = 1.0 - a2
    # all four points
    if i1 >= 0 and i2 >= 0 and i3 >= 0 and i4 >= 0:
        alpha = (T0 - T3) / (T1 - T3) if T1 != T3 else 0.5
        beta = (T0 - T4) / (T2 - T4) if T2 != T4 else 0.5
        gp = alpha * g1 + (1.0 - alpha) * g3
        gs = beta * g2 + (1.0 - beta) * g4
        gamma = (g0 - gs) / (gp - gs) if gp != gs else 0.5
        if not gravity_fraction_unclamped:
            # g0 outside [g'', g']: hold the nearer edge instead of
            # extrapolating (BEAST extrapolates and then drops the negative
            # weights, so its weights no longer sum to 1)
            gamma = min(max(gamma, 0.0), 1.0)
        a1 = alpha * gamma
        a2 = beta * (1.0 - gamma)
        a3 = (1.0 - alpha) * gamma
        a4 = (1.0 - beta) * (1.0 - gamma)
    idx[0] = i1
    idx[1] = i2
    idx[2] = i3
    idx[3] = i4
    w[0] = a1 if i1 >= 0 else 0.0
    w[1] = a2 if i2 >= 0 else 0.0
    w[2] = a3 if i3 >= 0 else 0.0
    w[3] = a4 if i4 >= 0 else 0.0


@nb.njit(cache=True)
def interpolation_weights(
    T0, g0, plane_lo, plane_hi, fac_lo, fac_hi, plane_start, plane_models, lT, lg, index0_missing, unclamped
):
    """Library models and weights for many targets (spec §3.1 + §3.2).

    For target k, ``plane_lo[k]`` / ``plane_hi[k]`` are the Z planes to use
    (-1 = none) with factors ``fac_lo[k]`` / ``fac_hi[k]``.  Plane p holds the
    library models ``plane_models[plane_start[p]:plane_start[p+1]]`` (library
    order), whose logT, logg are ``lT``, ``lg`` in the same plane-sorted order.
    Returns ``(idx, w)`` of shape (n, 8): library model indices (-1 padding)
    and weights; only weights > 0 are kept (spec §3.1 step 5).
    """
    n = T0.size
    out_i = -np.ones((n, 8), dtype=np.int64)
    out_w = np.zeros((n, 8), dtype=np.float64)
    li = np.empty(4, dtype=np.int64)
    lw = np.empty(4, dtype=np.float64)
    for k in range(n):
        m = 0
        for side in range(2):
            p = plane_lo[k] if side == 0 else plane_hi[k]
            f = fac_lo[k] if side == 0 else fac_hi[k]
            if p < 0:
                continue
            s0 = plane_start[p]
            s1 = plane_start[p + 1]
            pegase_weights(T0[k], g0[k], lT[s0:s1], lg[s0:s1], index0_missing, unclamped, li, lw)
            for q in range(4):
                if li[q] >= 0:
                    wq = lw[q] * f
                    if wq > 0.0:
                        out_i[k, m] = plane_models[s0 + li[q]]
                        out_w[k, m] = wq
                        m += 1
    return out_i, out_w


@nb.njit(cache=True)
def combine_spectra(idx, w, spec_row, flux, scale):
    """L_lambda[k] = (sum_j w[k,j] F[spec_row[idx[k,j]]]) * scale[k] (spec §3.3)."""
    n = idx.shape[0]
    nl = flux.shape[1]
    out = np.zeros((n, nl), dtype=np.float64)
    for k in range(n):
        for j in range(idx.shape[1]):
            i = idx[k, j]
            if i < 0:
                continue
            r = spec_row[i]
            wk = w[k, j]
            for l in range(nl):
                out[k, l] += wk * flux[r, l]
        s = scale[k]
        for l in range(nl):
            out[k, l] *= s
    return out
