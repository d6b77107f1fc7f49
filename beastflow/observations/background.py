"""Background variant of the density map (spec observations.md §3).

For every source: the sum of the reference-image pixels in an annulus
(mask_radius .. mask_radius + ann_width pixels) that are not masked, where the
mask is the union of mask_radius circles around all sources plus NaN pixels.
Pixels belong to a circle/annulus when their centre does (BEAST uses exact
photutils aperture overlaps; the difference is sub-pixel edge weighting).

BEAST divides the masked sum by the full geometric annulus area (QUIRK:
crowded sources get lower values); the intended behaviour divides by the area
actually used, i.e. the mean unmasked sky.  The tile value is the median of
the individual backgrounds of the sources in the tile.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True)
def _stamp_mask(mask, xs, ys, r):  # pragma: no cover - compiled
    ny, nx = mask.shape
    r2 = r * r
    for k in range(xs.size):
        x0, y0 = xs[k], ys[k]
        for j in range(max(0, int(math.floor(y0 - r))), min(ny, int(math.ceil(y0 + r)) + 1)):
            dy = j - y0
            for i in range(max(0, int(math.floor(x0 - r))), min(nx, int(math.ceil(x0 + r)) + 1)):
                dx = i - x0
                if dx * dx + dy * dy <= r2:
                    mask[j, i] = True


@numba.njit(cache=True)
def _annulus_sums(img, mask, xs, ys, r_in, r_out):  # pragma: no cover - compiled
    ny, nx = img.shape
    sums = np.zeros(xs.size)
    npix = np.zeros(xs.size, np.int64)
    a2, b2 = r_in * r_in, r_out * r_out
    for k in range(xs.size):
        x0, y0 = xs[k], ys[k]
        s = 0.0
        n = 0
        for j in range(max(0, int(math.floor(y0 - r_out))), min(ny, int(math.ceil(y0 + r_out)) + 1)):
            dy = j - y0
            for i in range(max(0, int(math.floor(x0 - r_out))), min(nx, int(math.ceil(x0 + r_out)) + 1)):
                dx = i - x0
                d2 = dx * dx + dy * dy
                if d2 > a2 and d2 <= b2 and not mask[j, i]:
                    s += img[j, i]
                    n += 1
        sums[k] = s
        npix[k] = n
    return sums, npix


def individual_backgrounds(
    img: np.ndarray, x: np.ndarray, y: np.ndarray, mask_radius: float, ann_width: float, annulus_area: bool
) -> np.ndarray:
    """Per-source background; x, y are 0-based pixel coordinates of the image.

    ``annulus_area``: BEAST's masked sum / full annulus area (QUIRK) instead of the unmasked mean.
    """
    img = np.asarray(img, float)
    mask = ~np.isfinite(img)
    _stamp_mask(mask, np.asarray(x, float), np.asarray(y, float), float(mask_radius))
    sums, npix = _annulus_sums(
        np.where(mask, 0.0, img),
        mask,
        np.asarray(x, float),
        np.asarray(y, float),
        float(mask_radius),
        float(mask_radius + ann_width),
    )
    if annulus_area:
        area = math.pi * ((mask_radius + ann_width) ** 2 - mask_radius**2)
        return sums / area
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(npix > 0, sums / np.maximum(npix, 1), 0.0)


def tile_medians(values: np.ndarray, tile: np.ndarray, n_tiles: int) -> np.ndarray:
    """Median of the values per tile (0 where a tile holds no source); tile < 0 = none."""
    ok = tile >= 0
    t, v = tile[ok], values[ok]
    order = np.lexsort((v, t))
    t, v = t[order], v[order]
    out = np.zeros(n_tiles)
    if t.size == 0:
        return out
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    ends = np.r_[starts[1:], t.size]
    for s, e in zip(starts, ends):
        out[t[s]] = np.median(v[s:e])
    return out
