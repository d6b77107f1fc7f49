"""Splinter noise model (spec noise-model.md §5): a field without artificial stars.

Every band independent, no bias, complete everywhere, and a fixed fractional
flux uncertainty f_k:

    bias = 0,   error = f_k · F,   completeness = 1

With an absolute-calibration matrix A only its diagonal enters (as in BEAST's
``make_splinter_noise_model``): error = sqrt(a_k² F² + (f_k F)²), always
positive (the splinter model has no "outside AST coverage" to flag).  The
artifact is a normal noise model (``beastflow.io.noise_model``), so trim and
fit take it unchanged; its ``meta`` says ``model = "splinter"`` and the
fractions used.

BEAST takes one fraction for all bands; ``[noise_model] splinter_fraction``
may also be a table per band.  With one fraction the arrays are those of
BEAST 2.1.0 to the last bit (same float64 operations in the same order), in
both modes: the model has nothing BEAST does differently from the spec.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from beastflow.filters import short_names
from beastflow.io.noise_model import NoiseModelWriter
from beastflow.io.sed_grid import SEDGrid
from beastflow.noise import absflux
from beastflow.provenance import make_provenance

log = logging.getLogger(__name__)

SETTING = "noise_model.splinter_fraction"


def band_fractions(fraction: float | Mapping[str, float], filters: Sequence[str]) -> np.ndarray:
    """Fractional uncertainty per band, in filter order.

    ``fraction``: one number for every band, or a table keyed by full filter
    name (``HST_ACS_WFC_F475W``) or short band name (``F475W``) that names
    every band of ``filters`` exactly once.  Errors name the setting and band.
    """
    filters = list(filters)
    if not isinstance(fraction, Mapping):
        out = np.full(len(filters), float(fraction))
    else:
        shorts = short_names(filters)
        known = {**{f: i for i, f in enumerate(filters)}, **{b: i for i, b in enumerate(shorts)}}
        out = np.full(len(filters), np.nan)
        for key, val in fraction.items():
            if key not in known:
                raise ValueError(
                    f"{SETTING}: {key!r} is not a band of physics.filters (expected one of {shorts} or the full names)"
                )
            i = known[key]
            if not np.isnan(out[i]):
                raise ValueError(f"{SETTING}: band {shorts[i]} is given twice")
            out[i] = float(val)
        missing = [shorts[i] for i in np.flatnonzero(np.isnan(out))]
        if missing:
            raise ValueError(
                f"{SETTING}: no fraction for band(s) {missing}; a table must give every band "
                "of physics.filters (or use one number for all)"
            )
    bad = [f for f, v in zip(short_names(filters), out) if not (0 < v < 10)]
    if bad:
        raise ValueError(
            f"{SETTING}: the fractional uncertainty must be > 0 (and < 10), "
            f"got {out.tolist()} for bands {short_names(filters)}"
        )
    return out


def splinter_arrays(
    seds: np.ndarray, fractions: np.ndarray, absflux_variances: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bias, error, completeness) [n_models, n_bands] of a block of model fluxes."""
    seds = np.asarray(seds, dtype=np.float64)
    bias = np.full(seds.shape, 0.0)
    sigma = seds * np.asarray(fractions, dtype=np.float64)[None, :]
    completeness = np.full(seds.shape, 1.0)
    if absflux_variances is None:
        return bias, sigma, completeness
    error = np.sqrt(np.asarray(absflux_variances, dtype=np.float64)[None, :] * seds**2 + sigma**2)
    return bias, error, completeness


def write_splinter_noise_model(
    sed_grid_url: str,
    out_url: str,
    fraction: float | Mapping[str, float] = 0.10,
    absflux_matrix: np.ndarray | None = None,
    chunk_models: int = 262_144,
    provenance: Mapping[str, Any] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> str:
    """Splinter noise model of one SED (sub)grid, streamed block by block (public API).

    ``absflux_matrix``: fractional calibration uncertainties (1-D, per band) or
    covariance (2-D); only the diagonal enters the error, the full matrix is
    stored as ``covdiag``/``covoffdiag`` like the toothpick model does.
    Writes ``out_url`` atomically and returns it.
    """
    grid = SEDGrid(sed_grid_url)
    filters = grid.filters
    fr = band_fractions(fraction, filters)
    a2 = None if absflux_matrix is None else absflux.band_variances(absflux_matrix)
    meta = {
        "model": "splinter",
        "fractions": dict(zip(filters, fr.tolist())),
        "absflux_matrix": None if absflux_matrix is None else np.asarray(absflux_matrix).tolist(),
        **dict(extra_meta or {}),
    }
    with NoiseModelWriter(
        out_url,
        filters,
        n_models=grid.n_models,
        provenance=provenance,
        sed_grid=sed_grid_url,
        with_covariance=absflux_matrix is not None,
        meta=meta,
    ) as w:
        for block in grid.iter_chunks(chunk_models, columns=[]):
            b, e, c = splinter_arrays(block.seds, fr, a2)
            arrays = {"bias": b, "error": e, "completeness": c}
            if absflux_matrix is not None:
                arrays["covdiag"], arrays["covoffdiag"] = absflux.covariance_terms(absflux_matrix, block.seds)
            w.append(arrays)
    log.info(
        "splinter noise model %s: %d models, fractional errors %s",
        out_url,
        grid.n_models,
        dict(zip(short_names(filters), fr.tolist())),
    )
    return out_url


def run_splinter(settings: Any, sed_grid_url: str, out_url: str) -> str:
    """Stage function: the splinter noise model of ``[noise_model]`` on one (sub)grid."""
    nm = settings.noise_model
    a_matrix = None
    inputs = {"sed_grid": sed_grid_url}
    if nm.absflux_covariance:
        a_matrix = absflux.load_absflux_matrix(nm.absflux_covariance, len(SEDGrid(sed_grid_url).filters))
        inputs["absflux_covariance"] = nm.absflux_covariance
    prov = make_provenance(
        "noisemodel",
        settings.section_hash("compat", "noise_model"),
        inputs=inputs,
    )
    return write_splinter_noise_model(
        sed_grid_url,
        out_url,
        nm.splinter_fraction,
        a_matrix,
        nm.chunk_models,
        provenance=prov,
        extra_meta={"compat": settings.compat},
    )


__all__ = ["band_fractions", "run_splinter", "splinter_arrays", "write_splinter_noise_model"]
