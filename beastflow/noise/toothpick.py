"""Toothpick noise model (spec noise-model.md §2): bands independent.

1. ``ast_binned_stats``: per band, flux bins over the fake stars' input
   fluxes; per bin completeness, bias and error of the recovered fluxes; only
   bins with more than ``min_per_bin`` recoveries are kept (tiny arrays).
2. ``evaluate_on_grid``: linear interpolation of bias, error and completeness
   at every model flux (0 outside the kept bins), numba kernel per block.
3. ``run_noisemodel``: stream an SED (sub)grid block by block, evaluate, add
   the absolute-calibration term, write the noise-model artifact.

The binned statistics are also stored in the artifact's ``meta`` so that any
consumer can re-evaluate the model without the ASTs (spec §8).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from beastflow.behaviour import DEFAULT_NOISE, NoiseBehaviour
from beastflow.filters import short_names
from beastflow.io.noise_model import NoiseModelWriter
from beastflow.io.sed_grid import SEDGrid
from beastflow.noise import absflux
from beastflow.noise.ast_stats import BinnedBand, bin_band, prepare_band, table_columns
from beastflow.noise.splinter import run_splinter
from beastflow.noise.trunchen import run_trunchen
from beastflow.observations import catalogs
from beastflow.physics import vega as vega_table  # looked up at call time (tests/seams.py)
from beastflow.provenance import make_provenance

if TYPE_CHECKING:
    from beastflow.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BandStats:
    """Kept (good) bins of one band, increasing flux, physical units."""

    filter: str
    vega_flux: float
    centres: np.ndarray
    bias: np.ndarray
    error: np.ndarray
    completeness: np.ndarray
    #: all bins, normalised-Vega units (diagnostics, tests)
    binned: BinnedBand

    def to_dict(self) -> dict[str, Any]:
        b = self.binned
        return {
            "filter": self.filter,
            "vega_flux": self.vega_flux,
            "centres": self.centres.tolist(),
            "bias": self.bias.tolist(),
            "error": self.error.tolist(),
            "completeness": self.completeness.tolist(),
            "bins_n": b.n.tolist(),
            "bins_n_recovered": b.n_rec.tolist(),
            "n_asts_used": b.n_used,
        }


@dataclass(frozen=True)
class ToothpickStats:
    filters: list[str]
    bands: list[BandStats]

    def __getitem__(self, key: int | str) -> BandStats:
        if isinstance(key, str):
            return self.bands[self.filters.index(key)]
        return self.bands[key]

    def __len__(self) -> int:
        return len(self.bands)

    def packed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Concatenated (offsets, centres, bias, error, completeness) for the numba kernel."""
        offsets = np.zeros(len(self.bands) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b.centres) for b in self.bands])

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(b, name) for b in self.bands]) if offsets[-1] else np.zeros(0)

        return offsets, cat("centres"), cat("bias"), cat("error"), cat("completeness")

    def to_dict(self) -> dict[str, Any]:
        return {"filters": self.filters, "bands": [b.to_dict() for b in self.bands]}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ToothpickStats:
        bands = []
        for b in d["bands"]:
            arr = {k: np.asarray(b[k], dtype=np.float64) for k in ("centres", "bias", "error", "completeness")}
            bands.append(BandStats(b["filter"], float(b["vega_flux"]), binned=BinnedBand.empty(), **arr))
        return ToothpickStats(list(d["filters"]), bands)


def ast_binned_stats(
    ast_df: Any,
    filters: Sequence[str],
    n_flux_bins: int = 50,
    min_per_bin: int = 10,
    nonrecovered_ratio: float = 2.0,
    vega_fluxes: Sequence[float] | np.ndarray | None = None,
    behaviour: NoiseBehaviour = DEFAULT_NOISE,
    statistic: str = "percentile",
) -> ToothpickStats:
    """Binned AST statistics per band (spec §2.1), physical units.

    ``ast_df``: any table (polars/pandas DataFrame, astropy Table, dict of
    arrays) with ``{B}_IN`` (Vega mag), ``{B}_RATE`` (F/F_Vega) per band and
    optionally ``CUT_FLAG``.  ``vega_fluxes``: Vega band fluxes (erg s^-1
    cm^-2 A^-1) in filter order.  ``behaviour``: BEAST 2.1's NaN handling
    (spec §2.1 step 1 QUIRK), its forced statistic and raw half-widths.
    """
    filters = list(filters)
    bands = short_names(filters)
    if vega_fluxes is None:
        raise ValueError("ast_binned_stats needs the Vega band fluxes (vega_fluxes) to convert to physical units")
    vega = np.asarray(vega_fluxes, dtype=np.float64)
    if vega.shape != (len(filters),) or not np.all(np.isfinite(vega) & (vega > 0)):
        raise ValueError(f"vega_fluxes must be {len(filters)} positive finite numbers, got {vega!r}")
    if behaviour.statistic is not None and behaviour.statistic != statistic:
        # BEAST's driver never sets compute_stddev; an override is said, never silent
        log.warning(
            "noise_model.statistic = %r is overridden by behaviour.noise.statistic = %r (compat profile)",
            statistic,
            behaviour.statistic,
        )
        statistic = behaviour.statistic
    wanted = [f"{b}_IN" for b in bands] + [f"{b}_RATE" for b in bands]
    cols = table_columns(ast_df, wanted, optional=["CUT_FLAG"], what="AST table")
    flag = cols.get("CUT_FLAG")
    out = []
    for k, (full, b) in enumerate(zip(filters, bands)):
        f_in, f_out = prepare_band(
            cols[f"{b}_IN"], cols[f"{b}_RATE"], flag, nonrecovered_ratio, behaviour.nan_outputs_recovered
        )
        binned = bin_band(f_in, f_out, n_flux_bins, min_per_bin, statistic, unbiased=not behaviour.raw_half_width)
        g = binned.good
        out.append(
            BandStats(
                filter=full,
                vega_flux=float(vega[k]),
                centres=binned.centres[g] * vega[k],
                bias=binned.bias[g] * vega[k],
                error=binned.error[g] * vega[k],
                completeness=binned.completeness[g].copy(),
                binned=binned,
            )
        )
    return ToothpickStats(filters, out)


# ------------------------------------------------------------ evaluation


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _lerp(x, j, xs, fp, slope):
    # numpy.interp's arithmetic.  numpy retries with the other end point when
    # this is NaN; that only changes the result for infinite table values,
    # which binned percentiles of finite fluxes never are -- and the branch
    # costs 5x in this loop, so it is left out.
    return slope[j] * (x - xs[j]) + fp[j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _toothpick_kernel(seds, offsets, xs, fb, fe, fc, sb, se, sc, a2, use_abs, flip, out_b, out_e, out_c):
    """One pass over a block, band by band: bracket each model flux once
    (binary search over the band's bin centres), interpolate the three
    statistics with numpy.interp's arithmetic and precomputed slopes (so the
    result is bit-identical to np.interp(..., left=0, right=0)), add the
    calibration variance, flip the error sign outside AST coverage."""
    n, nb = seds.shape
    for k in range(nb):
        o0 = offsets[k]
        m = offsets[k + 1] - o0
        for i in range(n):
            x = seds[i, k]
            b = 0.0
            s = 0.0
            c = 0.0
            if np.isnan(x):
                b = np.nan
                s = np.nan
                c = np.nan
            elif m > 0 and x >= xs[o0] and x <= xs[o0 + m - 1]:
                if x == xs[o0 + m - 1]:
                    j = o0 + m - 1
                    b, s, c = fb[j], fe[j], fc[j]
                else:
                    lo, hi = 0, m - 1  # invariant xs[lo] <= x < xs[hi]
                    while hi - lo > 1:
                        mid = (lo + hi) >> 1
                        if xs[o0 + mid] <= x:
                            lo = mid
                        else:
                            hi = mid
                    j = o0 + lo
                    if xs[j] == x:
                        b, s, c = fb[j], fe[j], fc[j]
                    else:
                        b = _lerp(x, j, xs, fb, sb)
                        s = _lerp(x, j, xs, fe, se)
                        c = _lerp(x, j, xs, fc, sc)
            if use_abs:
                s = np.sqrt(a2[k] * (x * x) + s * s)
            if flip and c <= 0.0:
                s = -s
            out_b[i, k] = b
            out_e[i, k] = s
            out_c[i, k] = c


def _slopes(offsets: np.ndarray, xs: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Per-segment slopes (fp[j+1]-fp[j])/(xs[j+1]-xs[j]) within each band, as numpy.interp."""
    out = np.zeros_like(fp)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(len(offsets) - 1):
            o0, o1 = offsets[k], offsets[k + 1]
            if o1 - o0 > 1:
                out[o0 : o1 - 1] = (fp[o0 + 1 : o1] - fp[o0 : o1 - 1]) / (xs[o0 + 1 : o1] - xs[o0 : o1 - 1])
    return out


def evaluate_on_grid(
    stats: ToothpickStats, seds_block: np.ndarray, absflux_variances: np.ndarray | None = None, flip_sign: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bias, error, completeness of a block of models [N, N_bands] (spec §2.2).

    Without ``absflux_variances`` the error is the AST scatter alone; with
    them (a_k^2, fractional) error = sqrt(a_k^2 F^2 + sigma^2).  ``flip_sign``
    makes the error negative where completeness <= 0 (spec §2.3 marker).
    """
    seds = np.ascontiguousarray(seds_block, dtype=np.float64)
    if seds.ndim != 2 or seds.shape[1] != len(stats):
        raise ValueError(f"seds block has shape {seds.shape}; the noise statistics have {len(stats)} bands")
    offsets, xs, fb, fe, fc = stats.packed()
    use_abs = absflux_variances is not None
    a2 = np.zeros(seds.shape[1]) if not use_abs else np.asarray(absflux_variances, dtype=np.float64)
    out_b = np.empty_like(seds)
    out_e = np.empty_like(seds)
    out_c = np.empty_like(seds)
    _toothpick_kernel(
        seds,
        offsets,
        xs,
        fb,
        fe,
        fc,
        _slopes(offsets, xs, fb),
        _slopes(offsets, xs, fe),
        _slopes(offsets, xs, fc),
        a2,
        use_abs,
        flip_sign,
        out_b,
        out_e,
        out_c,
    )
    return out_b, out_e, out_c


def evaluate_on_grid_numpy(
    stats: ToothpickStats, seds_block: np.ndarray, absflux_variances=None, flip_sign: bool = False
):
    """Plain-numpy reference of ``evaluate_on_grid`` (tests, benchmark)."""
    seds = np.asarray(seds_block, dtype=np.float64)
    b = np.zeros_like(seds)
    e = np.zeros_like(seds)
    c = np.zeros_like(seds)
    for k, bs in enumerate(stats.bands):
        if len(bs.centres):
            b[:, k] = np.interp(seds[:, k], bs.centres, bs.bias, left=0.0, right=0.0)
            e[:, k] = np.interp(seds[:, k], bs.centres, bs.error, left=0.0, right=0.0)
            c[:, k] = np.interp(seds[:, k], bs.centres, bs.completeness, left=0.0, right=0.0)
        else:
            nan = np.isnan(seds[:, k])
            b[nan, k] = e[nan, k] = c[nan, k] = np.nan
    if absflux_variances is not None:
        e = np.sqrt(np.asarray(absflux_variances)[None, :] * seds**2 + e**2)
    if flip_sign:
        e = np.where(c <= 0, -e, e)
    return b, e, c


# ------------------------------------------------------------ the stage


def run_noisemodel(settings: Settings, sed_grid_url: str, ast_url: str | None, out_url: str) -> str:
    """Noise model of ``ast_url``'s fake stars evaluated on one SED (sub)grid (toothpick, or
    the truncheon model when ``[noise_model] model = "trunchen"``; with ``"splinter"``
    no ASTs are read and ``ast_url`` may be None).

    Streams the grid in blocks of ``[noise_model] chunk_models`` models;
    writes ``out_url`` atomically and returns it.  The Vega band fluxes come
    from ``beastflow.physics.vega.vega_band_fluxes``.
    """
    nm = settings.noise_model
    beh = settings.resolved_behaviour.noise
    if nm.model == "splinter":
        return run_splinter(settings, sed_grid_url, out_url)
    if not ast_url:
        raise ValueError(
            f"the {nm.model} noise model needs artificial-star tests (observations.ast_results); "
            'without ASTs set [noise_model] model = "splinter"'
        )
    if nm.model == "trunchen":
        return run_trunchen(settings, sed_grid_url, ast_url, out_url)
    grid = SEDGrid(sed_grid_url)
    filters = grid.filters
    vega = np.asarray(
        vega_table.vega_band_fluxes(filters, settings.resolved_behaviour.physics.vega_positive_points), dtype=np.float64
    )
    asts = catalogs.read_asts(ast_url, filters)
    stats = ast_binned_stats(
        asts, filters, nm.n_flux_bins, nm.min_per_bin, nm.ast_nonrecovered_ratio, vega, beh, nm.statistic
    )
    empty = [bs.filter for bs in stats.bands if len(bs.centres) == 0]
    if empty:
        raise ValueError(
            f"{ast_url}: band(s) {empty} have no AST flux bin with more than {nm.min_per_bin} recovered fake "
            f"stars (n_flux_bins = {nm.n_flux_bins}); every model would have zero completeness. Lower "
            "[noise_model] n_flux_bins or min_per_bin, or supply more ASTs"
        )

    a_matrix = None
    a2 = None
    if nm.absflux_covariance:
        a_matrix = absflux.load_absflux_matrix(nm.absflux_covariance, len(filters))
        a2 = absflux.band_variances(a_matrix)
    # BEAST flips the sign only when a calibration matrix is given; intended:
    # always mark models outside AST coverage (the values are 0 there anyway).
    flip = (a_matrix is not None) or not beh.sign_flip_with_calibration_only
    with_cov = a_matrix is not None

    inputs = {"asts": ast_url}
    if nm.absflux_covariance:
        inputs["absflux_covariance"] = nm.absflux_covariance
    prov = make_provenance(
        "noisemodel",
        settings.section_hash("compat", "noise_model"),
        inputs={**inputs, "sed_grid": sed_grid_url},
        extra={"vega_fluxes": vega.tolist()},
    )
    meta = {
        "model": "toothpick",
        "compat": settings.compat,
        "statistic": beh.statistic if beh.statistic is not None else nm.statistic,
        "stats": stats.to_dict(),
        "absflux_matrix": None if a_matrix is None else a_matrix.tolist(),
    }
    with NoiseModelWriter(
        out_url,
        filters,
        n_models=grid.n_models,
        provenance=prov,
        sed_grid=sed_grid_url,
        with_covariance=with_cov,
        meta=meta,
    ) as w:
        for block in grid.iter_chunks(nm.chunk_models, columns=[]):
            b, e, c = evaluate_on_grid(stats, block.seds, a2, flip)
            arrays = {"bias": b, "error": e, "completeness": c}
            if a_matrix is not None:
                arrays["covdiag"], arrays["covoffdiag"] = absflux.covariance_terms(a_matrix, block.seds)
            w.append(arrays)
    log.info(
        "noise model %s: %d models, good bins per band %s",
        out_url,
        grid.n_models,
        [len(bs.centres) for bs in stats.bands],
    )
    return out_url
