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

The kernels are parallel over *models*: ``prange`` runs over T model partitions,
partition t taking the tiles t, t + T, t + 2T... (interleaved, so that each thread
gets its share of the models near the stars' peaks, wherever they lie in the grid),
each with its own accumulators (no races, deterministic sums), which
are reduced in partition order afterwards (ties keep the first row of the grid's
stored order: every comparison breaks them by row, since the models are visited in
the order of ``factors.GridFactors``, each stellar model's rows together).
T depends on the grid size only (``n_partitions``), not on the thread count: the
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
   statistics threshold are skipped: with the default threshold
   (``all_models_threshold``: ln(1e-9 / N) for N models) all their weights
   together are < 1e-9 of the peak term, which is exactly 1.  The sums are factored along the
   grid's stellar-model × dust-point structure (``factors.py``, ~3× fewer
   scatters), and the weights use a vectorised exp (``_exp_inplace``, 1 ulp).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

LN2PI = math.log(2.0 * math.pi)
#: "every model": the statistics skip only models whose weights, all of them together,
#: are below this fraction of the peak model's weight (exactly 1): each below
#: e^thr with thr = ln(ALL_MODELS_EPS / N) for N models (about -35 for 10^6 models)
ALL_MODELS_EPS = 1e-9


def all_models_threshold(n_models: int) -> float:
    """The default statistics threshold (ln units below the peak) for a grid of
    n_models: the skipped weights sum to < ALL_MODELS_EPS of the peak's, so no PDF bin
    moves by more than that fraction of its peak and no CDF by more than that."""
    return math.log(ALL_MODELS_EPS / max(int(n_models), 1))


#: model partitions of the reductions (see the module docstring); threads beyond
#: this number gain nothing in one kernel call
REDUCTION_PARTITIONS = 8


#: models per partition below which a grid gets fewer partitions (down to 2): each
#: partition holds its own PDF accumulators [stars, bins], cleared and summed per star
#: block, which would cost a small grid more than its kernels
MODELS_PER_PARTITION = 16384


def n_partitions(n_models: int) -> int:
    """Partitions of a fit over n_models: a function of the grid, never of the thread
    count (the partitions set the order of the sums)."""
    want = -(-int(n_models) // MODELS_PER_PARTITION)
    return max(2, min(REDUCTION_PARTITIONS, want))


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
    # slices: indices from 0, so numba adds no negative-index fix-up and the loops
    # vectorise (lane by lane the same IEEE operations: the same bits as scalar code)
    for k in range(nb):
        if USED[s, k]:
            yk = Y[s, k]
            mk = mT[k, j0 : j0 + nt]
            ik = ivT[k, j0 : j0 + nt]
            for jj in range(nt):
                d = yk - mk[jj]
                chi2[jj] += d * d * ik[jj]
    ck = const[j0 : j0 + nt]
    for jj in range(nt):
        lnp[jj] = ck[jj] - 0.5 * chi2[jj]
    if any_missing:
        # a band without a measurement drops out of the Gaussian normalisation too
        for k in range(nb):
            if not USED[s, k]:
                lk = lneT[k, j0 : j0 + nt]
                for jj in range(nt):
                    lnp[jj] += lk[jj] + 0.5 * LN2PI


@njit(cache=True)
def _tile_lnp_full(Y, USED, s, mT, icdT, icoT, const, j0, nt, chi2, lnp, d):
    """Truncheon model (noise-model.md §6.7): chi2 = Σ_k d_k² C⁻¹_kk + 2 Σ_{k<l} C⁻¹_kl d_k d_l,
    lnP = c_j − ½ chi2 with c_j holding q_norm = −½ ln det C.  All bands measured."""
    nb = Y.shape[1]
    # row slices from 0 (as _tile_lnp): no negative-index fix-up, the loops vectorise
    for k in range(nb):
        yk = Y[s, k]
        mk = mT[k, j0 : j0 + nt]
        dk = d[k]
        for jj in range(nt):
            dk[jj] = yk - mk[jj]
    for jj in range(nt):
        chi2[jj] = 0.0
    for k in range(nb):
        dk = d[k]
        ik = icdT[k, j0 : j0 + nt]
        for jj in range(nt):
            chi2[jj] += dk[jj] * dk[jj] * ik[jj]
    p = 0
    for k in range(nb - 1):
        dk = d[k]
        for l in range(k + 1, nb):
            dl = d[l]
            ok = icoT[p, j0 : j0 + nt]
            for jj in range(nt):
                chi2[jj] += 2.0 * ok[jj] * dk[jj] * dl[jj]
            p += 1
    ck = const[j0 : j0 + nt]
    for jj in range(nt):
        lnp[jj] = ck[jj] - 0.5 * chi2[jj]


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
def pass_max(
    Y, USED, mT, ivT, lneT, icdT, icoT, full, const, rowid, start, best_lnp, best_idx, chi2min, chi2min_idx, T
):
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
        chi2 = np.empty(TILE)
        lnp = np.empty(TILE)
        d = np.empty((nb, TILE))
        for j0 in range(t * TILE, n, T * TILE):  # tiles t, t + T, t + 2T...
            nt = min(TILE, n - j0)
            for s in range(ns):
                _tile(Y, USED, s, mT, ivT, lneT, icdT, icoT, full, const, j0, nt, chi2, lnp, missing[s], d)
                _fold_extrema(lnp, chi2, const, rowid, j0, nt, t, s, tl, ti, tc, tci)
    _reduce_extrema(tl, ti, tc, tci, start, best_lnp, best_idx, chi2min, chi2min_idx)


@njit(cache=True)
def _fold_extrema(lnp, chi2, const, rowid, j0, nt, t, s, tl, ti, tc, tci):
    """Fold one tile's lnP and chi2 (models j0 .. j0 + nt) into star s's running
    maximum lnP and minimum chi2 in partition t, with their rows; returns the
    tile's largest lnP."""
    bl = tl[t, s]
    bc = tc[t, s]
    top = -np.inf
    for jj in range(nt):
        r = rowid[j0 + jj]
        if lnp[jj] > top:
            top = lnp[jj]
        if _better_max(lnp[jj], r, bl, ti[t, s]):
            bl = lnp[jj]
            ti[t, s] = r
        if const[j0 + jj] > -np.inf and _better_min(chi2[jj], r, bc, tci[t, s]):
            bc = chi2[jj]
            tci[t, s] = r
    tl[t, s] = bl
    tc[t, s] = bc
    return top


@njit(cache=True)
def _better_max(v, r, best, best_r):
    """v (at chunk row r) beats the running maximum: larger, or equal at an earlier
    row (the first index wins ties, in the grid's own row order, whatever order the
    models are visited in); -inf (invalid models) never wins."""
    return v > best or (v == best and v > -np.inf and r < best_r)


@njit(cache=True)
def _better_min(v, r, best, best_r):
    return v < best or (v == best and v < np.inf and best_r >= 0 and r < best_r)


@njit(cache=True)
def _reduce_extrema(tl, ti, tc, tci, start, best_lnp, best_idx, chi2min, chi2min_idx):
    """Per-partition maxima/minima (rows of the chunk) into the running per-star ones
    (rows of the grid: + start; earlier chunks have smaller rows)."""
    T, ns = tl.shape
    for t in range(T):
        for s in range(ns):
            if ti[t, s] >= 0 and _better_max(tl[t, s], ti[t, s] + start, best_lnp[s], best_idx[s]):
                best_lnp[s] = tl[t, s]
                best_idx[s] = ti[t, s] + start
            if tci[t, s] >= 0 and _better_min(tc[t, s], tci[t, s] + start, chi2min[s], chi2min_idx[s]):
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


#: exp(x) = 2^n e^r, n = round(x / ln 2), |r| <= ln2 / 2: Cody-Waite reduction with
#: ln 2 split in two (n ln2_hi is exact), then Taylor to degree 13 (the first omitted
#: term, r^14/14!, is < 2^-55 relative).  1 ulp of the C library's exp, 90 % of values
#: bit-equal to it; unlike a call to it, the loop vectorises (tests/fit/test_fit.py).
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
_LOG2E = 1.4426950408889634
#: 1.5 * 2^52: x + this rounds x to an integer held in the low bits of the mantissa
_ROUNDER = 6755399441055744.0
_ROUNDER_BITS = np.float64(_ROUNDER).view(np.int64)
#: below this exp underflows to subnormals (the weights are then 0 for every sum)
_EXP_MIN = -708.0


@njit(cache=True)
def _exp_inplace(x, n, tmp):
    """x[:n] = exp(x[:n]) for x <= 0 (below _EXP_MIN: exp(_EXP_MIN), ~3e-308);
    tmp: scratch of at least n doubles."""
    for i in range(n):
        v = max(x[i], _EXP_MIN)
        t = v * _LOG2E + _ROUNDER
        nf = t - _ROUNDER
        r = (v - nf * _LN2_HI) - nf * _LN2_LO
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        x[i] = p * r + 1.0
        tmp[i] = t
    # 2^n: n + 1023 in the exponent field of a double
    bits = tmp.view(np.int64)
    for i in range(n):
        bits[i] = (bits[i] - _ROUNDER_BITS + 1023) << 52
    for i in range(n):
        x[i] *= tmp[i]


@njit(cache=True)
def _accumulate_tile(
    t,
    s,
    j0,
    nt,
    start,
    chi2,
    lnp,
    Ms,
    stat_thr,
    lnp_thr,
    qM,
    b1M,
    b2M,
    gid,
    rowid,
    stellar,
    dustpt,
    layout,
    qorder,
    seeds,
    w,
    ebits,
    sel,
    cand,
    et,
    acc_s0,
    acc_exp,
    acc_h1,
    acc_h2,
    acc_wd,
    acc_chi2,
    acc_chi2i,
    acc_ncand,
    heap_key,
    heap_idx,
    heap_lnp,
    heap_chi2,
    heap_n,
    heap_root,
):
    """Add the models j0..j0+nt-1 (chi2, lnP of star s in chi2[:nt], lnp[:nt]) to
    partition t's accumulators: weights above the statistics threshold, lnP sample.

    The sums are factored along the grid's structure (``factors.GridFactors``):
    quantities [0, nd) are added model by model; the stellar ones [nd, nd + nst)
    (and stellar 2-D pairs) once per run of consecutive models of the same stellar
    model (``stellar``), with the run's summed weight; the dust ones (the rest)
    through the per-star table acc_wd of weight per dust point (``dustpt``), which
    the driver expands after the chunk (``expand_dust``).  The same sums, to rounding."""
    nd, nst, npd, nps = layout[0], layout[1], layout[2], layout[3]
    nq = qM.shape[1]
    k = heap_key.shape[2]
    # the models above the statistics threshold (weights, sums) and above the
    # sampling threshold (lnP-sample candidates), compacted without branches: whether
    # a model passes is data-dependent, a branch would often be mispredicted
    nz = 0
    nc = 0
    for jj in range(nt):
        dl = lnp[jj] - Ms
        sel[nz] = jj
        nz += dl > stat_thr
        cand[nc] = jj
        nc += dl > lnp_thr
    bc = acc_chi2[t, s]
    bci = acc_chi2i[t, s]
    for i in range(nz):
        w[i] = lnp[sel[i]] - Ms
    _exp_inplace(w, nz, ebits)
    for i in range(nz):
        jj = sel[i]
        r = rowid[j0 + jj] + start
        if _better_min(chi2[jj], r, bc, bci):
            bc = chi2[jj]
            bci = r
        sel[i] = j0 + jj
    if k > 0:
        # a key above any partition's full-heap root is not among the star's k smallest:
        # it need not enter this partition's heap either (the roots only decrease, so a
        # root read while another thread moves on is still a valid bound; the union of
        # the heaps still holds the k smallest keys, whatever the timing)
        lim = np.inf
        for u in range(heap_root.shape[0]):
            lim = min(lim, heap_root[u, s])
        for i in range(nc):
            jj = cand[i]
            j = j0 + jj
            key = hash_key(seeds[s], gid[j])
            # a full heap keeps its k smallest keys: most candidates stop here
            if key < lim and (heap_n[t, s] < k or key < heap_key[t, s, 0]):
                heap_n[t, s] = _heap_push(
                    heap_key[t, s],
                    heap_idx[t, s],
                    heap_lnp[t, s],
                    heap_chi2[t, s],
                    heap_n[t, s],
                    k,
                    key,
                    rowid[j] + start,
                    lnp[jj],
                    chi2[jj],
                )
        if heap_n[t, s] >= k:
            heap_root[t, s] = heap_key[t, s, 0]
    else:
        nc = 0
    acc_chi2[t, s] = bc
    acc_chi2i[t, s] = bci
    acc_ncand[t, s] += nc
    if nz == 0:
        return
    sw = 0.0
    for i in range(nz):
        sw += w[i]
    acc_s0[t, s] += sw
    ex = acc_exp[t, s]
    h1 = acc_h1[t, s]
    h2 = acc_h2[t, s]
    wd = acc_wd[t, s]
    for q in range(nq):
        et[q] = 0.0
    cur = -1
    rs = 0.0
    rj = 0
    for i in range(nz):
        wi = w[i]
        j = sel[i]
        g = stellar[j]
        if g != cur:
            if cur >= 0:
                _add_run(rs, rj, nd, nst, npd, nps, qM, b1M, b2M, et, h1, h2)
            cur = g
            rs = 0.0
            rj = j
        rs += wi
        wd[dustpt[j]] += wi
        # row views: indices from 0, no negative-index fix-up, the sums vectorise
        qj = qM[j]
        b1j = b1M[j]
        b2j = b2M[j]
        for q in range(nd):
            et[q] += wi * qj[q]
        for q in range(nd):
            h1[b1j[q]] += wi
        for p in range(npd):
            h2[b2j[p]] += wi
    _add_run(rs, rj, nd, nst, npd, nps, qM, b1M, b2M, et, h1, h2)
    for q in range(nd + nst):
        ex[qorder[q]] += et[q]


@njit(cache=True)
def _add_run(rs, j, nd, nst, npd, nps, qM, b1M, b2M, et, h1, h2):
    """A run of models of one stellar model (row j of it), summed weight rs: its
    stellar quantities and 2-D pairs take rs at once."""
    qj = qM[j]
    b1j = b1M[j]
    b2j = b2M[j]
    for q in range(nd, nd + nst):
        et[q] += rs * qj[q]
    for q in range(nd, nd + nst):
        h1[b1j[q]] += rs
    for p in range(npd, npd + nps):
        h2[b2j[p]] += rs


@njit(cache=True)
def _best_quantities(s, bi, j0, nt, qM, qorder, gid, specgrid, best_q, best_gid, best_spec):
    """Best (MAP) model's quantities, when it lies in the tile (bi: its position in the
    chunk as visited, -1 when it is in another chunk)."""
    if bi >= j0 and bi < j0 + nt:
        for q in range(qM.shape[1]):
            best_q[s, qorder[q]] = qM[bi, q]
        best_gid[s] = gid[bi]
        best_spec[s] = specgrid[bi]


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
    qM,
    b1M,
    b2M,
    gid,
    rowid,
    stellar,
    dustpt,
    layout,
    qorder,
    specgrid,
    best_pos,
    seeds,
    acc_s0,
    acc_exp,
    acc_h1,
    acc_h2,
    acc_wd,
    acc_chi2,
    acc_chi2i,
    acc_ncand,
    heap_key,
    heap_idx,
    heap_lnp,
    heap_chi2,
    heap_n,
    heap_root,
    best_q,
    best_gid,
    best_spec,
):
    """Accumulate one chunk into the per-partition accumulators (leading axis T).

    Model-major: qM [n, nq] quantity values, b1M [n, nq] offset 1-D bin indices,
    b2M [n, npairs] flat 2-D bin indices."""
    ns, nb = Y.shape
    n = mT.shape[1]
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
        chi2 = np.empty(TILE)
        lnp = np.empty(TILE)
        w = np.empty(TILE)
        sel = np.empty(TILE, dtype=np.int64)
        cand = np.empty(TILE, dtype=np.int64)
        ebits = np.empty(TILE)
        et = np.empty(qM.shape[1])
        d = np.empty((nb, TILE))
        for j0 in range(t * TILE, n, T * TILE):  # tiles t, t + T, t + 2T...
            nt = min(TILE, n - j0)
            for s in range(ns):
                _tile(Y, USED, s, mT, ivT, lneT, icdT, icoT, full, const, j0, nt, chi2, lnp, missing[s], d)
                Ms = M[s]
                top = -np.inf
                for jj in range(nt):
                    if lnp[jj] > top:
                        top = lnp[jj]
                _best_quantities(s, best_pos[s], j0, nt, qM, qorder, gid, specgrid, best_q, best_gid, best_spec)
                if top - Ms <= floor:
                    continue
                _accumulate_tile(
                    t, s, j0, nt, start, chi2, lnp, Ms, stat_thr, lnp_thr, qM, b1M, b2M, gid, rowid, stellar,
                    dustpt, layout, qorder, seeds, w, ebits, sel, cand, et, acc_s0, acc_exp, acc_h1, acc_h2, acc_wd, acc_chi2, acc_chi2i,
                    acc_ncand,
                    heap_key, heap_idx, heap_lnp, heap_chi2, heap_n, heap_root,
                )  # fmt: skip


# --------------------------------------------------------------------------------------
# float32 screen (default mode, diagonal noise model)
#
# Almost every (star, model) pair is far below the star's peak: its lnP is needed only
# to know that.  ``screen_max`` evaluates lnP in float32 (half the memory traffic, twice
# the SIMD width) on band-scaled arrays prepared by the driver,
#
#     m32 = m / s_k,  hv32 = -(s_k / e)² / 2,  c32 = const - cref,  y32 = y / s_k,
#     lnP32 = c32 + Σ_k (y32 - m32)² hv32            (+ cref = lnP, to float32 rounding)
#
# and recomputes in float64, with the operations of ``_tile_lnp``, every model whose
# float32 lnP (or chi2) is within ``SCREEN_MARGIN`` of the running maximum (minimum):
# those that can be the peak or the smallest chi2.  It also keeps each tile's float32
# maximum per star, and ``screen_accumulate`` evaluates (in float64) only the tiles
# whose maximum can reach the statistics or sampling threshold.  The float32 error is
# ~1e-5 in lnP (tests/fit/test_fit.py checks that it stays far below the margin), so
# every decision, sum and PDF is the float64 kernels', bit for bit.
# --------------------------------------------------------------------------------------

#: lnP units: a model whose float32 lnP is further than this from a decision is skipped
SCREEN_MARGIN = 0.5
#: scaled flux of an invalid model in the float32 arrays (with hv32 = -1): its acc is
#: about -n_bands * 1e37, below any valid model's, and still finite in float32; stars
#: with a scaled flux beyond FAST_Y32 take the float64 kernels
INVALID_M32 = 3e18
FAST_Y32 = 1e15


@njit(cache=True, fastmath={"nnan", "nsz", "contract", "arcp"})
def _tile32(y32, s, m32, hv32, c32, j0, nt, acc, lnp):
    """float32 lnP of models j0.. for star s (acc = -chi2/2); returns the tile's max
    of lnp and of acc.  Invalid models have c32 = -inf and m32, hv32 that make acc
    hugely negative (``INVALID_M32``), so they win neither maximum."""
    nb = y32.shape[1]
    for jj in range(nt):
        acc[jj] = 0.0
    for k in range(nb):
        yk = y32[s, k]
        # slices: indices from 0, so numba adds no negative-index fix-up and the loop vectorises
        mk = m32[k, j0 : j0 + nt]
        hk = hv32[k, j0 : j0 + nt]
        for jj in range(nt):
            dk = yk - mk[jj]
            acc[jj] += dk * dk * hk[jj]
    ck = c32[j0 : j0 + nt]
    top = np.float32(-np.inf)
    amax = np.float32(-np.inf)
    for jj in range(nt):
        lp = ck[jj] + acc[jj]
        lnp[jj] = lp
        top = max(top, lp)
        amax = max(amax, acc[jj])
    return top, amax


@njit(cache=True)
def _exact(Y, s, mT, ivT, const, j):
    """float64 (chi2, lnP) of model j for star s with every band measured: the
    operations of ``_tile_lnp`` in the same order, hence the same bits."""
    c2 = 0.0
    for k in range(Y.shape[1]):
        dk = Y[s, k] - mT[k, j]
        c2 += dk * dk * ivT[k, j]
    return c2, const[j] - 0.5 * c2


def screen_tiles(n: int, T: int) -> int:
    """Tiles of the largest of T model partitions of n models (rows of ``tmax``)."""
    return ((n + TILE - 1) // TILE + T - 1) // T


@njit(parallel=True, cache=True)
def screen_max(
    Y,
    Y32,
    FAST,
    USED,
    mT,
    ivT,
    lneT,
    const,
    m32,
    hv32,
    c32,
    cref,
    rowid,
    start,
    best_lnp,
    best_idx,
    chi2min,
    chi2min_idx,
    tmax,
    T,
):
    """``pass_max`` for a diagonal noise model, screened in float32 for the stars
    with FAST[s] (every band measured); also the float32 maximum lnP - cref of every
    (partition, tile, star) into tmax [T, tiles, ns].

    Two sweeps: the float32 one finds each star's float32 maxima of lnP and of
    -chi2/2 (tile by tile); the second evaluates in float64 only the models within
    ``SCREEN_MARGIN`` of them.  The cut is global, so the work does not depend on
    the order the models are visited in."""
    ns, nb = Y.shape
    n = mT.shape[1]
    margin = SCREEN_MARGIN
    tl = np.full((T, ns), -np.inf)
    ti = np.full((T, ns), -1, dtype=np.int64)
    tc = np.full((T, ns), np.inf)
    tci = np.full((T, ns), -1, dtype=np.int64)
    tam = np.empty_like(tmax)  # float32 max of -chi2/2 per (partition, tile, star)
    pl = np.full((T, ns), -np.inf, dtype=np.float32)
    pa = np.full((T, ns), -np.inf, dtype=np.float32)
    missing = np.zeros(ns, dtype=np.bool_)
    for s in range(ns):
        for k in range(nb):
            if not USED[s, k]:
                missing[s] = True
    none = np.empty((0, n))
    for t in prange(T):
        chi2 = np.empty(TILE)
        lnp = np.empty(TILE)
        d = np.empty((nb, TILE))
        acc32 = np.empty(TILE, dtype=np.float32)
        lnp32 = np.empty(TILE, dtype=np.float32)
        for j0 in range(t * TILE, n, T * TILE):  # tiles t, t + T, t + 2T...
            it = j0 // (T * TILE)
            nt = min(TILE, n - j0)
            for s in range(ns):
                if FAST[s]:
                    top, amax = _tile32(Y32, s, m32, hv32, c32, j0, nt, acc32, lnp32)
                    tmax[t, it, s] = top
                    tam[t, it, s] = amax
                    pl[t, s] = max(pl[t, s], top)
                    pa[t, s] = max(pa[t, s], amax)
                    continue
                # a star with an unmeasured band: float64 for every model
                _tile(Y, USED, s, mT, ivT, lneT, none, none, False, const, j0, nt, chi2, lnp, missing[s], d)
                top64 = _fold_extrema(lnp, chi2, const, rowid, j0, nt, t, s, tl, ti, tc, tci)
                tmax[t, it, s] = top64 - cref
    lcut = np.empty(ns, dtype=np.float32)
    ccut = np.empty(ns, dtype=np.float32)
    for s in range(ns):
        ml = np.float32(-np.inf)
        ma = np.float32(-np.inf)
        for t in range(T):
            ml = max(ml, pl[t, s])
            ma = max(ma, pa[t, s])
        lcut[s] = ml - margin
        ccut[s] = ma - margin
    for t in prange(T):
        acc32 = np.empty(TILE, dtype=np.float32)
        lnp32 = np.empty(TILE, dtype=np.float32)
        for j0 in range(t * TILE, n, T * TILE):  # tiles t, t + T, t + 2T...
            it = j0 // (T * TILE)
            nt = min(TILE, n - j0)
            for s in range(ns):
                if not FAST[s] or (tmax[t, it, s] < lcut[s] and tam[t, it, s] < ccut[s]):
                    continue
                _tile32(Y32, s, m32, hv32, c32, j0, nt, acc32, lnp32)
                bl = tl[t, s]
                bc = tc[t, s]
                for jj in range(nt):
                    if lnp32[jj] >= lcut[s] or (acc32[jj] >= ccut[s] and c32[j0 + jj] > -np.inf):
                        j = j0 + jj
                        r = rowid[j]
                        c2, lp = _exact(Y, s, mT, ivT, const, j)
                        if _better_max(lp, r, bl, ti[t, s]):
                            bl = lp
                            ti[t, s] = r
                        if const[j] > -np.inf and _better_min(c2, r, bc, tci[t, s]):
                            bc = c2
                            tci[t, s] = r
                tl[t, s] = bl
                tc[t, s] = bc
    _reduce_extrema(tl, ti, tc, tci, start, best_lnp, best_idx, chi2min, chi2min_idx)


@njit(parallel=True, cache=True)
def screen_accumulate(
    Y,
    USED,
    mT,
    ivT,
    lneT,
    const,
    cref,
    tmax,
    start,
    M,
    stat_thr,
    lnp_thr,
    qM,
    b1M,
    b2M,
    gid,
    rowid,
    stellar,
    dustpt,
    layout,
    qorder,
    specgrid,
    best_pos,
    seeds,
    acc_s0,
    acc_exp,
    acc_h1,
    acc_h2,
    acc_wd,
    acc_chi2,
    acc_chi2i,
    acc_ncand,
    heap_key,
    heap_idx,
    heap_lnp,
    heap_chi2,
    heap_n,
    heap_root,
    best_q,
    best_gid,
    best_spec,
):
    """``pass_accumulate`` for a diagonal noise model, visiting only the tiles whose
    float32 maximum (tmax of ``screen_max``) can reach the thresholds."""
    ns, nb = Y.shape
    n = mT.shape[1]
    T = acc_s0.shape[0]
    k = heap_key.shape[2]
    missing = np.zeros(ns, dtype=np.bool_)
    for s in range(ns):
        for kb in range(nb):
            if not USED[s, kb]:
                missing[s] = True
    floor = min(stat_thr, lnp_thr) if k > 0 else stat_thr
    none = np.empty((0, n))
    for t in prange(T):
        chi2 = np.empty(TILE)
        lnp = np.empty(TILE)
        w = np.empty(TILE)
        sel = np.empty(TILE, dtype=np.int64)
        cand = np.empty(TILE, dtype=np.int64)
        ebits = np.empty(TILE)
        et = np.empty(qM.shape[1])
        d = np.empty((nb, TILE))
        for j0 in range(t * TILE, n, T * TILE):  # tiles t, t + T, t + 2T...
            it = j0 // (T * TILE)
            nt = min(TILE, n - j0)
            for s in range(ns):
                Ms = M[s]
                _best_quantities(s, best_pos[s], j0, nt, qM, qorder, gid, specgrid, best_q, best_gid, best_spec)
                # lnP - cref of a model that can reach the thresholds exceeds cut
                cut = Ms - cref + floor - SCREEN_MARGIN
                if tmax[t, it, s] <= cut:
                    continue
                # a tile that can contribute is evaluated in float64 as a whole (vectorised)
                _tile(Y, USED, s, mT, ivT, lneT, none, none, False, const, j0, nt, chi2, lnp, missing[s], d)
                _accumulate_tile(
                    t, s, j0, nt, start, chi2, lnp, Ms, stat_thr, lnp_thr, qM, b1M, b2M, gid, rowid, stellar,
                    dustpt, layout, qorder, seeds, w, ebits, sel, cand, et, acc_s0, acc_exp, acc_h1, acc_h2, acc_wd, acc_chi2, acc_chi2i,
                    acc_ncand,
                    heap_key, heap_idx, heap_lnp, heap_chi2, heap_n, heap_root,
                )  # fmt: skip


@njit(cache=True)
def expand_dust(acc_wd, dq, dvals, db1, db2, acc_exp, acc_h1, acc_h2):
    """The dust-point weight tables of ``_accumulate_tile`` (acc_wd [T, ns, n_dust])
    into partition 0's sums: per dust point d, its summed weight W goes to the
    quantities dq (original indices) with values dvals [d, x], to the 1-D bins
    db1 [d, x] and to the 2-D bins db2 [d, y].  Sequential: the same sums on any
    thread count."""
    T, ns, nd = acc_wd.shape
    for s in range(ns):
        for d in range(nd):
            W = 0.0
            for t in range(T):
                W += acc_wd[t, s, d]
            if W == 0.0:
                continue
            for x in range(dq.shape[0]):
                acc_exp[0, s, dq[x]] += W * dvals[d, x]
                acc_h1[0, s, db1[d, x]] += W
            for y in range(db2.shape[1]):
                acc_h2[0, s, db2[d, y]] += W


@njit(parallel=True, cache=True, error_model="numpy")
def sum_partitions(acc, s0, out, n):
    """out[s, :n] = (acc[0, s, :n] + acc[1, s, :n] + ...) / s0[s]: the partitions'
    PDF accumulators of a star block added in partition order (numpy's
    ``acc.sum(axis=0)``, bit for bit), then acc cleared for the next block; the
    stars are split between threads (each writes only its own rows)."""
    T, ns, m = acc.shape
    for s in prange(ns):
        o = out[s]
        for x in range(n):
            o[x] = acc[0, s, x]
        for t in range(1, T):
            a = acc[t, s]
            for x in range(n):
                o[x] += a[x]
        d = s0[s]
        for x in range(n):
            o[x] /= d
        for t in range(T):
            a = acc[t, s]
            for x in range(m):
                a[x] = 0.0


def set_threads(n: int | None) -> None:
    if n:
        # numba.config sets its options at import time, so they are invisible to mypy
        numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]


#: the kernel entry points the driver calls (bench/bench_fit.py times them)
KERNELS = ("pass_max", "pass_accumulate", "screen_max", "screen_accumulate")

__all__ = [
    "expand_dust",
    "sum_partitions",
    "pass_max",
    "pass_accumulate",
    "screen_max",
    "screen_accumulate",
    "screen_tiles",
    "SCREEN_MARGIN",
    "KERNELS",
    "hash_key",
    "LN2PI",
    "ALL_MODELS_EPS",
    "all_models_threshold",
    "n_partitions",
    "set_threads",
]
