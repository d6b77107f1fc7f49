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

The kernels are parallel over *models*: ``prange`` runs over T contiguous model
partitions, each with its own accumulators (no races, deterministic sums), which
are reduced in partition order afterwards (so ties keep the first index).
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


def n_partitions() -> int:
    return max(1, numba.get_num_threads())


@njit(cache=True)
def _lnp_chi2(ys, used, m, ivar, lne, cj, j, nb):
    chi2 = 0.0
    extra = 0.0
    for k in range(nb):
        if used[k]:
            d = ys[k] - m[j, k]
            chi2 += d * d * ivar[j, k]
        else:
            extra += lne[j, k] + 0.5 * LN2PI
    return cj + extra - 0.5 * chi2, chi2


@njit(parallel=True, cache=True)
def pass_max(Y, USED, m, ivar, lne, const, start, best_lnp, best_idx, chi2min, chi2min_idx, T):
    """Update per-star max lnP / argmax and min chi2 / argmin with one chunk (in place)."""
    ns, nb = Y.shape
    n = m.shape[0]
    tl = np.full((T, ns), -np.inf)
    ti = np.full((T, ns), -1, dtype=np.int64)
    tc = np.full((T, ns), np.inf)
    tci = np.full((T, ns), -1, dtype=np.int64)
    for t in prange(T):
        lo = t * n // T
        hi = (t + 1) * n // T
        for j in range(lo, hi):
            cj = const[j]
            if cj == -np.inf:
                continue
            for s in range(ns):
                lnp, chi2 = _lnp_chi2(Y[s], USED[s], m, ivar, lne, cj, j, nb)
                if lnp > tl[t, s]:
                    tl[t, s] = lnp
                    ti[t, s] = j
                if chi2 < tc[t, s]:
                    tc[t, s] = chi2
                    tci[t, s] = j
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
def pass_accumulate(Y, USED, m, ivar, lne, const, start, M, stat_thr, lnp_thr,
                    qvals, bins1, bins2, gid, specgrid, best_idx, seeds,
                    acc_s0, acc_exp, acc_h1, acc_h2, acc_chi2, acc_chi2i, acc_ncand,
                    heap_key, heap_idx, heap_lnp, heap_chi2, heap_n, best_q, best_gid, best_spec):
    """Accumulate one chunk into the per-partition accumulators (leading axis T)."""
    ns, nb = Y.shape
    n = m.shape[0]
    nq = qvals.shape[1]
    np2 = bins2.shape[1]
    T = acc_s0.shape[0]
    k = heap_key.shape[2]
    for t in prange(T):
        lo = t * n // T
        hi = (t + 1) * n // T
        for j in range(lo, hi):
            cj = const[j]
            if cj == -np.inf:
                continue
            jj = j + start
            for s in range(ns):
                lnp, chi2 = _lnp_chi2(Y[s], USED[s], m, ivar, lne, cj, j, nb)
                dl = lnp - M[s]
                if dl > stat_thr:
                    w = math.exp(dl)
                    acc_s0[t, s] += w
                    for q in range(nq):
                        acc_exp[t, s, q] += w * qvals[j, q]
                        acc_h1[t, s, bins1[j, q]] += w
                    for p in range(np2):
                        acc_h2[t, s, bins2[j, p]] += w
                    if chi2 < acc_chi2[t, s]:
                        acc_chi2[t, s] = chi2
                        acc_chi2i[t, s] = jj
                if jj == best_idx[s]:
                    for q in range(nq):
                        best_q[s, q] = qvals[j, q]
                    best_gid[s] = gid[j]
                    best_spec[s] = specgrid[j]
                if k > 0 and dl > lnp_thr:
                    acc_ncand[t, s] += 1
                    key = hash_key(seeds[s], gid[j])
                    heap_n[t, s] = _heap_push(heap_key[t, s], heap_idx[t, s], heap_lnp[t, s], heap_chi2[t, s],
                                              heap_n[t, s], k, key, jj, lnp, chi2)


def set_threads(n: int | None) -> None:
    if n:
        numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))


__all__ = ["pass_max", "pass_accumulate", "hash_key", "LN2PI", "ALL_MODELS_THRESHOLD", "n_partitions",
           "set_threads"]
