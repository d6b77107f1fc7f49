"""Field-level report additions: stacked posteriors, tile maps, chi2min, recovery by S/N."""

from __future__ import annotations

import numpy as np
import pytest

from beastflow.fit.outputs import read_pdf1d
from beastflow.report import make_report
from beastflow.report.field import stacked_pdf1d, stacked_pdf2d, tile_index, tile_medians

from .test_report import assert_png, run_output  # noqa: F401 - fixture
from .test_star import _with_best_model, _write_pdf2d


def test_stacked_pdfs_are_the_mean_of_the_normalised_star_pdfs(run_output):  # noqa: F811
    out, truth = run_output
    url = str(out / "field_pdf1d.hd5")
    full = read_pdf1d(url)
    st = stacked_pdf1d(url)
    for q in full["quantities"]:
        p = full["pdf"][q] / full["pdf"][q].sum(axis=1, keepdims=True)
        np.testing.assert_allclose(st["pdf"][q], p.mean(axis=0))
    assert st["n_stars"] == len(truth["star_id"])
    pdf = _write_pdf2d(out, truth["star_id"])
    st2 = stacked_pdf2d(str(out / "field_pdf2d.hd5"))
    np.testing.assert_allclose(st2["pdf"]["Av+logA"], (pdf / pdf.sum(axis=(1, 2), keepdims=True)).mean(axis=0))


def test_tile_index_and_medians():
    ra_e, dec_e = np.array([10.0, 10.1, 10.2]), np.array([40.0, 40.1])
    tiles = {
        "min_ra": np.array([10.0, 10.1]),
        "max_ra": np.array([10.1, 10.2]),
        "min_dec": np.array([40.0, 40.0]),
        "max_dec": np.array([40.1, 40.1]),
    }
    ra = np.array([10.05, 10.15, 10.16, 10.3, 10.01])
    dec = np.array([40.05, 40.05, 40.02, 40.05, 40.5])
    t = tile_index(tiles, ra, dec)
    assert t.tolist() == [0, 1, 1, -1, -1]
    med, cnt = tile_medians(t, np.array([1.0, 2.0, 4.0, 9.0, 9.0]), 2)
    assert med.tolist() == [1.0, 3.0] and cnt.tolist() == [1, 2]
    del ra_e, dec_e


@pytest.mark.slow  # a whole report (plots of every section): in make test, not the inner loop
def test_report_field_sections_with_pdf2d_and_noise(run_output):  # noqa: F811
    out, truth = run_output
    n = len(truth["star_id"])
    _with_best_model(out, np.arange(n) % 500)
    _write_pdf2d(out, truth["star_id"])
    rep = make_report(str(out))
    assert not [s for s in rep.sections if s.error], [(s.title, s.error) for s in rep.sections if s.error]
    names = {p.rsplit("/", 1)[1] for p in rep.images}
    for nm in (
        "prior_vs_posterior.png",
        "stacked_corner.png",
        "tile_maps.png",
        "chi2_vs_mag.png",
        "recovery_by_snr.png",
    ):
        assert nm in names, names
        assert_png(str(out / "report" / nm))
    page = open(rep.index).read()
    assert "Parameter recovery by S/N" in page and "Stacked 2-D posteriors" in page
