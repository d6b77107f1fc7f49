"""Field-level figures: maps of fitted quantities, chi2min against magnitude, recovery by S/N,
prior against stacked posterior.  Same conventions as ``plots`` (Figure objects, PNG via storage)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from beastflow.report.plots import label, plain_log_ticks, recovery_metrics, save
from beastflow.report.star_plots import support_range


def plot_tile_maps(
    tiles: Mapping[str, np.ndarray], maps: Sequence[tuple[str, np.ndarray]], counts: np.ndarray, url: str
) -> str:
    """One panel per (name, per-tile median) on the source-density tiles; tiles without stars blank."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    n = len(maps)
    fig = Figure(layout="constrained", figsize=(4.6 * n, 4.4))
    dec0 = float(np.mean(tiles["min_dec"]))
    for k, (name, med) in enumerate(maps):
        ax = fig.add_subplot(1, n, k + 1)
        ok = np.isfinite(med)
        rects = [
            Rectangle((a, c), b - a, d - c)
            for a, b, c, d, o in zip(tiles["min_ra"], tiles["max_ra"], tiles["min_dec"], tiles["max_dec"], ok)
            if o
        ]
        pc = PatchCollection(rects, cmap="viridis", edgecolor="none")
        pc.set_array(med[ok])
        ax.add_collection(pc)
        fig.colorbar(pc, ax=ax, label=f"median {label(name) if name != 'chi2min' else 'chi2min'}", shrink=0.8)
        ax.set_xlim(float(np.max(tiles["max_ra"])), float(np.min(tiles["min_ra"])))  # east to the left
        ax.set_ylim(float(np.min(tiles["min_dec"])), float(np.max(tiles["max_dec"])))
        ax.set_aspect(1.0 / max(np.cos(np.radians(dec0)), 1e-3))
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.set_xlabel("RA [deg]")
        if k == 0:
            ax.set_ylabel("Dec [deg]")
        ax.set_title(
            f"{name}: {int(ok.sum())} tiles with stars (median {int(np.median(counts[ok])) if ok.any() else 0}"
            " stars each)",
            fontsize=8,
        )
    fig.suptitle("posterior medians per source-density tile", fontsize=10)
    return save(fig, url)


def plot_chi2_vs_mag(mag: np.ndarray, chi2min: np.ndarray, n_bands: np.ndarray, band: str, url: str) -> str:
    """chi2min of every star against its magnitude, with the running median and the chi^2
    quantiles expected for nu = number of bands used (upper bound of the fit's degrees of freedom)."""
    from scipy.stats import chi2

    m, c = np.asarray(mag, float), np.asarray(chi2min, float)
    ok = np.isfinite(m) & np.isfinite(c) & (c > 0)
    nu = int(np.median(n_bands[ok])) if ok.any() else 1
    fig = Figure(layout="constrained", figsize=(7.0, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(m[ok], c[ok], s=4, c="k", alpha=0.4, linewidths=0, label=f"stars ({int(ok.sum())})")
    if ok.sum() >= 20:
        edges = np.quantile(m[ok], np.linspace(0, 1, 11))
        idx = np.clip(np.digitize(m[ok], edges) - 1, 0, 9)
        xs = [np.median(m[ok][idx == i]) for i in range(10) if (idx == i).any()]
        ys = [np.median(c[ok][idx == i]) for i in range(10) if (idx == i).any()]
        ax.plot(xs, ys, "-o", color="C1", ms=4, label="running median")
    for q, ls in ((0.5, "-"), (0.95, "--"), (0.997, ":")):
        ax.axhline(chi2.ppf(q, nu), color="C0", ls=ls, lw=1, label=f"chi2({nu}) {100 * q:g} %")
    ax.set_yscale("log")
    ax.set_xlabel(f"{band} [Vega mag]")
    ax.set_ylabel("chi2min")
    frac = float(np.mean(c[ok] > chi2.ppf(0.997, nu))) if ok.any() else float("nan")
    ax.set_title(f"{100 * frac:.1f} % of stars above the 99.7 % point of chi2({nu})", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, url)


SNR_CLASSES = ((0.0, 10.0), (10.0, 50.0), (50.0, np.inf))


def plot_recovery_by_snr(
    stats: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    snr: np.ndarray,
    band: str,
    quantities: Sequence[str],
    url: str,
) -> tuple[str, dict[str, dict]]:
    """Fit (p50, p16-p84) against truth in S/N classes of ``band``: where the data stop
    constraining a quantity, its posterior collapses onto the prior and the points go flat."""
    nq, nc = len(quantities), len(SNR_CLASSES)
    fig = Figure(layout="constrained", figsize=(3.6 * nc, 3.1 * nq))
    snr = np.asarray(snr, float)
    metrics: dict[str, dict] = {}
    for i, q in enumerate(quantities):
        t = np.asarray(truth[q], float)
        p16, p50, p84 = (np.asarray(stats[f"{q}_{s}"], float) for s in ("p16", "p50", "p84"))
        lo_all, hi_all = np.nanmin(np.r_[t, p16]), np.nanmax(np.r_[t, p84])
        for j, (a, b) in enumerate(SNR_CLASSES):
            ax = fig.add_subplot(nq, nc, i * nc + j + 1)
            sel = np.isfinite(snr) & (snr >= a) & (snr < b)
            name = f"S/N {a:g}-{b:g}" if np.isfinite(b) else f"S/N >= {a:g}"
            if sel.sum():
                met = recovery_metrics(p16[sel], p50[sel], p84[sel], t[sel])
                metrics.setdefault(q, {})[name] = met
                ax.errorbar(
                    t[sel],
                    p50[sel],
                    yerr=[np.clip(p50 - p16, 0, None)[sel], np.clip(p84 - p50, 0, None)[sel]],
                    fmt="o",
                    ms=2,
                    elinewidth=0.4,
                    alpha=0.6,
                    color="C0",
                )
                ax.set_title(
                    f"{q}, {name}: {int(sel.sum())} stars, {100 * met['coverage_68']:.0f}% in p16-p84", fontsize=7
                )
            else:
                ax.set_title(f"{q}, {name}: no stars", fontsize=7)
                ax.text(0.5, 0.5, "no stars in this S/N class", transform=ax.transAxes, ha="center", fontsize=7)
            ax.plot([lo_all, hi_all], [lo_all, hi_all], color="C3", lw=1)
            if q in ("M_ini", "M_act", "radius"):
                ax.set_xscale("log")
                ax.set_yscale("log")
                plain_log_ticks(ax, "x")
                plain_log_ticks(ax, "y")
            ax.set_xlabel(f"true {label(q)}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"fitted {label(q)}", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"recovery by S/N in {band} (noise model at the best model)", fontsize=10)
    return save(fig, url), metrics


def plot_prior_vs_posterior(
    stack: Mapping[str, Any], priors: Mapping[str, np.ndarray], quantities: Sequence[str], url: str
) -> str:
    """Per quantity: the grid prior and the field's stacked posterior, both probability per bin."""
    n = len(quantities)
    ncol = min(n, 4)
    nrow = int(np.ceil(n / ncol))
    fig = Figure(layout="constrained", figsize=(3.3 * ncol, 2.6 * nrow))
    for k, q in enumerate(quantities):
        ax = fig.add_subplot(nrow, ncol, k + 1)
        c = np.asarray(stack["centres"][q], float)
        post = np.asarray(stack["pdf"][q], float)
        post = post / post.sum() if post.sum() > 0 else post
        pr = priors.get(q)
        if pr is not None and np.sum(pr) > 0:
            pr = np.asarray(pr, float) / np.sum(pr)
            ax.fill_between(c, pr, step="mid", color="0.75", label="prior")
        ax.step(c, post, where="mid", color="C0", lw=1.4, label="stacked posterior")
        log = bool(stack["log"][q])
        if log:
            ax.set_xscale("log")
            plain_log_ticks(ax, "x")
        ax.set_xlim(*support_range(c, post, *(() if pr is None else (pr,)), log=log, pad=0.1))
        ax.set_xlabel(label(q), fontsize=8)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=6)
    fig.suptitle(f"prior vs stacked posterior ({stack.get('n_stars', '?')} stars)", fontsize=10)
    return save(fig, url)
