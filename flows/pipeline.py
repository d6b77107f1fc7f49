"""Prefect flows: one per stage, and the pipeline that runs them in order.

Every flow takes ``settings`` — a settings file URL, a dict, or a
``beastflow.settings.Settings`` — and returns a ``StageRun`` whose ``urls``
are the stage's artifacts (``PipelineRun`` for the pipeline).  A stage flow
called on its own fetches what it needs by calling its upstream stage flows,
which are cache hits when their inputs are unchanged; the pipeline passes the
upstream results along instead.

    from beastflow.flows.pipeline import pipeline_flow, fit_flow
    run = pipeline_flow("field.toml")       # whole pipeline
    run.urls["merge"]                        # P_stats.parquet, P_pdf1d.hd5, ...
    fit_flow("field.toml")                   # only (re)fit, upstream from cache

With a ``[storage.globus]`` table the pipeline also moves files through Globus
(``beastflow.flows.transfer``): stage-in before the physics model, the SED grid to its
cache after it, the results out after the merge.

Fan-out: noise models over (density bin s) x (subgrid g), trims and fits over
(s, sub-file u, g), merge over everything.  Trim and fit go to the executor of
``[execution]`` (in-process tasks, a local process pool, or SLURM arrays).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from prefect import flow, get_run_logger

from . import stages
from .progress import publish_inputs, publish_summary
from .tasks import StageRun, run_units


class PipelineStop(RuntimeError):
    """The pipeline cannot go on without outside work (e.g. running the ASTs)."""


@dataclasses.dataclass
class PipelineRun:
    settings_source: str
    output: str
    #: stage -> StageRun
    stages: dict[str, StageRun]
    #: fitted-star summary (from the merged stats)
    summary: dict[str, Any]
    #: stages that did not run -> why
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Prefect flow-run id of the pipeline run (for its UI link)
    flow_run_id: str | None = None

    @property
    def urls(self) -> dict[str, list[str]]:
        return {name: run.urls for name, run in self.stages.items()}

    @property
    def states(self) -> dict[str, dict[str, str]]:
        """stage -> unit -> Prefect task state name ("Cached" or "Completed")."""
        return {name: dict(run.states) for name, run in self.stages.items()}


def load(settings: Any):
    """A settings file URL, dict or Settings (None: see ``settings_or_default``) -> activated Settings."""
    from beastflow.settings import Settings, load_settings, settings_from_dict

    from .settings_ref import is_reference, resolve

    settings = settings_or_default(settings)
    if is_reference(settings):  # what the pipeline passes its stage flows
        s = resolve(settings)
    elif isinstance(settings, Settings):
        s = settings
    elif isinstance(settings, dict):
        s = settings_from_dict(settings)
    elif isinstance(settings, (str, os.PathLike)):
        s = load_settings(os.fspath(settings))
    else:
        raise TypeError(f"settings must be a file URL, a dict or a Settings object, not {type(settings).__name__}")
    return s.activate()


def _ref(s) -> str:
    """Stage flows get the settings by reference: the Prefect database stores only that."""
    from .settings_ref import by_reference

    return by_reference(s)


def _one(run: StageRun) -> Any:
    (only,) = run.results.values()
    return only


# Flow options shared by every stage flow.  Parameters are not validated by
# Prefect because callers pass Settings objects and stage results (dataclasses)
# as well as plain URLs; ``load`` and the stage functions validate instead.
_FLOW = dict(validate_parameters=False, persist_result=False, log_prints=True)


@flow(name="physicsmodel", **_FLOW)
def physicsmodel_flow(settings: str | None = None) -> StageRun:
    """SED (sub)grids and the spectral grid with priors.

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
    """
    s = load(settings)
    return run_units(s, "physicsmodel", stages.physicsmodel_units(s))


@flow(name="density", **_FLOW)
def density_flow(settings: str | None = None, catalog: str | None = None) -> StageRun:
    """Source-density map and the catalog annotated with density bins.

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        catalog: photometry catalog (FITS or Parquet URL); empty: observations.catalog of the settings.
    """
    s = load(settings)
    catalog = catalog or s.observations.catalog
    if not catalog:
        raise ValueError("no photometry catalog: set observations.catalog in the settings or pass catalog=")
    return run_units(s, "density", stages.density_units(s, catalog))


@flow(name="cut", **_FLOW)
def cut_flow(settings: str | None = None, density: StageRun | None = None, asts: str | None = None) -> StageRun:
    """Catalog and AST cuts.

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        density: result of the density stage (passed by the pipeline; empty: from the cache).
        asts: AST results URL; empty: observations.ast_results (or the demo instrument).
    """
    s = load(settings)
    density = density or density_flow(_ref(s))
    if not asts and stages.needs_asts(s):
        asts = ast_results(s, density=density)[0]
    return run_units(s, "cut", stages.cut_units(s, _one(density), asts or None))


def ast_results(
    s, physics: StageRun | None = None, density: StageRun | None = None, ast_inputs: StageRun | None = None
) -> tuple[str, StageRun | None]:
    """URL of the AST results: from the settings, or "observed" by the demo instrument.

    A real field whose ASTs have not been run yet stops here with the list of
    AST inputs to run through the photometry pipeline (finished stages stay
    cached for the next run).
    """
    if s.observations.ast_results:
        return s.observations.ast_results, None
    from beastflow.demo import has_instrument

    ast_inputs = ast_inputs or ast_inputs_flow(_ref(s), physics=physics, density=density)
    if not has_instrument(s):
        raise PipelineStop(
            f"AST inputs written to {', '.join(ast_inputs.urls)}; run them through the photometry pipeline, "
            "set observations.ast_results to the results and run again (finished stages are cached)"
        )
    run = run_units(s, "demo_asts", stages.demo_asts_units(s, _one(ast_inputs)))
    return _one(run), run


@flow(name="split", **_FLOW)
def split_flow(settings: str | None = None, cut: StageRun | None = None, density: StageRun | None = None) -> StageRun:
    """Split by density bin, then by flux into sub-files.

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        cut: result of the cut stage (passed by the pipeline; empty: from the cache).
        density: result of the density stage (passed by the pipeline; empty: from the cache).
    """
    s = load(settings)
    density = density or density_flow(_ref(s))
    cut = cut or cut_flow(_ref(s), density=density)
    return run_units(s, "split", stages.split_units(s, _one(cut), _one(density)))


@flow(name="ast_inputs", **_FLOW)
def ast_inputs_flow(
    settings: str | None = None, physics: StageRun | None = None, density: StageRun | None = None
) -> StageRun:
    """Artificial-star inputs (SEDs and positions) for the photometry pipeline.

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        physics: result of the physicsmodel stage (passed by the pipeline; empty: from the cache).
        density: result of the density stage (passed by the pipeline; empty: from the cache).
    """
    s = load(settings)
    physics = physics or physicsmodel_flow(_ref(s))
    density = density or density_flow(_ref(s))
    return run_units(s, "ast_inputs", stages.ast_inputs_units(s, _one(physics), _one(density)))


@flow(name="noisemodel", **_FLOW)
def noisemodel_flow(
    settings: str | None = None, physics: StageRun | None = None, split: StageRun | None = None
) -> StageRun:
    """Noise model per (density bin, subgrid).

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        physics: result of the physicsmodel stage (passed by the pipeline; empty: from the cache).
        split: result of the split stage (passed by the pipeline; empty: from the cache).
    """
    s = load(settings)
    physics = physics or physicsmodel_flow(_ref(s))
    split = split or split_flow(_ref(s))
    layout = stages.split_layout(_one(split), stages.needs_asts(s))
    return run_units(s, "noisemodel", stages.noisemodel_units(s, _one(physics), layout))


@flow(name="trim", **_FLOW)
def trim_flow(
    settings: str | None = None,
    physics: StageRun | None = None,
    split: StageRun | None = None,
    noise: StageRun | None = None,
) -> StageRun:
    """Trimmed grid + noise model per (bin, sub-file, subgrid); SLURM arrays with executor = "slurm".

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        physics: result of the physicsmodel stage (passed by the pipeline; empty: from the cache).
        split: result of the split stage (passed by the pipeline; empty: from the cache).
        noise: result of the noisemodel stage (passed by the pipeline; empty: from the cache).
    """
    s = load(settings)
    physics = physics or physicsmodel_flow(_ref(s))
    split = split or split_flow(_ref(s))
    noise = noise or noisemodel_flow(_ref(s), physics=physics, split=split)
    layout = stages.split_layout(_one(split), stages.needs_asts(s))
    return run_units(s, "trim", stages.trim_units(s, _one(physics), layout, noise))


@flow(name="grid_info", **_FLOW)
def grid_info_flow(settings: str | None = None, physics: StageRun | None = None) -> StageRun:
    """PDF bins of every quantity over the full grid (shared by all fits).

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        physics: result of the physicsmodel stage (passed by the pipeline; empty: from the cache).
    """
    s = load(settings)
    physics = physics or physicsmodel_flow(_ref(s))
    return run_units(s, "grid_info", stages.grid_info_units(s, _one(physics)))


@flow(name="fit", **_FLOW)
def fit_flow(
    settings: str | None = None,
    split: StageRun | None = None,
    trim: StageRun | None = None,
    grid_info: StageRun | None = None,
) -> StageRun:
    """Fit per (bin, sub-file, subgrid); SLURM arrays with executor = "slurm".

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        split: result of the split stage (passed by the pipeline; empty: from the cache).
        trim: result of the trim stage (passed by the pipeline; empty: from the cache).
        grid_info: result of the grid_info stage (passed by the pipeline; empty: from the cache).
    """
    s = load(settings)
    split = split or split_flow(_ref(s))
    trim = trim or trim_flow(_ref(s), split=split)
    grid_info = grid_info or grid_info_flow(_ref(s))
    layout = stages.split_layout(_one(split), stages.needs_asts(s))
    return run_units(s, "fit", stages.fit_units(s, layout, trim, _one(grid_info)))


@flow(name="merge", **_FLOW)
def merge_flow(settings: str | None = None, fit: StageRun | None = None) -> StageRun:
    """Merge the fits over subgrids and sub-files into P_stats / P_pdf1d / P_pdf2d / P_lnp.

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        fit: result of the fit stage (passed by the pipeline; empty: from the cache).
    """
    s = load(settings)
    fit = fit or fit_flow(_ref(s))
    run = run_units(s, "merge", stages.merge_units(s, fit))
    run.summary = stages.fit_summary(_one(run))
    publish_summary("fit", run.summary, "fitted stars: counts and median posterior values")
    return run


@flow(name="beastflow-pipeline", **_FLOW)
def pipeline_flow(settings: str | None = None, catalog: str | None = None, asts: str | None = None) -> PipelineRun:
    """The whole BEAST pipeline on one field; every stage cached and retried.

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        catalog: photometry catalog URL; overrides observations.catalog of the settings (empty: keep it).
        asts: AST results URL; overrides observations.ast_results of the settings (empty: keep it).
    """
    s = load(settings)
    overrides = {k: v for k, v in (("catalog", catalog), ("ast_results", asts)) if v}
    if overrides:  # one place, so every stage (and the demo instrument) sees the same inputs
        s = s.model_copy(update={"observations": s.observations.model_copy(update=overrides)})
    from beastflow.lease import output_lease

    from .output_limit import output_concurrency

    # one run per output: a second run (UI, schedule, catalog watch) waits or stops naming this one
    with output_concurrency(s), output_lease(s.output, wait_s=s.execution.lease_wait_s):
        return _pipeline(s, settings)


def _pipeline(s, settings: str | None) -> PipelineRun:
    log = get_run_logger()
    runs: dict[str, StageRun] = {}
    # say in the run itself which field it processes (parameters may be empty: settings from the environment)
    log.info("settings %s -> output %s", s.source or "(embedded demo)", s.output)
    publish_inputs(s, settings)
    ref = _ref(s)  # the stage flows' Prefect parameters hold this reference, not the settings
    globus = s.storage.globus
    if globus is not None:  # [storage.globus]: inputs (and a cached SED grid) arrive through Globus first
        from .transfer import grid_cache_flow, stage_in_flow

        runs["stage_in"] = stage_in_flow(ref)
    # fail in seconds on a missing or unreadable input, not after hours of physics model
    from beastflow.preflight import check_run_inputs

    check_run_inputs(s)
    runs["physicsmodel"] = physicsmodel_flow(ref)
    if globus is not None and globus.grid_cache_path is not None:
        runs["grid_cache"] = grid_cache_flow(ref, physics=runs["physicsmodel"])
    runs["density"] = density_flow(ref)
    skipped: dict[str, str] = {}
    if stages.needs_asts(s):
        runs["ast_inputs"] = ast_inputs_flow(ref, physics=runs["physicsmodel"], density=runs["density"])
        asts, demo_run = ast_results(s, ast_inputs=runs["ast_inputs"])
        if demo_run is not None:
            runs["demo_asts"] = demo_run
    else:
        if s.observations.ast_results:  # --asts on the command line (the settings reject it)
            raise ValueError(
                f"AST results {s.observations.ast_results} given, but {stages.SPLINTER_SKIP}; "
                "drop them or choose another [noise_model] model"
            )
        asts = None
        skipped = {"ast_inputs": stages.SPLINTER_SKIP, "demo_asts": stages.SPLINTER_SKIP}
        log.info("AST stages skipped: %s", stages.SPLINTER_SKIP)
    runs["cut"] = cut_flow(ref, density=runs["density"], asts=asts)
    runs["split"] = split_flow(ref, cut=runs["cut"], density=runs["density"])
    runs["noisemodel"] = noisemodel_flow(ref, physics=runs["physicsmodel"], split=runs["split"])
    runs["trim"] = trim_flow(ref, physics=runs["physicsmodel"], split=runs["split"], noise=runs["noisemodel"])
    runs["grid_info"] = grid_info_flow(ref, physics=runs["physicsmodel"])
    runs["fit"] = fit_flow(ref, split=runs["split"], trim=runs["trim"], grid_info=runs["grid_info"])
    runs["merge"] = merge_flow(ref, fit=runs["fit"])
    if globus is not None and globus.stage_out:
        from .transfer import stage_out_flow

        runs["stage_out"] = stage_out_flow(ref, merge=runs["merge"])
    summary = runs["merge"].summary
    # the summary belongs on the run a user opens, not only on the merge sub-flow
    publish_summary("fit", summary, "fitted stars: counts and median posterior values")
    cached = [n for n, r in runs.items() if r.all_cached]
    log.info(
        "pipeline done: %d stars fitted; stages from cache: %s", summary.get("stars", 0), ", ".join(cached) or "none"
    )
    from prefect.runtime import flow_run

    return PipelineRun(s.source, s.output, runs, summary, skipped, flow_run_id=flow_run.id)


def settings_or_default(settings: Any) -> Any:
    """``settings``, else $BEASTFLOW_SETTINGS, else the embedded demo field.

    Deployments started from the UI with default parameters get their
    settings from the environment of the worker that runs them.
    """
    if settings is not None:
        return settings
    env = os.environ.get("BEASTFLOW_SETTINGS")
    return env if env else demo_settings()


def demo_settings():
    """Settings of the embedded demo field (``beastflow.demo.prepare_demo``)."""
    from beastflow.demo import prepare_demo

    out = os.environ.get("BEASTFLOW_DEMO_OUTPUT", "demo-output")
    return prepare_demo(out if "://" in out else os.path.abspath(out))


STAGE_FLOWS = {
    "physicsmodel": physicsmodel_flow,
    "density": density_flow,
    "cut": cut_flow,
    "split": split_flow,
    "ast_inputs": ast_inputs_flow,
    "noisemodel": noisemodel_flow,
    "trim": trim_flow,
    "grid_info": grid_info_flow,
    "fit": fit_flow,
    "merge": merge_flow,
}

__all__ = ["pipeline_flow", "STAGE_FLOWS", "PipelineRun", "PipelineStop", "load"] + [
    f.__name__ for f in STAGE_FLOWS.values()
]
