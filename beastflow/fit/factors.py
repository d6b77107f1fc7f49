"""The grid's structure, as the fit kernels use it to add fewer terms.

A BEAST grid is a product: every stellar model (isochrone point at one distance)
is extinguished at every dust point (A(V), R(V), f_A).  A quantity of the stellar
model (age, mass, log L, the dust-free fluxes...) has one value, and one PDF bin,
for all its dust variants; a dust quantity has one per dust point.  So the
posterior sums factor:

    Σ_j w_j [bin(q_j) = b] = Σ_runs (Σ_{j in run} w_j) [bin(q_run) = b]

over runs of consecutive models of one stellar model, and through a per-star
table of weight per dust point for the dust quantities.  ``grid_factors`` finds
that structure in a chunk (from the values, not from column names alone: a
quantity is "stellar" only if it is constant over every stellar model's rows) and
the order in which to visit the models so that each stellar model's rows are
consecutive (BEAST's own order is dust-major, so its grids are reordered; the
kernels report rows of the grid's own order, and break ties by them).

The sums are the same up to the order of the additions (relative 1e-16); the
statistics, PDFs and lnP samples do not depend on the row order otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from beastflow.fit.layout import constant_within

#: the dust-grid axes: a quantity among these, constant over each dust point's
#: rows, goes through the per-star dust table
DUST_QUANTITIES = ("Av", "Rv", "f_A", "Rv_A")
#: more dust points than this: the dust quantities are added model by model
#: (the per-star table is [partitions, stars, dust points])
MAX_DUST_POINTS = 4096


@dataclass
class GridFactors:
    """How one chunk's sums factor.  Quantity and pair orders list original
    indices: direct ones first, then stellar, then dust (``layout`` gives the counts
    of direct and stellar quantities and pairs)."""

    perm: np.ndarray | None  # visiting order (rows of the chunk); None = as stored
    stellar: np.ndarray  # stellar-model id per visited model (runs are consecutive)
    dustpt: np.ndarray  # dust-point id per visited model (0 when not tabled)
    n_dust: int  # dust points tabled (0: none)
    qorder: np.ndarray
    porder: np.ndarray
    layout: np.ndarray  # [n direct q, n stellar q, n direct pairs, n stellar pairs]
    dust_rep: np.ndarray  # a visited position of each dust point (its representative)


def _ids(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ids of equal values (NaN equal to NaN), and their number."""
    u, inv = np.unique(values, return_inverse=True, equal_nan=True)
    return inv.astype(np.int64).ravel(), len(u)


def stellar_models(columns: dict[str, np.ndarray]) -> np.ndarray | None:
    """Stellar-model id of each row (numbered in order of first appearance), from
    ``specgrid_indx`` and ``distance``; None when the grid does not name them."""
    if "specgrid_indx" not in columns or not len(columns["specgrid_indx"]):
        return None
    key, _ = _ids(np.asarray(columns["specgrid_indx"]))
    if "distance" in columns:
        did, nd_ = _ids(np.asarray(columns["distance"], dtype=np.float64))
        key = key * nd_ + did
    stellar, _ = _ids(key)
    first = np.unique(stellar, return_index=True)[1]
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[stellar]


@dataclass
class Visit:
    """The order in which the kernels visit a chunk's rows: each stellar model's rows
    one after the other, in the stored order within it."""

    order: np.ndarray | None  # the stored rows in visiting order; None = as stored
    stellar: np.ndarray | None  # stellar-model id per visited row (non-decreasing); None = not named


def visiting_order(columns: dict[str, np.ndarray]) -> Visit:
    """The visiting order of a chunk whose grid columns are ``columns``."""
    stellar = stellar_models(columns)
    if stellar is None:
        return Visit(None, None)
    order = np.argsort(stellar, kind="stable")
    if np.array_equal(order, np.arange(len(order))):
        return Visit(None, stellar)
    return Visit(order, stellar[order])


def grid_factors(
    qnames: list[str],
    qvals: np.ndarray,
    pairs: list[tuple[int, int]],
    visit: Visit,
) -> GridFactors:
    """Factors of a chunk: ``qvals`` [nq, n] the fitted quantities' values in the
    visiting order ``visit``, ``pairs`` the 2-D PDFs as quantity indices."""
    nq, n = qvals.shape
    if visit.stellar is not None and n:
        stellar = visit.stellar
        first = np.flatnonzero(np.diff(stellar, prepend=-1))  # each run's first row
        # compiled: most quantities differ within the first run, and it stops there
        is_stellar = [bool(constant_within(qvals[i], stellar, first)) for i in range(nq)]
    else:  # no stellar model named: every model its own run, nothing factored
        stellar = np.arange(n, dtype=np.int64)
        is_stellar = [False] * nq
    dust_q = [i for i, q in enumerate(qnames) if q in DUST_QUANTITIES and not is_stellar[i]]
    dustpt, n_dust = np.zeros(n, np.int64), 0
    if dust_q and n:
        key = np.zeros(n, np.int64)
        for i in dust_q:
            ids, m = _ids(qvals[i])
            key = key * m + ids
        dustpt, n_dust = _ids(key)
        if n_dust > MAX_DUST_POINTS:
            dust_q, dustpt, n_dust = [], np.zeros(n, np.int64), 0
    direct_q = [i for i in range(nq) if not is_stellar[i] and i not in dust_q]
    stellar_q = [i for i in range(nq) if is_stellar[i]]
    kind = ["stellar" if is_stellar[i] else "dust" if i in dust_q else "direct" for i in range(nq)]
    pk = [
        "stellar" if kind[a] == kind[b] == "stellar" else "dust" if kind[a] == kind[b] == "dust" else "direct"
        for a, b in pairs
    ]
    porder = [p for k in ("direct", "stellar", "dust") for p in range(len(pairs)) if pk[p] == k]
    dust_rep = np.unique(dustpt, return_index=True)[1] if n_dust else np.zeros(0, np.int64)
    return GridFactors(
        perm=visit.order,
        stellar=np.ascontiguousarray(stellar, dtype=np.int64),
        dustpt=np.ascontiguousarray(dustpt, dtype=np.int64),
        n_dust=n_dust,
        qorder=np.array(direct_q + stellar_q + dust_q, dtype=np.int64),
        porder=np.array(porder, dtype=np.int64),
        layout=np.array([len(direct_q), len(stellar_q), pk.count("direct"), pk.count("stellar")], dtype=np.int64),
        dust_rep=dust_rep.astype(np.int64),
    )
