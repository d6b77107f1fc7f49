"""Helpers for the observation-stage tests (real PHAT data fixtures come from tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from beastflow.settings import settings_from_dict

PHAT_FILTERS = [
    "HST_WFC3_F275W",
    "HST_WFC3_F336W",
    "HST_ACS_WFC_F475W",
    "HST_ACS_WFC_F814W",
    "HST_WFC3_F110W",
    "HST_WFC3_F160W",
]
PHAT_BANDS = ["F275W", "F336W", "F475W", "F814W", "F110W", "F160W"]


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def make_settings(tmp_path):
    def make(compat: str = "none", out: str | None = None, **sections):
        base = {"compat": compat, "project": {"name": "phat", "output": str(out or tmp_path / "out")}}
        return settings_from_dict(_merge(base, sections))

    return make


def synthetic_catalog(n: int, seed: int = 0, ra0: float = 10.0, dec0: float = 41.0, size_arcsec: float = 60.0):
    """A DOLPHOT-like catalog (upper-case columns) with n sources in a square field."""
    import polars as pl

    rng = np.random.default_rng(seed)
    cosd = np.cos(np.radians(dec0))
    cols = {"RA": ra0 + rng.random(n) * size_arcsec / 3600 / cosd, "DEC": dec0 + rng.random(n) * size_arcsec / 3600}
    for b in PHAT_BANDS:
        mag = rng.uniform(18, 29, n)
        rate = 10 ** (-0.4 * mag)
        cols[f"{b}_RATE"] = rate
        cols[f"{b}_VEGA"] = mag
        cols[f"{b}_FLAG"] = np.zeros(n, np.int16)
    return pl.DataFrame(cols)
