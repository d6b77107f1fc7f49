"""Which model SEDs to inject as artificial stars (spec asts.md, "SED selection").

The flux-bin ("toothpick-style") selection, the random-per-age selection and
the supplement (``suppl_seds``), each streaming the grid block by block
(``GridSet.blocks``) with per-model random keys independent of the block layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import polars as pl

from beastflow import storage
from beastflow.behaviour import FluxBinRule
from beastflow.filters import short_names
from beastflow.magnitudes import flux_to_mag
from beastflow.settings.asts import ASTs

from . import catalogs
from .grid_set import GridSet

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def magnitudes(seds: np.ndarray, vega: np.ndarray) -> np.ndarray:
    # a model without flux in a band is fainter than any limit there
    return flux_to_mag(seds, vega, nodata=np.inf)


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
