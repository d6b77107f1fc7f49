"""Named BEAST 2.1 behaviours: one field per documented difference, grouped per stage.

beastflow's default implements the intended physics; ``compat = "beast-2.1"``
reproduces BEAST 2.1.0 (docs/differences-from-beast.md).  Rather than one
flag that every stage tests anonymously, the settings resolve once into a
frozen ``Behaviour`` whose fields each name one documented difference; a
stage receives only its part (``Behaviour.physics``, ``.observations``,
``.noise``, ``.trim``, ``.fit``) and passes each field to the function whose
rule it switches.  A variant that is a whole algorithm is an enum, and the
code (never the data) picks the function for it.

Profiles: ``PROFILES["none"]`` (every field at its default) and
``PROFILES["beast-2.1"]`` (every field at BEAST's value).  ``[behaviour]`` in
the settings file overrides single fields of the chosen profile
(``[behaviour.fit] pmax = "probability"``); an unknown stage or field is an
error.  The resolved object is part of the cache key (``Settings.section_hash``).

Each field's metadata holds the spec reference and the text that
``markdown_tables()`` writes into docs/differences-from-beast.md (a test
checks that the document carries exactly those tables).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class FluxBinRule(enum.Enum):
    """How the AST flux_bin method draws its models (asts §2.1)."""

    #: reference semantics: seeded, each model visited once, streamed over subgrids
    REFERENCE = "reference"
    #: BEAST 2.1's vectorised chunk rule (draws with replacement, double counting)
    BEAST_CHUNK = "beast-chunk"


class TileLookup(enum.Enum):
    """How a position is mapped to its density tile/bin (obs §4)."""

    #: the tangent-plane tile assignment of the density map
    TAN = "tan"
    #: BEAST's linear RA/Dec search (as its split tool)
    LINEAR = "linear"


class TrimRule(enum.Enum):
    """Which models the trim keeps (fitting §1 step 3)."""

    #: BEAST's rule alone: within sigma_fac errors of the sub-file's flux range
    SIGMA = "sigma"
    #: that OR the lossless bound (posterior mass dropped < e^-20)
    SIGMA_OR_LOSSLESS = "sigma-or-lossless"


class PmaxConvention(enum.Enum):
    """What the ``Pmax`` column holds (fitting §4)."""

    #: probability of the best grid point, exp(lnPmax - total_log_norm)
    PROBABILITY = "probability"
    #: BEAST's peak lnP (a log)
    LN_PEAK = "ln-peak"


class PercentileRule(enum.Enum):
    """How p16/p50/p84 are read off a 1-D PDF (fitting §5.3)."""

    #: percentiles of the histogram density (CDF linear across each bin)
    HISTOGRAM = "histogram"
    #: BEAST's mid-bin CDF interpolated between bin centres
    BIN_CENTRES = "bin-centres"


class PriorNorm(enum.Enum):
    """The constant the prior weights are divided by in the likelihood (fitting §2)."""

    #: ln sum of the weights over the FULL grid (from the grid info): a log evidence
    FULL_GRID = "full-grid"
    #: BEAST: ln sum over the trimmed grid, none for subgrid runs
    TRIMMED_GRID = "trimmed-grid"


def _f(default: Any, beast: Any, doc: str, spec: str, choices: tuple[str, ...] = ()) -> Any:
    """A behaviour field: default value, BEAST 2.1's value, what it switches, where the spec
    says so (and, for a string field, the values an override may take)."""
    return field(default=default, metadata={"beast": beast, "doc": doc, "spec": spec, "choices": choices})


@dataclass(frozen=True)
class PhysicsBehaviour:
    """Isochrones, stellar library, photometry, spectral and SED grid, priors, extinction."""

    z_weights_inverted: bool = _f(
        False,
        True,
        "metallicity weights between library Z planes: Z_inf x fz, Z_sup x (1 - fz) (BEAST, inverted) "
        "instead of linear interpolation (1 - fz, fz)",
        "physics-model §3.2 BUG?",
    )
    index0_missing: bool = _f(
        False,
        True,
        "temperature-consistency test: local index 0 of a Z plane counts as missing (BEAST) "
        "instead of a point like any other",
        "physics-model §3.1 step 3 QUIRK",
    )
    gravity_fraction_unclamped: bool = _f(
        False,
        True,
        "four-point gravity fraction used as is, negative weights dropped without renormalising (BEAST), "
        "instead of clamped to [0, 1]",
        "physics-model §3.1 steps 4-5 QUIRK",
    )
    atlas9_file_logg: bool = _f(
        False,
        True,
        "embedded ATLAS9 grid keeps the file's logg = 39.5 of model fp00t9400g395 (BEAST) instead of 3.95",
        "physics-model §2",
    )
    library_row_order: bool = _f(
        False,
        True,
        "a composite library's rows go library by library (BEAST) instead of in isochrone order",
        "physics-model §2.2 step 4",
    )
    band_numerator_positive_only: bool = _f(
        False,
        True,
        "band average: numerator trapezoid over the points with T > 0 only, denominator over all (BEAST), "
        "instead of both over all points",
        "physics-model §5 QUIRK",
    )
    vega_positive_points: bool = _f(
        False,
        True,
        "Vega band fluxes integrate the T > 0 points in numerator and denominator (BEAST's Filter.getFlux) "
        "instead of the models' all-points rule (Vega exactly 0 mag)",
        "physics-model §5",
    )
    distance_arange: bool = _f(
        False,
        True,
        "distance grid [min, max, step] as arange(min, max + step, step), which can pass max (BEAST), "
        "instead of the lattice up to max",
        "physics-model §4.1 QUIRK",
    )
    nd_untrimmed: bool = _f(
        False,
        True,
        "_nd fluxes computed on the untrimmed redshifted spectrum (BEAST) instead of after trimming "
        "to the extinction law's range",
        "physics-model §4.5 QUIRK",
    )
    specgrid_indx_per_star: bool = _f(
        False,
        True,
        "specgrid_indx = index of the star, repeated in every distance block (BEAST), instead of the spectral-grid row",
        "physics-model §4 QUIRK",
    )
    exp_attenuation: bool = _f(
        False,
        True,
        "transmission exp(-A) (BEAST, 8.6 % too much extinction) instead of 10^(-0.4 A)",
        "physics-model §7.4 BUG?",
    )
    mass_weights_per_isochrone: bool = _f(
        False,
        True,
        "grid weight and IMF each divided by their mean per isochrone (BEAST) instead of a star count per mass bin",
        "physics-model §6.3/§6.4 QUIRK",
    )
    skip_z_distance_renormalisation: bool = _f(
        False,
        True,
        "metallicity and distance blocks not renormalised (BEAST: the writes go to a copy; "
        "the distance prior has no effect)",
        "physics-model §6.4 step 4 BUG?",
    )
    dust_priors_unnormalised: bool = _f(
        False,
        True,
        "dust priors as BEAST's continuous densities instead of densities normalised on the grid",
        "physics-model §8",
    )
    beast_gordon16_curves: bool = _f(
        False,
        True,
        "gordon16 uses BEAST's own F99 + G03_SMCBar (not-a-knot spline) instead of dust_extinction's",
        "physics-model §7.2",
    )


@dataclass(frozen=True)
class ObservationsBehaviour:
    """Catalogs, density map, cuts, split, AST inputs."""

    lower_edge_no_tile: bool = _f(
        False,
        True,
        "a source on the grid edge gets no tile, SourceDensity = 0, sd_tile = -1 (BEAST) instead of the nearest tile",
        "observations §2.1 QUIRK",
    )
    source_bin_lookup: TileLookup = _f(
        TileLookup.TAN,
        TileLookup.LINEAR,
        "density bin of a catalog source by linear RA/Dec lookup (BEAST) instead of the bin of its tile",
        "observations §4 QUIRK",
    )
    ast_bin_lookup: TileLookup = _f(
        TileLookup.TAN,
        TileLookup.LINEAR,
        "density bin of an AST by linear RA/Dec lookup (BEAST) instead of the TAN assignment",
        "observations §4",
    )
    dec_clamped_with_ra_limits: bool = _f(
        False,
        True,
        "linear lookup clamps the Dec index with the RA limits (BEAST)",
        "observations §4 BUG?",
    )
    width_extra_bin: bool = _f(
        False,
        True,
        "width-mode binning puts the maximum in an extra bin (BEAST) instead of the last bin",
        "observations §4 QUIRK",
    )
    flag_cut_zero_rate: bool = _f(
        False,
        True,
        "flag cut removes RATE == 0 in the flag bands (BEAST code) instead of FLAG >= 99 with RATE > 0",
        "observations §5 QUIRK",
    )
    always_resplit: bool = _f(
        False,
        True,
        "the split always re-splits by n_per_file (BEAST) instead of honouring observations.split.resplit",
        "observations §6",
    )
    empty_trailing_subfiles: bool = _f(
        False,
        True,
        "min_n_subfile writes empty trailing sub-files (BEAST) instead of dropping them",
        "observations §6 QUIRK",
    )
    annulus_area_background: bool = _f(
        False,
        True,
        "background = masked annulus sum / full annulus area (BEAST) instead of the mean of unmasked pixels",
        "observations §3 QUIRK",
    )
    flux_bin_rule: FluxBinRule = _f(
        FluxBinRule.REFERENCE,
        FluxBinRule.BEAST_CHUNK,
        "flux_bin AST models drawn by BEAST's chunk rule (with replacement, double counting) "
        "instead of the seeded reference selection",
        "asts §2.1",
    )
    sedgrid_indx_candidate: bool = _f(
        False,
        True,
        "AST parameters read at the candidate index (BEAST) instead of the chosen model's grid row",
        "asts §2.1 BUG?",
    )
    annulus_needs_xy: bool = _f(
        False,
        True,
        "annulus positions without catalog X/Y are an error (BEAST) instead of done in RA/Dec",
        "asts §3.2 BUG?",
    )
    annulus_one_per_row: bool = _f(
        False,
        True,
        "annulus positions: one per SED row, ignoring realization_per_model (BEAST)",
        "asts §3.2 QUIRK",
    )
    beast_tile_pruning: bool = _f(
        False,
        True,
        "rejection sampling prunes tiles by BEAST's rules (eroded hull only without a boundary) "
        "instead of every constraint used",
        "asts §3.1 step 4",
    )
    short_position_precision: bool = _f(
        False,
        True,
        "AST positions written with RA/Dec %.5f (BEAST) instead of %.8f",
        "asts §4",
    )


@dataclass(frozen=True)
class NoiseBehaviour:
    """Noise model from ASTs (toothpick, truncheon)."""

    nan_outputs_recovered: bool = _f(
        False,
        True,
        "AST rows dropped only if some input is NaN; NaN outputs count as recovered (BEAST) "
        "instead of dropping non-inserted rows and treating a NaN output as a non-recovery",
        "noise-model §2.1 step 1 QUIRK",
    )
    statistic: str | None = _f(
        None,
        "percentile",
        "forces the binned statistic (BEAST's driver never sets compute_stddev); None = [noise_model] statistic",
        "noise-model §2.1 step 7",
        ("percentile", "stddev"),
    )
    raw_half_width: bool = _f(
        False,
        True,
        "error = raw percentile half-width / population std (BEAST) instead of the unbiased estimate",
        "noise-model §2.1 step 7",
    )
    sign_flip_with_calibration_only: bool = _f(
        False,
        True,
        "error sign flipped outside AST coverage only when a calibration matrix is given (BEAST) instead of always",
        "noise-model §2.3",
    )
    trunchen_precision: str = _f(
        "float32",
        "float64",
        "truncheon noise model stored in float64 (BEAST's files) instead of float32, "
        "when noise_model.precision is unset",
        "noise-model §6",
        ("float32", "float64"),
    )
    trunchen_raw_recovery: bool = _f(
        False,
        True,
        "truncheon: a non-finite RATE or CUT_FLAG > 0 still counts as recovered (BEAST)",
        "noise-model §6",
    )


@dataclass(frozen=True)
class TrimBehaviour:
    """Trimming of the grid and noise model per sub-file."""

    rule: TrimRule = _f(
        TrimRule.SIGMA_OR_LOSSLESS,
        TrimRule.SIGMA,
        "models kept by the sigma rule alone (BEAST) instead of the sigma rule OR the lossless bound",
        "fitting §1 step 3",
    )
    band_skip: bool = _f(
        False,
        True,
        "a band whose cut would remove every remaining model is skipped silently (BEAST) instead of an error",
        "fitting §1 step 3 QUIRK",
    )
    positive_error_required: bool = _f(
        True,
        False,
        "AST coverage also requires error > 0 and finite in every band (BEAST: completeness > 0 only)",
        "fitting §1 step 2",
    )


@dataclass(frozen=True)
class FitBehaviour:
    """Fitting and merging."""

    stats_threshold: float | None = _f(
        None,
        -10.0,
        "overrides fit.stats_threshold: statistics only over lnP - max > this (BEAST -10); None = the setting",
        "fitting §2",
    )
    lnp_threshold: float | None = _f(
        None,
        -10.0,
        "overrides fit.lnp_threshold of the lnp samples (BEAST -10); None = the setting",
        "fitting §7",
    )
    completeness: str | None = _f(
        None,
        "none",
        'overrides fit.completeness (BEAST: "none", no completeness term); None = the setting',
        "noise-model §7",
        ("min", "product", "none"),
    )
    prior_norm: PriorNorm = _f(
        PriorNorm.FULL_GRID,
        PriorNorm.TRIMMED_GRID,
        "prior normalisation ln sum(weight) over the trimmed grid, none for subgrid runs (BEAST) "
        "instead of over the full grid",
        "fitting §2",
    )
    refuse_invalid_noise: bool = _f(
        False,
        True,
        "a model with completeness <= 0 or an invalid error is an error (BEAST fits trimmed grids only) "
        "instead of excluded with a warning",
        "noise-model §7",
    )
    chi2min_sparse: bool = _f(
        False,
        True,
        "chi2min and its index over the sparse set lnP - max > -10 only (BEAST) instead of every model",
        "fitting §4 QUIRK",
    )
    pmax: PmaxConvention = _f(
        PmaxConvention.PROBABILITY,
        PmaxConvention.LN_PEAK,
        "Pmax = the peak lnP (BEAST, a log) instead of the probability of the best grid point",
        "fitting §4",
    )
    percentiles: PercentileRule = _f(
        PercentileRule.HISTOGRAM,
        PercentileRule.BIN_CENTRES,
        "p16/p50/p84 from BEAST's mid-bin CDF between bin centres instead of the histogram density",
        "fitting §5.3",
    )
    regular_2d_bins: bool = _f(
        False,
        True,
        "2-D PDF bins always regular (BEAST) instead of the 1-D bins of both parameters",
        "fitting §6 QUIRK",
    )
    bad_fluxes_as_measured: bool = _f(
        False,
        True,
        "zero and too-negative fluxes fitted as measurements (BEAST) instead of dropped and flagged",
        "docs/formats.md Bad measurements",
    )


@dataclass(frozen=True)
class Behaviour:
    """Every behaviour that differs between beastflow's default and BEAST 2.1, per stage."""

    profile: str = "none"
    physics: PhysicsBehaviour = field(default_factory=PhysicsBehaviour)
    observations: ObservationsBehaviour = field(default_factory=ObservationsBehaviour)
    noise: NoiseBehaviour = field(default_factory=NoiseBehaviour)
    trim: TrimBehaviour = field(default_factory=TrimBehaviour)
    fit: FitBehaviour = field(default_factory=FitBehaviour)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (enums by value): what the cache key hashes.

        The profile name is left out: two spellings of the same behaviour
        (a profile, or another profile with every field overridden) are one cache entry.
        """
        out: dict[str, Any] = {}
        for name in STAGES:
            part = getattr(self, name)
            out[name] = {f.name: _plain(getattr(part, f.name)) for f in dataclasses.fields(part)}
        return out


#: the per-stage parts of ``Behaviour``, in document order
STAGES: dict[str, type] = {
    "physics": PhysicsBehaviour,
    "observations": ObservationsBehaviour,
    "noise": NoiseBehaviour,
    "trim": TrimBehaviour,
    "fit": FitBehaviour,
}


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else v


def _beast_part(cls: type) -> Any:
    return cls(**{f.name: f.metadata["beast"] for f in dataclasses.fields(cls)})


PROFILES: dict[str, Behaviour] = {
    "none": Behaviour(),
    "beast-2.1": Behaviour("beast-2.1", *(_beast_part(c) for c in STAGES.values())),
}


def _coerce(stage: str, f: dataclasses.Field, value: Any) -> Any:
    """A TOML override value as the field's type; anything else names the key."""
    key = f"behaviour.{stage}.{f.name}"
    default = f.default
    if isinstance(default, enum.Enum):
        choices = [m.value for m in type(default)]
        if value not in choices:
            raise ValueError(f"{key}: must be one of {choices}, got {value!r}")
        return type(default)(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key}: must be true or false, got {value!r}")
        return value
    beast = f.metadata["beast"]
    if isinstance(beast, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value >= 0:
            raise ValueError(f"{key}: must be a negative number (ln units below the peak), got {value!r}")
        return float(value)
    if value not in f.metadata["choices"]:
        raise ValueError(f"{key}: must be one of {list(f.metadata['choices'])}, got {value!r}")
    return value


def resolve(profile: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Behaviour:
    """The profile's behaviour with single fields overridden (unknown stage or field: error).

    An override cannot reset a threshold field to None (TOML has no null); use the
    "none" profile and the [fit] keys for that.
    """
    if profile not in PROFILES:
        raise ValueError(f"compat: unknown profile {profile!r}; choose one of {list(PROFILES)}")
    base = PROFILES[profile]
    if not overrides:
        return base
    parts: dict[str, Any] = {}
    for stage, values in overrides.items():
        if stage not in STAGES:
            raise ValueError(f"behaviour.{stage}: unknown stage (choose from {list(STAGES)})")
        fields = {f.name: f for f in dataclasses.fields(STAGES[stage])}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"behaviour.{stage}: unknown key(s) {unknown} (known: {list(fields)})")
        new = {k: _coerce(stage, fields[k], v) for k, v in values.items()}
        parts[stage] = dataclasses.replace(getattr(base, stage), **new)
    return dataclasses.replace(base, **parts)


def _cell(v: Any) -> str:
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    return f"`{_plain(v)}`"


def markdown_tables() -> str:
    """One table per stage, from the field metadata (kept in docs/differences-from-beast.md)."""
    lines: list[str] = []
    for stage, cls in STAGES.items():
        lines += [
            f"`Behaviour.{stage}` ({cls.__doc__})",
            "",
            "| field | spec | default | `beast-2.1` | what `beast-2.1` does |",
            "|---|---|---|---|---|",
        ]
        for f in dataclasses.fields(cls):
            m = f.metadata
            lines.append(f"| `{f.name}` | {m['spec']} | {_cell(f.default)} | {_cell(m['beast'])} | {m['doc']} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


#: the default parts, for functions whose callers may leave the behaviour out
DEFAULT_PHYSICS = PhysicsBehaviour()
DEFAULT_NOISE = NoiseBehaviour()
