"""Stellar atmosphere libraries (spec §2, §3): readers, polygons, interpolation, scaling."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from beastflow.behaviour import PROFILES
from beastflow.physics import stellib
from beastflow.physics.stellib import (
    PLANCK_LABEL,
    CompositeLibrary,
    StellarLibrary,
    make_stellar_library,
    planck_flux,
    planck_library,
    radius_rsun,
    read_beast_fits,
)
from beastflow.settings.physics import StellarLibrary as LibSettings

#: compat flag -> physics behaviour of that profile
BEHAVIOURS = {False: PROFILES["none"].physics, True: PROFILES["beast-2.1"].physics}
SIGMA_CGS = 5.670374419e-5  # erg s^-1 cm^-2 K^-4
L_SUN_CGS = 3.828e33  # erg s^-1
LOGT_SUN = np.log10(5772.0)


@pytest.fixture(scope="module")
def kurucz():
    # module scope: read the real grid once (the conftest fixture is per test)
    from tests.conftest import STELLIB

    f = STELLIB / "kurucz91_solar.grid.fits"
    if not f.exists():
        pytest.skip(f"real test data not found at {f}")
    return read_beast_fits(str(f), "kurucz")


@pytest.fixture(scope="module")
def planck():
    return planck_library()


def _area(logL, logT):
    r_cm = stellib.radius_m(logL, logT) * 100
    return 4 * np.pi * r_cm**2


# --------------------------------------------------------------------------- Kurucz file


def test_read_real_kurucz_grid(kurucz_grid):
    k = read_beast_fits(str(kurucz_grid), "kurucz")
    assert k.label == "kurucz (kurucz91_solar.grid.fits)"
    assert not k.is_analytic
    assert k.n_models == 412 and k.flux.shape == (412, 1217) and k.wavelength.size == 1217
    assert np.array_equal(k.metallicities, [0.02])
    assert np.isclose(10 ** k.logT.min(), 3500, rtol=1e-6) and np.isclose(10 ** k.logT.max(), 50000, rtol=1e-6)
    # the shared file labels model fp00t9400g395 (log g = 3.95) with logg = 39.5;
    # the reader keeps the file's values (BEAST reads them as they are) and warns
    odd = k.logg > 10
    assert odd.sum() == 1 and np.isclose(10 ** k.logT[odd][0], 9400)
    assert k.logg.min() == 0.0 and k.logg[~odd].max() == 5.0
    assert np.isclose(k.wavelength[0], 90.9) and np.isclose(k.wavelength[-1], 8.0e5)
    assert np.all(np.diff(k.wavelength) > 0)


def test_kurucz_flux_integrates_to_sigma_t4(kurucz):
    for teff, g in [(3500, 0.0), (5750, 4.5), (10000, 4.0), (30000, 4.0), (50000, 5.0)]:
        i = np.nonzero(np.isclose(10**kurucz.logT, teff, rtol=1e-6) & (kurucz.logg == g))[0]
        assert i.size == 1
        f = kurucz.flux[kurucz.spec_row[i[0]]]
        ratio = np.trapezoid(f, kurucz.wavelength) / (SIGMA_CGS * teff**4)
        assert abs(ratio - 1) < 0.02, (teff, g, ratio)


def test_exact_grid_point_returns_that_spectrum(kurucz):
    i = 137
    T, g = kurucz.logT[i], kurucz.logg[i]
    idx, w = kurucz.interpolation_weights([T], [g], [0.02], PROFILES["beast-2.1"].physics)
    assert idx[0, 0] == i and w[0, 0] == 1.0 and np.all(idx[0, 1:] == -1)
    keep, L, R, osl = kurucz.spectra_at([T], [g], [0.02], [1.3], PROFILES["none"].physics)
    assert keep.all() and osl is None
    assert np.array_equal(L[0], kurucz.flux[i] * _area(1.3, T))


def test_interpolation_between_two_teff(kurucz):
    tk = 10**kurucz.logT
    a = np.nonzero(np.isclose(tk, 5750) & (kurucz.logg == 4.5))[0][0]
    b = np.nonzero(np.isclose(tk, 6000) & (kurucz.logg == 4.5))[0][0]
    T0 = 0.5 * (kurucz.logT[a] + kurucz.logT[b])
    for compat in (False, True):
        idx, w = kurucz.interpolation_weights([T0], [4.5], [0.0152], BEHAVIOURS[compat])
        used = idx[0] >= 0
        assert set(idx[0][used]) == {a, b}
        assert np.isclose(w[0][used].sum(), 1.0, rtol=0, atol=1e-14)
        wa = w[0][idx[0] == a][0]
        assert np.isclose(wa, (kurucz.logT[b] - T0) / (kurucz.logT[b] - kurucz.logT[a]))
    keep, L, R, _ = kurucz.spectra_at([T0], [4.5], [0.0152], [0.0])
    f = L[0] / _area(0.0, T0)
    fa, fb = kurucz.flux[a], kurucz.flux[b]
    lo, hi = np.minimum(fa, fb), np.maximum(fa, fb)
    assert np.all(f >= lo * (1 - 1e-12)) and np.all(f <= hi * (1 + 1e-12))
    assert np.all((f > lo) | (lo == hi))


def test_bilinear_inside_a_cell_sums_to_one(kurucz):
    rng = np.random.default_rng(3)
    T0 = rng.uniform(3.6, 3.9, 500)
    g0 = rng.uniform(1.2, 4.8, 500)
    for compat in (False, True):
        idx, w = kurucz.interpolation_weights(T0, g0, np.full(500, 0.02), BEHAVIOURS[compat])
        assert np.all(w >= 0)
        assert np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        # the weighted (logT, logg) reproduces the target (linear interpolation)
        Tw = (w * np.where(idx >= 0, kurucz.logT[idx], 0)).sum(axis=1)
        assert np.allclose(Tw, T0, atol=1e-12)


def test_polygons_known_points(kurucz):
    T = np.array([LOGT_SUN, 4.6, 3.50, 3.70, 4.5, 4.0])
    g = np.array([4.44, 2.0, 4.0, -0.2, 4.8, 4.0])
    assert kurucz.contains(T, g).tolist() == [True, False, False, False, True, True]
    # the usability margins (0.1 in logT, 0.3 in logg) admit the near misses
    assert kurucz.contains(T, g, 0.1, 0.3).tolist() == [True, False, True, True, True, True]
    rep = kurucz.coverage_report(T, g)
    assert rep == {"n": 6, "inside": 3, "usable": 5, "dropped": 1}
    keep, L, R, _ = kurucz.spectra_at(T, g, np.full(6, 0.02), np.zeros(6))
    assert keep.tolist() == [True, False, True, True, True, True] and L.shape == (5, 1217)
    tl = stellib.tlusty_polygon()
    inside = stellib.points_in_polygon(np.array([4.4, 4.0, 4.6, 4.3]), np.array([3.5, 4.0, 3.0, 1.5]), tl)
    assert inside.tolist() == [True, False, False, False]


# --------------------------------------------------------------------------- Planck


def test_planck_library_luminosity_and_radius(planck):
    assert planck.label == PLANCK_LABEL and planck.is_analytic
    # the Sun: R = 1 R_sun, and L_lambda integrates to L_sun
    assert abs(radius_rsun(0.0, LOGT_SUN) - 1.0) < 0.005
    cases = [(LOGT_SUN, 4.44, 0.0), (4.3, 4.0, 3.0), (3.62, 1.0, 2.5), (4.6612, 3.7, 5.2)]
    T, g, L = (np.array(x) for x in zip(*cases))
    keep, spec, R, osl = planck.spectra_at(T, g, np.full(T.size, 0.0152), L)
    assert keep.all() and osl is None
    lum = np.trapezoid(spec, planck.wavelength, axis=1)
    assert np.allclose(lum / (10**L * L_SUN_CGS), 1.0, rtol=0.01)
    assert np.allclose(R, np.sqrt(10**L) * (5772.0 / 10**T) ** 2, rtol=1e-3)


def test_planck_spectrum_is_pi_b_at_nodes_and_close_between(planck):
    wl = planck.wavelength
    for T0 in (4.0, 4.0025):  # a node and the midpoint between two nodes
        keep, spec, R, _ = planck.spectra_at([T0], [3.0], [0.02], [1.0])
        f = spec[0] / _area(1.0, T0)
        exact = planck_flux(wl, np.array([10**T0]))[0]
        band = (wl > 1500) & (wl < 30000)  # HST UV-IR
        rel = np.abs(f[band] / exact[band] - 1)
        assert rel.max() < (1e-12 if T0 == 4.0 else 0.01)


# --------------------------------------------------------------------------- metallicity


def _two_z_library():
    """Z = 0.01 planes carry 1 x black body, Z = 0.02 planes 2 x."""
    base = planck_library(
        logT=np.round(np.arange(3.6, 4.01, 0.05), 6), logg=np.array([3.0, 5.0]), Z=np.array([0.01, 0.02])
    )
    flux = np.vstack([base.flux, 2 * base.flux])
    row = base.spec_row + np.where(base.Z == 0.02, base.flux.shape[0], 0)
    return StellarLibrary("twoz", "two-Z test", base.wavelength, base.logT, base.logg, base.Z, flux, row, "box", True)


@pytest.mark.parametrize(
    "z, default, compat",
    [
        (0.0125, 1.25, 1.75),  # fz = 0.25: (1-fz, fz) vs BEAST's inverted (fz, 1-fz)
        (0.018, 1.8, 1.2),
        (0.01, 1.0, 1.0),
        (0.02, 2.0, 2.0),  # exact planes
        (0.005, 1.0, 1.0),
        (0.05, 2.0, 2.0),
    ],  # outside: nearest plane, unscaled
)
def test_metallicity_weights_default_vs_compat(z, default, compat):
    lib = _two_z_library()
    ref = planck_flux(lib.wavelength, np.array([10**3.8]))[0] * _area(0.0, 3.8)
    for mode, factor in ((False, default), (True, compat)):
        keep, spec, R, _ = lib.spectra_at([3.8], [4.0], [z], [0.0], BEHAVIOURS[mode])
        assert np.allclose(spec[0], factor * ref, rtol=1e-12), (z, mode)


def test_index_zero_quirk_in_temperature_consistency():
    # local model 0 is the hot upper-right neighbour; the lower-right one is
    # 0.2 dex cooler, so the consistency rule drops model 0 -- except in
    # BEAST, which treats index 0 as missing in that test (spec §3.1 QUIRK)
    T = np.array([4.2, 4.0, 3.8, 3.8])
    g = np.array([5.0, 3.0, 5.0, 3.0])
    wl = np.geomspace(1000, 10000, 50)
    lib = StellarLibrary(
        "q", "quirk test", wl, T, g, np.full(4, 0.02), planck_flux(wl, 10**T), np.arange(4), "box", True
    )
    i_def, w_def = lib.interpolation_weights([3.9], [4.0], [0.02], PROFILES["none"].physics)
    i_bst, w_bst = lib.interpolation_weights([3.9], [4.0], [0.02], PROFILES["beast-2.1"].physics)
    assert 0 not in i_def[0][w_def[0] > 0]
    assert 0 in i_bst[0][w_bst[0] > 0]
    assert np.isclose(w_def[0].sum(), 1.0) and np.isclose(w_bst[0].sum(), 1.0)


# --------------------------------------------------------------------------- composite


def test_composite_assignment_strict_then_relaxed(kurucz):
    hot = planck_library(logT=np.arange(4.3, 4.801, 0.01), logg=np.array([3.0, 4.0, 5.0]))
    comp = CompositeLibrary([kurucz, hot])
    assert comp.label == f"{kurucz.label} + {PLANCK_LABEL}"
    assert comp.wavelength[0] >= 90.9 and comp.wavelength[-1] <= 1e5
    T = np.array([LOGT_SUN, 4.75, 3.50, 4.5, 4.5, 3.0])
    g = np.array([4.44, 4.8, 4.0, 4.0, 2.0, 4.0])
    osl = comp.assign(T, g)
    # sun: kurucz (strict); (4.75, 4.8): outside kurucz strictly, inside the
    # hot box -> box in the strict pass although kurucz comes first;
    # (3.50, 4.0): only kurucz with margins -> relaxed pass; (4.5, 4.0): both
    # strictly -> the first; (4.5, 2.0): nobody; (3.0, 4.0): nobody
    assert osl.tolist() == [1, 2, 1, 1, 0, 0]
    keep, spec, R, osl2 = comp.spectra_at(T, g, np.full(6, 0.02), np.zeros(6))
    assert keep.tolist() == [True, True, True, True, False, False]
    assert osl2.tolist() == [1, 2, 1, 1] and spec.shape == (4, comp.wavelength.size)
    # each row equals its own library's interpolation, resampled
    _, s1, _, _ = kurucz.spectra_at(T[:1], g[:1], [0.02], [0.0])
    assert np.allclose(spec[0], np.interp(comp.wavelength, kurucz.wavelength, s1[0]), rtol=1e-12)
    assert stellib.beast_row_order(osl2).tolist() == [0, 2, 3, 1]


def test_composite_hot_low_gravity_goes_to_first_covering_library(kurucz, planck):
    T, g = np.array([4.5, LOGT_SUN]), np.array([2.0, 4.44])  # O/B supergiant, the Sun
    assert CompositeLibrary([kurucz, planck]).assign(T, g).tolist() == [2, 1]
    assert CompositeLibrary([planck, kurucz]).assign(T, g).tolist() == [1, 1]


# --------------------------------------------------------------------------- settings, files, download


def test_planck_settings_give_planck():
    lib = make_stellar_library(LibSettings(libraries=["planck"]))
    assert lib.label == PLANCK_LABEL and lib.is_analytic
    assert 80 < lib.wavelength[0] < 100 and 0.9e5 <= lib.wavelength[-1] <= 1.1e5
    assert 1000 <= lib.wavelength.size <= 10000


def test_explicit_file_and_composite_from_settings(kurucz_grid):
    s = LibSettings(libraries=["kurucz", "planck"], files={"kurucz": str(kurucz_grid)})
    lib = make_stellar_library(s)
    assert isinstance(lib, CompositeLibrary)
    assert lib.label == f"kurucz (kurucz91_solar.grid.fits) + {PLANCK_LABEL}"


def test_missing_file_names_the_setting():
    with pytest.raises(ValueError, match=r"physics\.stellar_library\.files\.tlusty"):
        make_stellar_library(LibSettings(libraries=["tlusty", "kurucz"]))


def test_download_once_then_reuse_cache(tmp_path, kurucz_grid):
    remote = tmp_path / "remote"
    remote.mkdir()
    shutil.copy(kurucz_grid, remote / "kurucz2004.grid.fits")  # temp copy, never committed
    cache = tmp_path / "cache"
    s = LibSettings(libraries=["kurucz"], download=True, download_base_url=f"file://{remote}/", cache=str(cache))
    lib = make_stellar_library(s)
    assert lib.label == "kurucz (kurucz2004.grid.fits)" and lib.n_models == 412
    assert (cache / "kurucz2004.grid.fits").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    (remote / "kurucz2004.grid.fits").unlink()  # the cached copy is reused
    assert make_stellar_library(s).n_models == 412
    bad = LibSettings(libraries=["tlusty"], download=True, download_base_url=f"file://{remote}/", cache=str(cache))
    with pytest.raises(ValueError, match="download_base_url"):
        make_stellar_library(bad)
    assert not (cache / "tlusty.lowres.grid.fits").exists()


def test_download_over_http(tmp_path, kurucz_grid):
    """http(s) goes through astropy's downloader into the configured cache; a 404 names the setting."""
    import functools
    import http.server
    import threading

    remote = tmp_path / "remote"
    remote.mkdir()
    shutil.copy(kurucz_grid, remote / "kurucz2004.grid.fits")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(remote))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        cache = tmp_path / "cache"
        s = LibSettings(libraries=["kurucz"], download=True, download_base_url=base, cache=str(cache))
        assert make_stellar_library(s).n_models == 412
        assert (cache / "kurucz2004.grid.fits").read_bytes() == (remote / "kurucz2004.grid.fits").read_bytes()
        bad = LibSettings(libraries=["tlusty"], download=True, download_base_url=base, cache=str(cache))
        with pytest.raises(ValueError, match="download_base_url"):
            make_stellar_library(bad)
        assert sorted(p.name for p in cache.iterdir()) == ["kurucz2004.grid.fits"]
    finally:
        server.shutdown()


def test_fits_reader_errors_name_file_and_column(tmp_path):
    from astropy.io import fits

    img = np.vstack([np.ones((2, 5)), np.arange(1.0, 6.0)])
    t = fits.BinTableHDU.from_columns(
        [fits.Column("logT", "D", array=[3.7, 3.8]), fits.Column("Z", "D", array=[0.02, 0.02])]
    )
    f = tmp_path / "bad.grid.fits"
    fits.HDUList([fits.PrimaryHDU(img), t]).writeto(f)
    with pytest.raises(ValueError, match=r"bad\.grid\.fits.*logg"):
        read_beast_fits(str(f), "kurucz")


def test_settings_reject_unknown_files_and_duplicates():
    from beastflow.settings import SettingsError, settings_from_dict

    with pytest.raises(SettingsError, match=r"physics\.stellar_library\.files"):
        settings_from_dict({"physics": {"stellar_library": {"files": {"planck": "x.fits"}}}})
    with pytest.raises(SettingsError, match=r"physics\.stellar_library\.libraries"):
        settings_from_dict({"physics": {"stellar_library": {"libraries": ["kurucz", "kurucz"]}}})


# (logT, logg, [(model, weight), ...]) from BEAST 2.1.0's pure-Python
# ``__interp__`` run on the shared Kurucz file (weights > 0, sorted by model);
# our compat kernel reproduced 13,740 random points this way bit for bit.
BEAST_WEIGHTS = [
    (
        3.7613,
        4.44,
        [(107, 0.10940354172349456), (108, 0.8022926393056328), (118, 0.01059645827650466), (119, 0.0777073606943681)],
    ),
    (
        3.55,
        0.2,
        [(0, 0.48121527029986033), (1, 0.3208101801999069), (11, 0.1187847297001396), (12, 0.07918981980009308)],
    ),
    (3.5, 4.9, [(9, 0.1999999999999993), (10, 0.8000000000000007)]),
    (4.0, 2.0, [(256, 1.0)]),
    (4.2, 3.0, [(308, 0.14699144758375726), (314, 0.8530085524162427)]),
    (4.65, 4.7, [(406, 0.06280264631422972), (409, 0.9371973536857703)]),
    (
        3.9031,
        1.25,
        [
            (191, 0.4996253727604428),
            (192, 0.4996253727604428),
            (200, 0.00037462723955724176),
            (201, 0.00037462723955724176),
        ],
    ),
    (4.7, 5.2, [(411, 1.0)]),
    (3.8, 5.1, [(131, 0.7581224336780856), (141, 0.24187756632191437)]),
    (
        4.1,
        3.75,
        [(290, 0.4092959126292812), (291, 0.4092959126292812), (296, 0.09070408737071878), (297, 0.09070408737071878)],
    ),
    (3.6, 2.5, [(16, 0.07349572379187863), (27, 0.9265042762081214)]),
    (
        4.35,
        3.3,
        [
            (347, 0.24299905178480308),
            (348, 0.36449857767720406),
            (352, 0.15700094821519728),
            (353, 0.23550142232279558),
        ],
    ),
    (3.71, -0.25, [(66, 0.4794544346382029), (77, 0.5205455653617971)]),
    (
        3.98,
        4.2,
        [
            (246, 0.47892602018004615),
            (247, 0.31928401345336455),
            (253, 0.12107397981995352),
            (254, 0.08071598654663581),
        ],
    ),
]


@pytest.mark.parametrize("T0, g0, expected", BEAST_WEIGHTS)
def test_weights_match_beast_bit_for_bit(kurucz, T0, g0, expected):
    idx, w = kurucz.interpolation_weights([T0], [g0], [0.02], PROFILES["beast-2.1"].physics)
    got = sorted((int(i), float(x)) for i, x in zip(idx[0], w[0]) if i >= 0)
    assert got == expected
    # default mode: same algorithm without the index-0 rule; weights sum to 1
    idx, w = kurucz.interpolation_weights([T0], [g0], [0.02], PROFILES["none"].physics)
    assert np.isclose(w[0].sum(), 1.0, atol=1e-12)
