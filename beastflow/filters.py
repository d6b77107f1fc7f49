"""Filter naming: full BEAST/pyphot names and the short band names of catalogs."""

from __future__ import annotations

from collections.abc import Sequence


def short_name(full: str) -> str:
    """``HST_ACS_WFC_F475W`` -> ``F475W`` (the token used in catalog columns)."""
    return full.rsplit("_", 1)[-1].upper()


def short_names(filters: Sequence[str]) -> list[str]:
    out = [short_name(f) for f in filters]
    if len(set(out)) != len(out):
        raise ValueError(f"filters {list(filters)} do not have distinct short band names {out}")
    return out


def rate_columns(filters: Sequence[str]) -> list[str]:
    """Catalog flux columns ``{B}_RATE`` (F / F_Vega) in filter order."""
    return [f"{b}_RATE" for b in short_names(filters)]
