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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from beastflow import plan, storage
from beastflow.filters import short_names
from beastflow.provenance import make_provenance
from beastflow.settings import Settings

from . import catalogs
from .ast_positions import (
    build_region,
    positions_annulus,
    positions_density_bins,
    positions_pixel_distribution,
    reference_pixels,
)
from .ast_seds import magnitudes, select_flux_bin, select_random_per_age, select_supplement
from .density import read_map
from .grid_set import GridSet

log = logging.getLogger(__name__)

STAGE = "ast_inputs"


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
    names = plan.Names.of(settings)
    params_url, input_url, text_url = names.ast_params(sfx), names.ast_inputs(sfx), names.ast_inputs_text(sfx)
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
        fb_url = names.ast_flux_bins()
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
