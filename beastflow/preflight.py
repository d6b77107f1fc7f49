"""Check every input a run needs before its first stage starts.

The physics model of a survey grid takes hours; a run must not spend them and
then fail on a catalog that was never there.  ``check_run_inputs`` looks at
every file the settings name (photometry catalog with the bands, AST results,
isochrone table, stellar-library files, reference images, absolute-flux
covariance) and reports every problem at once in one line, each naming the
setting and the file.  Only headers / schemas are read, not the tables.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from beastflow import storage
from beastflow.filters import short_names


class InputsError(ValueError):
    """Inputs of a run that are missing or unusable; the message names setting and file."""


def table_columns(url: str) -> list[str]:
    """Column names of a catalog file (schema / header only), upper-cased as the readers do."""
    low = url.lower()
    ext = posixpath.splitext(low.removesuffix(".gz"))[1]
    if ext in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        with storage.open_url(url, "rb") as fh:
            names = pq.read_schema(fh).names
    elif ext in (".fits", ".fit", ".fts"):
        import warnings

        from astropy.io import fits

        with warnings.catch_warnings(), storage.local_copy_for_read(url) as local:
            warnings.simplefilter("ignore")
            with fits.open(local, memmap=True) as hdul:
                tabs = [h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
                if not tabs:
                    raise ValueError("no table extension in this FITS file")
                names = list(tabs[0].columns.names)
    elif ext in (".csv", ".txt", ".ecsv"):
        with storage.open_url(url, "rb") as fh:
            header = next(
                (
                    ln
                    for ln in fh.read(1 << 20).decode(errors="replace").splitlines()
                    if ln.strip() and not ln.startswith("#")
                ),
                "",
            )
        names = [c.strip() for c in header.split(",")]
    elif ext in (".hd5", ".h5", ".hdf5", ".hdf"):
        from beastflow.observations.catalogs import read_table

        names = read_table(url).columns  # astropy HDF5 tables: no cheaper way to the columns
    else:
        raise ValueError(f"unknown catalog format {ext!r} (use FITS, HDF5, Parquet or CSV)")
    from beastflow.observations.catalogs import _COORD_ALIASES, KEEP_NAMES

    return [c if c in KEEP_NAMES else _COORD_ALIASES.get(c.upper(), c.upper()) for c in names]


def _photometry_problems(url: str, filters: Sequence[str]) -> list[str]:
    cols = set(table_columns(url))
    need = [f"{b}_{s}" for b in short_names(filters) for s in ("RATE", "VEGA", "FLAG")]
    if not ({"RA", "DEC"} <= cols or {"X", "Y"} <= cols):
        need = ["RA", "DEC"] + need
    missing = [c for c in need if c not in cols]
    return [f"lacks column(s) {missing} for physics.filters"] if missing else []


def _ast_problems(url: str, filters: Sequence[str]) -> list[str]:
    cols = set(table_columns(url))
    bands = short_names(filters)
    missing = [f"{b}_IN" for b in bands if f"{b}_IN" not in cols]
    missing += [f"{b}_RATE" for b in bands if f"{b}_RATE" not in cols and f"{b}_VEGA" not in cols]
    return [f"lacks column(s) {missing} for physics.filters"] if missing else []


def check_run_inputs(settings, catalog: str | None = None, asts: str | None = None) -> None:
    """Raise ``InputsError`` listing every missing or unusable input of a pipeline run."""
    filters = settings.physics.filters
    problems: list[str] = []

    def check_file(key: str, url: str | None, content=None) -> None:
        if not url:
            return
        try:
            if not storage.exists(url):
                problems.append(f"{key} = {url}: file not found")
                return
            for p in content(url, filters) if content else []:
                problems.append(f"{key} = {url}: {p}")
        except Exception as exc:  # noqa: BLE001 - any failure to read it is the user's to fix
            why = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            problems.append(f"{key} = {url}: cannot be read ({why})")

    catalog = catalog or settings.observations.catalog
    if not catalog:
        problems.append("observations.catalog: no photometry catalog set (nothing to fit)")
    check_file("observations.catalog", catalog, _photometry_problems)
    # no AST results is allowed: the run stops after writing the AST inputs (exit code 3)
    check_file("observations.ast_results", asts or settings.observations.ast_results, _ast_problems)
    ph = settings.physics
    if ph.isochrones.source == "table":
        check_file("physics.isochrones.table", ph.isochrones.table)
    for lib, url in sorted(ph.stellar_library.files.items()):
        check_file(f"physics.stellar_library.files.{lib}", url)
    sd = settings.observations.source_density
    check_file("observations.source_density.reference_image", sd.reference_image)
    check_file("asts.existing_file", settings.asts.existing_file)
    check_file("asts.reference_image", settings.asts.reference_image)
    check_file("noise_model.absflux_covariance", settings.noise_model.absflux_covariance)
    if problems:
        raise InputsError("inputs of this run are missing or unusable (nothing was computed): " + "; ".join(problems))
