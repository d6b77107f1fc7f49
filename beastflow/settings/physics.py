"""[physics] settings: isochrones, stellar library, distances, dust grid, priors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import GridRange, NonEmptyFloats, NonEmptyStrings, Section, reject_unused

# Allowed prior model names per axis and the parameters each takes
# (shared/spec/physics-model.md §6, §8).  ``None`` marks a required parameter.
PRIOR_MODELS: dict[str, dict[str, dict[str, Any]]] = {
    "age": {
        "flat": {"amp": 1.0},
        "flat_log": {},
        "bins_histo": {"x": None, "values": None},
        "bins_interp": {"x": None, "values": None},
        "exponential": {"tau": None},
    },
    "mass": {
        "kroupa": {"alpha0": 0.3, "alpha1": 1.3, "alpha2": 2.3, "alpha3": 2.3},
        "salpeter": {"slope": 2.35},
        "flat": {},
    },
    "metallicity": {"flat": {"amp": 1.0}},
    "distance": {
        "flat": {"amp": 1.0},
        "absexponential": {"dist0": None, "tau": None, "amp": 1.0},
    },
    "av": {
        "flat": {"amp": 1.0},
        "lognormal": {"mean": None, "sigma": None},
        "two_lognormal": {"mean1": None, "mean2": None, "sigma1": None, "sigma2": None, "N1_to_N2": 1.0},
        "step": {"dist0": None, "amp1": None, "damp2": None, "lgsigma1": None, "lgsigma2": None},
        "exponential": {"a": None, "amp": 1.0},
    },
    "rv": {
        "flat": {"amp": 1.0},
        "lognormal": {"mean": None, "sigma": None},
        "two_lognormal": {"mean1": None, "mean2": None, "sigma1": None, "sigma2": None, "N1_to_N2": 1.0},
        "step": {"dist0": None, "amp1": None, "damp2": None, "lgsigma1": None, "lgsigma2": None},
    },
    "fA": {
        "flat": {"amp": 1.0},
        "lognormal": {"mean": None, "sigma": None},
        "two_lognormal": {"mean1": None, "mean2": None, "sigma1": None, "sigma2": None, "N1_to_N2": 1.0},
        "step": {"dist0": None, "amp1": None, "damp2": None, "lgsigma1": None, "lgsigma2": None},
    },
}


def validate_prior(axis: str, model: dict[str, Any]) -> dict[str, Any]:
    """Check a prior table, fill defaults; errors name the axis and what is allowed."""
    allowed = PRIOR_MODELS[axis]
    if "name" not in model:
        raise ValueError(f"{axis} prior needs a 'name' (one of {sorted(allowed)})")
    name = model["name"]
    if name not in allowed:
        raise ValueError(f"unknown {axis} prior {name!r}; allowed: {sorted(allowed)}")
    params = allowed[name]
    extra = sorted(set(model) - {"name"} - set(params))
    if extra:
        raise ValueError(f"{axis} prior {name!r} does not take {extra}; it takes {sorted(params) or 'nothing'}")
    out: dict[str, Any] = {"name": name}
    for key, default in params.items():
        if key in model:
            val = model[key]
            if isinstance(val, bool) or not isinstance(val, (int, float, list)):
                raise ValueError(f"{axis} prior {name!r}: {key} must be a number (or list), got {val!r}")
            out[key] = val
        elif default is None:
            raise ValueError(f"{axis} prior {name!r} needs {key!r}")
        else:
            out[key] = default
    return out


#: prior parameters that must be strictly positive (scales, widths, lognormal modes)
_POSITIVE_PRIOR_PARAMS = {
    "tau",
    "sigma",
    "sigma1",
    "sigma2",
    "lgsigma1",
    "lgsigma2",
    "a",
    "mean",
    "mean1",
    "mean2",
    "N1_to_N2",
}


def check_prior_values(axis: str, model: dict[str, Any]) -> dict[str, Any]:
    """Value checks of a validated prior table; errors name the axis and key."""
    name = model["name"]
    for key, val in model.items():
        if key == "name":
            continue
        if key in ("x", "values"):
            if not isinstance(val, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in val
            ):
                raise ValueError(f"{axis} prior {name!r}: {key} must be a list of numbers, got {val!r}")
            continue
        if isinstance(val, list):
            raise ValueError(f"{axis} prior {name!r}: {key} must be a number, got a list")
        if key in _POSITIVE_PRIOR_PARAMS and not val > 0:
            raise ValueError(f"{axis} prior {name!r}: {key} must be > 0, got {val}")
    if name == "step" and not (model["amp1"] > 0 and model["amp1"] + model["damp2"] > 0):
        raise ValueError(f"{axis} prior 'step': amp1 and amp1 + damp2 (the lognormal modes) must be > 0")
    if name in ("bins_histo", "bins_interp"):
        nx, nv = len(model["x"]), len(model["values"])
        ok = nv == nx or (name == "bins_histo" and nv == nx - 1)
        if nx < 2 or not ok:
            raise ValueError(
                f"{axis} prior {name!r}: needs >= 2 x (log ages) and as many values "
                f"(bins_histo: or one fewer), got {nx} x and {nv} values"
            )
    return model


class Isochrones(Section):
    #: "parsec" and "mist" read the grids shipped by lachesis-grids (offline);
    #: "table" reads a user table (CSV/ECSV/FITS/Parquet) with the spec's columns:
    #: there ``logt`` and ``z``, when not left at their defaults, select the
    #: table's rows (ages on the logt lattice, metallicities in z), and the
    #: mass resampling keys (logmass_step, max_dlog) are refused.
    source: Literal["parsec", "mist", "table"] = "parsec"
    table: str | None = None
    logt: GridRange = Field(default_factory=lambda: [6.0, 10.13, 1.0])
    #: absolute metal mass fractions Z
    z: NonEmptyFloats = Field(default_factory=lambda: [0.0152])
    #: resampling step in log10(M_ini) along each isochrone (spec §1.2 mass regridding)
    logmass_step: float = Field(default=0.05, gt=0)
    #: also keep isochrone points where logT or logL moved by more than this
    #: (dex) since the last kept point, so giant branches are resolved; 0 = pure
    #: mass lattice
    max_dlog: float = Field(default=0.05, ge=0)
    #: drop pre-main-sequence rows (stage 0 with M_ini < 12)
    filter_pms: bool = False

    @model_validator(mode="after")
    def _table_needs_path(self):
        if self.source == "table" and not self.table:
            raise ValueError("source = 'table' needs physics.isochrones.table (a file URL)")
        for z in self.z:
            if not 0 < z < 1:
                raise ValueError(f"metallicity Z must be an absolute mass fraction in (0, 1), got {z}")
        if self.source == "table":
            reject_unused(
                self,
                "physics.isochrones",
                ["logmass_step", "max_dlog"],
                "with source = 'table' (the table's points are used as they are; the mass "
                "resampling applies to the parsec / mist grids)",
            )
        return self


class StellarLibrary(Section):
    #: preference order, e.g. ["tlusty", "kurucz"].  Default: the embedded
    #: Kurucz ATLAS9 solar grid ("atlas9", real atmospheres, offline), with
    #: black bodies ("planck", labelled as such) only for isochrone points
    #: outside it.  ["planck"] alone gives the analytic library everywhere.
    libraries: NonEmptyStrings = Field(default_factory=lambda: ["atlas9", "planck"])
    #: explicit file URLs per library name (any fsspec URL)
    files: dict[str, str] = Field(default_factory=dict)
    #: download the standard files from ``download_base_url`` into ``cache``
    #: when no explicit file is given
    download: bool = False
    download_base_url: str = "https://www.stsci.edu/~kgordon/beast/"
    cache: str = "~/.cache/beastflow/stellib"

    @field_validator("libraries")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        known = {"atlas9", "planck", "kurucz", "tlusty"}
        bad = [x for x in v if x not in known]
        if bad:
            raise ValueError(f"unknown stellar library {bad}; known: {sorted(known)}")
        if len(set(v)) != len(v):
            raise ValueError(f"a stellar library is listed twice: {v}")
        return v

    @model_validator(mode="after")
    def _used(self):
        unused = sorted(set(self.files) - set(self.libraries))
        if unused:
            raise ValueError(
                f"files: a file is given for {unused}, which libraries = {self.libraries} does not "
                "list; add it to libraries (preference order) or remove the file"
            )
        if self.download and not {"kurucz", "tlusty"} & set(self.libraries):
            raise ValueError(
                f"download = true, but libraries = {self.libraries} lists no downloadable library "
                "('kurucz', 'tlusty'); remove it"
            )
        return self

    @field_validator("files")
    @classmethod
    def _known_files(cls, v: dict[str, str]) -> dict[str, str]:
        # only file-based libraries take a file ("planck" is analytic, "atlas9" embedded)
        bad = sorted(set(v) - {"kurucz", "tlusty"})
        if bad:
            raise ValueError(
                f"files: no library file for {bad}; file-based libraries: ['kurucz', 'tlusty'] "
                "('atlas9' is embedded, 'planck' analytic)"
            )
        return v


class Extinction(Section):
    #: "gordon16" (F99 + G03_SMCBar mixture), "rvfa" (mixture of a_law and b_law
    #: from dust_extinction), or "single" (one curve, no f_A axis).
    law: Literal["gordon16", "rvfa", "single"] = "gordon16"
    a_law: str = "F19"
    b_law: str = "G03_SMCBar"
    curve: str = "G23"
    avs: GridRange = Field(default_factory=lambda: [0.01, 10.0, 1.0])
    av_log: bool = False
    rvs: GridRange = Field(default_factory=lambda: [2.0, 6.0, 1.0])
    fAs: GridRange = Field(default_factory=lambda: [0.0, 1.0, 0.25])

    @model_validator(mode="after")
    def _limits(self):
        if min(self.avs[:2]) < 0:
            raise ValueError("physics.extinction.avs: A(V) must be >= 0")
        if self.av_log and self.avs[0] <= 0:
            raise ValueError("physics.extinction.avs: a log A(V) grid needs min > 0")
        if min(self.rvs[:2]) < 1 or max(self.rvs[:2]) > 7:
            raise ValueError("physics.extinction.rvs: R(V) must lie in [1, 7]")
        if min(self.fAs[:2]) < 0 or max(self.fAs[:2]) > 1:
            raise ValueError("physics.extinction.fAs: f_A must lie in [0, 1]")
        return self

    @model_validator(mode="after")
    def _curve_names(self):
        unused = {"gordon16": ["a_law", "b_law", "curve"], "rvfa": ["curve"], "single": ["a_law", "b_law", "fAs"]}
        reject_unused(self, "physics.extinction", unused[self.law], f"with law = {self.law!r}")
        # only the curves the chosen law uses are checked (gordon16 names none)
        if self.law == "gordon16":
            return self
        from beastflow.physics.dust_curves import package_curve_names

        rv_dependent, averages = package_curve_names()
        if self.law == "rvfa":
            if self.a_law not in rv_dependent:
                raise ValueError(
                    f"physics.extinction.a_law = {self.a_law!r}: the A component must be an "
                    f"R(V)-dependent dust_extinction class, one of {rv_dependent}"
                )
            if self.b_law not in averages:
                raise ValueError(
                    f"physics.extinction.b_law = {self.b_law!r}: the B component must be an "
                    f"average dust_extinction curve with a fixed R(V), one of {averages}"
                )
        elif self.curve not in rv_dependent + averages:
            raise ValueError(
                f"physics.extinction.curve = {self.curve!r} is not a dust_extinction curve; "
                f"one of {rv_dependent + averages}"
            )
        return self


class Priors(Section):
    age: dict[str, Any] = Field(default_factory=lambda: {"name": "flat"})
    mass: dict[str, Any] = Field(default_factory=lambda: {"name": "kroupa"})
    metallicity: dict[str, Any] = Field(default_factory=lambda: {"name": "flat"})
    distance: dict[str, Any] = Field(default_factory=lambda: {"name": "flat"})
    av: dict[str, Any] = Field(default_factory=lambda: {"name": "flat"})
    rv: dict[str, Any] = Field(default_factory=lambda: {"name": "flat"})
    fA: dict[str, Any] = Field(default_factory=lambda: {"name": "flat"})

    @model_validator(mode="before")
    @classmethod
    def _validate_models(cls, data: Any):
        if isinstance(data, dict):
            out = dict(data)
            defaults = {"mass": {"name": "kroupa"}}
            for axis in PRIOR_MODELS:
                out.setdefault(axis, defaults.get(axis, {"name": "flat"}))
                if axis in out:
                    if not isinstance(out[axis], dict):
                        raise ValueError(f'{axis}: expected a table like {{ name = "flat" }}, got {out[axis]!r}')
                    out[axis] = check_prior_values(axis, validate_prior(axis, out[axis]))
            return out
        return data


class Physics(Section):
    #: full filter names as in pyphot / BEAST (e.g. HST_ACS_WFC_F475W)
    filters: NonEmptyStrings = Field(
        default_factory=lambda: [
            "HST_WFC3_F275W",
            "HST_WFC3_F336W",
            "HST_ACS_WFC_F475W",
            "HST_ACS_WFC_F814W",
            "HST_WFC3_F110W",
            "HST_WFC3_F160W",
        ]
    )
    #: [value] or [min, max, step] in ``distance_unit``
    distances: GridRange = Field(default_factory=lambda: [24.47])
    distance_unit: Literal["mag", "pc", "kpc", "Mpc"] = "mag"
    #: systemic velocity in km/s (redshifts the model spectra)
    velocity: float = -300.0
    n_subgrid: int = Field(default=1, ge=1)
    #: models per chunk when building / streaming the SED grid
    chunk_models: int = Field(default=262_144, ge=1024)
    isochrones: Isochrones = Field(default_factory=Isochrones)
    stellar_library: StellarLibrary = Field(default_factory=StellarLibrary)
    extinction: Extinction = Field(default_factory=Extinction)
    priors: Priors = Field(default_factory=Priors)

    @field_validator("filters")
    @classmethod
    def _known_filters(cls, v: list[str]) -> list[str]:
        from beastflow.filters import known_filter_names

        known = known_filter_names()
        bad = [f for f in v if f not in known]
        if bad:
            raise ValueError(
                f"unknown filter {bad}; expected names of the pyphot library such as "
                "HST_ACS_WFC_F475W or HST_WFC3_F160W"
            )
        if len(set(v)) != len(v):
            raise ValueError("filters are listed twice")
        return v
