"""Catalog cuts (spec observations.md §5), applied identically to the ASTs.

Stage ``run_cut(settings, catalog_url, ast_url)`` writes ``P_catalog_cut.parquet``
and ``P_asts_cut.parquet`` (+ optional ds9 region files ``P_catalog_cut.reg``,
``P_asts_cut.reg``).  The per-row tests live in ``cut_masks`` and are evaluated
by the very same code on the photometry and on the ASTs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from beastflow import plan, storage
from beastflow.filters import short_names
from beastflow.provenance import make_provenance
from beastflow.settings import Settings
from beastflow.settings.observations import Cuts

from . import catalogs, geometry

log = logging.getLogger(__name__)

STAGE = "cut"


@dataclass(frozen=True)
class CutResult:
    catalog_url: str
    ast_url: str | None
    region_urls: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def flag_bands(settings: Settings) -> list[str]:
    c = settings.observations.cuts
    bands = [b.upper() for b in (c.flag_bands or [settings.observations.source_density.ref_band])]
    known = short_names(settings.physics.filters)
    bad = [b for b in bands if b not in known]
    if bad:
        raise ValueError(f"observations.cuts.flag_bands: {bad} are not bands of physics.filters ({known})")
    return bands


def cut_masks(
    df: pl.DataFrame,
    bands: Sequence[str],
    fbands: Sequence[str],
    cuts: Cuts,
    flag_cut_zero_rate: bool,
    url: str = "catalog",
) -> dict[str, np.ndarray]:
    """Boolean 'removed by this cut' arrays, one per cut (same rules for stars and ASTs).

    - partial_overlap: zero rate in some but not all bands (outside a band's
      footprint); all-zero rows stay (non-recovered ASTs).
    - flagged: intended (docs): FLAG >= 99 where the rate is positive in a flag
      band; negative fluxes stay.  ``flag_cut_zero_rate`` (beast-2.1 code): rate exactly 0 in a
      flag band, whatever the flag.  A table without the FLAG column (ASTs) is
      not flag-cut in intended mode.
    """
    n = df.height
    out: dict[str, np.ndarray] = {}
    if cuts.partial_overlap:
        zero = np.zeros(n, np.int64)
        for b in bands:
            zero += df[f"{b}_RATE"].to_numpy() == 0
        out["partial_overlap"] = (zero > 0) & (zero < len(bands))
    if cuts.flagged:
        bad = np.zeros(n, bool)
        for b in fbands:
            rate = df[f"{b}_RATE"].to_numpy()
            if flag_cut_zero_rate:
                bad |= rate == 0
            elif f"{b}_FLAG" in df.columns:
                bad |= (df[f"{b}_FLAG"].to_numpy() >= 99) & (rate > 0)
        out["flagged"] = bad
    return out


def region_text(ra: np.ndarray, dec: np.ndarray, removed: np.ndarray) -> str:
    """ds9 region file as BEAST writes it: kept green (default), removed magenta."""
    lines = [
        "# Region file format: DS9 version 4.1",
        'global color=green dashlist=8 3 width=1 font="helvetica 10 normal roman" select=1 '
        "highlite=1 dash=0 fixed=0 edit=1 move=1 delete=1 include=1 source=1",
        "fk5",
    ]
    for r, d, x in zip(ra, dec, removed):
        lines.append(f'circle({r:.8f},{d:.8f},0.1")' + (" # color=magenta" if x else ""))
    return "\n".join(lines) + "\n"


def run_cut(settings: Settings, catalog_url: str, ast_url: str | None = None) -> CutResult:
    """Stage: cut the (annotated) photometry and apply the same cuts to the ASTs."""
    cuts = settings.observations.cuts
    zero_rate = settings.resolved_behaviour.observations.flag_cut_zero_rate
    filters = settings.physics.filters
    bands = short_names(filters)
    fb = flag_bands(settings)
    ast_url = ast_url or settings.observations.ast_results

    cat = catalogs.read_photometry(catalog_url, filters)
    masks = cut_masks(cat, bands, fb, cuts, zero_rate, catalog_url)
    removed = np.zeros(cat.height, bool)
    counts = {"catalog": {"n_in": cat.height}}
    for name, m in masks.items():
        counts["catalog"][f"removed_{name}"] = int((m & ~removed).sum())
        removed |= m
    kept = cat.filter(pl.Series(~removed))
    counts["catalog"]["n_out"] = kept.height
    if kept.height == 0:
        raise ValueError(
            f"{catalog_url}: every source was removed by the cuts {counts['catalog']} "
            "(see observations.cuts); nothing written"
        )

    asts_out = None
    ast_removed = None
    if ast_url:
        asts = catalogs.read_asts(ast_url, filters)
        amasks = cut_masks(asts, bands, fb, cuts, zero_rate, ast_url)
        ast_removed = np.zeros(asts.height, bool)
        counts["asts"] = {"n_in": asts.height}
        for name, m in amasks.items():
            counts["asts"][f"removed_{name}"] = int((m & ~ast_removed).sum())
            ast_removed |= m
        if catalogs.has_positions(asts) and catalogs.has_positions(kept):
            # only ASTs inside the footprint of the surviving photometry
            hull = geometry.convex_hull(kept["RA"].to_numpy(), kept["DEC"].to_numpy())
            out_hull = ~geometry.points_in_convex(hull, asts["RA"].to_numpy(), asts["DEC"].to_numpy(), tol=1e-12)
            counts["asts"]["removed_outside_footprint"] = int((out_hull & ~ast_removed).sum())
            ast_removed |= out_hull
        if cuts.ast_action == "flag":
            # keep every AST, mark the failures so the noise model sees the selection function
            asts_out = asts.with_columns(
                pl.when(pl.Series(ast_removed)).then(1).otherwise(pl.col("CUT_FLAG")).cast(pl.Int16).alias("CUT_FLAG")
            )
            counts["asts"]["flagged_cut"] = int(ast_removed.sum())
        else:
            asts_out = asts.filter(pl.Series(~ast_removed))
        counts["asts"]["n_out"] = asts_out.height
        if asts_out.height == 0:
            raise ValueError(
                f"{ast_url}: every AST was removed by the cuts {counts['asts']} "
                "(see observations.cuts); nothing written"
            )

    names = plan.Names.of(settings)
    inputs = {"catalog": catalog_url} | ({"asts": ast_url} if ast_url else {})
    prov = make_provenance(
        STAGE, settings.section_hash("compat", "physics", "observations"), inputs=inputs, extra={"counts": counts}
    )
    cat_out = names.catalog_cut()
    ast_out = names.asts_cut() if asts_out is not None else None
    regions = []
    # everything is computed; now write (each file atomically)
    catalogs.write_parquet(kept, cat_out, prov, {"counts": counts})
    if asts_out is not None and ast_out is not None:
        catalogs.write_parquet(asts_out, ast_out, prov, {"counts": counts})
    if cuts.ds9_regions:
        if catalogs.has_positions(cat):
            u = names.cut_region("catalog")
            storage.write_bytes(u, region_text(cat["RA"].to_numpy(), cat["DEC"].to_numpy(), removed).encode())
            regions.append(u)
        if asts_out is not None and ast_removed is not None and catalogs.has_positions(asts):
            u = names.cut_region("asts")
            storage.write_bytes(u, region_text(asts["RA"].to_numpy(), asts["DEC"].to_numpy(), ast_removed).encode())
            regions.append(u)
    log.info("cuts: %s", counts)
    return CutResult(cat_out, ast_out, regions, counts)
