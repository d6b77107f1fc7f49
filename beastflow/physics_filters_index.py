"""Names of the filter curves available offline (pyphot's bundled library).

Read straight from pyphot's shipped HDF5 file with h5py: importing pyphot itself
costs ~1.5 s, which every settings validation (every CLI call, every SLURM
task) would otherwise pay.
"""

from __future__ import annotations

import functools
import importlib.util
import os


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
