"""The bottom-k reduction of the per-partition heaps (lnp.reduce_heaps_flat)."""

from __future__ import annotations

import numpy as np
import pytest

from beastflow.fit.lnp import reduce_heaps_flat


def _stable_sort_reference(hk, hi, hl, hc, hn, k):
    """The definition: each star's heap slots in partition order (unused ones +inf),
    stably sorted by key, the first min(entries, k) kept."""
    T, ns, kk = hk.shape
    counts = np.minimum(hn.sum(axis=0), k)
    rows = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2)).reshape(ns, T * kk)  # noqa: E731
    order = np.argsort(rows(hk), axis=1, kind="stable")[:, :k]
    keep = np.arange(order.shape[1])[None, :] < counts[:, None]
    pick = lambda a: np.take_along_axis(rows(a), order, axis=1)[keep]  # noqa: E731
    return counts, {"key": pick(hk), "idx": pick(hi), "lnp": pick(hl), "chi2": pick(hc)}


@pytest.mark.parametrize(
    ("T", "ns", "k", "decimals"), [(8, 40, 50, None), (8, 40, 50, 1), (3, 5, 4, 1), (1, 6, 7, None)]
)
@pytest.mark.parametrize("threads", [1, 2])
def test_reduction_is_the_stable_sort_of_all_entries(T, ns, k, decimals, threads):
    """Selection then sort gives the stable sort's samples, ties at the k-th key (rounded
    keys) resolved by partition order, for empty, part-full and full heaps, with the
    stars on one or two threads."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        _check(T, ns, k, decimals)
    finally:
        numba.set_num_threads(before)


def _check(T, ns, k, decimals):
    rng = np.random.default_rng(T * 100 + ns)
    hn = rng.integers(0, 2 * k, (T, ns)).clip(0, k)
    hn[:, 0] = 0  # a star without candidates
    hk = np.full((T, ns, k), np.inf)
    for t in range(T):
        for s in range(ns):
            keys = rng.random(hn[t, s])
            hk[t, s, : hn[t, s]] = keys if decimals is None else np.round(keys, decimals)
    hi = rng.integers(0, 10**6, hk.shape)
    hl, hc = rng.normal(size=hk.shape), rng.random(hk.shape)
    want = _stable_sort_reference(hk, hi, hl, hc, hn, k)
    got = reduce_heaps_flat(hk, hi, hl, hc, hn, k)
    np.testing.assert_array_equal(got[0], want[0])
    for f in ("key", "idx", "lnp", "chi2"):
        assert got[1][f].dtype == want[1][f].dtype, f
        np.testing.assert_array_equal(got[1][f], want[1][f], err_msg=f)
