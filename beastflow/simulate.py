"""Observation simulator: stars drawn from an SED grid through its noise model.

A star is drawn with probability ∝ weight × detection probability, its flux in
band k is F_k + bias_k + N(0, error_k), and the catalogue flux is
``{B}_RATE = flux / F_Vega`` (BEAST's ``simulate_obs``, asts.md §2).  The
detection probability uses the same completeness term as the fit
(``fit.completeness``: "min" = min_k c_k, "product" = Π_k c_k, "none"), so a
catalogue simulated here is a fair sample of what the fit's likelihood assumes
and the posteriors are calibrated on it (the parameter-recovery test).

The grid is streamed chunk by chunk (only one float per model is kept), so a
grid larger than memory can be sampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from beastflow.filters import short_names
from beastflow.io.noise_model import open_noise_model
from beastflow.io.sed_grid import open_sed_grid


def detection_probability(completeness: np.ndarray, mode: str) -> np.ndarray:
    c = np.clip(np.asarray(completeness, np.float64), 0.0, 1.0)
    if mode == "min":
        return c.min(axis=1)
    if mode == "product":
        return c.prod(axis=1)
    if mode == "none":
        return np.ones(len(c))
    raise ValueError(f"completeness mode must be 'min', 'product' or 'none', got {mode!r}")


def simulate_observations(
    sed_grid_url: str,
    noise_model_url: str,
    n_stars: int,
    seed: int,
    vega_fluxes: Sequence[float] | np.ndarray,
    *,
    completeness: str = "min",
    weight_column: str = "weight",
    center: tuple[float, float] = (10.68, 41.27),
    size_deg: float = 0.02,
    chunk_models: int = 262_144,
) -> pl.DataFrame:
    """Simulated catalogue: ``star_id``, ``RA``, ``DEC``, ``{B}_RATE`` (noisy, F/F_Vega),
    ``{B}_INPUT_RATE`` (noiseless model flux / Vega), ``true_{column}`` for every
    grid column and ``true_row`` (row of the model in the given grid).

    ``weight_column``: "weight" (prior × grid weight, the fit's prior),
    "prior_weight", "grid_weight" or "uniform".
    """
    if n_stars < 0:
        raise ValueError(f"n_stars must be >= 0, got {n_stars}")
    grid = open_sed_grid(sed_grid_url)
    noise = open_noise_model(noise_model_url)
    if noise.n_models != grid.n_models or noise.filters != grid.filters:
        raise ValueError(f"{noise_model_url}: noise model rows/filters do not match the grid {sed_grid_url}")
    vega = np.asarray(vega_fluxes, np.float64)
    if vega.shape != (grid.n_bands,):
        raise ValueError(f"vega_fluxes has shape {vega.shape}, expected ({grid.n_bands},) for {grid.filters}")
    if weight_column != "uniform" and weight_column not in grid.columns:
        raise KeyError(f"{sed_grid_url}: no grid column {weight_column!r} to weight the draws")
    prob = np.empty(grid.n_models)
    cols = [] if weight_column == "uniform" else [weight_column]
    for blk, nblk in zip(
        grid.iter_chunks(chunk_models, columns=cols, seds=False),
        noise.iter_chunks(chunk_models, ["completeness", "error"]),
    ):
        w = np.ones(len(nblk.completeness)) if weight_column == "uniform" else blk.columns[weight_column]
        p = np.clip(w, 0, None) * detection_probability(nblk.completeness, completeness)
        p[~np.all(nblk.error > 0, axis=1)] = 0.0  # no valid noise model there
        prob[blk.start : blk.start + len(p)] = p
    tot = prob.sum()
    if not tot > 0:
        raise ValueError(f"{sed_grid_url}: no model can be drawn (all weights x completeness are zero)")
    rng = np.random.default_rng(seed)
    rows = rng.choice(grid.n_models, size=n_stars, replace=True, p=prob / tot)
    uniq, inv = np.unique(rows, return_inverse=True)
    blk = grid.read(rows=uniq) if len(uniq) else grid.read(rows=slice(0, 0))
    nb = noise.read(rows=uniq, names=["bias", "error"]) if len(uniq) else noise.read(rows=slice(0, 0))
    F = blk.seds[inv]
    bias, err = nb.bias[inv], nb.error[inv]
    flux = F + bias + rng.normal(size=F.shape) * np.abs(err)
    bands = short_names(grid.filters)
    data: dict[str, np.ndarray] = {"star_id": np.arange(n_stars, dtype=np.int64)}
    data["RA"] = center[0] + (rng.random(n_stars) - 0.5) * size_deg / max(np.cos(np.radians(center[1])), 1e-3)
    data["DEC"] = center[1] + (rng.random(n_stars) - 0.5) * size_deg
    for k, b in enumerate(bands):
        data[f"{b}_RATE"] = flux[:, k] / vega[k]
    for k, b in enumerate(bands):
        data[f"{b}_INPUT_RATE"] = F[:, k] / vega[k]
    data["true_row"] = rows.astype(np.int64)
    for c in grid.columns:
        data[f"true_{c}"] = blk.columns[c][inv]
    return pl.DataFrame(data)


__all__ = ["simulate_observations", "detection_probability"]
