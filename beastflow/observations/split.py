"""Split the cut catalogs by density bin, then by flux (spec observations.md §6).

Stage ``run_split(settings, catalog_url, ast_url, map_url)`` writes
``P_bin{s}_sub{u}.parquet`` (photometry of bin s, sorted by ``sort_col``
ascending = faintest first, chunk u), ``P_asts_bin{s}.parquet`` and, last,
``P_split_manifest.json`` listing every file with its bin, row count and (for
sub-files) the per-band flux range the trimming stage needs.  The manifest is
the authority: a file not in it is not part of the run.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import polars as pl

from beastflow import plan, storage
from beastflow.behaviour import TileLookup
from beastflow.filters import short_names
from beastflow.provenance import make_provenance
from beastflow.settings import Settings
from beastflow.settings.observations import Split

from . import catalogs
from .density import TileGrid, read_map
from .density_bins import lookup_tiles_linear

log = logging.getLogger(__name__)

STAGE = "split"


@dataclass(frozen=True)
class SplitResult:
    manifest_url: str
    subfile_urls: list[str]
    ast_urls: list[str]
    bins: list[int]


def subfile_sizes(n: int, split: Split, empty_trailing: bool) -> list[int]:
    """Row counts of the sub-files of a bin with n sources (spec §6 step 3).

    ``empty_trailing`` keeps BEAST's empty trailing sub-files (n=4, S=3 -> 2, 2, 0); the
    intended behaviour drops them.
    """
    by_size = math.ceil(n / split.n_per_file)
    if split.min_n_subfile is None or by_size >= split.min_n_subfile:
        n_sub, per = by_size, split.n_per_file
    else:
        n_sub = split.min_n_subfile
        per = math.ceil(n / n_sub)
    sizes = [max(0, min(per, n - k * per)) for k in range(n_sub)]
    return sizes if empty_trailing else [s for s in sizes if s > 0]


def sort_order(cat: pl.DataFrame, sort_col: str) -> np.ndarray:
    """Row order: density bin, then ``sort_col`` ascending (faintest first), ties by star_id.

    Two stable numpy sorts (flux, then the small-integer bin, which numpy
    radix-sorts) beat a three-key frame sort by 2-3x on 10^7 rows; NaN fluxes
    go last within their bin.
    """
    ids = cat[catalogs.ID_COL].to_numpy()
    base = np.arange(cat.height) if (ids.size < 2 or (np.diff(ids) > 0).all()) else np.argsort(ids, kind="stable")
    flux = cat[sort_col].cast(pl.Float64).to_numpy()[base]
    o = base[np.argsort(flux, kind="stable")]
    b = cat["sd_bin"].to_numpy()[o]
    return o[np.argsort(b, kind="stable")]


def tile_bin_lookup(
    ra: np.ndarray,
    dec: np.ndarray,
    grid: TileGrid,
    tile_bins: np.ndarray,
    lookup: TileLookup,
    dec_clamped_with_ra_limits: bool = False,
) -> np.ndarray:
    """Density bin at positions: LINEAR = BEAST's linear RA/Dec lookup (with its Dec
    clamp BUG? if asked); TAN = the same tile assignment the density map used
    (nearest tile off the grid)."""
    if lookup is TileLookup.LINEAR:
        i, j = lookup_tiles_linear(ra, dec, grid.ra_grid, grid.dec_grid, dec_clamped_with_ra_limits)
    else:
        x, y = grid.map_coords(ra, dec)
        i = np.clip(np.ceil(x).astype(np.int64) - 1, 0, grid.n_x - 1)
        j = np.clip(np.ceil(y).astype(np.int64) - 1, 0, grid.n_y - 1)
    return tile_bins[i * grid.n_y + j]


def rows_hash(part: pl.DataFrame) -> str:
    """SHA-256 of a sub-file's rows (columns, order, values): what downstream stages read."""
    import hashlib
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(part.to_arrow(), buf, compression="none", write_statistics=False, store_schema=False)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _unchanged(url: str, meta: dict) -> bool:
    """The file at ``url`` was written by split with these very rows and the same metadata."""
    if not storage.exists(url):
        return False
    try:
        _, old = catalogs.read_parquet_metadata(url)
    except (OSError, ValueError, KeyError):  # unreadable or foreign file: rewrite it
        return False
    return old == storage.portable(meta)


def _frozen_edges(man_url: str, sort_col: str, bin_edges, bins: np.ndarray) -> dict[str, list[float]] | None:
    """Flux edges of the previous split when it can be reused: same sort column, same density-bin
    edges, and every bin of this catalog already split.  None = split by n_per_file."""
    if not storage.exists(man_url):
        return None
    try:
        old = storage.read_json(man_url)
    except (OSError, ValueError):
        return None
    fe = old.get("flux_edges")
    if (
        not isinstance(fe, dict)
        or old.get("sort_col") != sort_col
        or old.get("density_bin_edges") != bin_edges
        or any(str(int(b)) not in fe for b in bins)
    ):
        log.info("split: density bins or sort column changed (or no recorded edges): splitting anew")
        return None
    return {k: [float(x) for x in v] for k, v in fe.items()}


def run_split(settings: Settings, catalog_url: str, ast_url: str | None, map_url: str) -> SplitResult:
    sp = settings.observations.split
    beh = settings.resolved_behaviour.observations
    filters = settings.physics.filters
    bands = short_names(filters)
    tiles, grid, meta = read_map(map_url)
    tile_bins = tiles.sort(["i_ra", "i_dec"])["sd_bin"].to_numpy()

    cat = catalogs.read_photometry(catalog_url, filters)
    if sp.sort_col.upper() not in cat.columns:
        raise ValueError(f"observations.split.sort_col = {sp.sort_col!r}: no such column in {catalog_url}")
    sort_col = sp.sort_col.upper()
    if beh.source_bin_lookup is TileLookup.LINEAR or "sd_bin" not in cat.columns:
        if not catalogs.has_positions(cat):
            raise ValueError(f"{catalog_url}: no sd_bin column and no RA/DEC to find the density bins")
        sbin = tile_bin_lookup(
            cat["RA"].to_numpy(),
            cat["DEC"].to_numpy(),
            grid,
            tile_bins,
            beh.source_bin_lookup,
            beh.dec_clamped_with_ra_limits,
        )
        cat = cat.with_columns(pl.Series("sd_bin", sbin.astype(np.int64)))

    asts = None
    ast_mode = None
    if ast_url:
        asts = catalogs.read_asts(ast_url, filters)
        if catalogs.has_positions(asts):
            ab = tile_bin_lookup(
                asts["RA"].to_numpy(),
                asts["DEC"].to_numpy(),
                grid,
                tile_bins,
                beh.ast_bin_lookup,
                beh.dec_clamped_with_ra_limits,
            )
            asts = asts.with_columns(pl.Series("sd_bin", ab.astype(np.int64)))
            ast_mode = "positions"
        elif sp.asts_without_positions == "error":
            raise ValueError(
                f"{ast_url}: ASTs have no RA/DEC columns, so they cannot be split by density bin "
                "(observations.split.asts_without_positions = 'error')"
            )
        else:
            ast_mode = "all_bins"

    cat = cat.gather(sort_order(cat, sort_col))
    bins_col = cat["sd_bin"].to_numpy()
    bins, starts = np.unique(bins_col, return_index=True)
    ends = np.append(starts[1:], len(bins_col))

    names = plan.Names.of(settings)
    man_url = names.split_manifest()
    frozen = None if beh.always_resplit or sp.resplit else _frozen_edges(man_url, sort_col, meta.get("edges"), bins)
    prov = make_provenance(
        STAGE,
        settings.section_hash("compat", "physics", "observations"),
        inputs={"catalog": catalog_url, "map": map_url} | ({"asts": ast_url} if ast_url else {}),
    )
    jobs: list[tuple[str, pl.DataFrame, dict]] = []
    edges_out: dict[str, list[float]] = {}
    for b, s0, s1 in zip(bins.tolist(), starts.tolist(), ends.tolist()):
        off = s0
        if frozen is not None:
            # the previous run's flux edges: each star goes to the sub-file its flux falls in
            edges = frozen[str(b)]
            vals = cat[sort_col].to_numpy()[s0:s1]
            sizes = np.diff(np.searchsorted(vals, edges, side="left"), prepend=0, append=s1 - s0).tolist()
        else:
            sizes = subfile_sizes(s1 - s0, sp, beh.empty_trailing_subfiles)
            # lower flux edge of every sub-file but the first (rows are sorted by sort_col)
            cuts = np.cumsum(sizes)[:-1]
            vals = cat[sort_col].to_numpy()[s0:s1]
            edges = [float(vals[c]) for c in cuts.tolist() if c < len(vals)]
        edges_out[str(b)] = [float(e) for e in edges]
        for u, size in enumerate(sizes):
            part = cat.slice(off, size)
            off += size
            url = names.subfile(b, u)
            where = f"{catalog_url} (stars of sub-file bin{b}_sub{u}), column"
            entry = {
                "bin": int(b),
                "sub": u,
                "url": url,
                "n_rows": size,
                "flux_range": {
                    bd: (
                        [
                            catalogs.column_float(part[f"{bd}_RATE"].min(), f"{where} {bd}_RATE"),
                            catalogs.column_float(part[f"{bd}_RATE"].max(), f"{where} {bd}_RATE"),
                        ]
                        if size
                        else None
                    )
                    for bd in bands
                },
            }
            jobs.append((url, part, entry))
    ast_jobs: list[tuple[str, pl.DataFrame, dict]] = []
    bins_without_asts: list[int] = []
    if asts is not None:
        for b in bins.tolist():
            part = (
                asts.filter(pl.col("sd_bin") == b)
                if ast_mode == "positions"
                else asts.with_columns(pl.lit(b, dtype=pl.Int64).alias("sd_bin"))
            )
            if part.height == 0:
                bins_without_asts.append(int(b))
                continue
            url = names.bin_asts(b)
            ast_jobs.append((url, part, {"bin": int(b), "url": url, "n_rows": part.height}))
        if bins_without_asts:
            log.warning("density bins %s hold stars but no ASTs: their noise model cannot be built", bins_without_asts)

    # a manifest from an earlier run must not describe files this run rewrites
    storage.remove(man_url)
    # Parquet encoding releases the GIL: write the (many, small) files from a few threads
    from concurrent.futures import ThreadPoolExecutor

    def write(job):
        url, part, entry = job
        entry["rows_sha256"] = rows_hash(part)
        meta = {k: v for k, v in entry.items() if k != "url"}
        if _unchanged(url, meta):
            # same rows as the file already there: keep it byte for byte, so the noise models, trims
            # and fits keyed on it stay cached when other rows of the catalog change (issue 18 item 3);
            # its provenance names the catalog version that first produced these rows
            return url
        return catalogs.write_parquet(part, url, prov, meta)

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(write, jobs + ast_jobs))
    manifest = {
        "format": "beastflow-split-manifest",
        "format_version": 1,
        "catalog": catalog_url,
        "asts_source": ast_url,
        "map": map_url,
        "sort_col": sort_col,
        "n_catalog_rows": cat.height,
        "n_ast_rows": None if asts is None else asts.height,
        "asts_assignment": ast_mode,
        "bins": [int(b) for b in bins],
        "bins_without_asts": bins_without_asts,
        "subfiles": [e for _, _, e in jobs],
        "asts": [e for _, _, e in ast_jobs],
        # frozen split: the next run reuses these while the density bins stay the same
        "flux_edges": edges_out,
        "density_bin_edges": meta.get("edges"),
        "frozen": frozen is not None,
        "provenance": prov,
    }
    # file names relative to the output root: the manifest stays valid in a copied run folder
    storage.write_json(man_url, storage.portable(manifest))
    return SplitResult(man_url, [u for u, _, _ in jobs], [u for u, _, _ in ast_jobs], [int(b) for b in bins])
