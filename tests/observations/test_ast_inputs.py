import tracemalloc

import numpy as np
import polars as pl
import pytest

from beastflow.behaviour import FluxBinRule
from beastflow.io.sed_grid import SEDGrid, write_sed_grid
from beastflow.observations import ast_inputs as A
from beastflow.observations import ast_positions as P
from beastflow.observations import ast_seds as S
from beastflow.observations import catalogs, geometry
from beastflow.observations.density import run_density_map
from beastflow.observations.grid_set import GridSet
from beastflow.settings import SettingsError, settings_from_dict
from beastflow.settings.asts import ASTs

from .conftest import PHAT_BANDS, PHAT_FILTERS


def _grid(tmp_path, n_sub=3, n=20000, seed=1, vega=None, name="g"):
    """Subgrids of random models; magnitudes 14-33 with band scatter, a few logL < -9."""
    rng = np.random.default_rng(seed)
    vega = np.ones(6) if vega is None else vega
    urls, parts = [], []
    for g in range(n_sub):
        base = rng.uniform(15, 32, n)
        mags = base[:, None] + rng.normal(0, 1, (n, 6))
        seds = vega * 10 ** (-0.4 * mags)
        cols = {
            "logA": rng.choice([6.0, 7.0, 8.0, 9.0], n),
            "logL": rng.uniform(-10, 5, n),
            "Av": rng.uniform(0, 3, n),
            "M_ini": rng.uniform(0.1, 50, n),
        }
        u = str(tmp_path / f"{name}_seds.gridsub{g}.hd5")
        write_sed_grid(u, PHAT_FILTERS, np.arange(6.0), seds, cols)
        urls.append(u)
        parts.append((seds, cols))
    return urls, parts


def _reference(parts, vega, ast, seed):
    """In-memory reference semantics: all candidates in key order, accept while a cell needs models."""
    seds = np.concatenate([p[0] for p in parts])
    logl = np.concatenate([p[1]["logL"] for p in parts])
    m = S.magnitudes(seds, vega)
    cand = np.flatnonzero((logl >= -9) & np.isfinite(m).all(axis=1))
    mc = m[cand]
    edges = np.array([np.linspace(mc[:, k].min(), mc[:, k].max(), ast.n_flux_bins + 1) for k in range(6)])
    codes = np.stack(
        [np.minimum(np.searchsorted(edges[k, 1:], mc[:, k], side="right"), ast.n_flux_bins - 1) for k in range(6)],
        axis=1,
    )
    order = np.argsort(S.model_keys(cand.astype(np.int64), seed))
    counts = np.zeros((ast.n_flux_bins, 6), np.int64)
    chosen = []
    for i in order:
        if any(counts[codes[i, k], k] < ast.n_per_flux_bin for k in range(6)):
            chosen.append(cand[i])
            for k in range(6):
                counts[codes[i, k], k] += 1
    return np.array(chosen), counts


def test_flux_bin_streaming_equals_reference(tmp_path):
    urls, parts = _grid(tmp_path)
    ast = ASTs(n_flux_bins=20, n_per_flux_bin=30, select_buffer=1024)
    ref_rows, ref_counts = _reference(parts, np.ones(6), ast, 7)
    for chunk, buf in [(4000, 1024), (100_000, 1 << 20)]:
        sel = S.select_flux_bin(GridSet(urls, chunk), np.ones(6), ast.model_copy(update={"select_buffer": buf}), 7)
        np.testing.assert_array_equal(sel.rows, ref_rows)
        np.testing.assert_array_equal(sel.counts, ref_counts)
    assert sel.n_passes == 1
    # small buffer needed several passes over the grid yet got the same answer
    small = S.select_flux_bin(GridSet(urls, 4000), np.ones(6), ast, 7)
    assert small.n_passes > 1 and small.peak_buffer <= 2 * 1024 + 4000
    assert len(np.unique(small.rows)) == len(small.rows)  # no duplicate picks


def test_flux_bin_fills_or_reports(tmp_path):
    urls, _ = _grid(tmp_path, n_sub=2)
    ast = ASTs(n_flux_bins=40, n_per_flux_bin=50)
    sel = S.select_flux_bin(GridSet(urls, 8000), np.ones(6), ast, 3)
    short = sel.counts < 50
    assert short.any()  # the sparse bright/faint tails cannot be filled
    # every short cell got every candidate it had, and is reported with the reason
    np.testing.assert_array_equal(sel.counts[short], sel.available[short])
    rep = {(u["filter"], u["bin"]) for u in sel.unfilled}
    assert rep == {(PHAT_FILTERS[k], b) for b, k in zip(*np.nonzero(short))}
    assert all("only" in u["reason"] and u["available"] < 50 for u in sel.unfilled)
    assert (sel.counts[~short] >= 50).all()
    # spec size bounds: between N*n_per*(filled fraction) and N*n_per*n_bands
    assert len(sel.rows) <= 40 * 50 * 6


def test_flux_bin_memory_bounded_by_one_block(tmp_path):
    urls, _ = _grid(tmp_path, n_sub=2, n=150_000)
    grid_bytes = sum(SEDGrid(u).nbytes for u in urls)
    ast = ASTs(n_flux_bins=20, n_per_flux_bin=20, select_buffer=4096)
    gs = GridSet(urls, 16_384)
    S.select_flux_bin(gs, np.ones(6), ast.model_copy(update={"n_per_flux_bin": 1}), 1)  # compile numba first
    tracemalloc.start()
    sel = S.select_flux_bin(gs, np.ones(6), ast, 1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    block_bytes = 16_384 * (6 + 2) * 8
    assert peak < 6 * block_bytes and peak < grid_bytes / 4, (peak, block_bytes, grid_bytes)
    assert len(sel.rows) > 0


def test_subgrids_equal_merged_grid(tmp_path):
    urls, parts = _grid(tmp_path, n_sub=3, n=5000)
    seds = np.concatenate([p[0] for p in parts])
    cols = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    merged = str(tmp_path / "m_seds.grid.hd5")
    write_sed_grid(merged, PHAT_FILTERS, np.arange(6.0), seds, cols)
    ast = ASTs(n_flux_bins=10, n_per_flux_bin=10)
    a = S.select_flux_bin(GridSet(urls, 3000), np.ones(6), ast, 11)
    b = S.select_flux_bin(GridSet([merged], 7000), np.ones(6), ast, 11)
    np.testing.assert_array_equal(a.rows, b.rows)


@pytest.fixture
def phat_setup(tmp_path, phat_catalog, make_settings):
    from beastflow.physics.vega import vega_band_fluxes

    vega = vega_band_fluxes(PHAT_FILTERS)
    urls, parts = _grid(tmp_path, n_sub=2, n=6000, vega=vega)
    s0 = make_settings(observations={"source_density": {"pixsize": 1.0}})
    d = run_density_map(s0, str(phat_catalog))
    return urls, parts, vega, d


def test_run_flux_bin_density_bins(phat_setup, make_settings, tmp_path):
    urls, parts, vega, d = phat_setup
    s = make_settings(
        physics={"chunk_models": 2500},
        asts={"n_flux_bins": 8, "n_per_flux_bin": 5, "realization_per_model": 2},
        observations={"source_density": {"pixsize": 1.0}},
    )
    r = A.run_ast_inputs(s, urls, d.catalog_url, d.map_url)
    params = pl.read_parquet(r.params_url)
    inp = pl.read_parquet(r.input_url)
    seds = np.concatenate([p[0] for p in parts])
    # sedgrid_indx points at the model whose magnitudes were chosen (BEAST's index BUG? fixed)
    mags = S.magnitudes(seds[params["sedgrid_indx"].to_numpy()], vega)
    for k, b in enumerate(PHAT_BANDS):
        np.testing.assert_allclose(params[f"{b}_IN"].to_numpy(), mags[:, k])
    logl = np.concatenate([p[1]["logL"] for p in parts])
    np.testing.assert_allclose(params["logL"].to_numpy(), logl[params["sedgrid_indx"].to_numpy()])
    assert (params["logL"].to_numpy() >= -9).all()
    nb = len(r.bins)
    assert inp.height == r.n_seds * 2 * nb == r.n_rows
    # row r = entry * n_bins + bin: the bins cycle fastest
    np.testing.assert_array_equal(inp["sd_bin"].to_numpy()[:nb], r.bins)
    np.testing.assert_array_equal(inp["sedgrid_indx"].to_numpy()[: 2 * nb], params["sedgrid_indx"][0])
    # positions inside the eroded catalog footprint
    cat = catalogs.read_parquet(d.catalog_url)
    hull = geometry.erode_convex(geometry.convex_hull(cat["RA"].to_numpy(), cat["DEC"].to_numpy()), 0.5 / 3600)
    assert geometry.points_in_convex(hull, inp["RA"].to_numpy(), inp["DEC"].to_numpy()).all()
    # ... and in a tile of their bin
    tiles = pl.read_parquet(d.map_url)
    for row in inp.head(50).iter_rows(named=True):
        t = tiles.filter(
            (pl.col("min_ra") <= row["RA"])
            & (pl.col("max_ra") >= row["RA"])
            & (pl.col("min_dec") <= row["DEC"])
            & (pl.col("max_dec") >= row["DEC"])
        )
        assert row["sd_bin"] in t["sd_bin"].to_list()
    lines = open(r.text_url).read().splitlines()
    assert lines[0].split() == ["zeros", "ones", "RA", "DEC", *PHAT_FILTERS]
    assert len(lines) == inp.height + 1 and lines[1].startswith("0 1 ")
    fb = pl.read_parquet(r.fluxbins_url)
    assert (
        fb.height == 8 * 6
        and (fb.filter(~pl.col("filled"))["count"] == fb.filter(~pl.col("filled"))["available"]).all()
    )


def test_compat_index_bug(phat_setup, make_settings, tmp_path):
    urls, parts, vega, d = phat_setup
    s = make_settings(
        "beast-2.1",
        physics={"chunk_models": 4000},
        asts={"n_flux_bins": 6, "n_per_flux_bin": 4},
        observations={"source_density": {"pixsize": 1.0}},
    )
    r = A.run_ast_inputs(s, urls, d.catalog_url, d.map_url)
    params = pl.read_parquet(r.params_url)
    seds = np.concatenate([p[0] for p in parts])
    mags = S.magnitudes(seds[params["sedgrid_indx"].to_numpy()], vega)
    # magnitudes are the chosen model's, parameters (and sedgrid_indx) come from the wrong row
    assert not np.allclose(params["F475W_IN"].to_numpy(), mags[:, 2])
    # behaviour.observations.sedgrid_indx_candidate alone: the same wrong rows; without it the right ones
    for on in (True, False):
        s1 = make_settings(
            out=str(tmp_path / f"idx_{on}"),
            physics={"chunk_models": 4000},
            asts={"n_flux_bins": 6, "n_per_flux_bin": 4},
            observations={"source_density": {"pixsize": 1.0}},
            behaviour={"observations": {"sedgrid_indx_candidate": on}},
        )
        p1 = pl.read_parquet(A.run_ast_inputs(s1, urls, d.catalog_url, d.map_url).params_url)
        m1 = A.magnitudes(seds[p1["sedgrid_indx"].to_numpy()], vega)
        assert np.allclose(p1["F475W_IN"].to_numpy(), m1[:, 2]) is not on


def test_random_pick_and_supplement(phat_setup, make_settings, tmp_path):
    urls, parts, vega, d = phat_setup
    s = make_settings(
        physics={"chunk_models": 2500},
        asts={"method": "random_pick", "models_selected_per_age": 7, "positions": "pixel_distribution"},
        observations={"source_density": {"pixsize": 1.0}},
    )
    r = A.run_ast_inputs(s, urls, d.catalog_url, d.map_url)
    p = pl.read_parquet(r.params_url)
    assert p.height == 4 * 7 and p.group_by("logA").len()["len"].to_list() == [7] * 4
    assert list(p["logA"]) == sorted(p["logA"])
    inp = pl.read_parquet(r.input_url)
    tiles = pl.read_parquet(d.map_url)
    occupied = set(tiles.filter(pl.col("n_sources") > 0)["sd_bin"].to_list())
    assert set(inp["sd_bin"].to_list()) <= occupied
    # supplement: excludes the existing picks, honours the magnitude cut (inclusive)
    s2 = make_settings(
        out=str(tmp_path / "sup"),
        physics={"chunk_models": 3000},
        asts={
            "method": "suppl_seds",
            "n_supplement": 300,
            "existing_file": r.params_url,
            "suppl_maglimit": {"F475W": [20.0, 26.0]},
            "suppl_colorlimit": {"F475W": [["F814W", 0.5]]},
            "positions": "annulus",
        },
    )
    r2 = A.run_ast_inputs(s2, urls, d.catalog_url, None)
    q = pl.read_parquet(r2.params_url)
    assert q.height == 300 and r2.params_url.endswith("_ASTparams_suppl.parquet")
    assert not set(q["sedgrid_indx"].to_list()) & set(p["sedgrid_indx"].to_list())
    assert q["F475W_IN"].is_between(20.0, 26.0).all()
    assert ((q["F475W_IN"] - q["F814W_IN"]) <= 0.5).all()
    inp2 = pl.read_parquet(r2.input_url)
    assert {"X", "Y"} <= set(inp2.columns)
    cat = catalogs.read_parquet(d.catalog_url)
    x, y = cat["X"].to_numpy(), cat["Y"].to_numpy()
    dist = np.hypot(inp2["X"].to_numpy()[:, None] - x[None], inp2["Y"].to_numpy()[:, None] - y[None])
    assert (np.any((dist >= 10 - 1e-9) & (dist <= 13 + 1e-9), axis=1)).all()


def test_coord_boundary(phat_setup, make_settings):
    urls, parts, vega, d = phat_setup
    cat = catalogs.read_parquet(d.catalog_url)
    ra0, ra1 = cat["RA"].min(), cat["RA"].max()
    de0, de1 = cat["DEC"].min(), cat["DEC"].max()
    mid = 0.5 * (de0 + de1)
    # lower half of the field only
    cb = [[ra0, ra1, ra1, ra0, ra0], [de0, de0, mid, mid, de0]]
    s = make_settings(
        physics={"chunk_models": 4000},
        asts={"n_flux_bins": 5, "n_per_flux_bin": 3, "coord_boundary": cb},
        observations={"source_density": {"pixsize": 1.0}},
    )
    r = A.run_ast_inputs(s, urls, d.catalog_url, d.map_url)
    inp = pl.read_parquet(r.input_url)
    assert (inp["DEC"] <= mid - 0.5 / 3600 + 1e-12).all()
    poly = np.column_stack([cb[0][:-1], cb[1][:-1]])
    assert geometry.points_in_polygon(poly, inp["RA"].to_numpy(), inp["DEC"].to_numpy(), 0.5 / 3600).all()


def test_polygon_not_closed_is_an_error():
    with pytest.raises(SettingsError, match="asts.*coord_boundary polygon is not closed"):
        settings_from_dict({"asts": {"coord_boundary": [[1.0, 2.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]]}})
    with pytest.raises(SettingsError, match="coord_boundary"):
        settings_from_dict({"asts": {"coord_boundary": [[1.0, 2.0, 1.0], [0.0, 0.0, 1.0]]}})


def test_no_usable_area_error(phat_setup, make_settings, tmp_path):
    urls, parts, vega, d = phat_setup
    s = make_settings(
        out=str(tmp_path / "far"),
        asts={"coord_boundary": [[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]},
        observations={"source_density": {"pixsize": 1.0}},
    )
    with pytest.raises(ValueError, match="no density-map tile overlaps"):
        A.run_ast_inputs(s, urls, d.catalog_url, d.map_url)
    assert not (tmp_path / "far").exists()


def test_geometry_erosion_and_clipping():
    sq = geometry.box_polygon(0, 10, 0, 10)
    er = geometry.erode_convex(sq, 1.0)
    assert abs(geometry.polygon_area(er) - 64.0) < 1e-9
    assert len(geometry.erode_convex(sq, 6.0)) == 0
    part = geometry.clip_convex(geometry.box_polygon(5, 15, 5, 15), sq)
    assert abs(abs(geometry.polygon_area(part)) - 25.0) < 1e-9
    L = np.array([[0, 0], [10, 0], [10, 2], [2, 2], [2, 10], [0, 10]], float)  # non-convex
    inside = geometry.points_in_polygon(L, np.array([1.0, 5.0, 5.0, 1.0]), np.array([5.0, 1.0, 5.0, 0.2]), 0.5)
    assert inside.tolist() == [True, True, False, False]


def test_flux_bin_compat_chunk_rule(tmp_path):
    urls, parts = _grid(tmp_path, n_sub=2, n=8000)
    ast = ASTs(n_flux_bins=10, n_per_flux_bin=20)
    new = S.select_flux_bin(GridSet(urls, 5000), np.ones(6), ast, 5)
    # the function behaviour.observations.flux_bin_rule switches, with that rule alone
    old = S.select_flux_bin(GridSet(urls, 5000), np.ones(6), ast, 5, rule=FluxBinRule.BEAST_CHUNK)
    # every cell that has enough candidates is "filled" by the counter in both modes
    enough = old.available >= 20
    assert (old.counts[enough] >= 20).all() and (new.counts[enough] >= 20).all()
    # double counting: the counter overstates the distinct models per cell
    m = S.magnitudes(np.concatenate([p[0] for p in parts]), np.ones(6))
    codes = S._bin_codes(m[np.unique(old.rows)], old.edges)
    distinct = np.stack([np.bincount(codes[:, k], minlength=10) for k in range(6)], axis=1)
    assert (distinct <= old.counts).all() and (distinct < old.counts).any()
    # the reference semantics counts exactly the distinct chosen models
    codes_new = S._bin_codes(m[new.rows], new.edges)
    np.testing.assert_array_equal(
        np.stack([np.bincount(codes_new[:, k], minlength=10) for k in range(6)], axis=1), new.counts
    )


def test_n_per_density_bin(phat_setup, make_settings):
    urls, parts, vega, d = phat_setup
    s = make_settings(
        physics={"chunk_models": 4000},
        asts={"n_flux_bins": 5, "n_per_flux_bin": 3, "n_per_density_bin": 7, "realization_per_model": 3},
        observations={"source_density": {"pixsize": 1.0}},
    )
    r = A.run_ast_inputs(s, urls, d.catalog_url, d.map_url)
    inp = pl.read_parquet(r.input_url)
    counts = inp.group_by("sd_bin").len().sort("sd_bin")
    assert counts["sd_bin"].to_list() == r.bins and (counts["len"] == 7).all()
    assert inp["realization"].max() <= 2


def test_usable_tiles_vectorised_matches_loop(phat_setup):
    urls, parts, vega, d = phat_setup
    cat = catalogs.read_parquet(d.catalog_url)
    tiles = pl.read_parquet(d.map_url)
    for erode in (0.0, 0.5, 1.5):
        region = P.build_region(ASTs(erode_selection_region=erode), cat, PHAT_BANDS)
        e = erode / 3600
        fast = region.usable_tiles(tiles, False, e)
        slow = [
            region.tile_usable(*row, False, e)
            for row in tiles.select("min_ra", "max_ra", "min_dec", "max_dec").iter_rows()
        ]
        np.testing.assert_array_equal(fast, slow)
    assert not fast.all()  # a 1.5" erosion removes corner tiles of this small field


def test_reference_image_pixels(phat_setup, make_settings, tmp_path):
    from astropy.io import fits
    from astropy.wcs import WCS

    urls, parts, vega, d = phat_setup
    cat = catalogs.read_parquet(d.catalog_url)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(cat["RA"].mean()), float(cat["DEC"].mean())]
    w.wcs.crpix = [100.0, 100.0]
    w.wcs.cdelt = [-0.05 / 3600, 0.05 / 3600]
    img = tmp_path / "ref.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((200, 200)), header=w.to_header(), name="SCI")]).writeto(
        img
    )
    s = make_settings(
        physics={"chunk_models": 4000},
        asts={"n_flux_bins": 4, "n_per_flux_bin": 2, "reference_image": str(img), "reference_hdu": "SCI"},
        observations={"source_density": {"pixsize": 1.0}},
    )
    r = A.run_ast_inputs(s, urls, d.catalog_url, d.map_url)
    inp = pl.read_parquet(r.input_url)
    x, y = w.all_world2pix(inp["RA"].to_numpy(), inp["DEC"].to_numpy(), 1)
    np.testing.assert_allclose(inp["X"].to_numpy(), x)
    np.testing.assert_allclose(inp["Y"].to_numpy(), y)
    lines = open(r.text_url).read().splitlines()
    assert lines[0].split()[:4] == ["zeros", "ones", "X", "Y"]
    assert abs(float(lines[1].split()[2]) - x[0]) < 1e-5


def test_annulus_one_position_per_row_alone(phat_setup, make_settings, tmp_path):
    """behaviour.observations.annulus_one_per_row: BEAST's around-stars scheme ignores
    realization_per_model (one position per SED row)."""
    urls, _, _, d = phat_setup
    heights = {}
    for on in (False, True):
        s = make_settings(
            out=str(tmp_path / f"ann_{on}"),
            physics={"chunk_models": 3000},
            asts={"method": "suppl_seds", "n_supplement": 50, "positions": "annulus", "realization_per_model": 2},
            behaviour={"observations": {"annulus_one_per_row": on}},
        )
        heights[on] = pl.read_parquet(A.run_ast_inputs(s, urls, d.catalog_url, None).input_url).height
    assert heights == {False: 100, True: 50}


def test_annulus_on_the_sky_at_high_declination():
    """Celestial annulus positions are at the drawn angular distance from their star on the sky,
    also far from the field centre at high declination (flat RA offsets are off there)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    # stars 0.2 deg apart: the nearest star of an injected position is the one it was drawn around
    ra, dec = (
        g.ravel()
        for g in np.meshgrid(np.arange(18.0, 22.01, 0.2 / np.cos(np.radians(80.0))), np.arange(79.5, 80.51, 0.2))
    )
    cat = pl.DataFrame({"RA": ra, "DEC": dec})
    ast = ASTs(positions="annulus", pixel_distribution=100.0, pixel_scale=1.0)  # radii 100-103 arcsec
    pos = P.positions_annulus(2000, cat, ast, np.random.default_rng(1), needs_xy=False)
    inj = SkyCoord(pos["RA"] * u.deg, pos["DEC"] * u.deg)
    stars = SkyCoord(ra * u.deg, dec * u.deg)
    _, sep, _ = inj.match_to_catalog_sky(stars)
    assert np.all((sep.arcsec >= 100.0 - 1e-6) & (sep.arcsec <= 103.0 + 1e-6)), (sep.arcsec.min(), sep.arcsec.max())
    x, y = P.tangent_plane(20.0, 80.0).wcs_world2pix([20.0], [80.0], 0)
    assert abs(x[0]) < 1e-9 and abs(y[0]) < 1e-9
