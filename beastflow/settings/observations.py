"""[observations] settings: catalogs, source density, cuts, splits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class SourceDensity(Section):
    #: pixel (tile) size of the density map, arcsec (BEAST production: 5)
    pixsize: float = Field(default=5.0, gt=0)
    #: reference band (short name, e.g. "F475W") whose complete flux range is counted
    ref_band: str = "F475W"
    #: [bright, faint] Vega-mag range counted; None = [mag_cut_bright, histogram peak - peak_offset]
    mag_cut: list[float] | None = None
    #: bright end of the automatic magnitude cut (BEAST production: 15)
    mag_cut_bright: float = 15.0
    #: the automatic faint limit is the histogram peak minus this many magnitudes
    peak_offset: float = 0.5
    #: histogram of the peak: n_bins = min(N // stars_per_hist_bin, max_hist_bins)
    stars_per_hist_bin: int = Field(default=70, ge=1)
    max_hist_bins: int = Field(default=75, ge=1)
    #: count only sources with {ref}_FLAG < 99
    use_flag: bool = True
    #: "source" (source density) or "background" (median sky around sources; needs reference_image)
    kind: Literal["source", "background"] = "source"
    #: background variant: reference image (FITS, extension reference_hdu) with a celestial WCS
    reference_image: str | None = None
    reference_hdu: str | int = "SCI"
    #: background variant: radius (image pixels) masked around every source
    mask_radius: float = Field(default=10.0, gt=0)
    #: background variant: annulus width (image pixels) outside mask_radius
    ann_width: float = Field(default=20.0, gt=0)
    #: density bins: "linear" or "log"
    binmode: Literal["linear", "log"] = "linear"
    #: number of density bins (linear or log); exclusive with bin_width in linear mode
    n_bins: int | None = Field(default=None, ge=1)
    #: bin width in sources / arcsec^2 (linear mode)
    bin_width: float | None = Field(default=1.0, gt=0)
    #: explicit bin edges (override binmode/n_bins/bin_width)
    custom_edges: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> SourceDensity:
        if self.mag_cut is not None and (len(self.mag_cut) != 2 or self.mag_cut[0] >= self.mag_cut[1]):
            raise ValueError(f"mag_cut must be [bright, faint] with bright < faint, got {self.mag_cut}")
        if self.custom_edges is not None:
            e = self.custom_edges
            if len(e) < 2 or any(b <= a for a, b in zip(e, e[1:])):
                raise ValueError(f"custom_edges must be at least two strictly increasing values, got {e}")
        elif self.binmode == "linear" and self.n_bins is not None and self.bin_width is not None:
            raise ValueError("set only one of n_bins and bin_width for binmode = 'linear' (set bin_width to nothing)")
        elif self.binmode == "log" and self.n_bins is None:
            raise ValueError("binmode = 'log' needs n_bins")
        return self


class Cuts(Section):
    #: drop sources with a zero rate in some but not all bands (outside one band's footprint)
    partial_overlap: bool = True
    #: drop sources flagged (FLAG >= 99) where the rate is positive in the flag bands
    flagged: bool = True
    #: short band names the flag cut looks at; None = the reference band (BEAST production)
    flag_bands: list[str] | None = None
    #: what happens to ASTs failing a cut: "remove" (BEAST) or "flag" (CUT_FLAG = 1, kept)
    ast_action: Literal["remove", "flag"] = "remove"
    #: write ds9 region files of kept and cut sources
    ds9_regions: bool = False


class Split(Section):
    #: stars per sub-file
    n_per_file: int = Field(default=6250, ge=1)
    #: minimum number of sub-files per density bin (None = only n_per_file)
    min_n_subfile: int | None = Field(default=None, ge=1)
    #: column to sort by before splitting (flux in the reference band, faintest first)
    sort_col: str = "F475W_RATE"
    #: ASTs without RA/DEC: "all_bins" = every AST goes to every bin; "error" = refuse
    asts_without_positions: Literal["all_bins", "error"] = "all_bins"
    #: default mode: a rerun keeps the previous run's sub-file flux edges (recorded in the split
    #: manifest) while the density bins are the same, so a changed or added star only changes the
    #: sub-file its flux falls in; true = split by n_per_file again.  compat always re-splits (BEAST:
    #: behaviour.observations.always_resplit)
    resplit: bool = False


class Observations(Section):
    #: photometry catalog (FITS, HDF5, Parquet, CSV)
    catalog: str | None = None
    #: artificial-star-test results (FITS, HDF5, Parquet, CSV)
    ast_results: str | None = None
    source_density: SourceDensity = Field(default_factory=SourceDensity)
    cuts: Cuts = Field(default_factory=Cuts)
    split: Split = Field(default_factory=Split)
