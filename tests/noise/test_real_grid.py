"""End to end on real inputs: an SED grid from the physics stage, the real
phat_small ASTs and the real phat_small catalog split by F475W flux."""

import numpy as np
import polars as pl
import pytest

from beastflow.io.noise_model import open_noise_model
from beastflow.io.sed_grid import open_sed_grid
from beastflow.io.trim_index import read_trim_index
from beastflow.noise.toothpick import run_noisemodel
from beastflow.noise.trim import TrimError, TrimJob, run_trim
from beastflow.settings import settings_from_dict

from .conftest import BANDS, FILTERS


@pytest.fixture(scope="module")
def physics_grid(tmp_path_factory):
    from beastflow.physics.physicsmodel import run_physicsmodel

    out = tmp_path_factory.mktemp("phys")
    s = settings_from_dict(
        {
            "project": {"output": str(out)},
            "physics": {
                "filters": FILTERS,
                "isochrones": {"logt": [6.6, 10.1, 0.25]},
                "extinction": {"avs": [0.05, 3.05, 0.25], "rvs": [2.5, 4.5, 1.0], "fAs": [0.5, 1.0, 0.5]},
            },
        }
    )
    return run_physicsmodel(s).sed_grids[0]


def test_real_grid_real_asts_real_catalog(tmp_path, physics_grid, phat_asts_rate, phat_catalog, vega):
    from beastflow.observations.catalogs import read_photometry

    s = settings_from_dict({"project": {"output": str(tmp_path)}, "noise_model": {"n_flux_bins": 5}})
    noise = run_noisemodel(s, physics_grid, str(phat_asts_rate), str(tmp_path / "nm.hd5"))
    grid = open_sed_grid(physics_grid)
    seds = grid.read(columns=[]).seds
    nm = open_noise_model(noise).read()
    valid = np.all(nm.completeness > 0, axis=1) & np.all(nm.error > 0, axis=1)
    # the README's caveat: with 175 ASTs in four bands only a few % of a grid is covered
    assert 0.005 < valid.mean() < 0.1
    assert np.all((nm.completeness >= 0) & (nm.completeness <= 1))

    df = read_photometry(str(phat_catalog), FILTERS).sort("F475W_RATE")
    jobs = []
    for u, part in enumerate(np.array_split(np.arange(df.height), 3)):
        url = str(tmp_path / f"P_bin0_sub{u}.parquet")
        df[part.tolist()].write_parquet(url)
        jobs.append(TrimJob(url, str(tmp_path / f"t{u}_g.hd5"), str(tmp_path / f"t{u}_n.hd5")))
    # the faintest third is below the ASTs' usable F475W bins: default names it, compat skips the band
    with pytest.raises(TrimError, match=r"P_bin0_sub0\.parquet.*band HST_ACS_WFC_F475W"):
        run_trim(s, physics_grid, noise, jobs[:1])
    sc = s.model_copy(update={"compat": "beast-2.1"})
    (r0,) = run_trim(
        sc, physics_grid, noise, [TrimJob(jobs[0].catalog_url, str(tmp_path / "c_g.hd5"), str(tmp_path / "c_n.hd5"))]
    )
    assert "HST_ACS_WFC_F475W" in r0.skipped_bands
    jobs = jobs[1:]
    results = run_trim(s, physics_grid, noise, jobs)
    v, e = (seds + nm.bias)[valid], nm.error[valid]
    vidx = np.flatnonzero(valid)
    checked = 0
    for job, res in zip(jobs, results):
        kept = set(read_trim_index(res.index_url).kept.tolist())  # the trim artifact: kept rows
        assert 0 < len(kept) <= valid.sum()
        y = np.column_stack([pl.read_parquet(job.catalog_url)[f"{b}_RATE"].to_numpy() for b in BANDS]) * vega
        terms = ((y[:, None, :] - v[None]) / e[None]) ** 2
        chi2 = terms.sum(axis=2)
        # guarantee: within sigma_fac errors of a star in every band -> kept
        assert set(vidx[(terms.max(axis=2) <= 9.0).any(axis=0)].tolist()) <= kept
        # the 5 best-fitted stars: every model within chi2_min + 20 (lnP within 10) is kept
        for i in np.argsort(chi2.min(axis=1))[:5]:
            near = vidx[chi2[i] <= chi2[i].min() + 20.0]
            assert set(near.tolist()) <= kept, (job.catalog_url, i)
            checked += len(near)
    assert checked > 0
