"""Parameter recovery: stars simulated from the grid through the noise model
(beastflow.simulate) are fitted; the posteriors must be calibrated."""

import numpy as np
import pytest

from beastflow.fit.fitting import run_fit
from beastflow.fit.grid_info import run_grid_info
from beastflow.fit.outputs import read_pdf1d, read_stats
from beastflow.simulate import simulate_observations

from . import synth
from .conftest import settings_for

#: quasi-continuous parameters (many grid values, posteriors wider than the spacing)
CONTINUOUS = ["logA", "M_ini", "Av", "logT", "logL", "radius"]
#: parameters with 2-3 grid values: a [p16, p84] interval is conservative there
DISCRETE = ["Z", "Rv", "f_A"]
N_STARS = 400


@pytest.fixture(scope="module")
def recovered(tmp_path_factory, synth_vega):
    d = tmp_path_factory.mktemp("recovery")
    # a finer grid and noisier photometry than the shared field, so that the
    # posteriors span several grid points (73k models)
    seds, cols = synth.make_models(
        n_mass=24, logas=tuple(np.arange(7.0, 10.01, 0.25)), avs=tuple(np.arange(0.0, 3.01, 0.25))
    )
    full = synth.write_grid(d / "P_seds.grid.hd5", seds, cols)
    trim = synth.write_grid(d / "P_seds_trim.grid.hd5", seds, cols, fullgrid_idx=np.arange(len(seds)))
    nz = synth.write_noise(d / "P_noisemodel_trim.grid.hd5", seds, scale=5.0)
    s = settings_for(d, lnp_npts=0)
    gi = run_grid_info(s, [full], out_url=str(d / "gi.json")).grid_info
    cat = simulate_observations(trim, nz, N_STARS, 2024, synth.VEGA)
    cat.write_parquet(d / "P.parquet")
    r = run_fit(s, trim, nz, str(d / "P.parquet"), gi, str(d / "P"))
    return read_stats(r.stats)[0], read_pdf1d(r.pdf1d)


def test_truth_within_p16_p84_for_about_68_percent(recovered):
    st, _ = recovered
    cover = {}
    for q in CONTINUOUS + DISCRETE:
        t = st[f"true_{q}"].to_numpy()
        cover[q] = np.mean((t >= st[f"{q}_p16"].to_numpy()) & (t <= st[f"{q}_p84"].to_numpy()))
    print("coverage of [p16, p84]:", {k: round(v, 3) for k, v in cover.items()})
    # 400 stars: binomial sd 2.3 %.  The truth sits exactly on a grid value and
    # the percentiles interpolate between bin centres, which adds a few percent.
    for q in CONTINUOUS:
        assert 0.61 <= cover[q] <= 0.80, (q, cover[q])
    assert 0.64 <= np.mean([cover[q] for q in CONTINUOUS]) <= 0.76
    for q in DISCRETE:
        assert cover[q] >= 0.68, (q, cover[q])


def test_posterior_integral_transform_is_uniform(recovered):
    """The posterior CDF at the truth (randomised within the truth's bin) is
    uniform for a calibrated posterior: a sharper test than the coverage."""
    st, p = recovered
    rng = np.random.default_rng(0)
    for q in ("logA", "M_ini", "Av", "Rv", "Z", "logT"):
        pdf, edges = p["pdf"][q], p["edges"][q]
        t = st[f"true_{q}"].to_numpy()
        tt, ee = (np.log10(t), np.log10(edges)) if p["log"][q] else (t, edges)
        b = np.searchsorted(ee, tt, side="right") - 1
        below = np.array([pdf[i, : b[i]].sum() for i in range(len(t))])
        pit = below + rng.random(len(t)) * pdf[np.arange(len(t)), b]
        counts = np.histogram(pit, bins=5, range=(0, 1))[0]
        chi2 = ((counts - len(t) / 5) ** 2 / (len(t) / 5)).sum()
        assert chi2 < 18.5, (q, counts)  # p = 0.001 for 4 degrees of freedom


def test_point_estimates_track_truth(recovered):
    st, _ = recovered
    for q in ("logT", "logL"):
        r = np.corrcoef(st[f"true_{q}"].to_numpy(), st[f"{q}_p50"].to_numpy())[0, 1]
        assert r > 0.9, (q, r)
    # a wrong likelihood (e.g. ignoring the bias or the error) fails this too:
    # the reduced chi2 of the best model is about 1 for stars from the model
    assert 0.5 < np.median(st["chi2min"].to_numpy()) / 6 < 1.5
