"""A synthetic but realistic field of resolved stars, observed by a model instrument.

The embedded demo needs photometry whose truth is known.  This module makes it
the way a real field comes about, in three independent steps:

1. **Population.**  Stars are drawn from an SED grid with probability
   proportional to the grid's ``weight`` column (grid weight x prior weight),
   i.e. from exactly the prior the fit later assumes, so a correct pipeline
   must recover the truth with calibrated uncertainties.
2. **Placement.**  Positions follow an exponential surface-density gradient
   across a small M31-like patch (a disk seen towards its centre: the density
   rises by ``density_contrast`` from one side of the patch to the other).
3. **Instrument.**  Every band has a Vega zero point and an exposure time
   (count-rate scale), a background variance (sky + read noise in the PSF
   aperture) and a crowding variance proportional to the local source density:
   ``var(N) = N + sky + crowd(rho) + (sys * N)^2`` in counts.  Faint stars are
   measured too bright by a blending bias that fades with brightness.  The
   probability to detect a star in a band is a logistic function of its true
   magnitude whose 50 % point is where the S/N reaches ``detect_snr``, so it
   moves to brighter magnitudes as the density (crowding) grows.  A star is in
   the catalogue if it is found in at least one band; it then has forced
   photometry in every band (as DOLPHOT reports), so faint bands may hold
   negative fluxes.  A small fraction of measurements are hit by artefacts
   (cosmic rays, bad pixels): their flux is corrupted and flagged 99.

The instrument is deliberately *not* the toothpick noise model the pipeline
fits with: the pipeline has to learn bias, scatter and completeness from the
artificial-star tests, which go through the very same instrument
(``observe_asts``), exactly as real ASTs go through the real photometry.

Everything random comes from streams keyed by (project seed, stage label)
(``beastflow.randomness``), and every proposal consumes the same number of
random numbers whatever the data, so the field is the same on every CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from beastflow.filters import short_names
from beastflow.magnitudes import NODATA_MAG, rate_to_mag
from beastflow.randomness import stream

#: flag value of a bad measurement (DOLPHOT convention: >= 99 is unusable)
BAD_FLAG = 99
#: Parquet metadata key holding the instrument description in demo catalogues
INSTRUMENT_KEY = b"beastflow.demo.instrument"

# PHAT-like defaults per band (short name): Vega zero point (1 count/s),
# exposure time (s), 50%-completeness magnitude in the sparse limit, and the
# source density (stars/arcsec^2 in the catalogue) at which crowding noise
# equals the background noise (infrared bands are crowding-limited first).
_BAND_DEFAULTS: dict[str, dict[str, float]] = {
    "F225W": {"zeropoint": 22.38, "exposure_s": 900.0, "m50_sparse": 24.9, "crowd_density": 30.0},
    "F275W": {"zeropoint": 22.65, "exposure_s": 1000.0, "m50_sparse": 25.2, "crowd_density": 25.0},
    "F336W": {"zeropoint": 23.46, "exposure_s": 1100.0, "m50_sparse": 25.6, "crowd_density": 20.0},
    "F438W": {"zeropoint": 24.98, "exposure_s": 1200.0, "m50_sparse": 27.0, "crowd_density": 5.0},
    "F475W": {"zeropoint": 26.15, "exposure_s": 1720.0, "m50_sparse": 27.9, "crowd_density": 3.0},
    "F555W": {"zeropoint": 25.72, "exposure_s": 1500.0, "m50_sparse": 27.6, "crowd_density": 3.0},
    "F606W": {"zeropoint": 26.41, "exposure_s": 1500.0, "m50_sparse": 27.8, "crowd_density": 2.5},
    "F814W": {"zeropoint": 25.52, "exposure_s": 1900.0, "m50_sparse": 27.1, "crowd_density": 2.0},
    "F110W": {"zeropoint": 26.06, "exposure_s": 700.0, "m50_sparse": 25.8, "crowd_density": 0.8},
    "F160W": {"zeropoint": 24.70, "exposure_s": 1000.0, "m50_sparse": 25.0, "crowd_density": 0.5},
}
_GENERIC_BAND = {"zeropoint": 25.0, "exposure_s": 1200.0, "m50_sparse": 26.5, "crowd_density": 2.0}


@dataclass(frozen=True)
class BandModel:
    """The instrument in one band (count units: electrons in the PSF aperture)."""

    name: str  #: full filter name
    vega_flux: float  #: Vega band flux, erg s^-1 cm^-2 A^-1 (turns rates into physical fluxes)
    zeropoint: float  #: Vega magnitude giving 1 count per second
    exposure_s: float
    m50_sparse: float  #: 50 % completeness magnitude far from crowding
    crowd_density: float  #: density (stars/arcsec^2) where crowding variance = background variance
    detect_snr: float = 5.0  #: S/N at the 50 % completeness point
    width_mag: float = 0.25  #: logistic width of the completeness curve, mag
    blend_bias: float = 0.4  #: bias of a source at zero flux, in background sigmas
    sys_frac: float = 0.01  #: flat-field / PSF-model floor, fraction of the flux
    bad_fraction: float = 0.003  #: measurements hit by an artefact (flag 99)

    @property
    def counts_per_rate(self) -> float:
        """Counts collected from a source with F/F_Vega = 1 (a 0th-magnitude star)."""
        return 10.0 ** (0.4 * self.zeropoint) * self.exposure_s

    @property
    def sky_var(self) -> float:
        """Background variance (counts^2) that puts S/N = detect_snr at m50_sparse."""
        n = self.counts_per_rate * 10.0 ** (-0.4 * self.m50_sparse)
        s2 = self.detect_snr**2
        var = n * n / s2 - n - (self.sys_frac * n) ** 2
        if var <= 0:
            raise ValueError(
                f"{self.name}: m50_sparse={self.m50_sparse} is too bright for the exposure; "
                "no background is left to reach the detection S/N"
            )
        return var

    def background_var(self, density: np.ndarray) -> np.ndarray:
        """Sky + crowding variance (counts^2) at the given source densities."""
        return self.sky_var * (1.0 + np.asarray(density, dtype=np.float64) / self.crowd_density)

    def m50(self, density: np.ndarray) -> np.ndarray:
        """50 % completeness magnitude: where S/N = detect_snr (brighter when crowded)."""
        bg = self.background_var(density)
        s2 = self.detect_snr**2
        # solve n^2 (1 - s2 sys^2) = s2 (n + bg) for the positive root
        a = 1.0 - s2 * self.sys_frac**2
        n = (s2 + np.sqrt(s2 * s2 + 4.0 * a * s2 * bg)) / (2.0 * a)
        return self.zeropoint + 2.5 * math.log10(self.exposure_s) - 2.5 * np.log10(n)

    def completeness(self, true_rate: np.ndarray, density: np.ndarray) -> np.ndarray:
        """Detection probability in this band for true F/F_Vega ``true_rate``."""
        with np.errstate(divide="ignore"):
            mag = np.where(true_rate > 0, -2.5 * np.log10(np.maximum(true_rate, 1e-300)), np.inf)
        z = np.clip((mag - self.m50(density)) / self.width_mag, -60.0, 60.0)
        return 1.0 / (1.0 + np.exp(z))

    def measure(self, true_rate: np.ndarray, density: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """Measured F/F_Vega: Poisson-like + background + crowding noise and blending bias.

        ``normal``: one standard-normal deviate per source (drawn by the caller,
        so that each source's noise is tied to the source, not to its rank).
        """
        k = self.counts_per_rate
        n = np.maximum(np.asarray(true_rate, dtype=np.float64), 0.0) * k
        bg = self.background_var(density)
        # Blending: unresolved neighbours add flux to faint sources; the excess is
        # a fraction of the background sigma and fades once the star itself
        # dominates the aperture (n >> counts at the detection limit).
        n_lim = self.detect_snr * np.sqrt(bg)
        bias = self.blend_bias * np.sqrt(bg) * n_lim / (n_lim + n)
        sigma = np.sqrt(n + bg + (self.sys_frac * n) ** 2)
        return (n + bias + sigma * np.asarray(normal, dtype=np.float64)) / k


@dataclass(frozen=True)
class MeasurementDraws:
    """The random numbers a forced measurement of n sources in nb bands uses.

    Always the same count per source (3 per band), drawn in one block, so a
    source's measurement depends only on its own draws: which other sources
    are kept (a data-dependent decision) never shifts anybody's noise.
    """

    normal: np.ndarray  #: [n, nb] standard normal: photometric noise
    u_bad: np.ndarray  #: [n, nb] uniform: is the measurement hit by an artefact
    u_artefact: np.ndarray  #: [n, nb] uniform: size of the artefact

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, nb: int) -> MeasurementDraws:
        return cls(normal=rng.standard_normal((n, nb)), u_bad=rng.random((n, nb)), u_artefact=rng.random((n, nb)))

    def take(self, rows: np.ndarray) -> MeasurementDraws:
        return MeasurementDraws(self.normal[rows], self.u_bad[rows], self.u_artefact[rows])

    @classmethod
    def concatenate(cls, parts: Sequence[MeasurementDraws]) -> MeasurementDraws:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("normal", "u_bad", "u_artefact")))


@dataclass(frozen=True)
class FieldGeometry:
    """A square patch of sky with an exponential density gradient."""

    ra0: float = 11.02  #: patch centre, degrees (the M31 disk, PHAT brick 15-like)
    dec0: float = 41.75
    size_arcsec: float = 60.0  #: side of the square patch
    gradient_pa_deg: float = 35.0  #: direction (east of north) in which the density rises
    density_contrast: float = 4.0  #: density ratio across the patch along the gradient
    mean_density: float = 1.0  #: catalogue stars per arcsec^2 averaged over the patch
    pixel_scale: float = 0.05  #: arcsec per pixel of the reference image (ACS/WFC)

    def _unit(self) -> tuple[float, float]:
        pa = math.radians(self.gradient_pa_deg)
        return math.sin(pa), math.cos(pa)  # (east, north) components

    def tangent(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gnomonic (TAN) offsets xi (east), eta (north) in arcsec."""
        ra_r, dec_r = np.radians(ra), np.radians(dec)
        a0, d0 = math.radians(self.ra0), math.radians(self.dec0)
        cosc = math.sin(d0) * np.sin(dec_r) + math.cos(d0) * np.cos(dec_r) * np.cos(ra_r - a0)
        xi = np.cos(dec_r) * np.sin(ra_r - a0) / cosc
        eta = (math.cos(d0) * np.sin(dec_r) - math.sin(d0) * np.cos(dec_r) * np.cos(ra_r - a0)) / cosc
        return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0

    def sky(self, xi: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse gnomonic projection: arcsec offsets -> RA, Dec (degrees)."""
        x = np.radians(np.asarray(xi) / 3600.0)
        y = np.radians(np.asarray(eta) / 3600.0)
        a0, d0 = math.radians(self.ra0), math.radians(self.dec0)
        den = math.cos(d0) - y * math.sin(d0)
        ra = a0 + np.arctan2(x, den)
        dec = np.arctan2(math.sin(d0) + y * math.cos(d0), np.hypot(x, den))
        return np.degrees(ra) % 360.0, np.degrees(dec)

    def pixels(self, xi: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference-image pixels (origin 1, X grows west->east as RA decreases on a north-up image)."""
        half = 0.5 * self.size_arcsec / self.pixel_scale
        return half + 0.5 - np.asarray(xi) / self.pixel_scale, half + 0.5 + np.asarray(eta) / self.pixel_scale

    def density(self, xi: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Catalogue source density (stars/arcsec^2) at tangent-plane offsets (arcsec)."""
        ue, un = self._unit()
        # u in [-1/2, 1/2] across the patch along the gradient direction, scaled
        # by the patch's extent in that direction (so the contrast holds corner to corner)
        extent = self.size_arcsec * (abs(ue) + abs(un))
        u = (np.asarray(xi) * ue + np.asarray(eta) * un) / extent
        k = math.log(self.density_contrast)
        shape = np.exp(k * u)
        return self.mean_density * shape / self._mean_shape()

    def _mean_shape(self) -> float:
        # mean of exp(k u) over the square, by a fine midpoint rule (cheap, exact enough)
        m = 400
        c = (np.arange(m) + 0.5) / m - 0.5
        xi, eta = np.meshgrid(c * self.size_arcsec, c * self.size_arcsec)
        ue, un = self._unit()
        extent = self.size_arcsec * (abs(ue) + abs(un))
        return float(np.exp(math.log(self.density_contrast) * (xi * ue + eta * un) / extent).mean())

    def draw_offsets(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n positions (xi, eta arcsec) distributed as the density.

        The density exp(a xi + b eta) on the square factorises into two
        truncated exponentials, each sampled by its inverse CDF: exactly two
        uniforms per position, whatever the density values.
        """
        u = rng.random((2, n))
        ue, un = self._unit()
        extent = self.size_arcsec * (abs(ue) + abs(un))
        rate = math.log(self.density_contrast) / extent
        return (
            _truncated_exponential(u[0], rate * ue, self.size_arcsec),
            _truncated_exponential(u[1], rate * un, self.size_arcsec),
        )


def _truncated_exponential(u: np.ndarray, rate: float, side: float) -> np.ndarray:
    """Inverse CDF of p(x) ~ exp(rate x) on [-side/2, side/2] at uniforms u."""
    if abs(rate * side) < 1e-12:
        return (u - 0.5) * side
    return -0.5 * side + np.log1p(u * math.expm1(rate * side)) / rate


@dataclass(frozen=True)
class Instrument:
    """Bands + field geometry: everything needed to 'observe' a star at a position."""

    bands: tuple[BandModel, ...]
    geometry: FieldGeometry = field(default_factory=FieldGeometry)

    @property
    def filters(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def short(self) -> list[str]:
        return short_names(self.filters)

    def to_json(self) -> str:
        return json.dumps(
            {"bands": [dataclasses.asdict(b) for b in self.bands], "geometry": dataclasses.asdict(self.geometry)},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Instrument:
        d = json.loads(text)
        try:
            return cls(bands=tuple(BandModel(**b) for b in d["bands"]), geometry=FieldGeometry(**d["geometry"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a beastflow demo instrument description ({exc})") from None

    def completeness(self, true_rates: np.ndarray, density: np.ndarray) -> np.ndarray:
        """[n, n_bands] per-band detection probabilities."""
        return np.stack([b.completeness(true_rates[:, k], density) for k, b in enumerate(self.bands)], axis=1)

    def detection_probability(self, true_rates: np.ndarray, density: np.ndarray) -> np.ndarray:
        """Probability to be found in at least one band (bands detected independently)."""
        p = self.completeness(true_rates, density)
        return 1.0 - np.prod(1.0 - p, axis=1)

    def observe(
        self, true_rates: np.ndarray, density: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detect and measure sources.

        Returns (detected [n] bool, measured rates [n, nb] (0 where not detected),
        flags [n, nb] (BAD_FLAG where an artefact hit the measurement)).
        """
        true_rates = np.asarray(true_rates, dtype=np.float64)
        n, nb = true_rates.shape
        if nb != len(self.bands):
            raise ValueError(f"{nb} bands of fluxes for an instrument with {len(self.bands)} bands")
        u_detect = rng.random(n)
        draws = MeasurementDraws.draw(rng, n, nb)
        detected = u_detect < self.detection_probability(true_rates, density)
        rates, flags = self.measure(true_rates, density, draws)
        rates[~detected] = 0.0
        flags[~detected] = 0
        return detected, rates, flags

    def measure(
        self, true_rates: np.ndarray, density: np.ndarray, draws: MeasurementDraws
    ) -> tuple[np.ndarray, np.ndarray]:
        """Forced photometry of detected sources in every band: (rates [n, nb], flags [n, nb])."""
        true_rates = np.asarray(true_rates, dtype=np.float64)
        rates = np.empty(true_rates.shape)
        flags = np.zeros(true_rates.shape, dtype=np.int16)
        for k, b in enumerate(self.bands):
            meas = b.measure(true_rates[:, k], density, draws.normal[:, k])
            bad = draws.u_bad[:, k] < b.bad_fraction
            # an artefact (cosmic ray, hot pixel) adds a large spurious flux
            meas = np.where(
                bad,
                meas
                + np.abs(meas) * (0.5 + 2.5 * draws.u_artefact[:, k])
                + 5.0 * np.sqrt(b.sky_var) / b.counts_per_rate,
                meas,
            )
            rates[:, k] = meas
            flags[:, k] = np.where(bad, BAD_FLAG, 0)
        return rates, flags


def default_instrument(
    filters: Sequence[str],
    vega_fluxes: Sequence[float] | np.ndarray,
    geometry: FieldGeometry | None = None,
    **band_overrides: Any,
) -> Instrument:
    """PHAT-like instrument for the given full filter names."""
    if len(filters) != len(vega_fluxes):
        raise ValueError("one Vega flux per filter is needed")
    bands = []
    for full, short, vf in zip(filters, short_names(filters), vega_fluxes):
        params = dict(_BAND_DEFAULTS.get(short, _GENERIC_BAND))
        params.update(band_overrides)
        bands.append(BandModel(name=full, vega_flux=float(vf), **params))
    return Instrument(bands=tuple(bands), geometry=geometry or FieldGeometry())


def vega_mags(rates: np.ndarray) -> np.ndarray:
    """Vega magnitudes of F/F_Vega values; NODATA_MAG where the rate is not positive."""
    return rate_to_mag(rates, NODATA_MAG)


#: proposals per batch of the field's rejection sampler (a constant, so the
#: sequence of proposals does not depend on how many were accepted before)
PROPOSAL_BATCH = 8192

#: grid columns copied into the truth table when present
TRUTH_COLUMNS = (
    "Av",
    "Rv",
    "f_A",
    "Rv_A",
    "logA",
    "M_ini",
    "M_act",
    "Z",
    "distance",
    "logL",
    "logT",
    "logg",
    "radius",
    "weight",
)


@dataclass
class SyntheticField:
    catalog: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    #: expected number of stars drawn from the prior and placed to detect the catalogue's
    #: (the detected fraction of the population is n_stars / n_candidates)
    n_candidates: int


def _detection_envelope(grid, instrument: Instrument, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Per model: weight and detection probability at the lowest density of the patch.

    Completeness only falls with density, so this is an upper bound of the
    detection probability anywhere in the field: the rejection-sampling envelope.
    """
    geo = instrument.geometry
    rho_min = geo.mean_density / geo.density_contrast**0.5 / geo._mean_shape() * 0.999
    vega = np.array([b.vega_flux for b in instrument.bands])
    weights = np.empty(len(grid))
    pmax = np.empty(len(grid))
    for blk in grid.iter_chunks(chunk, columns=["weight"]):
        sl = slice(blk.start, blk.start + len(blk))
        weights[sl] = blk.columns["weight"]
        rates = blk.seds / vega
        pmax[sl] = instrument.detection_probability(rates, np.full(len(blk), rho_min))
    return weights, pmax


def _read_rows(grid, rows: np.ndarray, columns: Sequence[str], cache):
    """Rows (any order, repeats allowed) of the grid, from the in-memory copy if there is one."""
    from beastflow.io.sed_grid import SEDGridBlock

    if cache is not None:
        return SEDGridBlock(start=-1, seds=cache.seds[rows], columns={c: cache.columns[c][rows] for c in columns})
    uniq, inv = np.unique(rows, return_inverse=True)
    blk = grid.read(rows=uniq, columns=list(columns))
    return SEDGridBlock(start=-1, seds=blk.seds[inv], columns={c: v[inv] for c, v in blk.columns.items()})


def make_field(
    grid_url: str, instrument: Instrument, n_stars: int, seed: int, chunk_models: int = 262_144
) -> SyntheticField:
    """Draw, place and observe stars until ``n_stars`` are detected.

    Joint sampling of (model j, position x) with density
    weight_j * rho(x) * P_detect(j, rho(x)): models are proposed from
    weight_j * Pmax_j (Pmax = detection probability at the lowest density),
    positions from rho(x), and a proposal is kept with probability
    P_detect / Pmax -- i.e. exactly the stars the instrument would find.
    """
    from beastflow.io.sed_grid import SEDGrid

    if n_stars < 1:
        raise ValueError(f"n_stars must be at least 1, got {n_stars}")
    grid = SEDGrid(grid_url)
    if [f for f in grid.filters] != instrument.filters:
        raise ValueError(f"{grid_url}: grid filters {grid.filters} differ from the instrument's {instrument.filters}")
    if "weight" not in grid.columns:
        raise ValueError(f"{grid_url}: the grid has no 'weight' column to draw stars from the prior")
    rng = stream(seed, "demo.field")
    weights, pmax = _detection_envelope(grid, instrument, chunk_models)
    prop = np.where(np.isfinite(weights) & (weights > 0), weights, 0.0) * pmax
    total = prop.sum()
    if not total > 0:
        raise ValueError(
            f"{grid_url}: no model with positive prior weight is detectable by the instrument; "
            "the grid is too faint for the field's depth"
        )
    cdf = np.cumsum(prop / total)
    # fraction of prior-drawn stars the envelope would let through (for the record)
    w_ok = np.where(np.isfinite(weights) & (weights > 0), weights, 0.0)
    envelope_fraction = float(prop.sum() / w_ok.sum())

    vega = np.array([b.vega_flux for b in instrument.bands])
    nb = len(vega)
    # small grids (the demo's) are read once; big ones row by row on demand
    cache = grid.read() if grid.nbytes < (256 << 20) else None
    idx_all: list[np.ndarray] = []
    xi_all: list[np.ndarray] = []
    eta_all: list[np.ndarray] = []
    draws_all: list[MeasurementDraws] = []
    got, proposed = 0, 0
    while got < n_stars:
        # Fixed-size batches with a fixed count of randoms per proposal: the
        # k-th proposal is the same on every machine, and whether it is kept
        # depends on its own numbers only.
        m = PROPOSAL_BATCH
        j = np.minimum(np.searchsorted(cdf, rng.random(m), side="right"), len(cdf) - 1)
        xi, eta = instrument.geometry.draw_offsets(m, rng)
        u_keep = rng.random(m)
        draws = MeasurementDraws.draw(rng, m, nb)
        rho = instrument.geometry.density(xi, eta)
        seds = _read_rows(grid, j, [], cache).seds
        p = instrument.detection_probability(seds / vega, rho)
        keep = u_keep * pmax[j] < p
        idx_all.append(j[keep])
        xi_all.append(xi[keep])
        eta_all.append(eta[keep])
        draws_all.append(draws.take(keep))
        acc = np.flatnonzero(keep)
        # count proposals only up to the last star used, so the detected fraction is unbiased
        proposed += int(acc[n_stars - got - 1]) + 1 if got + len(acc) >= n_stars else m
        got += len(acc)
    j = np.concatenate(idx_all)[:n_stars]
    xi = np.concatenate(xi_all)[:n_stars]
    eta = np.concatenate(eta_all)[:n_stars]
    draws = MeasurementDraws.concatenate(draws_all).take(np.arange(n_stars))
    # order by position along the patch: no information leaks from the draw order
    order = np.lexsort((xi, eta))
    j, xi, eta, draws = j[order], xi[order], eta[order], draws.take(order)

    blk = _read_rows(grid, j, [c for c in TRUTH_COLUMNS if c in grid.columns], cache)
    true_rates = blk.seds / vega
    rho = instrument.geometry.density(xi, eta)
    # The sampling above already decided detection; only measure them here.
    rates, flags = instrument.measure(true_rates, rho, draws)

    ra, dec = instrument.geometry.sky(xi, eta)
    x, y = instrument.geometry.pixels(xi, eta)
    star_id = np.arange(len(j), dtype=np.int64)
    catalog: dict[str, np.ndarray] = {"star_id": star_id, "RA": ra, "DEC": dec, "X": x, "Y": y}
    for k, s in enumerate(instrument.short):
        catalog[f"{s}_RATE"] = rates[:, k]
        catalog[f"{s}_VEGA"] = vega_mags(rates[:, k])
        catalog[f"{s}_FLAG"] = flags[:, k]
    truth: dict[str, np.ndarray] = {
        "star_id": star_id,
        "sedgrid_indx": j.astype(np.int64),
        "RA": ra,
        "DEC": dec,
        "true_density": rho,
    }
    for c, v in blk.columns.items():
        truth[c] = v
    for k, s in enumerate(instrument.short):
        truth[f"{s}_TRUE_RATE"] = true_rates[:, k]
        truth[f"{s}_TRUE_VEGA"] = vega_mags(true_rates[:, k])
    out = SyntheticField(
        catalog=catalog, truth=truth, n_candidates=int(round(proposed / max(envelope_fraction, 1e-300)))
    )
    return out


def observe_ast_list(instrument: Instrument, ast_inputs: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Put an AST input list through the instrument.

    ``ast_inputs`` holds the injected Vega magnitudes per band under the full
    filter name or the short name (``HST_ACS_WFC_F475W`` / ``F475W`` /
    ``F475W_IN``) and positions as ``RA``/``DEC`` (degrees) or ``X``/``Y``
    (reference-image pixels).  Returns the AST result table: ``{B}_IN``,
    ``{B}_RATE`` (0 when not recovered), ``{B}_VEGA``, ``{B}_FLAG``,
    ``CUT_FLAG`` (1 where a measurement is flagged, the cut the catalogue gets),
    ``RA``, ``DEC`` (BEAST's ``RA_J2000`` name is not repeated: the catalogue
    readers treat the two as the same column), ``X``, ``Y``.
    """
    geo = instrument.geometry
    cols = {c.upper(): c for c in ast_inputs}
    n = len(next(iter(ast_inputs.values())))
    mags = np.empty((n, len(instrument.bands)))
    for k, (full, short) in enumerate(zip(instrument.filters, instrument.short)):
        for cand in (full.upper(), short, f"{short}_IN", f"{short}_VEGA"):
            if cand in cols:
                mags[:, k] = np.asarray(ast_inputs[cols[cand]], dtype=np.float64)
                break
        else:
            raise ValueError(
                f"AST input list has no magnitude column for {full} (looked for {full}, {short}, "
                f"{short}_IN); columns are {sorted(ast_inputs)}"
            )
    if "RA" in cols and "DEC" in cols:
        ra = np.asarray(ast_inputs[cols["RA"]], dtype=np.float64)
        dec = np.asarray(ast_inputs[cols["DEC"]], dtype=np.float64)
        xi, eta = geo.tangent(ra, dec)
    elif "X" in cols and "Y" in cols:
        half = 0.5 * geo.size_arcsec / geo.pixel_scale
        xi = -(np.asarray(ast_inputs[cols["X"]], dtype=np.float64) - half - 0.5) * geo.pixel_scale
        eta = (np.asarray(ast_inputs[cols["Y"]], dtype=np.float64) - half - 0.5) * geo.pixel_scale
        ra, dec = geo.sky(xi, eta)
    else:
        raise ValueError(f"AST input list has neither RA/DEC nor X/Y positions; columns are {sorted(ast_inputs)}")
    x, y = geo.pixels(xi, eta)
    rng = stream(seed, "demo.observe_asts")
    true_rates = np.where(np.isfinite(mags), 10.0 ** (-0.4 * np.where(np.isfinite(mags), mags, 99.0)), 0.0)
    rho = geo.density(xi, eta)
    detected, rates, flags = instrument.observe(true_rates, rho, rng)
    out: dict[str, np.ndarray] = {}
    for k, s in enumerate(instrument.short):
        out[f"{s}_IN"] = mags[:, k]
        out[f"{s}_RATE"] = rates[:, k]
        out[f"{s}_VEGA"] = vega_mags(rates[:, k])
        out[f"{s}_FLAG"] = flags[:, k]
    out["CUT_FLAG"] = np.asarray((flags >= BAD_FLAG).any(axis=1), dtype=np.int16)
    out["RA"] = ra
    out["DEC"] = dec
    out["X"] = x
    out["Y"] = y
    out["true_density"] = rho
    out["recovered"] = detected.astype(np.int8)
    # bookkeeping of the input list travels along (density bin, model row, ...)
    for c in ("sd_bin", "sedgrid_indx", "subgrid", "subgrid_indx", "realization"):
        if c in ast_inputs:
            out[c] = np.asarray(ast_inputs[c])
    return out
