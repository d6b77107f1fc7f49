"""[noise_model] and [trim] settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class NoiseModel(Section):
    model: Literal["toothpick", "trunchen"] = "toothpick"
    n_flux_bins: int = Field(default=50, ge=1)
    min_per_bin: int = Field(default=10, ge=1)
    #: a recovery brighter than this many times the input is a blend (non-recovery)
    ast_nonrecovered_ratio: float = Field(default=2.0, gt=0)
    #: fractional absolute-calibration covariance matrix (FITS/NPY URL); None = no term
    absflux_covariance: str | None = None


class Trim(Section):
    sigma_fac: float = Field(default=3.0, gt=0)
