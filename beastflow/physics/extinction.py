"""Extinction laws, dust parameter grids and valid dust points (spec §7).

``make_extinction_law(settings.physics.extinction, beast_curves)`` builds the law the
SED grid builder applies: a Gordon et al. (2016) R(V)-f_A mixture of an A
(Milky-Way-like, R(V)-dependent) and a B (SMC-like, fixed R_B) curve, or a
single curve.  A(lambda)/A(V) depends only on (R_A, f_A), so ``curve`` is
cached per wavelength array and component R(V): the builder evaluates it once
per valid (R, f_A) pair and scales by each A(V).

"gordon16" uses BEAST 2.1's own F99 + G03_SMCBar with ``beast_curves``
(``PhysicsBehaviour.beast_gordon16_curves``, compat mode; needed to
match BEAST numbers, spec §11) and the ``dust_extinction`` package's F99 +
G03_SMCBar by default (the curves as maintained by their authors).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from .dust_curves import BeastF99, BeastG03SMCBar, Curve, PackageCurve

__all__ = ["dust_axes", "ExtinctionLaw", "make_extinction_law", "transmission", "rv_a_of_mixture"]


def _arange_inclusive(rng: list[float]) -> np.ndarray:
    """BEAST's [min, max, step] grid: arange(min, max + step/2, step)."""
    if len(rng) == 1:
        return np.array([float(rng[0])])
    lo, hi, step = (float(v) for v in rng)
    return np.arange(lo, hi + 0.5 * step, step)


def dust_axes(ext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(avs, rvs, fAs) from ``physics.extinction`` (spec §7.1).

    A log A(V) grid is 10**arange(log10 min, log10 max, step in dex): the
    maximum is excluded, as in BEAST.  A single curve has no mixture: fAs = [1].
    """
    if ext.av_log and len(ext.avs) == 3:
        lo, hi, step = (float(v) for v in ext.avs)
        avs = 10.0 ** np.arange(np.log10(lo), np.log10(hi), step)
        if avs.size == 0:
            raise ValueError("physics.extinction.avs: the log A(V) grid is empty (max must exceed min)")
    else:
        avs = _arange_inclusive(ext.avs)
    rvs = _arange_inclusive(ext.rvs)
    fAs = np.array([1.0]) if ext.law == "single" else _arange_inclusive(ext.fAs)
    return avs, rvs, fAs


def rv_a_of_mixture(Rv: float, f_A: float, Rv_B: float) -> float:
    """R(V) of the A component from 1/R = f_A/R_A + (1 - f_A)/R_B (3.1 if f_A = 0,
    a placeholder: the A component does not contribute then)."""
    if f_A > 0:
        return 1.0 / (1.0 / (Rv * f_A) - (1.0 - f_A) / (f_A * Rv_B))
    return 3.1


def transmission(a_lambda_mag, exp_attenuation: bool) -> np.ndarray:
    """Flux transmission for an extinction A(lambda) in magnitudes.

    Default: 10**(-0.4 A).  ``exp_attenuation``: exp(-A), what BEAST 2.1 applies (spec §7.4
    BUG?: 8.6 % more extinction in magnitudes than the A(V) grid value says).
    """
    a = np.asarray(a_lambda_mag, dtype=np.float64)
    if exp_attenuation:
        return np.exp(-a)
    return 10.0 ** (-0.4 * a)


class ExtinctionLaw:
    """An extinction law ready for the SED grid builder.

    Mixture (``has_fA``): A(lambda) = A(V) [f_A k_A(lambda; R_A) + (1 - f_A) k_B(lambda)].
    Single curve: A(lambda) = A(V) k(lambda; R(V)), columns f_A = 1, Rv_A = Rv.
    """

    _CACHE_SIZE = 512

    def __init__(self, name: str, a_curve: Curve, b_curve: Curve | None = None):
        self.name = name
        self.a_curve = a_curve
        self.b_curve = b_curve
        self.has_fA = b_curve is not None
        if b_curve is not None:
            if b_curve.rv_dependent:
                raise ValueError(
                    f"{name}: the B component must be an average curve with a fixed R(V), "
                    f"{b_curve.name} depends on R(V)"
                )
            if not a_curve.rv_dependent:
                raise ValueError(f"{name}: the A component must be R(V)-dependent, {a_curve.name} is not")
            self.x_range = (max(a_curve.x_range[0], b_curve.x_range[0]), min(a_curve.x_range[1], b_curve.x_range[1]))
            if b_curve.Rv is None:
                raise ValueError(f"{name}: the B component {b_curve.name} has no fixed R(V)")
            self.Rv_B: float | None = float(b_curve.Rv)
        else:
            self.x_range = (a_curve.x_range[0], a_curve.x_range[1])
            self.Rv_B = None
        self._cache: OrderedDict = OrderedDict()

    # ------------------------------------------------------------ dust points
    def valid_dust_points(self, avs, rvs, fAs) -> dict[str, np.ndarray]:
        """Valid (A(V), R(V), f_A) points in BEAST order: f_A fastest, then R, then A(V).

        A mixture point is kept when R_A lies in [min rvs, max rvs], written as
        BEAST does: f_A/Rmax + (1-f_A)/R_B <= 1/R <= f_A/Rmin + (1-f_A)/R_B.
        f_A = 0 therefore survives only when R_B is one of the grid R values.
        """
        avs = np.atleast_1d(np.asarray(avs, dtype=np.float64))
        rvs = np.atleast_1d(np.asarray(rvs, dtype=np.float64))
        fAs = np.atleast_1d(np.asarray(fAs, dtype=np.float64))
        if not self.has_fA:
            if fAs.size != 1 or fAs[0] != 1.0:
                raise ValueError(f"{self.name} is a single curve: the f_A axis must be [1.0], got {fAs.tolist()}")
            if self.a_curve.rv_dependent and self.a_curve.rv_range is not None:
                lo, hi = self.a_curve.rv_range
                if rvs.min() < lo - 1e-9 or rvs.max() > hi + 1e-9:
                    raise ValueError(
                        f"physics.extinction.rvs spans [{rvs.min()}, {rvs.max()}] but "
                        f"{self.a_curve.name} is defined for R(V) in [{lo}, {hi}]"
                    )
            rv_col = np.tile(rvs, avs.size)
            return {"Av": np.repeat(avs, rvs.size), "Rv": rv_col, "f_A": np.ones(rv_col.size), "Rv_A": rv_col.copy()}

        rmin, rmax, rb = float(rvs.min()), float(rvs.max()), self._mixture_b()[1]
        pairs = []
        for rk in rvs:
            for fk in fAs:
                if fk / rmax + (1.0 - fk) / rb <= 1.0 / rk <= fk * 1.0 / rmin + (1.0 - fk) / rb:
                    pairs.append((rk, fk, rv_a_of_mixture(rk, fk, rb)))
        if not pairs:
            raise ValueError(
                f"No valid points in the R(V)-f_A plane for {self.name}: with R_B = {rb} no "
                f"physics.extinction.rvs {rvs.tolist()} x fAs {fAs.tolist()} pair has R_A within "
                f"[{rmin}, {rmax}]"
            )
        rng = self.a_curve.rv_range
        if rng is not None:
            ra = np.array([p[2] for p in pairs if p[1] > 0])
            if ra.size and (ra.min() < rng[0] - 1e-9 or ra.max() > rng[1] + 1e-9):
                raise ValueError(
                    f"physics.extinction.rvs: valid points need R_A in [{ra.min()}, {ra.max()}] "
                    f"but {self.a_curve.name} is defined for R(V) in {list(rng)}"
                )
        pr = np.array(pairs)
        n = len(pairs)
        return {
            "Av": np.repeat(avs, n),
            "Rv": np.tile(pr[:, 0], avs.size),
            "f_A": np.tile(pr[:, 1], avs.size),
            "Rv_A": np.tile(pr[:, 2], avs.size),
        }

    def _mixture_b(self) -> tuple[Curve, float]:
        """The B component and its fixed R(V); only a mixture law has them."""
        if self.b_curve is None or self.Rv_B is None:
            raise ValueError(f"{self.name} is a single curve: it has no B component")
        return self.b_curve, self.Rv_B

    # ------------------------------------------------------------------ curves
    def _wavenumbers(self, lamb) -> np.ndarray:
        lamb = np.atleast_1d(np.asarray(lamb, dtype=np.float64))
        if np.any(lamb <= 0):
            raise ValueError(f"extinction law {self.name}: wavelengths must be > 0 Angstrom")
        x = 1e4 / lamb
        lo, hi = self.x_range
        if np.any(x < lo) or np.any(x > hi):
            raise ValueError(
                f"extinction law {self.name} is defined for {1e4 / hi:.1f}-{1e4 / lo:.1f} Angstrom "
                f"(x = {lo}-{hi} 1/micron); got wavelengths {lamb.min():.1f}-{lamb.max():.1f} Angstrom"
            )
        return x

    def _component(self, which: str, curve: Curve, lamb, x_fn, Rv: float) -> np.ndarray:
        lamb = np.ascontiguousarray(np.atleast_1d(np.asarray(lamb, dtype=np.float64)))
        key = (
            which,
            hashlib.blake2b(lamb.tobytes(), digest_size=16).digest(),
            float(Rv) if curve.rv_dependent else None,
        )
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        val = curve.k(x_fn(lamb), Rv)
        val.setflags(write=False)
        self._cache[key] = val
        if len(self._cache) > self._CACHE_SIZE:
            self._cache.popitem(last=False)
        return val

    def curve(self, lamb, Rv: float, f_A: float = 1.0, Rv_A: float | None = None) -> np.ndarray:
        """A(lambda)/A(V) at wavelengths ``lamb`` (Angstrom) for one dust point."""
        if not self.has_fA:
            if f_A != 1.0:
                raise ValueError(f"{self.name} is a single curve: f_A must be 1, got {f_A}")
            return self._component("a", self.a_curve, lamb, self._wavenumbers, Rv)
        if not 0.0 <= f_A <= 1.0:
            raise ValueError(f"f_A must lie in [0, 1], got {f_A}")
        b_curve, rv_b = self._mixture_b()
        if Rv_A is None:
            Rv_A = rv_a_of_mixture(Rv, f_A, rv_b)
        out: float | np.ndarray = 0.0
        if f_A > 0:
            out = f_A * self._component("a", self.a_curve, lamb, self._wavenumbers, Rv_A)
        if f_A < 1:
            out = out + (1.0 - f_A) * self._component("b", b_curve, lamb, self._wavenumbers, rv_b)
        return np.asarray(out, dtype=np.float64)

    def a_lambda(self, lamb_angstrom, Av, Rv: float, f_A: float = 1.0, Rv_A: float | None = None) -> np.ndarray:
        """A(lambda) in magnitudes; ``Av`` a scalar (-> [n_lambda]) or 1-D (-> [n_Av, n_lambda])."""
        k = self.curve(lamb_angstrom, Rv, f_A, Rv_A)
        av = np.asarray(Av, dtype=np.float64)
        if av.ndim == 0:
            return float(av) * k
        return av[:, None] * k[None, :]


def _setting_curve(class_name: str, setting: str) -> PackageCurve:
    return PackageCurve(class_name, setting)


def make_extinction_law(ext, beast_curves: bool) -> ExtinctionLaw:
    """The law named by ``physics.extinction.law`` (see the module docstring)."""
    if ext.law == "gordon16":
        if beast_curves:
            return ExtinctionLaw("Gordon16_RvFALaw (BEAST F99 + G03_SMCBar)", BeastF99(), BeastG03SMCBar())
        return ExtinctionLaw(
            "gordon16 (dust_extinction F99 + G03_SMCBar)",
            _setting_curve("F99", "gordon16 A law"),
            _setting_curve("G03_SMCBar", "gordon16 B law"),
        )
    if ext.law == "rvfa":
        a = _setting_curve(ext.a_law, "physics.extinction.a_law")
        b = _setting_curve(ext.b_law, "physics.extinction.b_law")
        if not a.rv_dependent:
            raise ValueError(
                f"physics.extinction.a_law = {ext.a_law!r} is an average curve; the A component "
                "must be R(V)-dependent (e.g. F19, G23)"
            )
        if b.rv_dependent:
            raise ValueError(
                f"physics.extinction.b_law = {ext.b_law!r} depends on R(V); the B component "
                "must be an average curve with a fixed R(V) (e.g. G03_SMCBar, G24_SMCAvg)"
            )
        return ExtinctionLaw(f"rvfa ({a.name} + {b.name})", a, b)
    if ext.law == "single":
        c = _setting_curve(ext.curve, "physics.extinction.curve")
        return ExtinctionLaw(f"single ({c.name})", c)
    raise ValueError(f"physics.extinction.law: unknown law {ext.law!r}; expected gordon16, rvfa or single")
