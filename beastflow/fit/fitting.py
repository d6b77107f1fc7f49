"""Stage "fit": every star of a sub-file against its trimmed (sub)grid.

``run_fit`` streams the trimmed grid and noise model in chunks of
``fit.chunk_models`` models through the numba kernels of ``likelihood`` (two
passes per block of ``fit.star_block`` stars: the peak, then the weighted sums),
and writes ``{prefix}_stats.parquet``, ``{prefix}_pdf1d.hd5``,
``{prefix}_pdf2d.hd5`` and ``{prefix}_lnp.hd5`` (docs/formats.md, "Fit outputs").
When the grid fits in one chunk it is prepared once and kept for all blocks.

Default behaviour vs ``compat = "beast-2.1"`` (docs/differences-from-beast.md; each row is a
field of ``beastflow.behaviour.FitBehaviour``):

| | default | beast-2.1 |
|---|---|---|
| models in the statistics | all (skipped: < 1e-9 of the peak weight in all) | lnP − max > −10 |
| chi2min | over all models | over that sparse set |
| Pmax | max normalised posterior weight (0–1) | max lnP (a log) |
| PDF bins | FULL grid (grid info); 2-D = 1-D bins | trimmed grid (or grid info); regular 2-D |
| prior normalisation | ln Σ weight over the FULL grid | over the trimmed grid (none for subgrids) |
| completeness | ``fit.completeness`` term in the likelihood | none; c <= 0 is an error |
| non-finite fluxes | band dropped for that star | band dropped (BEAST would give NaN) |
| p16/p50/p84 | of the histogram density (CDF linear across each bin) | mid-bin CDF between centres (§5.3) |

A truncheon noise model (``q_norm``, ``icov_diag``, ``icov_offdiag`` present)
switches the likelihood to the full band covariance in both modes.

Default mode with a diagonal noise model: the kernels are ``screen_max`` /
``screen_accumulate``, a float32 screen that decides which models the float64
arithmetic evaluates; the results are those of ``pass_max`` / ``pass_accumulate``
(compat, truncheon) bit for bit (likelihood.py, "float32 screen").

Memory: one prepared chunk is ~70 doubles per model, plus 13 float32 (the
screen's copies) in default mode (≈ 0.65 GB per 10⁶ models with 6 bands and ~30
quantities) plus per-thread accumulators of
``star_block`` × (quantities + PDF bins); ``fit.chunk_models`` bounds it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from beastflow import plan
from beastflow.behaviour import FitBehaviour, PercentileRule, PriorNorm
from beastflow.filters import short_names
from beastflow.fit import layout
from beastflow.fit import likelihood as lk
from beastflow.fit.factors import GridFactors, grid_factors, visiting_order
from beastflow.fit.grid_info import EXCLUDED, read_grid_info, symlog
from beastflow.fit.lnp import NOT_TRUNCATED, reduce_heaps_flat, star_seeds
from beastflow.fit.outputs import PDF2DWriter, write_lnp, write_pdf1d, write_stats
from beastflow.fit.pdfs import BinSet, binset_from_info, binset_from_trimmed
from beastflow.fit.stats import STAT_SUFFIXES, iau_names, percentiles_from_pdf, pmax_column
from beastflow.io.noise_model import NoiseModel, open_noise_model
from beastflow.io.sed_grid import open_sed_grid
from beastflow.io.trim_index import open_kept
from beastflow.observations import catalogs
from beastflow.provenance import make_provenance

if TYPE_CHECKING:
    from beastflow.io.sed_grid import SEDGrid
    from beastflow.io.trim_index import KeptGrid, KeptNoise
    from beastflow.settings import Settings

log = logging.getLogger(__name__)

#: called as hook(stars_done, stars_total) after each block of stars of a fit: progress
#: inside a unit for whoever runs it (beastflow.flows.tasks sets it for the CLI bar and the Prefect
#: progress artifact, beastflow.flows.executors for pool workers, the CLI for its counter); None =
#: nobody listens
STAR_PROGRESS: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar(
    "beastflow_star_progress", default=None
)


@contextlib.contextmanager
def stars_progress(callback: Callable[[int, int], None]) -> Iterator[None]:
    """Report the stars fitted so far inside this block (``STAR_PROGRESS`` set to ``callback``)."""
    token = STAR_PROGRESS.set(callback)
    try:
        yield
    finally:
        STAR_PROGRESS.reset(token)


#: catalog columns carried into the stats table when present (identifiers, positions)
ID_COLUMNS = (
    "star_id",
    "Name",
    "RA",
    "DEC",
    "ra",
    "dec",
    "X",
    "Y",
    "x",
    "y",
    "beast_idx",
    "SourceDensity",
    "sd_bin",
    "reorder_tag",
)


@dataclass
class FitResult:
    stats: str
    pdf1d: str
    pdf2d: str
    lnp: str
    tag: str | None = None
    subgrid: int | None = None


@dataclass
class FitOptions:
    """Everything mode-dependent, resolved once from the settings."""

    behaviour: FitBehaviour
    stat_thr: float
    lnp_thr: float
    completeness: str
    ln_norm: float
    lnp_npts: int
    seed: int


#: default mode, diagonal noise model: float32 screen in front of the float64 kernels
#: (likelihood.py, "float32 screen"; the same results, bit for bit); False = the float64
#: kernels for every model, as compat (the tests compare the two)
SCREEN = True

#: grids up to this size are read once per fit when the PDF bins come from the
#: trimmed grid (bins + fit); larger ones are streamed twice (memory)
ONE_READ_MODELS = 1 << 16


class _OneBlock:
    """A grid or noise model read whole, served to code that streams chunks."""

    def __init__(self, src, block):
        self._src, self._block = src, block

    def __getattr__(self, name: str) -> Any:
        return getattr(self._src, name)

    def iter_chunks(self, *args: Any, **kwargs: Any):
        yield self._block

    def column(self, name: str) -> np.ndarray:
        return self._block.columns[name]


class _ReadOnce(_OneBlock):
    """A block read ahead for the one pass of a fit over a grid in one chunk: served
    once and then let go, so that it is freed as the fit prepares it (as a block it
    read itself would be); a later pass reads the source."""

    def iter_chunks(self, *args: Any, **kwargs: Any):
        block, self._block = self._block, None
        if block is None:
            yield from self._src.iter_chunks(*args, **kwargs)
        else:
            yield block


class _Chunk:
    """One block of models prepared for the kernels, in the visiting order of its
    ``factors`` (``rowid``: the chunk row of each visited model)."""

    def __init__(
        self, m, ivar, lne, const, qvals, bins1, bins2, gid, specgrid, start, factors, rowid, icd=None, ico=None
    ):
        self.m, self.ivar, self.lne, self.const = m, ivar, lne, const
        self.factors: GridFactors = factors
        self.rowid = rowid
        nb, n = m.shape
        self.full = icd is not None
        # toothpick: empty truncheon arrays (one kernel signature for both)
        self.icd = icd if icd is not None else np.empty((0, n))
        self.ico = ico if ico is not None else np.empty((0, n))
        self.qvals, self.bins1, self.bins2, self.gid, self.specgrid, self.start = (
            qvals,
            bins1,
            bins2,
            gid,
            specgrid,
            start,
        )
        self.screen = False

    def best_positions(self, best_idx: np.ndarray) -> np.ndarray:
        """Visiting position of each star's best model (grid rows best_idx) in this
        chunk, -1 where it lies in another chunk."""
        rel = best_idx - self.start
        inside = (rel >= 0) & (rel < len(self.rowid))
        if self.factors.perm is None:
            return np.where(inside, rel, -1)
        pos = np.empty(len(self.rowid), np.int64)
        pos[self.rowid] = np.arange(len(self.rowid))
        return np.where(inside, pos[np.clip(rel, 0, len(pos) - 1)], -1)

    def stored_gid(self) -> np.ndarray:
        """The global model ids in the chunk's stored row order."""
        if self.factors.perm is None:
            return self.gid
        out = np.empty_like(self.gid)
        out[self.rowid] = self.gid
        return out

    def dust_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For ``likelihood.expand_dust``: the dust quantities (original indices), and
        per dust point their values, 1-D bins and dust-pair 2-D bins."""
        f = self.factors
        nd = int(f.layout[0] + f.layout[1])
        npd = int(f.layout[2] + f.layout[3])
        rep = f.dust_rep
        return (
            np.ascontiguousarray(f.qorder[nd:]),
            np.ascontiguousarray(self.qvals[rep][:, nd:]),
            np.ascontiguousarray(self.bins1[rep][:, nd:]),
            np.ascontiguousarray(self.bins2[rep][:, npd:]),
        )

    def add_screen(self, valid: np.ndarray) -> None:
        """float32 copies for the screened kernels (likelihood.py, "float32 screen"),
        band-scaled by a typical error so that (y - m)² / e² stays far from float32's
        range limits (physical fluxes are ~1e-18, 1/e² ~1e38)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.where(valid, 1.0 / np.sqrt(self.ivar), np.nan)
            sc = np.nanmedian(err, axis=1) if valid.any() else np.ones(len(err))
        self.scale = np.where(np.isfinite(sc) & (sc > 0), sc, 1.0)[:, None]
        self.m32 = np.where(valid, self.m / self.scale, lk.INVALID_M32).astype(np.float32)
        self.hv32 = np.where(valid, -0.5 * self.ivar * self.scale**2, -1.0).astype(np.float32)
        self.cref = float(self.const[valid].max()) if valid.any() else 0.0
        self.c32 = (self.const - self.cref).astype(np.float32)
        self.screen = True

    def screen_stars(self, y: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(y32, fast): scaled float32 fluxes, and which stars take the float32 screen
        (every band measured; the others use the float64 kernels)."""
        with np.errstate(over="ignore", invalid="ignore"):
            y32 = (y / self.scale[:, 0]).astype(np.float32)
        fast = used.all(axis=1) & np.all(np.abs(y32) < lk.FAST_Y32, axis=1)
        return np.where(fast[:, None], y32, np.float32(0.0)), fast


def _prepare(blk, nblk, bs: BinSet, opts: FitOptions, gid_offset: int, where: str, counters: dict[str, int]) -> _Chunk:
    """Band/quantity-major arrays of one block (the kernels loop over contiguous
    models), in the kernels' visiting order (``factors.visiting_order``): each array
    is gathered from the stored rows and laid out in one pass (``layout``), and
    per-model values (weight, completeness) are computed on the stored rows and
    gathered, which is cheaper than reordering the input blocks first."""
    visit = visiting_order(blk.columns)
    n = len(blk.seds)
    # the chunk row of each visited model
    rowid = visit.order.astype(np.int64) if visit.order is not None else np.arange(n, dtype=np.int64)

    def visited(a: np.ndarray) -> np.ndarray:
        return a[rowid] if visit.order is not None else a

    nb = blk.seds.shape[1]
    mT, errT, ok = np.empty((nb, n)), np.empty((nb, n)), np.empty(n, np.bool_)
    if n:
        seds, bias, err = (np.ascontiguousarray(a, np.float64) for a in (blk.seds, nblk.bias, nblk.error))
        layout.band_major(rowid, seds, bias, err, mT, errT, ok)
    comp = nblk.completeness
    weight = visited(blk.columns["weight"])
    bad_noise = ~ok
    bad_comp = visited(~np.all(comp > 0, axis=1))
    if opts.behaviour.refuse_invalid_noise and (bad_comp.any() or bad_noise.any()):
        raise ValueError(
            f"{where}: {int((bad_comp | bad_noise).sum())} model(s) have completeness <= 0 or an "
            "invalid error in some band; BEAST fits only trimmed grids (compat = 'beast-2.1')"
        )
    valid = (weight > 0) & ~bad_noise
    if opts.completeness != "none":
        valid &= ~bad_comp
    counters["zero_weight"] += int((weight <= 0).sum())
    counters["invalid_noise"] += int(bad_noise.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        ivT = 1.0 / (errT * errT)
        lneT = np.log(errT)
        del errT
        lnw = np.log(weight) - opts.ln_norm
        lnc: np.ndarray | float
        if opts.completeness == "min":
            lnc = visited(np.log(comp.min(axis=1)))
        elif opts.completeness == "product":
            lnc = visited(np.log(comp).sum(axis=1))
        else:
            lnc = 0.0
        full = "q_norm" in nblk.arrays
        icdT: np.ndarray | None
        icoT: np.ndarray | None
        if full:
            # truncheon: full band covariance, q_norm = -1/2 ln det C (noise-model.md §6)
            qn = visited(nblk.arrays["q_norm"])
            icdT = np.ascontiguousarray(visited(nblk.arrays["icov_diag"]).T)
            icoT = np.ascontiguousarray(visited(nblk.arrays["icov_offdiag"]).T)
            bad_cov = ~(np.isfinite(qn) & np.all(icdT > 0, axis=0) & np.all(np.isfinite(icoT), axis=0))
            if opts.behaviour.refuse_invalid_noise and bad_cov.any():
                raise ValueError(f"{where}: {int(bad_cov.sum())} model(s) have an invalid truncheon covariance")
            valid &= ~bad_cov
            counters["invalid_noise"] += int((bad_cov & ~bad_noise).sum())
            const = lnw + lnc + qn - 0.5 * nb * lk.LN2PI
        else:
            icdT = icoT = None
            const = lnw + lnc - lneT.sum(axis=0) - 0.5 * nb * lk.LN2PI
    const = np.ascontiguousarray(np.where(valid, const, -np.inf))
    nq = len(bs.qnames)
    qT = np.empty((nq, n))
    nphys = sum(1 for q in bs.qnames if not q.startswith("symlog"))
    for i, q in enumerate(bs.qnames[:nphys]):
        qT[i] = visited(blk.columns[q])
    qT[nphys:] = symlog(mT)
    b1T, b2T = bs.assign(qT, where)
    if "fullgrid_idx" in blk.columns:
        gid = visited(blk.columns["fullgrid_idx"]).astype(np.int64) + gid_offset
    else:
        gid = blk.start + rowid + gid_offset
    spec = (
        visited(blk.columns["specgrid_indx"]).astype(np.int64)
        if "specgrid_indx" in blk.columns
        else np.full(n, -1, np.int64)
    )
    qi = {q: i for i, q in enumerate(bs.qnames)}
    fac = grid_factors(bs.qnames, qT, [(qi[a.name], qi[b.name]) for a, b in bs.pairs], visit)
    # the kernels scatter one model's quantities at a time: model-major, and in the
    # factors' order (direct quantities first, then stellar, then dust)
    qM, b1M = layout.model_major_of(qT, fac.qorder), layout.model_major_of(b1T, fac.qorder)
    b2M = layout.model_major_of(b2T, fac.porder)
    del qT, b1T, b2T
    chunk = _Chunk(mT, ivT, lneT, const, qM, b1M, b2M, gid, spec, blk.start, fac, rowid, icdT, icoT)
    # the screen only chooses which models the float64 arithmetic evaluates (every
    # decision is made in float64), so it holds for any fit rules (tested for both profiles)
    if SCREEN and not full:
        chunk.add_screen(valid)
    return chunk


def _resolve_options(settings: Settings, grid, info: dict | None) -> FitOptions:
    f = settings.fit
    b = settings.resolved_behaviour.fit
    _warn_overridden(b, f)
    if b.stats_threshold is not None:
        stat_thr = b.stats_threshold
    else:
        stat_thr = f.stats_threshold if f.stats_threshold is not None else lk.all_models_threshold(grid.n_models)
    lnp_thr = b.lnp_threshold if b.lnp_threshold is not None else f.lnp_threshold
    completeness = b.completeness if b.completeness is not None else f.completeness
    if b.prior_norm is PriorNorm.TRIMMED_GRID:
        if settings.physics.n_subgrid > 1:
            ln_norm = 0.0  # BEAST do_not_normalize for subgrid runs
        else:
            w = grid.column("weight")
            ln_norm = math.log(float(w[w > 0].sum()))
    else:
        # the FULL grid's total weight: the same constant in every sub-file and
        # subgrid, so total_log_norm is a log evidence comparable everywhere
        ln_norm = math.log(info["total_weight"]) if info else 0.0
    seed = f.seed if f.seed is not None else settings.project.seed
    return FitOptions(b, stat_thr, lnp_thr, completeness, ln_norm, f.lnp_npts, seed)


def _warn_overridden(b: FitBehaviour, f: Any) -> None:
    """Say so when a behaviour field replaces a [fit] key the user changed from its default."""
    for name in ("stats_threshold", "lnp_threshold", "completeness"):
        forced, own = getattr(b, name), getattr(f, name)
        default = type(f).model_fields[name].get_default(call_default_factory=True)
        if forced is not None and own != default and own != forced:
            log.warning("fit.%s = %r is overridden by behaviour.fit.%s = %r (compat profile)", name, own, name, forced)


def fit_arrays(
    grid,
    noise,
    Y: np.ndarray,
    star_ids,
    bs: BinSet,
    opts: FitOptions,
    gid_offset: int,
    chunk_models: int,
    star_block: int,
    pdf2d_sink=None,
) -> dict[str, Any]:
    """Fit stars with fluxes Y [ns, nb] (NaN = band not used); returns per-star arrays.

    ``pdf2d_sink(lo, values, flat)`` receives the 2-D PDFs block by block (they
    are not kept in memory): values [stars, m] at the sorted flat indices ``flat``
    of the concatenated pairs (``bs.offsets2``); every other bin is 0.  For a
    grid in one chunk only the bins some model falls in are accumulated."""
    ns, nb = Y.shape
    nq = len(bs.qnames)
    used_all = np.isfinite(Y)
    Yc = np.where(used_all, Y, 0.0)
    qcols = [c for c in bs.qnames if not c.startswith("symlog")]
    cols = sorted(set(qcols) | {"weight"} | ({"fullgrid_idx", "specgrid_indx", "distance"} & set(grid.columns)))
    where = grid.url
    counters = {"zero_weight": 0, "invalid_noise": 0}
    single = grid.n_models <= chunk_models
    cached: list[_Chunk] = []
    nnames = ["bias", "error", "completeness"]
    if all(k in noise.names for k in ("q_norm", "icov_diag", "icov_offdiag")):
        nnames += ["q_norm", "icov_diag", "icov_offdiag"]

    def chunks():
        if cached:
            yield from cached
            return
        for blk, nblk in zip(grid.iter_chunks(chunk_models, columns=cols), noise.iter_chunks(chunk_models, nnames)):
            c = _prepare(blk, nblk, bs, opts, gid_offset, where, counters)
            del blk, nblk  # only the prepared arrays stay alive while the kernels run
            if single:
                cached.append(c)
            yield c

    n2, flat2 = bs.n2, None
    if single and bs.pairs and ns:
        for _ in chunks():  # prepares and caches the only chunk
            pass
        if cached:  # 2-D bins no model falls in stay 0: accumulate over the others only
            c = cached[0]
            flat2, inv = np.unique(c.bins2.ravel(), return_inverse=True)
            c.bins2 = inv.reshape(c.bins2.shape).astype(np.int32)
            n2 = len(flat2)
    if flat2 is None:
        flat2 = np.arange(n2, dtype=np.int64)
    T = lk.n_partitions(grid.n_models)
    k = opts.lnp_npts
    out = {
        "lnPmax": np.full(ns, -np.inf),
        "best_idx": np.full(ns, -1, np.int64),
        "chi2min": np.full(ns, np.inf),
        "chi2min_idx": np.full(ns, -1, np.int64),
        "total_log_norm": np.full(ns, -np.inf),
        "exp": np.zeros((ns, nq)),
        "best_q": np.full((ns, nq), np.nan),
        "best_gid": np.full(ns, -1, np.int64),
        "best_spec": np.full(ns, -1, np.int64),
        "pdf1": np.zeros((ns, bs.n1)),
        "n_candidates": np.zeros(ns, np.int64),
        "truncated_key": np.full(ns, NOT_TRUNCATED),
        "samples": [],
        "n_used": used_all.sum(axis=1),
    }
    seeds_all = star_seeds(opts.seed, star_ids)
    reuse: dict[str, np.ndarray] = {}
    for lo in range(0, ns, star_block):
        hi = min(ns, lo + star_block)
        y, used = np.ascontiguousarray(Yc[lo:hi]), np.ascontiguousarray(used_all[lo:hi])
        nsb = hi - lo
        M = np.full(nsb, -np.inf)
        bidx = np.full(nsb, -1, np.int64)
        c2 = np.full(nsb, np.inf)
        c2i = np.full(nsb, -1, np.int64)
        tmax: list[np.ndarray | None] = []
        for c in chunks():
            if c.screen:
                y32, fast = c.screen_stars(y, used)
                tm = np.empty((T, lk.screen_tiles(c.m.shape[1], T), nsb), np.float32)
                lk.screen_max(
                    y, y32, fast, used, c.m, c.ivar, c.lne, c.const, c.m32, c.hv32, c.c32, c.cref, c.rowid,
                    c.start, M, bidx, c2, c2i, tm, T,
                )  # fmt: skip
                tmax.append(tm)
            else:
                lk.pass_max(
                    y, used, c.m, c.ivar, c.lne, c.icd, c.ico, c.full, c.const, c.rowid, c.start, M, bidx, c2, c2i, T
                )  # fmt: skip
                tmax.append(None)
        if not np.all(np.isfinite(M)):
            raise ValueError(
                f"{where}: no model has a finite posterior (every model has weight <= 0 or an invalid noise model)"
            )
        acc_s0 = np.zeros((T, nsb))
        acc_exp = np.zeros((T, nsb, nq))
        acc_h1 = _zeroed(reuse, "h1", (T, nsb, bs.n1))
        acc_h2 = _zeroed(reuse, "h2", (T, nsb, max(n2, 1)))
        acc_c2 = np.full((T, nsb), np.inf)
        acc_c2i = np.full((T, nsb), -1, np.int64)
        acc_nc = np.zeros((T, nsb), np.int64)
        kk = max(k, 0)
        hk = np.full((T, nsb, max(kk, 1)), np.inf)
        hi_ = np.zeros((T, nsb, max(kk, 1)), np.int64)
        hl = np.zeros((T, nsb, max(kk, 1)))
        hc = np.zeros((T, nsb, max(kk, 1)))
        hn = np.zeros((T, nsb), np.int64)
        hroot = np.full((T, nsb), np.inf)  # each partition's heap root once full (likelihood.py)
        bq = np.full((nsb, nq), np.nan)
        bg = np.full(nsb, -1, np.int64)
        bsp = np.full(nsb, -1, np.int64)
        seeds = seeds_all[lo:hi]
        for c, tiles_max in zip(chunks(), tmax):
            if k > 0:
                heaps = (hk, hi_, hl, hc, hn, hroot)
            else:  # a zero-size heap axis switches sampling off inside the kernel
                # (new C-ordered arrays, not slices: the kernels' compiled signature is the same)
                heaps = (np.empty((T, nsb, 0)), np.empty((T, nsb, 0), np.int64), np.empty((T, nsb, 0)),
                         np.empty((T, nsb, 0)), hn, hroot)  # fmt: skip
            fac = c.factors
            sums = (c.qvals, c.bins1, c.bins2, c.gid, c.rowid, fac.stellar, fac.dustpt, fac.layout, fac.qorder,
                    c.specgrid, c.best_positions(bidx), seeds)  # fmt: skip
            acc_wd = np.zeros((T, nsb, max(fac.n_dust, 1)))
            accs = (acc_s0, acc_exp, acc_h1, acc_h2, acc_wd, acc_c2, acc_c2i, acc_nc, *heaps, bq, bg, bsp)
            if tiles_max is not None:
                lk.screen_accumulate(
                    y, used, c.m, c.ivar, c.lne, c.const, c.cref, tiles_max,
                    c.start, M, opts.stat_thr, opts.lnp_thr, *sums, *accs,
                )  # fmt: skip
            else:
                lk.pass_accumulate(
                    y, used, c.m, c.ivar, c.lne, c.icd, c.ico, c.full, c.const,
                    c.start, M, opts.stat_thr, opts.lnp_thr, *sums, *accs,
                )  # fmt: skip
            if fac.n_dust:
                dq, dvals, db1, db2 = c.dust_tables()
                lk.expand_dust(acc_wd, dq, dvals, db1, db2, acc_exp, acc_h1, acc_h2)
        s0 = acc_s0.sum(axis=0)
        sl = slice(lo, hi)
        out["lnPmax"][sl], out["best_idx"][sl] = M, bidx
        out["total_log_norm"][sl] = M + np.log(s0)
        out["exp"][sl] = acc_exp.sum(axis=0) / s0[:, None]
        lk.sum_partitions(acc_h1, s0, out["pdf1"][sl], bs.n1)  # and clears acc_h1
        out["best_q"][sl], out["best_gid"][sl], out["best_spec"][sl] = bq, bg, bsp
        if opts.behaviour.chi2min_sparse:
            # chi2min over the sparse set S (lnP - max > -10) only, as BEAST (QUIRK):
            # the all-model minimum of pass_max is discarded, not merely compared
            # with, since it is <= every sparse-set chi2 and would always win
            c2 = np.full(nsb, np.inf)
            c2i = np.full(nsb, -1, np.int64)
            for t in range(T):  # ties keep the first index
                better = (acc_c2[t] < c2) | ((acc_c2[t] == c2) & (acc_c2i[t] >= 0) & (acc_c2i[t] < c2i))
                c2 = np.where(better, acc_c2[t], c2)
                c2i = np.where(better, acc_c2i[t], c2i)
        out["chi2min"][sl], out["chi2min_idx"][sl] = c2, c2i
        out["n_candidates"][sl] = acc_nc.sum(axis=0)
        if k > 0:
            cnt, smp = reduce_heaps_flat(hk, hi_, hl, hc, hn, k)
            trunc = np.flatnonzero(out["n_candidates"][sl] > k)
            out["truncated_key"][lo + trunc] = smp["key"][np.cumsum(cnt)[trunc] - 1]
            out["samples"].append((cnt, smp))
        if pdf2d_sink is not None and bs.pairs:
            pdf2 = _scratch(reuse, "pdf2", (nsb, n2))
            lk.sum_partitions(acc_h2, s0, pdf2, n2)  # and clears acc_h2
            pdf2d_sink(lo, pdf2, flat2)
        else:
            acc_h2.fill(0.0)
        hook = STAR_PROGRESS.get()
        if hook is not None:
            hook(hi, ns)
    if cached:  # the global model ids of the rows, already in memory (no second read of the grid)
        out["gid"] = cached[0].stored_gid()
    if counters["zero_weight"]:
        log.warning("%s: %d model(s) with weight <= 0 are ignored", where, counters["zero_weight"])
    if counters["invalid_noise"]:
        log.warning("%s: %d model(s) with error <= 0 or non-finite noise are ignored", where, counters["invalid_noise"])
    return out


def _zeroed(reuse: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float64 array of zeros, the one of the previous star block when it has this shape
    (the PDF accumulators are T x stars x bins, tens of MB, and fresh ones cost their page
    faults in every block): every block leaves its accumulators cleared
    (``likelihood.sum_partitions`` clears what it adds up)."""
    a = reuse.get(name)
    if a is None or a.shape != shape:
        reuse[name] = a = np.zeros(shape)
    return a


def _scratch(reuse: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float64 array to overwrite, the one of the previous star block when it has this shape."""
    a = reuse.get(name)
    if a is None or a.shape != shape:
        reuse[name] = a = np.empty(shape)
    return a


def stats_table(
    cat: pl.DataFrame,
    Y: np.ndarray,
    filters: list[str],
    bs: BinSet,
    res: dict[str, Any],
    opts: FitOptions,
    surveyname: str,
    subgrid: int | None,
    flags: Sequence[str] | None = None,
) -> pl.DataFrame:
    """One row per star, columns as fitting.md §4 (+ beastflow's merge quantities)."""
    ns = len(cat)
    data: dict[str, Any] = {}
    ra = next((c for c in ("RA", "ra") if c in cat.columns), None)
    dec = next((c for c in ("DEC", "dec", "Dec") if c in cat.columns), None)
    if "Name" not in cat.columns:
        data["Name"] = iau_names(surveyname, cat[ra].to_numpy(), cat[dec].to_numpy()) if ra and dec else ["noname"] * ns
    for c in cat.columns:
        if c in ID_COLUMNS or c.startswith("true_"):
            data[c] = cat[c]
    for k, f in enumerate(filters):
        data[f] = Y[:, k]
    for i, q in enumerate(bs.qnames):
        b = bs.bins1[i]
        pdf = res["pdf1"][:, bs.offsets1[i] : bs.offsets1[i + 1]]
        pc = (
            percentiles_from_pdf(pdf, b.centres)
            if opts.behaviour.percentiles is PercentileRule.BIN_CENTRES
            else percentiles_from_pdf(pdf, b.centres, b.scaled_edges, b.log)
        )
        data[f"{q}_Best"] = res["best_q"][:, i]
        data[f"{q}_Exp"] = res["exp"][:, i]
        data[f"{q}_p16"], data[f"{q}_p50"], data[f"{q}_p84"] = pc[:, 0], pc[:, 1], pc[:, 2]
    data["chi2min"] = res["chi2min"]
    data["chi2min_indx"] = res["chi2min_idx"]
    # default: probability of the MAP grid point; LN_PEAK: the peak lnP (a log, QUIRK)
    data["Pmax"] = pmax_column(opts.behaviour.pmax, res["lnPmax"], res["total_log_norm"])
    data["Pmax_indx"] = res["best_idx"]
    data["specgrid_indx"] = res["best_spec"]
    data["total_log_norm"] = res["total_log_norm"]
    data["lnPmax"] = res["lnPmax"]
    data["Pmax_gid"] = res["best_gid"]
    data["best_gridsub"] = np.full(ns, -1 if subgrid is None else subgrid, np.int64)
    data["n_bands_used"] = res["n_used"].astype(np.int64)
    # what catalogs.screen_fluxes dropped: "F475W:zero;F814W:absurd", "" = every band used
    data["flag"] = pl.Series("flag", list(flags) if flags is not None else [""] * ns, dtype=pl.Utf8)
    return pl.DataFrame(data)


def largest_errors(noise, chunk_models: int) -> np.ndarray:
    """Per band, the largest finite noise-model error over all models (physical flux units).

    A flux more negative than k times this is below every model by more than k sigma.
    """
    worst = None
    for blk in noise.iter_chunks(chunk_models, ["error"]):
        m = _largest_errors(blk.error)
        worst = m if worst is None else np.maximum(worst, m)
    return worst if worst is not None else np.zeros(len(noise.filters))


def _largest_errors(error: np.ndarray) -> np.ndarray:
    """Per band, the largest finite |error| of one block of the noise model."""
    err = np.where(np.isfinite(error), np.abs(error), 0.0)
    return err.max(axis=0) if len(err) else np.zeros(err.shape[1])


def run_fit(
    settings: Settings,
    trimmed_grid_url: str,
    trimmed_noise_url: str,
    catalog_url: str,
    grid_info_url: str | None,
    out_prefix: str,
    *,
    subgrid: int | None = None,
    tag: str | None = None,
    trim_index: str | None = None,
) -> FitResult:
    """Stage "fit" (docs/stages.md).  ``subgrid``: the index g of the (sub)grid
    in the grid info (None: the one full grid); ``tag``: the sub-file's
    ``bin{s}_sub{u}`` recorded in the outputs for the merge (``beastflow.plan``
    names both; nothing is read out of the file names).

    With ``trim_index`` (the trim stage's artifact), the first two URLs are the
    FULL (sub)grid and its noise model, read only at the index's kept rows;
    without it they are a trimmed grid and noise model (or untrimmed ones)."""
    grid: SEDGrid | KeptGrid | _OneBlock
    noise: NoiseModel | KeptNoise | _OneBlock
    if trim_index:
        grid, noise = open_kept(trimmed_grid_url, trimmed_noise_url, trim_index, settings.fit.chunk_models)
    else:
        grid = open_sed_grid(trimmed_grid_url)
        noise = open_noise_model(trimmed_noise_url)
    if noise.n_models != grid.n_models:
        raise ValueError(
            f"{trimmed_noise_url}: {noise.n_models} rows, but the grid {trimmed_grid_url} has "
            f"{grid.n_models}; a trimmed noise model must be row-aligned with its trimmed grid"
        )
    if noise.filters != grid.filters:
        raise ValueError(f"{trimmed_noise_url}: filters {noise.filters} differ from the grid's {grid.filters}")
    for c in ("weight",):
        if c not in grid.columns:
            raise KeyError(f"{trimmed_grid_url}: grid has no {c!r} column")
    filters = list(grid.filters)
    info = read_grid_info(grid_info_url) if grid_info_url else None
    gid_offset = 0
    if info and subgrid is not None:
        if subgrid >= len(info["subgrids"]):
            raise ValueError(
                f"{grid_info_url}: subgrid {subgrid} requested but the grid info lists {len(info['subgrids'])} grid(s)"
            )
        gid_offset = int(info["subgrids"][subgrid]["offset"])
    elif info and len(info["subgrids"]) > 1:
        raise ValueError(
            f"{trimmed_grid_url}: the grid info covers {len(info['subgrids'])} subgrids; name the subgrid (subgrid=g)"
        )
    f = settings.fit
    if info is None and 0 < grid.n_models <= min(f.chunk_models, ONE_READ_MODELS):
        # small grid: read the grid and noise model once for the bins and the fit
        grid, noise = _OneBlock(grid, grid.read()), _OneBlock(noise, noise.read())
    opts = _resolve_options(settings, grid, info)
    if info is not None:
        bs = binset_from_info(
            info,
            grid.columns,
            filters,
            f.pdf_max_nbins,
            f.pdf2d_pairs,
            opts.behaviour.regular_2d_bins,
            trimmed_grid_url,
        )
    else:
        if opts.behaviour.prior_norm is PriorNorm.FULL_GRID:
            log.warning(
                "%s: no grid info given: PDF bins come from the trimmed grid, so these PDFs cannot be "
                "merged with other sub-files (run grid-info on the full grid)",
                trimmed_grid_url,
            )
        bs = binset_from_trimmed(grid, noise, f.pdf_max_nbins, f.pdf2d_pairs, f.chunk_models)

    cat = catalogs.read_table(catalog_url)  # a sub-file as it is (Parquet or any catalog format)
    from beastflow.physics.vega import vega_band_fluxes  # lazy: pyphot is slow to import

    vega_fluxes = vega_band_fluxes(filters, settings.resolved_behaviour.physics.vega_positive_points)
    Y = catalogs.physical_fluxes(cat, filters, vega_fluxes, catalog_url)
    # bad measurements (non-finite, zero, absurd, too negative) are dropped per band and flagged,
    # never fitted and never allowed to fail the sub-file (docs/formats.md "Bad measurements")
    as_measured = opts.behaviour.bad_fluxes_as_measured
    sigma = None
    if not as_measured and isinstance(noise, NoiseModel) and 0 < grid.n_models <= f.chunk_models:
        # a grid in one chunk: its noise model is read once, for these errors and for the fit
        # (every array the fit may use: the calibration covariance is not one)
        nblk = noise.read(names=[k for k in noise.names if k not in ("covdiag", "covoffdiag")])
        sigma = _largest_errors(nblk.error)
        noise = _ReadOnce(noise, nblk)
    elif not as_measured:
        sigma = largest_errors(noise, f.chunk_models)
    Y, flags = catalogs.screen_fluxes(
        Y, vega_fluxes, short_names(filters), sigma, f.negative_flux_sigma, as_measured=as_measured
    )
    n_flagged = sum(1 for x in flags if x)
    if n_flagged:
        log.warning(
            "%s: %d of %d stars have bad measurements in some band(s), fitted without them (stats column 'flag')",
            catalog_url,
            n_flagged,
            len(flags),
        )
    star_ids = cat["star_id"].to_numpy() if "star_id" in cat.columns else np.arange(len(cat))

    inputs = {"trimmed_grid": trimmed_grid_url, "trimmed_noise": trimmed_noise_url, "catalog": catalog_url}
    if trim_index:
        inputs = {
            "sed_grid": trimmed_grid_url,
            "noise_model": trimmed_noise_url,
            "trim_index": trim_index,
            "catalog": catalog_url,
        }
    if grid_info_url:
        inputs["grid_info"] = grid_info_url
    # grids and noise models are named by their own provenance (provenance.input_identity), not re-hashed
    prov = make_provenance(
        "fit", settings.section_hash("fit", "compat", "project"), inputs, extra={"lnp_seed": opts.seed}
    )
    meta = {
        "tag": tag,
        "subgrid": subgrid,
        "bins_source": bs.source,
        "compat": settings.compat,
        "qnames": bs.qnames,
        "filters": filters,
        "stats_threshold": opts.stat_thr,
        "lnp_threshold": opts.lnp_thr,
        "lnp_npts": opts.lnp_npts,
        "completeness": opts.completeness,
        "ln_weight_norm": opts.ln_norm,
        "gid_offset": gid_offset,
        "n_models": grid.n_models,
        "wavelengths": grid.lamb.tolist(),
    }
    urls = FitResult(*plan.fit_outputs(out_prefix), tag=tag, subgrid=subgrid)
    log.info("fit %d stars x %d models (%d bands) -> %s", len(cat), grid.n_models, len(filters), out_prefix)
    with PDF2DWriter(urls.pdf2d, len(cat), bs.pairs, prov, meta) as w2:
        res = fit_arrays(
            grid, noise, Y, star_ids, bs, opts, gid_offset, f.chunk_models, f.star_block, pdf2d_sink=w2.write_compact
        )
        w2.finish(star_ids, res["total_log_norm"])
    pdfs = {b.name: res["pdf1"][:, bs.offsets1[i] : bs.offsets1[i + 1]] for i, b in enumerate(bs.bins1)}
    write_pdf1d(urls.pdf1d, star_ids, res["total_log_norm"], bs.bins1, pdfs, prov, meta)
    samples = res["samples"]  # per star block: (sample size per star, flat sample arrays)
    counts = np.concatenate([c for c, _ in samples]) if samples else np.zeros(len(cat), np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cat_f = lambda f_, dt: np.concatenate([np.asarray(s[f_], dt) for _, s in samples]) if samples else np.empty(0, dt)  # noqa: E731
    idx = cat_f("idx", np.int64)
    gid = res["gid"][idx] if "gid" in res else _gid_of(grid, idx, gid_offset)
    fields = {
        "idx": idx,
        "gid": gid,
        "lnp": cat_f("lnp", np.float64),
        "chi2": cat_f("chi2", np.float64),
        "key": cat_f("key", np.float64),
        "subgrid": np.full(len(idx), -1 if subgrid is None else subgrid),
    }
    write_lnp(
        urls.lnp,
        star_ids,
        offsets,
        fields,
        res["n_candidates"],
        res["truncated_key"],
        res["lnPmax"],
        Y,
        filters,
        grid.lamb,
        prov,
        meta,
    )
    df = stats_table(cat, Y, filters, bs, res, opts, f.surveyname, subgrid, flags)
    write_stats(urls.stats, df, prov, meta)
    return urls


def _gid_of(grid, idx: np.ndarray, offset: int) -> np.ndarray:
    """Global model ids of trimmed-grid rows ``idx``."""
    if not len(idx):
        return np.empty(0, np.int64)
    if "fullgrid_idx" not in grid.columns:
        return idx.astype(np.int64) + offset
    uniq, inv = np.unique(idx, return_inverse=True)
    fg = grid.read(rows=uniq, columns=["fullgrid_idx"], seds=False).columns["fullgrid_idx"]
    return fg.astype(np.int64)[inv] + offset


__all__ = [
    "run_fit",
    "FitResult",
    "fit_arrays",
    "EXCLUDED",
    "short_names",
    "STAT_SUFFIXES",
    "BinSet",
]
