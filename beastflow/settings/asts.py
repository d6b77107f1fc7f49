"""[asts] settings: selection of artificial-star SEDs and their positions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class ASTs(Section):
    method: Literal["flux_bin", "random_pick"] = "flux_bin"
    n_flux_bins: int = Field(default=40, ge=1)
    n_per_flux_bin: int = Field(default=50, ge=1)
    filters_inside_maglimits: int = Field(default=3, ge=1)
    #: per-band [bright, faint] Vega-mag limits, keyed by full filter name
    fluxbin_maglimits: dict[str, list[float]] | None = None
    models_selected_per_age: int = Field(default=70, ge=1)
    realization_per_model: int = Field(default=1, ge=1)
    #: "density_bins", "annulus", "pixel_distribution"
    positions: Literal["density_bins", "annulus", "pixel_distribution"] = "density_bins"
    #: arcsec by which the footprint polygon is eroded
    erode_selection_region: float = Field(default=0.5, ge=0)
    #: optional boundary polygon: [[ra...], [dec...]] in degrees
    coord_boundary: list[list[float]] | None = None
    pixel_distribution: float = Field(default=10.0, gt=0)
    n_per_density_bin: int | None = None
