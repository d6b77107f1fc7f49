"""Source-density (or background) map and the annotated catalog.

Stage ``run_density_map(settings, catalog_url)`` (docs/stages.md) writes

- ``P_sourceden_map.parquet``: one row per tile (``i_ra`` major, ``i_dec``
  fastest, as BEAST's tile table) with ``value`` (sources / arcsec^2, or the
  background), the tile's RA/Dec box, counts, footprint fraction and ``sd_bin``;
  the grid edges, the TAN WCS and the bin edges are in the file metadata;
- ``P_sourceden_map.fits``: the same values as an image [n_dec, n_ra] with WCS;
- ``P_catalog_sd.parquet``: the normalised catalog + ``SourceDensity``,
  ``sd_bin`` and ``sd_tile`` (flat tile index, -1 = none).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from beastflow import plan, storage
from beastflow.behaviour import ObservationsBehaviour, TileLookup
from beastflow.provenance import make_provenance
from beastflow.settings import Settings
from beastflow.settings.observations import SourceDensity

from . import catalogs, geometry
from .density_bins import assign_bins, bin_edges, lookup_tiles_linear

log = logging.getLogger(__name__)

STAGE = "density_map"


@dataclass(frozen=True)
class DensityMapResult:
    map_url: str
    image_url: str
    catalog_url: str
    n_sources: int
    n_tiles: int
    mag_cut: tuple[float, float]
    bins: list[int]


@dataclass
class TileGrid:
    """Tile edges and the TAN WCS of the map (spec §2.1 step 2-3)."""

    ra_grid: np.ndarray
    dec_grid: np.ndarray
    crval: tuple[float, float]
    crpix: tuple[float, float]
    cdelt: tuple[float, float]

    @property
    def n_x(self) -> int:
        return len(self.ra_grid) - 1

    @property
    def n_y(self) -> int:
        return len(self.dec_grid) - 1

    def wcs(self):
        from astropy.wcs import WCS

        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = list(self.crval)
        w.wcs.crpix = list(self.crpix)
        w.wcs.cdelt = list(self.cdelt)
        return w

    def map_coords(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous map coordinates: tile (i, j) covers x in (i, i+1], y in (j, j+1]."""
        x, y = self.wcs().wcs_world2pix(np.asarray(ra, float), np.asarray(dec, float), 1)
        return x - 0.5, y - 0.5

    def meta(self) -> dict[str, Any]:
        return {
            "ra_grid": self.ra_grid.tolist(),
            "dec_grid": self.dec_grid.tolist(),
            "wcs": {
                "ctype": ["RA---TAN", "DEC--TAN"],
                "crval": list(self.crval),
                "crpix": list(self.crpix),
                "cdelt": list(self.cdelt),
            },
        }

    @classmethod
    def from_meta(cls, m: dict[str, Any]) -> TileGrid:
        w = m["wcs"]
        return cls(
            np.asarray(m["ra_grid"], float),
            np.asarray(m["dec_grid"], float),
            tuple(w["crval"]),
            tuple(w["crpix"]),
            tuple(w["cdelt"]),
        )


def make_tile_grid(ra: np.ndarray, dec: np.ndarray, pixsize: float) -> TileGrid:
    ra_min, ra_max = float(ra.min()), float(ra.max())
    dec_min, dec_max = float(dec.min()), float(dec.max())
    ddec = pixsize / 3600.0
    dra = ddec / math.cos(math.radians(0.5 * (dec_min + dec_max)))
    n_x = max(1, math.ceil((ra_max - ra_min) / dra))
    n_y = max(1, math.ceil((dec_max - dec_min) / ddec))
    ra_grid = ra_min + dra * np.arange(n_x + 1)
    dec_grid = dec_min + ddec * np.arange(n_y + 1)
    ra_c = 0.5 * (ra_grid[0] + ra_grid[-1])
    dec_c = 0.5 * (dec_grid[0] + dec_grid[-1])
    return TileGrid(
        ra_grid, dec_grid, (ra_c, dec_c), (n_x / 2 + 0.5, n_y / 2 + 0.5), (dra * math.cos(math.radians(dec_c)), ddec)
    )


def magnitude_cut(mags: np.ndarray, sd: SourceDensity) -> tuple[float, float, dict[str, Any]]:
    """[bright, faint] counted range: given, or [bright, peak - offset] (spec §2.3)."""
    if sd.mag_cut is not None:
        return float(sd.mag_cut[0]), float(sd.mag_cut[1]), {"mag_cut_source": "settings"}
    m = mags[np.isfinite(mags) & (mags < 90)]
    if m.size == 0:
        raise ValueError(
            f"observations.source_density: no {sd.ref_band}_VEGA value below 90 to find the "
            "magnitude-histogram peak; set observations.source_density.mag_cut"
        )
    n_bins = max(1, min(m.size // sd.stars_per_hist_bin, sd.max_hist_bins))
    counts, edges = np.histogram(m, bins=n_bins)
    k = int(np.argmax(counts))  # first bin on ties
    peak = 0.5 * (edges[k] + edges[k + 1])
    return (
        sd.mag_cut_bright,
        float(peak - sd.peak_offset),
        {"mag_cut_source": "histogram_peak", "hist_peak": float(peak), "hist_bins": n_bins},
    )


def footprint_fraction(hull: np.ndarray, n_x: int, n_y: int) -> np.ndarray:
    """Area of (unit tile ∩ hull) per tile [n_x, n_y], in map-pixel units."""
    frac = np.zeros((n_x, n_y))
    cx, cy = np.meshgrid(np.arange(n_x + 1, dtype=float), np.arange(n_y + 1, dtype=float), indexing="ij")
    cin = geometry.points_in_convex(hull, cx, cy)
    full = cin[:-1, :-1] & cin[1:, :-1] & cin[:-1, 1:] & cin[1:, 1:]
    frac[full] = 1.0  # a convex set holding the 4 corners holds the square
    hx0, hy0 = hull.min(axis=0)
    hx1, hy1 = hull.max(axis=0)
    for i, j in zip(*np.nonzero(~full)):
        if i + 1 < hx0 or i > hx1 or j + 1 < hy0 or j > hy1:
            continue
        part = geometry.clip_convex(geometry.box_polygon(i, i + 1, j, j + 1), hull)
        frac[i, j] = abs(geometry.polygon_area(part)) if len(part) >= 3 else 0.0
    return frac


def compute_density_map(
    df: pl.DataFrame, sd: SourceDensity, lower_edge_no_tile: bool = False
) -> tuple[dict[str, np.ndarray], TileGrid, dict[str, Any], dict[str, np.ndarray]]:
    """Tile values and per-source annotation for a normalised catalog.

    ``lower_edge_no_tile``: ``ObservationsBehaviour.lower_edge_no_tile`` (BEAST QUIRK).
    """
    if not catalogs.has_positions(df):
        raise ValueError("the source-density map needs RA and DEC columns in the catalog")
    ra = df["RA"].to_numpy()
    dec = df["DEC"].to_numpy()
    ref = sd.ref_band.upper()
    for col in (f"{ref}_VEGA",) + ((f"{ref}_FLAG",) if sd.use_flag else ()):
        if col not in df.columns:
            raise ValueError(f"observations.source_density.ref_band = {sd.ref_band!r}: catalog has no column {col}")
    mags = df[f"{ref}_VEGA"].cast(pl.Float64).to_numpy()
    lo, hi, cut_info = magnitude_cut(mags, sd)

    grid = make_tile_grid(ra, dec, sd.pixsize)
    n_x, n_y = grid.n_x, grid.n_y
    x, y = grid.map_coords(ra, dec)
    i = np.ceil(x).astype(np.int64) - 1
    j = np.ceil(y).astype(np.int64) - 1
    if lower_edge_no_tile:
        # QUIRK: a source at (or, through the projection, just outside) the
        # lower/upper grid edge belongs to no tile and keeps density 0
        ok = (i >= 0) & (i < n_x) & (j >= 0) & (j < n_y)
    else:
        # every source belongs to the nearest tile
        i = np.clip(i, 0, n_x - 1)
        j = np.clip(j, 0, n_y - 1)
        ok = np.ones(i.shape, bool)
    tile = np.where(ok, i * n_y + j, -1)

    counted = ok & (mags >= lo) & (mags <= hi)
    if sd.use_flag:
        counted &= df[f"{ref}_FLAG"].to_numpy() < 99
    n_tiles = n_x * n_y
    n_src = np.bincount(tile[ok], minlength=n_tiles)
    n_cnt = np.bincount(tile[counted], minlength=n_tiles)

    hull = geometry.convex_hull(x, y)
    frac = footprint_fraction(hull, n_x, n_y).ravel()
    a_pix = grid.cdelt[0] * grid.cdelt[1] * 3600.0**2
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where((n_cnt > 0) & (frac > 0.5), n_cnt / (a_pix * frac), 0.0)

    ii, jj = np.divmod(np.arange(n_tiles), n_y)
    tiles = {
        "i_ra": ii,
        "i_dec": jj,
        "value": value,
        "min_ra": grid.ra_grid[ii],
        "max_ra": grid.ra_grid[ii + 1],
        "min_dec": grid.dec_grid[jj],
        "max_dec": grid.dec_grid[jj + 1],
        "n_sources": n_src,
        "n_counted": n_cnt,
        "footprint_frac": frac,
    }
    src_density = np.where(ok, value[np.maximum(tile, 0)], 0.0)
    info = {
        "mag_cut": [lo, hi],
        **cut_info,
        "pixsize_arcsec": sd.pixsize,
        "ref_band": ref,
        "tile_area_arcsec2": a_pix,
        "n_x": n_x,
        "n_y": n_y,
    }
    return tiles, grid, info, {"SourceDensity": src_density, "sd_tile": tile}


def bin_map(
    tiles: dict[str, np.ndarray], sd: SourceDensity, width_extra_bin: bool
) -> tuple[np.ndarray | None, np.ndarray]:
    edges = bin_edges(tiles["value"], sd)
    return edges, assign_bins(tiles["value"], edges, sd, width_extra_bin)


def source_bins(
    df_ra: np.ndarray,
    df_dec: np.ndarray,
    sd_tile: np.ndarray,
    tile_bins: np.ndarray,
    grid: TileGrid,
    behaviour: ObservationsBehaviour,
) -> np.ndarray:
    """Density bin of every source.

    Intended: the bin of the tile whose density the source received (the TAN
    assignment), so density and bin always agree.  ``source_bin_lookup`` LINEAR:
    BEAST's split looks the tile up linearly in RA/Dec (QUIRK), with
    ``dec_clamped_with_ra_limits`` its Dec clamp BUG?.
    """
    if behaviour.source_bin_lookup is TileLookup.LINEAR:
        i, j = lookup_tiles_linear(df_ra, df_dec, grid.ra_grid, grid.dec_grid, behaviour.dec_clamped_with_ra_limits)
        return tile_bins[i * grid.n_y + j]
    return tile_bins[sd_tile]


def background_values(
    df: pl.DataFrame, sd: SourceDensity, tile: np.ndarray, n_tiles: int, annulus_area: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(individual background per source, median per tile) from the reference image."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from .background import individual_backgrounds, tile_medians

    url = sd.reference_image
    if not url:
        raise ValueError(
            "observations.source_density.kind = 'background' needs observations.source_density.reference_image"
        )
    with storage.local_copy_for_read(url) as local, fits.open(local) as h:
        try:
            hdu = h[sd.reference_hdu]
        except (KeyError, IndexError):
            raise ValueError(
                f"{url}: no extension {sd.reference_hdu!r} (observations.source_density.reference_hdu)"
            ) from None
        img = np.asarray(hdu.data, float)
        wcs = WCS(hdu.header)
    if img.ndim != 2 or not wcs.has_celestial:
        raise ValueError(f"{url}[{sd.reference_hdu}]: need a 2-D image with a celestial WCS")
    x, y = wcs.all_world2pix(df["RA"].to_numpy(), df["DEC"].to_numpy(), 0)
    indiv = individual_backgrounds(img, x, y, sd.mask_radius, sd.ann_width, annulus_area)
    return indiv, tile_medians(indiv, tile, n_tiles)


def _fits_image(values: np.ndarray, grid: TileGrid, provenance: dict[str, Any]) -> bytes:
    from astropy.io import fits

    img = values.reshape(grid.n_x, grid.n_y).T  # [n_dec, n_ra] as BEAST's image
    hdr = grid.wcs().to_header()
    hdr["BUNIT"] = "arcsec-2"
    hdu = fits.PrimaryHDU(img, header=hdr)
    hdu.header["BF_STAGE"] = STAGE
    hdu.header["BF_SETH"] = provenance["settings_hash"][:16]
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def run_density_map(settings: Settings, catalog_url: str | None = None) -> DensityMapResult:
    """Stage: density map + annotated catalog (see module docstring)."""
    sd = settings.observations.source_density
    beh = settings.resolved_behaviour.observations
    url = catalog_url or settings.observations.catalog
    if not url:
        raise ValueError("no photometry catalog: pass one or set observations.catalog")
    if sd.kind == "background" and not sd.reference_image:
        raise ValueError(
            "observations.source_density.kind = 'background' needs observations.source_density.reference_image"
        )
    df = catalogs.read_photometry(url, settings.physics.filters)
    tiles, grid, info, annot = compute_density_map(df, sd, beh.lower_edge_no_tile)
    inputs = {"catalog": url}
    extra_cols: dict[str, np.ndarray] = {}
    if sd.kind == "background" and sd.reference_image:  # always set for "background" (checked above)
        inputs["reference_image"] = sd.reference_image
        indiv, med = background_values(df, sd, annot["sd_tile"], grid.n_x * grid.n_y, beh.annulus_area_background)
        tiles["value"] = med
        extra_cols = {
            "indiv_bg": indiv,
            "bin_median_bg": np.where(annot["sd_tile"] >= 0, med[np.maximum(annot["sd_tile"], 0)], 0.0),
        }
        info["background"] = {"mask_radius": sd.mask_radius, "ann_width": sd.ann_width}
    edges, tile_bins = bin_map(tiles, sd, beh.width_extra_bin)
    tiles["sd_bin"] = tile_bins
    sbin = source_bins(df["RA"].to_numpy(), df["DEC"].to_numpy(), np.maximum(annot["sd_tile"], 0), tile_bins, grid, beh)

    prov = make_provenance(
        STAGE, settings.section_hash("compat", "physics", "observations"), inputs=inputs, extra={"info": info}
    )
    meta = {
        **grid.meta(),
        **info,
        "edges": None if edges is None else edges.tolist(),
        "binmode": sd.binmode,
        "kind": sd.kind,
        "compat": settings.compat,
    }
    names = plan.Names.of(settings)
    map_url, img_url, cat_url = names.density_map(), names.density_image(), names.catalog_sd()
    value_cols = (
        [pl.Series(k, v) for k, v in extra_cols.items()]
        if sd.kind == "background"
        else [pl.Series("SourceDensity", annot["SourceDensity"])]
    )
    out = df.with_columns(
        *value_cols, pl.Series("sd_bin", sbin.astype(np.int64)), pl.Series("sd_tile", annot["sd_tile"].astype(np.int64))
    )
    tile_df = pl.DataFrame({k: np.asarray(v) for k, v in tiles.items()})
    catalogs.write_parquet(tile_df, map_url, prov, meta)
    storage.write_bytes(img_url, _fits_image(tiles["value"], grid, prov))
    catalogs.write_parquet(out, cat_url, prov, {"map": map_url})
    bins = np.unique(sbin).tolist()
    log.info(
        "density map: %d sources, %d x %d tiles, mag cut %.2f-%.2f, bins %s",
        df.height,
        grid.n_x,
        grid.n_y,
        info["mag_cut"][0],
        info["mag_cut"][1],
        bins,
    )
    return DensityMapResult(
        map_url, img_url, cat_url, df.height, grid.n_x * grid.n_y, (info["mag_cut"][0], info["mag_cut"][1]), bins
    )


def read_map(map_url: str) -> tuple[pl.DataFrame, TileGrid, dict[str, Any]]:
    """The tile table, its grid/WCS and the metadata (edges, mag cut, ...)."""
    tiles = catalogs.read_parquet(map_url)
    _, meta = catalogs.read_parquet_metadata(map_url)
    if "ra_grid" not in meta:
        raise ValueError(f"{map_url}: not a beastflow density map (no grid metadata)")
    return tiles, TileGrid.from_meta(meta), meta
