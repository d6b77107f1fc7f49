"""Catalog I/O: any supported file -> normalised polars DataFrame -> Parquet.

Normalised photometry columns (docs/formats.md "Catalogs"): ``star_id`` (int64,
row number in the original input file, carried through every later stage so
results can be joined back), ``RA``/``DEC`` (deg), optional ``X``/``Y``, and per
band ``{B}_RATE`` (F/F_Vega), ``{B}_VEGA``, ``{B}_FLAG`` plus any other column
upper-cased.  AST tables: ``{B}_IN`` (input Vega mag, NaN = not inserted),
``{B}_RATE`` (recovered F/F_Vega, 0 = not recovered), ``{B}_VEGA``,
``CUT_FLAG`` and ``RA``/``DEC`` when present.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from beastflow import plan, storage
from beastflow.filters import rate_columns, short_names
from beastflow.magnitudes import BAD_MAG

if TYPE_CHECKING:
    from beastflow.settings import Settings

PROVENANCE_KEY = "beastflow_provenance"
EXTRA_KEY = "beastflow_meta"
ID_COL = "star_id"


# columns beastflow adds itself keep their spelling through every later read
KEEP_NAMES = {ID_COL, "SourceDensity", "sd_bin", "sd_tile", "indiv_bg", "bin_median_bg"}

_COORD_ALIASES = {"RA_J2000": "RA", "DEC_J2000": "DEC", "RAJ2000": "RA", "DEJ2000": "DEC"}


class CatalogError(ValueError):
    """A catalog that cannot be used; the message names the file and the column."""


def _native(a: np.ndarray) -> np.ndarray:
    """FITS gives big-endian arrays; polars/arrow need native byte order."""
    a = np.asarray(a)
    if a.dtype.byteorder not in ("=", "|") and a.dtype.byteorder != np.dtype(a.dtype.type).byteorder:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _from_structured(arr: np.ndarray) -> pl.DataFrame:
    cols = {}
    for name in arr.dtype.names or ():
        col = _native(arr[name])
        if col.ndim != 1:
            continue  # vector columns are not part of the catalog schema
        if col.dtype.kind == "S":
            col = col.astype(str)
        cols[name] = col
    return pl.DataFrame(cols)


def _read_fits(url: str) -> pl.DataFrame:
    import warnings

    from astropy.io import fits

    # astropy reports damage as multi-line warnings: recorded here and turned into the
    # one-line error of a damaged file (a truncated table is never read as if complete)
    with warnings.catch_warnings(record=True) as caught, storage.local_copy_for_read(url) as local:
        warnings.simplefilter("always")
        try:
            with fits.open(local, memmap=False) as hdul:
                for hdu in hdul:
                    if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                        data = np.asarray(hdu.data) if hdu.data is not None else np.zeros(0, hdu.columns.dtype)
                        table = _from_structured(data)
                        break
                else:
                    table = None
        except Exception as exc:
            damage = [str(w.message).splitlines()[0] for w in caught if "truncated" in str(w.message)]
            if damage:
                raise CatalogError(f"{url}: truncated FITS file ({damage[0]})") from exc
            raise
    damage = [str(w.message).splitlines()[0] for w in caught if "truncated" in str(w.message)]
    if damage:
        raise CatalogError(f"{url}: truncated FITS file ({damage[0]})")
    if table is None:
        raise CatalogError(f"{url}: no table extension in this FITS file")
    return table


def _read_hdf5(url: str) -> pl.DataFrame:
    import h5py

    with storage.local_copy_for_read(url) as local, h5py.File(local, "r") as h5:
        # astropy writes tables as one compound dataset ("data" by default);
        # take that, else the first compound dataset found.
        found: list[str] = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.names and not name.endswith("__table_column_meta__"):
                found.append(name)

        h5.visititems(visit)
        if not found:
            raise CatalogError(f"{url}: no table (compound dataset) in this HDF5 file")
        name = "data" if "data" in found else found[0]
        return _from_structured(h5[name][...])


def read_table(url: str) -> pl.DataFrame:
    """Read a FITS / HDF5 / Parquet / CSV table as it is (no renaming).

    A file that exists but cannot be parsed (truncated, corrupt, wrong format
    behind the extension) is a ``CatalogError`` naming the file and the cause.
    """
    if not storage.exists(url):
        raise FileNotFoundError(f"{url}: catalog file not found")
    try:
        return _read_table(url)
    except (CatalogError, FileNotFoundError, PermissionError):
        raise
    except Exception as exc:  # noqa: BLE001 - parser errors of astropy/h5py/polars/pyarrow differ per format
        why = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise CatalogError(f"{url}: cannot read the table (truncated or corrupt file?): {why}") from exc


def _read_table(url: str) -> pl.DataFrame:
    low = url.lower()
    base = low[:-3] if low.endswith(".gz") else low
    ext = posixpath.splitext(base)[1]
    if ext in (".fits", ".fit", ".fts"):
        return _read_fits(url)
    if ext in (".hd5", ".h5", ".hdf5", ".hdf"):
        return _read_hdf5(url)
    if ext in (".parquet", ".pq"):
        with storage.open_url(url, "rb") as fh:
            return pl.read_parquet(fh)
    if ext in (".csv", ".txt", ".ecsv"):
        with storage.open_url(url, "rb") as fh:
            return pl.read_csv(fh.read(), comment_prefix="#")
    raise CatalogError(f"{url}: unknown catalog format {ext!r} (use FITS, HDF5, Parquet or CSV)")


def normalise_columns(df: pl.DataFrame, url: str = "catalog") -> pl.DataFrame:
    """Upper-case every column (``f475w_rate`` -> ``F475W_RATE``), map coordinate aliases."""
    mapping: dict[str, str] = {}
    for c in df.columns:
        if c in KEEP_NAMES:
            mapping[c] = c
            continue
        u = c.upper()
        mapping[c] = _COORD_ALIASES.get(u, u)
    seen: dict[str, str] = {}
    for src, dst in mapping.items():
        if dst in seen:
            raise CatalogError(f"{url}: columns {seen[dst]!r} and {src!r} both map to {dst!r}")
        seen[dst] = src
    return df.rename({k: v for k, v in mapping.items() if k != v})


def _missing_error(url: str, kind: str, missing: Sequence[str], have: Sequence[str]) -> CatalogError:
    return CatalogError(
        f"{url}: {kind} catalog lacks required column(s) {list(missing)} "
        f"(after upper-casing; columns present: {sorted(have)[:40]}{' ...' if len(have) > 40 else ''})"
    )


def prepare_photometry(df: pl.DataFrame, filters: Sequence[str], url: str = "catalog") -> pl.DataFrame:
    """Normalise + validate a photometry catalog; add ``star_id`` if absent."""
    df = normalise_columns(df, url)
    bands = short_names(filters)
    need = [f"{b}_{s}" for b in bands for s in ("RATE", "VEGA", "FLAG")]
    has_radec = "RA" in df.columns and "DEC" in df.columns
    has_xy = "X" in df.columns and "Y" in df.columns
    missing = [c for c in need if c not in df.columns]
    if not (has_radec or has_xy):
        missing = ["RA", "DEC"] + missing
    if missing:
        raise _missing_error(url, "photometry", missing, df.columns)
    if df.height == 0:
        raise CatalogError(f"{url}: photometry catalog is empty (0 rows)")
    if ID_COL not in df.columns:
        df = df.with_row_index(ID_COL).with_columns(pl.col(ID_COL).cast(pl.Int64))
    else:
        _require_unique_ids(df, url)
    for c in ("RA", "DEC", "X", "Y"):
        if c in df.columns:
            df = df.with_columns(pl.col(c).cast(pl.Float64))
            if df[c].is_null().any() or not np.isfinite(df[c].to_numpy()).all():
                raise CatalogError(f"{url}: column {c} has missing or non-finite values")
    return df


def _require_unique_ids(df: pl.DataFrame, url: str) -> None:
    """Results are joined back to the input by star_id: two stars with one id would be confused."""
    ids = df[ID_COL]
    if ids.null_count():
        raise CatalogError(f"{url}: column {ID_COL} has {ids.null_count()} missing value(s)")
    dup = ids.filter(ids.is_duplicated()).unique().sort()
    if len(dup):
        shown = ", ".join(str(v) for v in dup.head(10).to_list())
        raise CatalogError(
            f"{url}: column {ID_COL} has {len(dup)} duplicated value(s): {shown}"
            f"{' ...' if len(dup) > 10 else ''} (every star needs its own id)"
        )


def prepare_asts(df: pl.DataFrame, filters: Sequence[str], url: str = "asts") -> pl.DataFrame:
    """Normalise + validate an AST results table.

    Old-style tables with only ``{B}_IN``/``{B}_VEGA`` magnitudes (99.999 = not
    inserted / not recovered) are converted: ``{B}_RATE = 10**(-0.4 VEGA)`` and 0
    where not recovered, ``{B}_IN`` NaN where not inserted.  A missing
    ``CUT_FLAG`` becomes 0 (no quality cut recorded).
    """
    df = normalise_columns(df, url)
    bands = short_names(filters)
    missing = [f"{b}_IN" for b in bands if f"{b}_IN" not in df.columns]
    missing += [f"{b}_RATE" for b in bands if f"{b}_RATE" not in df.columns and f"{b}_VEGA" not in df.columns]
    if missing:
        raise _missing_error(url, "AST", missing, df.columns)
    if df.height == 0:
        raise CatalogError(f"{url}: AST catalog is empty (0 rows)")
    exprs = []
    for b in bands:
        exprs.append(
            pl.when(pl.col(f"{b}_IN").cast(pl.Float64) >= BAD_MAG)
            .then(float("nan"))
            .otherwise(pl.col(f"{b}_IN").cast(pl.Float64))
            .alias(f"{b}_IN")
        )
        if f"{b}_RATE" not in df.columns:
            v = pl.col(f"{b}_VEGA").cast(pl.Float64)
            exprs.append(pl.when(v >= BAD_MAG).then(0.0).otherwise(10.0 ** (-0.4 * v)).alias(f"{b}_RATE"))
    df = df.with_columns(exprs)
    if "CUT_FLAG" not in df.columns:
        df = df.with_columns(pl.lit(0, dtype=pl.Int16).alias("CUT_FLAG"))
    if ID_COL not in df.columns:
        df = df.with_row_index(ID_COL).with_columns(pl.col(ID_COL).cast(pl.Int64))
    return df


def read_photometry(url: str, filters: Sequence[str]) -> pl.DataFrame:
    return prepare_photometry(read_table(url), filters, url)


def read_asts(url: str, filters: Sequence[str]) -> pl.DataFrame:
    return prepare_asts(read_table(url), filters, url)


def physical_fluxes(df: pl.DataFrame, filters: Sequence[str], vega: np.ndarray, where: str) -> np.ndarray:
    """``{B}_RATE`` x Vega band flux, [stars, bands] in erg s^-1 cm^-2 A^-1 (NaN where null)."""
    cols = rate_columns(filters)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"{where}: catalog lacks flux columns {missing} for grid filters {list(filters)}")
    rates = (
        np.column_stack([df[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in cols])
        if len(df)
        else np.empty((0, len(cols)))
    )
    return rates * np.asarray(vega, dtype=np.float64)[None, :]


# --------------------------------------------------------------------------
# bad measurements: the one rule, per band (docs/formats.md "Bad measurements")
# --------------------------------------------------------------------------
#: |F/F_Vega| above this (Vega mag < -20) is no stellar measurement: nothing but the
#: Sun is that bright, so such a value is a unit error or a sentinel (1e30, 1e300)
ABSURD_RATE = 1e8


def screen_fluxes(
    fluxes: np.ndarray,
    vega: np.ndarray,
    bands: Sequence[str],
    sigma: np.ndarray | None = None,
    k_sigma: float = 5.0,
    as_measured: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Physical fluxes [stars, bands] with every bad measurement set to NaN, and a flag per star.

    A band of a star is dropped (NaN: not used by the fit) when its flux is
    ``nonfinite`` (NaN, inf, null), ``zero`` (RATE = 0 means "no measurement"),
    ``absurd`` (|RATE| > ABSURD_RATE) or ``negative`` beyond ``k_sigma`` x
    ``sigma`` (the noise model's largest error in that band, physical units):
    no model is that far above it.  With ``as_measured`` (``FitBehaviour.bad_fluxes_as_measured``)
    zero and negative fluxes are
    fitted as measurements (BEAST 2.1 does); non-finite and absurd ones are
    dropped in both modes, as they would only turn the likelihood into NaN/inf.
    The flag lists what was dropped, ``"F475W:zero;F814W:absurd"``, or "".
    """
    y = np.array(fluxes, dtype=np.float64, copy=True)
    vega = np.asarray(vega, dtype=np.float64)
    reasons: list[tuple[str, np.ndarray]] = []
    finite = np.isfinite(y)
    reasons.append(("nonfinite", ~finite))
    with np.errstate(invalid="ignore", over="ignore"):
        rate = np.where(finite, y, 0.0) / vega[None, :]
        reasons.append(("absurd", finite & (np.abs(rate) > ABSURD_RATE)))
        if not as_measured:
            reasons.append(("zero", finite & (y == 0.0)))
            if sigma is not None:
                limit = -k_sigma * np.asarray(sigma, dtype=np.float64)[None, :]
                reasons.append(("negative", finite & (y < 0.0) & (y < limit)))
    dropped = np.zeros(y.shape, dtype=bool)
    why = np.full(y.shape, "", dtype=object)
    for name, mask in reasons:
        new = mask & ~dropped
        why[new] = name
        dropped |= new
    y[dropped] = np.nan
    flags = [""] * y.shape[0]
    for i in np.flatnonzero(dropped.any(axis=1)):
        flags[i] = ";".join(f"{bands[int(j)]}:{why[i, j]}" for j in np.flatnonzero(dropped[i]))
    return y, flags


def has_positions(df: pl.DataFrame) -> bool:
    return "RA" in df.columns and "DEC" in df.columns


def column_float(value: object, where: str) -> float:
    """A column aggregate (polars ``min``, ``max``, ``mean``) as a float.

    polars gives None for a column without a non-null value; that becomes an
    error naming ``where`` (file and column) rather than a TypeError later.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if value is None:
        raise CatalogError(f"{where}: every value is null; expected numbers")
    raise CatalogError(f"{where}: expected numbers, got {value!r}")


def to_arrow(
    df: pl.DataFrame, provenance: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None
) -> pa.Table:
    tab = df.to_arrow()
    md = dict(tab.schema.metadata or {})
    if provenance is not None:
        md[PROVENANCE_KEY.encode()] = json.dumps(provenance, sort_keys=True, default=str).encode()
    if meta is not None:
        md[EXTRA_KEY.encode()] = json.dumps(meta, sort_keys=True, default=str).encode()
    return tab.replace_schema_metadata(md)


def write_parquet(
    df: pl.DataFrame, url: str, provenance: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None
) -> str:
    """Atomic Parquet write with the provenance JSON in the file metadata."""
    tab = to_arrow(df, storage.portable(provenance), storage.portable(meta))
    buf = io.BytesIO()
    # lz4: the fastest codec pyarrow has (2.5x zstd's speed for ~15 % more bytes)
    pq.write_table(tab, buf, compression="lz4")
    storage.write_bytes(url, buf.getvalue())
    return url


def read_parquet(url: str) -> pl.DataFrame:
    if not storage.exists(url):
        raise FileNotFoundError(f"{url}: file not found")
    with storage.open_url(url, "rb") as fh:
        return pl.read_parquet(fh)


def read_parquet_metadata(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(provenance, meta) stored in a beastflow Parquet file."""
    with storage.open_url(url, "rb") as fh:
        md = pq.read_schema(fh).metadata or {}
    prov = json.loads(md[PROVENANCE_KEY.encode()]) if PROVENANCE_KEY.encode() in md else {}
    meta = json.loads(md[EXTRA_KEY.encode()]) if EXTRA_KEY.encode() in md else {}
    return prov, meta


def run_ingest(settings: Settings, url: str, kind: str = "photometry") -> str:
    """Store a catalog as normalised Parquet: ``P_catalog.parquet`` or ``P_asts.parquet``.

    The stages read raw files themselves; this is for keeping a validated,
    fast-to-read copy (e.g. a 10^7-row FITS catalog read once).
    """
    from beastflow.provenance import make_provenance

    if kind not in ("photometry", "asts"):
        raise ValueError(f"kind must be 'photometry' or 'asts', got {kind!r}")
    reader = read_photometry if kind == "photometry" else read_asts
    df = reader(url, settings.physics.filters)
    out = plan.Names.of(settings).ingested(kind)
    prov = make_provenance("ingest", settings.section_hash("physics"), inputs={kind: url})
    return write_parquet(df, out, prov, {"kind": kind, "source": url})
