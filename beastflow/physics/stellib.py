"""Stellar atmosphere libraries (spec §2, §3): readers, validity polygons,
composite libraries, interpolation at isochrone points and luminosity scaling.

Entry point: :func:`make_stellar_library` for ``physics.stellar_library``.
Libraries:

``atlas9``
    The embedded default: 412 real Kurucz 1993 ATLAS9 solar-metallicity
    spectra shipped inside the package (``beastflow.physics.atlas9``).  The
    default settings list it before ``planck``, so black bodies are used
    only for isochrone points outside its coverage (counted in the log).
``planck``
    Analytic black bodies, surface flux F_lambda = pi B_lambda(T) on a
    (logT, logg, Z) lattice.  Offline and exact, but *not* a model
    atmosphere (no lines, no Balmer jump): its label says so in every artifact.
``kurucz`` / ``tlusty``
    BEAST library files in the "old" FITS layout (primary image: one row per
    model spectrum, last row = wavelengths in Å; a table extension with
    ``logT``, ``logg``, ``Z``), read from any fsspec URL, optionally downloaded
    once into a cache.

All libraries go through the same interpolation code (``stellib_interp``).
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass, field

import numpy as np

from beastflow import storage
from beastflow.behaviour import DEFAULT_PHYSICS, PhysicsBehaviour
from beastflow.physics import stellib_interp as _k

log = logging.getLogger(__name__)

# Physical constants (astropy 8 values, CODATA 2018 / IAU 2015), SI.
from astropy import constants as _const  # noqa: E402

L_SUN_W = float(_const.L_sun.si.value)  # 3.828e26 W
R_SUN_M = float(_const.R_sun.si.value)  # 6.957e8 m
SIGMA_SB = float(_const.sigma_sb.si.value)  # 5.670374419e-8 W m^-2 K^-4
_H_CGS = float(_const.h.cgs.value)
_C_CGS = float(_const.c.cgs.value)
_K_CGS = float(_const.k_B.cgs.value)

#: margins that make an isochrone point usable (spec §2.2 step 1, §3)
USABLE_MARGINS = (0.1, 0.3)

#: standard file name of each downloadable library (spec §2; BEAST config)
STANDARD_FILES = {"kurucz": "kurucz2004.grid.fits", "tlusty": "tlusty.lowres.grid.fits"}

PLANCK_LABEL = "planck (analytic black body, not a model atmosphere)"


# --------------------------------------------------------------------------- polygons


def kurucz_polygon(dlogT: float = 0.0, dlogg: float = 0.0) -> np.ndarray:
    """Kurucz 2004 validity polygon (spec §2.1), vertices (logT, logg)."""
    T, G = dlogT, dlogg
    return np.array(
        [
            (3.54406 - T, 5.0 + G),
            (3.55403 - T, 0.0 - G),
            (3.778, 0.0 - G),
            (3.778 + T, 0.0),
            (3.875 + T, 0.5),
            (3.929 + T, 1.0),
            (3.954 + T, 1.5),
            (4.146, 2.0 - G),
            (4.146 + T, 2.0),
            (4.279 + T, 2.5),
            (4.415 + T, 3.0),
            (4.491 + T, 3.5),
            (4.591 + T, 4.0),
            (4.689 + T, 4.5),
            (4.699 + T, 5.0 + G),
            (3.544 - T, 5.0 + G),
        ]
    )


def tlusty_polygon(dlogT: float = 0.0, dlogg: float = 0.0) -> np.ndarray:
    """Tlusty (OSTAR2002 + BSTAR2006) validity polygon (spec §2.1)."""
    T, G = dlogT, dlogg
    return np.array(
        [
            (4.176 - T, 4.749 + G),
            (4.176 - T, 1.750 - G),
            (4.176 + T, 1.750 - G),
            (4.255 + T, 2.000 - G),
            (4.447 + T, 2.750 - G),
            (4.478 + T, 3.000 - G),
            (4.544 + T, 3.250 - G),
            (4.740 + T, 4.000 - G),
            (4.740 + T, 4.749 + G),
            (4.176 - T, 4.749 + G),
        ]
    )


def points_in_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd (ray casting) membership of points in a closed polygon.

    Same rule as matplotlib's ``Path.contains_points`` for interior points;
    points exactly on an edge may go either way (spec §2.1 allows it).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    inside = np.zeros(x.shape, dtype=bool)
    px, py = poly[:, 0], poly[:, 1]
    n = len(poly)
    for i in range(n):
        xi, yi = px[i], py[i]
        xj, yj = px[i - 1], py[i - 1]
        if yi == yj:
            continue  # horizontal edges never cross a horizontal ray
        crosses = (yi > y) != (yj > y)
        xint = xi + (y - yi) * (xj - xi) / (yj - yi)
        inside ^= crosses & (x < xint)
    return inside


# --------------------------------------------------------------------------- single library


def radius_m(logL: np.ndarray, logT: np.ndarray) -> np.ndarray:
    """Stellar radius in m from L = 4 pi R^2 sigma T^4 (spec §3.3, astropy constants)."""
    return np.sqrt(
        10.0 ** np.asarray(logL, dtype=np.float64)
        * L_SUN_W
        / (4.0 * np.pi * SIGMA_SB * (10.0 ** np.asarray(logT, dtype=np.float64)) ** 4)
    )


def radius_rsun(logL: np.ndarray, logT: np.ndarray) -> np.ndarray:
    """Stellar radius in R_sun (the grid column ``radius``)."""
    return radius_m(logL, logT) / R_SUN_M


@dataclass
class StellarLibrary:
    """One atmosphere library.

    ``flux[spec_row[i]]`` is the surface flux F_lambda (erg s⁻¹ cm⁻² Å⁻¹) of
    model i, whose parameters are ``logT[i]``, ``logg[i]``, ``Z[i]`` (absolute
    metal fraction, compared directly with isochrone Z).  ``spec_row`` lets
    analytic libraries share one spectrum between models that differ only in
    logg or Z.
    """

    name: str
    label: str
    wavelength: np.ndarray
    logT: np.ndarray
    logg: np.ndarray
    Z: np.ndarray
    flux: np.ndarray
    spec_row: np.ndarray
    polygon_kind: str  # "kurucz", "tlusty" or "box"
    is_analytic: bool = False
    source: str | None = None
    #: Z planes (set in __post_init__): unique Z, plane starts, order, logT and logg sorted by plane
    _planes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self):
        self.wavelength = np.ascontiguousarray(self.wavelength, dtype=np.float64)
        self.logT = np.ascontiguousarray(self.logT, dtype=np.float64)
        self.logg = np.ascontiguousarray(self.logg, dtype=np.float64)
        self.Z = np.ascontiguousarray(self.Z, dtype=np.float64)
        self.flux = np.ascontiguousarray(self.flux, dtype=np.float64)
        self.spec_row = np.ascontiguousarray(self.spec_row, dtype=np.int64)
        n = self.logT.size
        if not (self.logg.size == n and self.Z.size == n and self.spec_row.size == n):
            raise ValueError(f"{self.label}: logT, logg, Z, spec_row lengths differ")
        if self.flux.shape[1] != self.wavelength.size:
            raise ValueError(f"{self.label}: flux has {self.flux.shape[1]} wavelengths, grid {self.wavelength.size}")
        if np.any(np.diff(self.wavelength) <= 0):
            raise ValueError(f"{self.label}: wavelengths must be strictly increasing")
        # Z planes: models sorted by Z, library order kept inside each plane
        # (BEAST runs §3.1 on the subset ``Z == z`` in file order; the order
        # decides ties and the index-0 quirk)
        zs = np.unique(self.Z)
        order = np.argsort(self.Z, kind="stable")
        start = np.searchsorted(self.Z[order], zs, side="left")
        self._planes = (
            zs,
            np.append(start, n).astype(np.int64),
            order.astype(np.int64),
            self.logT[order].copy(),
            self.logg[order].copy(),
        )

    # -- coverage -----------------------------------------------------------------

    @property
    def n_models(self) -> int:
        return self.logT.size

    @property
    def metallicities(self) -> np.ndarray:
        return self._planes[0]

    def polygon(self, dlogT: float = 0.0, dlogg: float = 0.0) -> np.ndarray:
        """Closed validity polygon in (logT, logg) widened by the margins."""
        if self.polygon_kind == "kurucz":
            return kurucz_polygon(dlogT, dlogg)
        if self.polygon_kind == "tlusty":
            return tlusty_polygon(dlogT, dlogg)
        t0, t1 = self.logT.min() - dlogT, self.logT.max() + dlogT
        g0, g1 = self.logg.min() - dlogg, self.logg.max() + dlogg
        return np.array([(t0, g0), (t1, g0), (t1, g1), (t0, g1), (t0, g0)])

    def contains(self, logT, logg, dlogT: float = 0.0, dlogg: float = 0.0) -> np.ndarray:
        return points_in_polygon(logT, logg, self.polygon(dlogT, dlogg))

    def coverage_report(self, logT, logg) -> dict[str, int]:
        """Counts of points inside (strict), usable (margins 0.1, 0.3) and dropped."""
        strict = self.contains(logT, logg)
        usable = self.contains(logT, logg, *USABLE_MARGINS)
        return {
            "n": int(np.size(logT)),
            "inside": int(strict.sum()),
            "usable": int(usable.sum()),
            "dropped": int((~usable).sum()),
        }

    # -- interpolation ------------------------------------------------------------

    def interpolation_weights(
        self, logT, logg, Z, behaviour: PhysicsBehaviour = DEFAULT_PHYSICS
    ) -> tuple[np.ndarray, np.ndarray]:
        """Library model indices and weights (n, 8) for each target (spec §3.1–3.2).

        Metallicity (§3.2): a target Z equal to a library Z uses that plane;
        otherwise the planes just below and above.  With both,
        fz = (Z - Z_inf)/(Z_sup - Z_inf) and the plane weights are
        (1 - fz, fz), or BEAST's inverted (fz, 1 - fz) with
        ``behaviour.z_weights_inverted`` (spec BUG?).  With one neighbour (outside the library's Z range), that
        plane alone with weight 1 (nearest-Z clamping).
        """
        T0 = np.ascontiguousarray(logT, dtype=np.float64).ravel()
        g0 = np.ascontiguousarray(logg, dtype=np.float64).ravel()
        z0 = np.broadcast_to(np.asarray(Z, dtype=np.float64), T0.shape).ravel()
        zs, start, order, lT, lg = self._planes
        nz = zs.size
        j = np.searchsorted(zs, z0, side="left")  # first plane with Z >= target
        exact = (j < nz) & (zs[np.minimum(j, nz - 1)] == z0)
        lo = np.where(exact, j, j - 1)
        hi = np.where(exact, -1, np.where(j < nz, j, -1))
        lo = np.where(lo >= 0, lo, -1)
        fac_lo = np.ones_like(z0)
        fac_hi = np.ones_like(z0)
        both = (lo >= 0) & (hi >= 0)
        if both.any():
            zl = zs[lo[both]]
            zh = zs[hi[both]]
            fz = (z0[both] - zl) / (zh - zl)
            if behaviour.z_weights_inverted:
                fac_lo[both], fac_hi[both] = fz, 1.0 - fz
            else:
                fac_lo[both], fac_hi[both] = 1.0 - fz, fz
        return _k.interpolation_weights(
            T0,
            g0,
            lo.astype(np.int64),
            hi.astype(np.int64),
            fac_lo,
            fac_hi,
            start,
            order,
            lT,
            lg,
            bool(behaviour.index0_missing),
            bool(behaviour.gravity_fraction_unclamped),
        )

    def spectra_for(self, idx: np.ndarray, w: np.ndarray, r_m: np.ndarray) -> np.ndarray:
        """L_lambda (erg s⁻¹ Å⁻¹) = (sum_k w_k F_k) × 4π(100 R)², R in m (spec §3.3)."""
        r_cm = np.asarray(r_m, dtype=np.float64) * 100.0
        return _k.combine_spectra(idx, w, self.spec_row, self.flux, 4.0 * np.pi * r_cm**2)

    def spectra_at(self, logT, logg, Z, logL, behaviour: PhysicsBehaviour = DEFAULT_PHYSICS):
        """Spectra at isochrone points (spec §3).

        Returns ``(keep, L_lambda, radius_rsun, osl)``: ``keep`` flags the points
        inside the polygon with margins (0.1, 0.3) (the others are dropped and
        counted in the log); the other arrays have one row per kept point, in
        input order; ``osl`` is None for a single library.
        """
        logT = np.asarray(logT, dtype=np.float64)
        logg = np.asarray(logg, dtype=np.float64)
        Z = np.broadcast_to(np.asarray(Z, dtype=np.float64), logT.shape)
        logL = np.asarray(logL, dtype=np.float64)
        keep = self.contains(logT, logg, *USABLE_MARGINS)
        if (~keep).any():
            log.info(
                "%s: %d of %d points outside the library coverage dropped", self.label, int((~keep).sum()), keep.size
            )
        idx, w = self.interpolation_weights(logT[keep], logg[keep], Z[keep], behaviour)
        r_m = radius_m(logL[keep], logT[keep])
        return keep, self.spectra_for(idx, w, r_m), r_m / R_SUN_M, None

    def resampled(self, wavelength: np.ndarray) -> StellarLibrary:
        """The same library with its spectra linearly resampled onto ``wavelength``."""
        wavelength = np.asarray(wavelength, dtype=np.float64)
        if wavelength[0] < self.wavelength[0] or wavelength[-1] > self.wavelength[-1]:
            raise ValueError(
                f"{self.label}: cannot resample onto {wavelength[0]}–{wavelength[-1]} Å "
                f"(library covers {self.wavelength[0]}–{self.wavelength[-1]} Å)"
            )
        j = np.clip(np.searchsorted(self.wavelength, wavelength, side="right"), 1, self.wavelength.size - 1)
        x0, x1 = self.wavelength[j - 1], self.wavelength[j]
        f = (wavelength - x0) / (x1 - x0)
        flux = self.flux[:, j - 1] * (1.0 - f) + self.flux[:, j] * f
        return StellarLibrary(
            self.name,
            self.label,
            wavelength,
            self.logT,
            self.logg,
            self.Z,
            flux,
            self.spec_row,
            self.polygon_kind,
            self.is_analytic,
            self.source,
        )


# --------------------------------------------------------------------------- composite


class CompositeLibrary:
    """Libraries in preference order (BEAST ``Tlusty() + Kurucz()``, spec §2.2).

    The common wavelength grid is the sorted union of the members' grids,
    restricted to the range covered by all of them (BEAST's ``interp1d``
    raises beyond a member's range; the shipped Kurucz and Tlusty files share
    one grid, so the union is that grid).  Each member's spectra are linearly
    resampled onto it once, at construction.
    """

    is_analytic = False

    def __init__(self, libraries: list[StellarLibrary]):
        if len(libraries) < 2:
            raise ValueError("a composite library needs at least two libraries")
        lo = max(lib.wavelength[0] for lib in libraries)
        hi = min(lib.wavelength[-1] for lib in libraries)
        if lo >= hi:
            raise ValueError("composite library: the members' wavelength ranges do not overlap")
        wl = np.unique(np.concatenate([lib.wavelength for lib in libraries]))
        self.wavelength = wl[(wl >= lo) & (wl <= hi)]
        self.members = [
            lib if np.array_equal(lib.wavelength, self.wavelength) else lib.resampled(self.wavelength)
            for lib in libraries
        ]
        self.label = " + ".join(lib.label for lib in libraries)
        self.is_analytic = all(lib.is_analytic for lib in libraries)

    def polygon(self, dlogT: float = 0.0, dlogg: float = 0.0) -> list[np.ndarray]:
        return [lib.polygon(dlogT, dlogg) for lib in self.members]

    def contains(self, logT, logg, dlogT: float = 0.0, dlogg: float = 0.0) -> np.ndarray:
        out = np.zeros(np.shape(logT), dtype=bool)
        for lib in self.members:
            out |= lib.contains(logT, logg, dlogT, dlogg)
        return out

    def assign(self, logT, logg) -> np.ndarray:
        """1-based library index per point (0 = unusable), spec §2.2 steps 1–3."""
        logT = np.asarray(logT, dtype=np.float64)
        logg = np.asarray(logg, dtype=np.float64)
        relaxed = [lib.contains(logT, logg, *USABLE_MARGINS) for lib in self.members]
        usable = np.logical_or.reduce(relaxed)
        osl = np.zeros(logT.shape, dtype=np.int64)
        for k, lib in enumerate(self.members):  # strict pass
            take = usable & (osl == 0) & lib.contains(logT, logg)
            osl[take] = k + 1
        for k in range(len(self.members)):  # relaxed pass
            take = usable & (osl == 0) & relaxed[k]
            osl[take] = k + 1
        return osl

    def coverage_report(self, logT, logg) -> dict[str, int]:
        osl = self.assign(logT, logg)
        rep = {"n": int(osl.size), "usable": int((osl > 0).sum()), "dropped": int((osl == 0).sum())}
        for k, lib in enumerate(self.members):
            rep[f"osl{k + 1}:{lib.name}"] = int((osl == k + 1).sum())
        return rep

    def spectra_at(self, logT, logg, Z, logL, behaviour: PhysicsBehaviour = DEFAULT_PHYSICS):
        """As :meth:`StellarLibrary.spectra_at`, plus ``osl`` (1-based library index).

        Rows stay in input order.  BEAST concatenates library by library; a
        caller that needs BEAST's row order applies :func:`beast_row_order`.
        """
        logT = np.asarray(logT, dtype=np.float64)
        logg = np.asarray(logg, dtype=np.float64)
        Z = np.broadcast_to(np.asarray(Z, dtype=np.float64), logT.shape)
        logL = np.asarray(logL, dtype=np.float64)
        osl_all = self.assign(logT, logg)
        keep = osl_all > 0
        if (~keep).any():
            log.info("%s: %d of %d points outside every library dropped", self.label, int((~keep).sum()), keep.size)
        osl = osl_all[keep]
        for k, lib in enumerate(self.members):
            n_k = int((osl == k + 1).sum())
            if lib.is_analytic and n_k and not self.is_analytic:
                # the analytic fallback of a real library: say how much of the grid it makes
                log.warning(
                    "%d of %d isochrone points lie outside the model atmospheres: %s used for them",
                    n_k,
                    osl.size,
                    lib.label,
                )
        T, g, z, L = logT[keep], logg[keep], Z[keep], logL[keep]
        r_m = radius_m(L, T)
        spec = np.zeros((osl.size, self.wavelength.size))
        for k, lib in enumerate(self.members):
            sel = np.nonzero(osl == k + 1)[0]
            if sel.size:
                idx, w = lib.interpolation_weights(T[sel], g[sel], z[sel], behaviour)
                spec[sel] = lib.spectra_for(idx, w, r_m[sel])
        return keep, spec, r_m / R_SUN_M, osl


def beast_row_order(osl: np.ndarray) -> np.ndarray:
    """Permutation giving BEAST's composite row order (library by library, stable)."""
    return np.argsort(np.asarray(osl), kind="stable")


# --------------------------------------------------------------------------- planck


def planck_flux(wavelength_aa: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Surface flux pi B_lambda(T) in erg s⁻¹ cm⁻² Å⁻¹, shape (len(T), len(wavelength))."""
    lam = np.asarray(wavelength_aa, dtype=np.float64)[None, :] * 1e-8  # cm
    T = np.asarray(T, dtype=np.float64)[:, None]
    x = _H_CGS * _C_CGS / (lam * _K_CGS * T)
    with np.errstate(over="ignore"):
        b = 2.0 * _H_CGS * _C_CGS**2 / lam**5 / np.expm1(x)  # erg s⁻¹ cm⁻² cm⁻¹ sr⁻¹
    return np.pi * b * 1e-8


def planck_library(
    logT: np.ndarray | None = None,
    logg: np.ndarray | None = None,
    Z: np.ndarray | None = None,
    wavelength: np.ndarray | None = None,
) -> StellarLibrary:
    """The analytic default: black bodies on a (logT, logg, Z) lattice.

    Defaults: logT 3.30–5.00 (2000–100 000 K) in 0.005 dex steps (linear
    interpolation between nodes then errs by < 1 % even in the Wien tail of
    cool stars), logg -1…7 in 1 dex, Z ∈ {1e-5, 0.1} (spectra do not depend on
    logg or Z; the planes exist so that the same interpolation code runs), and
    3000 log-spaced wavelengths from 90 Å to 10 µm (R ≈ 430, ample for
    broad-band UV–IR photometry).  The polygon is the lattice's box.
    """
    logT = np.round(np.arange(3.30, 5.0 + 1e-9, 0.005), 6) if logT is None else np.asarray(logT, float)
    logg = np.arange(-1.0, 7.0 + 1e-9, 1.0) if logg is None else np.asarray(logg, float)
    Z = np.array([1e-5, 0.1]) if Z is None else np.asarray(Z, float)
    wl = np.geomspace(90.0, 1.0e5, 3000) if wavelength is None else np.asarray(wavelength, float)
    flux = planck_flux(wl, 10.0**logT)
    # model order: Z-major, then logT, then logg (like BEAST files sorted by T, g)
    zz, tt, gg = np.meshgrid(np.arange(Z.size), np.arange(logT.size), np.arange(logg.size), indexing="ij")
    return StellarLibrary(
        name="planck",
        label=PLANCK_LABEL,
        wavelength=wl,
        logT=logT[tt.ravel()],
        logg=logg[gg.ravel()],
        Z=Z[zz.ravel()],
        flux=flux,
        spec_row=tt.ravel(),
        polygon_kind="box",
        is_analytic=True,
        source=None,
    )


# --------------------------------------------------------------------------- files


def read_beast_fits(url: str, name: str) -> StellarLibrary:
    """A BEAST library file in the "old" FITS layout (spec §2)."""
    from astropy.io import fits

    with storage.local_copy_for_read(url) as path:
        with fits.open(path, memmap=False) as hdul:
            img = hdul[0].data
            if img is None or img.ndim != 2:
                raise ValueError(f"{url}: primary HDU must be a 2-D image (spectra rows + wavelength row)")
            tab = None
            for h in hdul[1:]:
                if isinstance(h, (fits.BinTableHDU, fits.TableHDU)):
                    tab = h.data
                    break
            if tab is None:
                raise ValueError(f"{url}: no table extension with logT, logg, Z")
            names = set(tab.columns.names)
            cols = {}
            for c in ("logT", "logg", "Z"):
                if c in names:
                    cols[c] = np.asarray(tab[c], dtype=np.float64)
                elif c == "logT" and "Teff" in names:
                    cols[c] = np.log10(np.asarray(tab["Teff"], dtype=np.float64))
                else:
                    raise ValueError(f"{url}: library table lacks column {c!r}")
            img = np.asarray(img, dtype=np.float64)
    n = cols["logT"].size
    if img.shape[0] != n + 1:
        raise ValueError(f"{url}: image has {img.shape[0]} rows, expected {n} spectra + 1 wavelength row")
    wl = img[-1]
    flux = img[:-1]
    if np.any(np.diff(wl) <= 0):
        order = np.argsort(wl)
        wl, flux = wl[order], flux[:, order]
        if np.any(np.diff(wl) <= 0):
            raise ValueError(f"{url}: repeated wavelengths in the last image row")
    odd = np.nonzero((cols["logg"] < -2) | (cols["logg"] > 10))[0]
    if odd.size:
        # kept as in the file (BEAST uses them as they are), but flagged: such
        # a point can become a far "nearest" quadrant neighbour in §3.1
        log.warning(
            "%s: %d model(s) with implausible logg %s (rows %s)",
            url,
            odd.size,
            cols["logg"][odd].tolist(),
            odd.tolist(),
        )
    base = posixpath.basename(url.rstrip("/"))
    return StellarLibrary(
        name=name,
        label=f"{name} ({base})",
        wavelength=wl,
        logT=cols["logT"],
        logg=cols["logg"],
        Z=cols["Z"],
        flux=flux,
        spec_row=np.arange(n),
        polygon_kind=name,
        is_analytic=False,
        source=url,
    )


def _download(src: str, dest: str) -> None:
    """Copy ``src`` (http(s) or any fsspec URL) to ``dest`` atomically."""
    log.info("downloading %s -> %s", src, dest)
    if storage.protocol(src) in ("http", "https"):
        # astropy's downloader: timeouts, proxies, a partial download never left
        # under the final name.  Not its URL cache (cache=False): ``dest``, in
        # physics.stellar_library.cache (any fsspec URL), is the one cache.
        from astropy.utils.data import download_file

        tmp = download_file(src, cache=False, timeout=120, show_progress=False)
        try:
            with open(tmp, "rb") as r, storage.atomic_write(dest) as out:
                while chunk := r.read(1 << 20):
                    out.write(chunk)
        finally:
            os.remove(tmp)
        return
    with storage.open_url(src, "rb") as r, storage.atomic_write(dest) as out:
        while chunk := r.read(1 << 20):
            out.write(chunk)


def library_file(name: str, lib) -> str:
    """URL of library ``name``: explicit file, else the download cache (the
    embedded ``atlas9``: its file inside the package)."""
    if name == "atlas9":
        from beastflow.physics import atlas9

        return str(atlas9.embedded_path())
    if name in lib.files:
        return lib.files[name]
    if not lib.download:
        raise ValueError(
            f"stellar library {name!r} needs a file: set physics.stellar_library.files.{name} "
            f"(or physics.stellar_library.download = true to fetch {STANDARD_FILES[name]})"
        )
    cache = lib.cache
    if storage.protocol(cache) == "file" and "://" not in cache:
        cache = os.path.expanduser(cache)
    dest = storage.join(cache, STANDARD_FILES[name])
    if not storage.exists(dest):
        base = lib.download_base_url
        src = base + STANDARD_FILES[name] if base.endswith("/") else storage.join(base, STANDARD_FILES[name])
        try:
            _download(src, dest)
        except Exception as exc:
            raise ValueError(
                f"could not download stellar library {name!r} from {src} "
                f"(physics.stellar_library.download_base_url): {exc}"
            ) from exc
    return dest


def load_library(
    name: str, lib, atlas9_file_logg: bool = False, wavelength: np.ndarray | None = None
) -> StellarLibrary:
    """One library of ``physics.stellar_library``; ``wavelength`` only for ``planck``."""
    if name == "planck":
        return planck_library(wavelength=wavelength)
    if name == "atlas9":
        from beastflow.physics.atlas9 import atlas9_library

        return atlas9_library(atlas9_file_logg)
    if name in STANDARD_FILES:
        return read_beast_fits(library_file(name, lib), name)
    raise ValueError(f"physics.stellar_library.libraries: unknown library {name!r}")


def make_stellar_library(lib, atlas9_file_logg: bool = False) -> StellarLibrary | CompositeLibrary:
    """The library (or composite, in preference order) of ``physics.stellar_library``.

    Next to a real library, ``planck`` is evaluated on that library's
    wavelengths (within its own 90 Å lower limit), so the composite's grid is
    the real library's sampling rather than the union of both grids.
    """
    real = [load_library(name, lib, atlas9_file_logg) for name in lib.libraries if name != "planck"]
    wl = None
    if real and "planck" in lib.libraries:
        wl = real[0].wavelength
        wl = wl[wl >= 90.0]
    libs = []
    for name in lib.libraries:
        libs.append(load_library(name, lib, atlas9_file_logg, wl) if name == "planck" else real.pop(0))
    if len(libs) == 1:
        return libs[0]
    return CompositeLibrary(libs)


__all__ = [
    "CompositeLibrary",
    "PLANCK_LABEL",
    "StellarLibrary",
    "USABLE_MARGINS",
    "beast_row_order",
    "kurucz_polygon",
    "library_file",
    "make_stellar_library",
    "planck_flux",
    "planck_library",
    "points_in_polygon",
    "radius_m",
    "radius_rsun",
    "read_beast_fits",
    "tlusty_polygon",
]
