"""Plots and the HTML report on a small synthetic run output (no pipeline needed)."""

from __future__ import annotations

import re
import struct

import numpy as np
import polars as pl
import pytest

from beastflow import storage
from beastflow.demo import _write_parquet
from beastflow.fit.grid_info import Bins, symlog
from beastflow.fit.outputs import write_pdf1d, write_stats
from beastflow.io.noise_model import write_noise_model
from beastflow.io.sed_grid import write_sed_grid
from beastflow.physics.vega import vega_band_fluxes
from beastflow.report import find_artifacts, make_report
from beastflow.report.plots import recovery_metrics
from beastflow.run_records import record_prelude, run_timings, stage_timings

FILTERS = ["HST_WFC3_F336W", "HST_ACS_WFC_F475W", "HST_ACS_WFC_F814W"]
SHORT = ["F336W", "F475W", "F814W"]


def assert_png(path) -> tuple[int, int]:
    """A valid, non-empty PNG: signature, IHDR chunk with positive size, IEND at the end."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert w > 50 and h > 50
    assert data[-8:-4] == b"IEND"
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[0] == h and img.shape[1] == w
    assert np.ptp(img[..., :3]) > 0, f"{path} is blank"
    return w, h


def _bins(name, centres, log=False):
    c = np.asarray(centres, float)
    e = np.concatenate([[c[0] - (c[1] - c[0]) / 2], 0.5 * (c[1:] + c[:-1]), [c[-1] + (c[-1] - c[-2]) / 2]])
    return Bins(name=name, centres=c, edges=e, scaled_edges=np.log10(e) if log else e, log=log, clamp=False)


@pytest.fixture
def run_output(tmp_path):
    """A miniature run: stats, pdf1d, density map, ASTs, noise model, grid, truth, cache records."""
    out = tmp_path / "run"
    out.mkdir()
    rng = np.random.default_rng(1)
    P = "field"
    vega = vega_band_fluxes(FILTERS)
    n = 300
    truth = {
        "star_id": np.arange(n) + 100,
        "Av": rng.uniform(0, 2, n),
        "logA": rng.uniform(7, 10, n),
        "M_ini": 10 ** rng.uniform(0, 1, n),
    }
    mags = rng.uniform(20, 27, size=(n, 1)) + np.array([[0.5, 0.0, -1.0]])
    obs = 10 ** (-0.4 * mags) * vega
    data = {
        "Name": [f"x{i}" for i in range(n)],
        "star_id": truth["star_id"],
        "RA": rng.uniform(10, 10.01, n),
        "DEC": rng.uniform(41, 41.01, n),
    }
    for k, f in enumerate(FILTERS):
        data[f] = obs[:, k]
    sig = {"Av": 0.2, "logA": 0.3, "M_ini": 0.1}
    for q, s in sig.items():
        t = np.log10(truth[q]) if q == "M_ini" else truth[q]
        p50 = t + s * rng.standard_normal(n)  # calibrated: truth inside p16-p84 68% of the time
        vals = {"p16": p50 - s, "p50": p50, "p84": p50 + s, "Best": p50, "Exp": p50}
        for k2, v in vals.items():
            data[f"{q}_{k2}"] = 10**v if q == "M_ini" else v
    for k, f in enumerate(FILTERS):
        for s in ("Best", "Exp", "p16", "p50", "p84"):
            fac = {"p16": 0.9, "p84": 1.1}.get(s, 1.0)
            data[f"symlog{f}_wd_bias_{s}"] = symlog(obs[:, k] * fac)
    write_stats(str(out / f"{P}_stats.parquet"), pl.DataFrame(data), {"stage": "merge"}, {})
    # pdf1d in a different star order than the stats, to check the join by star_id
    perm = rng.permutation(n)
    bins = [
        _bins("Av", np.linspace(0, 2, 21)),
        _bins("logA", np.linspace(7, 10, 31)),
        _bins("M_ini", np.logspace(0, 1, 11), log=True),
    ]
    pdfs = {}
    for b in bins:
        p = rng.random((n, b.nbins))
        pdfs[b.name] = p / p.sum(axis=1, keepdims=True)
    write_pdf1d(
        str(out / f"{P}_pdf1d.hd5"),
        truth["star_id"][perm],
        np.zeros(n),
        bins,
        {k: v[perm] for k, v in pdfs.items()},
        {},
        {},
    )
    # density map: 4 x 3 tiles
    ra_e, dec_e = np.linspace(10, 10.01, 5), np.linspace(41, 41.01, 4)
    I, J = np.meshgrid(np.arange(4), np.arange(3), indexing="ij")
    tiles = {
        "i_ra": I.ravel(),
        "i_dec": J.ravel(),
        "value": rng.uniform(0, 3, 12),
        "min_ra": ra_e[I.ravel()],
        "max_ra": ra_e[I.ravel() + 1],
        "min_dec": dec_e[J.ravel()],
        "max_dec": dec_e[J.ravel() + 1],
    }
    _write_parquet(tiles, str(out / f"{P}_sourceden_map.parquet"), {})
    _write_parquet(
        {"star_id": truth["star_id"], "RA": data["RA"], "DEC": data["DEC"]}, str(out / f"{P}_catalog_sd.parquet"), {}
    )
    # ASTs: two density bins, completeness falling at the faint end
    for b in (1, 2):
        m = 2000
        amag = rng.uniform(18, 30, size=(m, 1)) + np.array([[0.5, 0.0, -1.0]])
        rec = rng.random(m) < 1 / (1 + np.exp((amag[:, 1] - 27 + 0.5 * b) / 0.3))
        ast = {"CUT_FLAG": np.zeros(m, np.int16)}
        for k, s in enumerate(SHORT):
            ast[f"{s}_IN"] = amag[:, k]
            fin = 10 ** (-0.4 * amag[:, k])
            ast[f"{s}_RATE"] = np.where(rec, fin * (1 + 0.05 * rng.standard_normal(m)), 0.0)
        _write_parquet(ast, str(out / f"{P}_asts_bin{b}.parquet"), {})
        if b == 1:
            _write_parquet(ast, str(out / f"{P}_asts_cut.parquet"), {})
    # grid + noise model on it
    ng = 500
    gm = rng.uniform(18, 30, size=(ng, 1)) + np.array([[0.5, 0.0, -1.0]])
    seds = 10 ** (-0.4 * gm) * vega
    grid_url = write_sed_grid(
        str(out / f"{P}_seds.grid.hd5"),
        FILTERS,
        np.array([3360.0, 4750.0, 8100.0]),
        seds,
        {"Av": rng.uniform(0, 2, ng), "weight": np.ones(ng)},
    )
    err = seds * (0.02 + 10 ** (0.4 * (gm - 27)))
    write_noise_model(
        str(out / f"{P}_bin1_noisemodel.hd5"), FILTERS, 0.05 * err, err, np.ones_like(err), sed_grid=grid_url
    )
    _write_parquet(truth, str(out / f"{P}_truth.parquet"), {})
    for stage, secs in (("physicsmodel", [2.5]), ("fit", [1.0, 2.0, 0.5])):
        for i, s in enumerate(secs):
            storage.write_json(
                str(out / ".cache" / stage / f"u{i}.json"),
                {"stage": stage, "seconds": s, "created": f"2026-01-01T00:00:0{i}"},
            )
    return out, truth


@pytest.mark.slow  # a whole report (plots of every section): in make test, not the inner loop
def test_report_on_synthetic_run(run_output):
    out, truth = run_output
    rep = make_report(str(out))
    names = sorted(p.rsplit("/", 1)[1] for p in rep.images)
    field = {
        "cmd.png",
        "density_map.png",
        "ast_completeness.png",
        "noise_model.png",
        "pdf1d_examples.png",
        "sed_examples.png",
        "recovery.png",
        "timings.png",
    }
    assert field <= set(names)
    # the three example stars get their own pages (no 2-D PDFs in this run: SED + 1-D PDFs)
    # field-wide additions: prior vs stacked posterior, maps on the density tiles
    assert {"prior_vs_posterior.png", "tile_maps.png"} <= set(names)
    stars = sorted(n for n in names if n.startswith("star_"))
    assert len(stars) == 6 and all(re.fullmatch(r"star_\d+_(sed|pdf1d)\.png", n) for n in stars), stars
    assert not [s for s in rep.sections if s.error], [s.error for s in rep.sections]
    for p in rep.images:
        assert_png(p)
    page = open(rep.index).read()
    for nm in field:
        assert f"src='{nm}'" in page
    for nm in {n.rsplit("_", 1)[0] + ".html" for n in stars}:
        assert f"href='{nm}'" in page and (out / "report" / nm).exists()
    # calibrated synthetic posteriors: the recovery numbers are those of a unit normal
    for q in ("Av", "logA"):
        m = rep.recovery[q]
        assert m["n"] == 300
        assert abs(m["median_z"]) < 0.2
        assert 0.6 < m["coverage_68"] < 0.76
    assert "Recovery summary" in page


def test_report_skips_missing_sections_and_reports_broken_ones(run_output):
    out, _ = run_output
    (out / "field_sourceden_map.parquet").unlink()
    (out / "field_bin1_noisemodel.hd5").write_bytes(b"not hdf5")
    rep = make_report(str(out))
    titles = {s.title: s for s in rep.sections}
    assert "Source-density map" not in titles
    broken = titles["Noise model"]
    assert broken.error and not broken.images
    assert "could not be drawn" in open(rep.index).read()


def test_find_artifacts_and_timings(run_output, tmp_path):
    out, _ = run_output
    art = find_artifacts(str(out))
    assert art.project == "field"
    assert sorted(art.asts_per_bin) == [1, 2]
    assert art.truth.endswith("field_truth.parquet")
    secs, units = stage_timings(str(out))
    assert list(secs) == ["physicsmodel", "fit"]
    assert secs["fit"] == pytest.approx(3.5) and units["fit"] == 3
    # work done before the pipeline (the demo's field and grid) comes first, as one unit
    record_prelude(str(out), {"field + grid": 4.0}, {"field": "300 stars"})
    secs, units = run_timings(str(out))
    assert list(secs) == ["field + grid", "physicsmodel", "fit"] and units["field + grid"] == 1
    assert stage_timings(str(tmp_path)) == ({}, {})
    with pytest.raises(FileNotFoundError, match="merged stats"):
        find_artifacts(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such output"):
        find_artifacts(str(tmp_path / "nope"))


def test_recovery_metrics_detects_bias_and_overconfidence():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 1, 5000)
    p50 = t + 0.1 * rng.standard_normal(5000)
    ok = recovery_metrics(p50 - 0.1, p50, p50 + 0.1, t)
    assert abs(ok["median_z"]) < 0.05 and abs(ok["coverage_68"] - 0.683) < 0.02
    biased = recovery_metrics(p50 + 0.05, p50 + 0.15, p50 + 0.25, t)
    assert biased["median_z"] > 1.0
    narrow = recovery_metrics(p50 - 0.03, p50, p50 + 0.03, t)
    assert narrow["coverage_68"] < 0.3


@pytest.mark.slow  # a whole report (plots of every section): in make test, not the inner loop
def test_cli_report(run_output, capsys):
    from beastflow.cli import main

    out, _ = run_output
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "report:" in text and "index.html" in text
    assert "recovery Av" in text
    assert (out / "report" / "recovery.png").exists()
    # a folder without a finished run: one clear error line, status 1
    assert main(["report", str(out / "report")]) == 1
    assert "merged stats" in capsys.readouterr().err


@pytest.mark.slow  # a whole report (plots of every section): in make test, not the inner loop
def test_run_cli_ends_with_the_report(run_output, capsys):
    """`beastflow run` finishes by writing the report and printing where it is."""
    from beastflow.cli.run import _write_report

    out, _ = run_output
    _write_report(str(out))
    text = capsys.readouterr().out
    assert f"report: {out}/report/index.html" in text
    assert "recovery Av" in text
    # a broken output folder does not fail the finished run: a hint on stderr instead
    _write_report(str(out / "missing"))
    assert "beastflow report" in capsys.readouterr().err
