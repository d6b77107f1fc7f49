"""A run's artifact names and its fan-out over density bins s, sub-files u and subgrids g.

docs/stages.md fixes the names: every artifact lies directly under
``[project] output`` and starts with the project name P (``P_seds.grid.hd5``,
``P_bin{s}_sub{u}_gridsub{g}_trim.hd5``, ...).  The flows (``beastflow.flows.stages``),
the CLI and the stages take the names and the fan-out from here, so that a
command-line run finds what a pipeline run wrote, and the other way round.

Subgrids: ``g = None`` is the one full grid of a run with ``physics.n_subgrid
= 1`` (no ``gridsub`` in the names of its trims and fits), ``g = 0, 1, ...``
the subgrids otherwise.  Noise models always carry ``gridsub{g}`` (g = 0 for a
full grid), as the pipeline has always named them.

Pure names, except ``read_layout``, which reads the split manifest.  No Prefect.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from beastflow import storage

#: the four files of a fit (and of a merge), after its output prefix
FIT_SUFFIXES = ("_stats.parquet", "_pdf1d.hd5", "_pdf2d.hd5", "_lnp.hd5")


def subgrids(n_subgrid: int) -> list[int | None]:
    """The subgrid indices of a run: ``[None]`` (the one full grid) or ``[0, ..., n - 1]``."""
    return [None] if n_subgrid == 1 else list(range(n_subgrid))


def grid_label(g: int | None) -> str:
    return "grid" if g is None else f"gridsub{g}"


def _grid_part(g: int | None) -> str:
    return "" if g is None else f"_gridsub{g}"


@dataclass(frozen=True)
class Names:
    """The artifact URLs of one run (``output``: its folder or URL; ``project``: P)."""

    output: str
    project: str

    @classmethod
    def of(cls, settings) -> Names:
        return cls(settings.output, settings.project.name)

    def url(self, name: str) -> str:
        """URL of an artifact below the output location (never outside it)."""
        url = storage.join(self.output, name)
        storage.require_inside(url, self.output, what="artifact")
        return url

    def _p(self, rest: str) -> str:
        return self.url(f"{self.project}{rest}")

    # -- physics model
    def sed_grid(self, g: int | None) -> str:
        return self._p("_seds.grid.hd5" if g is None else f"_seds.gridsub{g}.hd5")

    def sed_grids(self, n_subgrid: int) -> list[str]:
        return [self.sed_grid(g) for g in subgrids(n_subgrid)]

    def spec_grid(self) -> str:
        return self._p("_spec_w_priors.grid.hd5")

    # -- observations
    def ingested(self, kind: str) -> str:
        """``P_catalog.parquet`` (kind "photometry") or ``P_asts.parquet`` (kind "asts")."""
        return self._p("_catalog.parquet" if kind == "photometry" else "_asts.parquet")

    def density_map(self) -> str:
        return self._p("_sourceden_map.parquet")

    def density_image(self) -> str:
        return self._p("_sourceden_map.fits")

    def catalog_sd(self) -> str:
        return self._p("_catalog_sd.parquet")

    def catalog_cut(self) -> str:
        return self._p("_catalog_cut.parquet")

    def asts_cut(self) -> str:
        return self._p("_asts_cut.parquet")

    def cut_region(self, kind: str) -> str:
        """ds9 region file of the cut catalog (kind "catalog") or ASTs (kind "asts")."""
        return self._p(f"_{kind}_cut.reg")

    def ast_params(self, suffix: str = "") -> str:
        """``P_ASTparams{suffix}.parquet`` (suffix "_suppl" for supplementary SEDs)."""
        return self._p(f"_ASTparams{suffix}.parquet")

    def ast_inputs(self, suffix: str = "") -> str:
        return self._p(f"_inputAST{suffix}.parquet")

    def ast_inputs_text(self, suffix: str = "") -> str:
        return self._p(f"_inputAST{suffix}.txt")

    def ast_flux_bins(self) -> str:
        return self._p("_ASTfluxbins.parquet")

    def split_manifest(self) -> str:
        return self._p("_split_manifest.json")

    def subfile(self, s: int, u: int) -> str:
        return self._p(f"_bin{s}_sub{u}.parquet")

    def bin_asts(self, s: int) -> str:
        return self._p(f"_asts_bin{s}.parquet")

    # -- noise model, trim, fit
    def noise_model(self, s: int | None, g: int | None) -> str:
        """``P[_bin{s}]_gridsub{g}_noisemodel.hd5``; s None: one model for every bin (splinter)."""
        b = "" if s is None else f"_bin{s}"
        return self._p(f"{b}_gridsub{g if g is not None else 0}_noisemodel.hd5")

    def prefix(self, s: int | str, u: int | str, g: int | None) -> str:
        """``P_bin{s}_sub{u}[_gridsub{g}]``: the prefix of a sub-file's trim and fit artifacts."""
        return self._p(f"_bin{s}_sub{u}{_grid_part(g)}")

    def stem_prefix(self, stem: str, g: int | None) -> str:
        """``{stem}[_gridsub{g}]`` for a catalog named outside the split (``beastflow trim --catalog``)."""
        return self.url(f"{stem}{_grid_part(g)}")

    def trimmed(self, prefix: str) -> tuple[str, str]:
        """BEAST-style trimmed grid and noise model after a prefix (written with ``[trim] materialize``)."""
        return f"{prefix}_seds_trim.grid.hd5", f"{prefix}_noisemodel_trim.grid.hd5"

    def grid_info(self) -> str:
        return self._p("_grid_info.json")

    def merged_prefix(self) -> str:
        """``P``: the prefix of the merged fit outputs (``P_stats.parquet``, ...)."""
        return self.url(self.project)

    def stats_export(self, fmt: str) -> str:
        return self._p(f"_stats.{fmt}")


def trim_index_for(trimmed_grid_url: str) -> str:
    """``P_bin{s}_sub{u}[_gridsub{g}]_trim.hd5`` from the trimmed grid's BEAST-style name."""
    return trimmed_grid_url.removesuffix("_seds_trim.grid.hd5") + "_trim.hd5"


def fit_outputs(prefix: str) -> tuple[str, str, str, str]:
    """(stats, pdf1d, pdf2d, lnp) URLs of the fit (or merge) with this output prefix."""
    stats, pdf1d, pdf2d, lnp = (prefix + s for s in FIT_SUFFIXES)
    return stats, pdf1d, pdf2d, lnp


def fit_prefix_of(url: str) -> str:
    """A fit output prefix from the prefix itself or any of its four files."""
    for suf in FIT_SUFFIXES:
        if url.endswith(suf):
            return url[: -len(suf)]
    return url


# --------------------------------------------------------------------------
# names given by a user (the CLI's --grid / --out): read back
# --------------------------------------------------------------------------
def subgrid_in_name(url: str) -> int | None:
    """g of a file named ``...gridsub{g}...`` (None: a full grid)."""
    m = re.search(r"gridsub(\d+)", posixpath.basename(url))
    return int(m.group(1)) if m else None


def tag_in_name(prefix: str) -> str | None:
    """``bin{s}_sub{u}`` of a prefix named like the pipeline's (None: no such part)."""
    m = re.search(r"(bin[^_/]+_sub\d+)", posixpath.basename(prefix))
    return m.group(1) if m else None


# --------------------------------------------------------------------------
# the fan-out
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class SubFile:
    """One sub-file of the split: density bin s, flux sub-file u."""

    bin: int
    sub: int
    url: str
    n_rows: int


@dataclass(frozen=True)
class Layout:
    """What the split wrote: the non-empty sub-files and each bin's ASTs."""

    subfiles: tuple[SubFile, ...]
    asts: Mapping[int, str]

    def only_bins(self, bins: Sequence[int | str] | None) -> Layout:
        """The sub-files and ASTs of these density bins (None: all)."""
        if not bins:
            return self
        keep = {str(b) for b in bins}
        return Layout(
            tuple(f for f in self.subfiles if str(f.bin) in keep),
            {s: u for s, u in self.asts.items() if str(s) in keep},
        )


def read_layout(manifest_url: str, need_asts: bool = True) -> Layout:
    """The layout of a split manifest (relative URLs are against the manifest's folder).

    With ``need_asts`` every bin that holds stars must have ASTs: its noise
    model cannot be built otherwise.
    """
    man = storage.read_json(manifest_url)
    root = manifest_url.rsplit("/", 1)[0]  # the manifest sits in the output root
    subfiles = tuple(
        SubFile(int(e["bin"]), int(e["sub"]), storage.resolve(e["url"], root), int(e["n_rows"]))
        for e in man["subfiles"]
        if int(e["n_rows"]) > 0
    )
    asts = {int(e["bin"]): storage.resolve(e["url"], root) for e in man.get("asts", [])}
    missing = sorted({f.bin for f in subfiles} - set(asts)) if need_asts else []
    if missing:
        raise ValueError(
            f"density bins {missing} hold stars but no artificial-star tests after the cuts, so their noise "
            f"model cannot be built (split manifest {manifest_url}); add ASTs there or merge the bins "
            "(observations.source_density)"
        )
    return Layout(subfiles, asts)


@dataclass(frozen=True)
class NoiseCell:
    """One noise model: density bin s (None: one for every bin) on subgrid g."""

    bin: int | None
    subgrid: int | None
    ast_url: str | None

    @property
    def label(self) -> str:
        gl = grid_label(self.subgrid)
        return gl if self.bin is None else f"bin{self.bin}_{gl}"


def noise_cells(asts: Mapping[int | None, str | None], grids: Sequence[int | None]) -> list[NoiseCell]:
    """One noise model per (AST set, subgrid), bins in order: ``asts`` maps a density bin
    (None: every bin) to its ASTs (None: the splinter model, which reads none)."""
    order = sorted(asts, key=lambda s: -1 if s is None else s)
    return [NoiseCell(s, g, asts[s]) for s in order for g in grids]


def noise_label(s: int | None, g: int | None) -> str:
    """Label of the noise model that bin s (None: every bin) uses on subgrid g."""
    return NoiseCell(s, g, None).label


@dataclass(frozen=True)
class Cell:
    """One trim and fit: sub-file (s, u) on subgrid g."""

    subfile: SubFile
    subgrid: int | None

    @property
    def tag(self) -> str:
        """``bin{s}_sub{u}``: what the fit records for the merge."""
        return f"bin{self.subfile.bin}_sub{self.subfile.sub}"

    @property
    def label(self) -> str:
        return f"{self.tag}_{grid_label(self.subgrid)}"


def cells(layout: Layout, grids: Sequence[int | None]) -> list[Cell]:
    """Every (sub-file, subgrid), subgrid-major (all sub-files of g = 0 first)."""
    return [Cell(f, g) for g in grids for f in layout.subfiles]


def fan_order(label: str) -> tuple[int, ...]:
    """Sort key of ``bin{s}_sub{u}_gridsub{g}`` labels: numeric (bin 10 after bin 9)."""
    return tuple(int(x) for x in re.findall(r"\d+", label))
