"""One star's page and one-star PDF access, on the synthetic run of test_report."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from beastflow.fit.grid_info import Bins
from beastflow.fit.outputs import (
    PDF2DWriter,
    read_pdf1d,
    read_star_pdf1d,
    read_star_pdf2d,
    read_stats,
    write_stats,
)
from beastflow.io.hdf5_arrays import open_h5
from beastflow.io.sed_grid import SEDGrid
from beastflow.report.artifacts import find_artifacts
from beastflow.report.star import best_model_and_noise, make_star_pages
from beastflow.report.star_plots import support_range

from .test_report import FILTERS, assert_png, run_output  # noqa: F401 - fixture


def _with_best_model(out, gid: np.ndarray) -> None:
    """Give the synthetic stats the columns a fit writes: best model row and density bin."""
    url = str(out / "field_stats.parquet")
    df, info = read_stats(url)
    df = df.with_columns(
        pl.Series("Pmax_gid", gid),
        pl.lit(1).alias("sd_bin"),
        pl.lit(-1).alias("best_gridsub"),
        pl.lit(3.0).alias("chi2min"),
    )
    write_stats(url, df, info["provenance"], info["meta"])


def _write_pdf2d(out, ids):
    def bins(name, c):
        c = np.asarray(c, float)
        e = np.r_[c[0] - 0.05, 0.5 * (c[1:] + c[:-1]), c[-1] + 0.05]
        return Bins(name, c, e, e, False, False)

    a, b = bins("Av", np.linspace(0, 2, 21)), bins("logA", np.linspace(7, 10, 31))
    rng = np.random.default_rng(5)
    pdf = rng.random((len(ids), 21, 31))
    with PDF2DWriter(str(out / "field_pdf2d.hd5"), len(ids), [(a, b)], {}, {}) as w:
        w.write(0, [pdf])
        w.finish(ids, np.zeros(len(ids)))
    return pdf


def test_one_star_pdfs_without_reading_all_stars(run_output):  # noqa: F811
    out, truth = run_output
    url = str(out / "field_pdf1d.hd5")
    full = read_pdf1d(url)
    want = [int(truth["star_id"][7]), int(truth["star_id"][250]), int(truth["star_id"][7])]
    one = read_star_pdf1d(url, want, quantities=["Av", "M_ini"])
    assert one["quantities"] == ["Av", "M_ini"]
    for k, sid in enumerate(want):
        row = int(np.flatnonzero(full["star_id"] == sid)[0])
        assert one["rows"][k] == row
        np.testing.assert_array_equal(one["pdf"]["Av"][k], full["pdf"]["Av"][row])
        np.testing.assert_array_equal(one["pdf"]["M_ini"][k], full["pdf"]["M_ini"][row])
    with pytest.raises(KeyError, match="no star with star_id 99999"):
        read_star_pdf1d(url, [99999])
    pdf = _write_pdf2d(out, truth["star_id"])
    two = read_star_pdf2d(str(out / "field_pdf2d.hd5"), [int(truth["star_id"][3])])
    assert two["pairs"] == ["Av+logA"]
    np.testing.assert_allclose(two["pdf"]["Av+logA"][0], pdf[3])


def test_best_model_and_noise_come_from_the_stars_noise_model(run_output):  # noqa: F811
    out, truth = run_output
    gid = np.arange(len(truth["star_id"])) % 500
    _with_best_model(out, gid)
    art = find_artifacts(str(out))
    row = {"Pmax_gid": 42, "sd_bin": 1, "best_gridsub": -1}
    model, sigma = best_model_and_noise(art, row, FILTERS)
    seds = SEDGrid(str(out / "field_seds.grid.hd5")).read(columns=[]).seds
    with open_h5(str(out / "field_bin1_noisemodel.hd5")) as h5:
        err, bias = h5["error"][42], h5["bias"][42]
    np.testing.assert_allclose(model, seds[42] + bias)
    np.testing.assert_allclose(sigma, err)
    # a bin without a noise model: no error bars rather than another bin's
    assert best_model_and_noise(art, dict(row, sd_bin=7), FILTERS) is None


def test_star_pages_and_cli(run_output, capsys):  # noqa: F811
    from beastflow.cli import main

    out, truth = run_output
    _with_best_model(out, np.arange(len(truth["star_id"])) % 500)
    _write_pdf2d(out, truth["star_id"])
    ids = [int(truth["star_id"][0]), int(truth["star_id"][123])]
    pages = make_star_pages(str(out), ids)
    assert [p.star_id for p in pages] == ids
    for p in pages:
        names = sorted(u.rsplit("/", 1)[1] for u in p.images)
        assert names == [f"star_{p.star_id}_{k}.png" for k in ("corner", "pdf1d", "sed")]
        for u in p.images:
            assert_png(u)
        page = open(p.html).read()
        assert "href='index.html'" in page and "A(V) [mag]" in page and "M_sun" in page
        assert "residuals in sigma" in page
    assert main(["star", str(out), str(ids[0])]) == 0
    assert f"star_{ids[0]}.html" in capsys.readouterr().out
    assert main(["star", str(out), "424242"]) == 1
    assert "no star with star_id 424242" in capsys.readouterr().err


def test_support_range_follows_the_mass():
    c = np.logspace(np.log10(0.1), np.log10(60), 50)
    p = np.exp(-0.5 * ((np.log10(c) - np.log10(4)) / 0.05) ** 2)
    lo, hi = support_range(c, p, log=True)
    assert 1.5 < lo < 4 < hi < 10
    lo, hi = support_range(np.arange(10.0), np.zeros(10))
    assert lo <= 0 and hi >= 9
