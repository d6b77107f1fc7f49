"""The embedded Kurucz ATLAS9 library (the default ``atlas9`` + ``planck`` fallback)."""

from __future__ import annotations

import io
import logging
import lzma

import numpy as np
import pytest

from beastflow.physics import atlas9
from beastflow.physics.stellib import (
    PLANCK_LABEL,
    CompositeLibrary,
    make_stellar_library,
    radius_m,
    read_beast_fits,
)
from beastflow.settings.physics import StellarLibrary as LibSettings

SIGMA_CGS = 5.670374419e-5  # erg s^-1 cm^-2 K^-4
L_SUN_CGS = 3.828e33  # erg s^-1
VEGA_ROW = 241  # fp00t9400g395k2.txt


@pytest.fixture(scope="module")
def embedded():
    return atlas9.atlas9_library()


def test_shipped_file_is_small_and_complete(embedded):
    size = len(atlas9.embedded_path().read_bytes())
    assert 0.9e6 < size < 1.1e6  # 1 032 968 bytes packed; the float64 FITS is 4 057 920
    assert embedded.n_models == 412 and embedded.flux.shape == (412, 1217)
    assert embedded.label == atlas9.LABEL and not embedded.is_analytic
    assert np.array_equal(embedded.metallicities, [0.02])
    assert embedded.wavelength[0] == pytest.approx(90.9, abs=0.1) and embedded.wavelength[-1] == 8.0e5
    assert np.all(embedded.flux >= 0)


def test_float32_copy_against_the_float64_original(kurucz_grid, embedded):
    ref = read_beast_fits(str(kurucz_grid), "kurucz")
    assert np.array_equal(embedded.wavelength, ref.wavelength)
    assert np.array_equal(embedded.logT, ref.logT) and np.array_equal(embedded.Z, ref.Z)
    pos = ref.flux > 0
    rel = np.abs(embedded.flux[pos] / ref.flux[pos] - 1.0)
    assert rel.max() < 6.0e-8  # float32 rounding: measured 5.95e-8
    assert np.array_equal(embedded.flux[~pos], ref.flux[~pos])  # exact zeros stay zero
    # logg: as in the file except the mislabelled Vega model, which the default corrects
    diff = np.nonzero(embedded.logg != ref.logg)[0]
    assert diff.tolist() == [VEGA_ROW]
    assert ref.logg[VEGA_ROW] == 39.5 and embedded.logg[VEGA_ROW] == 3.95
    assert atlas9.atlas9_library(file_logg=True).logg[VEGA_ROW] == 39.5  # BEAST reads it as it is


def test_pack_fits_gives_the_shipped_arrays(kurucz_grid):
    shipped = atlas9.read_packed(atlas9.embedded_path().read_bytes())
    again = atlas9.read_packed(atlas9.pack_fits(str(kurucz_grid)))
    for k in atlas9.ARRAYS:
        assert again[k].dtype == shipped[k].dtype and np.array_equal(again[k], shipped[k]), k
    assert shipped["name"][VEGA_ROW] == "fp00t9400g395k2.txt"


def test_packed_file_errors_are_one_line():
    with pytest.raises(ValueError, match="not an xz stream"):
        atlas9.read_packed(b"not xz at all")
    buf = io.BytesIO()
    np.savez(buf, flux=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"lacks arrays \['wavelength'"):
        atlas9.read_packed(lzma.compress(buf.getvalue()))


def test_model_atmosphere_luminosity(embedded):
    # a sun-like and an A star inside the grid: integral of L_lambda over the grid's
    # 91 A - 80 um is L to within the models' own flux budget (0.998-1.014 sigma T^4)
    T = np.log10([5750.0, 9500.0])
    g = np.array([4.5, 4.0])
    L = np.array([0.0, 1.5])
    keep, spec, R, _ = embedded.spectra_at(T, g, [0.02, 0.02], L)
    assert keep.all()
    lum = np.trapezoid(spec, embedded.wavelength, axis=1)
    assert np.allclose(lum / (10**L * L_SUN_CGS), 1.0, atol=0.02)
    # real atmospheres are not black bodies: the Balmer jump of the A star
    # (measured: F(4050 A)/F(3600 A) is 3.0x the black-body ratio)
    from beastflow.physics.stellib import planck_flux

    wl = embedded.wavelength
    bb = planck_flux(wl, np.array([9500.0]))[0]
    jump = (np.interp(4050.0, wl, spec[1]) / np.interp(3600.0, wl, spec[1])) / (
        np.interp(4050.0, wl, bb) / np.interp(3600.0, wl, bb)
    )
    assert jump > 2.0


def test_default_is_atlas9_with_planck_only_outside(caplog):
    lib = make_stellar_library(LibSettings())
    assert isinstance(lib, CompositeLibrary)
    assert lib.label == f"{atlas9.LABEL} + {PLANCK_LABEL}" and not lib.is_analytic
    # the composite samples the real library's wavelengths (Planck evaluated there)
    assert np.array_equal(lib.wavelength, lib.members[0].wavelength)
    # the Sun and a B dwarf in the grid; a 2800 K M dwarf and an O supergiant outside it
    T = np.log10([5772.0, 20000.0, 2800.0, 30000.0])
    g = np.array([4.44, 4.0, 5.0, 2.5])
    with caplog.at_level(logging.WARNING, logger="beastflow.physics.stellib"):
        keep, spec, R, osl = lib.spectra_at(T, g, np.full(4, 0.0152), np.zeros(4))
    assert keep.all() and osl.tolist() == [1, 1, 2, 2]
    assert "2 of 4 isochrone points lie outside the model atmospheres" in caplog.text
    assert PLANCK_LABEL in caplog.text
    # the fallback spectra are pi B_lambda scaled to L (radius from L and T)
    from beastflow.physics.stellib import planck_flux

    r_cm = radius_m(0.0, T[2]) * 100
    bb = planck_flux(lib.wavelength, np.array([2800.0]))[0] * 4 * np.pi * r_cm**2
    bright = bb > 1e-3 * bb.max()  # lattice interpolation in logT: < 1 % where the bands see flux
    assert np.allclose(spec[2][bright], bb[bright], rtol=1e-2)


def test_inside_points_log_no_fallback(caplog):
    lib = make_stellar_library(LibSettings())
    with caplog.at_level(logging.WARNING, logger="beastflow.physics.stellib"):
        lib.spectra_at(np.log10([5772.0]), [4.44], [0.0152], [0.0])
    assert "outside the model atmospheres" not in caplog.text


def test_planck_stays_selectable_and_atlas9_takes_no_file():
    lib = make_stellar_library(LibSettings(libraries=["planck"]))
    assert lib.label == PLANCK_LABEL and lib.is_analytic
    assert make_stellar_library(LibSettings(libraries=["atlas9"])).label == atlas9.LABEL
    with pytest.raises(ValueError, match="'atlas9' is embedded"):
        LibSettings(libraries=["atlas9"], files={"atlas9": "x.fits"})
