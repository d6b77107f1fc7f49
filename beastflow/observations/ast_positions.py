"""Where to put the artificial stars (spec asts.md, "positions"): the region ASTs may
go in, the density-bin / pixel-distribution / annulus schemes, and pixel positions in
a reference image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from beastflow import storage
from beastflow.settings.asts import ASTs

from . import catalogs, geometry

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
        # arcsec offsets on the tangent plane at the catalog centre (for the edge test);
        # pixel_scale converts the radii
        dec0 = catalogs.column_float(catalog["DEC"].mean(), "catalog column DEC")
        ra0 = catalogs.column_float(catalog["RA"].mean(), "catalog column RA")
        plane = tangent_plane(ra0, dec0)
        x, y = plane.wcs_world2pix(catalog["RA"].to_numpy(), catalog["DEC"].to_numpy(), 0)
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
        # on the sphere: r arcsec from the star, in the direction th (east of the x axis = east)
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        host = SkyCoord(catalog["RA"].to_numpy()[keep][star] * u.deg, catalog["DEC"].to_numpy()[keep][star] * u.deg)
        pos = host.directional_offset_by((0.5 * np.pi - th) * u.rad, r * u.arcsec)
        return {"entry": np.arange(entries), "RA": pos.ra.deg, "DEC": pos.dec.deg}
    return {"entry": np.arange(entries), "X": px, "Y": py}


def tangent_plane(ra0: float, dec0: float):
    """Gnomonic (TAN) projection at (ra0, dec0) in arcsec: x east, y north, 0 at the centre.

    Offsets on it are angles on the sky at any declination, where the flat
    (RA - ra0) cos(dec0) is off by up to (distance from dec0) x tan(dec) in RA.
    """
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [1.0, 1.0]  # FITS pixel 1 = 0-based pixel 0 = the centre
    w.wcs.cdelt = [1.0 / 3600.0, 1.0 / 3600.0]
    return w


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
