"""Shared fixtures: where the real survey data live (../shared/data), temp outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BEASTFLOW_SHARED", REPO.parent / "shared"))
PHAT_SMALL = SHARED / "data" / "phat_small"
STELLIB = SHARED / "data" / "stellib"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (set BEASTFLOW_SHARED to the shared/ folder)")
    return path


@pytest.fixture
def phat_catalog() -> Path:
    return _need(PHAT_SMALL / "b15_4band_det_27_A.fits")


@pytest.fixture
def phat_asts() -> Path:
    return _need(PHAT_SMALL / "fake_stars_b15_27_all.hd5")


@pytest.fixture
def phat_asts_rate() -> Path:
    return _need(PHAT_SMALL / "fake_stars_b15_27_all_rate.hd5")


@pytest.fixture
def kurucz_grid() -> Path:
    return _need(STELLIB / "kurucz91_solar.grid.fits")
