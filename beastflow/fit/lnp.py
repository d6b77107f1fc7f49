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

import zlib
from collections.abc import Sequence

import numpy as np

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
    other, each sorted by key).  Unused heap slots hold key +inf (keys are < 1),
    so a stable sort of the padded rows orders the entries as a stable sort of
    the used ones concatenated in partition order."""
    T, ns, kk = heap_key.shape
    counts = np.minimum(np.asarray(heap_n).sum(axis=0), k).astype(np.int64)
    if ns == 0 or kk == 0:
        return counts, {"key": np.empty(0), "idx": np.empty(0, np.int64), "lnp": np.empty(0), "chi2": np.empty(0)}
    rows = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2)).reshape(ns, T * kk)  # noqa: E731
    keys = rows(heap_key)
    order = np.argsort(keys, axis=1, kind="stable")[:, :k]
    keep = np.arange(order.shape[1])[None, :] < counts[:, None]
    pick = lambda a: np.take_along_axis(rows(a), order, axis=1)[keep]  # noqa: E731
    return counts, {"key": pick(heap_key), "idx": pick(heap_idx), "lnp": pick(heap_lnp), "chi2": pick(heap_chi2)}


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
