"""Trim an SED (sub)grid and its noise model per catalog sub-file (spec fitting.md §1).

A flux-sorted sub-file spans a narrow brightness range, so most models cannot
fit any of its stars; dropping them once per sub-file saves evaluating them
for every star.  A model is kept for a sub-file when

1. its completeness is > 0 in every band (inside the AST coverage; by default
   also a positive finite error, so the fit never divides by zero), and
2. in every band k, with v = F + bias:  v + sigma_fac*error >= y_min,k and
   v - sigma_fac*error <= y_max,k, where [y_min,k, y_max,k] is the sub-file's
   observed flux range ({B}_RATE x Vega flux, negative values included).

Consequence used by the tests: every model whose chi2 against some star of
the sub-file is <= sigma_fac^2 passes every band (each band's term is then
<= sigma_fac^2), so it is kept.  That is BEAST's rule, and all of it in compat
mode; it bounds nothing about the posterior (real stars have chi2min 50-290).

DEFAULT: LOSSLESS TRIM.  A covered model is also kept (whatever sigma_fac) when

    B_j <= U + T,    T = LOSSLESS_MARGIN + ln N_grid = 20 + ln N_grid,

with, in the fit's default-mode terms (fitting.md §2; likelihood.py), for star i
using the bands k it measures (finite flux),

    -lnP_ij = -ln w_j - ln C_j + sum_k [ln e_jk + ln(2 pi)/2 + (y_ik - m_jk)^2 / (2 e_jk^2)]
              (+ ln_norm, the same for every model: it cancels),
    B_j     = -ln w_j - ln C_j + sum_k t_jk,
    t_jk    = ln e_jk + ln(2 pi)/2 + dist(m_jk, [y_min,k, y_max,k])^2 / (2 e_jk^2),

m = F + bias, C_j the [fit] completeness term (min / product / none); a band
missing in any star of the sub-file contributes min(t_jk, 0).  Every star has
y_ik in the range, so B_j <= -lnP_ij for every star i.  U = max_i min_{j in cand}
(-lnP_ij) >= max_i (-lnPmax_i), cand = the N_CANDIDATES models with the smallest
B_j (exact lnP).  A dropped model thus has lnP_ij < lnPmax_i - T for EVERY star,
so the dropped models together weigh < N_dropped e^-T <= e^-20 ~ 2e-9 times the
star's peak weight, hence less than that fraction of its posterior mass.
Two passes over the grid (pass 1: B_j, candidates and the sigma-rule histogram;
pass 2: write).  Models outside the AST coverage stay dropped, and a sub-file
that the sigma rule empties is still an error (the grid does not reach it).
Truncheon noise models (full covariance) keep the sigma rule only.

``run_trim`` streams the grid and the noise model ONCE for a whole list of
sub-files (BEAST's trim_many_via_obsdata reads the big files once per batch
for the same reason): each block of models is tested against every job and
the survivors are appended to that job's writers.  Memory is one block plus
the jobs' writer buffers.

BEAST 2.1 QUIRK (compat only): a band whose cut would remove every remaining
model is silently skipped.  The per-job bit patterns of passed bands are
histogrammed while streaming, so whether a band is skipped is known exactly at
the end; the rare job that skipped a band is re-streamed alone.  Default:
no skip; an empty result is an error naming the band.
"""

from __future__ import annotations

import logging
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from beastflow import plan
from beastflow.behaviour import TrimRule
from beastflow.filters import short_names
from beastflow.io.noise_model import NoiseModel, NoiseModelWriter
from beastflow.io.sed_grid import SEDGrid, SEDGridWriter
from beastflow.io.trim_index import write_trim_index
from beastflow.observations import catalogs
from beastflow.physics import vega as vega_table  # looked up at call time (tests/seams.py)
from beastflow.provenance import input_identity, make_provenance

if TYPE_CHECKING:
    from beastflow.settings import Settings

log = logging.getLogger(__name__)

NOT_COVERED = -1


class TrimError(ValueError):
    """A sub-file for which no model survives; the message names file and band."""


@dataclass(frozen=True)
class TrimJob:
    catalog_url: str
    #: BEAST-style trimmed copies, written only with ``[trim] materialize = true``
    out_grid_url: str | None
    out_noise_url: str | None
    #: the trim artifact (kept model rows); default: next to the trimmed grid's name
    out_index_url: str | None = None

    @property
    def index_url(self) -> str:
        if self.out_index_url:
            return self.out_index_url
        if not self.out_grid_url:
            raise ValueError(f"{self.catalog_url}: trim job names neither an index nor a trimmed-grid URL")
        return index_url_for(self.out_grid_url)


@dataclass(frozen=True)
class TrimResult:
    catalog_url: str
    grid_url: str | None
    noise_url: str | None
    n_stars: int
    n_models_in: int
    n_covered: int  # models inside AST coverage (step 1)
    n_kept: int
    skipped_bands: list[str] = field(default_factory=list)  # compat band-skip QUIRK
    #: the trim artifact: kept rows of ``source_grid`` / ``source_noise`` (the fit reads those through it)
    index_url: str = ""
    source_grid: str = ""
    source_noise: str = ""
    #: grid_url / noise_url are None unless ``[trim] materialize = true`` wrote trimmed copies


#: ``P_bin{s}_sub{u}[_gridsub{g}]_trim.hd5`` from the trimmed grid's name (``beastflow.plan``)
index_url_for = plan.trim_index_for


# ------------------------------------------------------------ kernels


@numba.njit(cache=True, nogil=True)
def _trim_patterns(seds, bias, err, compl, ymin, ymax, sigma_fac, need_pos_err, out):
    """out[j, i] = bit mask of the bands model i passes for job j, or -1 when
    model i is outside the AST coverage (independent of the job)."""
    n, nb = seds.shape
    nj = ymin.shape[0]
    for i in range(n):
        covered = True
        for k in range(nb):
            e = err[i, k]
            if not (compl[i, k] > 0.0):
                covered = False
                break
            if need_pos_err and not (e > 0.0 and e < np.inf):
                covered = False
                break
        if not covered:
            for j in range(nj):
                out[j, i] = NOT_COVERED
            continue
        for j in range(nj):
            p = 0
            for k in range(nb):
                v = seds[i, k] + bias[i, k]
                d = sigma_fac * err[i, k]
                if v + d >= ymin[j, k] and v - d <= ymax[j, k]:
                    p |= 1 << k
            out[j, i] = p


def trim_patterns(seds, bias, err, compl, ymin, ymax, sigma_fac: float, need_pos_err: bool) -> np.ndarray:
    seds = np.ascontiguousarray(seds, dtype=np.float64)
    ymin = np.atleast_2d(np.asarray(ymin, dtype=np.float64))
    ymax = np.atleast_2d(np.asarray(ymax, dtype=np.float64))
    if seds.shape[1] > 62:
        raise ValueError(f"trimming supports at most 62 bands, got {seds.shape[1]}")
    # int32 halves the [jobs, block] pattern array for the usual <= 30 bands
    out = np.empty((ymin.shape[0], len(seds)), dtype=np.int32 if seds.shape[1] <= 30 else np.int64)
    _trim_patterns(
        seds,
        np.ascontiguousarray(bias, dtype=np.float64),
        np.ascontiguousarray(err, dtype=np.float64),
        np.ascontiguousarray(compl, dtype=np.float64),
        ymin,
        ymax,
        float(sigma_fac),
        bool(need_pos_err),
        out,
    )
    return out


def trim_patterns_numpy(seds, bias, err, compl, ymin, ymax, sigma_fac, need_pos_err):
    """Plain-numpy reference of ``trim_patterns`` (tests, benchmark)."""
    covered = np.all(compl > 0, axis=1)
    if need_pos_err:
        covered &= np.all((err > 0) & np.isfinite(err), axis=1)
    v = seds + bias
    d = sigma_fac * err
    ymin = np.atleast_2d(ymin)
    ymax = np.atleast_2d(ymax)
    out = np.empty((len(ymin), len(seds)), dtype=np.int64)
    w = 1 << np.arange(seds.shape[1], dtype=np.int64)
    for j in range(len(ymin)):
        ok = (v + d >= ymin[j]) & (v - d <= ymax[j])
        out[j] = np.where(covered, (ok * w).sum(axis=1), NOT_COVERED)
    return out


def decide_bands(hist: Counter, n_bands: int, band_skip: bool) -> tuple[int, list[int], int]:
    """From the histogram {pattern: count} of covered models, return
    (mask of bands applied, bands skipped, number of survivors).

    ``band_skip``: bands in filter order, a band whose cut would leave nothing is
    skipped (BEAST 2.1 QUIRK).  Default: every band applies.
    """
    full = (1 << n_bands) - 1
    if not band_skip:
        return full, [], sum(c for p, c in hist.items() if p & full == full)
    req = 0
    skipped = []
    for k in range(n_bands):
        cand = req | (1 << k)
        if sum(c for p, c in hist.items() if p & cand == cand) > 0:
            req = cand
        else:
            skipped.append(k)
    return req, skipped, sum(c for p, c in hist.items() if p & req == req)


def _first_empty_band(hist: Counter, n_bands: int) -> int:
    req = 0
    for k in range(n_bands):
        req |= 1 << k
        if sum(c for p, c in hist.items() if p & req == req) == 0:
            return k
    return n_bands - 1


# ------------------------------------------------------------ stage


def observed_fluxes(catalog_url: str, filters: Sequence[str], vega: np.ndarray) -> np.ndarray:
    """{B}_RATE x Vega of the sub-file's stars, [stars, bands] (NaN where not measured)."""
    df = catalogs.normalise_columns(catalogs.read_table(catalog_url), catalog_url)
    fl = catalogs.physical_fluxes(df, filters, vega, f"{catalog_url} (catalog sub-file)")
    # the fit's bad-measurement rule, minus zero/negative (keeping those only widens the range: lossless)
    fl, _ = catalogs.screen_fluxes(fl, vega, short_names(filters), as_measured=True)
    if len(fl) == 0:
        raise TrimError(f"{catalog_url}: the catalog sub-file has no stars")
    bad = [f"{b}_RATE" for b, ok in zip(short_names(filters), np.isfinite(fl).any(axis=0)) if not ok]
    if bad:
        raise TrimError(f"{catalog_url}: column(s) {bad} have no finite value")
    return fl


class _JobState:
    def __init__(self, job: TrimJob, ymin, ymax, n_stars):
        self.job = job
        self.ymin, self.ymax, self.n_stars = ymin, ymax, n_stars
        self.hist: Counter = Counter()
        self.n_covered = 0
        self.n_written = 0
        self.grid_w: SEDGridWriter | None = None
        self.noise_w: NoiseModelWriter | None = None
        #: kept rows of the input (sub)grid, block by block (the trim artifact)
        self.kept: list[np.ndarray] = []
        self.skipped: list[str] = []
        #: what the index records besides the rows (set when the writers open)
        self.index_args: dict[str, Any] = {}
        # survivors are buffered and written in whole HDF5 chunks: appending a
        # few thousand rows per grid block to each job would make HDF5
        # read-modify-write partially filled multi-MB chunks
        self.buf: list[tuple[np.ndarray, dict, dict]] = []
        self.n_buf = 0
        self.flush_rows = 65_536

    def add(self, seds, cols, noise_arrays) -> None:
        self.buf.append((seds, cols, noise_arrays))
        self.n_buf += len(seds)
        if self.n_buf >= self.flush_rows:
            self.flush(final=False)

    def flush(self, final: bool = True) -> None:
        if not self.buf:
            return
        seds = np.concatenate([b[0] for b in self.buf])
        cols = {c: np.concatenate([b[1][c] for b in self.buf]) for c in self.buf[0][1]}
        noi = {k: np.concatenate([b[2][k] for b in self.buf]) for k in self.buf[0][2]}
        # write whole multiples of the chunk size; keep the remainder unless final
        n = len(seds) if final else (len(seds) // self.flush_rows) * self.flush_rows
        if self.grid_w is None or self.noise_w is None:
            raise ValueError(f"{self.job.out_grid_url}: trimmed survivors flushed before the output files were opened")
        self.grid_w.append_models(seds[:n], {c: v[:n] for c, v in cols.items()})
        self.noise_w.append({k: v[:n] for k, v in noi.items()})
        rest = len(seds) - n
        self.buf = [(seds[n:], {c: v[n:] for c, v in cols.items()}, {k: v[n:] for k, v in noi.items()})] if rest else []
        self.n_buf = rest


#: memory for the survivors buffered across all jobs of a pass
_BUFFER_BYTES = 256 << 20
#: smallest write (and HDF5 chunk) of a trimmed file, rows
_MIN_FLUSH_ROWS = 4096


def _open_writers(
    st: _JobState,
    grid: SEDGrid,
    noise: NoiseModel,
    out_cols: list[str],
    prov_g,
    prov_n,
    meta,
    n_jobs: int = 1,
    materialize: bool = False,
) -> None:
    """Remember what the index needs; with ``materialize`` open the trimmed-copy writers too."""
    st.index_args = {
        "n_models_in": grid.n_models,
        "source_grid": grid.url,
        "source_noise": noise.url,
        "provenance": {**prov_g, "artifact": "trim_index"},
        "meta": meta,
    }
    if not materialize:
        return
    if not (st.job.out_grid_url and st.job.out_noise_url):
        raise ValueError(f"{st.job.catalog_url}: [trim] materialize = true needs trimmed grid and noise URLs")
    row_bytes = 8 * (2 * grid.n_bands + len(out_cols) + len(noise.names) * grid.n_bands)
    # chunk rows = flush size: every write fills whole chunks; bounded memory for many jobs
    st.flush_rows = int(np.clip(_BUFFER_BYTES // max(1, n_jobs * row_bytes), _MIN_FLUSH_ROWS, 65_536))
    st.grid_w = SEDGridWriter(
        st.job.out_grid_url,
        grid.filters,
        grid.lamb,
        out_cols,
        n_models=None,
        provenance=prov_g,
        stellar_library=grid.stellar_library,
        meta={**grid.meta, "trim": meta},
        chunk_rows=st.flush_rows,
    )
    st.grid_w.__enter__()
    try:
        st.noise_w = NoiseModelWriter(
            st.job.out_noise_url,
            noise.filters,
            n_models=None,
            provenance=prov_n,
            sed_grid=st.job.out_grid_url,
            with_covariance="covdiag" in noise.names,
            with_trunchen="q_norm" in noise.names,
            meta={**noise.meta, "trim": meta},
            # the copy keeps the source's stored values exactly (same precision and scale)
            precision=noise.precision,
            icov_exponents=noise.icov_exponents,
            one_completeness=noise.one_completeness,
        )
        st.noise_w.chunk_rows = st.flush_rows  # ArraysWriter reads it when the file is opened
        st.noise_w.__enter__()
    except BaseException:
        _close(st, ok=False)
        raise


def _close(st: _JobState, ok: bool) -> None:
    """Commit (write the index; move trimmed copies into place) or discard the job's files."""
    if ok:
        kept = np.concatenate(st.kept) if st.kept else np.empty(0, np.int64)
        st.n_written = len(kept)
        if st.grid_w is not None:
            st.flush(final=True)
        write_trim_index(st.job.index_url, kept, n_covered=st.n_covered, skipped_bands=st.skipped, **st.index_args)
    st.buf, st.n_buf, st.kept = [], 0, []
    for attr in ("noise_w", "grid_w"):
        w = getattr(st, attr)
        if w is None:
            continue
        setattr(st, attr, None)
        if ok:
            w.__exit__(None, None, None)
        else:
            try:
                raise TrimError("discarded")
            except TrimError:
                w.__exit__(*sys.exc_info())


#: margin T of the default lossless trim, in ln P units (module doc)
LOSSLESS_MARGIN = 20.0
#: candidates (smallest B_j) per job whose exact lnP gives the upper bound U
N_CANDIDATES = 4096
_HALF_LN2PI = 0.5 * math.log(2.0 * math.pi)


class _Bound:
    """Default-mode lossless trim: B_j <= -lnP_ij for every star i of a job,
    the candidates with the smallest B_j, and the keep thresholds U + T."""

    def __init__(self, states: list[_JobState], fluxes: list[np.ndarray], completeness: str, n_models: int):
        self.ymin = [st.ymin for st in states]
        self.ymax = [st.ymax for st in states]
        self.fluxes = fluxes
        # a band missing (non-finite) in some star of the job drops out of that star's lnP
        self.all_measured = [np.all(np.isfinite(y), axis=0) for y in fluxes]
        self.completeness = completeness
        self.margin = LOSSLESS_MARGIN + math.log(max(n_models, 1))
        self.cand: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None] = [None] * len(states)
        self.thr = np.full(len(states), -np.inf)
        self.upper = np.full(len(states), np.inf)

    def model_terms(self, seds, bias, err, compl, lnw):
        """m = F + bias, e, and a_j = ln w_j + ln C_j (-inf where the fit would skip the model)."""
        m = seds + bias
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.completeness == "min":
                lnc = np.log(compl.min(axis=1))
            elif self.completeness == "product":
                lnc = np.log(compl).sum(axis=1)
            else:
                lnc = np.zeros(len(m))
            a = lnw + lnc
        ok = np.all((err > 0) & np.isfinite(err) & np.isfinite(m), axis=1) & np.isfinite(a)
        return m, np.where(ok[:, None], err, 1.0), np.where(ok, a, -np.inf)

    def lower_bound(self, j: int, m, e, a) -> np.ndarray:
        """B_j = -a_j + sum_k t_jk, t_jk = ln e_jk + ln(2pi)/2 + dist(m_jk, [ymin_k, ymax_k])^2 / (2 e_jk^2);
        a band missing in some star contributes min(t_jk, 0) (a star without it pays 0)."""
        dist = np.maximum(self.ymin[j] - m, 0.0) + np.maximum(m - self.ymax[j], 0.0)
        t = np.log(e) + _HALF_LN2PI + 0.5 * (dist / e) ** 2
        t = np.where(self.all_measured[j][None, :], t, np.minimum(t, 0.0))
        with np.errstate(invalid="ignore"):
            b = t.sum(axis=1) - a
        b[~np.isfinite(a)] = np.inf
        return b

    def collect(self, j: int, b, m, e, a) -> None:
        idx = np.flatnonzero(np.isfinite(b))
        if len(idx) > N_CANDIDATES:
            idx = idx[np.argpartition(b[idx], N_CANDIDATES)[:N_CANDIDATES]]
        new = (b[idx], m[idx], e[idx], a[idx])
        old = self.cand[j]
        if old is not None:
            bb, mm, ee, aa = (np.concatenate([o, n]) for o, n in zip(old, new))
            new = (bb, mm, ee, aa)
            if len(bb) > N_CANDIDATES:
                keep = np.argpartition(bb, N_CANDIDATES)[:N_CANDIDATES]
                new = (bb[keep], mm[keep], ee[keep], aa[keep])
        self.cand[j] = new

    def finish(self) -> None:
        """U = max over stars of min over candidates of the exact -lnP (fitting.md §2,
        default mode, up to the model-independent ln_norm); threshold U + T."""
        for j, c in enumerate(self.cand):
            if c is None or len(c[0]) == 0:
                continue  # no model the fit could use: only the sigma rule applies
            _, m, e, a = c
            y = self.fluxes[j]
            lne = np.log(e) + _HALF_LN2PI
            u = -np.inf
            for s0 in range(0, len(y), 256):
                ys = y[s0 : s0 + 256]
                nlp = np.broadcast_to(-a, (len(ys), len(a))).copy()
                for k in range(m.shape[1]):
                    used = np.isfinite(ys[:, k])
                    d = (ys[used, k][:, None] - m[None, :, k]) / e[None, :, k]
                    nlp[used] += lne[None, :, k] + 0.5 * d * d
                u = max(u, float(nlp.min(axis=1).max()))
            self.upper[j] = u
            self.thr[j] = u + self.margin


def _stream(
    grid: SEDGrid,
    noise: NoiseModel,
    states: list[_JobState],
    masks: list[int | None],
    chunk: int,
    sigma_fac: float,
    need_pos_err: bool,
    columns: list[str],
    count: bool,
    bound: _Bound | None = None,
    collect: bool = False,
) -> None:
    """One pass over grid + noise: append each job's survivors (pattern & mask == mask).

    With ``bound`` (default mode), a covered model whose lower bound B_j on
    -lnP is <= the job's threshold passes every band (lossless keep, module
    doc); ``collect`` gathers the candidates of the bound pass instead."""
    ymin = np.array([s.ymin for s in states])
    ymax = np.array([s.ymax for s in states])
    nb = grid.n_bands
    full = (1 << nb) - 1
    names = noise.names
    noise_iter = noise.iter_chunks(chunk, names=names)
    for gb in grid.iter_chunks(chunk, columns=columns):
        nbk = next(noise_iter)
        if nbk.start != gb.start or len(nbk.bias) != len(gb):
            raise RuntimeError(f"{noise.url}: blocks out of step with {grid.url}")
        pat = trim_patterns(gb.seds, nbk.bias, nbk.error, nbk.completeness, ymin, ymax, sigma_fac, need_pos_err)
        if bound is not None:
            lnw = np.log(gb.columns["weight"]) if "weight" in gb.columns else np.zeros(len(gb))
            m, e, a = bound.model_terms(gb.seds, nbk.bias, nbk.error, nbk.completeness, lnw)
            for j in range(len(states)):
                b = bound.lower_bound(j, m, e, a)
                b[pat[j] < 0] = np.inf  # outside the AST coverage: never kept
                if collect:
                    bound.collect(j, b, m, e, a)
                else:
                    pat[j][b <= bound.thr[j]] = full
        for j, st in enumerate(states):
            pj = pat[j]
            if count:
                cov = pj[pj >= 0]
                if nb <= 16:  # O(n) histogram of the 2^nb possible patterns
                    cnt = np.bincount(cov, minlength=1 << nb)
                    nz = np.flatnonzero(cnt)
                    st.hist.update(dict(zip(nz.tolist(), cnt[nz].tolist())))
                else:
                    vals, cnts = np.unique(cov, return_counts=True)
                    st.hist.update(dict(zip(vals.tolist(), cnts.tolist())))
            m = masks[j]
            if m is None:
                continue
            idx = np.flatnonzero((pj >= 0) & ((pj & m) == m))
            if len(idx) == 0:
                continue
            st.kept.append(gb.start + idx)  # rows of the INPUT (sub)grid
            if st.grid_w is None:
                continue
            cols = {c: v[idx] for c, v in gb.columns.items()}
            cols["fullgrid_idx"] = gb.start + idx
            st.add(gb.seds[idx], cols, {k: v[idx] for k, v in nbk.arrays.items()})


def run_trim(
    settings: Settings,
    sed_grid_url: str,
    noise_url: str,
    jobs: Sequence[TrimJob],
) -> list[TrimResult]:
    """Trim grid + noise model for every sub-file in ``jobs``; the big files are
    streamed once per ``[trim] max_jobs_per_pass`` jobs.

    Successful jobs are written even if another job fails; failures are then
    raised together as one TrimError naming each sub-file and band.
    """
    beh = settings.resolved_behaviour
    tr = settings.trim
    grid = SEDGrid(sed_grid_url)
    noise = NoiseModel(noise_url)
    if noise.n_models != grid.n_models:
        raise ValueError(
            f"{noise_url}: noise model has {noise.n_models} rows but the grid {sed_grid_url} has "
            f"{grid.n_models}; it was evaluated on another grid"
        )
    if list(noise.filters) != list(grid.filters):
        raise ValueError(f"{noise_url}: noise-model filters {noise.filters} differ from the grid's {grid.filters}")
    filters = grid.filters
    nb = len(filters)
    vega = np.asarray(vega_table.vega_band_fluxes(filters, beh.physics.vega_positive_points), dtype=np.float64)
    in_cols = [c for c in grid.columns if c != "fullgrid_idx"]
    out_cols = in_cols + ["fullgrid_idx"]
    bound_cols = [c for c in in_cols if c == "weight"]
    need_pos_err = beh.trim.positive_error_required
    settings_hash = settings.section_hash("compat", "trim")
    # named once for the whole batch of sub-files, by the one rule (provenance.input_identity)
    id_grid = input_identity(sed_grid_url)
    id_noise = input_identity(noise_url)

    results: list[TrimResult] = []
    failures: list[str] = []
    jobs = list(jobs)
    for b0 in range(0, len(jobs), tr.max_jobs_per_pass):
        batch = jobs[b0 : b0 + tr.max_jobs_per_pass]
        states = []
        fluxes = []
        for job in batch:
            try:
                fl = observed_fluxes(job.catalog_url, filters, vega)
            except (TrimError, KeyError, FileNotFoundError) as exc:
                failures.append(str(exc))
                continue
            # non-finite rates carry no flux information and cannot widen the range
            states.append(_JobState(job, np.nanmin(fl, axis=0), np.nanmax(fl, axis=0), len(fl)))
            fluxes.append(fl)
        if not states:
            continue

        # called later in this same iteration, after `lossless` is set: the late binding is the point
        def provs(st: _JobState) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            inputs = {"sed_grid": sed_grid_url, "noise_model": noise_url, "catalog": st.job.catalog_url}
            hashes = {"sed_grid": id_grid, "noise_model": id_noise}
            meta = {
                "catalog": st.job.catalog_url,
                "sigma_fac": tr.sigma_fac,
                "compat": settings.compat,
                "rule": "beast-sigma" if lossless is None else "sigma+lossless",  # noqa: B023
                "lossless_margin": None if lossless is None else lossless.margin,  # noqa: B023
                "flux_min": st.ymin.tolist(),
                "flux_max": st.ymax.tolist(),
                "n_stars": st.n_stars,
                "source_grid": sed_grid_url,
                "source_noise_model": noise_url,
            }
            pg = make_provenance(
                "trim", settings_hash, inputs=inputs, input_hashes=hashes, extra={"artifact": "trimmed_sed_grid"}
            )
            pn = dict(pg, artifact="trimmed_noise_model")
            return pg, pn, meta

        full = (1 << nb) - 1
        lossless = None
        if beh.trim.rule is TrimRule.SIGMA_OR_LOSSLESS and "q_norm" not in noise.names:
            # default: pass 1 histograms the sigma rule and gathers the lossless
            # bound's candidates; pass 2 writes sigma-rule OR lossless survivors
            # the bound must use the fit's likelihood, so the fit's effective completeness term
            completeness = beh.fit.completeness if beh.fit.completeness is not None else settings.fit.completeness
            lossless = _Bound(states, fluxes, completeness, grid.n_models)
            _stream(
                grid,
                noise,
                states,
                [None] * len(states),
                tr.chunk_models,
                tr.sigma_fac,
                need_pos_err,
                bound_cols,
                count=True,
                bound=lossless,
                collect=True,
            )
            lossless.finish()
        try:
            for st in states:
                _open_writers(st, grid, noise, out_cols, *provs(st), n_jobs=len(states), materialize=tr.materialize)
            # default: pass 2 with the lossless bound; TrimRule.SIGMA (no bound): an optimistic
            # single pass, every band applied (right unless a band has to be skipped)
            _stream(
                grid,
                noise,
                states,
                [full] * len(states),
                tr.chunk_models,
                tr.sigma_fac,
                need_pos_err,
                in_cols,
                count=lossless is None,
                bound=lossless,
            )
        except BaseException:
            for st in states:
                _close(st, ok=False)
            raise

        redo: list[tuple[_JobState, int, list[int]]] = []
        for st in states:
            st.n_covered = sum(st.hist.values())
            url = st.job.catalog_url
            if st.n_covered == 0:
                _close(st, ok=False)
                failures.append(
                    f"{url}: no model of {sed_grid_url} lies inside the AST coverage of {noise_url} "
                    "(completeness > 0 in every band): no models are brighter than the minimum ASTs run"
                )
                continue
            mask, skipped, n_keep = decide_bands(st.hist, nb, beh.trim.band_skip)
            if n_keep == 0:
                k = _first_empty_band(st.hist, nb)
                _close(st, ok=False)
                failures.append(
                    f"{url}: no model survives the flux-range cut; band {filters[k]} removes the last ones "
                    f"(sub-file range {st.ymin[k]:.4g}..{st.ymax[k]:.4g} erg/s/cm2/A, [trim] sigma_fac = "
                    f"{tr.sigma_fac}); the grid does not reach these stars' fluxes"
                )
                continue
            if mask != full:
                redo.append((st, mask, skipped))
                continue
            _close(st, ok=True)
            results.append(_result(st, grid, noise, tr.materialize))

        if redo:
            # band skip (TrimBehaviour.band_skip): rewrite those jobs with their reduced band mask
            rstates = []
            for st, mask, skipped in redo:
                _close(st, ok=False)
                ns = _JobState(st.job, st.ymin, st.ymax, st.n_stars)
                ns.n_covered = st.n_covered
                _open_writers(ns, grid, noise, out_cols, *provs(ns), n_jobs=len(redo), materialize=tr.materialize)
                rstates.append((ns, mask, skipped))
            try:
                _stream(
                    grid,
                    noise,
                    [r[0] for r in rstates],
                    [r[1] for r in rstates],
                    tr.chunk_models,
                    tr.sigma_fac,
                    need_pos_err,
                    in_cols,
                    count=False,
                )
            except BaseException:
                for ns, _, _ in rstates:
                    _close(ns, ok=False)
                raise
            for ns, _mask, skipped in rstates:
                ns.skipped = [filters[k] for k in skipped]
                log.warning(
                    "%s: band(s) %s cut every model; cut skipped (BEAST 2.1 behaviour)", ns.job.catalog_url, ns.skipped
                )
                _close(ns, ok=True)
                results.append(_result(ns, grid, noise, tr.materialize))
    for r in results:
        log.info(
            "trim %s: kept %d of %d models (%d inside AST coverage)",
            r.catalog_url,
            r.n_kept,
            r.n_models_in,
            r.n_covered,
        )
    if failures:
        raise TrimError(f"trimming failed for {len(failures)} sub-file(s):\n  " + "\n  ".join(failures))
    return results


def _result(st: _JobState, grid: SEDGrid, noise: NoiseModel, materialize: bool) -> TrimResult:
    j = st.job
    return TrimResult(
        j.catalog_url,
        j.out_grid_url if materialize else None,
        j.out_noise_url if materialize else None,
        st.n_stars,
        grid.n_models,
        st.n_covered,
        st.n_written,
        list(st.skipped),
        j.index_url,
        grid.url,
        noise.url,
    )
