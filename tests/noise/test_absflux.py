import numpy as np
import pytest

from beastflow.noise.absflux import (
    ZERO_POINT_VARIANCE,
    band_variances,
    covariance_terms,
    frac_matrix_from_spectral_covariance,
    load_absflux_matrix,
)


def _boxes(wave, ranges):
    return [(np.array([lo - 1e-6, lo, hi, hi + 1e-6]), np.array([0.0, 1.0, 1.0, 0.0])) for lo, hi in ranges]


def test_constant_spectral_covariance_gives_constant_matrix():
    wave = np.linspace(2000, 20000, 500)
    m = frac_matrix_from_spectral_covariance(
        wave, np.full((500, 500), 3e-4), _boxes(wave, [(3000, 4000), (8000, 9500)])
    )
    np.testing.assert_allclose(m, 3e-4 + ZERO_POINT_VARIANCE, rtol=1e-12)


def test_diagonal_covariance_and_disjoint_boxes():
    wave = np.arange(1000.0, 3000.0, 10.0)  # 200 points
    v0 = 4e-4
    m = frac_matrix_from_spectral_covariance(
        wave, np.diag(np.full(len(wave), v0)), _boxes(wave, [(1095, 1195), (2000, 2495)])
    )
    n1 = np.sum((wave >= 1095) & (wave <= 1195))  # box points, weight 1 each
    n2 = np.sum((wave >= 2000) & (wave <= 2495))
    # independent points average down: M_ii = v0 / n_i; no overlap -> M_12 = 0 (+ zero point)
    np.testing.assert_allclose(np.diag(m), [v0 / n1 + ZERO_POINT_VARIANCE, v0 / n2 + ZERO_POINT_VARIANCE], rtol=1e-12)
    assert m[0, 1] == m[1, 0] == pytest.approx(ZERO_POINT_VARIANCE, rel=1e-12)


def test_loaders_and_errors(tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    a = np.array([[4e-4, 1e-4], [1e-4, 9e-4]])
    fits.PrimaryHDU(a).writeto(tmp_path / "a.fits")
    np.testing.assert_array_equal(load_absflux_matrix(str(tmp_path / "a.fits"), 2), a)
    Table({"F1": a[:, 0], "F2": a[:, 1]}).write(tmp_path / "t.fits")
    np.testing.assert_array_equal(load_absflux_matrix(str(tmp_path / "t.fits"), 2), a)
    np.savetxt(tmp_path / "a.csv", a, delimiter=",")
    np.testing.assert_allclose(load_absflux_matrix(str(tmp_path / "a.csv"), 2), a, rtol=1e-15)
    np.save(tmp_path / "v.npy", np.array([0.02, 0.03]))
    v = load_absflux_matrix(str(tmp_path / "v.npy"), 2)
    np.testing.assert_allclose(band_variances(v), [4e-4, 9e-4])
    with pytest.raises(ValueError, match=r"a\.fits: .*shape \(2, 2\), expected \(3,\).*absflux_covariance"):
        load_absflux_matrix(str(tmp_path / "a.fits"), 3)
    np.save(tmp_path / "ns.npy", np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="not symmetric"):
        load_absflux_matrix(str(tmp_path / "ns.npy"), 2)
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        load_absflux_matrix(str(tmp_path / "nope.npy"), 2)


def test_covariance_terms_packing():
    a = np.array([[1.0, 0.1, 0.2], [0.1, 2.0, 0.3], [0.2, 0.3, 3.0]])
    seds = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 0.5]])
    d, o = covariance_terms(a, seds)
    np.testing.assert_allclose(d, np.diag(a) * seds**2)
    full = a[None] * seds[:, :, None] * seds[:, None, :]
    np.testing.assert_allclose(o, np.stack([full[:, 0, 1], full[:, 0, 2], full[:, 1, 2]], axis=1))
