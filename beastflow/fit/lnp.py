"""Sparse posterior samples (fitting.md §7), keyed by star number.

Per star, ``lnp_npts`` models are drawn uniformly without replacement among
the candidates (lnP − max lnP > lnp_threshold) by *bottom-k sampling*: every
(star, model) pair gets a pseudo-random key hash(star seed, global model id)
and the k smallest keys are kept.  The keys are deterministic, so the sample
does not depend on chunking or threads, and samples of disjoint subgrids merge
into a uniform sample of the union: keep the entries whose key is at most the
smallest "completeness key" of the inputs (every candidate of a subgrid with a
key up to its k-th smallest is present), re-apply the threshold relative to the
merged maximum, and take the k smallest keys again.  Without truncation the
merged sample is exactly the single-grid sample; with it, it is a prefix (in key
order) of the single-grid sample.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

import numba
import numpy as np

from beastflow.io.hdf5_arrays import codec_threads, run_codec

#: "complete": the sample holds every candidate
NOT_TRUNCATED = 2.0


def star_seeds(seed: int, star_ids: Sequence) -> np.ndarray:
    """One uint64 seed per star from the run seed and the star's identifier
    (not its row), so a star keeps its sample when files are re-split."""
    out = np.empty(len(star_ids), dtype=np.uint64)
    base = (int(seed) * 0x9E3779B1) & 0xFFFFFFFF
    for i, sid in enumerate(star_ids):
        out[i] = np.uint64((base << 32) | zlib.crc32(str(sid).encode()))
    return out


def reduce_heaps_flat(heap_key, heap_idx, heap_lnp, heap_chi2, heap_n, k):
    """Per-partition bottom-k heaps [T, ns, k] -> (sample size per star [ns], flat
    arrays ``key``, ``idx``, ``lnp``, ``chi2`` of the samples one star after the
    other, each sorted by key).  A partition's heap holds its entries in its
    first ``heap_n`` slots; the entries of a star are ordered as a stable sort by
    key of its used slots in partition order."""
    T, ns, kk = heap_key.shape
    counts = np.minimum(np.asarray(heap_n).sum(axis=0), k).astype(np.int64)
    if ns == 0 or kk == 0:
        return counts, {"key": np.empty(0), "idx": np.empty(0, np.int64), "lnp": np.empty(0), "chi2": np.empty(0)}
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    out = {"key": np.empty(n), "idx": np.empty(n, np.int64), "lnp": np.empty(n), "chi2": np.empty(n)}
    hn = np.ascontiguousarray(heap_n, dtype=np.int64)
    arrays = (heap_key, heap_idx, heap_lnp, heap_chi2, hn, offsets, out["key"], out["idx"], out["lnp"], out["chi2"])
    # stars split between the codec threads (the kernel releases the GIL; each star
    # writes only its own rows of the output)
    parts = np.linspace(0, ns, min(ns, codec_threads()) + 1).astype(np.int64)
    run_codec([functools.partial(_bottom_k, *arrays, a, b) for a, b in zip(parts[:-1], parts[1:])])
    return counts, out


@numba.njit(cache=True, nogil=True)
def _bottom_k(hk, hi, hl, hc, hn, offsets, key, idx, lnp, chi2, s0, s1):  # pragma: no cover - compiled
    """Stars s0..s1-1: the offsets[s+1] - offsets[s] smallest keys of star s's heap
    entries, in a stable key order.  The k-th smallest key is found by selection
    (linear), and only the entries up to it are sorted (ties at it: first come)."""
    T, _, kk = hk.shape
    cand = np.empty(T * kk)
    where = np.empty((T * kk, 2), np.int64)
    for s in range(s0, s1):
        m = 0
        for t in range(T):
            for j in range(min(hn[t, s], kk)):
                cand[m] = hk[t, s, j]
                where[m, 0], where[m, 1] = t, j
                m += 1
        want = offsets[s + 1] - offsets[s]
        if want == 0:
            continue
        if want < m:
            kth = np.partition(cand[:m], want - 1)[want - 1]
            below = 0
            for i in range(m):
                below += cand[i] < kth
            ties = want - below  # entries equal to the k-th key still taken, in order
            sel = 0
            for i in range(m):
                c = cand[i]
                if c < kth or (c == kth and ties > 0):
                    ties -= c == kth
                    cand[sel] = c
                    where[sel, 0], where[sel, 1] = where[i, 0], where[i, 1]
                    sel += 1
            m = sel
        order = np.argsort(cand[:m], kind="mergesort")
        o = offsets[s]
        for r in range(want):
            t, j = where[order[r], 0], where[order[r], 1]
            key[o + r], idx[o + r], lnp[o + r], chi2[o + r] = hk[t, s, j], hi[t, s, j], hl[t, s, j], hc[t, s, j]


def merge_star_samples(
    samples: Sequence[dict], truncated: Sequence[float], k: int, threshold: float, lnp_max: float
) -> tuple[dict, float]:
    """Merge one star's samples from disjoint model sets (subgrids).

    ``samples``: dicts of equal-length arrays incl. ``key`` and ``lnp``;
    ``truncated``: per input, the largest key up to which it is complete
    (NOT_TRUNCATED if complete).  Returns the merged sample (sorted by key) and
    its completeness key.  ``lnp_max``: the star's peak lnP over all inputs
    (the sample need not contain the peak model).
    """
    cat = {f: np.concatenate([s[f] for s in samples]) for f in samples[0]}
    tau = float(min(truncated)) if len(truncated) else NOT_TRUNCATED
    keep = cat["key"] <= tau
    keep &= cat["lnp"] - lnp_max > threshold
    cat = {f: v[keep] for f, v in cat.items()}
    order = np.argsort(cat["key"], kind="stable")
    if len(order) > k:
        order = order[:k]
        tau = float(cat["key"][order[-1]])
    return {f: v[order] for f, v in cat.items()}, tau
