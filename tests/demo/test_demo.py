"""The embedded demo: settings, synthetic field files, AST hook, and the whole pipeline on it."""

from __future__ import annotations

import os
import tomllib

import numpy as np
import pyarrow.parquet as pq
import pytest

from beastflow import storage
from beastflow.demo import (
    DEFAULT_N_STARS,
    demo_settings_text,
    has_instrument,
    observe_asts,
    prepare_demo,
    read_instrument,
)
from beastflow.demo.field import INSTRUMENT_KEY
from beastflow.settings import load_settings, settings_from_dict


def test_packaged_demo_settings_are_valid_and_offline(tmp_path):
    text = demo_settings_text()
    data = tomllib.loads(text)
    (tmp_path / "s.toml").write_text(text)
    s = load_settings(str(tmp_path / "s.toml"))
    assert s.physics.stellar_library.libraries == ["atlas9", "planck"]  # embedded real atmospheres
    assert s.physics.stellar_library.download is False
    assert s.physics.isochrones.source == "parsec"
    assert len(s.physics.filters) == 6
    assert s.observations.ast_results is None  # ASTs come from the demo instrument
    assert s.output == str(tmp_path)  # output "." = next to the settings file
    assert data["physics"]["n_subgrid"] == 1


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    s = prepare_demo(str(out), n_stars=150, size="small", seed=7)
    return out, s


def test_prepare_demo_writes_field_and_settings(small_demo):
    out, s = small_demo
    assert (out / "demo_settings.toml").exists()
    assert s.observations.catalog == str(out / "demo_catalog.parquet")
    cat = pq.read_table(out / "demo_catalog.parquet")
    truth = pq.read_table(out / "demo_truth.parquet")
    assert cat.num_rows == truth.num_rows == 150
    for b in ("F275W", "F336W", "F475W", "F814W", "F110W", "F160W"):
        for suffix in ("RATE", "VEGA", "FLAG"):
            assert f"{b}_{suffix}" in cat.column_names
    for c in ("RA", "DEC", "X", "Y", "star_id"):
        assert c in cat.column_names
    for c in ("star_id", "sedgrid_indx", "Av", "logA", "M_ini", "Rv"):
        assert c in truth.column_names
    np.testing.assert_array_equal(cat["star_id"].to_numpy(), truth["star_id"].to_numpy())
    # truth rows are real grid rows: their parameters match the grid at sedgrid_indx
    from beastflow.io.sed_grid import SEDGrid

    g = SEDGrid(str(out / "demo_seds.grid.hd5"))
    idx = truth["sedgrid_indx"].to_numpy()
    np.testing.assert_allclose(g.column("Av")[idx], truth["Av"].to_numpy())
    np.testing.assert_allclose(g.column("logA")[idx], truth["logA"].to_numpy())
    ins = read_instrument(s.observations.catalog)
    assert ins is not None and ins.filters == list(s.physics.filters)
    assert has_instrument(s)
    assert (out / "demo_instrument.json").exists()


def test_prepare_demo_reuses_unchanged_field(small_demo):
    out, _ = small_demo
    before = os.stat(out / "demo_catalog.parquet").st_mtime_ns
    prepare_demo(str(out), n_stars=150, size="small", seed=7)
    assert os.stat(out / "demo_catalog.parquet").st_mtime_ns == before


def test_prepare_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown demo size"):
        prepare_demo(str(tmp_path), size="huge")
    with pytest.raises(ValueError, match="at least 10 stars"):
        prepare_demo(str(tmp_path), n_stars=3)
    assert DEFAULT_N_STARS["default"] >= 2000


def test_observe_asts_hook(small_demo, tmp_path):
    out, s = small_demo
    import pyarrow as pa

    cat = pq.read_table(out / "demo_catalog.parquet")
    n = 500
    rng = np.random.default_rng(0)
    sel = rng.integers(0, cat.num_rows, n)
    inputs = {"RA": cat["RA"].to_numpy()[sel], "DEC": cat["DEC"].to_numpy()[sel], "sd_bin": np.ones(n, np.int64)}
    for b in ("F275W", "F336W", "F475W", "F814W", "F110W", "F160W"):
        inputs[f"{b}_IN"] = rng.uniform(18, 32, n)
    url = str(tmp_path / "demo_inputAST.parquet")
    pq.write_table(pa.table(inputs), url)
    res_url = observe_asts(s, url, out_url=str(tmp_path / "asts.parquet"))
    res = pq.read_table(res_url)
    assert res.num_rows == n
    for c in ("F475W_IN", "F475W_RATE", "F475W_VEGA", "F475W_FLAG", "CUT_FLAG", "RA", "DEC", "sd_bin"):
        assert c in res.column_names
    rec = res["recovered"].to_numpy().astype(bool)
    assert 0 < rec.sum() < n  # some faint inputs are lost
    assert np.all(res["F475W_RATE"].to_numpy()[~rec] == 0)
    # the catalogue readers accept the result as an AST table
    from beastflow.observations.catalogs import read_asts

    df = read_asts(res_url, s.physics.filters)
    assert len(df) == n
    # same inputs, same run seed -> same "observation" (a rerun is reproducible)
    again = pq.read_table(observe_asts(s, url, out_url=str(tmp_path / "asts2.parquet")))
    np.testing.assert_array_equal(again["F814W_RATE"].to_numpy(), res["F814W_RATE"].to_numpy())


def test_observe_asts_refuses_real_catalogs(tmp_path):
    import pyarrow as pa

    url = str(tmp_path / "cat.parquet")
    pq.write_table(pa.table({"RA": [1.0]}), url)
    s = settings_from_dict({"observations": {"catalog": url}})
    assert not has_instrument(s)
    with pytest.raises(ValueError, match="not a demo catalogue"):
        observe_asts(s, url)
    meta = pq.read_schema(url).metadata or {}
    assert INSTRUMENT_KEY not in meta


@pytest.mark.slow
@pytest.mark.pipeline
@pytest.mark.usefixtures("prefect_fast")
def test_demo_pipeline_recovers_the_truth(tmp_path):
    """The demo at reduced size (800 stars, seed 1) through the real Prefect pipeline, then the report.

    Calibration (docs/demo.md): for A(V), log age and M_ini, 68 % +- 5 % of the
    truths inside p16-p84 (grid-valued truths spread over their PDF cells,
    beastflow.report.recovery) and |median (fit - truth)/sigma| < 0.15.  With
    ~790 stars the binomial error of a coverage is 1.7 %, so +-5 % is 3 sigma;
    the sampling error of a median z is ~1.25/sqrt(790) = 0.045, so 0.15 is
    3.3 sigma.  The field and its ASTs are the same on every machine (streams
    keyed by the seed), so this is one fixed draw, not a new one per CPU.
    """
    import polars as pl

    from beastflow.fit.outputs import read_pdf1d
    from beastflow.flows.pipeline import pipeline_flow
    from beastflow.report import make_report
    from beastflow.report.recovery import recovery_metrics
    from tests.report.test_report import assert_png

    out = tmp_path / "demo-output"
    s = prepare_demo(str(out), n_stars=800, size="default", seed=1)
    run = pipeline_flow(s)
    assert run.summary["stars"] > 700  # a few are cut as flagged
    stats = pl.read_parquet(out / "demo_stats.parquet")
    truth = pl.read_parquet(out / "demo_truth.parquet")
    j = stats.join(
        truth.select(["star_id", "Av", "logA", "M_ini"]).rename(lambda c: f"true_{c}"),
        left_on="star_id",
        right_on="true_star_id",
    )
    bins = read_pdf1d(str(next(out.glob("demo_bin*_sub*_pdf1d.hd5"))), ["Av", "logA", "M_ini"])
    for q in ("Av", "logA", "M_ini"):
        m = recovery_metrics(
            *(j[f"{q}_{p}"].to_numpy() for p in ("p16", "p50", "p84")),
            j[f"true_{q}"].to_numpy(),
            bins["centres"][q],
            bins["edges"][q],
            bins["log"][q],
            label=q,
        )
        assert m["n"] > 700
        assert abs(m["median_z"]) < 0.15, (q, m)
        assert abs(m["coverage_68"] - 0.68) < 0.05, (q, m)
    rep = make_report(s.output)
    assert not [x for x in rep.sections if x.error], [x.error for x in rep.sections]
    names = {p.rsplit("/", 1)[1] for p in rep.images}
    assert {
        "cmd.png",
        "density_map.png",
        "ast_completeness.png",
        "noise_model.png",
        "pdf1d_examples.png",
        "sed_examples.png",
        "recovery.png",
        "timings.png",
        "prior_vs_posterior.png",
        "stacked_corner.png",
        "tile_maps.png",
        "chi2_vs_mag.png",
        "recovery_by_snr.png",
    } <= names
    assert len([n for n in names if n.startswith("star_")]) == 9  # three example stars, three plots each
    for p in rep.images:
        assert_png(p)
    assert storage.exists(rep.index)


def test_observe_asts_seed_ignores_file_metadata(small_demo, tmp_path):
    """Reruns write AST inputs with new provenance (timestamps); the simulated ASTs must not change."""
    import pyarrow as pa

    _, s = small_demo
    n = 200
    rng = np.random.default_rng(1)
    cols = {"RA": np.full(n, 11.02), "DEC": np.full(n, 41.75)}
    for b in ("F275W", "F336W", "F475W", "F814W", "F110W", "F160W"):
        cols[f"{b}_IN"] = rng.uniform(20, 30, n)
    urls = []
    for i, stamp in enumerate((b"2026-01-01", b"2026-02-02")):
        u = str(tmp_path / f"in{i}.parquet")
        pq.write_table(pa.table(cols).replace_schema_metadata({b"created": stamp}), u)
        urls.append(observe_asts(s, u, out_url=str(tmp_path / f"out{i}.parquet")))
    a, b = (pq.read_table(u) for u in urls)
    np.testing.assert_array_equal(a["F475W_RATE"].to_numpy(), b["F475W_RATE"].to_numpy())


def test_observe_asts_noise_is_keyed_by_seed_not_by_values(small_demo, tmp_path):
    """The AST noise stream is (project seed, "demo.observe_asts"): inputs that differ in
    their last bits (another CPU) are observed with the same noise, not re-drawn."""
    import pyarrow as pa

    _, s = small_demo
    n = 300
    rng = np.random.default_rng(2)
    cols = {"RA": np.full(n, 11.02), "DEC": np.full(n, 41.75)}
    for b in ("F275W", "F336W", "F475W", "F814W", "F110W", "F160W"):
        cols[f"{b}_IN"] = rng.uniform(20, 26, n)
    nudged = {k: (np.nextafter(v, np.inf) if k.endswith("_IN") else v) for k, v in cols.items()}
    out = []
    for i, c in enumerate((cols, nudged)):
        u = str(tmp_path / f"in{i}.parquet")
        pq.write_table(pa.table(c), u)
        out.append(pq.read_table(observe_asts(s, u, out_url=str(tmp_path / f"out{i}.parquet"))))
    for b in ("F475W", "F814W"):
        np.testing.assert_allclose(out[0][f"{b}_RATE"].to_numpy(), out[1][f"{b}_RATE"].to_numpy(), rtol=1e-9)
