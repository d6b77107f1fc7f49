"""The embedded demo: a synthetic M31-like field that the whole pipeline runs on offline.

``prepare_demo(output_url)`` writes, below ``output_url``:

- ``demo_settings.toml`` — the package's demo settings (``beastflow/data``),
  pointing at the files next to it;
- the SED grid of those settings (the physics-model stage; the pipeline's own
  physics step later finds it up to date and reuses it);
- ``demo_catalog.parquet`` — the photometry of the synthetic field, with the
  model instrument that observed it in its Parquet metadata;
- ``demo_truth.parquet`` — the true parameters of every catalogue star;
- ``demo_instrument.json`` — the instrument, for humans;
- ``run_prelude.json`` — seconds spent on the physics model and the field
  (``beastflow.run_records``: the report shows them with the stages' times).

and returns the loaded ``Settings``.  The demo has no external photometry
pipeline for artificial stars, so ``observe_asts(settings, ast_input_url)``
"recovers" the pipeline's AST input list through the same instrument; the
pipeline flow calls it whenever ``observations.ast_results`` is not set and
``has_instrument(settings)`` is true.
"""

from __future__ import annotations

import io
import json
import logging
import time
import tomllib
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from beastflow import plan, run_records, storage
from beastflow.demo.field import (
    INSTRUMENT_KEY,
    FieldGeometry,
    Instrument,
    default_instrument,
    make_field,
    observe_ast_list,
)

if TYPE_CHECKING:
    from beastflow.settings import Settings

log = logging.getLogger(__name__)

SETTINGS_NAME = "demo_settings.toml"
CATALOG_NAME = "demo_catalog.parquet"
TRUTH_NAME = "demo_truth.parquet"
INSTRUMENT_NAME = "demo_instrument.json"

#: Overrides of the packaged settings per demo size.  "small" is for tests:
#: a coarse grid (~1e4 models) and fewer artificial stars, same physics and
#: same instrument, so the pipeline path is identical and only the numbers shrink.
SIZES: dict[str, dict[str, Any]] = {
    "default": {},
    "small": {
        "physics": {
            "isochrones": {"logt": [6.8, 10.0, 0.2], "logmass_step": 0.1},
            "extinction": {"avs": [0.1, 2.3, 0.2], "rvs": [3.0, 4.0, 1.0], "fAs": [0.5, 1.0, 0.5]},
        },
        "observations": {"split": {"n_per_file": 400}},
        "asts": {"n_flux_bins": 20, "n_per_flux_bin": 5},
        "fit": {"lnp_npts": 50},
    },
}
DEFAULT_N_STARS = {"default": 3000, "small": 400}


def demo_settings_text() -> str:
    """The packaged demo settings (TOML text, with its comments)."""
    return resources.files("beastflow.data").joinpath(SETTINGS_NAME).read_text()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _patch_area(n_stars: int, mean_density: float) -> float:
    """Side (arcsec) of the square patch holding n_stars at the mean density."""
    return float(np.sqrt(n_stars / mean_density))


def _write_parquet(columns: dict[str, np.ndarray], url: str, metadata: dict[bytes, bytes]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tab = pa.table({k: np.asarray(v) for k, v in columns.items()})
    tab = tab.replace_schema_metadata({**(tab.schema.metadata or {}), **metadata})
    buf = io.BytesIO()
    pq.write_table(tab, buf, compression="zstd")
    storage.write_bytes(url, buf.getvalue())


def read_instrument(catalog_url: str) -> Instrument | None:
    """The instrument stored in a demo catalogue's Parquet metadata (None for other catalogues)."""
    import pyarrow.parquet as pq

    if not catalog_url.lower().endswith((".parquet", ".pq")) or not storage.exists(catalog_url):
        return None
    with storage.open_url(catalog_url, "rb") as fh:
        md = pq.read_schema(fh).metadata or {}
    return Instrument.from_json(md[INSTRUMENT_KEY]) if INSTRUMENT_KEY in md else None


def has_instrument(settings: Settings) -> bool:
    """True when the run's catalogue was made by the demo instrument (ASTs can be simulated)."""
    cat = settings.observations.catalog
    return bool(cat and read_instrument(cat) is not None)


def prepare_demo(
    output_url: str,
    n_stars: int | None = None,
    size: Literal["default", "small"] = "default",
    seed: int | None = None,
    mean_density: float = 1.2,
    force: bool = False,
) -> Settings:
    """Write the demo settings and synthetic field below ``output_url``; return the Settings.

    ``n_stars``: catalogue size (default 3000, "small": 400).  The patch's area
    scales with it so the source density (and thus crowding) stays realistic.
    ``size``: "default" (the README demo) or "small" (tests: coarse grid).
    Existing files are reused when they were made with the same arguments,
    unless ``force``.
    """
    from beastflow.physics.physicsmodel import run_physicsmodel
    from beastflow.physics.vega import vega_band_fluxes
    from beastflow.settings import load_settings

    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {sorted(SIZES)}")
    n_stars = int(n_stars if n_stars is not None else DEFAULT_N_STARS[size])
    if n_stars < 10:
        raise ValueError(f"the demo needs at least 10 stars, got n_stars={n_stars}")
    settings_url = storage.join(output_url, SETTINGS_NAME)
    text = demo_settings_text()
    if SIZES[size]:
        import tomli_w

        data = _merge(tomllib.loads(text), SIZES[size])
        text = (
            f"# beastflow demo settings, size {size!r} (the packaged demo settings with overrides)\n"
            + tomli_w.dumps(data)
        )
    if seed is not None:
        data = tomllib.loads(text)
        data["project"]["seed"] = int(seed)
        import tomli_w

        text = f"# beastflow demo settings, size {size!r}, seed {seed}\n" + tomli_w.dumps(data)
    storage.makedirs(output_url)
    if force or not storage.exists(settings_url) or storage.read_bytes(settings_url).decode() != text:
        storage.write_bytes(settings_url, text.encode())
    settings = load_settings(settings_url).activate()

    catalog_url = settings.observations.catalog
    if not catalog_url:
        raise ValueError(f"{settings_url}: observations.catalog must name the demo catalogue file")
    truth_url = storage.join(output_url, TRUTH_NAME)
    recipe = {
        "n_stars": n_stars,
        "size": size,
        "seed": settings.project.seed,
        "mean_density": mean_density,
        "physics": settings.section_hash("physics"),
    }
    if not force and storage.exists(catalog_url) and storage.exists(truth_url):
        import pyarrow.parquet as pq

        with storage.open_url(catalog_url, "rb") as fh:
            md = pq.read_schema(fh).metadata or {}
        if json.loads(md.get(b"beastflow.demo.recipe", b"{}")) == recipe:
            log.info("demo field %s is up to date", catalog_url)
            run_physicsmodel(settings)  # no-op when the grid is current
            return settings

    t0 = time.perf_counter()
    grids = run_physicsmodel(settings).sed_grids
    if len(grids) != 1:
        raise ValueError("the demo field is drawn from one SED grid; set physics.n_subgrid = 1 in the demo settings")
    t1 = time.perf_counter()
    filters = settings.physics.filters
    side = _patch_area(n_stars, mean_density)
    geometry = FieldGeometry(size_arcsec=side, mean_density=mean_density)
    instrument = default_instrument(
        filters, vega_band_fluxes(filters, settings.resolved_behaviour.physics.vega_positive_points), geometry
    )
    fld = make_field(grids[0], instrument, n_stars, seed=settings.project.seed)
    meta = {
        INSTRUMENT_KEY: instrument.to_json().encode(),
        b"beastflow.demo.recipe": json.dumps(recipe, sort_keys=True).encode(),
    }
    # truth first: a catalogue is only reused when its truth is there too
    _write_parquet(fld.truth, truth_url, meta)
    _write_parquet(fld.catalog, catalog_url, meta)
    storage.write_bytes(
        storage.join(output_url, INSTRUMENT_NAME), json.dumps(json.loads(instrument.to_json()), indent=2).encode()
    )
    # the pipeline's physics step will find the grid up to date, so its time is recorded here
    field_s = round(time.perf_counter() - t1, 3)
    run_records.record_prelude(
        output_url,
        {"demo field + grid": round(t1 - t0, 3) + field_s},
        {
            "demo field": f"{n_stars} detected stars, {round(fld.n_candidates / n_stars, 1)} placed per detected one",
        },
    )
    log.info(
        'demo field: %d stars over %.0f" x %.0f" (physics %.1f s, field %.1f s)',
        n_stars,
        side,
        side,
        t1 - t0,
        time.perf_counter() - t1,
    )
    return settings


def observe_asts(settings: Settings, ast_input_url: str, out_url: str | None = None) -> str:
    """Recover an AST input list through the demo instrument; return the AST results URL.

    ``ast_input_url``: the AST-input stage's ``P_inputAST.parquet`` (or its
    ``.txt``).  The result (``P_asts.parquet`` below the output folder unless
    ``out_url``) holds ``{B}_IN``, ``{B}_RATE``, ``{B}_VEGA``, ``{B}_FLAG``,
    ``CUT_FLAG``, ``RA``/``DEC``, ``X``/``Y``.
    """
    cat = settings.observations.catalog
    instrument = read_instrument(cat) if cat else None
    if not cat or instrument is None:
        raise ValueError(
            f"{cat}: not a demo catalogue (no instrument in its metadata); real runs need "
            "observations.ast_results from the photometry pipeline"
        )
    if instrument.filters != list(settings.physics.filters):
        raise ValueError(
            f"{cat}: the demo instrument observed {instrument.filters}, "
            f"but the settings fit {list(settings.physics.filters)}"
        )
    inputs = _read_ast_inputs(ast_input_url)
    out_url = out_url or plan.Names.of(settings).ingested("asts")
    # The noise comes from the stream (project seed, "demo.observe_asts"): never
    # from the list's values or the file's bytes (provenance, time stamps), so a
    # rerun, or a run on another CPU, observes the same list identically.
    seed = settings.project.seed
    res = observe_ast_list(instrument, inputs, seed)
    from beastflow.provenance import make_provenance

    prov = make_provenance(
        "demo.observe_asts", settings.section_hash("project"), inputs={"ast_inputs": ast_input_url, "catalog": cat}
    )
    _write_parquet(res, out_url, {b"beastflow_provenance": json.dumps(prov, sort_keys=True).encode()})
    n_rec = int(res["recovered"].sum())
    log.info("demo instrument recovered %d of %d artificial stars -> %s", n_rec, len(res["recovered"]), out_url)
    return out_url


def _read_ast_inputs(url: str) -> dict[str, np.ndarray]:
    if url.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        with storage.open_url(url, "rb") as fh:
            tab = pq.read_table(fh)
        return {c: tab.column(c).to_numpy() for c in tab.column_names}
    # DOLPHOT-style text list: header line of names, whitespace separated
    text = storage.read_bytes(url).decode().splitlines()
    if not text:
        raise ValueError(f"{url}: empty AST input list")
    names = text[0].split()
    rows = np.loadtxt(io.StringIO("\n".join(text[1:])), ndmin=2)
    if rows.shape[1] != len(names):
        raise ValueError(f"{url}: {rows.shape[1]} columns of numbers under {len(names)} names")
    return {n: rows[:, i] for i, n in enumerate(names)}


__all__ = [
    "prepare_demo",
    "observe_asts",
    "has_instrument",
    "read_instrument",
    "demo_settings_text",
    "SIZES",
    "DEFAULT_N_STARS",
]
