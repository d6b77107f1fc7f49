"""Export the merged stats table to FITS or ECSV, with units and provenance.

``export_stats(output_url, "fits")`` writes ``OUTPUT/P_stats.fits``: one
binary-table extension whose columns carry the units of the Parquet field
metadata (``beastflow.fit.columns``).  Plain units go to ``TUNITn``; the log
quantities (``dex(yr)``, ``dex(K)``, ...) have no FITS spelling, so astropy's
serialized-column block (header COMMENT cards) carries them and
``astropy.table.Table.read`` restores every unit.  ``TCOMMn`` holds each
column's description for other FITS readers.  The header records where the
table came from: ``ORIGIN``, ``PROJECT``, ``STAGE``, ``SETHASH``, ``COMPAT``
and the whole provenance record as JSON in the long-string card ``BFPROV``
(read it back with ``provenance_from_header``).

ECSV keeps the same units and descriptions and the provenance record as
nested table metadata.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

from beastflow import plan, storage

FORMATS = ("fits", "ecsv")


def stats_table(stats_url: str):
    """The stats file as an astropy QTable with units, descriptions and provenance in ``meta``."""
    import astropy.units as u
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq
    from astropy.table import QTable

    from beastflow.fit.outputs import read_stats

    df, info = read_stats(stats_url)
    with storage.open_url(stats_url, "rb") as fh:
        schema = pq.read_schema(fh)
    fmeta = {f.name: (f.metadata or {}) for f in schema}
    t = QTable()
    for c in df.columns:
        col = df[c]
        if col.dtype.is_numeric():
            values = col.to_numpy()
        else:  # names, tags: fixed-width strings for FITS
            values = np.asarray(col.cast(pl.String).fill_null("").to_list(), dtype=str)
        md = fmeta.get(c, {})
        unit = md.get(b"unit", b"").decode()
        t[c] = values * u.Unit(unit) if unit else values
        if b"description" in md:
            t[c].info.description = md[b"description"].decode()
    t.meta["provenance"] = info.get("provenance", {})
    t.meta["fit"] = info.get("meta", {})
    return t


def provenance_from_header(header) -> dict[str, Any]:
    """The provenance record stored by ``export_stats`` in a FITS header."""
    raw = header.get("BFPROV")
    if raw is None:
        raise KeyError("FITS header has no BFPROV card (not written by beastflow export)")
    return json.loads(raw)


def _fits_bytes(t, project: str) -> bytes:
    from astropy.io import fits

    from beastflow.provenance import software_versions

    prov = t.meta.pop("provenance", {})
    fit_meta = t.meta.pop("fit", {})
    descriptions = {c: t[c].info.description for c in t.colnames}
    raw = io.BytesIO()
    with warnings.catch_warnings():
        # the log units cannot be TUNIT cards; astropy says so and keeps them in its serialized block
        warnings.filterwarnings("ignore", message=".*could not be saved in native FITS format.*")
        t.write(raw, format="fits")
    raw.seek(0)
    with fits.open(raw) as hdus:
        hdu = fits.BinTableHDU(data=hdus[1].data.copy(), header=hdus[1].header.copy())
    h = hdu.header
    h["EXTNAME"] = "STATS"
    for i, c in enumerate(t.colnames, start=1):
        if descriptions[c]:
            h[f"TCOMM{i}"] = descriptions[c][:68]
    h["ORIGIN"] = (f"beastflow {software_versions().get('beastflow', '?')}", "software that wrote the table")
    h["PROJECT"] = (project, "beastflow project name")
    h["STAGE"] = (str(prov.get("stage", "")), "pipeline stage that made the stats")
    h["SETHASH"] = str(prov.get("settings_hash", ""))  # a 64-hex hash leaves no room for a comment
    h["COMPAT"] = (str(fit_meta.get("compat", "")), "compat mode of the fit")
    # the whole record (inputs with their content hashes, software versions): CONTINUE cards
    h["BFPROV"] = json.dumps(prov, sort_keys=True, default=str)
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    return buf.getvalue()


def _ecsv_bytes(t) -> bytes:
    buf = io.StringIO()
    t.write(buf, format="ascii.ecsv")
    return buf.getvalue().encode()


def export_stats(output_url: str, fmt: str = "fits", project: str | None = None, out_url: str | None = None) -> str:
    """Write ``OUTPUT/P_stats.<fmt>`` from the run's merged ``P_stats.parquet``; returns its URL."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    from beastflow.report.artifacts import find_artifacts

    art = find_artifacts(output_url, project)
    if not art.stats:
        raise FileNotFoundError(f"{output_url}: no {art.project}_stats.parquet to export")
    t = stats_table(art.stats)
    out = out_url or plan.Names(output_url, art.project).stats_export(fmt)
    data = _fits_bytes(t, art.project) if fmt == "fits" else _ecsv_bytes(t)
    storage.write_bytes(out, data)
    return out
