"""Units and one-line descriptions of the fit's stats columns.

The stats table (``P_stats.parquet``) carries them as Parquet field metadata
(keys ``unit`` and ``description``), so a reader never has to guess whether
``M_ini_p50`` is in solar masses or ``logT_p50`` is a log.  Unit strings are
astropy's (generic format); logarithmic quantities use astropy's function
units (``dex(yr)`` = log10 of a time in years), which round-trip through
astropy's FITS and ECSV writers (``beastflow.fit.export``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from beastflow.fit.stats import STAT_SUFFIXES

#: observed and model band fluxes (RATE x Vega flux of the band)
FLUX_UNIT = "erg / (Angstrom s cm2)"

#: physical grid quantities: (unit, what it is)
QUANTITIES: dict[str, tuple[str, str]] = {
    "Av": ("mag", "V-band dust extinction A(V)"),
    "Rv": ("", "total-to-selective extinction R(V)"),
    "f_A": ("", "fraction of the extinction from the A component of the mixture model"),
    "Rv_A": ("", "R(V) of the A component of the mixture model"),
    "logA": ("dex(yr)", "log10 stellar age"),
    "M_ini": ("solMass", "initial stellar mass"),
    "M_act": ("solMass", "present-day stellar mass"),
    "logL": ("dex(solLum)", "log10 bolometric luminosity"),
    "logT": ("dex(K)", "log10 effective temperature"),
    "logg": ("dex(cm / s2)", "log10 surface gravity"),
    "Z": ("", "metal mass fraction"),
    "distance": ("pc", "distance"),
    "radius": ("solRad", "stellar radius"),
    "mbolmag": ("mag", "absolute bolometric magnitude"),
}

_SUFFIX_TEXT = {
    "Best": "of the most probable model",
    "Exp": "posterior expectation",
    "p16": "posterior 16th percentile",
    "p50": "posterior median",
    "p84": "posterior 84th percentile",
}

#: per-star fit diagnostics and bookkeeping columns
OTHER: dict[str, tuple[str, str]] = {
    "Name": ("", "IAU-style name from RA/Dec"),
    "star_id": ("", "row identifier of the star in the photometry catalog"),
    "RA": ("deg", "right ascension"),
    "DEC": ("deg", "declination"),
    "ra": ("deg", "right ascension"),
    "dec": ("deg", "declination"),
    "X": ("pix", "x position on the image"),
    "Y": ("pix", "y position on the image"),
    "x": ("pix", "x position on the image"),
    "y": ("pix", "y position on the image"),
    "SourceDensity": ("1 / arcsec2", "source density of the star's tile (reference-band sources in the cut range)"),
    "sd_bin": ("", "source-density bin of the star"),
    "beast_idx": ("", "row of the star in the input catalog"),
    "chi2min": ("", "minimum chi^2 over the models (noise-model errors)"),
    "chi2min_indx": ("", "row of the chi^2-minimising model in the trimmed grid"),
    "Pmax": ("", "posterior probability of the most probable model (beast-2.1: its ln P)"),
    "Pmax_indx": ("", "row of the most probable model in the trimmed grid"),
    "Pmax_gid": ("", "row of the most probable model in the full SED grid"),
    "specgrid_indx": ("", "row of the most probable model's spectrum in the spectral grid"),
    "lnPmax": ("", "ln of the peak (unnormalised) posterior"),
    "total_log_norm": ("", "ln of the sum of the (unnormalised) posterior over all models"),
    "best_gridsub": ("", "subgrid holding the most probable model"),
    "n_bands_used": ("", "bands with a measurement used in the likelihood"),
    "reorder_tag": ("", "sub-file the star was fitted in (bin{s}_sub{u})"),
}


def _flux_filter(name: str, filters: Iterable[str]) -> tuple[str, str] | None:
    """(filter, statistic) of a ``symlog{FILTER}_wd_bias_{stat}`` column."""
    if not name.startswith("symlog"):
        return None
    for f in filters:
        for s in STAT_SUFFIXES:
            if name == f"symlog{f}_wd_bias_{s}":
                return f, s
    return None


def describe_column(name: str, filters: Iterable[str] = ()) -> tuple[str, str]:
    """(astropy unit string, description) of a stats column; ("", "") when unknown."""
    filters = list(filters)
    if name in filters:
        return FLUX_UNIT, f"observed {name} flux (catalog rate x Vega flux)"
    if name in OTHER:
        return OTHER[name]
    if name.startswith("true_"):
        base = name[len("true_") :]
        unit, text = QUANTITIES.get(base, ("", base))
        return unit, f"true {text} (simulated field)"
    fs = _flux_filter(name, filters)
    if fs is not None:
        f, s = fs
        # symlog(F) = sign(F) log10(1 + |F| / 1e-20): a log-like scale that admits F <= 0, not a unit
        return "", (
            f"symlog of the {f} model flux incl. noise-model bias ({FLUX_UNIT}), "
            f"{_SUFFIX_TEXT[s]}: sign(F) log10(1 + |F|/1e-20)"
        )
    q, _, s = name.rpartition("_")
    if s in _SUFFIX_TEXT and q in QUANTITIES:
        unit, text = QUANTITIES[q]
        return unit, f"{text}, {_SUFFIX_TEXT[s]}"
    return "", ""


def column_metadata(columns: Iterable[str], filters: Iterable[str]) -> dict[str, dict[bytes, bytes]]:
    """{column: Parquet field metadata} for the columns that have a unit or a description."""
    filters = list(filters)
    out = {}
    for c in columns:
        unit, text = describe_column(c, filters)
        md = {}
        if unit:
            md[b"unit"] = unit.encode()
        if text:
            md[b"description"] = text.encode()
        if md:
            out[c] = md
    return out


def units_of(field_metadata: Mapping[str, Mapping[bytes, bytes] | None]) -> dict[str, str]:
    """{column: unit} from Parquet field metadata (columns without a unit left out)."""
    return {c: md[b"unit"].decode() for c, md in field_metadata.items() if md and b"unit" in md}
