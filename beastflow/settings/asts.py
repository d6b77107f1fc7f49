"""[asts] settings: selection of artificial-star SEDs and their positions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class ASTs(Section):
    #: "flux_bin" (toothpick style), "random_pick" (per age), "suppl_seds" (supplement)
    method: Literal["flux_bin", "random_pick", "suppl_seds"] = "flux_bin"
    #: flux_bin: magnitude bins per band
    n_flux_bins: int = Field(default=40, ge=1)
    #: flux_bin: minimum models wanted in every bin of every band
    n_per_flux_bin: int = Field(default=50, ge=1)
    #: flux_bin: a model must lie inside fluxbin_maglimits in at least this many bands
    filters_inside_maglimits: int = Field(default=3, ge=1)
    #: flux_bin: per-band [bright, faint] Vega-mag limits, keyed by full filter name (all filters)
    fluxbin_maglimits: dict[str, list[float]] | None = None
    #: flux_bin: models held in memory per selection pass (bounds memory with the chunk size)
    select_buffer: int = Field(default=1_048_576, ge=1024)
    #: random_pick: [delta] (mag fainter than the catalog's 90th percentile) or one faint limit per band
    maglimit: list[float] = Field(default_factory=lambda: [1.0])
    #: random_pick: bands that must be brighter than the limit
    bands_above_maglimit: int = Field(default=3, ge=1)
    #: random_pick: models drawn (with replacement) per age
    models_selected_per_age: int = Field(default=70, ge=1)
    #: repeats of every chosen SED at different positions
    realization_per_model: int = Field(default=1, ge=1)
    #: suppl_seds: number of models drawn
    n_supplement: int = Field(default=1000, ge=1)
    #: suppl_seds: an earlier P_ASTparams.parquet whose models are excluded
    existing_file: str | None = None
    #: suppl_seds: {band substring: [bright, faint]} inclusive Vega-mag cuts
    suppl_maglimit: dict[str, list[float]] | None = None
    #: suppl_seds: {first band: [[second band, limit], ...]}: m(first) - m(second) <= limit
    suppl_colorlimit: dict[str, list[list[str | float]]] | None = None
    #: "density_bins" (every SED in every density bin), "annulus" (around catalog stars),
    #: "pixel_distribution" (tiles drawn with probability proportional to their star counts)
    positions: Literal["density_bins", "annulus", "pixel_distribution"] = "density_bins"
    #: entries per density bin (None = every SED x realization in every bin, as BEAST)
    n_per_density_bin: int | None = Field(default=None, ge=1)
    #: arcsec by which the footprint / boundary polygons are eroded
    erode_selection_region: float = Field(default=0.5, ge=0)
    #: optional closed boundary polygon [[ra...], [dec...]] in degrees (first vertex repeated last)
    coord_boundary: list[list[float]] | None = None
    #: "all": only where every band has data (partial-overlap-clean sources); or a list of short bands
    region_from_filters: str | list[str] = "all"
    #: annulus: inner radius around catalog stars (pixels); the annulus is 3 pixels wide
    pixel_distribution: float = Field(default=10.0, gt=0)
    #: reference image (FITS with a celestial WCS): positions are also given as its X/Y pixels (origin 1)
    reference_image: str | None = None
    #: extension of reference_image holding the WCS
    reference_hdu: str | int = 1
    #: annulus without X/Y columns: arcsec per pixel to work in RA/Dec
    pixel_scale: float = Field(default=0.05, gt=0)
    #: max rejection-sampling rounds before a bin is reported as having no usable area
    max_position_tries: int = Field(default=200, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ASTs:
        if self.coord_boundary is not None:
            cb = self.coord_boundary
            if len(cb) != 2 or len(cb[0]) != len(cb[1]):
                raise ValueError("coord_boundary must be [[ra...], [dec...]] with as many RA as Dec values")
            if len(cb[0]) < 4:
                raise ValueError("coord_boundary needs at least 3 distinct vertices plus the closing vertex")
            if cb[0][0] != cb[0][-1] or cb[1][0] != cb[1][-1]:
                raise ValueError(
                    "coord_boundary polygon is not closed: repeat the first vertex "
                    f"({cb[0][0]}, {cb[1][0]}) as the last one (got ({cb[0][-1]}, {cb[1][-1]}))"
                )
        if isinstance(self.region_from_filters, str) and self.region_from_filters != "all":
            raise ValueError(f'region_from_filters must be "all" or a list of bands, got {self.region_from_filters!r}')
        for name in ("fluxbin_maglimits", "suppl_maglimit"):
            d = getattr(self, name)
            for k, v in (d or {}).items():
                if len(v) != 2 or v[0] >= v[1]:
                    raise ValueError(f"{name}[{k!r}] must be [bright, faint] with bright < faint, got {v}")
        return self
