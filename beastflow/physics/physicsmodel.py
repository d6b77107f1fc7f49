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
A numba kernel then gathers, scales, reorders and takes the log in one pass.  The extinction curve depends only on
(R(V), f_A), so it is evaluated once per pair and scaled by A(V).  Memory is
bounded by one block (plus the spectral grid itself, which is held once per
star, not per distance or dust point).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from beastflow import plan, storage
from beastflow.io.sed_grid import SEDGrid, SEDGridWriter
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
        out = np.empty((self.lamb.size, cs.size, nb))
        for i, c in enumerate(cs):
            t = np.asarray(transmission(self.dust.Av[c] * self.curve(int(c)), self.exp_attenuation), dtype=np.float64)
            out[:, i, :] = t[:, None] * self.W
        return out.reshape(self.lamb.size, cs.size * nb)


# -------------------------------------------------------------- one subgrid


def grid_columns(sg: SpectralGrid, has_fA: bool) -> list[str]:
    """SED grid columns in BEAST's order (§9.1)."""
    dust_cols = ["Av", "Rv", "Rv_A", "f_A"] if has_fA else ["Av", "Rv"]
    stellar = [c for c in sg.column_order if not c.endswith("_nd")]
    nd = [c for c in sg.column_order if c.endswith("_nd")]
    return dust_cols + stellar + nd + [wd_column(f) for f in sg.filters]


def _block_columns(
    sg: SpectralGrid,
    dust: DustPlan,
    dprior: np.ndarray,
    dist_idx: np.ndarray,
    r0: int,
    r1: int,
    cs: np.ndarray,
    a: int,
    b: int,
) -> dict[str, np.ndarray]:
    """Columns of the rows (dust points cs) × (spectral rows r0+a .. r0+b)."""
    n = b - a
    nc = cs.size
    out: dict[str, np.ndarray] = {
        "Av": np.repeat(dust.Av[cs], n),
        "Rv": np.repeat(dust.Rv[cs], n),
    }
    if dust.has_fA:
        out["Rv_A"] = np.repeat(dust.Rv_A[cs], n)
        out["f_A"] = np.repeat(dust.f_A[cs], n)
    sl = slice(r0 + a, r0 + b)
    for c in sg.column_order:
        if c in ("weight", "prior_weight", "grid_weight"):
            continue
        out[c] = np.tile(sg.columns[c][sl], nc)
    gw = np.tile(sg.columns["grid_weight"][sl], nc) * np.repeat(dust.grid_weight[cs], n)
    pw = np.tile(sg.columns["prior_weight"][sl], nc) * dprior[cs][:, dist_idx[a:b]].ravel()
    out["grid_weight"] = gw
    out["prior_weight"] = pw
    out["weight"] = gw * pw
    return out


def build_sed_subgrid(
    settings: Settings,
    sg: SpectralGrid,
    dust: DustPlan,
    rows: tuple[int, int],
    url: str,
    provenance: dict[str, Any],
    meta: dict[str, Any],
) -> int:
    """Write the SED grid of spectral rows [r0, r1) × all valid dust points to ``url``."""
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
    A = np.ascontiguousarray(sg.star_spectra[np.ix_(ustar, sup)])
    scale = sg.scale[r0:r1]
    dist_idx = np.searchsorted(sg.distances, sg.columns["distance"][r0:r1])
    dist_idx = np.clip(dist_idx, 0, sg.distances.size - 1)
    dprior = _dust_prior_table(settings, dust, sg.distances)

    columns = grid_columns(sg, dust.has_fA)
    with SEDGridWriter(
        url,
        sg.filters,
        lamb_band,
        columns,
        n_models=n_models,
        provenance=provenance,
        stellar_library=sg.library_label,
        meta=meta,
        chunk_rows=_chunk_rows(n_models),
    ) as w:
        if n0 == 0:
            return 0
        if n0 <= chunk:
            # several dust points per block: one matrix product against the
            # side-by-side stack of their weight matrices
            per = max(1, min(chunk // n0, _GATHER_BYTES // (8 * max(1, sup.size) * nb)))
            for c0 in range(0, dust.n, per):
                cs = np.arange(c0, min(dust.n, c0 + per))
                Wst = Wd.stacked(cs)
                R = A @ Wst  # [n_unique_stars, nc*nb]: the only O(n·nλ) work
                seds = np.empty((cs.size * n0, nb))
                logs = np.empty((nb, cs.size * n0))
                _assemble_block(R, inv, scale, n0, cs.size, nb, seds, logs)
                cols = _block_columns(sg, dust, dprior, dist_idx, r0, r1, cs, 0, n0)
                for k, f in enumerate(sg.filters):
                    cols[wd_column(f)] = logs[k]
                w.append_models(seds, cols)
        else:
            # slice larger than a block: rows in chunks, one dust point at a time
            step = min(chunk, max(1, _GATHER_BYTES // (8 * max(1, sup.size))))
            for c in range(dust.n):
                cs = np.array([c])
                Wc = Wd.stacked(cs)
                for a in range(0, n0, step):
                    b = min(n0, a + step)
                    seds = (A[inv[a:b]] @ Wc) * scale[a:b, None]
                    cols = _block_columns(sg, dust, dprior, dist_idx, r0, r1, cs, a, b)
                    _add_wd(cols, seds, sg.filters)
                    w.append_models(seds, cols)
    return n_models


@numba.njit(cache=True, nogil=True)
def _assemble_block(R, inv, scale, n0, nc, nb, seds, logs):  # pragma: no cover - compiled
    """Rows of a block from the per-star products, in one pass (numba).

    R[u, c·nb + b] is band b of unique star u through dust point c.  Row
    c·n0 + j of the block (dust-point-major, §7.4) gets R[inv[j], c·nb + b]
    times the distance factor of spectral row j; ``logs`` [nb, rows] receives
    log10 of it (−100 for ≤ 0, §4.4) as contiguous column arrays.  Fusing the
    gather, scaling, reordering and log saves four block-sized temporaries.
    """
    for c in range(nc):
        base = c * n0
        for j in range(n0):
            u = inv[j]
            s = scale[j]
            for b in range(nb):
                v = R[u, c * nb + b] * s
                seds[base + j, b] = v
                logs[b, base + j] = np.log10(v) if v > 0.0 else -100.0


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


def _add_wd(cols: dict[str, np.ndarray], seds: np.ndarray, filters: Sequence[str]) -> None:
    logs = photometry.log_flux(seds)
    for b, f in enumerate(filters):
        cols[wd_column(f)] = logs[:, b]


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
