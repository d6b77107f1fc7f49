"""Are the posteriors calibrated?  Fitted percentiles against known true values.

For a correct model the truth falls below the posterior median for half of the
stars (median of z = (p50 - truth)/sigma is 0) and inside p16-p84 for 68 % of
them, averaged over the stars of a field drawn from the prior.

Grid parameters are discrete: a synthetic field drawn from the grid has every
true A(V) and log age exactly on a grid value, the centre of its PDF bin, while
the posterior summary treats the bin as an interval (each grid value stands
for the cell around it).  A truth at the cell centre is inside p16-p84 more
often than 68 % even for a perfect fit.  The calibrated comparison is the
randomised PIT (Czado, Gneiting & Held 2009, Biometrics 65, 1254): the truth is
replaced by a uniform draw inside its cell, from a stream keyed by the
quantity's name, so the number is reproducible.  ``recovery_metrics`` does
this when it is given the PDF bin edges and the truths sit on bin centres.
"""

from __future__ import annotations

import numpy as np

from beastflow.randomness import stream


def on_bin_centres(truth: np.ndarray, centres: np.ndarray, rtol: float = 1e-9) -> bool:
    """True when every finite truth equals one of the bin centres (a discrete grid parameter)."""
    t = np.asarray(truth, float)
    t = t[np.isfinite(t)]
    c = np.sort(np.asarray(centres, float))
    if not len(t) or not len(c):
        return False
    i = np.clip(np.searchsorted(c, t), 1, len(c) - 1)
    nearest = np.where(np.abs(c[i] - t) < np.abs(c[i - 1] - t), c[i], c[i - 1])
    return bool(np.all(np.abs(nearest - t) <= rtol * np.maximum(np.abs(t), 1e-300)))


def spread_in_cells(truth: np.ndarray, edges: np.ndarray, log: bool, label: str, seed: int = 0) -> np.ndarray:
    """Each truth moved to a uniform draw inside its PDF bin (in log10 for log-binned quantities)."""
    t = np.asarray(truth, float)
    e = np.log10(np.asarray(edges, float)) if log else np.asarray(edges, float)
    x = np.log10(t) if log else t
    k = np.clip(np.searchsorted(e, x, side="right") - 1, 0, len(e) - 2)
    u = stream(seed, "recovery.cells", label).random(len(t))
    out = e[k] + u * (e[k + 1] - e[k])
    return 10.0**out if log else out


def recovery_metrics(
    fit_p16: np.ndarray,
    fit_p50: np.ndarray,
    fit_p84: np.ndarray,
    truth: np.ndarray,
    centres: np.ndarray | None = None,
    edges: np.ndarray | None = None,
    log: bool = False,
    label: str = "",
) -> dict[str, float]:
    """Median of (fit - truth) / uncertainty and the fraction of truths inside p16-p84.

    The uncertainty is the half-width on the side of the truth (p84 - p50 when
    the fit is below the truth, p50 - p16 when above), so asymmetric posteriors
    are judged on the side that matters.  With the PDF bins (``centres``,
    ``edges``, ``log``) and truths on the bin centres, the truths are spread
    over their cells first (randomised PIT, see the module docstring) and
    ``"cells": 1`` is returned.
    """
    p16, p50, p84, t = (np.asarray(a, float) for a in (fit_p16, fit_p50, fit_p84, truth))
    ok = np.isfinite(p16) & np.isfinite(p50) & np.isfinite(p84) & np.isfinite(t)
    p16, p50, p84, t = p16[ok], p50[ok], p84[ok], t[ok]
    cells = centres is not None and edges is not None and on_bin_centres(t, centres)
    if cells:
        t = spread_in_cells(t, np.asarray(edges), log, label)
    half = np.where(p50 < t, p84 - p50, p50 - p16)
    # a zero-width side (posterior piled on one grid value): use the other side, then the full width
    half = np.where(half > 0, half, 0.5 * (p84 - p16))
    good = half > 0
    z = (p50[good] - t[good]) / half[good]
    inside = (t >= p16) & (t <= p84)
    n = len(t)
    cov = float(np.mean(inside)) if n else float("nan")
    return {
        "n": int(n),
        "median_z": float(np.median(z)) if len(z) else float("nan"),
        "coverage_68": cov,
        "coverage_sigma": float(np.sqrt(0.68 * 0.32 / n)) if n else float("nan"),
        "median_abs_error": float(np.median(np.abs(p50 - t))) if n else float("nan"),
        "cells": int(cells),
    }


__all__ = ["recovery_metrics", "spread_in_cells", "on_bin_centres"]
