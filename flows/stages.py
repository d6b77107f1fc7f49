"""Units of every stage: which stage function, which inputs, which settings.

This module turns the stage contract (docs/stages.md) into ``Unit`` lists:
one unit per call of a stage function, labelled by its place in the fan-out
(bin s, sub-file u, subgrid g), with the input artifacts and the settings
sections that form its cache key.  Artifact names and the fan-out come from
``beastflow.plan`` (the CLI uses the same).  It only *describes* calls; running
them (cached, retried, on SLURM) is ``beastflow.flows.tasks``' job.  No Prefect import.

Settings sections per stage: a stage is keyed on the sections it reads.
Sections of upstream stages may be listed too (harmless: their effect reaches
the stage through its inputs' content hashes anyway); ``[execution]`` never
is, so changing executor, retries or SLURM options reuses every cached result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from beastflow import plan, storage

from .executors import Unit

#: pipeline order (the CLI and the UI list stages in this order)
STAGES = ["physicsmodel", "density", "cut", "split", "ast_inputs", "noisemodel", "trim", "grid_info", "fit", "merge"]

SECTIONS: dict[str, tuple[str, ...]] = {
    "physicsmodel": ("compat", "physics"),
    "density": ("compat", "physics", "observations"),
    "cut": ("compat", "physics", "observations"),
    "split": ("compat", "physics", "observations"),
    "ast_inputs": ("compat", "physics", "observations", "asts"),
    "demo_asts": ("compat", "physics", "observations", "asts"),
    "noisemodel": ("compat", "physics", "noise_model"),
    "trim": ("compat", "physics", "noise_model", "trim"),
    "grid_info": ("compat", "physics", "fit"),
    "fit": ("compat", "physics", "observations", "noise_model", "trim", "fit"),
    "merge": ("compat", "physics", "fit"),
}

FUNCS = {
    "physicsmodel": "beastflow.physics.physicsmodel:run_physicsmodel",
    "density": "beastflow.observations.density:run_density_map",
    "cut": "beastflow.observations.cuts:run_cut",
    "split": "beastflow.observations.split:run_split",
    "ast_inputs": "beastflow.observations.ast_inputs:run_ast_inputs",
    "demo_asts": "beastflow.demo:observe_asts",
    "noisemodel": "beastflow.noise.toothpick:run_noisemodel",
    "trim": "beastflow.noise.trim:run_trim",
    "grid_info": "beastflow.fit.grid_info:run_grid_info",
    "fit": "beastflow.fit.fitting:run_fit",
    "merge": "beastflow.fit.merge:run_merge",
}


def _unit(stage: str, label: str, *args: Any, inputs: dict[str, Any], **kw: Any) -> Unit:
    return Unit(
        stage=stage, label=label, func=FUNCS[stage], args=tuple(args), inputs=inputs, sections=SECTIONS[stage], **kw
    )


def _size(urls: Sequence[str]) -> int:
    return sum(storage.size(u) for u in urls if u and storage.exists(u))


# --------------------------------------------------------------------------
# one unit per stage function call
# --------------------------------------------------------------------------
def physicsmodel_units(settings) -> list[Unit]:
    """One unit: the stage builds the spectral grid once and all subgrids from it."""
    ph = settings.physics
    external: dict[str, Any] = {}
    if ph.isochrones.source == "table" and ph.isochrones.table:
        external["isochrones"] = ph.isochrones.table
    for lib, url in sorted(ph.stellar_library.files.items()):
        external[f"stellib_{lib}"] = url
    return [_unit("physicsmodel", "seds", inputs=external)]


def density_units(settings, catalog_url: str) -> list[Unit]:
    return [_unit("density", "map", catalog_url, inputs={"catalog": catalog_url})]


def cut_units(settings, density, ast_url: str | None) -> list[Unit]:
    inputs = {"catalog": density.catalog_url}
    if ast_url:
        inputs["asts"] = ast_url
    return [_unit("cut", "cut", density.catalog_url, ast_url, inputs=inputs)]


def split_units(settings, cut, density) -> list[Unit]:
    inputs = {"catalog": cut.catalog_url, "map": density.map_url}
    if cut.ast_url:
        inputs["asts"] = cut.ast_url
    return [_unit("split", "split", cut.catalog_url, cut.ast_url, density.map_url, inputs=inputs)]


def ast_inputs_units(settings, physics, density) -> list[Unit]:
    grids = list(physics.sed_grids)
    return [
        _unit(
            "ast_inputs",
            "inputAST",
            grids,
            density.catalog_url,
            density.map_url,
            inputs={"sed_grids": grids, "catalog": density.catalog_url, "map": density.map_url},
        )
    ]


def demo_asts_units(settings, ast_inputs) -> list[Unit]:
    """The embedded demo only: "observe" the AST inputs through the demo instrument.

    Real fields get their AST results from the photometry pipeline
    (observations.ast_results); the demo catalog carries the model instrument
    that made it, and ``beastflow.demo.observe_asts`` plays that part.
    """
    url = ast_inputs.input_url  # P_inputAST.parquet
    return [_unit("demo_asts", "asts", url, inputs={"ast_inputs": url, "catalog": settings.observations.catalog})]


def grid_info_units(settings, physics) -> list[Unit]:
    grids = list(physics.sed_grids)
    return [_unit("grid_info", "grid_info", grids, inputs={"sed_grids": grids})]


# --------------------------------------------------------------------------
# fan-out over density bins s, sub-files u, subgrids g
# --------------------------------------------------------------------------
def needs_asts(settings) -> bool:
    """False for the splinter noise model: no AST stage runs (ast_inputs, demo_asts)."""
    return settings.noise_model.model != "splinter"


#: why the AST stages do not run with the splinter noise model (CLI summary, flow log)
SPLINTER_SKIP = (
    'noise_model.model = "splinter": the noise model is a fixed fraction of each model flux, '
    "so no artificial-star tests are made or read"
)


def split_layout(split, need_asts: bool = True) -> plan.Layout:
    """Bins, sub-files (with row counts) and per-bin AST files from the split manifest."""
    return plan.read_layout(split.manifest_url, need_asts)


def noisemodel_units(settings, physics, layout: plan.Layout) -> list[Unit]:
    names = plan.Names.of(settings)
    grids = list(physics.sed_grids)
    subgrids = plan.subgrids(len(grids))
    # splinter: the model depends on the grid only, not on a density bin's ASTs
    asts: dict[int | None, str | None] = dict(layout.asts) if needs_asts(settings) else {None: None}
    units = []
    for c in plan.noise_cells(asts, subgrids):
        grid = grids[subgrids.index(c.subgrid)]
        inputs = {"sed_grid": grid}
        if c.ast_url:
            inputs["asts"] = c.ast_url
        if settings.noise_model.absflux_covariance:
            inputs["absflux_covariance"] = settings.noise_model.absflux_covariance
        out = names.noise_model(c.bin, c.subgrid)
        units.append(_unit("noisemodel", c.label, grid, c.ast_url, out, inputs=inputs))
    return units


def _noise_bin(settings, cell: plan.Cell) -> int | None:
    """The density bin whose noise model a cell uses (None: the splinter model, one for every bin)."""
    return cell.subfile.bin if needs_asts(settings) else None


def _array_bytes(grid_url: str, noise_url: str) -> tuple[int, int]:
    """(bytes in memory of grid + noise model, models): the files are compressed, so
    their sizes understate what a process holds once it has read them."""
    from beastflow.io.hdf5_arrays import open_h5
    from beastflow.io.sed_grid import SEDGrid

    g = SEDGrid(grid_url)
    with open_h5(noise_url) as h5:
        per_row = sum(int(np.prod(h5[k].shape[1:])) for k in h5 if hasattr(h5[k], "shape") and h5[k].ndim)
    return g.nbytes + 8 * g.n_models * per_row, g.n_models


def _trim_block_bytes(settings, grid_url: str, noise_url: str) -> int:
    """Memory a trim needs: it streams one block of the grid and noise model at a time.

    Requested as if two blocks were alive (the block being tested and the
    writers' buffers), which bounds it also for small grids (whole file).
    """
    total, n_models = _array_bytes(grid_url, noise_url)
    frac = min(1.0, 2.0 * settings.trim.chunk_models / max(1, n_models))
    return int(total * frac)


def trim_units(settings, physics, layout: plan.Layout, noise_run) -> list[Unit]:
    """One unit per (bin s, sub-file u, subgrid g): failures and retries are per sub-file."""
    from beastflow.noise.trim import TrimJob

    names = plan.Names.of(settings)
    grids = list(physics.sed_grids)
    subgrids = plan.subgrids(len(grids))
    units = []
    for c in plan.cells(layout, subgrids):
        grid = grids[subgrids.index(c.subgrid)]
        f = c.subfile
        noise_url = noise_run.results[plan.noise_label(_noise_bin(settings, c), c.subgrid)]
        prefix = names.prefix(f.bin, f.sub, c.subgrid)
        # the artifact is the kept-row index; the copies are written only with [trim] materialize
        out_grid, out_noise = names.trimmed(prefix)
        job = TrimJob(
            catalog_url=f.url,
            out_grid_url=out_grid,
            out_noise_url=out_noise,
            out_index_url=plan.trim_index_for(out_grid),
        )
        units.append(
            _unit(
                "trim",
                c.label,
                grid,
                noise_url,
                [job],
                inputs={"sed_grid": grid, "noise": noise_url, "catalog": f.url},
                mem_bytes=_trim_block_bytes(settings, grid, noise_url),
                n_stars=f.n_rows,
            )
        )
    return units


def _kept_bytes(tr) -> int:
    """Memory a fit needs: the kept share of its grid + noise model (the fit streams only those rows)."""
    total, n_models = _array_bytes(tr.source_grid, tr.source_noise)
    return int(total * tr.n_kept / max(1, n_models))


def fit_units(settings, layout: plan.Layout, trim_run, grid_info) -> list[Unit]:
    """One unit per (bin s, sub-file u, subgrid g): the full (sub)grid and noise model read
    through the sub-file's trim index; memory from the kept set's size."""
    names = plan.Names.of(settings)
    units = []
    for c in plan.cells(layout, plan.subgrids(settings.physics.n_subgrid)):
        f = c.subfile
        (tr,) = trim_run.results[c.label]
        info_url = grid_info.grid_info
        units.append(
            Unit(
                stage="fit",
                label=c.label,
                func=FUNCS["fit"],
                args=(tr.source_grid, tr.source_noise, f.url, info_url, names.prefix(f.bin, f.sub, c.subgrid)),
                kwargs={"subgrid": c.subgrid, "tag": c.tag, "trim_index": tr.index_url},
                inputs={
                    "trim_index": tr.index_url,
                    "sed_grid": tr.source_grid,
                    "noise": tr.source_noise,
                    "catalog": f.url,
                    "grid_info": info_url,
                },
                sections=SECTIONS["fit"],
                mem_bytes=_kept_bytes(tr),
                n_stars=f.n_rows,
            )
        )
    return units


def merge_units(settings, fit_run) -> list[Unit]:
    """One unit: merge over subgrids per sub-file, then concatenate the sub-files (run_merge does both)."""
    fits = [fit_run.results[label] for label in sorted(fit_run.results, key=plan.fan_order)]
    files = [u for r in fits for u in (r.stats, r.pdf1d, r.pdf2d, r.lnp)]
    return [_unit("merge", "merge", fits, plan.Names.of(settings).merged_prefix(), inputs={"fits": files})]


def fit_summary(merged) -> dict[str, Any]:
    """Counts and median best-fit values of the fitted stars (for the UI and the CLI)."""
    import polars as pl

    with storage.open_url(merged.stats, "rb") as fh:
        df = pl.read_parquet(fh)
    out: dict[str, Any] = {"stars": df.height, "stats": merged.stats}
    for q in ("logA", "M_ini", "Av", "Rv", "f_A", "Z", "distance"):
        col = f"{q}_p50"
        if col in df.columns and df.height:
            out[f"median {col}"] = round(float(df[col].median()), 4)
    if "chi2min" in df.columns and df.height:
        out["median chi2min"] = round(float(df["chi2min"].median()), 3)
    return out
