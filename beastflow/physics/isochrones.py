"""Stellar evolution table (spec §1.1): isochrones at the requested ages and metallicities.

Three sources, chosen by ``physics.isochrones.source``:

``parsec`` / ``mist``
    Read offline from the grids shipped with the ``lachesis-grids`` package
    (``parsec_v1.25.h5``, solar Z = 0.0152; ``mist_v2.5_vvcrit0.4.h5``, solar
    Z = 0.0142).  Those files hold the isochrones of a regular ([Fe/H], log age)
    lattice (0.05 dex in age) indexed by equivalent evolutionary point (EEP).
    BEAST asked the CMD / MIST web services instead; they cannot be reached
    from build machines, and the web path is deliberately not built.

``table``
    A user table (CSV, ECSV, FITS or Parquet, any fsspec URL) with BEAST's
    evolution-table columns; it is used as given (no age/Z selection and no
    resampling: it *is* the evolution table, like BEAST's ``P_et.csv``).

Returned columns (all float64): ``logA``, ``M_ini``, ``M_act``, ``logL``,
``logT``, ``logg``, ``Z``, ``stage``, ``mbolmag``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numba as nb
import numpy as np

from beastflow import storage

log = logging.getLogger(__name__)

#: columns every evolution table must provide (spec §1.1)
REQUIRED_COLUMNS = ("logA", "M_ini", "M_act", "logL", "logT", "logg", "Z")
#: output column order
COLUMNS = ("logA", "M_ini", "M_act", "logL", "logT", "logg", "Z", "stage", "mbolmag")

#: bolometric magnitude of the Sun used when a table has no ``mbolmag``
#: (IAU 2015 B2: M_bol,sun = 4.74 for L_sun = 3.828e26 W)
MBOL_SUN = 4.74


@dataclass(frozen=True)
class _GridSet:
    filename: str
    zsun: float
    #: label of the pre-main-sequence phase in the set's ``phase`` column
    pms_stage: float
    #: BEAST's verification limits on log age (spec §0)
    logt_min: float
    logt_max: float
    #: BEAST clamps requested ages to [max(lo_clamp, min), min(10.13, max)] (spec §1.1)
    lo_clamp: float


GRID_SETS = {
    # PadovaWeb clamps the lower age to 6.0; BEAST refuses logt max > 10.15.
    # PARSEC's phase: 0 = pre-MS, 1 = MS, ... (fractional along each phase;
    # the integer part is the CMD service's label).
    "parsec": _GridSet("parsec_v1.25.h5", 0.0152, 0.0, -math.inf, 10.15, 6.0),
    # MIST: phase -1 = pre-MS, 0 = MS, 2 = RGB, 3 = CHeB, 4 = EAGB, 5 = TPAGB,
    # 6 = post-AGB, 9 = WR.
    "mist": _GridSet("mist_v2.5_vvcrit0.4.h5", 0.0142, -1.0, 5.0, 10.3, 5.0),
}

# Source columns of the lachesis grids used here.
_SRC = ("initial_mass", "star_mass", "log_Teff", "log_g", "log_L", "phase", "Mbol")


def requested_ages(logt: list[float], lo_clamp: float) -> np.ndarray:
    """BEAST's age list: logt[0]..logt[1] in steps logt[2], clamped (spec §1.1).

    The CMD service includes the upper end when it falls on the step lattice,
    so the list is ``lo + k*step`` for k = 0..floor((hi-lo)/step + 1e-9),
    rounded to 1e-10 dex to remove floating-point dust (``6.0 + 3*0.1``).
    """
    lo = max(lo_clamp, logt[0])
    hi = min(10.13, logt[1] if len(logt) > 1 else logt[0])
    if len(logt) == 1:
        return np.array([min(max(logt[0], lo_clamp), 10.13)])
    if hi < lo:
        raise ValueError(f"physics.isochrones.logt = {logt}: nothing left after clamping to [{lo_clamp}, 10.13]")
    step = logt[2]
    n = int(math.floor((hi - lo) / step + 1e-9)) + 1
    return np.round(lo + step * np.arange(n), 10)


# --------------------------------------------------------------------------- grids


class _LachesisGrid:
    """Lazy reader of one lachesis-grids HDF5 file (sparse_v1 storage).

    Layout (checked on open): ``values`` (N, ncol) float32 rows, grouped in
    blocks, one per ([Fe/H], age) pair in [Fe/H]-major order; block b has
    ``lengths[b]`` rows with EEPs ``offsets[b] .. offsets[b] + lengths[b] - 1``
    (all-NaN rows mark EEPs missing inside a block); the column names are the
    file attribute ``columns``.
    """

    def __init__(self, name: str):
        import h5py
        import lachesis_grids

        self.path = str(lachesis_grids.grid_path(GRID_SETS[name].filename))
        self.name = name
        with h5py.File(self.path, "r") as f:
            cols = [c.decode() if isinstance(c, bytes) else str(c) for c in f.attrs["columns"]]
            missing = [c for c in _SRC + ("age",) if c not in cols]
            if missing:
                raise ValueError(f"{self.path}: isochrone grid lacks columns {missing}")
            self.col = {c: i for i, c in enumerate(cols)}
            self.ages = f["age_values"][:].astype(np.float64)
            self.fehs = f["feh_values"][:].astype(np.float64)
            self.lengths = f["lengths"][:].astype(np.int64)
            self.offsets = f["offsets"][:].astype(np.int64)
        if self.lengths.size != self.ages.size * self.fehs.size:
            raise ValueError(f"{self.path}: {self.lengths.size} blocks, expected n_feh x n_age")
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)])

    def block(self, ifeh: int, iage: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """EEPs and float64 source columns of one isochrone, NaN rows removed."""
        import h5py

        b = ifeh * self.ages.size + iage
        n = int(self.lengths[b])
        if n == 0:
            return np.zeros(0), {c: np.zeros(0) for c in _SRC}
        with h5py.File(self.path, "r") as f:
            rows = f["values"][self.starts[b] : self.starts[b] + n].astype(np.float64)
        age = rows[:, self.col["age"]]
        good = np.all(np.isfinite(rows[:, [self.col[c] for c in _SRC if c != "Mbol"]]), axis=1)
        # guard the layout assumption: every row of the block carries its age
        if good.any() and np.max(np.abs(age[good] - self.ages[iage])) > 1e-4:
            raise ValueError(f"{self.path}: block ({ifeh}, {iage}) does not hold age {self.ages[iage]}")
        eep = self.offsets[b] + np.arange(n, dtype=np.float64)
        return eep[good], {c: rows[good, self.col[c]] for c in _SRC}


@lru_cache(maxsize=2)
def _grid(name: str) -> _LachesisGrid:
    return _LachesisGrid(name)


def _bracket(x: float, nodes: np.ndarray, tol: float) -> list[tuple[int, float]]:
    """Neighbour indices and linear weights of x on sorted nodes (one node if x is on it)."""
    j = int(np.argmin(np.abs(nodes - x)))
    if abs(nodes[j] - x) <= tol:
        return [(j, 1.0)]
    k = int(np.searchsorted(nodes, x)) - 1
    if k < 0 or k + 1 >= nodes.size:
        raise ValueError(f"{x} outside [{nodes[0]}, {nodes[-1]}]")
    f = (x - nodes[k]) / (nodes[k + 1] - nodes[k])
    return [(k, 1.0 - f), (k + 1, f)]


def interpolate_isochrone(grid: _LachesisGrid, logA: float, feh: float) -> dict[str, np.ndarray]:
    """One isochrone at (logA, [Fe/H]) by linear interpolation at constant EEP.

    The up-to-four lattice isochrones around (logA, [Fe/H]) are combined with
    bilinear weights, point by point at equal EEP, over the EEPs present in
    all of them (EEPs missing in one corner are dropped: the phase does not
    exist there).  Interpolated quantities: log10 M_ini, log10 M_act, logT,
    logg, logL, Mbol; the phase label is that of the corner with the largest
    weight (labels are not interpolable).  A coordinate within 1e-6 of a
    lattice value uses that lattice isochrone alone.
    """
    corners = [
        (ia, jf, wa * wf) for ia, wa in _bracket(logA, grid.ages, 1e-6) for jf, wf in _bracket(feh, grid.fehs, 1e-6)
    ]
    corners = [c for c in corners if c[2] > 0]
    blocks = [(grid.block(jf, ia), w) for ia, jf, w in corners]
    common = blocks[0][0][0]
    for (eep, _), _w in blocks[1:]:
        common = np.intersect1d(common, eep)
    out = {k: np.zeros(common.size) for k in ("logM_ini", "logM_act", "logT", "logg", "logL", "mbol")}
    phase = None
    wmax = -1.0
    for (eep, cols), w in blocks:
        sel = np.searchsorted(eep, common)
        out["logM_ini"] += w * np.log10(cols["initial_mass"][sel])
        out["logM_act"] += w * np.log10(cols["star_mass"][sel])
        out["logT"] += w * cols["log_Teff"][sel]
        out["logg"] += w * cols["log_g"][sel]
        out["logL"] += w * cols["log_L"][sel]
        mb = cols["Mbol"][sel]
        # a missing Mbol is replaced by its definition from logL
        out["mbol"] += w * np.where(np.isfinite(mb), mb, MBOL_SUN - 2.5 * cols["log_L"][sel])
        if w > wmax:
            wmax = w
            phase = np.floor(cols["phase"][sel])
    out["stage"] = phase if phase is not None else np.zeros(0)
    out["eep"] = common
    return out


def resample_in_mass(iso: dict[str, np.ndarray], step: float, max_dlog: float) -> dict[str, np.ndarray]:
    """Resample one isochrone (ordered by EEP) on a uniform log10(M_ini) lattice.

    Positions kept along the EEP axis (then every quantity is interpolated
    linearly between the two bracketing EEP points; the stage is that of the
    nearer point):

    * the lattice log10 M = k*step for every integer k inside the isochrone's
      mass range (anchored at 0 so that 1 M_sun is always a node), plus the
      first and last point of the isochrone;
    * the last point of each evolutionary phase (before a stage change);
    * with ``max_dlog > 0``, original points wherever logT or logL moved by more
      than ``max_dlog`` dex since the last kept point: post-main-sequence
      phases span a tiny range of initial mass, so a pure mass lattice would
      represent the giant branches by one or two points.
    """
    logm = iso["logM_ini"]
    n = logm.size
    if n == 0:
        return {k: v[:0] for k, v in iso.items()}
    if n == 1:
        return dict(iso)
    # initial mass grows along an isochrone; a running maximum protects the
    # search against float32 plateaus / dust in the source files
    cm = np.maximum.accumulate(logm)
    lattice = step * np.arange(math.ceil(cm[0] / step - 1e-9), math.floor(cm[-1] / step + 1e-9) + 1)
    j = np.searchsorted(cm, lattice, side="left")
    j = np.clip(j, 1, n - 1)
    den = cm[j] - cm[j - 1]
    frac = np.where(den > 0, (lattice - cm[j - 1]) / np.where(den > 0, den, 1.0), 1.0)
    pos = [(j - 1) + np.clip(frac, 0.0, 1.0), np.array([0.0, n - 1.0])]
    stage = iso["stage"]
    phase_end = np.nonzero(stage[1:] != stage[:-1])[0]
    pos.append(phase_end.astype(np.float64))
    if max_dlog > 0:
        extra = _resolve_points(iso["logT"], iso["logL"], np.unique(np.concatenate(pos)), max_dlog)
        pos.append(extra.astype(np.float64))
    p = np.unique(np.concatenate(pos))
    lo = np.clip(np.floor(p).astype(np.int64), 0, n - 2)
    f = p - lo
    out = {}
    for k, v in iso.items():
        if k == "stage":
            out[k] = np.where(f <= 0.5, v[lo], v[lo + 1])
        else:
            out[k] = (1.0 - f) * v[lo] + f * v[lo + 1]
    return out


@nb.njit(cache=True)
def _resolve_points(logT, logL, mandatory, max_dlog):
    """Original point indices to add so logT/logL never drift by > max_dlog.

    Walks the points in EEP order; every mandatory position (sorted, in units
    of point index) resets the reference to its interpolated values; an
    original point that moved more than ``max_dlog`` from the reference is
    kept and becomes the new reference.
    """
    n = logT.size
    out = np.empty(n, dtype=np.int64)
    m = 0
    ptr = 0
    refT = logT[0]
    refL = logL[0]
    for i in range(n):
        while ptr < mandatory.size and mandatory[ptr] <= i:
            q = mandatory[ptr]
            lo = min(int(np.floor(q)), n - 2)
            f = q - lo
            refT = (1.0 - f) * logT[lo] + f * logT[lo + 1]
            refL = (1.0 - f) * logL[lo] + f * logL[lo + 1]
            ptr += 1
        if abs(logT[i] - refT) > max_dlog or abs(logL[i] - refL) > max_dlog:
            out[m] = i
            m += 1
            refT = logT[i]
            refL = logL[i]
    return out[:m]


def _check_request(iso, gs: _GridSet, grid: _LachesisGrid) -> tuple[np.ndarray, np.ndarray]:
    src = iso.source
    hi = iso.logt[1] if len(iso.logt) > 1 else iso.logt[0]
    if hi > gs.logt_max or iso.logt[0] < gs.logt_min:
        raise ValueError(
            f"physics.isochrones.logt = {iso.logt}: {src} isochrones allow log ages in [{gs.logt_min}, {gs.logt_max}]"
        )
    ages = requested_ages(list(iso.logt), gs.lo_clamp)
    if ages.min() < grid.ages[0] - 1e-9 or ages.max() > grid.ages[-1] + 1e-9:
        raise ValueError(
            f"physics.isochrones.logt = {iso.logt}: the {src} grid covers log ages {grid.ages[0]}–{grid.ages[-1]}"
        )
    z = np.asarray(iso.z, dtype=np.float64)
    feh = np.log10(z / gs.zsun)
    zlo, zhi = gs.zsun * 10 ** grid.fehs[0], gs.zsun * 10 ** grid.fehs[-1]
    bad = z[(feh < grid.fehs[0] - 1e-9) | (feh > grid.fehs[-1] + 1e-9)]
    if bad.size:
        raise ValueError(
            f"physics.isochrones.z: {bad.tolist()} outside the {src} grid's coverage "
            f"Z = {zlo:.4g}–{zhi:.4g} ([Fe/H] {grid.fehs[0]}–{grid.fehs[-1]}, Z_sun = {gs.zsun})"
        )
    return ages, feh


def _load_grid_isochrones(iso) -> dict[str, np.ndarray]:
    gs = GRID_SETS[iso.source]
    grid = _grid(iso.source)
    ages, fehs = _check_request(iso, gs, grid)
    max_dlog = float(getattr(iso, "max_dlog", 0.0))
    parts: list[dict[str, np.ndarray]] = []
    for z, feh in zip(iso.z, fehs):  # stacked in the order of the z list (spec §1.1)
        feh = float(np.clip(feh, grid.fehs[0], grid.fehs[-1]))
        for a in ages:
            one = interpolate_isochrone(grid, float(a), feh)
            if one["eep"].size == 0:
                log.warning("%s: no isochrone points at logA=%.3f, Z=%g", iso.source, a, z)
                continue
            one = resample_in_mass(one, iso.logmass_step, max_dlog)
            n = one["eep"].size
            parts.append(
                {
                    "logA": np.full(n, float(a)),
                    "M_ini": 10 ** one["logM_ini"],
                    "M_act": 10 ** one["logM_act"],
                    "logL": one["logL"],
                    "logT": one["logT"],
                    "logg": one["logg"],
                    "Z": np.full(n, float(z)),
                    "stage": one["stage"].astype(np.float64),
                    "mbolmag": one["mbol"],
                }
            )
    if not parts:
        raise ValueError(f"physics.isochrones: no {iso.source} isochrone points for logt={iso.logt}, z={iso.z}")
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


# --------------------------------------------------------------------------- table


def read_table(url: str) -> dict[str, np.ndarray]:
    """Read an evolution table (CSV, ECSV, FITS, Parquet) as float64 columns."""
    low = url.lower()
    with storage.local_copy_for_read(url) as path:
        if low.endswith((".parquet", ".pq")):
            import polars as pl

            df = pl.read_parquet(path)
            cols = {c: df[c].to_numpy() for c in df.columns}
        else:
            from astropy.table import Table

            if low.endswith(".ecsv"):
                t = Table.read(path, format="ascii.ecsv")
            elif low.endswith((".csv", ".csv.gz")):
                # BEAST's own evolution tables start with '#' comment lines
                t = Table.read(path, format="ascii.csv", comment="#")
            elif low.endswith((".fits", ".fit", ".fits.gz")):
                t = Table.read(path, format="fits")
            else:
                raise ValueError(f"{url}: unknown evolution-table format (use .csv, .ecsv, .fits or .parquet)")
            cols = {c: np.asarray(t[c]) for c in t.colnames}
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise ValueError(f"{url}: evolution table lacks column(s) {missing} (needs {list(REQUIRED_COLUMNS)})")
    out = {}
    for c in REQUIRED_COLUMNS + ("stage", "mbolmag"):
        if c in cols:
            try:
                out[c] = np.asarray(cols[c], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{url}: column {c!r} is not numeric ({exc})") from None
    if "mbolmag" not in out:
        # not provided: M_bol = 4.74 - 2.5 logL (IAU 2015 zero point)
        out["mbolmag"] = MBOL_SUN - 2.5 * out["logL"]
    if "stage" not in out:
        out["stage"] = np.full(out["logL"].size, np.nan)
    return out


def select_table_rows(tab: dict[str, np.ndarray], iso) -> dict[str, np.ndarray]:
    """Rows of a user table selected by ``logt`` / ``z`` when those are not their defaults.

    Ages: logA within 1e-6 dex of the lattice logt[0] + k·logt[2] ≤ logt[1]
    (or of the single value); metallicities: Z within 1e-4 (relative) of a
    listed z.  A key left at its default selects nothing, so a table is used
    whole unless the settings ask otherwise.
    """
    from beastflow.settings.base import non_default

    chosen = non_default(iso, "logt", "z")
    if not chosen:
        return tab
    keep = np.ones(tab["logA"].size, dtype=bool)
    if "logt" in chosen:
        lt = iso.logt
        if len(lt) == 1:
            ages = np.array([lt[0]])
        else:
            ages = lt[0] + lt[2] * np.arange(int(math.floor((lt[1] - lt[0]) / lt[2] + 1e-9)) + 1)
        keep &= np.abs(tab["logA"][:, None] - ages[None, :]).min(axis=1) <= 1e-6
    if "z" in chosen:
        zs = np.asarray(iso.z, dtype=np.float64)
        keep &= np.isclose(tab["Z"][:, None], zs[None, :], rtol=1e-4, atol=0.0).any(axis=1)
    if not keep.any():
        raise ValueError(
            f"{iso.table}: no row has logA on physics.isochrones.logt = {iso.logt} and Z in "
            f"physics.isochrones.z = {iso.z} (the table has logA {np.unique(tab['logA'])[:8].tolist()}"
            f"..., Z {np.unique(tab['Z'])[:8].tolist()}); set them to the table's values or to "
            "their defaults (whole table)"
        )
    log.info(
        "%s: %d of %d rows selected by physics.isochrones %s",
        iso.table,
        int(keep.sum()),
        keep.size,
        " and ".join(chosen),
    )
    return {c: v[keep] for c, v in tab.items()}


# --------------------------------------------------------------------------- entry


def load_isochrones(iso) -> dict[str, np.ndarray]:
    """The evolution table for ``physics.isochrones`` (see module docstring).

    After reading: rows with logL <= -9 (the -9.999 sentinel) and rows with a
    non-finite logA are dropped (spec §1.1), then, with ``filter_pms``, the
    pre-main-sequence rows with M_ini < 12 (spec: ``filterPMS``).
    """
    if iso.source == "table":
        tab = select_table_rows(read_table(iso.table), iso)
        pms_stage = 0.0
    elif iso.source in GRID_SETS:
        tab = _load_grid_isochrones(iso)
        pms_stage = GRID_SETS[iso.source].pms_stage
    else:  # pragma: no cover - settings validation forbids it
        raise ValueError(f"physics.isochrones.source: unknown source {iso.source!r}")
    keep = (tab["logL"] > -9) & np.isfinite(tab["logA"])
    if iso.filter_pms:
        if np.all(np.isnan(tab["stage"])):
            raise ValueError("physics.isochrones.filter_pms needs a 'stage' column in the evolution table")
        keep &= ~((tab["M_ini"] < 12) & (tab["stage"] == pms_stage))
    return {c: np.ascontiguousarray(tab[c][keep], dtype=np.float64) for c in COLUMNS}
