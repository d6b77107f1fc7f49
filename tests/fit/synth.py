"""Synthetic but physically shaped SED grids + noise models for the fit tests.

Stars: L ∝ M^3.5, T ∝ M^0.5 with age and metallicity trends, black-body band
fluxes at 776 kpc (M31), a power-law extinction curve depending on R(V) and
f_A, Kroupa-like prior weights × log-mass grid spacing.  Noise model: 2 %
calibration + a per-band floor, a small crowding bias and a logistic
completeness, as a toothpick model would give.
"""

from __future__ import annotations

import itertools

import numpy as np

from beastflow.io.noise_model import write_noise_model
from beastflow.io.sed_grid import write_sed_grid

FILTERS = [
    "HST_WFC3_F275W",
    "HST_WFC3_F336W",
    "HST_ACS_WFC_F475W",
    "HST_ACS_WFC_F814W",
    "HST_WFC3_F110W",
    "HST_WFC3_F160W",
]
LAMB = np.array([2750.0, 3360.0, 4750.0, 8140.0, 11000.0, 16000.0])
VEGA = np.array([3.7e-9, 4.6e-9, 5.9e-9, 1.1e-9, 4.3e-10, 1.2e-10])  # erg/s/cm2/A, rough
FLOOR = np.array([2e-19, 1.5e-19, 4e-20, 1.5e-20, 8e-21, 3e-21]) / 30.0  # 1-sigma flux floor per band

H, C, K = 6.626e-27, 2.998e10, 1.381e-16
LSUN, SIGMA = 3.828e33, 5.670e-5
D_PC = 776e3


def planck_lam(T, lam_A):
    lam = lam_A * 1e-8
    x = H * C / (lam * K * T)
    return 2 * H * C**2 / lam**5 / np.expm1(np.minimum(x, 700)) * 1e-8  # per Angstrom


def make_models(
    n_mass=24,
    logas=(7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0),
    zs=(0.004, 0.008, 0.019),
    avs=(0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
    rvs=(2.5, 3.1, 4.0),
    fas=(0.5, 1.0),
):
    """(seds [N, 6], columns dict) in grid order (age, mass, Z outer; dust inner)."""
    rows = []
    for la, z in itertools.product(logas, zs):
        mmax = 10 ** (0.4 * (10.2 - la)) + 0.8  # younger populations reach higher masses
        masses = np.logspace(np.log10(0.8), np.log10(min(mmax, 60.0)), n_mass)
        dlogm = np.gradient(np.log10(masses))
        for m, dl in zip(masses, dlogm):
            rows.append((la, z, m, dl))
    rows = np.array(rows)
    la, z, m, dlogm = rows.T
    logL = 3.5 * np.log10(m) + 0.15 * (la - 7.0) - 0.1 * np.log10(z / 0.019)
    logT = np.log10(5800.0) + 0.5 * np.log10(m) - 0.04 * (la - 7.0) + 0.03 * np.log10(0.019 / z)
    T = 10**logT
    radius = np.sqrt(10**logL * LSUN / (4 * np.pi * SIGMA * T**4)) / 6.957e10
    dist_cm = D_PC * 3.0857e18
    nd = (
        ((10**logL * LSUN) / (4 * np.pi * dist_cm**2))[:, None]
        * np.pi
        * planck_lam(T[:, None], LAMB[None, :])
        / (SIGMA * T[:, None] ** 4)
    )
    # priors: Kroupa-like in mass, flat in age/Z; grid weight = mass spacing (in M)
    prior = np.where(m < 0.5, m**-1.3, m**-2.3)
    gridw = dlogm * m * np.log(10)
    seds, cols = (
        [],
        {
            k: []
            for k in (
                "Av",
                "Rv",
                "f_A",
                "Rv_A",
                "distance",
                "radius",
                "weight",
                "prior_weight",
                "grid_weight",
                "specgrid_indx",
                "logL",
                "logg",
                "logA",
                "logT",
                "M_ini",
                "M_act",
                "Z",
            )
        },
    )
    for f in FILTERS:
        cols[f"log{f}_nd"] = []
        cols[f"log{f}_wd"] = []
    avw = {a: 1.0 for a in avs}
    for (_i, av), rv, fa in itertools.product(enumerate(avs), rvs, fas):
        rva = 1.0 / (fa / rv + (1 - fa) / 2.74)
        alam = av * (5500.0 / LAMB) ** (1.0 + 0.3 * (3.1 / rva - 1.0))
        wd = nd * 10 ** (-0.4 * alam)
        seds.append(wd)
        n = len(m)
        for k, v in (("Av", av), ("Rv", rv), ("f_A", fa), ("Rv_A", rva), ("distance", D_PC)):
            cols[k].append(np.full(n, v))
        cols["radius"].append(radius)
        cols["prior_weight"].append(prior * avw[av])
        cols["grid_weight"].append(gridw)
        cols["weight"].append(prior * avw[av] * gridw)
        cols["specgrid_indx"].append(np.arange(n, dtype=float))
        cols["logL"].append(logL)
        cols["logg"].append(np.log10(6.67e-8 * m * 1.989e33 / (radius * 6.957e10) ** 2))
        cols["logA"].append(la)
        cols["logT"].append(logT)
        cols["M_ini"].append(m)
        cols["M_act"].append(m * (1 - 0.02 * (la - 7.0)))
        cols["Z"].append(z)
        for k, f in enumerate(FILTERS):
            cols[f"log{f}_nd"].append(np.log10(nd[:, k]))
            cols[f"log{f}_wd"].append(np.log10(wd[:, k]))
    seds = np.concatenate(seds)
    columns = {k: np.concatenate(v) for k, v in cols.items()}
    return seds, columns


def noise_for(seds, scale=1.0):
    err = np.sqrt((0.02 * seds) ** 2 + (scale * FLOOR) ** 2)
    bias = -0.1 * scale * FLOOR * np.exp(-seds / (5 * scale * FLOOR))
    comp = 1.0 / (1.0 + np.exp(-(seds / (scale * FLOOR) - 2.0)))
    return bias, err, comp


def write_grid(path, seds, columns, fullgrid_idx=None):
    cols = dict(columns)
    if fullgrid_idx is not None:
        cols["fullgrid_idx"] = np.asarray(fullgrid_idx, np.int64)
    return write_sed_grid(str(path), FILTERS, LAMB, seds, cols)


def write_noise(path, seds, scale=1.0, rows=None):
    bias, err, comp = noise_for(seds, scale)
    return write_noise_model(str(path), FILTERS, bias, err, comp)
