"""[noise_model] and [trim] settings (owner: noise-model stage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Section, reject_unused


class NoiseModel(Section):
    #: "toothpick" (bands independent, the production model), "trunchen" (band
    #: covariance), or "splinter" (no ASTs: error = splinter_fraction x model flux,
    #: no bias, completeness 1; the AST stages are skipped)
    model: Literal["toothpick", "trunchen", "splinter"] = "toothpick"
    #: splinter: fractional flux uncertainty, one number for all bands or a table
    #: per band, e.g. { F275W = 0.2, F336W = 0.15, ... } (every band of physics.filters)
    splinter_fraction: float | dict[str, float] = 0.10

    @field_validator("splinter_fraction")
    @classmethod
    def _positive_fraction(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        # band names are checked against physics.filters in Settings (they live there)
        values = v.values() if isinstance(v, dict) else [v]
        bad = [x for x in values if not 0 < x < 10]
        if bad:
            raise ValueError(f"a fractional flux uncertainty must be > 0 (and < 10), got {bad}")
        if isinstance(v, dict) and not v:
            raise ValueError("an empty table: give a fraction for every band, or one number")
        return v

    @model_validator(mode="after")
    def _used(self):
        ast_keys = ["n_flux_bins", "min_per_bin", "ast_nonrecovered_ratio", "statistic"]
        trunchen_keys = ["trunchen_k", "trunchen_min_group", "precision"]
        unused = {
            "splinter": ast_keys + trunchen_keys,
            "toothpick": trunchen_keys + ["splinter_fraction"],
            "trunchen": ["n_flux_bins", "min_per_bin", "ast_nonrecovered_ratio", "statistic", "splinter_fraction"],
        }
        reject_unused(self, "noise_model", unused[self.model], f"with model = {self.model!r}")
        return self

    #: number of log-spaced flux bins over the fake stars' input fluxes, per band
    n_flux_bins: int = Field(default=50, ge=1)
    #: a bin is used only with MORE than this many recovered fake stars
    min_per_bin: int = Field(default=10, ge=1)
    #: a recovery brighter than this many times the input is a blend (non-recovery)
    ast_nonrecovered_ratio: float = Field(default=2.0, gt=0)
    #: per-bin statistics: "percentile" (BEAST's production choice: bias = median, error =
    #: (p84 - p16)/2 divided by its expectation for Gaussian noise with the bin's count, an
    #: unbiased sigma; the raw half-width in compat) or "stddev" (mean and standard deviation,
    #: n - 1; population in compat)
    statistic: Literal["percentile", "stddev"] = "percentile"
    #: fractional absolute-calibration covariance matrix (FITS/NPY/CSV URL); None = no term
    absflux_covariance: str | None = None
    #: models per block when evaluating the noise model on a grid (memory bound)
    chunk_models: int = Field(default=262_144, ge=1024)
    #: trunchen: nearest AST models (in log input flux) averaged per grid model
    trunchen_k: int = Field(default=10, ge=1)
    #: trunchen: an injected model needs MORE than this many (recovered) realisations
    trunchen_min_group: int = Field(default=5, ge=1)
    #: trunchen: stored precision of bias, error, completeness and C^-1 (io/noise_model.py):
    #: "float32" (24-bit mantissa, 6e-8 relative, far below the AST sampling error; 2.7x
    #: smaller files), "float64"; unset = behaviour.noise.trunchen_precision (float32; BEAST float64)
    precision: Literal["float32", "float64"] | None = None


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
