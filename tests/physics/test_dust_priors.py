"""Spec §8: dust prior test vectors (BEAST test_dust_prior_weights.py), grid weights."""

import numpy as np
import pytest

from beastflow.physics.dust_priors import (
    dust_axis_prior,
    dust_grid_weights,
    dust_prior_weights,
)
from beastflow.physics.grid_weights import bin_widths, compute_grid_weights, normalised_prior
from beastflow.settings.physics import Priors

AVS = np.array([0.0, 2, 4, 6, 8, 10])
RVS = np.array([2.0, 3, 4, 5, 6])
FAS = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
STEP = {"name": "step", "dist0": 60e3, "amp1": 0.1, "damp2": 1.0, "lgsigma1": 0.05, "lgsigma2": 0.05}
TWO_LN = {"name": "two_lognormal", "mean1": 0.2, "mean2": 2.0, "sigma1": 1.0, "sigma2": 0.2, "N1_to_N2": 1.0 / 5.0}


@pytest.mark.parametrize(
    "axis,x,model,expected",
    [
        (
            "av",
            AVS,
            {"name": "lognormal", "mean": 2.0, "sigma": 1.0},
            [0, 0.120985, 0.095149, 0.066168, 0.046282, 0.033133],
        ),
        ("av", AVS, TWO_LN, [0, 4.969014e-1, 2.563834e-3, 3.719773e-4, 1.341047e-4, 5.743044e-5]),
        (
            "rv",
            RVS,
            {"name": "lognormal", "mean": 3.1, "sigma": 0.25},
            [0.107331, 0.494654, 0.296693, 0.080183, 0.015239],
        ),
        (
            "fA",
            FAS,
            {"name": "lognormal", "mean": 0.8, "sigma": 0.1},
            [0, 9.205133e-42, 1.831235e-10, 7.916202e-2, 4.961907, 4.115346e-1],
        ),
        ("av", AVS, {"name": "flat", "amp": 3.0}, [3.0] * 6),
        ("av", AVS, {"name": "exponential", "a": 2.0, "amp": 1.0}, np.exp(-AVS / 2.0)),
    ],
)
def test_dust_prior_vectors(axis, x, model, expected):
    got = dust_axis_prior(x, model, axis)
    expected = np.asarray(expected, dtype=float)
    # published values: 6 decimals above 1e-2, 7 significant digits below
    big = expected >= 1e-2
    np.testing.assert_allclose(got[big], expected[big], rtol=0, atol=6e-7)
    np.testing.assert_allclose(got[~big], expected[~big], rtol=1e-6, atol=0)


def test_step_prior_vector_uses_distance_per_model():
    d = np.array([50e3, 59e3, 61e3, 70e3])
    av = np.array([0.1, 0.9, 1.1, 2.0])
    np.testing.assert_allclose(
        dust_axis_prior(av, STEP, "av", distance_pc=d), [79.68878, 0, 7.244435, 6.544045e-31], rtol=1e-6, atol=1e-300
    )
    # compat per-row weights reproduce it through the full interface
    priors = Priors(av=STEP)
    axes = (np.array([0.1, 0.9, 1.1, 2.0]), np.array([3.1]), np.array([0.5]))
    w = dust_prior_weights(av, np.full(4, 3.1), np.full(4, 0.5), d, axes, priors, unnormalised=True)
    np.testing.assert_allclose(w, [79.68878, 0, 7.244435, 6.544045e-31], rtol=1e-6, atol=1e-300)


def test_compat_weights_are_products_of_beast_priors():
    priors = Priors(
        av={"name": "lognormal", "mean": 2.0, "sigma": 1.0},
        rv={"name": "lognormal", "mean": 3.1, "sigma": 0.25},
        fA={"name": "lognormal", "mean": 0.8, "sigma": 0.1},
    )
    av, rv, fa = (g.ravel() for g in np.meshgrid(AVS, RVS, FAS, indexing="ij"))
    w = dust_prior_weights(av, rv, fa, np.full(av.size, 1e5), (AVS, RVS, FAS), priors, unnormalised=True)
    expected = (
        dust_axis_prior(av, priors.av, "av")
        * dust_axis_prior(rv, priors.rv, "rv")
        * dust_axis_prior(fa, priors.fA, "fA")
    )
    np.testing.assert_allclose(w, expected, rtol=1e-14)


def test_two_lognormal_rows_use_the_whole_axis():
    priors = Priors(av=TWO_LN)
    rows = np.array([4.0, 2.0, 2.0])  # any subset of rows, any order
    w = dust_prior_weights(rows, np.full(3, 3.0), np.full(3, 1.0), 1e5, (AVS, RVS, FAS), priors, unnormalised=True)
    np.testing.assert_allclose(w, [2.563834e-3, 4.969014e-1, 4.969014e-1], rtol=1e-6)


@pytest.mark.parametrize(
    "axis,x,model",
    [
        ("av", np.array([0.01, 0.5, 1.0, 2.0, 5.0]), {"name": "flat"}),
        ("av", np.array([0.01, 0.5, 1.0, 2.0, 5.0]), {"name": "lognormal", "mean": 1.0, "sigma": 0.5}),
        ("av", np.array([0.01, 0.5, 1.0, 2.0, 5.0]), TWO_LN),
        ("av", np.array([0.01, 0.5, 1.0, 2.0, 5.0]), {"name": "exponential", "a": 1.0, "amp": 1.0}),
        ("rv", RVS, {"name": "flat"}),
        ("rv", RVS, {"name": "lognormal", "mean": 3.1, "sigma": 0.25}),
        ("rv", RVS, {**TWO_LN, "mean1": 2.5, "mean2": 4.0}),
        ("fA", FAS, {"name": "flat"}),
        ("fA", FAS, {"name": "lognormal", "mean": 0.8, "sigma": 0.1}),
        ("fA", FAS, {**TWO_LN, "mean1": 0.3, "mean2": 0.9}),
    ],
)
def test_default_dust_priors_are_densities_on_the_grid(axis, x, model):
    priors = Priors(**{axis: model})
    axes = {"av": (x, RVS, FAS), "rv": (AVS, x, FAS), "fA": (AVS, RVS, x)}[axis]
    n = x.size
    cols = {
        "av": (x, np.full(n, 3.0), np.full(n, 0.6)),
        "rv": (np.full(n, 2.0), x, np.full(n, 0.6)),
        "fA": (np.full(n, 2.0), np.full(n, 3.0), x),
    }[axis]
    w = dust_prior_weights(*cols, np.full(n, 1e5), axes, priors, unnormalised=False)
    # the other two axes are flat and normalised over their own grids
    others = {"av": (RVS, FAS), "rv": (AVS, FAS), "fA": (AVS, RVS)}[axis]
    flat = np.prod([1.0 / np.sum(bin_widths(o, noneg=True)) for o in others])
    assert np.sum(w / flat * bin_widths(x, noneg=True)) == pytest.approx(1.0, rel=1e-12)


def test_default_step_prior_is_normalised_at_each_distance():
    avs = np.linspace(0.05, 2.0, 40)
    priors = Priors(av=STEP)
    for d in (50e3, 70e3):
        w = dust_prior_weights(
            avs,
            np.full(40, 3.0),
            np.full(40, 1.0),
            np.full(40, d),
            (avs, np.array([3.0]), np.array([1.0])),
            priors,
            unnormalised=False,
        )
        assert np.sum(w * bin_widths(avs, noneg=True)) == pytest.approx(1.0, rel=1e-12)


def test_single_curve_has_no_fA_factor():
    priors = Priors(fA={"name": "lognormal", "mean": 0.8, "sigma": 0.1})
    w = dust_prior_weights(
        np.array([1.0]),
        np.array([3.0]),
        np.array([1.0]),
        1e5,
        (np.array([1.0, 2.0]), np.array([3.0]), np.array([1.0])),
        priors,
        unnormalised=True,
        has_fA=False,
    )
    np.testing.assert_array_equal(w, [1.0])


def test_dust_grid_weights_product_over_full_axes():
    avs, rvs, fas = np.array([0.1, 0.2, 0.5, 1.0]), np.array([2.0, 3.0, 5.0]), np.array([0.5, 1.0])
    av, rv, fa = np.array([0.5, 1.0]), np.array([5.0, 2.0]), np.array([1.0, 0.5])
    w = dust_grid_weights(av, rv, fa, (avs, rvs, fas))
    ga, gr, gf = compute_grid_weights(avs), compute_grid_weights(rvs), compute_grid_weights(fas)
    np.testing.assert_allclose(w, [ga[2] * gr[2] * gf[1], ga[3] * gr[0] * gf[0]], rtol=1e-14)


def test_row_value_off_the_axis_is_an_error():
    with pytest.raises(ValueError, match="Av value 0.3"):
        dust_grid_weights(
            np.array([0.3]), np.array([3.0]), np.array([1.0]), (np.array([0.1, 0.2]), np.array([3.0]), np.array([1.0]))
        )


def test_disallowed_model_named():
    with pytest.raises(NotImplementedError, match=r"physics\.priors\.rv: 'exponential'"):
        dust_axis_prior(RVS, {"name": "exponential", "a": 1.0}, "rv")
    with pytest.raises(ValueError, match="zero everywhere"):
        normalised_prior(AVS, np.zeros(6))


@pytest.mark.parametrize(
    "prior,msg",
    [
        ({"av": {"name": "lognormal", "mean": 1.0, "sigma": -1.0}}, r"av prior 'lognormal': sigma must be > 0"),
        (
            {"rv": {"name": "two_lognormal", "mean1": 0.0, "mean2": 3.0, "sigma1": 0.1, "sigma2": 0.1}},
            r"rv prior 'two_lognormal': mean1 must be > 0",
        ),
        (
            {"av": {"name": "step", "dist0": 1e4, "amp1": 0.5, "damp2": -1.0, "lgsigma1": 0.1, "lgsigma2": 0.1}},
            r"amp1 \+ damp2",
        ),
        ({"av": {"name": "exponential", "a": 0.0}}, r"av prior 'exponential': a must be > 0"),
        ({"age": {"name": "bins_histo", "x": [6, 7, 8], "values": [1]}}, r"got 3 x and 1 values"),
        ({"fA": {"name": "lognormal", "mean": [0.5], "sigma": 0.1}}, r"mean must be a number"),
    ],
)
def test_bad_prior_settings_are_named(prior, msg):
    from beastflow.settings import SettingsError, settings_from_dict

    with pytest.raises(SettingsError, match=msg):
        settings_from_dict({"physics": {"priors": prior}})
