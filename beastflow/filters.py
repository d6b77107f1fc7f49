"""Filter naming: full BEAST/pyphot names and the short band names of catalogs."""

from __future__ import annotations

import functools
import importlib.util
import os
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


# Read straight from pyphot's shipped HDF5 file with h5py: importing pyphot
# itself costs ~1.5 s, which every settings validation (every CLI call, every
# SLURM task) would otherwise pay.
@functools.cache
def known_filter_names() -> frozenset[str]:
    spec = importlib.util.find_spec("pyphot")
    if spec and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "libs", "new_filters.hd5")
        if os.path.exists(path):
            import h5py

            with h5py.File(path, "r") as h5:
                if "filters" in h5:
                    return frozenset(h5["filters"].keys())
    import pyphot

    return frozenset(pyphot.get_library().content)
