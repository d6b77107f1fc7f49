"""Numba kernels: log-likelihood of every model for a block of stars.

For star s and model j (fitting.md §2), over the bands k the star has a finite
flux for,

    chi2_sj = Σ_k (y_sk − m_jk)² / e_jk²          m = F + bias
    lnP_sj  = c_j − ½ chi2_sj + Σ_{k missing} (ln e_jk + ½ ln 2π)
    c_j     = ln w_j + ln C_j − Σ_k ln e_jk − (n_bands/2) ln 2π

c_j holds everything that does not depend on the star (prior weight,
completeness term C_j, the Gaussian normalisation over all bands), computed once
per chunk; a model outside G (weight <= 0, invalid noise) has c_j = −inf and is
skipped.  The per-star work is then ~3 flops per band per model.

With a truncheon noise model the χ² uses the full inverse covariance and c_j
holds q_norm = −½ ln det C instead of −Σ_k ln e_jk (``_tile_lnp_full``).

The kernels are parallel over *models*: ``prange`` runs over T contiguous model
partitions, each with its own accumulators (no races, deterministic sums), which
are reduced in partition order afterwards (so ties keep the first index).
T is a constant (``REDUCTION_PARTITIONS``), not the thread count: the
partition boundaries set the order of the floating-point sums, so a fixed T
gives bit-identical statistics on 1, 2 or 16 threads.
Grids larger than memory are streamed: the caller feeds chunks and the
accumulators persist across chunks.  Two passes per star block:

1. ``pass_max``: max lnP (and its index: Best/Pmax) and min chi2 over G.
2. ``pass_accumulate``: with the peak M_s fixed, weights exp(lnP − M_s) are
   summed into Σw, Σw·q (Exp), the 1-D and 2-D histograms on the fixed bins,
   and the lnP sample is drawn by bottom-k on a hash key of (star, global
   model id): a uniform sample without replacement that does not depend on
   chunking, threading or subgrid splitting.  Models with lnP − M_s below the
   statistics threshold are skipped: with the default threshold (−60) their
   weights (< 1e-26 relative to the peak term, which is exactly 1) are below
   the floating-point resolution of the sums.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

LN2PI = math.log(2.0 * math.pi)
#: "every model": contributions below e^-60 of the peak do not change a double sum
ALL_MODELS_THRESHOLD = -60.0


#: model partitions of the reductions (see the module docstring); threads beyond
#: this number gain nothing in one kernel call
REDUCTION_PARTITIONS = 8


def n_partitions() -> int:
    return REDUCTION_PARTITIONS


#: models per tile: the tile's model data (~13 doubles per model) stay in L1/L2
#: while every star of the block is evaluated against it, and the band loop
#: runs over contiguous models (band-major arrays), which LLVM vectorises.
TILE = 256


@njit(cache=True)
def _tile_lnp(Y, USED, s, mT, ivT, lneT, const, j0, nt, chi2, lnp, any_missing):
    """chi2 and lnP of models j0..j0+nt-1 for star s into chi2[:nt], lnp[:nt]."""
    nb = Y.shape[1]
    for jj in range(nt):
        chi2[jj] = 0.0
    for k in range(nb):
        if USED[s, k]:
            yk = Y[s, k]
            for jj in range(nt):
                d = yk - mT[k, j0 + jj]
                chi2[jj] += d * d * ivT[k, j0 + jj]
    for jj in range(nt):
        lnp[jj] = const[j0 + jj] - 0.5 * chi2[jj]
    if any_missing:
        # a band without a measurement drops out of the Gaussian normalisation too
        for k in range(nb):
            if not USED[s, k]:
                for jj in range(nt):
                    lnp[jj] += lneT[k, j0 + jj] + 0.5 * LN2PI


@njit(cache=True)
def _tile_lnp_full(Y, USED, s, mT, icdT, icoT, const, j0, nt, chi2, lnp, d):
    """Truncheon model (noise-model.md §6.7): chi2 = Σ_k d_k² C⁻¹_kk + 2 Σ_{k<l} C⁻¹_kl d_k d_l,
    lnP = c_j − ½ chi2 with c_j holding q_norm = −½ ln det C.  All bands measured."""
    nb = Y.shape[1]
    for k in range(nb):
        yk = Y[s, k]
        for jj in range(nt):
            d[k, jj] = yk - mT[k, j0 + jj]
    for jj in range(nt):
        chi2[jj] = 0.0
    for k in range(nb):
        for jj in range(nt):
            chi2[jj] += d[k, jj] * d[k, jj] * icdT[k, j0 + jj]
    p = 0
    for k in range(nb - 1):
        for l in range(k + 1, nb):
            for jj in range(nt):
                chi2[jj] += 2.0 * icoT[p, j0 + jj] * d[k, jj] * d[l, jj]
            p += 1
    for jj in range(nt):
        lnp[jj] = const[j0 + jj] - 0.5 * chi2[jj]


@njit(cache=True)
def _tile_lnp_full_missing(Y, USED, s, mT, icdT, icoT, const, j0, nt, chi2, lnp):
    """Truncheon model for a star with unmeasured bands: the Gaussian marginal
    over the measured bands u.  With the precision P = C⁻¹ (m = missing bands),
    (C_uu)⁻¹ = P_uu − P_um P_mm⁻¹ P_mu and ln det C_uu = ln det C + ln det P_mm,
    so lnP = c_j + (n_m/2) ln 2π − ½ ln det P_mm − ½ d_uᵀ (C_uu)⁻¹ d_u.
    A small dense solve per model: only for such stars."""
    nb = Y.shape[1]
    nu = 0
    for k in range(nb):
        if USED[s, k]:
            nu += 1
    nm = nb - nu
    ui = np.empty(nu, dtype=np.int64)
    mi = np.empty(nm, dtype=np.int64)
    a = 0
    b = 0
    for k in range(nb):
        if USED[s, k]:
            ui[a] = k
            a += 1
        else:
            mi[b] = k
            b += 1
    P = np.empty((nb, nb))
    du = np.empty(nu)
    for jj in range(nt):
        j = j0 + jj
        p = 0
        for k in range(nb):
            P[k, k] = icdT[k, j]
        for k in range(nb - 1):
            for l in range(k + 1, nb):
                P[k, l] = icoT[p, j]
                P[l, k] = icoT[p, j]
                p += 1
        Pmm = np.empty((nm, nm))
        Pmu = np.empty((nm, nu))
        Puu = np.empty((nu, nu))
        for x in range(nm):
            for y in range(nm):
                Pmm[x, y] = P[mi[x], mi[y]]
            for y in range(nu):
                Pmu[x, y] = P[mi[x], ui[y]]
        for x in range(nu):
            for y in range(nu):
                Puu[x, y] = P[ui[x], ui[y]]
        Q = Puu - Pmu.T @ np.linalg.solve(Pmm, Pmu)
        for x in range(nu):
            du[x] = Y[s, ui[x]] - mT[ui[x], j]
        c2 = 0.0
        for x in range(nu):
            for y in range(nu):
                c2 += du[x] * Q[x, y] * du[y]
        chi2[jj] = c2
        lnp[jj] = const[j] + 0.5 * nm * LN2PI - 0.5 * math.log(np.linalg.det(Pmm)) - 0.5 * c2


@njit(cache=True)
def _tile(Y, USED, s, mT, ivT, lneT, icdT, icoT, full, const, j0, nt, chi2, lnp, missing, d):
    if full:
        if missing:
            _tile_lnp_full_missing(Y, USED, s, mT, icdT, icoT, const, j0, nt, chi2, lnp)
        else:
            _tile_lnp_full(Y, USED, s, mT, icdT, icoT, const, j0, nt, chi2, lnp, d)
    else:
        _tile_lnp(Y, USED, s, mT, ivT, lneT, const, j0, nt, chi2, lnp, missing)


@njit(parallel=True, cache=True)
def pass_max(Y, USED, mT, ivT, lneT, icdT, icoT, full, const, start, best_lnp, best_idx, chi2min, chi2min_idx, T):
    """Update per-star max lnP / argmax and min chi2 / argmin with one chunk (in place).

    Arrays of the chunk are band-major: mT, ivT, lneT [n_bands, n_models]; with
    ``full`` (truncheon noise model) icdT [n_bands, n] and icoT [n_pairs, n] hold
    the inverse covariance and ivT/lneT are unused."""
    ns, nb = Y.shape
    n = mT.shape[1]
    tl = np.full((T, ns), -np.inf)
    ti = np.full((T, ns), -1, dtype=np.int64)
    tc = np.full((T, ns), np.inf)
    tci = np.full((T, ns), -1, dtype=np.int64)
    missing = np.zeros(ns, dtype=np.bool_)
    for s in range(ns):
        for k in range(nb):
            if not USED[s, k]:
                missing[s] = True
    for t in prange(T):
        lo = t * n // T
        hi = (t + 1) * n // T
        chi2 = np.empty(TILE)
        lnp = np.empty(TILE)
        d = np.empty((nb, TILE))
        for j0 in range(lo, hi, TILE):
            nt = min(TILE, hi - j0)
            for s in range(ns):
                _tile(Y, USED, s, mT, ivT, lneT, icdT, icoT, full, const, j0, nt, chi2, lnp, missing[s], d)
                bl = tl[t, s]
                bc = tc[t, s]
                for jj in range(nt):
                    if lnp[jj] > bl:  # -inf (invalid models) never wins
                        bl = lnp[jj]
                        ti[t, s] = j0 + jj
                    if chi2[jj] < bc and const[j0 + jj] > -np.inf:
                        bc = chi2[jj]
                        tci[t, s] = j0 + jj
                tl[t, s] = bl
                tc[t, s] = bc
    for t in range(T):  # partition order = model order: strict comparisons keep the first index
        for s in range(ns):
            if tl[t, s] > best_lnp[s]:
                best_lnp[s] = tl[t, s]
                best_idx[s] = ti[t, s] + start
            if tc[t, s] < chi2min[s]:
                chi2min[s] = tc[t, s]
                chi2min_idx[s] = tci[t, s] + start


@njit(cache=True)
def hash_key(seed, gid):
    """splitmix64 of (star seed, global model id) -> uniform [0, 1)."""
    z = np.uint64(seed) + np.uint64(gid) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _heap_push(keys, idx, lnp, chi2, n, k, key, j, lp, c2):
    """Bottom-k by key: max-heap of size k on ``keys``; returns the new size."""
    if n < k:
        i = n
        n += 1
    elif key < keys[0]:
        # replace the root (largest key), then sift down
        i = 0
        while True:
            l = 2 * i + 1
            if l >= k:
                break
            r = l + 1
            c = l if (r >= k or keys[l] >= keys[r]) else r
            if keys[c] <= key:
                break
            keys[i] = keys[c]
            idx[i] = idx[c]
            lnp[i] = lnp[c]
            chi2[i] = chi2[c]
            i = c
        keys[i] = key
        idx[i] = j
        lnp[i] = lp
        chi2[i] = c2
        return n
    else:
        return n
    # sift up from the new leaf
    while i > 0:
        p = (i - 1) // 2
        if keys[p] >= key:
            break
        keys[i] = keys[p]
        idx[i] = idx[p]
        lnp[i] = lnp[p]
        chi2[i] = chi2[p]
        i = p
    keys[i] = key
    idx[i] = j
    lnp[i] = lp
    chi2[i] = c2
    return n


@njit(parallel=True, cache=True)
def pass_accumulate(
    Y,
    USED,
    mT,
    ivT,
    lneT,
    icdT,
    icoT,
    full,
    const,
    start,
    M,
    stat_thr,
    lnp_thr,
    qT,
    b1T,
    b2T,
    gid,
    specgrid,
    best_idx,
    seeds,
    acc_s0,
    acc_exp,
    acc_h1,
    acc_h2,
    acc_chi2,
    acc_chi2i,
    acc_ncand,
    heap_key,
    heap_idx,
    heap_lnp,
    heap_chi2,
    heap_n,
    best_q,
    best_gid,
    best_spec,
):
    """Accumulate one chunk into the per-partition accumulators (leading axis T).

    qT [nq, n] quantity values, b1T [nq, n] offset 1-D bin indices, b2T [npairs, n]
    flat 2-D bin indices (band/quantity-major, like mT)."""
    ns, nb = Y.shape
    n = mT.shape[1]
    nq = qT.shape[0]
    np2 = b2T.shape[0]
    T = acc_s0.shape[0]
    k = heap_key.shape[2]
    missing = np.zeros(ns, dtype=np.bool_)
    for s in range(ns):
        for kb in range(nb):
            if not USED[s, kb]:
                missing[s] = True
    # a tile whose best model is below both thresholds contributes nothing
    floor = min(stat_thr, lnp_thr) if k > 0 else stat_thr
    for t in prange(T):
        lo = t * n // T
        hi = (t + 1) * n // T
        chi2 = np.empty(TILE)
        lnp = np.empty(TILE)
        w = np.empty(TILE)
        sel = np.empty(TILE, dtype=np.int64)
        d = np.empty((nb, TILE))
        for j0 in range(lo, hi, TILE):
            nt = min(TILE, hi - j0)
            for s in range(ns):
                _tile(Y, USED, s, mT, ivT, lneT, icdT, icoT, full, const, j0, nt, chi2, lnp, missing[s], d)
                Ms = M[s]
                top = -np.inf
                for jj in range(nt):
                    if lnp[jj] > top:
                        top = lnp[jj]
                bi = best_idx[s] - start
                if bi >= j0 and bi < j0 + nt:
                    for q in range(nq):
                        best_q[s, q] = qT[q, bi]
                    best_gid[s] = gid[bi]
                    best_spec[s] = specgrid[bi]
                if top - Ms <= floor:
                    continue
                # weights of the models of the tile above the statistics
                # threshold, compacted so the scatters touch only those
                nz = 0
                for jj in range(nt):
                    dl = lnp[jj] - Ms
                    if dl > stat_thr:
                        w[nz] = math.exp(dl)
                        sel[nz] = j0 + jj
                        nz += 1
                        if chi2[jj] < acc_chi2[t, s]:
                            acc_chi2[t, s] = chi2[jj]
                            acc_chi2i[t, s] = j0 + jj + start
                if nz > 0:
                    sw = 0.0
                    for i in range(nz):
                        sw += w[i]
                    acc_s0[t, s] += sw
                    ex = acc_exp[t, s]
                    h1 = acc_h1[t, s]
                    h2 = acc_h2[t, s]
                    for q in range(nq):
                        e = 0.0
                        for i in range(nz):
                            e += w[i] * qT[q, sel[i]]
                            h1[b1T[q, sel[i]]] += w[i]
                        ex[q] += e
                    for p in range(np2):
                        for i in range(nz):
                            h2[b2T[p, sel[i]]] += w[i]
                if k > 0:
                    for jj in range(nt):
                        if lnp[jj] - Ms > lnp_thr:
                            acc_ncand[t, s] += 1
                            j = j0 + jj
                            key = hash_key(seeds[s], gid[j])
                            heap_n[t, s] = _heap_push(
                                heap_key[t, s],
                                heap_idx[t, s],
                                heap_lnp[t, s],
                                heap_chi2[t, s],
                                heap_n[t, s],
                                k,
                                key,
                                j + start,
                                lnp[jj],
                                chi2[jj],
                            )


def set_threads(n: int | None) -> None:
    if n:
        # numba.config sets its options at import time, so they are invisible to mypy
        numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]


__all__ = ["pass_max", "pass_accumulate", "hash_key", "LN2PI", "ALL_MODELS_THRESHOLD", "n_partitions", "set_threads"]
