"""Memory layouts of a prepared fit chunk, made in one parallel pass each.

The grid and noise model are stored model-major ([models, bands]); the fit kernels
read band-major arrays (a tile of consecutive models per band, which vectorises)
and scatter model-major quantity rows.  numpy builds these by a gather into the
visiting order, then a strided transpose, each a full pass over the chunk; these
kernels do both in one pass, blocked so that the rows they write stay in cache,
and split the models between threads.  Every value is copied or combined with
the operation numpy would use (an addition), so the arrays are numpy's bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: models per block: a block's rows of the model-major output (~30 quantities) fit in L2
BLOCK = 1024


@njit(parallel=True, cache=True)
def band_major(order, seds, bias, err, mT, errT, ok):  # pragma: no cover - compiled
    """Visited model j is stored row order[j]: mT[k, j] = seds + bias, errT[k, j] = error,
    and ok[j] whether every band has a finite model flux and a finite error > 0."""
    n, nb = seds.shape
    for b in prange((n + BLOCK - 1) // BLOCK):
        for j in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            r = order[j]
            good = True
            for k in range(nb):
                m = seds[r, k] + bias[r, k]
                e = err[r, k]
                mT[k, j] = m
                errT[k, j] = e
                # NaN fails both comparisons; inf fails the second
                good = good and e > 0 and e < np.inf and abs(m) < np.inf
            ok[j] = good


@njit(parallel=True, cache=True)
def model_major(src, rows, out):  # pragma: no cover - compiled
    """out[j, i] = src[rows[i], j]: the quantity-major ``src`` [nq, n] as model rows of
    the quantities ``rows`` (in that order)."""
    n = src.shape[1]
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo, hi = b * BLOCK, min(n, (b + 1) * BLOCK)
        for i in range(rows.size):
            q = src[rows[i]]
            for j in range(lo, hi):
                out[j, i] = q[j]


@njit(cache=True)
def constant_within(values, ids, first):  # pragma: no cover - compiled
    """Whether ``values`` [n] is one value per id (ids [n]; first [ids]: a row of each
    id), NaN equal to NaN; stops at the first row that differs."""
    for j in range(values.size):
        a = values[j]
        b = values[first[ids[j]]]
        if a != b and not (a != a and b != b):
            return False
    return True


def model_major_of(src: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(src[rows].T)``, in one pass."""
    out = np.empty((src.shape[1], len(rows)), src.dtype)
    model_major(np.ascontiguousarray(src), np.ascontiguousarray(rows, dtype=np.int64), out)
    return out


__all__ = ["band_major", "model_major", "model_major_of", "constant_within", "BLOCK"]
