"""Spectral grid with stellar priors (spec physics-model §3.3, §4, §6; BEAST stages 2–3).

``build_spectral_grid(settings)``:

1. isochrone points from ``isochrones.load_isochrones`` (§1);
2. spectra L_λ (erg s⁻¹ Å⁻¹) at each point from the stellar library, points
   outside the library coverage dropped and counted (§2, §3);
3. replication over the distance grid (§4.1–4.2), redshift of the wavelength
   grid (§4.3), unextinguished band fluxes ``log{FILTER}_nd`` (§4.4) and
   trimming to the extinction law's domain (§4.5);
4. stellar grid and prior weights on the whole grid (§6.4), before any
   subgrid split (§9.4).

Memory: the spectra are stored once per *star* (isochrone point kept by the
library), as fluxes at 10 pc; a row of the spectral grid (star × distance)
is ``star_spectra[star_index[row]] * scale[row]`` with scale = (10 pc / d)².
This avoids holding n_distances copies of every spectrum; only the per-row
columns are replicated.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from beastflow import storage
from beastflow.io.hdf5_arrays import COMPRESSION, decode_attr, open_h5
from beastflow.physics import photometry
from beastflow.physics.isochrones import load_isochrones
from beastflow.physics.stellar_priors import compute_stellar_weights

if TYPE_CHECKING:
    from beastflow.behaviour import PhysicsBehaviour
    from beastflow.settings import Settings

log = logging.getLogger(__name__)

#: isochrone columns carried into the grids, in BEAST's column order (§9.1);
#: ``stage`` and ``mbolmag`` are kept only when the isochrone source has them.
ISOCHRONE_COLUMNS = ["logL", "logg", "mbolmag", "logA", "logT", "M_ini", "M_act", "stage", "Z"]
REQUIRED_ISOCHRONE_COLUMNS = ["logA", "M_ini", "M_act", "logL", "logT", "logg", "Z"]

#: rows per call into the stellar library (bounds the temporary memory of
#: the interpolation for very large isochrone sets)
LIBRARY_CHUNK = 20_000

PC_PER_UNIT = {"pc": 1.0, "kpc": 1e3, "Mpc": 1e6}


def nd_column(filter_name: str) -> str:
    return f"log{filter_name}_nd"


def wd_column(filter_name: str) -> str:
    return f"log{filter_name}_wd"


def distance_values(spec: Sequence[float], arange: bool = False) -> np.ndarray:
    """The distance grid in the settings' unit (§4.1).

    ``[value]`` → that value.  ``[min, max, step]``: ``arange``
    (``PhysicsBehaviour.distance_arange``) reproduces BEAST's
    ``arange(min, max + step, step)`` (QUIRK: floating point can add a point
    past max or lose max); the default includes max whenever it lies on the
    lattice (within 1e-9 steps) and never goes past it.
    """
    vals = [float(v) for v in spec]
    if len(vals) == 1:
        return np.array(vals)
    lo, hi, step = vals
    if arange:
        return np.arange(lo, hi + step, step)
    n = int(np.floor((hi - lo) / step + 1e-9)) + 1
    return lo + step * np.arange(n)


def distances_pc(spec: Sequence[float], unit: str, arange: bool = False) -> np.ndarray:
    """Distance grid in pc; ``unit = "mag"`` means distance moduli, d = 10^(μ/5 + 1)."""
    vals = distance_values(spec, arange)
    if unit == "mag":
        return 10.0 ** (vals / 5.0 + 1.0)
    if unit not in PC_PER_UNIT:
        raise ValueError(f"physics.distance_unit: unknown unit {unit!r}; use mag, pc, kpc or Mpc")
    out = vals * PC_PER_UNIT[unit]
    if np.any(out <= 0):
        raise ValueError(f"physics.distances: distances must be positive, got {vals.tolist()} {unit}")
    return out


def redshift_factor(velocity_kms: float) -> float:
    """1 + v/c (non-relativistic, §4.3)."""
    from astropy.constants import c  # lazy: astropy.constants costs 0.4 s to import

    return 1.0 + float(velocity_kms) / float(c.to("km/s").value)


def trim_mask(lamb_A: np.ndarray, x_range: Sequence[float]) -> np.ndarray:
    """Wavelengths strictly inside (1e4/x_max, 1e4/x_min) Å (§4.5); x_range in µm⁻¹."""
    x_min, x_max = float(x_range[0]), float(x_range[1])
    lo = 1e4 / x_max
    hi = 1e4 / x_min if x_min > 0 else np.inf
    return (lamb_A > lo) & (lamb_A < hi)


@dataclass
class SpectralGrid:
    """The spectral grid with stellar priors (all distances), held in memory.

    ``lamb``: observed-frame wavelengths (Å) after trimming; ``star_spectra``
    [n_stars, nλ]: f_λ at 10 pc (erg s⁻¹ cm⁻² Å⁻¹); per-row ``columns``
    (§9.1 order), ``star_index`` and ``scale`` = (10 pc / d)².
    """

    lamb: np.ndarray
    star_spectra: np.ndarray = field(repr=False)
    star_index: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)
    columns: dict[str, np.ndarray] = field(repr=False)
    column_order: list[str]
    filters: list[str]
    distances: np.ndarray
    library_label: str
    library_is_analytic: bool
    n_isochrone_points: int
    n_kept: int
    has_osl: bool
    input_hashes: dict[str, str]
    meta: dict[str, Any]

    @property
    def n_rows(self) -> int:
        return int(self.star_index.size)

    @property
    def n_stars(self) -> int:
        return int(self.star_spectra.shape[0])

    @property
    def n_dropped(self) -> int:
        return self.n_isochrone_points - self.n_kept

    def spectra(self, rows: slice | np.ndarray) -> np.ndarray:
        """f_λ at the model distance (erg s⁻¹ cm⁻² Å⁻¹) of the given rows."""
        return self.star_spectra[self.star_index[rows]] * self.scale[rows][:, None]


def _isochrone_table(settings: Settings) -> dict[str, np.ndarray]:
    iso_settings = settings.physics.isochrones
    table = load_isochrones(iso_settings)
    cols = {k: np.asarray(table[k], dtype=np.float64) for k in table.keys()}
    missing = [c for c in REQUIRED_ISOCHRONE_COLUMNS if c not in cols]
    where = iso_settings.table if iso_settings.source == "table" else f"{iso_settings.source} isochrones"
    if missing:
        raise ValueError(f"{where}: isochrone table lacks columns {missing} (physics.isochrones)")
    n = {c: cols[c].size for c in cols}
    if len(set(n.values())) > 1:
        raise ValueError(f"{where}: isochrone columns have different lengths {n}")
    if cols["logA"].size == 0:
        raise ValueError(
            f"{where}: no isochrone points for physics.isochrones logt = {iso_settings.logt}, z = {iso_settings.z}"
        )
    return cols


def _library_spectra(lib, iso: dict[str, np.ndarray], behaviour: PhysicsBehaviour):
    """Spectra of the isochrone points, in chunks; returns (kept idx, L_λ, radius, osl)."""
    n = iso["logA"].size
    keep_idx, spec, rad, osl = [], [], [], []
    for a in range(0, n, LIBRARY_CHUNK):
        b = min(n, a + LIBRARY_CHUNK)
        keep, L, r, o = lib.spectra_at(iso["logT"][a:b], iso["logg"][a:b], iso["Z"][a:b], iso["logL"][a:b], behaviour)
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        L = np.asarray(L, dtype=np.float64)
        if L.shape != (idx.size, np.asarray(lib.wavelength).size):
            raise ValueError(
                f"stellar library {lib.label}: spectra_at returned shape {L.shape} for {idx.size} kept points"
            )
        keep_idx.append(idx + a)
        spec.append(L)
        rad.append(np.asarray(r, dtype=np.float64))
        if o is not None:
            osl.append(np.asarray(o, dtype=np.float64))
    idx = np.concatenate(keep_idx)
    L = np.concatenate(spec, axis=0) if spec else np.empty((0, np.asarray(lib.wavelength).size))
    return idx, L, np.concatenate(rad), (np.concatenate(osl) if osl else None)


def input_hashes(settings: Settings) -> dict[str, str]:
    """Content hashes of the stage's input files: library files, isochrone table.

    Part of the cache key of the stage (with the settings hash): replacing a
    library file under the same name makes existing grids out of date.
    """
    from beastflow.physics.stellib import library_file  # lazy: astropy.io.fits, ~1 s to import

    out: dict[str, str] = {}
    sl = settings.physics.stellar_library
    for name in sl.libraries:
        if name == "planck":
            continue  # analytic: no input file
        url = library_file(name, sl)  # the embedded atlas9 too: a new packaged grid invalidates caches
        if not storage.exists(url):
            raise FileNotFoundError(f"{url}: stellar library file not found (physics.stellar_library.files.{name})")
        out[f"stellib:{name}"] = storage.content_hash(url)
    iso = settings.physics.isochrones
    if iso.source == "table" and iso.table:
        out["isochrones"] = storage.content_hash(iso.table)
    else:
        # the PARSEC / MIST grids ship inside lachesis-grids: its version
        # identifies the input (the files are not ours to hash)
        try:
            out["isochrones"] = f"lachesis-grids {md.version('lachesis-grids')} ({iso.source})"
        except md.PackageNotFoundError:
            out["isochrones"] = f"{iso.source} (lachesis-grids not installed)"
    return out


def build_spectral_grid(settings: Settings) -> SpectralGrid:
    """Spectral grid with stellar priors for ``settings`` (see the module docstring)."""
    # lazy: dust_extinction and astropy.io.fits add ~3 s to every import of the physics model
    from beastflow.physics.extinction import make_extinction_law
    from beastflow.physics.stellib import beast_row_order, make_stellar_library

    phys = settings.physics
    beh = settings.resolved_behaviour.physics
    filters = list(phys.filters)

    iso = _isochrone_table(settings)
    n_iso = int(iso["logA"].size)

    lib = make_stellar_library(phys.stellar_library, beh.atlas9_file_logg)
    if lib.is_analytic:
        log.warning("stellar library: %s", lib.label)
    kept, L, radius, osl = _library_spectra(lib, iso, beh)
    if beh.library_row_order and osl is not None:
        # BEAST concatenates a composite library's sub-grids library by
        # library (§2.2 step 4); the default keeps isochrone order.
        perm = beast_row_order(osl)
        kept, L, radius, osl = kept[perm], L[perm], radius[perm], osl[perm]
    n_kept = int(kept.size)
    log.info(
        "library %s covers %d of %d isochrone points (%d outside, dropped)", lib.label, n_kept, n_iso, n_iso - n_kept
    )
    if n_kept == 0:
        raise ValueError(
            f"no isochrone point lies inside the coverage of the stellar library "
            f"{lib.label} (physics.stellar_library.libraries = {phys.stellar_library.libraries})"
        )

    # f_λ at 10 pc: L_λ / (4π (10 pc)²)
    F10 = L * photometry.absolute_flux_scale(10.0)
    del L

    lamb_rest = np.asarray(lib.wavelength, dtype=np.float64)
    lamb_obs = lamb_rest * redshift_factor(phys.velocity)

    law = make_extinction_law(phys.extinction, beh.beast_gordon16_curves)
    keep_lam = trim_mask(lamb_obs, law.x_range)
    if keep_lam.sum() < 2:
        raise ValueError(
            f"the stellar library wavelengths ({lamb_obs[0]:.0f}–{lamb_obs[-1]:.0f} Å) do not "
            f"overlap the extinction law's range x = {law.x_range} µm⁻¹ (physics.extinction)"
        )

    # _nd band fluxes per star at 10 pc.  nd_untrimmed (QUIRK §4.5): computed on
    # the untrimmed spectrum; default: on the trimmed spectrum, so that _nd
    # equals the A(V) = 0 SED exactly.
    pos_only = beh.band_numerator_positive_only
    if beh.nd_untrimmed:
        nd10 = photometry.band_fluxes(lamb_obs, F10, filters, pos_only)
    F10 = np.ascontiguousarray(F10[:, keep_lam])
    lamb = lamb_obs[keep_lam]
    if not beh.nd_untrimmed:
        nd10 = photometry.band_fluxes(lamb, F10, filters, pos_only)

    dist = distances_pc(phys.distances, phys.distance_unit, beh.distance_arange)
    n_dist = dist.size
    n_rows = n_kept * n_dist
    star_index = np.tile(np.arange(n_kept, dtype=np.int64), n_dist)
    dist_row = np.repeat(dist, n_kept)
    scale = (10.0 / dist_row) ** 2

    cols: dict[str, np.ndarray] = {}
    cols["distance"] = dist_row
    cols["radius"] = np.tile(radius, n_dist)
    # specgrid_indx: BEAST copies the per-star index into every distance block
    # (QUIRK §4); the default makes it the row of the spectral grid.
    cols["specgrid_indx"] = (
        star_index.astype(np.float64) if beh.specgrid_indx_per_star else np.arange(n_rows, dtype=np.float64)
    )
    iso_cols = [c for c in ISOCHRONE_COLUMNS if c in iso]
    for c in iso_cols:
        cols[c] = np.tile(iso[c][kept], n_dist)
    if osl is not None:
        cols["osl"] = np.tile(osl, n_dist)
    nd_rows = nd10[star_index] * scale[:, None]
    for b, f in enumerate(filters):
        cols[nd_column(f)] = photometry.log_flux(nd_rows[:, b])
    del nd_rows

    gw, pw = compute_stellar_weights(cols["logA"], cols["M_ini"], cols["Z"], cols["distance"], phys.priors, beh)
    cols["grid_weight"] = np.asarray(gw, dtype=np.float64)
    cols["prior_weight"] = np.asarray(pw, dtype=np.float64)
    cols["weight"] = cols["grid_weight"] * cols["prior_weight"]

    order = (
        ["distance", "radius", "weight", "prior_weight", "grid_weight", "specgrid_indx"]
        + iso_cols
        + (["osl"] if osl is not None else [])
        + [nd_column(f) for f in filters]
    )

    meta = {
        "n_isochrone_points": n_iso,
        "n_library_kept": n_kept,
        "n_library_dropped": n_iso - n_kept,
        "distances_pc": dist.tolist(),
        "velocity_kms": float(phys.velocity),
        "redshift_factor": redshift_factor(phys.velocity),
        "extinction_x_range": [float(x) for x in law.x_range],
        "n_wavelengths": int(lamb.size),
        "n_wavelengths_untrimmed": int(lamb_obs.size),
        "isochrones": phys.isochrones.source,
        "library_is_analytic": bool(lib.is_analytic),
    }
    return SpectralGrid(
        lamb=lamb,
        star_spectra=F10,
        star_index=star_index,
        scale=scale,
        columns=cols,
        column_order=order,
        filters=filters,
        distances=dist,
        library_label=str(lib.label),
        library_is_analytic=bool(lib.is_analytic),
        n_isochrone_points=n_iso,
        n_kept=n_kept,
        has_osl=osl is not None,
        input_hashes=input_hashes(settings),
        meta=meta,
    )


# ------------------------------------------------------------------ artifact

SPEC_FORMAT = "beastflow-spec-grid"
SPEC_FORMAT_VERSION = 1


def write_spectral_grid(url: str, sg: SpectralGrid, provenance: dict[str, Any]) -> str:
    """Write the spectral grid with priors (layout in docs/formats.md), atomically."""
    with storage.local_copy_for_write(url, suffix=".hd5") as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("lamb", data=sg.lamb)
            rows = max(1, min(sg.n_stars, (4 << 20) // max(1, 8 * sg.lamb.size)))
            # shuffle + gzip like every other artifact: a quarter of the bytes, lossless
            h5.create_dataset("spectra", data=sg.star_spectra, chunks=(rows, sg.lamb.size), **COMPRESSION)
            h5.create_dataset("star_index", data=sg.star_index)
            h5.create_dataset("scale", data=sg.scale)
            g = h5.create_group("grid")
            for c in sg.column_order:
                g.create_dataset(c, data=sg.columns[c])
            h5.attrs["format"] = SPEC_FORMAT
            h5.attrs["format_version"] = SPEC_FORMAT_VERSION
            h5.attrs["filters"] = json.dumps(sg.filters)
            h5.attrs["columns"] = json.dumps(sg.column_order)
            h5.attrs["stellar_library"] = sg.library_label
            h5.attrs["provenance"] = json.dumps(provenance, sort_keys=True, default=str)
            h5.attrs["meta"] = json.dumps(sg.meta, sort_keys=True, default=str)
            h5.attrs["n_rows"] = sg.n_rows
    return url


def read_spectral_grid(url: str) -> SpectralGrid:
    """Read a spectral grid with priors written by ``write_spectral_grid``."""
    with open_h5(url) as h5:
        fmt = decode_attr(h5.attrs.get("format", ""))
        if fmt != SPEC_FORMAT:
            raise ValueError(f"{url}: not a beastflow spectral grid (format {fmt!r}, expected {SPEC_FORMAT!r})")
        # decode_attr turns the JSON attributes back into lists / dicts
        order = decode_attr(h5.attrs["columns"])
        filters = decode_attr(h5.attrs["filters"])
        meta = decode_attr(h5.attrs["meta"])
        prov = decode_attr(h5.attrs["provenance"])
        cols = {c: np.asarray(h5[f"grid/{c}"][...]) for c in order}
        sg = SpectralGrid(
            lamb=np.asarray(h5["lamb"][...]),
            star_spectra=np.asarray(h5["spectra"][...]),
            star_index=np.asarray(h5["star_index"][...]),
            scale=np.asarray(h5["scale"][...]),
            columns=cols,
            column_order=list(order),
            filters=list(filters),
            distances=np.asarray(meta["distances_pc"], dtype=np.float64),
            library_label=str(decode_attr(h5.attrs["stellar_library"])),
            library_is_analytic=bool(meta.get("library_is_analytic", False)),
            n_isochrone_points=int(meta["n_isochrone_points"]),
            n_kept=int(meta["n_library_kept"]),
            has_osl="osl" in cols,
            input_hashes=dict(prov.get("input_hashes", {})),
            meta=meta,
        )
    return sg


def spectral_grid_provenance(url: str) -> dict[str, Any]:
    """Provenance record of a spectral-grid artifact ({} when missing or unreadable)."""
    try:
        with open_h5(url) as h5:
            if decode_attr(h5.attrs.get("format", "")) != SPEC_FORMAT:
                return {}
            prov = decode_attr(h5.attrs.get("provenance", "{}"))
    except (OSError, KeyError):
        return {}
    return dict(prov) if isinstance(prov, dict) else {}
