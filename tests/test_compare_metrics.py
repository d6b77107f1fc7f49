"""The pure metrics of bench/compare_beast.py (bench/beast_compare/metrics.py): each agreement
criterion's arithmetic, on arrays small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bench.beast_compare import metrics as M


def test_max_rel_zero_entries_must_agree_exactly():
    r = M.max_rel(np.array([1.1, 0.0, np.nan]), np.array([1.0, 0.0, np.nan]))
    assert r["max_rel"] == pytest.approx(0.1) and r["n_zero_mismatch"] == 0
    assert M.max_rel(np.array([1e-30]), np.array([0.0]))["max_rel"] == np.inf
    assert M.max_rel(np.array([np.nan]), np.array([1.0]))["max_rel"] == np.inf
    assert M.max_rel(np.zeros(2), np.zeros(3))["max_rel"] == np.inf
    assert M.max_rel(np.zeros(0), np.zeros(0))["max_rel"] == 0.0


def test_centre_shift_in_bin_widths():
    b = np.array([0.0, 1.0, 3.0])
    # the middle centre moved by 0.5; its narrower neighbouring step is 1
    assert M.centre_shift(np.array([0.0, 1.5, 3.0]), b) == 0.5
    assert M.centre_shift(np.array([2.2]), np.array([2.0])) == pytest.approx(0.1)
    assert M.centre_shift(np.zeros(2), b) == np.inf


def test_bias_measured_against_its_natural_scale():
    ref_bias, ref_err = np.array([0.0, 1e-3, 0.0]), np.array([1.0, 1e-3, 0.0])
    # 1e-4 off a zero bias with error 1: 1e-4, not infinitely off
    assert M.bias_vs_scale(np.array([1e-4, 1e-3, 0.0]), ref_bias, ref_err) == pytest.approx(1e-4)
    assert M.bias_vs_scale(np.array([0.0, 1e-3, 1e-9]), ref_bias, ref_err) == np.inf
    assert M.bias_over_error(np.array([1e-4, 2e-3, 5.0]), ref_bias, ref_err) == pytest.approx(1.0)
    assert M.sign_mismatches(np.array([1.0, -1.0, 0.0]), np.array([1.0, 1.0, 0.0])) == 1


def test_id_sets():
    r = M.id_sets(np.array([3, 1, 2]), np.array([1, 2, 4]))
    assert r == {"n_models": [3, 3], "only_ours": 1, "only_beast": 1, "same_order": False, "same_set": False}
    r = M.id_sets(np.array([2, 1]), np.array([1, 2]))
    assert r["same_set"] and not r["same_order"]


def test_range_scaled_diff():
    r = M.range_scaled_diff(np.array([1.0, 2.0, np.nan, 5.0]), np.array([1.0, 2.05, np.nan, 5.5]), 10.0, 0.01)
    assert r["max"] == pytest.approx(0.05) and r["frac_ok"] == 0.75
    # a quantity of zero range is scaled by its largest value
    assert M.range_scaled_diff(np.array([2.2]), np.array([2.0]), 0.0, 0.01)["max"] == pytest.approx(0.1)


def test_max_over_peak_per_star_1d_and_2d():
    b = np.array([[0.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    a = b + np.array([[0.0, 0.1, 0.0], [0.0, 0.0, 0.3]])
    # star 0: 0.1 / its peak 2; star 1 has no peak: absolute
    assert M.max_over_peak(a, b) == pytest.approx(0.3)
    assert M.max_over_peak(a[:1], b[:1]) == pytest.approx(0.05)
    b2 = np.zeros((2, 2, 2))
    b2[0, 1, 1], b2[1, 0, 0] = 4.0, 1.0
    a2 = b2.copy()
    a2[0, 0, 0] = 0.4
    assert M.max_over_peak(a2, b2) == pytest.approx(0.1)


def test_symlog_flux_and_lnp():
    assert M.symlog_flux(np.array([-9e-20, 0.0, 9e-20])) == pytest.approx([-1.0, 0.0, 1.0])
    assert M.lnp_rel_diff(np.array([-100.5, 0.25]), np.array([-100.0, 0.0])) == pytest.approx(0.25)


def test_shift_summary():
    s = M.shift_summary(np.array([1.0, 1.0, 1.0, np.nan]), np.array([2.0, 0.0, 1.5, 1.0]))
    assert s["median"] == 0.5 and s["median_abs"] == 1.0
    assert s["p90_abs"] == pytest.approx(1.0)
    # masses shift by a factor: in dex
    assert M.shift_summary(np.array([1.0]), np.array([10.0]), log10=True)["median"] == pytest.approx(1.0)
