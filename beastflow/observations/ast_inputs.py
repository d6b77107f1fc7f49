"""Artificial-star inputs: which model SEDs to inject, and where (spec asts.md).

Stage ``run_ast_inputs(settings, sed_grid_urls, catalog_url, map_url)`` writes

- ``P_ASTparams.parquet``: one row per chosen model: ``sedgrid_indx`` (row in
  the full grid = concatenation of the subgrids in the order given),
  ``subgrid``, ``subgrid_indx``, every grid column and ``{B}_IN`` (Vega mag);
- ``P_ASTfluxbins.parquet`` (flux_bin only): per band and bin the magnitude
  range, the number of chosen models, the number of candidate models, and
  whether the bin reached ``n_per_flux_bin``;
- ``P_inputAST.parquet``: one row per artificial star: the chosen model's
  columns as above plus ``realization``, ``sd_bin`` (density-bin / pixel modes)
  and ``RA``/``DEC`` (or ``X``/``Y`` for the annulus scheme with pixel
  positions);
- ``P_inputAST.txt``: the DOLPHOT list ``zeros ones X Y <filters>`` (RA/DEC
  when positions are celestial), ``%.5f``.
(``suppl_seds`` writes the same files with ``_suppl`` before the extension.)

Every SED-selection method streams the subgrids block by block
(``SEDGrid.iter_chunks``), so memory is bounded by one block plus the
selection buffer, whatever the total grid size: BEAST must merge the subgrids
and load the whole grid.  All randomness comes from ``project.seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import polars as pl

from beastflow import storage
from beastflow.behaviour import FluxBinRule
from beastflow.filters import short_names
from beastflow.io.sed_grid import SEDGrid
from beastflow.provenance import make_provenance
from beastflow.settings import Settings
from beastflow.settings.asts import ASTs

from . import catalogs, geometry
from .density import read_map

log = logging.getLogger(__name__)

STAGE = "ast_inputs"
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


# --------------------------------------------------------------------------
# the grid as one concatenation of subgrids
# --------------------------------------------------------------------------


class GridSet:
    """Several SED (sub)grids seen as one grid; rows numbered across them."""

    def __init__(self, urls: Sequence[str], chunk_models: int = 262_144):
        if not urls:
            raise ValueError("no SED grid given")
        self.urls = list(urls)
        self.grids = [SEDGrid(u) for u in self.urls]
        self.filters = self.grids[0].filters
        for g in self.grids[1:]:
            if g.filters != self.filters:
                raise ValueError(f"{g.url}: filters {g.filters} differ from {self.urls[0]}: {self.filters}")
        self.columns = [c for c in self.grids[0].columns if all(c in g.columns for g in self.grids)]
        self.offsets = np.cumsum([0] + [len(g) for g in self.grids])
        self.n_models = int(self.offsets[-1])
        self.chunk = int(chunk_models)

    def blocks(self, columns: Sequence[str] = ()) -> Iterator[tuple[int, np.ndarray, dict[str, np.ndarray]]]:
        """(global start row, seds, columns) block by block over all subgrids."""
        for g, grid in enumerate(self.grids):
            for blk in grid.iter_chunks(self.chunk, columns=[c for c in columns if c in grid.columns]):
                yield int(self.offsets[g]) + blk.start, blk.seds, blk.columns

    def read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Models at global rows (any order, repeats allowed)."""
        rows = np.asarray(rows, np.int64)
        seds = np.empty((rows.size, len(self.filters)))
        cols = {c: np.empty(rows.size) for c in self.columns}
        g_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for g in np.unique(g_of):
            sel = np.flatnonzero(g_of == g)
            local = rows[sel] - self.offsets[g]
            uniq, inv = np.unique(local, return_inverse=True)  # h5py needs increasing indices
            blk = self.grids[g].read(rows=uniq, columns=self.columns)
            seds[sel] = blk.seds[inv]
            for c in self.columns:
                cols[c][sel] = blk.columns[c][inv]
        return seds, cols

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = np.searchsorted(self.offsets, rows, side="right") - 1
        return g, rows - self.offsets[g]


def magnitudes(seds: np.ndarray, vega: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -2.5 * np.log10(seds / vega)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijection of uint64: per-model random keys independent of block layout."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def model_keys(rows: np.ndarray, seed: int) -> np.ndarray:
    """Random priority of every model: sorting by key = a seeded random permutation."""
    s = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
    return _splitmix64(rows.astype(np.uint64) ^ s)


# --------------------------------------------------------------------------
# flux-bin ("toothpick-style") selection
# --------------------------------------------------------------------------


@dataclass
class FluxBinSelection:
    rows: np.ndarray  # chosen global rows, in acceptance order
    ordinals: np.ndarray  # their index among the candidates (compat index BUG?)
    edges: np.ndarray  # [n_bands, N+1] magnitude edges
    counts: np.ndarray  # [N, n_bands] chosen per cell
    available: np.ndarray  # [N, n_bands] candidates per cell
    n_candidates: int
    n_passes: int
    peak_buffer: int
    unfilled: list[dict[str, Any]] = field(default_factory=list)


def _candidates(
    seds: np.ndarray, cols: dict[str, np.ndarray], vega: np.ndarray, ast: ASTs, filters: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(mask, mags) of the flux-bin candidates in a block (spec §2.1 step 1)."""
    mags = magnitudes(seds, vega)
    ok = np.isfinite(mags).all(axis=1)  # a zero/negative model flux has no magnitude
    if "logL" in cols:
        ok &= cols["logL"] >= -9
    if isinstance(ast.fluxbin_maglimits, dict):
        lim = ast.fluxbin_maglimits
        missing = [f for f in filters if f not in lim]
        if missing:
            raise ValueError(f"asts.fluxbin_maglimits must list every filter; missing {missing}")
        bright = np.array([lim[f][0] for f in filters])
        faint = np.array([lim[f][1] for f in filters])
        inside = ((mags > bright) & (mags < faint)).sum(axis=1)
        ok &= inside >= ast.filters_inside_maglimits
    return ok, mags


def _bin_codes(mags: np.ndarray, edges: np.ndarray) -> np.ndarray:
    n = edges.shape[1] - 1
    codes = np.empty(mags.shape, np.int32)
    for k in range(mags.shape[1]):
        # number of upper edges <= m, clipped so the faintest model is in bin N-1
        codes[:, k] = np.minimum(np.searchsorted(edges[k, 1:], mags[:, k], side="right"), n - 1)
    return codes


@numba.njit(cache=True)
def _accept_sequential(codes, counts, n_per):  # pragma: no cover - compiled
    """Reference semantics: accept a model if any of its cells still needs models."""
    n, nb = codes.shape
    acc = np.zeros(n, np.bool_)
    for i in range(n):
        need = False
        for k in range(nb):
            if counts[codes[i, k], k] < n_per:
                need = True
                break
        if need:
            acc[i] = True
            for k in range(nb):
                counts[codes[i, k], k] += 1
    return acc


def _live(codes: np.ndarray, counts: np.ndarray, n_per: int) -> np.ndarray:
    live = np.zeros(len(codes), bool)
    for k in range(codes.shape[1]):
        live |= counts[codes[:, k], k] < n_per
    return live


def select_flux_bin(
    gs: GridSet, vega: np.ndarray, ast: ASTs, seed: int, rule: FluxBinRule = FluxBinRule.REFERENCE
) -> FluxBinSelection:
    """Flux-bin selection streamed over the (sub)grids.

    Reference semantics (spec §2.1) with a seeded generator: candidates are
    visited in a uniformly random order (sorting by per-model random keys) and
    accepted while any of their (bin, band) cells is below ``n_per``; each model
    is visited once (the 'harmless improvement': no duplicate picks).  Visiting
    in key order is done in passes: each pass streams the grid, keeps the
    ``select_buffer`` smallest keys among the not-yet-visited models that could
    still be accepted, and processes them in order.  Memory: one grid block +
    the buffer.  ``FluxBinRule.BEAST_CHUNK`` switches to BEAST 2.1's vectorised chunk rule.
    """
    filters = gs.filters
    nb = len(filters)
    n_bins, n_per = ast.n_flux_bins, ast.n_per_flux_bin
    need_cols = ["logL"] if "logL" in gs.columns else []

    # pass 1: magnitude range of the candidates per band
    lo = np.full(nb, np.inf)
    hi = np.full(nb, -np.inf)
    n_cand = 0
    for _, seds, cols in gs.blocks(need_cols):
        ok, mags = _candidates(seds, cols, vega, ast, filters)
        if ok.any():
            lo = np.minimum(lo, mags[ok].min(axis=0))
            hi = np.maximum(hi, mags[ok].max(axis=0))
            n_cand += int(ok.sum())
    if n_cand == 0:
        raise ValueError(
            "flux_bin: no candidate model (all have logL < -9, non-positive fluxes, or fail "
            "asts.fluxbin_maglimits / asts.filters_inside_maglimits)"
        )
    edges = np.array([np.linspace(lo[k], hi[k], n_bins + 1) for k in range(nb)])

    if rule is FluxBinRule.BEAST_CHUNK:
        return _select_flux_bin_compat(gs, vega, ast, seed, edges, n_cand, need_cols)

    counts = np.zeros((n_bins, nb), np.int64)
    available = np.zeros((n_bins, nb), np.int64)
    M = ast.select_buffer
    t_last: np.uint64 | None = None
    rows_out: list[np.ndarray] = []
    ords_out: list[np.ndarray] = []
    n_pass = 0
    peak = 0
    while True:
        n_pass += 1
        buf_k = np.empty(0, np.uint64)
        buf_r = np.empty(0, np.int64)
        buf_o = np.empty(0, np.int64)
        buf_c = np.empty((0, nb), np.int32)
        ordinal0 = 0
        truncated = False
        for start, seds, cols in gs.blocks(need_cols):
            ok, mags = _candidates(seds, cols, vega, ast, filters)
            idx = np.flatnonzero(ok)
            ords = ordinal0 + np.arange(idx.size)
            ordinal0 += idx.size
            codes = _bin_codes(mags[idx], edges)
            if n_pass == 1:
                for k in range(nb):
                    available[:, k] += np.bincount(codes[:, k], minlength=n_bins)
            rows = start + idx.astype(np.int64)
            keys = model_keys(rows, seed)
            sel = _live(codes, counts, n_per)
            if t_last is not None:
                sel &= keys > t_last
            buf_k = np.concatenate([buf_k, keys[sel]])
            buf_r = np.concatenate([buf_r, rows[sel]])
            buf_o = np.concatenate([buf_o, ords[sel]])
            buf_c = np.concatenate([buf_c, codes[sel]])
            if buf_k.size > 2 * M:  # keep the M smallest keys
                peak = max(peak, buf_k.size)
                keep = np.argpartition(buf_k, M - 1)[:M]
                buf_k, buf_r, buf_o, buf_c = buf_k[keep], buf_r[keep], buf_o[keep], buf_c[keep]
                truncated = True
            peak = max(peak, buf_k.size)
        # complete: every remaining live model is in the buffer, none was dropped
        complete = not truncated and buf_k.size <= M
        if not complete:
            keep = np.argpartition(buf_k, M - 1)[:M]
            buf_k, buf_r, buf_o, buf_c = buf_k[keep], buf_r[keep], buf_o[keep], buf_c[keep]
        order = np.argsort(buf_k, kind="stable")
        acc = _accept_sequential(buf_c[order], counts, n_per)
        rows_out.append(buf_r[order][acc])
        ords_out.append(buf_o[order][acc])
        if buf_k.size:
            t_last = buf_k[order[-1]]
        if complete or (counts >= n_per).all():
            break
    selection = FluxBinSelection(
        np.concatenate(rows_out), np.concatenate(ords_out), edges, counts, available, n_cand, n_pass, peak
    )
    selection.unfilled = _unfilled(selection, filters, n_per)
    return selection


def _unfilled(sel: FluxBinSelection, filters: Sequence[str], n_per: int) -> list[dict[str, Any]]:
    out = []
    for b, k in zip(*np.nonzero(sel.counts < n_per)):
        av = int(sel.available[b, k])
        why = (
            f"only {av} candidate model(s) fall in this bin"
            if av < n_per
            else "candidates left unchosen (beast-2.1 compat chunk rule)"
        )
        out.append(
            {
                "filter": filters[k],
                "bin": int(b),
                "mag_min": float(sel.edges[k, b]),
                "mag_max": float(sel.edges[k, b + 1]),
                "count": int(sel.counts[b, k]),
                "available": av,
                "reason": why,
            }
        )
    return out


def _select_flux_bin_compat(
    gs: GridSet, vega: np.ndarray, ast: ASTs, seed: int, edges: np.ndarray, n_cand: int, need_cols: list[str]
) -> FluxBinSelection:
    """BEAST 2.1 (2025-12 code) chunk rule, on the in-memory candidate table as BEAST does.

    Per chunk of 100 000 draws with replacement from the not-rejected pool:
    every (bin, band) cell with a deficit takes up to the deficit from the
    chunk's members in that cell (without replacement) and is incremented by
    that number; then every accepted model increments all its bands again
    (BUG? double counting).  Accepted models stay in the pool (duplicates);
    drawn-but-unaccepted models are removed.
    """
    filters = gs.filters
    nb = len(filters)
    n_bins, n_per = ast.n_flux_bins, ast.n_per_flux_bin
    codes_l, rows_l = [], []
    for start, seds, cols in gs.blocks(need_cols):
        ok, mags = _candidates(seds, cols, vega, ast, filters)
        idx = np.flatnonzero(ok)
        codes_l.append(_bin_codes(mags[idx], edges))
        rows_l.append(start + idx.astype(np.int64))
    codes = np.concatenate(codes_l)
    rows = np.concatenate(rows_l)
    available = np.stack([np.bincount(codes[:, k], minlength=n_bins) for k in range(nb)], axis=1)
    rng = np.random.default_rng(seed)
    alive = np.ones(n_cand, bool)
    counts = np.zeros((n_bins, nb), np.int64)
    chosen: list[np.ndarray] = []
    n_pass = 0
    while alive.any() and not (counts >= n_per).all():
        n_pass += 1
        pool = np.flatnonzero(alive)
        draws = rng.choice(pool, size=100_000, replace=True)
        picked = np.zeros(draws.size, bool)
        for k in range(nb):
            dk = codes[draws, k]
            for b in np.flatnonzero(counts[:, k] < n_per):
                members = np.flatnonzero(dk == b)
                if members.size == 0:
                    continue
                take = min(int(n_per - counts[b, k]), members.size)
                picked[rng.choice(members, size=take, replace=False)] = True
                counts[b, k] += take
        acc = draws[picked]
        for k in range(nb):
            np.add.at(counts[:, k], codes[acc, k], 1)
        alive[np.setdiff1d(draws[~picked], acc)] = False
        chosen.append(acc)
    ords = np.concatenate(chosen) if chosen else np.empty(0, np.int64)
    sel = FluxBinSelection(rows[ords], ords, edges, counts, available, n_cand, n_pass, n_cand)
    sel.unfilled = _unfilled(sel, filters, n_per)
    return sel


# --------------------------------------------------------------------------
# random-per-age and supplement selections (draws with replacement)
# --------------------------------------------------------------------------


def _rows_by_ordinals(
    gs: GridSet, eligible, wanted: dict[Any, np.ndarray], group_col: str | None
) -> dict[Any, np.ndarray]:
    """Map (group, ordinal among the group's eligible models in grid order) -> global row.

    Second streaming pass of the with-replacement draws: memory = one block +
    the draws.
    """
    cols = [group_col] if group_col else []
    cols += [c for c in ("logL",) if c in gs.columns and c not in cols]
    running: dict[Any, int] = {}
    found: dict[Any, dict[int, int]] = {g: {} for g in wanted}
    uniq_wanted = {g: np.unique(w) for g, w in wanted.items()}
    for start, seds, c in gs.blocks(cols):
        ok = eligible(start, seds, c)
        idx = np.flatnonzero(ok)
        groups = c[group_col][idx] if group_col else np.zeros(idx.size)
        for g in np.unique(groups):
            gi = idx[groups == g]
            base = running.get(g, 0)
            running[g] = base + gi.size
            if g not in uniq_wanted:
                continue
            w = uniq_wanted[g]
            hit = w[(w >= base) & (w < base + gi.size)]
            for o in hit.tolist():
                found[g][o] = start + int(gi[o - base])
    return {g: np.array([found[g][o] for o in w.tolist()], np.int64) for g, w in wanted.items()}


def select_random_per_age(
    gs: GridSet, vega: np.ndarray, ast: ASTs, catalog: pl.DataFrame | None, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """``random_seds`` (spec §2.2): per age, models drawn uniformly with replacement."""
    filters = gs.filters
    bands = short_names(filters)
    nb = len(filters)
    if len(ast.maglimit) == 1:
        if catalog is None:
            raise ValueError("asts.maglimit = [delta] needs the observed catalog (90th percentile per band)")
        lim = []
        for b in bands:
            v = catalog[f"{b}_VEGA"].cast(pl.Float64).to_numpy()
            v = v[v < 99]
            if v.size == 0:
                raise ValueError(f"catalog column {b}_VEGA has no value below 99 for asts.maglimit")
            lim.append(np.percentile(v, 90) + ast.maglimit[0])
        limits = np.array(lim)
    elif len(ast.maglimit) == nb:
        limits = np.asarray(ast.maglimit, float)
    else:
        raise ValueError(f"asts.maglimit needs 1 value or one per filter ({nb}), got {len(ast.maglimit)}")
    if "logA" not in gs.columns:
        raise ValueError(f"{gs.urls[0]}: grid has no logA column for random_pick")
    n_above = min(ast.bands_above_maglimit, nb)

    def eligible(start, seds, cols):
        return (magnitudes(seds, vega) < limits).sum(axis=1) >= n_above

    per_age: dict[float, int] = {}
    for start, seds, cols in gs.blocks(["logA"]):
        a = cols["logA"][eligible(start, seds, cols)]
        for g, n in zip(*np.unique(a, return_counts=True)):
            per_age[float(g)] = per_age.get(float(g), 0) + int(n)
    if not per_age:
        raise ValueError(f"random_pick: no model brighter than {limits.round(2).tolist()} in {n_above} bands")
    rng = np.random.default_rng(seed)
    ages = sorted(per_age)
    wanted = {g: rng.integers(0, per_age[g], ast.models_selected_per_age) for g in ages}
    found = _rows_by_ordinals(gs, eligible, wanted, "logA")
    uniq = {g: np.unique(w) for g, w in wanted.items()}
    rows = np.concatenate([found[g][np.searchsorted(uniq[g], wanted[g])] for g in ages])
    return rows, {"maglimits": limits.tolist(), "n_ages": len(ages)}


def select_supplement(gs: GridSet, vega: np.ndarray, ast: ASTs, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``suppl_seds`` (spec §2.3)."""
    filters = gs.filters
    exclude = np.empty(0, np.int64)
    if ast.existing_file:
        if not storage.exists(ast.existing_file):
            raise FileNotFoundError(f"asts.existing_file: {ast.existing_file} not found")
        exclude = np.unique(catalogs.read_parquet(ast.existing_file)["sedgrid_indx"].to_numpy())
    mag_cut = []
    for key, (b, f) in (ast.suppl_maglimit or {}).items():
        ks = [k for k, name in enumerate(filters) if key.upper() in name.upper()]
        if not ks:
            raise ValueError(f"asts.suppl_maglimit key {key!r} matches no filter of {filters}")
        mag_cut.append((ks, b, f))
    col_cut = []
    for key, pairs in (ast.suppl_colorlimit or {}).items():
        if key not in (ast.suppl_maglimit or {}):
            continue  # spec: colour cuts only for keys that also have a magnitude cut
        k1 = [k for k, name in enumerate(filters) if key.upper() in name.upper()]
        for second, limit in pairs:
            k2 = [k for k, name in enumerate(filters) if str(second).upper() in name.upper()]
            if not k1 or not k2:
                raise ValueError(f"asts.suppl_colorlimit {key!r}-{second!r} matches no filter of {filters}")
            col_cut.append((k1[0], k2[0], float(limit)))

    def eligible(seds, cols):
        m = magnitudes(seds, vega)
        ok = np.ones(len(m), bool)
        for ks, b, f in mag_cut:
            for k in ks:
                ok &= (m[:, k] >= b) & (m[:, k] <= f)
        for k1, k2, limit in col_cut:
            ok &= m[:, k1] - m[:, k2] <= limit
        return ok

    def eligible_rows(start, seds, cols):
        ok = eligible(seds, cols)
        if exclude.size:
            ok &= ~np.isin(start + np.arange(len(ok)), exclude)
        return ok

    n_ok = 0
    for start, seds, cols in gs.blocks([]):
        n_ok += int(eligible_rows(start, seds, cols).sum())
    if n_ok == 0:
        raise ValueError("suppl_seds: no model passes asts.suppl_maglimit / suppl_colorlimit / existing_file")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_ok, ast.n_supplement)
    found = _rows_by_ordinals(gs, eligible_rows, {0: draws}, None)
    uniq = np.unique(draws)
    return found[0][np.searchsorted(uniq, draws)], {"n_eligible": n_ok, "n_excluded": int(exclude.size)}


# --------------------------------------------------------------------------
# positions
# --------------------------------------------------------------------------


@dataclass
class Region:
    """Where ASTs may go, in RA/Dec (degrees)."""

    hull: np.ndarray | None  # eroded convex hull of the catalog
    boundary: np.ndarray | None  # coord_boundary polygon (open ring)
    boundary_erode: float
    filter_hull: np.ndarray | None  # hull of sources with data in the required bands

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        ok = np.ones(np.shape(ra), bool)
        if self.hull is not None:
            ok &= geometry.points_in_convex(self.hull, ra, dec)
        if self.boundary is not None:
            ok &= geometry.points_in_polygon(self.boundary, ra, dec, self.boundary_erode)
        if self.filter_hull is not None:
            ok &= geometry.points_in_convex(self.filter_hull, ra, dec)
        return ok

    def usable_tiles(self, tiles: pl.DataFrame, beast_pruning: bool, erode: float) -> np.ndarray:
        """``tile_usable`` for every tile; the clear cases are decided vectorised first."""
        x0, x1 = tiles["min_ra"].to_numpy(), tiles["max_ra"].to_numpy()
        y0, y1 = tiles["min_dec"].to_numpy(), tiles["max_dec"].to_numpy()
        polys = [p for p in (self.hull, self.filter_hull) if p is not None]
        sure_in = np.ones(x0.size, bool)
        sure_out = np.zeros(x0.size, bool)
        for poly in polys:
            corners_in = np.ones(x0.size, bool)
            for cx, cy in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
                corners_in &= geometry.points_in_convex(poly, cx, cy)
            sure_in &= corners_in  # a convex polygon holding the 4 corners holds the tile
            px0, py0 = poly.min(axis=0)
            px1, py1 = poly.max(axis=0)
            sure_out |= (x1 < px0) | (x0 > px1) | (y1 < py0) | (y0 > py1)
        if self.boundary is not None:
            sure_in[:] = False
        out = np.zeros(x0.size, bool)
        out[sure_in & ~sure_out] = True
        for k in np.flatnonzero(~sure_in & ~sure_out):
            out[k] = self.tile_usable(x0[k], x1[k], y0[k], y1[k], beast_pruning, erode)
        return out

    def tile_usable(self, x0: float, x1: float, y0: float, y1: float, beast_pruning: bool, erode: float) -> bool:
        box = geometry.box_polygon(x0, x1, y0, y1)

        def meets(poly):
            part = geometry.clip_convex(box, poly)
            return len(part) >= 3 and abs(geometry.polygon_area(part)) > 0

        if beast_pruning:
            # BEAST's pruning (spec §3.1 step 4): eroded hull only without a boundary
            if self.boundary is None and erode > 0 and self.hull is not None and not meets(self.hull):
                return False
        elif self.hull is not None and not meets(self.hull):
            return False
        if self.boundary is not None and not geometry.box_overlaps_region(
            x0, x1, y0, y1, lambda a, b: geometry.points_in_polygon(self.boundary, a, b, self.boundary_erode)
        ):
            return False
        if self.filter_hull is not None and not meets(self.filter_hull):
            return False
        return True


def build_region(ast: ASTs, catalog: pl.DataFrame, bands: Sequence[str]) -> Region:
    ra = catalog["RA"].to_numpy()
    dec = catalog["DEC"].to_numpy()
    e = ast.erode_selection_region / 3600.0  # degrees in the RA/Dec plane, no cos(dec) (as BEAST)
    hull = geometry.erode_convex(geometry.convex_hull(ra, dec), e)
    if len(hull) < 3:
        raise ValueError(
            f"asts.erode_selection_region = {ast.erode_selection_region} arcsec erodes the "
            "catalog footprint away entirely"
        )
    boundary = None
    if ast.coord_boundary is not None:
        boundary = np.column_stack([ast.coord_boundary[0][:-1], ast.coord_boundary[1][:-1]]).astype(float)
        if abs(geometry.polygon_area(boundary)) == 0:
            raise ValueError("asts.coord_boundary polygon has zero area")
    if ast.region_from_filters == "all":
        zero = np.zeros(catalog.height, np.int64)
        for b in bands:
            zero += catalog[f"{b}_RATE"].to_numpy() == 0
        keep = (zero == 0) | (zero == len(bands))
    else:
        keep = np.ones(catalog.height, bool)
        for b in ast.region_from_filters:
            col = f"{b.upper()}_RATE"
            if col not in catalog.columns:
                raise ValueError(f"asts.region_from_filters: catalog has no column {col}")
            keep &= catalog[col].to_numpy() != 0
    if keep.sum() < 3:
        raise ValueError("asts.region_from_filters: fewer than 3 catalog sources have data in the required bands")
    fh = geometry.convex_hull(ra[keep], dec[keep])
    return Region(hull, boundary, e, fh)


def _draw_in_tiles(
    rng: np.random.Generator,
    tiles: pl.DataFrame,
    weights: np.ndarray | None,
    n: int,
    region: Region,
    max_tries: int,
    what: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rejection sampling (spec §3.1 step 6): tile at random, uniform point, keep if allowed."""
    mr, xr = tiles["min_ra"].to_numpy(), tiles["max_ra"].to_numpy()
    md, xd = tiles["min_dec"].to_numpy(), tiles["max_dec"].to_numpy()
    tb = tiles["sd_bin"].to_numpy()
    p = None if weights is None else weights / weights.sum()
    out_ra, out_dec, out_bin = [], [], []
    got = 0
    for _ in range(max_tries):
        k = max(64, 2 * (n - got))
        t = rng.choice(len(mr), size=k, p=p)
        ra = mr[t] + rng.random(k) * (xr[t] - mr[t])
        dec = md[t] + rng.random(k) * (xd[t] - md[t])
        ok = region.contains(ra, dec)
        out_ra.append(ra[ok])
        out_dec.append(dec[ok])
        out_bin.append(tb[t][ok])
        got += int(ok.sum())
        if got >= n:
            return (np.concatenate(out_ra)[:n], np.concatenate(out_dec)[:n], np.concatenate(out_bin)[:n])
    raise ValueError(
        f"{what}: no position accepted after {max_tries} rounds: its tiles do not overlap the "
        "allowed region (catalog footprint eroded by asts.erode_selection_region, "
        "asts.coord_boundary, asts.region_from_filters)"
    )


def positions_density_bins(
    entries: int, tiles: pl.DataFrame, region: Region, ast: ASTs, rng: np.random.Generator, beast_pruning: bool
) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
    """Spec §3.1: every entry in every usable density bin (or n_per_density_bin per bin).

    Returns (columns incl. ``entry`` (index into the S*R list), ``sd_bin``,
    ``RA``, ``DEC``; the bins used; the bins dropped as unusable).
    """
    e = ast.erode_selection_region / 3600.0
    usable = region.usable_tiles(tiles, beast_pruning, e)
    all_bins = sorted(set(tiles["sd_bin"].to_list()))
    t_ok = tiles.filter(pl.Series(usable))
    bins = sorted(set(t_ok["sd_bin"].to_list()))
    dropped = [b for b in all_bins if b not in bins]
    if not bins:
        raise ValueError(
            "no density-map tile overlaps the allowed AST region (check asts.coord_boundary, "
            "asts.erode_selection_region)"
        )
    per_bin = []
    for b in bins:
        tb = t_ok.filter(pl.col("sd_bin") == b)
        if ast.n_per_density_bin is None:
            ent = np.arange(entries)
        else:
            perm = rng.permutation(entries)
            ent = perm[np.arange(ast.n_per_density_bin) % entries]
        ra, dec, _ = _draw_in_tiles(rng, tb, None, ent.size, region, ast.max_position_tries, f"density bin {b}")
        per_bin.append((b, ent, ra, dec))
    if ast.n_per_density_bin is None:
        # spec §3.1 step 5: row r = s * n_bins + b (each entry repeated once per bin, consecutively)
        nbin = len(bins)
        ent = np.repeat(np.arange(entries), nbin)
        sdb = np.tile(np.array(bins), entries)
        ra = np.empty(entries * nbin)
        dec = np.empty(entries * nbin)
        for j, (_, _, r, d) in enumerate(per_bin):
            ra[j::nbin] = r
            dec[j::nbin] = d
    else:
        ent = np.concatenate([p[1] for p in per_bin])
        sdb = np.concatenate([np.full(p[1].size, p[0]) for p in per_bin])
        ra = np.concatenate([p[2] for p in per_bin])
        dec = np.concatenate([p[3] for p in per_bin])
    return {"entry": ent, "sd_bin": sdb.astype(np.int64), "RA": ra, "DEC": dec}, bins, dropped


def positions_pixel_distribution(
    entries: int, tiles: pl.DataFrame, region: Region, ast: ASTs, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One position per entry; tiles drawn in proportion to their catalog star counts."""
    t = tiles.filter(pl.col("n_sources") > 0)
    e = ast.erode_selection_region / 3600.0
    usable = region.usable_tiles(t, False, e)
    t = t.filter(pl.Series(usable))
    if t.height == 0:
        raise ValueError("no populated density-map tile overlaps the allowed AST region")
    ra, dec, sdb = _draw_in_tiles(
        rng, t, t["n_sources"].to_numpy().astype(float), entries, region, ast.max_position_tries, "pixel_distribution"
    )
    return {"entry": np.arange(entries), "sd_bin": sdb.astype(np.int64), "RA": ra, "DEC": dec}


def positions_annulus(
    entries: int, catalog: pl.DataFrame, ast: ASTs, rng: np.random.Generator, needs_xy: bool
) -> dict[str, np.ndarray]:
    """Spec §3.2: around a random catalog star, radius d + 3U, angle 2 pi U'."""
    d = ast.pixel_distribution
    if "X" in catalog.columns and "Y" in catalog.columns:
        x, y, scale, celestial = catalog["X"].to_numpy(), catalog["Y"].to_numpy(), 1.0, False
    elif needs_xy:
        raise ValueError(
            "asts.positions = 'annulus' needs X/Y columns in the catalog (beast-2.1: the RA/Dec branch is unreachable)"
        )
    else:
        # work in arcsec offsets from the catalog centre; pixel_scale converts the radii
        dec0 = catalogs.column_float(catalog["DEC"].mean(), "catalog column DEC")
        ra0 = catalogs.column_float(catalog["RA"].mean(), "catalog column RA")
        x = (catalog["RA"].to_numpy() - ra0) * np.cos(np.radians(dec0)) * 3600.0
        y = (catalog["DEC"].to_numpy() - dec0) * 3600.0
        scale, celestial = ast.pixel_scale, True
    r_in, width = d * scale, 3.0 * scale
    keep = (
        (x > x.min() + r_in + width)
        & (x < x.max() - r_in - width)
        & (y > y.min() + r_in + width)
        & (y < y.max() - r_in - width)
    )
    if not keep.any():
        raise ValueError(f"asts.pixel_distribution = {d}: no catalog star lies far enough from the edges")
    xs, ys = x[keep], y[keep]
    star = rng.integers(0, xs.size, entries)
    r = r_in + width * rng.random(entries)
    th = 2 * np.pi * rng.random(entries)
    px, py = xs[star] + r * np.cos(th), ys[star] + r * np.sin(th)
    if celestial:
        dec = dec0 + py / 3600.0
        ra = ra0 + px / 3600.0 / np.cos(np.radians(dec0))
        return {"entry": np.arange(entries), "RA": ra, "DEC": dec}
    return {"entry": np.arange(entries), "X": px, "Y": py}


# --------------------------------------------------------------------------
# stage
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ASTInputsResult:
    params_url: str
    input_url: str
    text_url: str
    fluxbins_url: str | None
    n_seds: int
    n_rows: int
    unfilled_bins: list[dict[str, Any]]
    bins: list[int]
    dropped_bins: list[int]

    @property
    def urls(self) -> list[str]:
        return [u for u in (self.params_url, self.input_url, self.text_url, self.fluxbins_url) if u]


def reference_pixels(ast: ASTs, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X/Y (origin 1, full distortion) of positions in ``asts.reference_image``."""
    from astropy.io import fits
    from astropy.wcs import WCS

    url = ast.reference_image
    if not url:
        raise ValueError("asts.reference_image is not set: no image to give X/Y pixels in")
    if not storage.exists(url):
        raise FileNotFoundError(f"asts.reference_image: {url} not found")
    with storage.local_copy_for_read(url) as local, fits.open(local) as h:
        try:
            hdr = h[ast.reference_hdu].header
        except (KeyError, IndexError):
            raise ValueError(f"{url}: no extension {ast.reference_hdu!r} (asts.reference_hdu)") from None
        w = WCS(hdr, h)
    if not w.has_celestial:
        raise ValueError(f"{url}[{ast.reference_hdu}]: no celestial WCS")
    x, y = w.all_world2pix(ra, dec, 1)
    return np.asarray(x), np.asarray(y)


def _dolphot_text(filters: Sequence[str], pos: dict[str, np.ndarray], mags: np.ndarray, short_radec: bool) -> str:
    celestial = "X" not in pos
    names = ["RA", "DEC"] if celestial else ["X", "Y"]
    n = mags.shape[0]
    if celestial:
        # BEAST writes degrees with %.5f (0.04 arcsec steps); intended keeps 1e-8 deg
        pfmt = "%.5f" if short_radec else "%.8f"
    else:
        pfmt = "%.5f" if "sd_bin" in pos else "%.2f"  # map schemes %.5f, around stars %.2f
    lines = [" ".join(["zeros", "ones", *names, *filters])]
    a, b = pos[names[0]], pos[names[1]]
    for i in range(n):
        # BEAST's text layout: %-formats chosen per positioning scheme
        lines.append(" ".join(["0", "1", pfmt % a[i], pfmt % b[i], *("%.5f" % m for m in mags[i])]))  # noqa: UP031
    return "\n".join(lines) + "\n"


def run_ast_inputs(
    settings: Settings, sed_grid_urls: Sequence[str] | str, catalog_url: str | None, map_url: str | None
) -> ASTInputsResult:
    settings.activate()
    ast = settings.asts
    beh = settings.resolved_behaviour.observations
    seed = settings.project.seed
    urls = [sed_grid_urls] if isinstance(sed_grid_urls, str) else list(sed_grid_urls)
    gs = GridSet(urls, settings.physics.chunk_models)
    filters = gs.filters
    bands = short_names(filters)
    from beastflow.physics.vega import vega_band_fluxes

    vega = np.asarray(vega_band_fluxes(filters, settings.resolved_behaviour.physics.vega_positive_points), float)
    catalog = catalogs.read_photometry(catalog_url, filters) if catalog_url else None
    need_map = ast.positions in ("density_bins", "pixel_distribution")
    if need_map and not map_url:
        raise ValueError(f"asts.positions = {ast.positions!r} needs the density map (run `beastflow density-map`)")
    if catalog is None:
        raise ValueError("AST positions need the observed catalog (observations.catalog)")

    info: dict[str, Any] = {"method": ast.method}
    fb = None
    if ast.method == "flux_bin":
        fb = select_flux_bin(gs, vega, ast, seed, beh.flux_bin_rule)
        rows = fb.rows
        # BUG? (sedgrid_indx_candidate): parameters read at the candidate index, not the grid row
        param_rows = np.minimum(fb.ordinals, gs.n_models - 1) if beh.sedgrid_indx_candidate else rows
        info |= {
            "n_candidates": fb.n_candidates,
            "passes": fb.n_passes,
            "peak_buffer": fb.peak_buffer,
            "unfilled": len(fb.unfilled),
        }
    elif ast.method == "random_pick":
        rows, extra = select_random_per_age(gs, vega, ast, catalog, seed)
        param_rows = rows
        info |= extra
    else:
        rows, extra = select_supplement(gs, vega, ast, seed)
        param_rows = rows
        info |= extra

    seds, _ = gs.read_rows(rows)
    mags = magnitudes(seds, vega)
    _, cols = gs.read_rows(param_rows)
    g_idx, l_idx = gs.locate(param_rows)
    params = pl.DataFrame(
        {
            "sedgrid_indx": param_rows,
            "subgrid": g_idx,
            "subgrid_indx": l_idx,
            **cols,
            **{f"{b}_IN": mags[:, k] for k, b in enumerate(bands)},
        }
    )

    # SED list with realisations: each chosen SED R times, consecutively
    R = ast.realization_per_model
    if beh.annulus_one_per_row and ast.positions == "annulus" and ast.method != "random_pick":
        R = 1  # QUIRK: the around-stars scheme gives one position per SED row
    entries = len(rows) * R
    sed_of_entry = np.repeat(np.arange(len(rows)), R)
    real_of_entry = np.tile(np.arange(R), len(rows))
    rng = np.random.default_rng([seed, 0xA57])
    bins_used: list[int] = []
    dropped: list[int] = []
    if ast.positions == "annulus":
        pos = positions_annulus(entries, catalog, ast, rng, beh.annulus_needs_xy)
    else:
        if not map_url:  # need_map: refused above already
            raise ValueError(f"asts.positions = {ast.positions!r} needs the density map")
        tiles, _, _ = read_map(map_url)
        region = build_region(ast, catalog, bands)
        if ast.positions == "density_bins":
            pos, bins_used, dropped = positions_density_bins(entries, tiles, region, ast, rng, beh.beast_tile_pruning)
        else:
            pos = positions_pixel_distribution(entries, tiles, region, ast, rng)
    if ast.reference_image and "RA" in pos:
        pos["X"], pos["Y"] = reference_pixels(ast, pos["RA"], pos["DEC"])
    ent = pos.pop("entry")
    s_idx = sed_of_entry[ent]
    table = params[s_idx].with_columns(pl.Series("realization", real_of_entry[ent]))
    table = table.with_columns([pl.Series(k, v) for k, v in pos.items()])

    sfx = "_suppl" if ast.method == "suppl_seds" else ""
    name = settings.project.name
    inputs = {f"sed_grid_{i}": u for i, u in enumerate(urls)}
    if catalog_url:
        inputs["catalog"] = catalog_url
    if map_url and need_map:
        inputs["map"] = map_url
    prov = make_provenance(
        STAGE,
        settings.section_hash("compat", "project", "physics", "observations", "asts"),
        inputs=inputs,
        extra={"info": info},
    )
    params_url = settings.artifact(f"{name}_ASTparams{sfx}.parquet")
    input_url = settings.artifact(f"{name}_inputAST{sfx}.parquet")
    text_url = settings.artifact(f"{name}_inputAST{sfx}.txt")
    fb_url = None
    catalogs.write_parquet(params, params_url, prov, {"filters": filters})
    if fb is not None:
        nbn = ast.n_flux_bins
        fb_df = pl.DataFrame(
            {
                "filter": np.repeat(np.array(filters), nbn),
                "bin": np.tile(np.arange(nbn), len(filters)),
                "mag_min": fb.edges[:, :-1].ravel(),
                "mag_max": fb.edges[:, 1:].ravel(),
                "count": fb.counts.T.ravel(),
                "available": fb.available.T.ravel(),
                "filled": (fb.counts.T >= ast.n_per_flux_bin).ravel(),
            }
        )
        fb_url = settings.artifact(f"{name}_ASTfluxbins.parquet")
        catalogs.write_parquet(fb_df, fb_url, prov, {"unfilled": fb.unfilled})
        for u in fb.unfilled[:10]:
            log.warning("flux bin not filled: %s", u)
    catalogs.write_parquet(table, input_url, prov, {"filters": filters, "bins": bins_used, "dropped_bins": dropped})
    tmags = np.column_stack([table[f"{b}_IN"].to_numpy() for b in bands])
    storage.write_bytes(text_url, _dolphot_text(filters, pos, tmags, beh.short_position_precision).encode())
    return ASTInputsResult(
        params_url,
        input_url,
        text_url,
        fb_url,
        len(rows),
        table.height,
        [] if fb is None else fb.unfilled,
        bins_used,
        dropped,
    )
