"""Calibration metrics against known truths (beastflow.report.recovery)."""

from __future__ import annotations

import numpy as np

from beastflow.fit.stats import percentiles_from_pdf
from beastflow.report.recovery import on_bin_centres, recovery_metrics, spread_in_cells


def _discrete_field(n: int, seed: int):
    """Stars whose posteriors over a 17-value grid are exact, and truths drawn from them."""
    rng = np.random.default_rng(seed)
    centres = 0.05 + 0.15 * np.arange(17)
    edges = np.concatenate([[centres[0] - 0.075], centres + 0.075])
    mu = rng.uniform(0.3, 2.2, n)
    width = rng.uniform(0.05, 0.4, n)
    pdf = np.exp(-0.5 * ((centres[None, :] - mu[:, None]) / width[:, None]) ** 2)
    pdf /= pdf.sum(axis=1, keepdims=True)
    cdf = np.cumsum(pdf, axis=1)
    truth = centres[np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), 16)]
    pc = percentiles_from_pdf(pdf, centres, edges)
    return centres, edges, truth, pc


def test_discrete_truths_are_calibrated_only_when_spread_over_their_cells():
    n = 20_000
    centres, edges, truth, pc = _discrete_field(n, 1)
    raw = recovery_metrics(pc[:, 0], pc[:, 1], pc[:, 2], truth)
    cal = recovery_metrics(pc[:, 0], pc[:, 1], pc[:, 2], truth, centres, edges, label="Av")
    assert cal["cells"] == 1 and raw["cells"] == 0
    sigma = np.sqrt(0.68 * 0.32 / n)  # binomial error of the coverage, 0.33 %
    assert abs(cal["coverage_68"] - 0.68) < 4 * sigma
    assert raw["coverage_68"] > 0.68 + 10 * sigma  # a truth on the cell centre is over-covered
    # median z of an exact posterior is 0; its sampling error is ~ 1.25 / sqrt(n) ~ 0.01
    assert abs(cal["median_z"]) < 0.05


def test_spreading_is_reproducible_and_stays_in_the_cell():
    edges = np.array([1.0, 10.0, 100.0])
    t = np.array([np.sqrt(10.0), np.sqrt(1000.0)] * 50)
    a = spread_in_cells(t, edges, log=True, label="M_ini")
    np.testing.assert_array_equal(a, spread_in_cells(t, edges, log=True, label="M_ini"))
    assert np.all((a[::2] >= 1) & (a[::2] < 10)) and np.all((a[1::2] >= 10) & (a[1::2] < 100))
    assert on_bin_centres(t, np.sqrt(edges[1:] * edges[:-1]))
    assert not on_bin_centres(t * 1.01, np.sqrt(edges[1:] * edges[:-1]))
