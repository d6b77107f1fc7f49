"""Spec §6.2-§6.4: stellar priors (BEAST test vectors) and combined stellar weights."""

import numpy as np
import pytest

from beastflow.behaviour import PROFILES
from beastflow.physics.grid_weights import bin_widths, compute_grid_weights, normalised_prior
from beastflow.physics.stellar_priors import (
    age_prior,
    compute_stellar_weights,
    distance_prior,
    imf_bin_integrals,
    mass_prior,
    metallicity_prior,
)
from beastflow.settings.physics import Priors

LOGA = np.array([6.0, 7, 8, 9, 10])
MASSES = np.array([1.0, 2, 3, 4, 5])


@pytest.mark.parametrize(
    "model,expected",
    [
        ({"name": "flat"}, [1.0] * 5),
        ({"name": "flat", "amp": 0.1}, [0.1] * 5),
        ({"name": "flat_log"}, [9.00009e-1, 9.00009e-2, 9.00009e-3, 9.00009e-4, 9.00009e-5]),
        ({"name": "bins_histo", "x": [6, 7, 8, 9, 10], "values": [1, 2, 1, 5, 3]}, [1, 2, 1, 5, 3]),
        ({"name": "bins_histo", "x": [6, 7, 8, 9, 10], "values": [1, 2, 1, 5]}, [1, 2, 1, 5, 0]),
        ({"name": "exponential", "tau": 0.1}, [0.9900498, 0.9048374, 0.3678794, 4.539993e-5, 3.720076e-44]),
    ],
)
def test_age_prior_vectors(model, expected):
    np.testing.assert_allclose(age_prior(LOGA, model), expected, rtol=1e-6)


def test_age_prior_tabulated_range_and_interp():
    m = {"name": "bins_interp", "x": [6, 8, 10], "values": [1, 3, 1]}
    np.testing.assert_allclose(age_prior(np.array([6, 7, 9.5]), m), [1, 2, 1.5])
    with pytest.raises(ValueError, match="outside"):
        age_prior(np.array([5.5, 7.0]), m)
    with pytest.raises(NotImplementedError, match="not an allowed model"):
        age_prior(LOGA, {"name": "gaussian"})


@pytest.mark.parametrize(
    "model,expected",
    [
        ({"name": "salpeter"}, [4.02338441, 0.58842044, 0.21633931, 0.10825509, 0.06360075]),
        ({"name": "salpeter", "slope": 2.0}, [3.666667, 0.733333, 0.314286, 0.174603, 0.111111]),
        ({"name": "kroupa"}, [3.97740709, 0.60861986, 0.22874078, 0.11618704, 0.06904523]),
        (
            {"name": "kroupa", "alpha0": 0.5, "alpha1": 1.0, "alpha2": 2.0, "alpha3": 2.5},
            [4.036514, 0.601346, 0.20694, 0.098998, 0.056201],
        ),
        ({"name": "flat"}, [1.0] * 5),
    ],
)
def test_mass_prior_vectors(model, expected):
    # rtol: the published vectors carry 6 significant digits
    np.testing.assert_allclose(mass_prior(MASSES, model), expected, rtol=1e-5)
    # order of the isochrone rows does not matter
    perm = np.array([3, 0, 4, 2, 1])
    np.testing.assert_allclose(mass_prior(MASSES[perm], model), np.asarray(expected)[perm], rtol=1e-5)


def test_kroupa_integral_across_breaks_matches_quadrature():
    from scipy.integrate import quad

    from beastflow.physics.stellar_priors import imf

    model = {"name": "kroupa"}
    exact = imf_bin_integrals(np.array([0.01]), np.array([3.0]), model)[0]
    numeric = sum(
        quad(lambda m: imf(m, model)[0], a, b)[0] for a, b in ((0.01, 0.08), (0.08, 0.5), (0.5, 1.0), (1.0, 3.0))
    )
    assert exact == pytest.approx(numeric, rel=1e-10)


def test_distance_prior_absexponential_vector():
    model = {"name": "absexponential", "dist0": 60e3, "tau": 5e3, "amp": 1.0}
    np.testing.assert_allclose(distance_prior(np.array([53e3, 60e3, 69e3]), model), [0.246597, 1, 0.165299], rtol=2e-6)
    np.testing.assert_array_equal(distance_prior(np.array([1.0, 2.0]), {"name": "flat", "amp": 2.0}), [2, 2])
    np.testing.assert_array_equal(metallicity_prior(np.array([0.01, 0.02]), {"name": "flat"}), [1, 1])


@pytest.mark.parametrize(
    "axis,model,x,log",
    [
        ("age", {"name": "flat"}, LOGA, True),
        ("age", {"name": "flat_log"}, LOGA, True),
        ("age", {"name": "exponential", "tau": 2.0}, LOGA, True),
        ("age", {"name": "bins_interp", "x": [6, 10], "values": [1, 3]}, LOGA, True),
        ("age", {"name": "bins_histo", "x": [6, 8, 10], "values": [1, 3]}, LOGA, True),
        ("mass", {"name": "kroupa"}, np.array([0.1, 0.5, 1.0, 5.0, 20.0]), False),
        ("mass", {"name": "salpeter"}, np.array([0.1, 0.5, 1.0, 5.0, 20.0]), False),
        ("mass", {"name": "flat"}, np.array([0.1, 0.5, 1.0, 5.0, 20.0]), False),
        ("distance", {"name": "flat"}, np.array([50e3, 55e3, 60e3]), False),
        (
            "distance",
            {"name": "absexponential", "dist0": 60e3, "tau": 5e3, "amp": 1.0},
            np.array([50e3, 55e3, 60e3, 70e3]),
            False,
        ),
        ("metallicity", {"name": "flat"}, np.array([0.004, 0.008, 0.019, 0.03]), False),
    ],
)
def test_every_stellar_prior_normalises_to_unit_integral(axis, model, x, log):
    fn = {"age": age_prior, "mass": mass_prior, "distance": distance_prior, "metallicity": metallicity_prior}[axis]
    p = normalised_prior(x, fn(x, model), log=log, what=axis)
    assert np.sum(p * bin_widths(x, log=log, noneg=True)) == pytest.approx(1.0, rel=1e-12)


# ------------------------------------------------------ combined weights


def _toy_grid():
    """Two distances x two Z; isochrones with unequal lengths, a duplicated
    mass and a single-point isochrone."""
    rows = []
    iso = {
        (0.004, 7.0): [0.9, 1.0, 2.0, 5.0],
        (0.004, 8.0): [0.8, 1.0, 1.0, 3.0],  # duplicate mass 1.0
        (0.004, 9.0): [0.7, 1.1, 1.5],
        (0.019, 7.0): [1.0, 3.0, 8.0],
        (0.019, 8.0): [1.2],  # single point -> weight 0
        (0.019, 9.0): [0.6, 0.9, 1.3, 1.4, 1.6],
    }
    for d in (7.0e5, 8.0e5):
        for (z, a), masses in iso.items():
            for m in masses:
                rows.append((a, m, z, d))
    arr = np.array(rows)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], iso


def test_compat_weights_are_beast_per_isochrone_products():
    logA, M, Z, D, iso = _toy_grid()
    priors = Priors(age={"name": "exponential", "tau": 0.05}, mass={"name": "kroupa"})
    gw, pw = compute_stellar_weights(logA, M, Z, D, priors, PROFILES["beast-2.1"].physics)
    for z in (0.004, 0.019):
        ages = np.array(sorted(a for (zz, a) in iso if zz == z))
        g1 = compute_grid_weights(ages, log=True)
        p1 = age_prior(ages, priors.age)
        for k, a in enumerate(ages):
            sel = (Z == z) & (logA == a)
            masses = M[sel]
            if masses.size // 2 == 1:  # one row per distance
                np.testing.assert_array_equal(gw[sel], 0.0)
                np.testing.assert_array_equal(pw[sel], 0.0)
                continue
            one = sel & (D == 7.0e5)
            u, inv = np.unique(M[one], return_inverse=True)
            np.testing.assert_allclose(gw[one], compute_grid_weights(u)[inv] * g1[k], rtol=1e-12)
            np.testing.assert_allclose(pw[one], mass_prior(u, priors.mass)[inv] * p1[k], rtol=1e-12)
    # no metallicity/distance renormalisation in compat: distance blocks identical
    near, far = D == 7.0e5, D == 8.0e5
    np.testing.assert_array_equal(gw[near], gw[far])
    np.testing.assert_array_equal(pw[near], pw[far])


def test_duplicate_masses_share_the_unique_value_weights():
    logA, M, Z, D, _ = _toy_grid()
    gw, pw = compute_stellar_weights(logA, M, Z, D, Priors(), PROFILES["beast-2.1"].physics)
    sel = (Z == 0.004) & (logA == 8.0) & (M == 1.0) & (D == 7.0e5)
    assert sel.sum() == 2
    assert gw[sel][0] == gw[sel][1] > 0
    assert pw[sel][0] == pw[sel][1] > 0


def test_tracks_swap_mass_becomes_regular_axis():
    # evolutionary tracks: 3 masses, many ages each
    rows = [(a, m, 0.01, 1e4) for m in (1.0, 2.0, 4.0) for a in np.linspace(6.0, 9.0 + m / 10, 6)]
    logA, M, Z, D = np.array(rows).T
    priors = Priors(mass={"name": "salpeter"})
    gw, pw = compute_stellar_weights(logA, M, Z, D, priors, PROFILES["beast-2.1"].physics)
    g1 = compute_grid_weights(np.array([1.0, 2.0, 4.0]))
    p1 = mass_prior(np.array([1.0, 2.0, 4.0]), priors.mass)
    for k, m in enumerate((1.0, 2.0, 4.0)):
        sel = M == m
        np.testing.assert_allclose(gw[sel], compute_grid_weights(logA[sel], log=True) * g1[k], rtol=1e-12)
        np.testing.assert_allclose(pw[sel], p1[k], rtol=1e-12)  # flat age prior


def test_default_mass_weights_count_stars_per_bin():
    logA, M, Z, D, _ = _toy_grid()
    priors = Priors(mass={"name": "kroupa"})
    gw, pw = compute_stellar_weights(logA, M, Z, D, priors, PROFILES["none"].physics)
    sel = (Z == 0.019) & (logA == 9.0) & (D == 7.0e5)
    from beastflow.physics.grid_weights import compute_bin_boundaries

    m = M[sel]
    edges = compute_bin_boundaries(np.sort(m), noneg=True)
    stars = imf_bin_integrals(edges[:-1], edges[1:], priors.mass)
    w = gw[sel] * pw[sel]
    # weight ratios inside an isochrone = ratios of IMF integrals over the bins
    np.testing.assert_allclose(w / w.sum(), stars / stars.sum(), rtol=1e-12)
    # and across ages: total isochrone weight ~ age-bin width x IMF mass alive
    gw_c, pw_c = compute_stellar_weights(logA, M, Z, D, priors, PROFILES["beast-2.1"].physics)
    np.testing.assert_allclose(gw_c[sel] * pw_c[sel] / (gw_c[sel] * pw_c[sel]).sum(), w / w.sum(), rtol=1e-12)


def test_default_metallicity_and_distance_shares():
    logA, M, Z, D, _ = _toy_grid()
    dprior = {"name": "absexponential", "dist0": 7.2e5, "tau": 1e5, "amp": 1.0}
    priors = Priors(distance=dprior)
    gw, pw = compute_stellar_weights(logA, M, Z, D, priors, PROFILES["none"].physics)
    w = gw * pw
    assert gw.sum() == pytest.approx(1.0)
    ud = np.array([7.0e5, 8.0e5])
    dshare = compute_grid_weights(ud) / compute_grid_weights(ud).sum()
    pshare = distance_prior(ud, dprior) / distance_prior(ud, dprior).sum()
    uz = np.array([0.004, 0.019])
    zshare = compute_grid_weights(uz) / compute_grid_weights(uz).sum()
    block_w, expected = [], []
    for i, d in enumerate(ud):
        for j, z in enumerate(uz):
            sel = (D == d) & (Z == z)
            assert gw[sel].sum() == pytest.approx(dshare[i] * zshare[j])
            block_w.append(w[sel].sum())
            # flat metallicity prior: equal prior share per Z
            expected.append(dshare[i] * pshare[i] * zshare[j] * 0.5)
    # the weight of each (distance, Z) block is volume x prior, up to one constant
    np.testing.assert_allclose(np.array(block_w) / np.sum(block_w), np.array(expected) / np.sum(expected), rtol=1e-12)
