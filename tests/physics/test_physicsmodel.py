"""Spectral grid + SED grid builder (spec physics-model §4, §7.4, §9)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from beastflow.io.sed_grid import SEDGrid
from beastflow.physics import spectral_grid
from beastflow.physics.physicsmodel import full_grid_rows, run_physicsmodel, uniform_slices
from beastflow.settings import settings_from_dict

FILTERS = ["HST_WFC3_F275W", "HST_ACS_WFC_F475W", "GROUND_JOHNSON_V", "HST_WFC3_F160W"]


def small_settings(
    tmp_path,
    *,
    compat="none",
    n_subgrid=1,
    libraries=("planck",),
    files=None,
    logt=(8.0, 9.0, 1.0),
    avs=(0.0, 2.0, 1.0),
    distances=(24.0, 24.5, 0.5),
    **phys,
):
    data = {
        "compat": compat,
        "project": {"name": "t", "output": str(tmp_path / "out")},
        "physics": {
            "filters": FILTERS,
            "distances": list(distances),
            "distance_unit": "mag",
            "n_subgrid": n_subgrid,
            "chunk_models": 1024,
            "isochrones": {"logt": list(logt), "z": [0.0152], "logmass_step": 0.2},
            "stellar_library": {"libraries": list(libraries), "files": dict(files or {})},
            "extinction": {"avs": list(avs), "rvs": [2.0, 6.0, 2.0], "fAs": [0.0, 1.0, 0.5]},
            **phys,
        },
    }
    return settings_from_dict(data)


# ------------------------------------------------------------ pure helpers


def test_distance_grids_and_units():
    d = spectral_grid.distances_pc([24.47], "mag")
    assert d[0] == pytest.approx(10 ** (24.47 / 5 + 1))
    np.testing.assert_allclose(spectral_grid.distances_pc([10, 20, 5], "kpc"), [1e4, 1.5e4, 2e4])
    np.testing.assert_allclose(spectral_grid.distances_pc([1.0], "Mpc"), [1e6])
    # numpy-arange QUIRK: arange(0.1, 0.3 + 0.1, 0.1) adds a point past max
    np.testing.assert_allclose(spectral_grid.distance_values([0.1, 0.3, 0.1], arange=True), [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(spectral_grid.distance_values([0.1, 0.3, 0.1]), [0.1, 0.2, 0.3])
    np.testing.assert_allclose(spectral_grid.distance_values([1.0, 2.0, 0.3]), [1.0, 1.3, 1.6, 1.9])


def test_uniform_slices_as_beast():
    assert uniform_slices(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert uniform_slices(2, 3) == [(0, 1), (1, 2), (2, 2)]
    assert uniform_slices(9, 1) == [(0, 9)]


def test_trim_and_redshift():
    lam = np.array([999.0, 1000.0, 1000.1, 5000.0, 33333.3, 33333.4])
    # x in [0.3, 10] 1/micron -> strictly inside (1000, 33333.33) Å
    np.testing.assert_array_equal(spectral_grid.trim_mask(lam, (0.3, 10.0)), [0, 0, 1, 1, 1, 0])
    assert spectral_grid.redshift_factor(-300.0) == pytest.approx(1 - 300 / 299792.458, rel=1e-12)


# ------------------------------------------------------------- SED grids


@pytest.fixture(scope="module")
def planck_grids(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pm")
    full = run_physicsmodel(small_settings(tmp / "full"))
    sub = run_physicsmodel(small_settings(tmp / "sub", n_subgrid=3))
    return full, sub


def test_subgrids_hold_exactly_the_full_grid(planck_grids):
    full, sub = planck_grids
    assert len(full.sed_grids) == 1 and len(sub.sed_grids) == 3
    assert sub.sed_grids[1].endswith("t_seds.gridsub1.hd5")
    g = SEDGrid(full.sed_grids[0]).read()
    assert sub.n_models == full.n_models == len(g)
    parts = [SEDGrid(u) for u in sub.sed_grids]
    sizes = [p.meta["spec_rows"][1] - p.meta["spec_rows"][0] for p in parts]
    n_spec = parts[0].meta["n_spec_rows"]
    assert sizes == [b - a for a, b in uniform_slices(n_spec, 3)]
    # concatenated subgrids, put into full-grid row order, equal the full grid row for row
    idx = np.concatenate([full_grid_rows(p.meta) for p in parts])
    np.testing.assert_array_equal(np.sort(idx), np.arange(len(g)))
    cat_seds = np.concatenate([p.read().seds for p in parts])
    order = np.argsort(idx)
    np.testing.assert_allclose(cat_seds[order], g.seds, rtol=1e-13, atol=0)
    for c in g.columns:
        cat = np.concatenate([p.read(columns=[c], seds=False).columns[c] for p in parts])[order]
        np.testing.assert_allclose(cat, g.columns[c], rtol=1e-13, atol=0, err_msg=c)


def test_grid_columns_units_and_order(planck_grids):
    full, _ = planck_grids
    grid = SEDGrid(full.sed_grids[0])
    expect = (
        [
            "Av",
            "Rv",
            "Rv_A",
            "f_A",
            "distance",
            "radius",
            "weight",
            "prior_weight",
            "grid_weight",
            "specgrid_indx",
            "logL",
            "logg",
            "mbolmag",
            "logA",
            "logT",
            "M_ini",
            "M_act",
            "stage",
            "Z",
        ]
        + [f"log{f}_nd" for f in FILTERS]
        + [f"log{f}_wd" for f in FILTERS]
    )
    assert grid.columns == expect
    assert grid.filters == FILTERS
    assert grid.stellar_library.startswith("planck")
    assert grid.provenance["stage"] == "physicsmodel" and len(grid.provenance["settings_hash"]) == 64
    b = grid.read()
    c = b.columns
    n0 = grid.meta["spec_rows"][1]
    nv = grid.meta["n_valid_dust"]
    assert len(b) == n0 * nv
    # block structure: dust parameters constant over each block of n0 rows, A(V) slowest
    Av = c["Av"].reshape(nv, n0)
    assert np.all(Av == Av[:, :1]) and np.all(np.diff(Av[:, 0]) >= 0)
    assert set(np.unique(c["Av"])) == {0.0, 1.0, 2.0}
    # two distances 24.0, 24.5 mag -> pc
    np.testing.assert_allclose(np.unique(c["distance"]), 10 ** (np.array([24.0, 24.5]) / 5 + 1))
    np.testing.assert_allclose(c["weight"], c["grid_weight"] * c["prior_weight"], rtol=1e-14)
    assert np.all(c["weight"] >= 0)
    np.testing.assert_allclose(np.log10(b.seds), np.stack([c[f"log{f}_wd"] for f in FILTERS], 1), rtol=1e-12)
    # A(V) = 0: the extinguished fluxes are the unextinguished ones (default mode)
    z = c["Av"] == 0
    for f in FILTERS:
        np.testing.assert_allclose(c[f"log{f}_wd"][z], c[f"log{f}_nd"][z], rtol=0, atol=1e-12)
    # fluxes in erg/s/cm2/A at the model distance: same star, two distances, ratio (d1/d2)^2
    sp = c["specgrid_indx"]
    n_star = n0 // 2
    near, far = np.arange(n_star), np.arange(n_star) + n_star
    ratio = (c["distance"][near] / c["distance"][far]) ** 2
    np.testing.assert_allclose(b.seds[far] / b.seds[near], np.repeat(ratio[:, None], len(FILTERS), 1), rtol=1e-12)
    np.testing.assert_array_equal(sp[:n0], np.arange(n0))  # default: row of the spectral grid
    # band wavelengths: mean wavelength of each filter
    assert 4600 < grid.lamb[1] < 4900 and 15000 < grid.lamb[3] < 16000
    # physically plausible: a 1 Msun star at 10^9 yr in V at ~630 kpc is ~ 29 Vega mag
    from beastflow.physics import vega

    sel = z & (np.abs(c["M_ini"] - 1.0) < 0.3) & (c["logA"] == 9.0) & (c["distance"] == c["distance"].min())
    if sel.any():
        m = vega.vega_magnitudes(b.seds[sel], FILTERS)[:, 2]
        assert np.all((m > 25) & (m < 32))


def test_extinction_dims_v_band_by_av(tmp_path):
    """A(V) = 1 dims the V band by ≈ 1 mag (default) and ≈ 1.086 mag (compat exp(-A) BUG?)."""
    out = {}
    for compat in ("none", "beast-2.1"):
        s = small_settings(tmp_path / compat, compat=compat, logt=(7.0,), avs=(0.0, 1.0, 1.0), distances=(24.0,))
        g = SEDGrid(run_physicsmodel(s).sed_grids[0]).read()
        c = g.columns
        iv = FILTERS.index("GROUND_JOHNSON_V")
        hot = c["logT"] > 3.9
        a0 = (c["Av"] == 0) & hot
        a1 = (c["Av"] == 1) & hot & (c["f_A"] == 1.0) & (np.abs(c["Rv"] - 4.0) < 1e-9)
        # rows are (dust block, spectral row): pair them by spectral index
        f0 = dict(zip(c["specgrid_indx"][a0], g.seds[a0, iv]))
        dm = [-2.5 * np.log10(f / f0[k]) for k, f in zip(c["specgrid_indx"][a1], g.seds[a1, iv])]
        out[compat] = np.median(dm)
    assert out["none"] == pytest.approx(1.0, abs=0.03)
    assert out["beast-2.1"] == pytest.approx(2.5 / np.log(10), abs=0.03)
    assert out["beast-2.1"] / out["none"] == pytest.approx(1.0857, rel=2e-3)


def test_spec_grid_artifact_and_resume(tmp_path, caplog):
    s = small_settings(tmp_path, logt=(8.0,), distances=(24.47,))
    import logging

    with caplog.at_level(logging.WARNING):
        r1 = run_physicsmodel(s)
    assert "stellar library: planck (analytic black body" in caplog.text
    with h5py.File(r1.spec_grid, "r") as h5:
        assert h5.attrs["format"] == "beastflow-spec-grid"
        cols = json.loads(h5.attrs["columns"])
        n = h5.attrs["n_rows"]
        assert h5["spectra"].shape[1] == h5["lamb"].shape[0]
        assert len(h5["grid/logA"]) == n and "logHST_WFC3_F275W_nd" in cols
        prov = json.loads(h5.attrs["provenance"])
        assert prov["settings_hash"] == s.section_hash("physics", "compat")
    mtime = (tmp_path / "out" / "t_seds.grid.hd5").stat().st_mtime_ns
    r2 = run_physicsmodel(s)
    assert r2.summary["cached"] and r2.n_models == r1.n_models
    assert (tmp_path / "out" / "t_seds.grid.hd5").stat().st_mtime_ns == mtime
    assert r1.summary["library"]["kept"] + r1.summary["library"]["dropped"] == r1.summary["library"]["isochrone_points"]


def test_compat_specgrid_indx_per_distance(tmp_path):
    s = small_settings(tmp_path, compat="beast-2.1", logt=(8.0,), avs=(0.0,))
    g = SEDGrid(run_physicsmodel(s).sed_grids[0])
    c = g.read(seds=False).columns
    n0 = g.meta["spec_rows"][1]
    # QUIRK: the index restarts in every distance block
    np.testing.assert_array_equal(c["specgrid_indx"][: n0 // 2], c["specgrid_indx"][n0 // 2 : n0])


def test_kurucz_parsec_integration(tmp_path, kurucz_grid):
    s = small_settings(
        tmp_path,
        libraries=("kurucz",),
        files={"kurucz": str(kurucz_grid)},
        logt=(8.0, 9.0, 1.0),
        avs=(0.0, 2.0, 2.0),
        distances=(24.47,),
        filters=["HST_WFC3_F275W", "HST_ACS_WFC_F475W", "HST_ACS_WFC_F814W", "HST_WFC3_F160W"],
    )
    res = run_physicsmodel(s)
    g = SEDGrid(res.sed_grids[0])
    assert "kurucz" in g.stellar_library.lower()
    assert any(k.startswith("stellib:kurucz") for k in g.provenance["input_hashes"])
    lib = g.meta["library"]
    assert lib["kept"] > 0 and lib["kept"] + lib["dropped"] == lib["isochrone_points"]
    b = g.read()
    assert np.all(np.isfinite(b.seds)) and np.all(b.seds > 0)
    # extinction dims every band, more in the UV than in the IR
    c = b.columns
    n0 = g.meta["spec_rows"][1]
    r = b.seds[c["Av"] == 2.0][:n0] / b.seds[c["Av"] == 0.0][:n0]
    assert np.all(r < 1) and np.all(r[:, 0] < r[:, 3])
    # a solar-type star at M31 is ~ 28-30 mag in F475W
    from beastflow.physics import vega

    sel = (c["Av"] == 0) & (np.abs(c["M_ini"] - 1.0) < 0.15) & (c["logA"] == 9.0)
    if sel.any():
        m = vega.vega_magnitudes(b.seds[sel], g.filters)[:, 1]
        assert np.all((m > 27) & (m < 31))


def test_subgrids_built_one_at_a_time_reuse_the_spectral_grid(tmp_path, planck_grids, caplog):
    import logging

    _, sub = planck_grids
    s = small_settings(tmp_path, n_subgrid=3)
    r1 = run_physicsmodel(s, subgrids=[1])
    assert r1.sed_grids == [s.artifact("t_seds.gridsub1.hd5")]
    with caplog.at_level(logging.INFO):
        r02 = run_physicsmodel(s, subgrids=[0, 2])
    assert "reusing the spectral grid with priors" in caplog.text
    for mine, ref in zip(r02.sed_grids[:1] + r1.sed_grids + r02.sed_grids[1:], sub.sed_grids):
        a, b = SEDGrid(mine).read(), SEDGrid(ref).read()
        np.testing.assert_array_equal(a.seds, b.seds)
        for c in b.columns:
            np.testing.assert_array_equal(a.columns[c], b.columns[c], err_msg=c)
    with pytest.raises(ValueError, match="n_subgrid"):
        run_physicsmodel(s, subgrids=[3])


def test_row_chunked_path_equals_stacked_path(tmp_path):
    """Slices larger than chunk_models are streamed in row chunks; same numbers either way."""
    grids = []
    for chunk in (1024, 1 << 20):
        s = small_settings(tmp_path / str(chunk), logt=(6.0, 10.0, 1.0), avs=(0.0, 1.0, 1.0), chunk_models=chunk)
        g = SEDGrid(run_physicsmodel(s).sed_grids[0])
        grids.append(g)
    assert grids[0].meta["spec_rows"][1] > 1024  # exercises the row-chunked branch
    a, b = grids[0].read(), grids[1].read()
    np.testing.assert_allclose(a.seds, b.seds, rtol=1e-13, atol=0)
    for c in b.columns:
        np.testing.assert_allclose(a.columns[c], b.columns[c], rtol=1e-13, atol=0, err_msg=c)


@pytest.mark.parametrize("compat", ["none", "beast-2.1"])
def test_sed_rows_match_an_independent_direct_computation(tmp_path, kurucz_grid, compat):
    """Rows of the grid recomputed model by model: library spectrum → radius scaling →
    distance → redshift → dust curve → band integral (default: pyphot's own
    ``get_flux``; compat: the spec §5 formula with np.trapezoid and exp(-A))."""
    import astropy.units as u
    import pyphot

    from beastflow.physics.extinction import make_extinction_law
    from beastflow.physics.stellib import make_stellar_library

    beast = compat == "beast-2.1"
    s = small_settings(
        tmp_path,
        compat=compat,
        libraries=("kurucz",),
        files={"kurucz": str(kurucz_grid)},
        logt=(8.0,),
        avs=(0.0, 2.0, 2.0),
        distances=(24.47,),
    )
    g = SEDGrid(run_physicsmodel(s).sed_grids[0])
    b = g.read()
    c = b.columns
    lib = make_stellar_library(s.physics.stellar_library)
    law = make_extinction_law(s.physics.extinction, beast)
    lam = np.asarray(lib.wavelength) * (1 - 300.0 / 299792.458)
    inside = (lam > 1e4 / law.x_range[1]) & (lam < 1e4 / law.x_range[0])
    li = lam[inside]
    pyf = [pyphot.get_library()[f] for f in FILTERS]
    rng = np.random.default_rng(3)
    for i in rng.choice(len(b), 6, replace=False):
        keep, L, rad, _ = lib.spectra_at(
            c["logT"][i : i + 1],
            c["logg"][i : i + 1],
            c["Z"][i : i + 1],
            c["logL"][i : i + 1],
            s.resolved_behaviour.physics,
        )
        assert rad[0] == pytest.approx(c["radius"][i], rel=1e-12)
        d_cm = c["distance"][i] * 3.0856775e18
        f = L[0] / (4 * np.pi * d_cm**2)
        A = c["Av"][i] * law.curve(li, c["Rv"][i], c["f_A"][i], c["Rv_A"][i])
        fe = f[inside] * (np.exp(-A) if beast else 10 ** (-0.4 * A))
        for k, pf in enumerate(pyf):
            if beast:
                T = np.interp(li, pf.wavelength.to("AA").value, pf.transmit, left=0, right=0)
                p = T > 0
                ref = np.trapezoid(li[p] * T[p] * fe[p], li[p]) / np.trapezoid(li * T, li)
            else:
                ref = pf.get_flux(li * u.AA, fe * u.Unit("erg s-1 cm-2 AA-1")).value
            assert b.seds[i, k] == pytest.approx(float(ref), rel=1e-9), (i, FILTERS[k])


@pytest.mark.filterwarnings("ignore:Unexpected extra padding")
def test_replaced_library_file_makes_the_grid_out_of_date(tmp_path, kurucz_grid):
    import shutil

    lib = tmp_path / "kurucz.fits"
    shutil.copy(kurucz_grid, lib)
    s = small_settings(
        tmp_path, libraries=("kurucz",), files={"kurucz": str(lib)}, logt=(8.0,), avs=(0.0,), distances=(24.47,)
    )
    r1 = run_physicsmodel(s)
    before = SEDGrid(r1.sed_grids[0]).provenance["input_hashes"]["stellib:kurucz"]
    assert run_physicsmodel(s).summary["cached"]
    with open(lib, "ab") as fh:  # same name, different content (FITS padding block)
        fh.write(b"\0" * 2880)
    r3 = run_physicsmodel(s)
    assert not r3.summary["cached"]
    assert SEDGrid(r3.sed_grids[0]).provenance["input_hashes"]["stellib:kurucz"] != before


@pytest.mark.parametrize("field", ["specgrid_indx_per_star", "nd_untrimmed", "library_row_order"])
def test_one_physics_field_alone_changes_the_grid(tmp_path, field):
    """behaviour.physics.<field> = true alone (every other field at its default) changes the SED grid."""

    def grid(sub, behaviour):
        s = small_settings(tmp_path / sub, libraries=("atlas9", "planck"), logt=(9.0,), avs=(0.0,))
        g = SEDGrid(run_physicsmodel(s.model_copy(update={"behaviour": behaviour})).sed_grids[0]).read()
        return g.seds, g.columns

    seds0, cols0 = grid("default", {})
    seds1, cols1 = grid(field, {"physics": {field: True}})
    changed = [c for c in cols0 if not np.array_equal(cols0[c], cols1[c])]
    assert changed or not np.array_equal(seds0, seds1)
    if field == "specgrid_indx_per_star":
        assert changed == ["specgrid_indx"]


def _build(s, url, threads: int | None = None):
    import numba

    from beastflow.physics.physicsmodel import build_sed_subgrid, plan_dust

    s.activate()
    sg = spectral_grid.build_spectral_grid(s)
    old = numba.get_num_threads()
    numba.set_num_threads(threads or old)
    try:
        return build_sed_subgrid(s, sg, plan_dust(s), (0, sg.n_rows), url, {}, {})
    finally:
        numba.set_num_threads(old)


@pytest.mark.parametrize("chunk", [1024, 1 << 20])
def test_sed_grid_is_the_same_on_one_and_two_threads(tmp_path, monkeypatch, chunk):
    """Units are encoded on several threads; every number and the row order stay the same
    (both the stacked and the row-chunked products, several units per grid)."""
    import numba

    from beastflow.physics import physicsmodel

    if numba.config.NUMBA_NUM_THREADS < 2:  # type: ignore[attr-defined]
        pytest.skip("numba has a single thread here")
    monkeypatch.setattr(physicsmodel, "_UNIT_ROWS", 3000)
    s = small_settings(tmp_path, logt=(6.0, 10.0, 1.0), avs=(0.0, 1.0, 0.5), chunk_models=chunk)
    n1 = _build(s, str(tmp_path / "one.h5"), threads=1)
    n2 = _build(s, str(tmp_path / "two.h5"), threads=2)
    assert n1 == n2 > 3 * 3000
    a, b = SEDGrid(str(tmp_path / "one.h5")).read(), SEDGrid(str(tmp_path / "two.h5")).read()
    np.testing.assert_array_equal(a.seds, b.seds)
    for c in a.columns:
        np.testing.assert_array_equal(a.columns[c], b.columns[c], err_msg=c)


def test_sed_build_memory_is_flat_in_grid_size(tmp_path, monkeypatch):
    """The build holds a few units, not the grid: 4x the models, about the same peak."""
    import tracemalloc

    from beastflow.physics import physicsmodel

    monkeypatch.setattr(physicsmodel, "_UNIT_ROWS", 2048)
    peaks, sizes = [], []
    for hi in (2.0, 8.0):
        s = small_settings(tmp_path / str(hi), logt=(6.0, 10.0, 1.0), avs=(0.0, hi, 0.25), distances=(24.0,))
        _build(s, str(tmp_path / "warm.h5"))  # numba cache load, extinction curves
        tracemalloc.start()
        try:
            sizes.append(_build(s, str(tmp_path / f"g{hi}.h5")))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert sizes[1] > 3.5 * sizes[0]
    assert peaks[1] < 1.3 * peaks[0], (sizes, peaks)
