import numpy as np
import pytest

from beastflow.io.noise_model import write_noise_model
from beastflow.io.sed_grid import write_sed_grid
from beastflow.simulate import detection_probability, simulate_observations

FILTERS = ["HST_ACS_WFC_F475W", "HST_ACS_WFC_F814W"]
VEGA = np.array([6e-9, 1.1e-9])


@pytest.fixture
def small(tmp_path):
    n = 4
    seds = np.array([[1e-17, 2e-17], [2e-17, 1e-17], [5e-18, 5e-18], [3e-17, 3e-17]])
    cols = {
        "logA": np.array([7.0, 8.0, 9.0, 10.0]),
        "M_ini": np.array([1.0, 2.0, 3.0, 4.0]),
        "Av": np.array([0.0, 0.5, 1.0, 1.5]),
        "weight": np.array([1.0, 2.0, 3.0, 0.0]),
    }
    g = write_sed_grid(str(tmp_path / "g.hd5"), FILTERS, np.array([4750.0, 8140.0]), seds, cols)
    comp = np.array([[1.0, 1.0], [0.5, 1.0], [1.0, 0.25], [1.0, 1.0]])
    bias = np.array([[1e-19, 0], [0, 0], [0, -1e-19], [0, 0]])
    err = np.full((n, 2), 1e-18)
    nz = write_noise_model(str(tmp_path / "n.hd5"), FILTERS, bias, err, comp)
    return g, nz, seds, bias, err


def test_columns_and_truth(small):
    g, nz, seds, bias, err = small
    cat = simulate_observations(g, nz, 50, 1, VEGA)
    assert {
        "star_id",
        "RA",
        "DEC",
        "F475W_RATE",
        "F814W_RATE",
        "F475W_INPUT_RATE",
        "true_logA",
        "true_row",
        "true_weight",
    } <= set(cat.columns)
    rows = cat["true_row"].to_numpy()
    np.testing.assert_allclose(cat["true_logA"].to_numpy(), [7.0, 8.0, 9.0, 10.0][0] + rows)
    np.testing.assert_allclose(cat["F475W_INPUT_RATE"].to_numpy(), seds[rows, 0] / VEGA[0])
    assert 3 not in rows  # weight 0 is never drawn


def test_draws_follow_weight_times_completeness(small):
    g, nz, *_ = small
    cat = simulate_observations(g, nz, 20000, 5, VEGA)
    frac = np.bincount(cat["true_row"].to_numpy(), minlength=4) / 20000
    expect = np.array([1.0, 2.0 * 0.5, 3.0 * 0.25, 0.0])  # weight x min_k completeness
    np.testing.assert_allclose(frac, expect / expect.sum(), atol=0.012)
    cat = simulate_observations(g, nz, 20000, 5, VEGA, completeness="none")
    frac = np.bincount(cat["true_row"].to_numpy(), minlength=4) / 20000
    np.testing.assert_allclose(frac, np.array([1, 2, 3, 0]) / 6, atol=0.012)


def test_noise_is_bias_plus_gaussian_error(small):
    g, nz, seds, bias, err = small
    cat = simulate_observations(g, nz, 20000, 7, VEGA)
    rows = cat["true_row"].to_numpy()
    flux = cat["F814W_RATE"].to_numpy() * VEGA[1]
    z = (flux - seds[rows, 1] - bias[rows, 1]) / err[rows, 1]
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03


def test_reproducible_and_errors(small):
    g, nz, *_ = small
    a = simulate_observations(g, nz, 10, 3, VEGA)
    b = simulate_observations(g, nz, 10, 3, VEGA)
    assert a.equals(b)
    with pytest.raises(ValueError, match="vega_fluxes"):
        simulate_observations(g, nz, 10, 3, VEGA[:1])
    with pytest.raises(KeyError, match="nope"):
        simulate_observations(g, nz, 10, 3, VEGA, weight_column="nope")
    assert detection_probability(np.array([[0.5, 0.2]]), "product")[0] == pytest.approx(0.1)
