"""Figures of one star: its SED fit with residuals, its 1-D PDFs over the prior, its 2-D PDFs.

Like ``plots``, every function draws one ``Figure`` (no pyplot state) and
writes a PNG through ``beastflow.storage``; it returns the URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from beastflow.report.plots import label, plain_log_ticks, save


def support_range(
    centres: np.ndarray, *masses: np.ndarray, tail: float = 1e-3, pad: float = 0.15, log: bool = False
) -> tuple[float, float]:
    """Axis range holding all but ``tail`` of each distribution's mass at either end, padded.

    Keeps a PDF that peaks at 2-6 M_sun from being drawn on a 0.1-60 M_sun axis.
    """
    c = np.asarray(centres, float)
    x = np.log10(c) if log else c
    lo, hi = np.inf, -np.inf
    for m in masses:
        m = np.asarray(m, float)
        tot = m.sum()
        if not tot > 0:
            continue
        cdf = np.cumsum(m) / tot
        lo = min(lo, float(x[min(int(np.searchsorted(cdf, tail)), len(x) - 1)]))
        hi = max(hi, float(x[min(int(np.searchsorted(cdf, 1 - tail)), len(x) - 1)]))
    if not np.isfinite(lo):
        lo, hi = x.min(), x.max()
    step = np.median(np.diff(x)) if len(x) > 1 else 1.0
    width = max(hi - lo, step)
    lo, hi = lo - pad * width - 0.5 * step, hi + pad * width + 0.5 * step
    lo, hi = max(lo, x.min() - 0.5 * step), min(hi, x.max() + 0.5 * step)
    return (10**lo, 10**hi) if log else (lo, hi)


def plot_star_sed(
    lam_um: np.ndarray,
    bands: Sequence[str],
    obs: np.ndarray,
    sigma: np.ndarray | None,
    best: np.ndarray | None,
    p50: np.ndarray | None,
    p16: np.ndarray | None,
    p84: np.ndarray | None,
    url: str,
    title: str,
) -> str:
    """Observed SED with 1-sigma error bars (noise model at the best model), non-detections as
    1-sigma upper limits, the best-fit and median model SEDs, and the residuals in sigma."""
    order = np.argsort(lam_um)
    lam = np.asarray(lam_um, float)[order]
    obs = np.asarray(obs, float)[order]
    pick = lambda a: None if a is None else np.asarray(a, float)[order]  # noqa: E731
    sigma, best, p50, p16, p84 = map(pick, (sigma, best, p50, p16, p84))
    names = [bands[i] for i in order]
    fig = Figure(layout="constrained", figsize=(7.0, 5.6))
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1.3])
    ax = fig.add_subplot(gs[0])
    axr = fig.add_subplot(gs[1], sharex=ax)
    det = np.isfinite(obs) & (obs > 0)
    limits = np.array([])
    if p16 is not None and p84 is not None:
        ax.fill_between(lam, p16 * lam, p84 * lam, color="C0", alpha=0.2, label="model p16-p84")
    if p50 is not None:
        ax.plot(lam, p50 * lam, "-", color="C0", lw=1.2, label="model p50")
    if best is not None:
        ax.plot(lam, best * lam, "s--", color="C2", ms=4, lw=1, label="best-fit model (+ bias)")
    yerr = (
        None
        if sigma is None
        else (np.where(det, np.minimum(sigma, obs * 0.999), 0) * lam, np.where(det, sigma, 0) * lam)
    )
    ax.errorbar(
        lam[det],
        (obs * lam)[det],
        yerr=None if yerr is None else (yerr[0][det], yerr[1][det]),
        fmt="o",
        color="C3",
        ms=5,
        capsize=2,
        label="observed (1 sigma)",
    )
    if (~det).any():
        # flux <= 0 cannot go on a log axis: draw the 1-sigma upper limit (or the plot floor)
        finite = [a[np.isfinite(a) & (a > 0)] for a in (obs * lam, *(x * lam for x in (best, p50) if x is not None))]
        floor = np.nanmin(np.concatenate(finite)) * 0.5 if any(len(f) for f in finite) else 1e-20
        lim = (
            np.where(np.isfinite(sigma) & (sigma > 0), sigma * lam, floor)
            if sigma is not None
            else np.full(len(lam), floor)
        )
        limits = lim[~det]
        ax.plot(
            lam[~det],
            lim[~det],
            "v",
            mfc="none",
            mec="C3",
            ms=8,
            mew=1.5,
            label="not detected (flux <= 0): 1-sigma limit",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    # the axis follows the fluxes and models, not an error bar reaching down to S/N ~ 0
    parts = [
        a[np.isfinite(a) & (a > 0)]
        for a in (obs * lam, limits, *(x * lam for x in (best, p50, p16, p84) if x is not None))
    ]
    shown = np.concatenate(parts) if parts else np.array([])
    if len(shown):
        ax.set_ylim(shown.min() / 4, shown.max() * 2.5)
    ax.set_ylabel(r"$\lambda F_\lambda$ [$\mu$m erg s$^{-1}$ cm$^{-2}$ $\AA^{-1}$]")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.tick_params(labelbottom=False)
    if sigma is not None and best is not None:
        res = (obs - best) / np.where(sigma > 0, sigma, np.nan)
        axr.axhspan(-1, 1, color="0.9")
        axr.axhline(0, color="0.5", lw=0.8)
        axr.plot(lam[det], res[det], "o", color="C3", ms=5)
        if (~det).any():
            axr.plot(lam[~det], res[~det], "o", mfc="none", mec="C3", ms=6)
        top = np.nanmax(np.abs(res)) if np.isfinite(res).any() else 1.0
        axr.set_ylim(-max(3.0, 1.15 * top), max(3.0, 1.15 * top))
        axr.set_ylabel("(obs - best) / sigma")
    else:
        axr.text(
            0.5,
            0.5,
            "no noise model found: residuals not available",
            ha="center",
            va="center",
            transform=axr.transAxes,
            fontsize=8,
        )
        axr.set_yticks([])
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    axr.set_xticks(lam)
    axr.set_xticklabels([f"{n}\n{x:.2f}" for n, x in zip(names, lam)], fontsize=7)
    axr.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    axr.set_xlabel(r"band / wavelength [$\mu$m]")
    return save(fig, url)


def _pdf_axis(ax, centres, pdf, prior, log, stats_q, truth, rng) -> None:
    c = np.asarray(centres, float)
    p = np.asarray(pdf, float)
    p = p / p.sum() if p.sum() > 0 else p
    if prior is not None and np.sum(prior) > 0:
        pr = np.asarray(prior, float) / np.sum(prior)
        ax.fill_between(c, pr, step="mid", color="0.75", alpha=0.8, label="prior", zorder=1)
    ax.step(c, p, where="mid", color="C0", lw=1.3, zorder=3, label="posterior")
    ax.fill_between(c, p, step="mid", color="C0", alpha=0.25, zorder=2)
    if log:
        ax.set_xscale("log")
        plain_log_ticks(ax, "x")
    for s, ls in (("p16", ":"), ("p50", "-"), ("p84", ":")):
        if stats_q and s in stats_q and np.isfinite(stats_q[s]):
            ax.axvline(stats_q[s], color="C1", ls=ls, lw=1, zorder=4)
    if truth is not None and np.isfinite(truth):
        ax.axvline(truth, color="C3", lw=1.5, zorder=5, label="truth")
    ax.set_xlim(*rng)
    ax.set_yticks([])


def plot_star_pdfs(
    pdf1d: Mapping[str, Any],
    quantities: Sequence[str],
    url: str,
    stats_q: Mapping[str, dict],
    priors: Mapping[str, np.ndarray] | None = None,
    truth: Mapping[str, float] | None = None,
    title: str = "",
) -> str:
    """1-D posterior PDFs of one star (row 0 of ``pdf1d``) with the grid prior drawn beneath,
    both as probability per bin on the same bins; orange lines: p16/p50/p84."""
    n = len(quantities)
    ncol = min(n, 4)
    nrow = int(np.ceil(n / ncol))
    fig = Figure(layout="constrained", figsize=(3.2 * ncol, 2.5 * nrow))
    for k, q in enumerate(quantities):
        ax = fig.add_subplot(nrow, ncol, k + 1)
        c, p = pdf1d["centres"][q], pdf1d["pdf"][q][0]
        prior = priors.get(q) if priors else None
        log = bool(pdf1d["log"][q])
        rng = support_range(c, p, log=log, pad=0.4)
        _pdf_axis(ax, c, p, prior, log, stats_q.get(q), (truth or {}).get(q), rng)
        ax.set_xlabel(label(q), fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=6)
    fig.suptitle(title or "1-D posterior PDFs (grey: prior on the same bins)", fontsize=10)
    return save(fig, url)


def corner_quantities(pairs: Sequence[str]) -> list[str]:
    out: list[str] = []
    for p in pairs:
        for q in p.split("+", 1):
            if q not in out:
                out.append(q)
    return out


def plot_corner(
    pdf2d: Mapping[str, Any],
    row: int,
    pdf1d: Mapping[str, Any],
    row1: int,
    url: str,
    quantities: Sequence[str] | None = None,
    priors: Mapping[str, np.ndarray] | None = None,
    title: str = "",
) -> str:
    """Corner plot: 1-D PDFs on the diagonal, the stored 2-D PDFs below it (pairs the fit did not
    store are left out).  ``row``/``row1``: the star's (or stack's) row in pdf2d / pdf1d;
    ``pdf2d["pdf"][pair]`` may also be a single 2-D array (row ignored)."""
    qs = list(quantities or corner_quantities(pdf2d["pairs"]))
    qs = [q for q in qs if q in pdf1d["quantities"]]
    n = len(qs)
    fig = Figure(layout="constrained", figsize=(2.3 * n + 0.6, 2.3 * n + 0.4))
    ranges = {}
    for q in qs:
        p = np.asarray(pdf1d["pdf"][q])
        p = p[row1] if p.ndim == 2 else p
        ranges[q] = support_range(pdf1d["centres"][q], p, log=bool(pdf1d["log"][q]), pad=0.2)
    for i, qi in enumerate(qs):
        for j, qj in enumerate(qs[: i + 1]):
            ax = fig.add_subplot(n, n, i * n + j + 1)
            if i == j:
                p = np.asarray(pdf1d["pdf"][qi])
                p = p[row1] if p.ndim == 2 else p
                _pdf_axis(
                    ax, pdf1d["centres"][qi], p, (priors or {}).get(qi), bool(pdf1d["log"][qi]), None, None, ranges[qi]
                )
            else:
                key, swap = (f"{qj}+{qi}", False) if f"{qj}+{qi}" in pdf2d["pdf"] else (f"{qi}+{qj}", True)
                if key not in pdf2d["pdf"]:
                    ax.axis("off")
                    continue
                arr = np.asarray(pdf2d["pdf"][key])
                z = arr[row] if arr.ndim == 3 else arr
                axes = pdf2d["axes"][key]
                ex, ey = axes["edges_a"], axes["edges_b"]  # z[a, b]
                if swap:
                    ex, ey, z = ey, ex, z.T
                # cells below 1e-3 of the peak left white: they would paint the whole grid dark
                zmax = np.nanmax(z) if z.size else 0.0
                ax.pcolormesh(ex, ey, np.where(z > 1e-3 * zmax, z, np.nan).T, cmap="viridis", shading="flat")
                if pdf1d["log"].get(qj):
                    ax.set_xscale("log")
                    plain_log_ticks(ax, "x")
                if pdf1d["log"].get(qi):
                    ax.set_yscale("log")
                    plain_log_ticks(ax, "y")
                ax.set_xlim(*ranges[qj])
                ax.set_ylim(*ranges[qi])
            if i == n - 1 or i == j:
                # diagonal panels keep their axis: the panels below them may be absent (pairs not stored)
                ax.set_xlabel(label(qj), fontsize=8)
            else:
                ax.tick_params(labelbottom=False)
            if j == 0 and i != 0:
                ax.set_ylabel(label(qi), fontsize=8)
            elif j != i:
                ax.tick_params(labelleft=False)
            ax.tick_params(labelsize=7)
    fig.suptitle(title or "2-D posterior PDFs", fontsize=10)
    return save(fig, url)
