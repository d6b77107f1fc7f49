"""Plane geometry for footprints: convex hulls, clipping, erosion, membership.

BEAST uses shapely/matplotlib polygons; beastflow needs only a few operations
and does them in numpy: convex polygons are intersections of half-planes, so
clipping (Sutherland-Hodgman) and erosion (shift every edge inward) are exact.
A general (possibly non-convex) boundary polygon is eroded implicitly: a point
is inside the eroded polygon when it is inside and at least ``e`` from every
edge, which is exactly the definition of a negative buffer.
"""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path


def polygon_area(poly: np.ndarray) -> float:
    """Signed shoelace area (positive when counter-clockwise)."""
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def convex_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Counter-clockwise hull vertices [k, 2] (not closed); error if degenerate."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
    pts = np.unique(pts, axis=0) if len(pts) < 64 else pts
    if len(pts) > 50_000:
        pts = _akl_toussaint(pts)
    if len(pts) < 3:
        raise ValueError(f"footprint needs at least 3 distinct positions, got {len(pts)}")
    try:
        hull = ConvexHull(pts)
    except QhullError as exc:
        raise ValueError(f"footprint positions are collinear; no convex hull ({str(exc).splitlines()[0]})") from None
    v = pts[hull.vertices]  # counter-clockwise for 2-D input
    if polygon_area(v) < 0:
        v = v[::-1]
    return v


def _akl_toussaint(pts: np.ndarray) -> np.ndarray:
    """Drop points strictly inside the octagon of the extreme points (exact hull filter).

    Every point strictly inside a convex polygon whose vertices are input
    points cannot be a hull vertex; on big catalogs this leaves only the few
    points near the edge for qhull.
    """
    x, y = pts[:, 0], pts[:, 1]
    idx = [
        np.argmin(x),
        np.argmin(x + y),
        np.argmin(y),
        np.argmax(x - y),
        np.argmax(x),
        np.argmax(x + y),
        np.argmax(y),
        np.argmin(x - y),
    ]
    poly = pts[np.array(idx)]
    # remove repeated consecutive vertices, keep counter-clockwise order
    keep = [0] + [i for i in range(1, len(poly)) if not np.array_equal(poly[i], poly[i - 1])]
    poly = poly[keep]
    if len(poly) > 1 and np.array_equal(poly[0], poly[-1]):
        poly = poly[:-1]
    if len(poly) < 3 or polygon_area(poly) <= 0:
        return pts
    strictly = np.ones(len(pts), bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        strictly &= (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) > 0
    return pts[~strictly]


def points_in_convex(poly: np.ndarray, x: np.ndarray, y: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """Inside-or-on-boundary test against a CCW convex polygon (vectorised)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    inside = np.ones(x.shape, bool)
    if len(poly) < 3:
        return np.zeros(x.shape, bool)
    scale = max(np.ptp(poly[:, 0]), np.ptp(poly[:, 1]), 1e-300)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        # cross((p1 - p0), (p - p0)) >= 0 for points left of (inside) a CCW edge
        cross = (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)
        inside &= cross >= -tol * scale * np.hypot(x1 - x0, y1 - y0)
    return inside


def clip_halfplane(poly: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Part of ``poly`` where a*x + b*y + c >= 0 (one Sutherland-Hodgman step)."""
    if len(poly) == 0:
        return poly
    out = []
    n = len(poly)
    vals = a * poly[:, 0] + b * poly[:, 1] + c
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        vp, vq = vals[i], vals[(i + 1) % n]
        if vp >= 0:
            out.append(p)
        if (vp >= 0) != (vq >= 0):
            t = vp / (vp - vq)
            out.append(p + t * (q - p))
    return np.array(out).reshape(-1, 2)


def clip_convex(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Intersection of ``subject`` with the CCW convex polygon ``clip``."""
    out = np.asarray(subject, float)
    for (x0, y0), (x1, y1) in zip(clip, np.roll(clip, -1, axis=0)):
        # inside = left of the edge: (x1-x0)(y-y0) - (y1-y0)(x-x0) >= 0
        a, b = -(y1 - y0), (x1 - x0)
        out = clip_halfplane(out, a, b, -(a * x0 + b * y0))
        if len(out) == 0:
            break
    return out


def erode_convex(poly: np.ndarray, e: float) -> np.ndarray:
    """Negative buffer of a CCW convex polygon by ``e`` (may become empty)."""
    if e <= 0:
        return poly
    out = np.asarray(poly, float)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        a, b = -(y1 - y0), (x1 - x0)
        norm = np.hypot(a, b)
        if norm == 0:
            continue
        out = clip_halfplane(out, a, b, -(a * x0 + b * y0) - e * norm)
        if len(out) == 0:
            break
    return out


def _dist_to_edges(poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = np.full(np.shape(x), np.inf)
    for p, q in zip(poly, np.roll(poly, -1, axis=0)):
        dx, dy = q - p
        L2 = dx * dx + dy * dy
        t = np.clip(((x - p[0]) * dx + (y - p[1]) * dy) / L2, 0, 1) if L2 > 0 else 0.0
        d = np.minimum(d, np.hypot(x - (p[0] + t * dx), y - (p[1] + t * dy)))
    return d


def points_in_polygon(poly: np.ndarray, x: np.ndarray, y: np.ndarray, erode: float = 0.0) -> np.ndarray:
    """Membership in a general simple polygon, optionally eroded by ``erode``."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    inside = Path(poly).contains_points(np.column_stack([x.ravel(), y.ravel()])).reshape(x.shape)
    if erode > 0 and inside.any():
        inside[inside] = _dist_to_edges(poly, x[inside], y[inside]) >= erode
    return inside


def box_polygon(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def box_overlaps_region(x0: float, x1: float, y0: float, y1: float, inside, n: int = 9) -> bool:
    """Does a box meet a region given by a membership function? (n x n sample test)

    Used for non-convex (eroded) boundaries, where an exact intersection needs
    polygon offsetting; the tile pruning only has to avoid bins with no usable
    area, and rejection sampling enforces the exact region afterwards.
    """
    gx, gy = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    return bool(inside(gx.ravel(), gy.ravel()).any())
