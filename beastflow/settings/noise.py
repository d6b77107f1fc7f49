"""[noise_model] and [trim] settings (owner: noise-model stage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class NoiseModel(Section):
    #: "toothpick" (bands independent, the production model) or "trunchen" (band covariance)
    model: Literal["toothpick", "trunchen"] = "toothpick"
    #: number of log-spaced flux bins over the fake stars' input fluxes, per band
    n_flux_bins: int = Field(default=50, ge=1)
    #: a bin is used only with MORE than this many recovered fake stars
    min_per_bin: int = Field(default=10, ge=1)
    #: a recovery brighter than this many times the input is a blend (non-recovery)
    ast_nonrecovered_ratio: float = Field(default=2.0, gt=0)
    #: per-bin statistics: "percentile" (bias = median, error = (p84 - p16)/2; BEAST's
    #: production choice) or "stddev" (mean and population standard deviation)
    statistic: Literal["percentile", "stddev"] = "percentile"
    #: fractional absolute-calibration covariance matrix (FITS/NPY/CSV URL); None = no term
    absflux_covariance: str | None = None
    #: models per block when evaluating the noise model on a grid (memory bound)
    chunk_models: int = Field(default=262_144, ge=1024)
    #: trunchen: nearest AST models (in log input flux) averaged per grid model
    trunchen_k: int = Field(default=10, ge=1)
    #: trunchen: an injected model needs MORE than this many (recovered) realisations
    trunchen_min_group: int = Field(default=5, ge=1)


class Trim(Section):
    #: keep a model if model flux + bias is within sigma_fac x error of the file's flux range
    #: (BEAST's rule; by default a model the lossless posterior bound keeps is kept too, noise/trim.py)
    sigma_fac: float = Field(default=3.0, gt=0)
    #: models per block when streaming the grid and noise model
    chunk_models: int = Field(default=262_144, ge=1024)
    #: sub-files trimmed per read of the grid (bounds open files and memory)
    max_jobs_per_pass: int = Field(default=64, ge=1)
    #: also write BEAST-style trimmed copies (P_bin{s}_sub{u}_seds_trim.grid.hd5, ..._noisemodel_trim.grid.hd5);
    #: the trim artifact itself is the set of kept model rows (P_bin{s}_sub{u}_trim.hd5), which the fit reads through
    materialize: bool = False
