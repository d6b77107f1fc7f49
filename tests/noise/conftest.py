"""Fixtures of the noise-model and trim tests: real phat_small ASTs and catalog,
small synthetic SED grids spanning the AST flux range."""

from __future__ import annotations

import numpy as np
import pytest

from beastflow.io.sed_grid import write_sed_grid

FILTERS = [
    "HST_WFC3_F275W",
    "HST_WFC3_F336W",
    "HST_ACS_WFC_F475W",
    "HST_ACS_WFC_F814W",
    "HST_WFC3_F110W",
    "HST_WFC3_F160W",
]
BANDS = ["F275W", "F336W", "F475W", "F814W", "F110W", "F160W"]
LAMB = np.array([2700.0, 3350.0, 4750.0, 8050.0, 11500.0, 15400.0])


@pytest.fixture(scope="session")
def vega() -> np.ndarray:
    from beastflow.physics.vega import vega_band_fluxes

    return np.asarray(vega_band_fluxes(FILTERS), dtype=np.float64)


@pytest.fixture
def asts(phat_asts_rate):
    from beastflow.observations.catalogs import read_asts

    return read_asts(str(phat_asts_rate), FILTERS)


def ast_flux_range(asts, vega) -> tuple[np.ndarray, np.ndarray]:
    """Physical min/max of the inserted fake stars' input fluxes per band."""
    lo, hi = [], []
    for b, v in zip(BANDS, vega):
        m = asts[f"{b}_IN"].to_numpy()
        m = m[np.isfinite(m)]
        lo.append(10 ** (-0.4 * m.max()) * v)
        hi.append(10 ** (-0.4 * m.min()) * v)
    return np.array(lo), np.array(hi)


def synthetic_seds(
    n: int, lo: np.ndarray, hi: np.ndarray, seed: int = 0, anchors: np.ndarray | None = None
) -> np.ndarray:
    """Log-uniform fluxes in [lo/2, 2 hi] per band; with ``anchors`` (physical
    SEDs, e.g. real stars) half of the models are anchors scaled by a common
    factor and jittered per band, so that stars have close models."""
    rng = np.random.default_rng(seed)
    seds = 10 ** rng.uniform(np.log10(lo / 2), np.log10(hi * 2), size=(n, len(lo)))
    if anchors is not None and len(anchors):
        m = n // 2
        pick = anchors[rng.integers(0, len(anchors), m)]
        scale = 10 ** rng.normal(0, 0.1, size=(m, 1))
        jitter = 10 ** rng.normal(0, 0.05, size=(m, len(lo)))
        seds[:m] = np.abs(pick) * scale * jitter
    return seds


def write_grid(path, seds: np.ndarray, seed: int = 1) -> str:
    rng = np.random.default_rng(seed)
    n = len(seds)
    cols = {
        "Av": rng.uniform(0, 5, n),
        "logA": rng.uniform(6, 10, n),
        "M_ini": rng.uniform(0.5, 20, n),
        "weight": rng.random(n),
        "specgrid_indx": np.arange(n, dtype=float),
    }
    return write_sed_grid(str(path), FILTERS, LAMB, seds, cols, provenance={"stage": "test-grid"})
