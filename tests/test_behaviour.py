"""Named BEAST behaviours (beastflow/behaviour.py): profiles, overrides, cache key,
the generated doc tables, and one test per field that toggling it alone changes
what the code it switches returns."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from beastflow.behaviour import (
    PROFILES,
    STAGES,
    FitBehaviour,
    FluxBinRule,
    NoiseBehaviour,
    ObservationsBehaviour,
    PercentileRule,
    PhysicsBehaviour,
    PmaxConvention,
    PriorNorm,
    TileLookup,
    TrimRule,
    markdown_tables,
    resolve,
)
from beastflow.settings import SettingsError, settings_from_dict

DOC = Path(__file__).resolve().parents[1] / "docs" / "differences-from-beast.md"
BEAST = PROFILES["beast-2.1"]
NONE = PROFILES["none"]


def _all_fields():
    return [(stage, f) for stage, cls in STAGES.items() for f in dataclasses.fields(cls)]


# --------------------------------------------------------------------- profiles


def test_profiles_are_the_defaults_and_the_beast_values():
    for stage, f in _all_fields():
        assert getattr(getattr(NONE, stage), f.name) == f.default
        assert getattr(getattr(BEAST, stage), f.name) == f.metadata["beast"]
        # every field is a difference: BEAST's value is not the default
        assert f.metadata["beast"] != f.default, f"{stage}.{f.name}"


def test_every_field_is_documented():
    for stage, f in _all_fields():
        assert f.metadata["doc"] and f.metadata["spec"], f"{stage}.{f.name}"


def test_override_one_field_of_a_profile():
    b = resolve("beast-2.1", {"fit": {"pmax": "probability"}})
    assert b.fit.pmax is PmaxConvention.PROBABILITY
    assert b.fit.percentiles is PercentileRule.BIN_CENTRES  # the rest stays BEAST's
    assert b.physics == BEAST.physics
    assert resolve("none", {"trim": {"band_skip": True}}).trim.band_skip is True
    assert resolve("none", {"fit": {"stats_threshold": -5}}).fit.stats_threshold == -5.0


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"fitting": {"pmax": "probability"}}, "behaviour.fitting: unknown stage"),
        ({"fit": {"pmaxx": "probability"}}, r"behaviour.fit: unknown key\(s\) \['pmaxx'\]"),
        ({"fit": {"pmax": "prob"}}, "behaviour.fit.pmax: must be one of"),
        ({"trim": {"band_skip": 1}}, "behaviour.trim.band_skip: must be true or false"),
        ({"fit": {"stats_threshold": 1.0}}, "behaviour.fit.stats_threshold: must be a negative number"),
        ({"noise": {"statistic": 3}}, "behaviour.noise.statistic: must be one of"),
        ({"fit": {"completeness": "max"}}, r"behaviour.fit.completeness: must be one of \[.min., .product., .none.\]"),
    ],
)
def test_bad_overrides_are_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve("none", overrides)


def test_settings_behaviour_table(tmp_path):
    s = settings_from_dict({"compat": "beast-2.1", "behaviour": {"fit": {"pmax": "probability"}}})
    assert s.resolved_behaviour.fit.pmax is PmaxConvention.PROBABILITY
    assert s.resolved_behaviour.trim.rule is TrimRule.SIGMA
    assert settings_from_dict({}).resolved_behaviour == NONE
    with pytest.raises(SettingsError, match="unknown key"):
        settings_from_dict({"behaviour": {"fit": {"nope": True}}})


def test_cache_key_hashes_the_resolved_behaviour():
    base = settings_from_dict({})
    one = settings_from_dict({"behaviour": {"physics": {"exp_attenuation": True}}})
    assert base.section_hash("compat", "physics") != one.section_hash("compat", "physics")
    # a profile and the same behaviour spelled field by field are one cache entry
    spelled = {
        stage: {f.name: _toml(f.metadata["beast"]) for f in dataclasses.fields(cls)} for stage, cls in STAGES.items()
    }
    full = settings_from_dict({"behaviour": spelled})
    assert full.resolved_behaviour.as_dict() == BEAST.as_dict()
    assert full.section_hash("compat", "fit") == settings_from_dict({"compat": "beast-2.1"}).section_hash(
        "compat", "fit"
    )


def _toml(v):
    return v.value if hasattr(v, "value") else v


def test_doc_tables_are_generated_from_the_fields():
    text = DOC.read_text()
    m = re.search(r"(<!-- behaviour-fields:begin[^\n]*-->\n)(.*?)(<!-- behaviour-fields:end -->)", text, re.S)
    assert m, "docs/differences-from-beast.md lost its behaviour-fields markers"
    want = markdown_tables()
    if os.environ.get("BEASTFLOW_UPDATE_DOCS") == "1":
        DOC.write_text(text[: m.start(2)] + want + text[m.end(2) :])
        return
    assert m.group(2) == want, "doc tables differ from beastflow/behaviour.py (rerun with BEASTFLOW_UPDATE_DOCS=1)"


# ----------------------------------------------------------- one test per field
#
# Each check returns what the code switched by one field says, for that field's
# value; the test sets the field to the default and to BEAST's value, every other
# field at its default, and requires a difference.


def _physics(**kw):
    return dataclasses.replace(PhysicsBehaviour(), **kw)


def _two_z_library():
    from beastflow.physics.stellib import StellarLibrary, planck_library

    base = planck_library(
        logT=np.round(np.arange(3.6, 4.01, 0.05), 6), logg=np.array([3.0, 5.0]), Z=np.array([0.01, 0.02])
    )
    flux = np.vstack([base.flux, 2 * base.flux])
    row = base.spec_row + np.where(base.Z == 0.02, base.flux.shape[0], 0)
    return StellarLibrary("twoz", "two-Z test", base.wavelength, base.logT, base.logg, base.Z, flux, row, "box", True)


def _z_weights(v):
    keep, spec, _, _ = _two_z_library().spectra_at([3.8], [4.0], [0.0125], [0.0], _physics(z_weights_inverted=v))
    return float(spec[0].sum())


def _index0(v):
    from beastflow.physics.stellib import StellarLibrary, planck_flux

    T = np.array([4.2, 4.0, 3.8, 3.8])
    g = np.array([5.0, 3.0, 5.0, 3.0])
    wl = np.geomspace(1000, 10000, 50)
    lib = StellarLibrary("q", "q", wl, T, g, np.full(4, 0.02), planck_flux(wl, 10**T), np.arange(4), "box", True)
    i, w = lib.interpolation_weights([3.9], [4.0], [0.02], _physics(index0_missing=v))
    return tuple(sorted(i[0][w[0] > 0]))


def _atlas9(v):
    from beastflow.physics.atlas9 import atlas9_library

    return float(atlas9_library(v).logg.max())


def _band_numerator(v):
    from beastflow.physics import photometry

    lam = np.linspace(3000.0, 11000.0, 4001)
    return photometry.band_fluxes(lam, np.ones(lam.size), ["HST_ACS_WFC_F475W"], v).tolist()


def _vega(v):
    from beastflow.physics.vega import vega_band_fluxes

    return vega_band_fluxes(["HST_ACS_WFC_F475W"], v).tolist()


def _distance(v):
    from beastflow.physics.spectral_grid import distance_values

    return distance_values([0.1, 0.3, 0.1], v).tolist()


def _attenuation(v):
    from beastflow.physics.extinction import transmission

    return float(transmission(1.0, v))


def _stellar_weights(**kw):
    from beastflow.physics.stellar_priors import compute_stellar_weights
    from beastflow.settings.physics import Priors

    ages, masses = [7.0, 8.0, 9.0], [0.5, 1.0, 2.0, 4.0]
    rows = [(a, m * (1 + 0.1 * k), z, d) for d in (1e5, 2e5) for z in (0.01, 0.02) for a in ages for k, m in
            enumerate(masses[: 2 + int(a - 7)])]  # fmt: skip
    logA, M, Z, D = (np.array(c) for c in zip(*rows))
    priors = Priors(distance={"name": "flat"})
    gw, pw = compute_stellar_weights(logA, M, Z, D, priors, _physics(**kw))
    return np.round(gw * pw, 12).tolist()


def _dust_priors(v):
    from beastflow.physics.dust_priors import dust_prior_weights
    from beastflow.settings.physics import Priors

    av = np.array([0.0, 1.0, 2.0])
    axes = (av, np.array([3.1]), np.array([0.5]))
    priors = Priors(av={"name": "lognormal", "mean": 1.0, "sigma": 0.5})
    return dust_prior_weights(av, np.full(3, 3.1), np.full(3, 0.5), 1e5, axes, priors, v).tolist()


def _gordon16(v):
    from beastflow.physics.extinction import make_extinction_law
    from beastflow.settings.physics import Extinction

    law = make_extinction_law(Extinction(), v)
    return np.asarray(law.curve(np.array([2000.0, 5000.0]), 3.1, 1.0, 3.1)).tolist()


# -- observations


def _bin_lookup(lookup):
    from beastflow.observations.density import make_tile_grid
    from beastflow.observations.split import tile_bin_lookup

    # a wide field at dec 60: near its corners the TAN tiles and the linear RA/Dec cells differ
    g = make_tile_grid(np.array([10.0, 12.0]), np.array([60.0, 62.0]), 600.0)
    bins = np.arange(g.n_x * g.n_y)
    return tile_bin_lookup(np.array([11.72635784]), np.array([61.78647428]), g, bins, lookup).tolist()


def _dec_clamp(v):
    from beastflow.observations.density_bins import lookup_tiles_linear

    ra_grid, dec_grid = np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    return lookup_tiles_linear(np.array([0.5]), np.array([3.5]), ra_grid, dec_grid, v)[1].tolist()


def _width_bin(v):
    from beastflow.observations.density_bins import assign_bins, bin_edges
    from beastflow.settings.observations import SourceDensity

    sd = SourceDensity(bin_width=1.0)
    vals = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    return assign_bins(vals, bin_edges(vals, sd), sd, v).tolist()


def _flag_cut(v):
    from beastflow.observations.cuts import cut_masks
    from beastflow.settings.observations import Cuts

    df = pl.DataFrame({"F475W_RATE": [0.0, 1.0, 1.0], "F475W_FLAG": [0, 99, 0]})
    return cut_masks(df, ["F475W"], ["F475W"], Cuts(partial_overlap=False), v)["flagged"].tolist()


def _subfiles(v):
    from beastflow.observations.split import subfile_sizes
    from beastflow.settings.observations import Split

    return subfile_sizes(4, Split(n_per_file=6250, min_n_subfile=3), v)


def _background(v):
    from beastflow.observations.background import individual_backgrounds

    img = np.ones((40, 40))
    img[20, 26] = np.nan  # a masked pixel inside the annulus
    return individual_backgrounds(img, np.array([20.0]), np.array([20.0]), 3.0, 5.0, v).tolist()


def _tile_pruning(v):
    from beastflow.observations.ast_positions import Region

    hull = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    region = Region(hull=hull, boundary=None, boundary_erode=0.0, filter_hull=None)
    return region.tile_usable(2.0, 3.0, 2.0, 3.0, v, 0.0)  # a tile off the hull, no erosion


def _precision(v):
    from beastflow.observations.ast_inputs import _dolphot_text

    pos = {"RA": np.array([10.123456789]), "DEC": np.array([40.987654321])}
    return _dolphot_text(["F475W"], pos, np.array([[20.0]]), v)


def _annulus_xy(v):
    from beastflow.observations.ast_positions import positions_annulus
    from beastflow.settings.asts import ASTs

    cat = pl.DataFrame({"RA": [10.0, 10.001], "DEC": [40.0, 40.001]})
    ast = ASTs(positions="annulus", pixel_scale=0.05)
    try:
        return sorted(positions_annulus(3, cat, ast, np.random.default_rng(1), v))
    except ValueError as e:
        return str(e)


# -- noise


def _asts_table():
    rng = np.random.default_rng(5)
    n = 400
    mag_in = rng.uniform(20.0, 26.0, n)
    rate = 10 ** (-0.4 * mag_in) * (1 + 0.05 * rng.standard_normal(n))
    rate[::7] = 0.0
    rate[::11] = np.nan
    mag_in[::13] = 99.999
    return {"F475W_IN": mag_in, "F475W_RATE": rate}


def _noise(**kw):
    from beastflow.noise.toothpick import ast_binned_stats

    b = dataclasses.replace(NoiseBehaviour(), **kw)
    s = ast_binned_stats(_asts_table(), ["HST_ACS_WFC_F475W"], 8, 5, 2.0, np.array([1.0]), b, "stddev").bands[0]
    return np.round(np.concatenate([s.centres, s.error, s.completeness]), 12).tolist()


def _nan_prepare(v):
    from beastflow.noise.ast_stats import prepare_band

    mag_in = np.array([20.0, 21.0, 22.0, 99.999])
    out = np.array([1.0, np.nan, 0.5, 0.0])
    f_in, f_out = prepare_band(mag_in, out, None, 2.0, v)
    return (len(f_in), int(np.isnan(f_out).sum()))


def _trunchen_recovery(v):
    from beastflow.noise.trunchen import ast_model_stats

    rng = np.random.default_rng(2)
    n_models, per = 4, 12
    mag = np.repeat(np.linspace(20, 23, n_models), per)
    tab = {}
    for b in ("F475W", "F814W"):
        rate = 10 ** (-0.4 * mag) * (1 + 0.05 * rng.standard_normal(mag.size))
        rate[::5] = np.nan
        tab[f"{b}_IN"], tab[f"{b}_RATE"] = mag, rate
    st = ast_model_stats(tab, ["HST_ACS_WFC_F475W", "HST_WFC3_F814W"], np.ones(2), 5, v)
    return np.round(np.asarray(st.completeness, float), 12).tolist()


# -- trim


def _band_skip(v):
    from collections import Counter

    from beastflow.noise.trim import decide_bands

    return decide_bands(Counter({0b101: 4, 0b011: 2}), 3, v)


# -- fit


class _Grid:
    n_models = 3

    def column(self, name):
        return np.array([1.0, 3.0, 0.0])


def _fit_field(name):
    """The resolved fit options with only ``name`` set (None = the profile default, unset)."""
    from beastflow.fit.fitting import _resolve_options

    def check(v):
        default = next(f.default for f in dataclasses.fields(FitBehaviour) if f.name == name)
        # a user's [fit] that differs from BEAST's values, so an override shows
        own = {"fit": {"lnp_threshold": -5.0}}
        s = settings_from_dict(own if v == default else {**own, "behaviour": {"fit": {name: _toml(v)}}})
        o = _resolve_options(s, _Grid(), {"total_weight": 10.0})
        return (o.stat_thr, o.lnp_thr, o.completeness, o.ln_norm)

    return check


def _pmax(v):
    from beastflow.fit.stats import pmax_column

    return pmax_column(v, np.array([-3.0]), np.array([-1.0])).tolist()


def _percentiles(v):
    from beastflow.fit.merge import _percentiles as merge_percentiles

    edges = np.array([0.0, 1.0, 2.0, 3.0])
    p1 = {"centres": {"q": np.array([0.5, 1.5, 2.5])}, "edges": {"q": edges}, "log": {"q": False}}
    return np.round(merge_percentiles(np.array([[0.0, 1.0, 0.0]]), p1, "q", v), 12).tolist()


def _screen(v):
    from beastflow.observations.catalogs import screen_fluxes

    y = np.array([[1.0, 0.0], [1.0, -50.0]])
    _, flags = screen_fluxes(y, np.ones(2), ["A", "B"], sigma=np.ones(2), as_measured=v)
    return flags


def _positive_error(v):
    from beastflow.noise.trim import trim_patterns

    rng = np.random.default_rng(0)
    n, nb = 200, 2
    err = rng.random((n, nb)) * 0.05
    err[::3] *= -1  # negative errors where the completeness is still positive
    args = (rng.random((n, nb)), np.zeros((n, nb)), err, np.full((n, nb), 0.5), np.zeros((1, nb)), np.ones((1, nb)))
    return trim_patterns(*args, 3.0, v).tolist()


CHECKS = {
    "physics.z_weights_inverted": _z_weights,
    "physics.index0_missing": _index0,
    "physics.atlas9_file_logg": _atlas9,
    "physics.band_numerator_positive_only": _band_numerator,
    "physics.vega_positive_points": _vega,
    "physics.distance_arange": _distance,
    "physics.exp_attenuation": _attenuation,
    "physics.mass_weights_per_isochrone": lambda v: _stellar_weights(mass_weights_per_isochrone=v),
    "physics.skip_z_distance_renormalisation": lambda v: _stellar_weights(skip_z_distance_renormalisation=v),
    "physics.dust_priors_unnormalised": _dust_priors,
    "physics.beast_gordon16_curves": _gordon16,
    "observations.source_bin_lookup": _bin_lookup,
    "observations.ast_bin_lookup": _bin_lookup,
    "observations.dec_clamped_with_ra_limits": _dec_clamp,
    "observations.width_extra_bin": _width_bin,
    "observations.flag_cut_zero_rate": _flag_cut,
    "observations.empty_trailing_subfiles": _subfiles,
    "observations.annulus_area_background": _background,
    "observations.beast_tile_pruning": _tile_pruning,
    "observations.short_position_precision": _precision,
    "observations.annulus_needs_xy": _annulus_xy,
    "noise.nan_outputs_recovered": _nan_prepare,
    "noise.statistic": lambda v: _noise(statistic=v),
    "noise.raw_half_width": lambda v: _noise(raw_half_width=v),
    "noise.trunchen_raw_recovery": _trunchen_recovery,
    "trim.band_skip": _band_skip,
    "trim.positive_error_required": _positive_error,
    "fit.stats_threshold": _fit_field("stats_threshold"),
    "fit.lnp_threshold": _fit_field("lnp_threshold"),
    "fit.completeness": _fit_field("completeness"),
    "fit.prior_norm": _fit_field("prior_norm"),
    "fit.pmax": _pmax,
    "fit.percentiles": _percentiles,
    "fit.bad_fluxes_as_measured": _screen,
}

#: fields read inside a stage function (or needing a stage's fixtures): the named test
#: runs that stage with the field switched alone and checks what it changes
STAGE_ONLY = {
    "physics.library_row_order": "tests/physics/test_physicsmodel.py::test_one_physics_field_alone_changes_the_grid",
    "physics.nd_untrimmed": "tests/physics/test_physicsmodel.py::test_one_physics_field_alone_changes_the_grid",
    "physics.specgrid_indx_per_star": "tests/physics/test_physicsmodel.py::test_one_physics_field_alone_changes_the_grid",
    "observations.lower_edge_no_tile": "tests/observations/test_density.py::test_compat_lower_edge_source_gets_no_tile",
    "observations.always_resplit": "tests/observations/test_split.py::"
    "test_frozen_split_puts_an_added_star_where_its_flux_falls",
    "observations.flux_bin_rule": "tests/observations/test_ast_inputs.py::test_flux_bin_compat_chunk_rule",
    "observations.sedgrid_indx_candidate": "tests/observations/test_ast_inputs.py::test_compat_index_bug",
    "observations.annulus_one_per_row": "tests/observations/test_ast_inputs.py::test_annulus_one_position_per_row_alone",
    "noise.sign_flip_with_calibration_only": "tests/noise/test_toothpick.py::"
    "test_run_noisemodel_streams_and_matches_direct_evaluation",
    "noise.trunchen_precision": "tests/noise/test_trunchen.py::"
    "test_float32_storage_is_the_float64_model_rounded_to_24_bits",
    "trim.rule": "tests/noise/test_trim.py::test_grid_and_noise_read_once_for_all_subfiles",
    "fit.refuse_invalid_noise": "tests/fit/test_fit.py::test_compat_refuses_untrimmed_noise",
    "fit.chi2min_sparse": "tests/fit/test_fit.py::test_compat_chi2min_and_index_only_over_the_sparse_set",
    "fit.regular_2d_bins": "tests/fit/test_fit.py::test_regular_2d_bins_alone",
}


def test_stage_only_fields_name_tests_that_exist():
    root = Path(__file__).resolve().parent
    for name, where in STAGE_ONLY.items():
        path, test = where.split("::")
        text = (root.parent / path).read_text()
        assert f"def {test}(" in text, (name, where)
        assert name.split(".")[1] in text, f"{where} does not switch {name}"


#: fields whose two values agree on every input the code can reach (the doc says why)
NO_EFFECT = {"physics.gravity_fraction_unclamped"}


def test_every_field_has_a_check():
    names = {f"{stage}.{f.name}" for stage, f in _all_fields()}
    listed = set(CHECKS) | set(STAGE_ONLY) | NO_EFFECT
    assert names == listed, (sorted(names - listed), sorted(listed - names))
    assert not (set(CHECKS) & set(STAGE_ONLY))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_toggling_one_field_changes_its_result(name):
    stage, field = name.split(".")
    f = next(x for x in dataclasses.fields(STAGES[stage]) if x.name == field)
    assert CHECKS[name](f.default) != CHECKS[name](f.metadata["beast"])


def test_gravity_fraction_clamp_never_triggers_on_the_library_grid():
    """Doc (§3.1 steps 4-5): with BEAST's quadrant choice the gravity fraction is
    already in (0, 1], so clamping it changes nothing; random targets confirm it."""
    from beastflow.physics.atlas9 import atlas9_library

    lib = atlas9_library()
    rng = np.random.default_rng(4)
    T = rng.uniform(3.6, 4.4, 300)
    g = rng.uniform(1.0, 4.5, 300)
    a = lib.interpolation_weights(T, g, np.full(300, 0.0152), _physics(gravity_fraction_unclamped=False))
    b = lib.interpolation_weights(T, g, np.full(300, 0.0152), _physics(gravity_fraction_unclamped=True))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_enums_are_chosen_in_code():
    # the strategy enums only carry names; the code maps them to functions
    assert {m.value for m in FluxBinRule} == {"reference", "beast-chunk"}
    assert {m.value for m in TileLookup} == {"tan", "linear"}
    assert {m.value for m in PriorNorm} == {"full-grid", "trimmed-grid"}
    assert ObservationsBehaviour().flux_bin_rule is FluxBinRule.REFERENCE


def test_overrides_of_user_settings_are_said(caplog):
    """A behaviour field that replaces a key the user changed logs a warning (never silent)."""
    from beastflow.fit.fitting import _resolve_options
    from beastflow.noise.toothpick import ast_binned_stats

    s = settings_from_dict({"compat": "beast-2.1", "fit": {"stats_threshold": -5.0, "completeness": "product"}})
    with caplog.at_level("WARNING"):
        o = _resolve_options(s, _Grid(), None)
    assert (o.stat_thr, o.completeness) == (-10.0, "none")
    assert "fit.stats_threshold = -5.0 is overridden by behaviour.fit.stats_threshold = -10.0" in caplog.text
    assert "fit.completeness = 'product' is overridden" in caplog.text
    assert "lnp_threshold" not in caplog.text  # the user kept the default, which BEAST's value equals
    caplog.clear()
    with caplog.at_level("WARNING"):
        ast_binned_stats(_asts_table(), ["HST_ACS_WFC_F475W"], 8, 5, 2.0, np.array([1.0]), BEAST.noise, "stddev")
    assert "noise_model.statistic = 'stddev' is overridden" in caplog.text
