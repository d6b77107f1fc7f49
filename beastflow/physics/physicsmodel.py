"""The physics-model stage: spectral grid with priors → extinguished SED (sub)grids.

``run_physicsmodel(settings)`` (docs/stages.md) builds the spectral grid with
stellar priors once (``spectral_grid.build_spectral_grid``), writes it to
``{P}_spec_w_priors.grid.hd5``, splits its rows into ``n_subgrid`` contiguous
slices (spec §9.4) and, for each slice, writes ``{P}_seds.grid.hd5``
(one subgrid) or ``{P}_seds.gridsub{g}.hd5``.

Row order inside an SED (sub)grid (spec §7.4): valid dust points are visited
A(V) slowest, then R(V), then f_A; the c-th valid point owns the block of rows
[c·N0, (c+1)·N0) holding all N0 spectral rows of the slice in order.  Row i of
subgrid g is therefore row ``c·N + r0 + j`` of the single full grid (N rows in
the spectral grid, slice g = [r0, r0 + N0), c = i // N0, j = i % N0);
``full_grid_rows`` implements that mapping, recorded in each file's meta.

Speed: band fluxes are linear in the spectrum, so for a dust point with
transmission t(λ) the extinguished band fluxes are ``F @ (t[:, None] * W)``
with W the photometry weights (photometry.band_weights).  Restricting λ to the
points the filters see, stacking the per-dust-point matrices side by side and
doing one BLAS matrix product per block of ``chunk_models`` rows costs
2·nλ_support·n_bands flops per model (≈ 7e3 for Kurucz and 6 HST bands) at
BLAS speed; the product is computed once per *star* and scaled per distance.
The extinction curve depends only on (R(V), f_A), so it is evaluated once
per pair and scaled by A(V).  The grid is then written one HDF5 chunk of rows
(a *unit*) at a time: numba kernels gather and scale the band fluxes and
fill the unit's grid columns one by one, each chunk is shuffled and deflated
by beastflow (zlib releases the GIL) while it is in the core's cache, units
on ``numba.get_num_threads()`` threads, and the chunks are stored with HDF5's
direct chunk write, in order.  Memory is bounded by a few units and blocks (plus the
spectral grid itself, which is held once per star, not per distance or dust
point), whatever the grid size.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from beastflow import plan, storage
from beastflow.io.hdf5_arrays import encode_chunk
from beastflow.io.sed_grid import SEDGrid, SEDGridWriter, log_flux_columns
from beastflow.physics import photometry
from beastflow.physics.spectral_grid import (
    SpectralGrid,
    build_spectral_grid,
    input_hashes,
    read_spectral_grid,
    spectral_grid_provenance,
    wd_column,
    write_spectral_grid,
)
from beastflow.provenance import make_provenance

if TYPE_CHECKING:
    from beastflow.settings import Settings

log = logging.getLogger(__name__)

STAGE = "physicsmodel"
SPEC_STAGE = "physicsmodel.spec_w_priors"

#: bytes allowed for the gathered spectra of one block of rows in the
#: row-chunked path (grids whose slice is larger than ``chunk_models``)
_GATHER_BYTES = 256 << 20


@dataclass
class PhysicsModelResult:
    sed_grids: list[str]
    n_models: int
    summary: dict[str, Any] = field(default_factory=dict)
    spec_grid: str | None = None


def uniform_slices(n: int, n_sub: int) -> list[tuple[int, int]]:
    """Split range(n) into n_sub contiguous slices; the first n % n_sub get one more row (§9.4)."""
    if n_sub < 1:
        raise ValueError(f"physics.n_subgrid must be >= 1, got {n_sub}")
    q, r = divmod(n, n_sub)
    out, a = [], 0
    for i in range(n_sub):
        b = a + q + (1 if i < r else 0)
        out.append((a, b))
        a = b
    return out


def sed_grid_urls(settings: Settings) -> list[str]:
    return plan.Names.of(settings).sed_grids(settings.physics.n_subgrid)


def spec_grid_url(settings: Settings) -> str:
    return plan.Names.of(settings).spec_grid()


def full_grid_rows(meta: dict[str, Any], rows: np.ndarray | None = None) -> np.ndarray:
    """Row indices in the single full grid of (some) rows of a subgrid, from its meta."""
    r0, r1 = meta["spec_rows"]
    n0 = r1 - r0
    n_spec = meta["n_spec_rows"]
    if rows is None:
        rows = np.arange(n0 * meta["n_valid_dust"])
    rows = np.asarray(rows, dtype=np.int64)
    return (rows // n0) * n_spec + r0 + rows % n0


def settings_hash(settings: Settings) -> str:
    return settings.section_hash("physics", "compat")


# --------------------------------------------------------------------- dust


@dataclass
class DustPlan:
    """Valid dust points (BEAST order) and what every block needs of them."""

    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    Av: np.ndarray
    Rv: np.ndarray
    f_A: np.ndarray
    Rv_A: np.ndarray
    has_fA: bool
    law: Any
    grid_weight: np.ndarray  # per valid point
    label: str

    @property
    def n(self) -> int:
        return int(self.Av.size)


def plan_dust(settings: Settings) -> DustPlan:
    from beastflow.physics.dust_priors import dust_grid_weights
    from beastflow.physics.extinction import dust_axes, make_extinction_law

    ext = settings.physics.extinction
    avs, rvs, fAs = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in dust_axes(ext))
    axes = (avs, rvs, fAs)
    law = make_extinction_law(ext, settings.resolved_behaviour.physics.beast_gordon16_curves)
    pts = law.valid_dust_points(*axes)
    Av = np.asarray(pts["Av"], dtype=np.float64)
    if Av.size == 0:
        raise ValueError(
            f"no valid dust points for physics.extinction rvs = {ext.rvs}, fAs = {ext.fAs} "
            "(R_A of every (R(V), f_A) pair falls outside the R(V) grid, spec §7.3)"
        )
    Rv = np.asarray(pts["Rv"], dtype=np.float64)
    has_fA = bool(getattr(law, "has_fA", True))
    fA = np.asarray(pts["f_A"], dtype=np.float64) if "f_A" in pts else np.full(Av.size, axes[2][0])
    RvA = np.asarray(pts["Rv_A"], dtype=np.float64) if "Rv_A" in pts else Rv.copy()
    gw = np.asarray(dust_grid_weights(Av, Rv, fA, axes), dtype=np.float64)
    return DustPlan(
        axes=axes,
        Av=Av,
        Rv=Rv,
        f_A=fA,
        Rv_A=RvA,
        has_fA=has_fA,
        law=law,
        grid_weight=gw,
        label=f"{ext.law}"
        + (f"({ext.a_law}+{ext.b_law})" if ext.law == "rvfa" else f"({ext.curve})" if ext.law == "single" else ""),
    )


def _dust_prior_table(settings: Settings, dust: DustPlan, distances: np.ndarray) -> np.ndarray:
    """Dust prior weight [n_valid, n_distances] (step priors depend on distance)."""
    from beastflow.physics.dust_priors import dust_prior_weights

    nv, nd = dust.n, distances.size
    w = dust_prior_weights(
        np.repeat(dust.Av, nd),
        np.repeat(dust.Rv, nd),
        np.repeat(dust.f_A, nd),
        np.tile(distances, nv),
        dust.axes,
        settings.physics.priors,
        settings.resolved_behaviour.physics.dust_priors_unnormalised,
        has_fA=dust.has_fA,
    )
    return np.asarray(w, dtype=np.float64).reshape(nv, nd)


class DustWeightMatrices:
    """Band-weight matrices t(λ)[:, None] · W of dust points, computed on demand.

    Built per block rather than for all valid points at once: with a dense
    dust grid (thousands of points) the full stack would not fit in memory.
    The curve A(λ)/A(V) is cached per (R(V), f_A, R_A); A(V) only scales it.
    """

    def __init__(self, dust: DustPlan, lamb_sup: np.ndarray, W_sup: np.ndarray, exp_attenuation: bool):
        self.dust, self.lamb, self.W, self.exp_attenuation = dust, lamb_sup, W_sup, exp_attenuation
        self._curves: dict[tuple[float, float, float], np.ndarray] = {}

    def curve(self, c: int) -> np.ndarray:
        d = self.dust
        key = (float(d.Rv[c]), float(d.f_A[c]), float(d.Rv_A[c]))
        k = self._curves.get(key)
        if k is None:
            k = np.asarray(d.law.curve(self.lamb, *key), dtype=np.float64)
            self._curves[key] = k
        return k

    def stacked(self, cs: np.ndarray) -> np.ndarray:
        """[nλ_sup, len(cs)·nb]: the matrices of dust points ``cs`` side by side."""
        from beastflow.physics.extinction import transmission

        nb = self.W.shape[1]
        # whole-block numpy calls, not a few per dust point: those held the GIL
        # ~0.1 ms per point, serialising the build's threads; each element is the
        # same product and power as one point at a time, so no number changes
        k = np.stack([self.curve(int(c)) for c in cs])
        t = np.asarray(transmission(self.dust.Av[cs][:, None] * k, self.exp_attenuation), dtype=np.float64)
        out = np.empty((self.lamb.size, cs.size, nb))
        np.multiply(t.T[:, :, None], self.W[:, None, :], out=out)
        return out.reshape(self.lamb.size, cs.size * nb)


# -------------------------------------------------------------- one subgrid


def grid_columns(sg: SpectralGrid, has_fA: bool) -> list[str]:
    """SED grid columns in BEAST's order (§9.1)."""
    dust_cols = ["Av", "Rv", "Rv_A", "f_A"] if has_fA else ["Av", "Rv"]
    stellar = [c for c in sg.column_order if not c.endswith("_nd")]
    nd = [c for c in sg.column_order if c.endswith("_nd")]
    return dust_cols + stellar + nd + [wd_column(f) for f in sg.filters]


#: rows of a unit (one HDF5 chunk of every dataset), at most: the grain of the
#: threads and of the memory the build holds
_UNIT_ROWS = 65_536
#: what a grid column is filled from (``_column_sources``)
_DUST, _STELLAR, _GRID_W, _PRIOR_W, _WEIGHT = range(5)
#: byte planes of a float64 flux left uncompressed (hdf5_arrays.encode_chunk): the
#: 48 low mantissa bits of fluxes are near-random, deflate gains ~1.3x on them at
#: ~50 MB/s, which alone cost more than the rest of the build
_RAW_FLUX_BYTES = 6


@dataclass
class _Segment:
    """Rows of one dust point c and spectral rows [j0, j1) of the slice, at unit row ``r``.

    Band fluxes are ``G[grow[j] - roff, gcol + b] * scale[j]``: G is the matrix
    product of a block (the per-star product of a group of dust points, or the
    gathered rows of one dust point in the row-chunked path).
    """

    c: int
    j0: int
    j1: int
    r: int
    G: Any  # the block's product, or its Future when the build runs on threads
    grow: np.ndarray
    roff: int
    gcol: int


def _column_sources(columns: list[str], sg: SpectralGrid, has_fA: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per stored grid column: (kind, index) of what it is filled from, in file column order."""
    dust_cols = ["Av", "Rv", "Rv_A", "f_A"] if has_fA else ["Av", "Rv"]
    stellar = _stellar_columns(sg)
    fixed = {"grid_weight": _GRID_W, "prior_weight": _PRIOR_W, "weight": _WEIGHT}
    pairs: list[tuple[int, int]] = []
    for c in columns:
        if c in dust_cols:
            pairs.append((_DUST, dust_cols.index(c)))
        elif c in fixed:
            pairs.append((fixed[c], 0))
        else:
            pairs.append((_STELLAR, stellar.index(c)))
    kind, idx = zip(*pairs) if pairs else ((), ())
    return np.asarray(kind, np.int64), np.asarray(idx, np.int64)


def _stellar_columns(sg: SpectralGrid) -> list[str]:
    return [c for c in sg.column_order if c not in ("weight", "prior_weight", "grid_weight")]


def build_sed_subgrid(
    settings: Settings,
    sg: SpectralGrid,
    dust: DustPlan,
    rows: tuple[int, int],
    url: str,
    provenance: dict[str, Any],
    meta: dict[str, Any],
) -> int:
    """Write the SED grid of spectral rows [r0, r1) × all valid dust points to ``url``.

    The grid is produced one HDF5 chunk of rows (a *unit*) at a time: numba
    kernels fill the unit's fluxes from the block matrix products and its
    columns one at a time, each shuffled and deflated (``encode_chunk``) as it
    is filled, units on ``numba.get_num_threads()`` threads; the chunks are
    then stored as they are.  The matrix
    products are the same calls on the same blocks as a block-at-a-time build
    (``per`` dust points side by side, or ``step`` gathered rows of one dust
    point), so every number is independent of the units and of the threads.
    Memory: a few units and the blocks they read, whatever the grid size.
    """
    beh = settings.resolved_behaviour.physics
    chunk = int(settings.physics.chunk_models)
    r0, r1 = rows
    n0 = r1 - r0
    nb = len(sg.filters)
    n_models = n0 * dust.n

    W = photometry.band_weights(sg.lamb, sg.filters, beh.band_numerator_positive_only)
    sup = photometry.filter_support(W)
    W_sup = W[sup]
    lamb_band = photometry.mean_wavelengths(sg.lamb, sg.filters)
    Wd = DustWeightMatrices(dust, sg.lamb[sup], W_sup, beh.exp_attenuation)

    # unique stars of the slice, restricted to the filters' wavelength support;
    # a row's spectrum is star spectrum × (10 pc / d)²
    star = sg.star_index[r0:r1]
    ustar, inv = np.unique(star, return_inverse=True)
    inv = np.ascontiguousarray(inv, dtype=np.int64)
    A = np.ascontiguousarray(sg.star_spectra[np.ix_(ustar, sup)])
    scale = np.ascontiguousarray(sg.scale[r0:r1], dtype=np.float64)
    dist_idx = np.searchsorted(sg.distances, sg.columns["distance"][r0:r1])
    dist_idx = np.ascontiguousarray(np.clip(dist_idx, 0, sg.distances.size - 1), dtype=np.int64)
    dprior = np.ascontiguousarray(_dust_prior_table(settings, dust, sg.distances))

    columns = grid_columns(sg, dust.has_fA)
    # log{F}_wd columns are not stored (sed_grid.derived_columns): readers take
    # np.log10 of /seds
    derived = log_flux_columns(sg.filters, columns)
    stored = [c for c in columns if c not in derived]
    kind, src = _column_sources(stored, sg, dust.has_fA)
    stellar = np.ascontiguousarray(np.stack([sg.columns[c][r0:r1] for c in _stellar_columns(sg)]), dtype=np.float64)
    dvals = np.ascontiguousarray(
        np.stack([dust.Av, dust.Rv, dust.Rv_A, dust.f_A] if dust.has_fA else [dust.Av, dust.Rv]), dtype=np.float64
    )
    sgw = np.ascontiguousarray(sg.columns["grid_weight"][r0:r1], dtype=np.float64)
    spw = np.ascontiguousarray(sg.columns["prior_weight"][r0:r1], dtype=np.float64)
    dgw = np.ascontiguousarray(dust.grid_weight, dtype=np.float64)
    # one chunk length for every dataset (the writer caps a chunk at 4 MB)
    unit = _chunk_rows(n_models, target=min(_UNIT_ROWS, (4 << 20) // (8 * max(1, nb))))

    stacked = n0 <= chunk
    if stacked:
        # several dust points per block: one matrix product against the
        # side-by-side stack of their weight matrices
        per = max(1, min(chunk // n0, _GATHER_BYTES // (8 * max(1, sup.size) * nb)))
    else:
        # slice larger than a block: gathered rows in blocks, one dust point at a time
        step = min(chunk, max(1, _GATHER_BYTES // (8 * max(1, sup.size))))
        rows_of_slice = np.arange(n0, dtype=np.int64)
    threads = max(1, int(numba.get_num_threads()))
    # with threads, the block products are tasks too: queued `ahead` units before
    # the units that read them (first in, first out), so a unit never waits on a
    # product no thread has started, and the main thread only orders and stores
    # chunks; the blocks of at most ~4·threads units are alive at a time
    pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
    ahead = 2 * threads
    # every extinction curve evaluated here, once: product tasks then only read
    # the cache (the law's own LRU cache is not meant for concurrent updates)
    for c in range(dust.n):
        Wd.curve(c)
    blocks: dict[tuple[int, int], Any] = {}

    def product(key: tuple[int, int]) -> np.ndarray:
        if stacked:
            g = key[0]
            return A @ Wd.stacked(np.arange(g * per, min(dust.n, (g + 1) * per)))  # the only O(n·nλ) work
        c, s = key
        return A[inv[s * step : min(n0, (s + 1) * step)]] @ Wd.stacked(np.array([c]))

    def block(key: tuple[int, int]) -> Any:
        G = blocks.get(key)
        if G is None:
            G = product(key) if pool is None else pool.submit(product, key)
            blocks[key] = G
        return G

    def spans(lo: int, hi: int) -> list[tuple[int, int, int, tuple[int, int]]]:
        """(dust point c, j0, j1, block key) of every segment of unit rows [lo, hi)."""
        out = []
        for c in range(lo // n0, (hi - 1) // n0 + 1):
            ja, jb = max(lo, c * n0) - c * n0, min(hi, (c + 1) * n0) - c * n0
            if stacked:
                out.append((c, ja, jb, (c // per, 0)))
                continue
            for s in range(ja // step, (jb - 1) // step + 1):
                out.append((c, max(ja, s * step), min(jb, (s + 1) * step), (c, s)))
        return out

    def segments(lo: int, hi: int) -> list[_Segment]:
        out = []
        for c, a, b, key in spans(lo, hi):
            if stacked:
                out.append(_Segment(c, a, b, c * n0 + a - lo, block(key), inv, 0, (c - key[0] * per) * nb))
            else:
                out.append(_Segment(c, a, b, c * n0 + a - lo, block(key), rows_of_slice, key[1] * step, 0))
        # blocks no later unit needs are dropped (units advance through the dust points)
        first = out[-1].c
        for key in [k for k in blocks if (k[0] * per + per - 1 if stacked else k[0]) < first]:
            del blocks[key]
        return out

    def encode_unit(lo: int, hi: int, segs: list[_Segment]) -> tuple[int, dict[str, bytes]]:
        seds = np.zeros((unit, nb)) if hi - lo < unit else np.empty((unit, nb))
        for sg_ in segs:
            G = sg_.G.result() if isinstance(sg_.G, concurrent.futures.Future) else sg_.G
            _fill_seds(G, sg_.grow, sg_.roff, sg_.gcol, scale, sg_.j0, sg_.j1, sg_.r, seds)
        enc = {"seds": encode_chunk(seds, _RAW_FLUX_BYTES)}
        # one column at a time, filled, shuffled and deflated while it is in the
        # core's cache: filling every column of the unit first (13 MB) and then
        # encoding them sent each through memory three more times, which on 2
        # threads sharing the memory bus cost more CPU than on 1
        spans_ = np.array([(sg_.c, sg_.j0, sg_.j1, sg_.r) for sg_ in segs], dtype=np.int64).reshape(-1, 4)
        col = np.zeros(unit) if hi - lo < unit else np.empty(unit)
        for q, c in enumerate(stored):
            _fill_column(kind[q], src[q], spans_, dvals, stellar, sgw, spw, dgw, dprior, dist_idx, col)
            enc[f"grid/{c}"] = encode_chunk(col)
        return hi - lo, enc

    with (
        SEDGridWriter(
            url,
            sg.filters,
            lamb_band,
            columns,
            n_models=n_models,
            provenance=provenance,
            stellar_library=sg.library_label,
            meta=meta,
            chunk_rows=unit,
        ) as w,
        pool if pool is not None else contextlib.nullcontext(),
    ):
        pending: collections.deque = collections.deque()
        for lo in range(0, n_models, unit):
            hi = min(n_models, lo + unit)
            if pool is not None:
                # the products of the unit `ahead` units on are queued now, that many
                # tasks before the first unit reading them: queued just before that
                # unit, a product ran on one thread while the other sat in the unit
                # waiting for it (~0.1 s per block on 2 threads, 6 blocks per 1.5e6 models)
                nxt = lo + ahead * unit
                for *_, key in spans(nxt, min(n_models, nxt + unit)) if nxt < n_models else ():
                    block(key)
            segs = segments(lo, hi)
            if pool is None:
                w.append_encoded(*encode_unit(lo, hi, segs))
                continue
            pending.append(pool.submit(encode_unit, lo, hi, segs))
            # bounded look-ahead: memory stays a few units whatever the grid size
            while len(pending) > 2 * threads:
                w.append_encoded(*pending.popleft().result())
        while pending:
            w.append_encoded(*pending.popleft().result())
    return n_models


@numba.njit(cache=True, nogil=True)
def _fill_seds(G, grow, roff, gcol, scale, j0, j1, r, seds):  # pragma: no cover - compiled
    """Band fluxes of the rows (one dust point) × (spectral rows j0..j1) of a unit (numba).

    Row r + j - j0 of the unit: band b = G[grow[j] - roff, gcol + b] × scale[j]: the
    same product, operand by operand, as the former numpy build, so bit-identical.
    """
    nb = seds.shape[1]
    for j in range(j0, j1):
        u = grow[j] - roff
        s = scale[j]
        for b in range(nb):
            seds[r + j - j0, b] = G[u, gcol + b] * s


@numba.njit(cache=True, nogil=True)
def _fill_column(k, i, spans, dvals, stellar, sgw, spw, dgw, dprior, dist_idx, out):  # pragma: no cover - compiled
    """One stored grid column (what ``_column_sources`` says: kind k, index i) of a unit (numba).

    ``spans`` rows: (dust point c, j0, j1, unit row r) of each segment; row r + j - j0
    holds spectral row j at dust point c.  Same arithmetic, operand by operand, as
    the former numpy build (tile/repeat and products), so the numbers are bit-identical.
    """
    for s in range(spans.shape[0]):
        c, j0, j1, r = spans[s, 0], spans[s, 1], spans[s, 2], spans[s, 3]
        if k == _DUST:
            v = dvals[i, c]
            for j in range(j0, j1):
                out[r + j - j0] = v
        elif k == _STELLAR:
            for j in range(j0, j1):
                out[r + j - j0] = stellar[i, j]
        elif k == _GRID_W:
            for j in range(j0, j1):
                out[r + j - j0] = sgw[j] * dgw[c]
        elif k == _PRIOR_W:
            for j in range(j0, j1):
                out[r + j - j0] = spw[j] * dprior[c, dist_idx[j]]
        elif k == _WEIGHT:
            for j in range(j0, j1):
                out[r + j - j0] = (sgw[j] * dgw[c]) * (spw[j] * dprior[c, dist_idx[j]])


def _chunk_rows(n_models: int, target: int = 65_536) -> int:
    """HDF5 chunk length: about ``target`` rows, dividing the grid evenly.

    HDF5 allocates whole chunks, so a last chunk holding a few rows would
    still take a full chunk on disk (a 66k-row grid in 64k-row chunks
    doubles the file); equal chunks waste at most one row per chunk.
    """
    if n_models <= 0:
        return 1
    n_chunks = -(-n_models // target)
    return -(-n_models // n_chunks)


# -------------------------------------------------------------- the stage


def _current(prov: dict[str, Any], stage: str, shash: str, ihashes: dict[str, str]) -> bool:
    """An artifact is current when made by ``stage`` from the same settings and input files."""
    return prov.get("stage") == stage and prov.get("settings_hash") == shash and prov.get("input_hashes") == ihashes


def _existing_ok(url: str, shash: str, ihashes: dict[str, str]) -> bool:
    try:
        g = SEDGrid(url)
    except Exception:  # missing, unreadable or not a grid: rebuild
        return False
    return _current(g.provenance, STAGE, shash, ihashes)


def run_physicsmodel(
    settings: Settings, subgrids: Sequence[int] | None = None, force: bool = False
) -> PhysicsModelResult:
    """Build the SED grid(s) of ``settings`` (docs/stages.md).

    ``subgrids``: build only these subgrid indices (default: all).  Outputs
    whose provenance already records the same settings hash are kept (the
    stage is resumable) unless ``force``.
    """
    t0 = time.perf_counter()
    urls = sed_grid_urls(settings)
    n_sub = len(urls)
    todo = list(range(n_sub)) if subgrids is None else sorted(set(int(g) for g in subgrids))
    bad = [g for g in todo if not 0 <= g < n_sub]
    if bad:
        raise ValueError(f"subgrid indices {bad} outside 0..{n_sub - 1} (physics.n_subgrid = {n_sub})")
    shash = settings_hash(settings)
    ihashes = input_hashes(settings)
    build = [g for g in todo if force or not _existing_ok(urls[g], shash, ihashes)]
    if not build:
        log.info("physics model: all %d requested SED grids are up to date", len(todo))
        return _result(settings, [urls[g] for g in todo], time.perf_counter() - t0, cached=True)

    # The spectral grid with priors is an artifact of its own: reused when its
    # provenance records the same settings hash (a crashed or partial run, or
    # one job per subgrid, does not rebuild it), rebuilt otherwise.
    spec_url = spec_grid_url(settings)
    sprov = {} if force else spectral_grid_provenance(spec_url)
    if _current(sprov, SPEC_STAGE, shash, ihashes):
        log.info("reusing the spectral grid with priors %s", spec_url)
        sg = read_spectral_grid(spec_url)
    else:
        sg = build_spectral_grid(settings)
        write_spectral_grid(
            spec_url,
            sg,
            make_provenance(
                SPEC_STAGE,
                shash,
                input_hashes=sg.input_hashes,
                extra={"stellar_library": sg.library_label, "compat": settings.compat},
            ),
        )
    dust = plan_dust(settings)
    extra = {
        "stellar_library": sg.library_label,
        "compat": settings.compat,
        "spec_grid": spec_url,
    }
    slices = uniform_slices(sg.n_rows, n_sub)
    ext = settings.physics.extinction
    for g in build:
        r0, r1 = slices[g]
        meta = {
            "subgrid": g,
            "n_subgrid": n_sub,
            "spec_rows": [r0, r1],
            "n_spec_rows": sg.n_rows,
            "full_grid_row": "c * n_spec_rows + spec_rows[0] + j for row c * (spec_rows[1]-spec_rows[0]) + j",
            "n_valid_dust": dust.n,
            "dust_axes": {"avs": dust.axes[0].tolist(), "rvs": dust.axes[1].tolist(), "fAs": dust.axes[2].tolist()},
            "extinction_law": dust.label,
            "av_log": bool(ext.av_log),
            "library": {
                "label": sg.library_label,
                "analytic": sg.library_is_analytic,
                "isochrone_points": sg.n_isochrone_points,
                "kept": sg.n_kept,
                "dropped": sg.n_dropped,
            },
            **sg.meta,
        }
        prov = make_provenance(STAGE, shash, input_hashes=sg.input_hashes, extra=extra)
        t1 = time.perf_counter()
        n = build_sed_subgrid(settings, sg, dust, (r0, r1), urls[g], prov, meta)
        log.info("wrote %s: %d models in %.1f s", urls[g], n, time.perf_counter() - t1)
    return _result(settings, [urls[g] for g in todo], time.perf_counter() - t0, spec_url=spec_url)


def _result(
    settings: Settings, urls: list[str], seconds: float, cached: bool = False, spec_url: str | None = None
) -> PhysicsModelResult:
    summary = summarize(urls)
    summary["seconds"] = seconds
    summary["cached"] = cached
    if spec_url is None and storage.exists(spec_grid_url(settings)):
        spec_url = spec_grid_url(settings)
    summary["spec_grid"] = spec_url
    return PhysicsModelResult(sed_grids=urls, n_models=summary["n_models"], summary=summary, spec_grid=spec_url)


SUMMARY_COLUMNS = ["logA", "M_ini", "Z", "Av", "Rv", "f_A", "distance"]


def summarize(urls: Sequence[str], chunk_models: int = 1 << 20) -> dict[str, Any]:
    """Counts, parameter ranges, library coverage and file sizes (streamed)."""
    per: list[dict[str, Any]] = []
    ranges: dict[str, list[float]] = {}
    library: dict[str, Any] = {}
    for url in urls:
        g = SEDGrid(url)
        cols = [c for c in SUMMARY_COLUMNS if c in g.columns]
        for block in g.iter_chunks(chunk_models, columns=cols, seds=False):
            for c in cols:
                v = block.columns[c]
                if v.size:
                    lo, hi = float(v.min()), float(v.max())
                    old = ranges.get(c)
                    ranges[c] = [min(lo, old[0]), max(hi, old[1])] if old else [lo, hi]
        per.append(
            {
                "url": url,
                "n_models": g.n_models,
                "bytes": storage.size(url),
                "subgrid": g.meta.get("subgrid"),
                "spec_rows": g.meta.get("spec_rows"),
            }
        )
        library = g.meta.get("library", library)
        library["stellar_library"] = g.stellar_library
    return {"n_models": int(sum(p["n_models"] for p in per)), "grids": per, "ranges": ranges, "library": library}
