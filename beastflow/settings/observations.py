"""[observations] settings: catalogs, source density, cuts, splits, AST inputs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class SourceDensity(Section):
    #: pixel (tile) size of the density map, arcsec
    pixsize: float = Field(default=5.0, gt=0)
    #: reference band (short name, e.g. "F475W") whose flux range defines completeness
    ref_band: str = "F475W"
    #: Vega-mag cut; None = from the peak of the magnitude histogram
    mag_cut: float | None = None
    #: "source" (source density) or "background"
    kind: Literal["source", "background"] = "source"
    binmode: Literal["linear", "log"] = "linear"
    n_bins: int | None = None
    bin_width: float | None = 1.0
    custom_edges: list[float] | None = None


class Cuts(Section):
    #: drop sources flagged 99 in any band where the rate is positive
    flagged: bool = True
    #: write ds9 region files of kept and cut sources
    ds9_regions: bool = False


class Split(Section):
    n_per_file: int = Field(default=6250, ge=1)
    #: column to sort by before splitting (flux in the reference band)
    sort_col: str = "F475W_RATE"


class Observations(Section):
    #: photometry catalog (FITS, HDF5, Parquet, CSV)
    catalog: str | None = None
    #: artificial-star-test results (FITS, HDF5, Parquet, CSV)
    ast_results: str | None = None
    source_density: SourceDensity = Field(default_factory=SourceDensity)
    cuts: Cuts = Field(default_factory=Cuts)
    split: Split = Field(default_factory=Split)
