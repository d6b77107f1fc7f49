"""The one-pass layout kernels of the chunk preparation equal numpy's gathers and
transposes bit for bit, and the partition sums equal numpy's ``sum(axis=0)``."""

import numpy as np

from beastflow.fit import layout
from beastflow.fit.likelihood import sum_partitions


def test_band_major_is_the_gathered_transpose_and_flags_bad_noise():
    rng = np.random.default_rng(3)
    n, nb = 2500, 6  # more than one block
    seds, bias, err = rng.normal(size=(n, nb)), rng.normal(size=(n, nb)) * 1e-3, rng.uniform(0.1, 1, (n, nb))
    err[5, 2], err[7, 0], err[11, 4], err[13, 1] = 0.0, np.nan, np.inf, -1.0
    seds[17, 3], bias[19, 5] = np.inf, np.nan
    order = rng.permutation(n)
    mT, errT, ok = np.empty((nb, n)), np.empty((nb, n)), np.empty(n, np.bool_)
    layout.band_major(order, seds, bias, err, mT, errT, ok)
    want_m = np.ascontiguousarray((seds[order] + bias[order]).T)
    want_e = np.ascontiguousarray(err[order].T)
    assert np.array_equal(mT, want_m, equal_nan=True) and np.array_equal(errT, want_e, equal_nan=True)
    want_ok = np.all(want_e > 0, axis=0) & np.all(np.isfinite(want_e), axis=0) & np.all(np.isfinite(want_m), axis=0)
    assert np.array_equal(ok, want_ok)
    assert set(np.flatnonzero(~ok)) == {int(np.flatnonzero(order == r)[0]) for r in (5, 7, 11, 13, 17, 19)}


def test_model_major_selects_and_transposes():
    rng = np.random.default_rng(4)
    for src in (rng.normal(size=(9, 3001)), rng.integers(0, 500, (9, 3001)).astype(np.int32)):
        rows = np.array([4, 0, 8, 2])
        got = layout.model_major_of(src, rows)
        assert got.dtype == src.dtype and got.flags.c_contiguous
        assert np.array_equal(got, src[rows].T)
    assert layout.model_major_of(np.empty((3, 0)), np.array([1, 0])).shape == (0, 2)


def test_constant_within_runs_treats_nan_as_one_value():
    ids = np.array([0, 0, 0, 1, 1, 2])
    first = np.array([0, 3, 5])
    assert layout.constant_within(np.array([1.0, 1, 1, 2, 2, 3]), ids, first)
    assert layout.constant_within(np.array([np.nan, np.nan, np.nan, 2, 2, np.nan]), ids, first)
    assert not layout.constant_within(np.array([1.0, 1, 1, 2, np.nan, 3]), ids, first)
    assert not layout.constant_within(np.array([1.0, 1, 1.0000001, 2, 2, 3]), ids, first)


def test_sum_partitions_is_numpys_sum_and_clears_the_accumulators():
    rng = np.random.default_rng(5)
    acc = rng.exponential(size=(6, 7, 40)) * 10.0 ** rng.integers(-30, 5, size=(6, 7, 40))
    s0 = rng.uniform(0.5, 3.0, 7)
    s0[2] = 0.0  # as numpy: x / 0 -> inf (nan for 0 / 0), no exception
    acc[:, 2, :3] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        want = acc.sum(axis=0)[:, :31] / s0[:, None]
    out = np.full((7, 31), -1.0)
    sum_partitions(acc, s0, out, 31)
    assert np.array_equal(out, want, equal_nan=True)
    assert not acc.any()
