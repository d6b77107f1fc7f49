"""Component extinction curves A(lambda)/A(V) (physics-model spec §7.2).

Each curve maps wavenumbers x = 1e4/lambda[Angstrom] (1/micron) and an R(V) to
A(lambda)/A(V).  Two families:

* BEAST 2.1's own Fitzpatrick (1999) and Gordon et al. (2003) SMC-bar curves,
  rebuilt from their published formulas: analytic FM90 form in the UV
  (x >= 1e4/2700) and a not-a-knot cubic interpolating spline (scipy
  ``splrep``, k=3, s=0, as BEAST) through optical/IR anchor points.  The
  ``dust_extinction`` package uses a natural spline and slightly different F99
  optical anchors (A(lambda)/A(V) differs by up to 8e-3), so these are what
  compat mode needs to match BEAST numbers.
* any R(V)-dependent (``parameter_averages``) or average (``averages``) class
  of the ``dust_extinction`` package, by class name.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import splev, splrep

__all__ = ["Curve", "BeastF99", "BeastG03SMCBar", "PackageCurve", "package_curve_names"]

# Optical/UV boundary of the FM90 parametrisation, in 1/micron
_X_UV = 1e4 / 2700.0
_X_UV2 = 1e4 / 2600.0


def _drude(x, x0, gamma):
    """FM90 2175 Angstrom bump profile D(x)."""
    x2 = x * x
    return x2 / ((x2 - x0 * x0) ** 2 + gamma * gamma * x2)


def _fuv(x):
    """FM90 far-UV curvature F(x), zero below x = 5.9."""
    y = np.where(x >= 5.9, x - 5.9, 0.0)
    return 0.5392 * y**2 + 0.05644 * y**3


class Curve:
    """One extinction curve: ``k(x, Rv)`` = A(lambda)/A(V) at wavenumbers x."""

    name: str = ""
    x_range: tuple[float, float] = (0.3, 10.0)
    #: True when the shape depends on the R(V) passed in
    rv_dependent: bool = True
    #: fixed R(V) of an average curve (None for R(V)-dependent curves)
    Rv: float | None = None
    #: R(V) values the curve is defined for (None: no limit beyond the settings')
    rv_range: tuple[float, float] | None = None

    def k(self, x: np.ndarray, Rv: float) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class BeastF99(Curve):
    """Fitzpatrick (1999) Milky Way R(V)-dependent curve as coded in BEAST 2.1."""

    name = "Fitzpatrick99 (BEAST)"
    x_range = (0.3, 10.0)

    def _uv(self, x, Rv):
        # E(lambda-V)/E(B-V) + R(V) = A(lambda)/E(B-V)
        c2 = -0.824 + 4.717 / Rv
        c1 = 2.030 - 3.007 * c2
        return c1 + c2 * x + 3.23 * _drude(x, 4.596, 0.99) + 0.41 * _fuv(x) + Rv

    def k(self, x, Rv):
        x = np.asarray(x, dtype=np.float64)
        out = np.empty_like(x)
        uv = x >= _X_UV
        out[uv] = self._uv(x[uv], Rv)
        if np.any(~uv):
            r2, r3, r4 = Rv**2, Rv**3, Rv**4
            xk = np.array([0.0, 1 / 2.65, 1 / 1.22, 1 / 0.60, 1 / 0.547, 1 / 0.467, 1 / 0.411, _X_UV, _X_UV2])
            yk = np.array(
                [
                    0.0,
                    0.26469 * Rv / 3.1,
                    0.82925 * Rv / 3.1,
                    2.13572e-4 * r2 + 1.00270 * Rv - 0.422809,
                    -7.35778e-5 * r2 + 1.00216 * Rv - 0.0513540,
                    -3.32598e-5 * r2 + 1.00184 * Rv + 0.700127,
                    -4.45636e-5 * r4 + 7.97809e-4 * r3 - 5.46959e-3 * r2 + 1.01707 * Rv + 1.19456,
                    float(self._uv(np.array([_X_UV]), Rv)[0]),
                    float(self._uv(np.array([_X_UV2]), Rv)[0]),
                ]
            )
            out[~uv] = splev(x[~uv], splrep(xk, yk, k=3, s=0))
        return out / Rv


class BeastG03SMCBar(Curve):
    """Gordon et al. (2003) SMC bar average curve as coded in BEAST 2.1 (R(V) = 2.74)."""

    name = "Gordon03_SMCBar (BEAST)"
    x_range = (0.3, 10.0)
    rv_dependent = False
    Rv = 2.74

    def _uv(self, x):
        r = 2.74
        return 1.0 + (-4.959 / r) + (2.264 / r) * x + (0.389 / r) * _drude(x, 4.6, 1.0) + (0.461 / r) * _fuv(x)

    def k(self, x, Rv=None):
        x = np.asarray(x, dtype=np.float64)
        out = np.empty_like(x)
        uv = x >= _X_UV
        out[uv] = self._uv(x[uv])
        if np.any(~uv):
            # J and K anchors adjusted in BEAST for a smooth, non-negative spline
            xk = np.array(
                [0.0, 1 / 2.198, 1 / 1.65, 1 / 1.25, 1 / 0.81, 1 / 0.65, 1 / 0.55, 1 / 0.44, 1 / 0.37, _X_UV, _X_UV2]
            )
            yk = np.array(
                [
                    0.0,
                    0.11,
                    0.169,
                    0.25,
                    0.567,
                    0.801,
                    1.00,
                    1.374,
                    1.672,
                    float(self._uv(np.array([_X_UV]))[0]),
                    float(self._uv(np.array([_X_UV2]))[0]),
                ]
            )
            out[~uv] = splev(x[~uv], splrep(xk, yk, k=3, s=0))
        return out


def _package_modules():
    import dust_extinction.averages as avg
    import dust_extinction.parameter_averages as par

    return par, avg


def package_curve_names() -> tuple[list[str], list[str]]:
    """(R(V)-dependent, average) class names usable from ``dust_extinction``."""
    par, avg = _package_modules()
    rv_dep = [n for n in par.__all__ if hasattr(getattr(par, n), "Rv_range")]
    return rv_dep, list(avg.__all__)


class PackageCurve(Curve):
    """A ``dust_extinction`` class by name; R(V)-dependent ones get the requested R."""

    def __init__(self, class_name: str, setting: str):
        import astropy.units as u

        par, avg = _package_modules()
        rv_dep, averages = package_curve_names()
        self._per_micron = 1.0 / u.micron
        if class_name in rv_dep:
            self._cls = getattr(par, class_name)
            self.rv_dependent = True
            lo, hi = self._cls.Rv_range
            self.rv_range = (float(lo), float(hi))
        elif class_name in averages:
            self._cls = getattr(avg, class_name)
            self.rv_dependent = False
            self.Rv = float(self._cls.Rv)
            self._fixed = self._cls()
        else:
            raise ValueError(
                f"{setting} = {class_name!r} is not a dust_extinction curve; R(V)-dependent: "
                f"{rv_dep}; averages: {averages}"
            )
        self.name = f"dust_extinction.{class_name}"
        self.x_range = (float(self._cls.x_range[0]), float(self._cls.x_range[1]))

    def k(self, x, Rv=None):
        x = np.asarray(x, dtype=np.float64)
        if self.rv_dependent:
            lo, hi = self.rv_range
            # R_A from the mixture identity can miss a range edge by rounding
            if lo - 1e-9 <= Rv <= hi + 1e-9:
                Rv = min(max(Rv, lo), hi)
            else:
                raise ValueError(f"{self.name} is defined for R(V) in [{lo}, {hi}], got {Rv}")
            model = self._cls(Rv=Rv)
        else:
            model = self._fixed
        return np.asarray(model(x * self._per_micron), dtype=np.float64)
